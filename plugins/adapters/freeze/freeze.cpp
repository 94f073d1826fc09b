// freeze: stop backbone parameters from training, chosen by name pattern and/or by layer group
// (`up_to` freezes that group and every group before it, in layer_groups() order). Without
// either, the whole backbone is frozen. The head and other adapters' modules are untouched.
//
// eval_bn: batch-norm layers whose parameters this adapter froze are put in eval mode before
// every forward pass (a Model::before_forward hook, which runs after the runner's train()), so
// their running statistics stay fixed too; a layer whose parameters train again (a strategy
// unfreezing it) is left in the mode the runner set.
#include <torch/nn/modules/batchnorm.h>

#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../common/name_pattern.hpp"
#include "tlab/sdk/model.hpp"

namespace {

using tlab_adapters::NamePattern;

// Whether `p` matches `name` or one of its dotted prefixes ("layer1.0.conv1.weight": "layer1",
// "layer1.0", "layer1.0.conv1" and the whole name).
bool matches_name_or_module(const NamePattern& p, const std::string& name) {
  for (std::size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', dot + 1))
    if (p.matches(name.substr(0, dot))) return true;
  return p.matches(name);
}

bool is_batch_norm(torch::nn::Module& m) {
  return m.as<torch::nn::BatchNorm1d>() || m.as<torch::nn::BatchNorm2d>() ||
         m.as<torch::nn::BatchNorm3d>();
}

}  // namespace

struct FreezeOptions {
  std::vector<std::string> patterns{};
  std::string up_to;
  bool eval_bn = true;
};

class Freeze : public tlab::Adapter {
 public:
  using Options = FreezeOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("patterns", &Options::patterns,
               "backbone parameters to freeze, by dotted name or module prefix: globs ('*' any "
               "characters, '?' one) or 're:<regex>'; with up_to empty too, all are frozen")
        .field("up_to", &Options::up_to,
               "freeze this layer group and every group before it (\"\" = none)")
        .field("eval_bn", &Options::eval_bn,
               "keep the batch-norm layers it froze in eval mode (running statistics fixed)");
  }
  explicit Freeze(Options o) : o_(std::move(o)) {
    for (const auto& t : o_.patterns) patterns_.emplace_back(t);
  }

  void attach(tlab::Model& model, const tlab::TaskInfo& /*task*/, tlab::Context& ctx) override {
    auto& net = *model.backbone;
    const bool everything = patterns_.empty() && o_.up_to.empty();
    std::set<const void*> chosen;  // TensorImpl of each parameter to freeze

    if (!o_.up_to.empty()) {
      auto groups = net.layer_groups();
      std::size_t last = groups.size();
      for (std::size_t i = 0; i < groups.size() && last == groups.size(); ++i)
        if (groups[i].name == o_.up_to) last = i;
      if (last == groups.size()) {
        std::string names;
        for (const auto& g : groups) names += (names.empty() ? "" : ", ") + g.name;
        throw std::invalid_argument("freeze: up_to = '" + o_.up_to +
                                    "' is not a layer group of the backbone; its groups are "
                                    "(input side first): " +
                                    (names.empty() ? "none" : names));
      }
      for (std::size_t i = 0; i <= last; ++i)
        for (const auto& t : groups[i].parameters) chosen.insert(t.unsafeGetTensorImpl());
    }
    auto named = net.named_parameters();
    for (const auto& p : patterns_) {
      bool any = false;
      for (const auto& item : named)
        if (matches_name_or_module(p, item.key())) {
          chosen.insert(item.value().unsafeGetTensorImpl());
          any = true;
        }
      if (!any) {
        std::string names;
        std::size_t n = 0;
        for (const auto& item : named)
          if (n++ < 40) names += (names.empty() ? "" : ", ") + item.key();
        if (n > 40) names += ", ... (" + std::to_string(n - 40) + " more)";
        throw std::invalid_argument("freeze: pattern '" + p.text() +
                                    "' matches no backbone parameter (a pattern matches a "
                                    "parameter's whole name or a module prefix of it); the "
                                    "backbone's parameters are: " +
                                    (names.empty() ? "none" : names));
      }
    }
    int64_t tensors = 0, values = 0;
    for (auto& item : named) {
      if (!everything && !chosen.count(item.value().unsafeGetTensorImpl())) continue;
      if (item.value().requires_grad()) {
        ++tensors;
        values += item.value().numel();
      }
      item.value().requires_grad_(false);
    }

    // Batch-norm layers this adapter froze: all their parameters chosen (and now frozen); one
    // without parameters (affine = false) when its name is chosen by a pattern or by `everything`.
    std::vector<std::shared_ptr<torch::nn::Module>> norms;
    if (o_.eval_bn) {
      for (const auto& item : net.named_modules("", /*include_self=*/false)) {
        if (!is_batch_norm(*item.value())) continue;
        auto params = item.value()->parameters(/*recurse=*/false);
        bool frozen;
        if (params.empty()) {
          frozen = everything;
          for (const auto& p : patterns_) frozen = frozen || matches_name_or_module(p, item.key());
        } else {
          frozen = true;
          for (const auto& t : params)
            frozen = frozen && (everything || chosen.count(t.unsafeGetTensorImpl()));
        }
        if (frozen) norms.push_back(item.value());
      }
      if (!norms.empty())
        model.before_forward.push_back([norms] {
          for (const auto& m : norms) {
            bool frozen = true;
            for (const auto& t : m->parameters(/*recurse=*/false))
              frozen = frozen && !t.requires_grad();
            if (frozen && m->is_training()) m->eval();
          }
        });
    }

    if (ctx.log) {
      int64_t trainable = 0, total = 0;
      for (const auto& p : model.parameters()) {
        total += p.numel();
        if (p.requires_grad()) trainable += p.numel();
      }
      std::ostringstream s;
      s << "froze " << tensors << " backbone tensor(s), " << values << " parameters"
        << (everything ? " (the whole backbone)" : "");
      if (o_.eval_bn) s << "; " << norms.size() << " batch-norm layer(s) kept in eval mode";
      s << "; added 0 parameters; trainable " << trainable << " of " << total << " parameters";
      ctx.log->info(s.str());
    }
  }

 private:
  Options o_;
  std::vector<NamePattern> patterns_;
};

TLAB_PLUGIN(Freeze, "freeze", "1.0.0",
            "Freeze backbone parameters by name pattern or up to a layer group")
