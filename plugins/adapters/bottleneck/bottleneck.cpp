// bottleneck: residual bottleneck adapters at the backbone's taps (Houlsby et al., "Parameter-
// Efficient Transfer Learning for NLP", ICML 2019): x + up(act(down(x))), with a width of
// dim / reduction (at least 1). `up` starts at zero, so the initial model equals the base one.
//
// The adapter works on the activations a backbone passes to BackboneNet::tap() after each layer
// group: N x D (MLPs) and N x L x D (transformers) get Linear layers over the last dimension;
// N x C x H x W (convolutional) get 1x1 convolutions over the channels, the residual adapters of
// Rebuffi, Bilen and Vedaldi ("Learning multiple visual domains with residual adapters",
// NeurIPS 2017). The widths are found by one forward pass of a zero batch in eval mode.
//
// freeze_base (default true, as in Houlsby et al.): the backbone's parameters stop training,
// except those of normalisation layers when train_norm is set (Houlsby trains the layer norms;
// Rebuffi's adapters come with their own batch norms).
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/instancenorm.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/utils.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tlab/sdk/model.hpp"

namespace {

// One adapter: x + up(act(down(x))), Linear over the last dimension or 1x1 convolutions.
class BottleneckAdapter : public torch::nn::Module {
 public:
  BottleneckAdapter(int64_t dim, int64_t width, bool conv, std::string activation,
                    const torch::Device& device)
      : activation_(std::move(activation)) {
    if (conv) {
      down_conv_ =
          register_module("down", torch::nn::Conv2d(torch::nn::Conv2dOptions(dim, width, 1)));
      up_conv_ = register_module("up", torch::nn::Conv2d(torch::nn::Conv2dOptions(width, dim, 1)));
    } else {
      down_ = register_module("down", torch::nn::Linear(dim, width));
      up_ = register_module("up", torch::nn::Linear(width, dim));
    }
    to(device);
    torch::NoGradGuard no_grad;
    for (auto& p : named_parameters())
      if (p.key().rfind("up.", 0) == 0) p.value().zero_();
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = down_ ? down_->forward(x) : down_conv_->forward(x);
    h = activation_ == "gelu"   ? torch::gelu(h)
        : activation_ == "tanh" ? torch::tanh(h)
                                : torch::relu(h);
    return x + (up_ ? up_->forward(h) : up_conv_->forward(h));
  }

 private:
  std::string activation_;
  torch::nn::Linear down_{nullptr}, up_{nullptr};
  torch::nn::Conv2d down_conv_{nullptr}, up_conv_{nullptr};
};

// What the tap at one point saw during the probe, then the adapter it applies.
struct Slot {
  bool seen = false;
  std::vector<int64_t> shape;
  bool consistent = true;
  std::shared_ptr<BottleneckAdapter> adapter;
};

bool is_norm(torch::nn::Module& m) {
  return m.as<torch::nn::BatchNorm1d>() || m.as<torch::nn::BatchNorm2d>() ||
         m.as<torch::nn::BatchNorm3d>() || m.as<torch::nn::LayerNorm>() ||
         m.as<torch::nn::GroupNorm>() || m.as<torch::nn::InstanceNorm1d>() ||
         m.as<torch::nn::InstanceNorm2d>() || m.as<torch::nn::InstanceNorm3d>();
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t;
  for (int64_t d : s) t += (t.empty() ? "" : "x") + std::to_string(d);
  return t;
}

}  // namespace

struct BottleneckOptions {
  std::vector<std::string> after{};
  int64_t reduction = 16;
  std::string activation = "relu";
  bool freeze_base = true;
  bool train_norm = true;
};

class Bottleneck : public tlab::Adapter {
 public:
  using Options = BottleneckOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("after", &Options::after,
               "layer groups after which an adapter is inserted (the backbone's tap points); "
               "empty = every group")
        .field("reduction", &Options::reduction,
               "bottleneck width = activation width / reduction (at least 1)")
        .range(1, 1 << 20)
        .field("activation", &Options::activation, "nonlinearity inside the bottleneck")
        .choices({"relu", "gelu", "tanh"})
        .field("freeze_base", &Options::freeze_base,
               "freeze the backbone's own parameters (Houlsby et al.: only adapters, "
               "normalisation layers and the head train)")
        .field("train_norm", &Options::train_norm,
               "with freeze_base: normalisation layers (batch/layer/group/instance norm) train");
  }
  explicit Bottleneck(Options o) : o_(std::move(o)) {
    if (o_.reduction < 1)
      throw std::invalid_argument("bottleneck: reduction " + std::to_string(o_.reduction) +
                                  " must be at least 1");
    if (o_.activation != "relu" && o_.activation != "gelu" && o_.activation != "tanh")
      throw std::invalid_argument("bottleneck: activation '" + o_.activation +
                                  "' is not one of relu, gelu, tanh");
  }

  void attach(tlab::Model& model, const tlab::TaskInfo& task, tlab::Context& ctx) override {
    auto& net = *model.backbone;
    std::string group_names;
    std::vector<std::string> points = o_.after;
    for (const auto& g : net.layer_groups()) {
      group_names += (group_names.empty() ? "" : ", ") + g.name;
      if (o_.after.empty()) points.push_back(g.name);
    }
    if (points.empty())
      throw std::invalid_argument("bottleneck: the backbone has no layer groups to adapt");
    std::vector<std::string> unique;  // in the order given (default: layer-group order)
    for (const auto& p : points)
      if (std::find(unique.begin(), unique.end(), p) == unique.end()) unique.push_back(p);
    points = std::move(unique);

    // Install one tap per point: it records the activation's shape during the probe below, and
    // applies the adapter once there is one.
    std::map<std::string, std::shared_ptr<Slot>> slots;
    for (const auto& p : points) {
      auto slot = std::make_shared<Slot>();
      slots[p] = slot;
      net.add_tap(p, [slot](const torch::Tensor& x) -> torch::Tensor {
        if (slot->adapter) return slot->adapter->forward(x);
        if (!slot->seen) {
          slot->seen = true;
          slot->shape = x.sizes().vec();
        } else if (slot->shape != x.sizes().vec()) {
          slot->consistent = false;
        }
        return x;
      });
    }
    probe(model, task, ctx);

    const std::string prefix = unused_name(model);
    auto holder = std::make_shared<torch::nn::Module>();
    std::string summary;
    int64_t added = 0;
    for (const auto& p : points) {
      const Slot& s = *slots[p];
      if (!s.seen)
        throw std::invalid_argument("bottleneck: the backbone never taps '" + p +
                                    "' in its forward pass, so no adapter can go there; its "
                                    "layer groups are: " +
                                    (group_names.empty() ? "none" : group_names));
      if (!s.consistent)
        throw std::invalid_argument("bottleneck: the backbone taps '" + p +
                                    "' more than once with different shapes; adapt another point");
      const auto rank = s.shape.size();
      if (rank < 2 || rank > 4)
        throw std::invalid_argument(
            "bottleneck: the activation at '" + p + "' has shape " + shape_text(s.shape) +
            "; adapters take N x D, N x L x D or N x C x H x W activations");
      const bool conv = rank == 4;
      const int64_t dim = conv ? s.shape[1] : s.shape.back();
      const int64_t width = std::max<int64_t>(1, dim / o_.reduction);
      auto adapter =
          std::make_shared<BottleneckAdapter>(dim, width, conv, o_.activation, ctx.device);
      std::string child;
      for (char ch : p) child += ch == '.' ? '_' : ch;
      while (holder->named_children().contains(child)) child += "_";
      holder->register_module(child, adapter);
      slots[p]->adapter = adapter;
      for (const auto& t : adapter->parameters()) added += t.numel();
      summary += (summary.empty() ? "" : ", ") + p + " (" + (conv ? "1x1 conv " : "linear ") +
                 std::to_string(dim) + "->" + std::to_string(width) + "->" + std::to_string(dim) +
                 ")";
    }
    model.register_module(prefix, holder);

    int64_t frozen = 0;
    if (o_.freeze_base) {
      std::set<const void*> norms;
      if (o_.train_norm)
        for (const auto& m : net.modules(/*include_self=*/false))
          if (is_norm(*m))
            for (const auto& t : m->parameters(/*recurse=*/false))
              norms.insert(t.unsafeGetTensorImpl());
      for (auto& t : net.parameters()) {
        if (norms.count(t.unsafeGetTensorImpl())) continue;
        if (t.requires_grad()) frozen += t.numel();
        t.requires_grad_(false);
      }
    }

    if (ctx.log) {
      int64_t trainable = 0, total = 0;
      for (const auto& t : model.parameters()) {
        total += t.numel();
        if (t.requires_grad()) trainable += t.numel();
      }
      std::ostringstream s;
      s << prefix << ": adapters after " << summary << "; added " << added << " parameters";
      if (o_.freeze_base)
        s << "; froze " << frozen << " backbone parameters"
          << (o_.train_norm ? " (normalisation layers still train)" : "");
      s << "; trainable " << trainable << " of " << total << " parameters";
      ctx.log->info(s.str());
    }
  }

 private:
  // One forward pass of a zero batch in eval mode, without gradients; every module's mode is
  // restored afterwards.
  static void probe(tlab::Model& model, const tlab::TaskInfo& task, tlab::Context& ctx) {
    std::vector<std::pair<std::shared_ptr<torch::nn::Module>, bool>> modes;
    for (const auto& m : model.modules(/*include_self=*/false))
      modes.emplace_back(m, m->is_training());
    const bool was_training = model.is_training();
    std::vector<int64_t> shape{2};
    shape.insert(shape.end(), task.input_shape.begin(), task.input_shape.end());
    const int64_t calls = model.backbone->tap_calls();
    {
      torch::NoGradGuard no_grad;
      model.eval();
      try {
        try {
          model.features(torch::zeros(shape, torch::TensorOptions().device(ctx.device)));
        } catch (const c10::Error&) {  // a token model (embedding) takes int64 ids, not floats
          model.features(
              torch::zeros(shape, torch::TensorOptions().device(ctx.device).dtype(torch::kLong)));
        }
      } catch (...) {
        model.train(was_training);
        for (auto& [m, mode] : modes) m->train(mode);
        throw;
      }
    }
    model.train(was_training);
    for (auto& [m, mode] : modes) m->train(mode);
    if (model.backbone->tap_calls() == calls)
      throw std::invalid_argument(
          "bottleneck: the backbone never calls tap() in its forward pass, so bottleneck "
          "adapters cannot be inserted (a backbone passes its activations through tap(group, x) "
          "after each layer group)");
  }

  static std::string unused_name(tlab::Model& model) {
    auto children = model.named_children();
    for (int i = 0;; ++i) {
      std::string name = "bottleneck_" + std::to_string(i);
      if (!children.contains(name)) return name;
    }
  }

  Options o_;
};

TLAB_PLUGIN(Bottleneck, "bottleneck", "1.0.0",
            "Residual bottleneck adapters after the backbone's layer groups (Houlsby et al.)")
