// lora: low-rank adaptation (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models",
// ICLR 2022) of the backbone's Linear and Conv2d layers chosen by name, and of the fused
// query/key/value projection (in_proj_weight) of its MultiheadAttention modules.
//
// Each adapted layer keeps its weight W0 (the registered parameter `weight`, frozen, as are the
// layer's bias; with freeze_base, the default, every backbone parameter is frozen as in PEFT) and
// gains two trainable matrices, A (r x fan_in, kaiming-uniform with a = sqrt(5)) and B (out x r,
// zeros). Before every forward pass (Model::before_forward) the layer's member `weight`, the tensor
// its forward() uses, is set to W0 + (alpha / r) * (B A), reshaped to the layer's weight shape for
// convolutions. The registered parameter stays W0, so state dicts and checkpoints hold W0 and
// lora_<i>.<layer>.A / .B separately. B = 0 makes the initial model equal to the base one. A merged
// model for inference is W0 + (alpha / r) * (B A) written into `weight`.
//
// Dropout on the LoRA branch (dropout(x) B A) cannot be expressed by a merged weight, and the
// backbones call their layers directly (no per-layer input is reachable), so only dropout = 0 is
// accepted.
#include <torch/nn/init.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../common/name_pattern.hpp"
#include "tlab/sdk/model.hpp"

namespace {

using tlab_adapters::NamePattern;

std::string counts(tlab::Model& model) {
  int64_t trainable = 0, total = 0;
  for (const auto& p : model.parameters()) {
    total += p.numel();
    if (p.requires_grad()) trainable += p.numel();
  }
  return "trainable " + std::to_string(trainable) + " of " + std::to_string(total) + " parameters";
}

// An unused child name "<prefix>_<i>" of `model`.
std::string unused_name(tlab::Model& model, const std::string& prefix) {
  auto children = model.named_children();
  for (int i = 0;; ++i) {
    std::string name = prefix + "_" + std::to_string(i);
    if (!children.contains(name)) return name;
  }
}

// The low-rank factors of one adapted layer.
class LoraFactors : public torch::nn::Module {
 public:
  LoraFactors(int64_t rank, int64_t fan_in, int64_t out, const torch::TensorOptions& opts) {
    A = register_parameter("A", torch::empty({rank, fan_in}, opts));
    B = register_parameter("B", torch::zeros({out, rank}, opts));
    torch::NoGradGuard no_grad;
    torch::nn::init::kaiming_uniform_(A, std::sqrt(5.0));
  }
  torch::Tensor A, B;
};

// One adapted layer: the module (kept alive), its member `weight`, W0 and the factors.
struct Adapted {
  std::string name;
  std::shared_ptr<torch::nn::Module> layer;
  torch::Tensor* weight;  // the member the layer's forward() reads
  torch::Tensor w0;       // the registered parameter, frozen
  std::shared_ptr<LoraFactors> f;
  double scale;
  // Inference (no gradients): the merged weight W0 + s B A is computed once and reused while
  // W0, A and B are unchanged, so evaluation costs what the plain layer costs. A and B are
  // compared by value with the copies the merge used (optimisers update through .data(), which
  // leaves version counters alone; comparing r x (in + out) values is far cheaper than B A);
  // W0 is frozen and changes only by loading, which bumps its version. With gradients the
  // weight is recomputed every pass (a fresh graph).
  struct Merged {
    bool valid = false;
    torch::Tensor a, b;
    const void* w0_ptr = nullptr;
    int64_t w0_version = 0;
  };
  std::shared_ptr<Merged> merged = std::make_shared<Merged>();
  void apply() const {
    const bool grad = torch::GradMode::is_enabled();
    if (!grad && merged->valid && w0.data_ptr() == merged->w0_ptr &&
        static_cast<int64_t>(w0._version()) == merged->w0_version &&
        torch::equal(f->A, merged->a) && torch::equal(f->B, merged->b))
      return;
    *weight = w0 + torch::mm(f->B, f->A).mul(scale).view(w0.sizes());
    merged->valid = !grad;
    if (!grad) {
      merged->a = f->A.detach().clone();
      merged->b = f->B.detach().clone();
      merged->w0_ptr = w0.data_ptr();
      merged->w0_version = static_cast<int64_t>(w0._version());
    }
  }
};

// The member `weight` that the forward() of a Linear or Conv2d module reads; a
// MultiheadAttention's fused query/key/value projection `in_proj_weight` (3E x E).
torch::Tensor* member_of(torch::nn::Module& m) {
  if (auto* l = m.as<torch::nn::Linear>()) return &l->weight;
  if (auto* a = m.as<torch::nn::MultiheadAttention>()) return &a->in_proj_weight;
  return &m.as<torch::nn::Conv2d>()->weight;
}

// The name under which that member is registered.
const char* registered_name(torch::nn::Module& m) {
  return m.as<torch::nn::MultiheadAttention>() ? "in_proj_weight" : "weight";
}

}  // namespace

struct LoraOptions {
  std::vector<std::string> targets{"*"};
  int64_t rank = 8;
  double alpha = 8.0;
  double dropout = 0.0;
  bool freeze_base = true;
};

class Lora : public tlab::Adapter {
 public:
  using Options = LoraOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("targets", &Options::targets,
               "Linear/Conv2d modules of the backbone to adapt, by dotted name: globs ('*' any "
               "characters, '?' one) or 're:<regex>' (whole name)")
        .min_size(1)
        .field("rank", &Options::rank, "rank r of the update B A")
        .range(1, 1 << 16)
        .field("alpha", &Options::alpha, "scaling: the update is alpha / r * B A")
        .min(0)
        .field("dropout", &Options::dropout,
               "dropout on the LoRA branch input; only 0: the update is merged into the weight "
               "before each pass, which cannot drop out the branch input")
        .range(0, 0)
        .field("freeze_base", &Options::freeze_base,
               "freeze every backbone parameter, so that only the LoRA factors and the head "
               "train (PEFT's behaviour); false: only the adapted layers' weight and bias");
  }
  explicit Lora(Options o) : o_(std::move(o)) {
    if (o_.targets.empty())
      throw std::invalid_argument(
          "lora: 'targets' is empty; give module name patterns, e.g. "
          "[\"fc*\"] or [\"*\"] for every Linear and Conv2d layer");
    for (const auto& t : o_.targets) patterns_.emplace_back(t);
    if (o_.rank < 1)
      throw std::invalid_argument("lora: rank " + std::to_string(o_.rank) + " must be at least 1");
    if (!(o_.alpha >= 0))
      throw std::invalid_argument("lora: alpha " + std::to_string(o_.alpha) + " must be >= 0");
    if (o_.dropout != 0)
      throw std::invalid_argument(
          "lora: dropout = " + std::to_string(o_.dropout) +
          " is not supported: this LoRA merges alpha/r * B A into the layer's weight before each "
          "forward pass (the backbones call their layers directly, so the layer input that "
          "dropout would act on is not reachable); use dropout = 0");
  }

  void attach(tlab::Model& model, const tlab::TaskInfo& /*task*/, tlab::Context& ctx) override {
    // Candidates: every Linear and Conv2d module of the backbone, by dotted name.
    struct Candidate {
      std::string name;
      std::shared_ptr<torch::nn::Module> module;
      std::string describe;
    };
    std::vector<Candidate> candidates;
    std::vector<std::string> others;  // names of other modules, for the error message
    for (const auto& item : model.backbone->named_modules("", /*include_self=*/false)) {
      const auto& m = item.value();
      if (auto* l = m->as<torch::nn::Linear>()) {
        candidates.push_back({item.key(), m,
                              "Linear " + std::to_string(l->options.in_features()) + "->" +
                                  std::to_string(l->options.out_features())});
      } else if (auto* a = m->as<torch::nn::MultiheadAttention>();
                 a && a->in_proj_weight.defined()) {
        // The fused projection of query, key and value (PyTorch's nn.MultiheadAttention, as the
        // transformer and vit backbones use it): one update of the 3E x E in_proj_weight.
        const int64_t e = a->options.embed_dim();
        candidates.push_back(
            {item.key(), m,
             "MultiheadAttention in_proj " + std::to_string(e) + "->3x" + std::to_string(e)});
      } else if (auto* c = m->as<torch::nn::Conv2d>()) {
        const auto& co = c->options;
        candidates.push_back(
            {item.key(), m,
             "Conv2d " + std::to_string(co.in_channels()) + "->" +
                 std::to_string(co.out_channels()) + " " + std::to_string((*co.kernel_size())[0]) +
                 "x" + std::to_string((*co.kernel_size())[1]) +
                 (co.groups() != 1 ? " groups " + std::to_string(co.groups()) : "")});
      } else {
        others.push_back(item.key());
      }
    }
    auto list = [&] {
      std::string s;
      for (const auto& c : candidates)
        s += (s.empty() ? "" : ", ") + c.name + " (" + c.describe + ")";
      return s.empty() ? std::string("none") : s;
    };

    std::vector<bool> picked(candidates.size(), false);
    for (const auto& p : patterns_) {
      bool any = false;
      for (std::size_t i = 0; i < candidates.size(); ++i)
        if (p.matches(candidates[i].name)) picked[i] = any = true;
      if (!any) {
        std::string other;
        for (const auto& n : others)
          if (p.matches(n)) other += (other.empty() ? "" : ", ") + n;
        throw std::invalid_argument(
            "lora: target pattern '" + p.text() +
            "' matches no Linear, Conv2d or MultiheadAttention module of the " + "backbone" +
            (other.empty() ? "" : " (it matches " + other + ", of other types)") +
            "; its Linear, Conv2d and MultiheadAttention modules are: " + list());
      }
    }
    std::vector<const Candidate*> chosen;  // in the backbone's module order
    for (std::size_t i = 0; i < candidates.size(); ++i)
      if (picked[i]) chosen.push_back(&candidates[i]);

    // Check every chosen layer before changing any.
    for (const auto* c : chosen) {
      if (auto* conv = c->module->as<torch::nn::Conv2d>(); conv && conv->options.groups() != 1)
        throw std::invalid_argument(
            "lora: cannot adapt '" + c->name +
            "': it is a grouped convolution (groups = " + std::to_string(conv->options.groups()) +
            "); LoRA here needs groups = 1. Narrow 'targets' to leave it out; the backbone's "
            "Linear, Conv2d and MultiheadAttention modules are: " +
            list());
      if (!member_of(*c->module)
               ->is_same(c->module->named_parameters(false)[registered_name(*c->module)]))
        throw std::invalid_argument("lora: '" + c->name +
                                    "' is already adapted by an earlier lora adapter; give each "
                                    "layer to one lora only");
    }
    const std::string prefix = unused_name(model, "lora");
    auto holder = std::make_shared<torch::nn::Module>();
    std::vector<Adapted> adapted;
    const double scale = o_.alpha / static_cast<double>(o_.rank);
    int64_t added = 0;
    std::string summary;
    for (const auto* c : chosen) {
      auto params = c->module->named_parameters(/*recurse=*/false);
      torch::Tensor* member = member_of(*c->module);
      const torch::Tensor w0 = params[registered_name(*c->module)];
      const int64_t out = w0.size(0), fan_in = w0.numel() / out;
      if (o_.rank > std::min(out, fan_in) && ctx.log)
        ctx.log->warn("rank " + std::to_string(o_.rank) +
                      " exceeds min(out, fan_in) = " + std::to_string(std::min(out, fan_in)) +
                      " of '" + c->name + "': the update cannot use it all");
      auto f = std::make_shared<LoraFactors>(
          o_.rank, fan_in, out, torch::TensorOptions().dtype(w0.dtype()).device(ctx.device));
      std::string child;
      for (char ch : c->name) child += ch == '.' ? '_' : ch;
      while (holder->named_children().contains(child)) child += "_";
      holder->register_module(child, f);
      for (auto& p : params) p.value().requires_grad_(false);
      adapted.push_back({c->name, c->module, member, w0, f, scale});
      added += f->A.numel() + f->B.numel();
      summary += (summary.empty() ? "" : ", ") + c->name + " (" + c->describe + ")";
    }
    model.register_module(prefix, holder);
    if (o_.freeze_base)
      for (auto& p : model.backbone->parameters()) p.requires_grad_(false);
    {
      // B = 0: the member becomes a copy of W0; a later lora on the same layer sees it is taken.
      torch::NoGradGuard no_grad;
      for (const auto& a : adapted) a.apply();
    }
    model.before_forward.push_back([adapted] {
      for (const auto& a : adapted) a.apply();
    });
    if (ctx.log) {
      std::ostringstream s;
      s << prefix << ": adapted " << adapted.size() << " layer(s) with rank " << o_.rank
        << ", scale alpha/r = " << scale << ": " << summary << "; added " << added
        << " parameters; " << counts(model);
      ctx.log->info(s.str());
    }
  }

 private:
  Options o_;
  std::vector<NamePattern> patterns_;
};

TLAB_PLUGIN(Lora, "lora", "1.0.0",
            "Low-rank adaptation (LoRA) of Linear, Conv2d and fused attention projections")
