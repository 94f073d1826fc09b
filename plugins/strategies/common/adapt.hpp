#pragma once
// Shared by the strategy plugins (header-only, compiled into each): the source domain and the
// target's unlabelled pool with clear errors, random batches of unlabelled inputs, and the
// adaptation stage that trains the model (backbone + the head the adapters attached) on the
// labelled source while a strategy adds its own term (MMD, CORAL, a domain classifier, ...).
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "tlab/sdk/strategy.hpp"

namespace tlab_strategy {

/// The labelled source domain, or an error saying `strategy` needs one.
inline const tlab::DomainData& need_source(tlab::Session& s, const std::string& strategy) {
  const tlab::DomainData* src = s.source();
  if (!src)
    throw std::invalid_argument(strategy +
                                " trains on a labelled source domain: add a [source] table "
                                "(e.g. defaults = [{ \"dataset@source\" = \"digits_clean\" }])");
  if (src->train.streamed())
    throw std::invalid_argument(strategy +
                                " needs a resident source training split; this one is streamed "
                                "(raise the dataset's resident_max_mb)");
  return *src;
}

/// Checks that source and target share their classes (the model's head serves both).
inline void need_same_classes(tlab::Session& s, const tlab::DomainData& src,
                              const std::string& strategy) {
  const int64_t t = s.target().num_classes;
  if (src.num_classes != t)
    throw std::invalid_argument(
        strategy + " uses one classifier for both domains, but the source has " +
        std::to_string(src.num_classes) + " classes and the target " + std::to_string(t) +
        "; use domains with the same classes, or finetune/multitask for different ones");
}

/// The target's unlabelled inputs, or an error saying how to get some.
inline const torch::Tensor& need_unlabeled(tlab::Session& s, const std::string& strategy) {
  const torch::Tensor& u = s.target().unlabeled;
  if (!u.defined() || u.size(0) == 0)
    throw std::invalid_argument(
        strategy +
        " adapts to unlabelled target inputs, but the target has none: keep a few labels per "
        "class with [target] shots = K (the other training examples become the unlabelled "
        "pool), or use a dataset that provides unlabelled data");
  return u;
}

/// Random batches from a pool of inputs: a fresh permutation each time the pool is used up,
/// drawn with LibTorch's generator (seeded by the host), on the pool's device.
class Sampler {
 public:
  Sampler(torch::Tensor pool, int64_t batch) : pool_(std::move(pool)), batch_(batch) {
    if (batch_ < 1) throw std::invalid_argument("Sampler: batch size must be >= 1");
  }
  /// Indices of the next batch (min(batch, pool size) rows).
  torch::Tensor next_index() {
    const int64_t n = pool_.size(0);
    const int64_t b = std::min(batch_, n);
    if (!perm_.defined() || pos_ + b > n) {
      perm_ = torch::randperm(n, torch::TensorOptions(pool_.device()).dtype(torch::kLong));
      pos_ = 0;
    }
    auto idx = perm_.slice(0, pos_, pos_ + b);
    pos_ += b;
    return idx;
  }
  /// The next batch of the pool's rows.
  torch::Tensor next() { return pool_.index_select(0, next_index()); }
  const torch::Tensor& pool() const { return pool_; }

 private:
  torch::Tensor pool_;
  int64_t batch_;
  torch::Tensor perm_;
  int64_t pos_ = 0;
};

/// The adaptation stage: the whole model (backbone and head, every parameter that requires a
/// gradient) trains on the labelled source, `[train]` settings with `epochs` and `lr` (0 = the
/// experiment's) replaced; metrics are logged as source/...; source val is evaluated each epoch.
/// The caller sets `loss` (default cross-entropy) and hooks.
inline tlab::Stage source_stage(tlab::Session& s, const tlab::DomainData& src, int64_t epochs,
                                double lr) {
  auto& model = s.model();
  tlab::Stage st;
  st.domain = "source";
  st.config = s.train_config();
  st.config.epochs = epochs;
  if (lr > 0) st.config.lr = lr;
  for (auto& p : model.parameters())
    if (p.requires_grad()) st.parameters.push_back(p);
  st.module = &model;
  st.forward = [&model](const torch::Tensor& x) { return model.forward(x); };
  st.train = &src.train;
  st.val = &src.val;
  return st;
}

/// Puts a module and its submodules in eval mode and gives each its own mode back at the end of
/// the scope (a part a strategy keeps in eval mode stays so).
class EvalScope {
 public:
  explicit EvalScope(torch::nn::Module& m) {
    for (const auto& sub : m.modules()) modes_.emplace_back(sub, sub->is_training());
    m.eval();
  }
  // modules() lists parents before children, and train() recurses: restoring in that order
  // leaves every module in its own mode.
  ~EvalScope() {
    for (auto& [sub, training] : modes_) sub->train(training);
  }
  EvalScope(const EvalScope&) = delete;
  EvalScope& operator=(const EvalScope&) = delete;

 private:
  std::vector<std::pair<std::shared_ptr<torch::nn::Module>, bool>> modes_;
};

}  // namespace tlab_strategy
