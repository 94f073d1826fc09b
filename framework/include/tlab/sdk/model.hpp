#pragma once
/// \file model.hpp
/// Backbones, the model the runner trains, and adapters that attach to it.
///
/// Example (a backbone plugin builds its network for the dataset's input shape):
/// \code
///   class Mlp : public tlab::Backbone {
///    public:
///     std::shared_ptr<tlab::BackboneNet> build(const std::vector<int64_t>& input_shape,
///                                              tlab::Context& ctx) override {
///       return std::make_shared<MlpNet>(input_shape, opts_);
///     }
///   };
/// \endcode

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tlab/sdk/context.hpp"
#include "tlab/sdk/plugin.hpp"
#include "tlab/sdk/torch.hpp"

namespace tlab {

/// A named, ordered slice of a backbone's parameters (input side first), so strategies can
/// freeze, unfreeze gradually or give each group its own learning rate.
struct LayerGroup {
  std::string name;                       ///< e.g. "conv1", "block2", "fc".
  std::vector<torch::Tensor> parameters;  ///< The group's parameters.
};

/// A network mapping inputs (N x input_shape) to features (N x feature_dim()).
///
/// Parameter and buffer names are the network's state-dict names (`layer1.0.conv1.weight`):
/// backbones that mirror a PyTorch architecture register their modules under PyTorch's names,
/// so that its weights load one to one (see docs/models.md).
///
/// Taps: a backbone's forward passes its activations through `tap(name, x)` after each layer
/// group (same names as layer_groups()), where adapters may insert modules (e.g. bottleneck
/// adapters). Without adapters a tap returns `x` unchanged at the cost of one map lookup.
class BackboneNet : public torch::nn::Module {
 public:
  /// A transform adapters insert at a tap: activations in, activations of the same shape out.
  using TapFn = std::function<torch::Tensor(const torch::Tensor&)>;

  /// Features of a batch.
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  /// Width of the features.
  virtual int64_t feature_dim() const = 0;
  /// Parameter groups from input to output; together they hold every parameter.
  virtual std::vector<LayerGroup> layer_groups() = 0;

  /// Called by forward() at the named point; applies the transforms installed there, in order.
  torch::Tensor tap(const std::string& point, torch::Tensor x) {
    ++tap_calls_;
    if (taps_.empty()) return x;
    auto it = taps_.find(point);
    if (it == taps_.end()) return x;
    for (const auto& fn : it->second) x = fn(x);
    return x;
  }
  /// Installs `fn` at `point` (after those already there).
  void add_tap(const std::string& point, TapFn fn) { taps_[point].push_back(std::move(fn)); }
  /// How many times forward() passed a tap so far (adapters check that a point exists).
  int64_t tap_calls() const { return tap_calls_; }

 private:
  std::map<std::string, std::vector<TapFn>> taps_;
  int64_t tap_calls_ = 0;
};

/// A backbone plugin: builds a fresh, randomly initialised network for an input shape.
class Backbone : public Plugin {
 public:
  static constexpr Kind kKind = Kind::Backbone;
  Kind kind() const final { return kKind; }
  /// A new network for examples of shape `input_shape` (e.g. {1, 28, 28}); uses LibTorch's
  /// global generator, already seeded by the host.
  virtual std::shared_ptr<BackboneNet> build(const std::vector<int64_t>& input_shape,
                                             Context& ctx) = 0;
};

/// The model the runner trains: a backbone followed by a head that adapters fill.
class Model : public torch::nn::Module {
 public:
  /// Wraps `net`; the head starts empty and its output width equals the feature width.
  explicit Model(std::shared_ptr<BackboneNet> net)
      : backbone(register_module("backbone", std::move(net))),
        head(register_module("head", torch::nn::Sequential())),
        out_dim_(backbone->feature_dim()) {}

  /// Features of a batch (the backbone's output). Runs the `before_forward` hooks first.
  torch::Tensor features(const torch::Tensor& x) {
    for (const auto& hook : before_forward) hook();
    return backbone->forward(x);
  }
  /// Class scores of a batch.
  torch::Tensor forward(const torch::Tensor& x) { return head->forward(features(x)); }

  /// Appends `module` (a LibTorch module holder, e.g. torch::nn::Linear) to the head; its
  /// outputs are `out_dim` wide. The runner checks that the head ends at the class count.
  template <class ModuleHolder>
  void add_head(ModuleHolder module, int64_t out_dim) {
    head->push_back(std::move(module));
    out_dim_ = out_dim;
  }
  /// Output width of the model so far: the features' width, or the last add_head's out_dim.
  int64_t out_dim() const { return out_dim_; }

  std::shared_ptr<BackboneNet> backbone;  ///< The feature extractor.
  torch::nn::Sequential head;             ///< Layers after the features, in order.
  /// Run before every forward pass, in order. Adapters that re-parametrise weights (LoRA sets
  /// `linear->weight = W0 + B A` from its frozen W0) recompute them here, so that each pass
  /// builds a fresh autograd graph. Strategies call features() or forward(), never
  /// backbone->forward() directly, so that these hooks run.
  std::vector<std::function<void()>> before_forward;

 private:
  int64_t out_dim_;
};

/// What an adapter needs to know about the task it attaches for.
struct TaskInfo {
  int64_t num_classes = 0;           ///< Classes of the target domain.
  std::vector<int64_t> input_shape;  ///< Shape of one input example.
};

/// An adapter plugin: changes the model before the target is trained: adds a head, wraps layers
/// (LoRA, bottlenecks) or selects what trains. Adapters attach in the order listed.
///
/// New modules are registered on the model itself (`model.register_module("lora_0", m)`, names
/// unique per model) or added to the head (`model.add_head(m, width)`), so that the model's
/// state dict, the optimiser and the checkpoint see them. What trains is what has requires_grad()
/// after every adapter attached; the runner records the trainable and total parameter counts.
///
/// Example (a linear classifier; the runner checks that the head ends at num_classes):
/// \code
///   model.add_head(torch::nn::Linear(model.out_dim(), task.num_classes), task.num_classes);
/// \endcode
class Adapter : public Plugin {
 public:
  static constexpr Kind kKind = Kind::Adapter;
  Kind kind() const final { return kKind; }
  /// Attaches to `model`; new modules must be created on `ctx.device`.
  virtual void attach(Model& model, const TaskInfo& task, Context& ctx) = 0;
};

}  // namespace tlab
