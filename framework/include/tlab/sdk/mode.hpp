#pragma once
/// \file mode.hpp
/// Train/eval mode kept per submodule. `Module::train()` and `eval()` recurse, so putting a model
/// in eval mode for a pass and back in train mode would also wake the parts a strategy keeps in
/// eval mode (a frozen backbone's batch-norm statistics). A ModeScope gives every submodule its
/// own mode back when it ends, even on exceptions.
///
/// Example (predictions of the current model in eval mode, in the middle of a training step):
/// \code
///   {
///     tlab::ModeScope keep(model);
///     model.eval();
///     torch::NoGradGuard no_grad;
///     labels = model.forward(xu).argmax(1);
///   }  // every submodule is back in the mode it had
/// \endcode

#include <memory>
#include <utility>
#include <vector>

#include "tlab/sdk/torch.hpp"

namespace tlab {

/// Records the mode of a module and of each of its submodules; restores them at the end of the
/// scope.
class ModeScope {
 public:
  explicit ModeScope(torch::nn::Module& m) {
    modes_.emplace_back(&m, m.is_training());
    for (const auto& sub : m.modules(/*include_self=*/false))
      modes_.emplace_back(sub.get(), sub->is_training());
  }
  // modules() lists parents before children and train() recurses: restoring in that order
  // leaves every module in its own mode.
  ~ModeScope() {
    for (auto& [module, training] : modes_) module->train(training);
  }
  ModeScope(const ModeScope&) = delete;
  ModeScope& operator=(const ModeScope&) = delete;

 private:
  std::vector<std::pair<torch::nn::Module*, bool>> modes_;
};

}  // namespace tlab
