#pragma once
/// \file adaptation.hpp
/// Feature-level domain adaptation as stage hooks (DAN, Deep CORAL, DANN and their kin): each
/// step passes a labelled source batch and a batch of unlabelled target inputs of the same size
/// through the model in one forward pass (concatenated, as the reference implementations do),
/// and the loss is
///   CE(source batch) + weight * term(source activations, target activations)
/// at the layers named: "features" (the backbone's output) and/or "logits" (the head's output).
/// The term's mean over each epoch is logged as source/train/<term name>.
///
/// Example (Deep CORAL on the logits; the whole strategy runs it in setup()):
/// \code
///   class CoralHooks : public tlab::AdaptationHooks {
///    public:
///     CoralHooks() : AdaptationHooks({"logits"}, "coral") {}
///     torch::Tensor term(tlab::Session&, const std::vector<torch::Tensor>& s,
///                        const std::vector<torch::Tensor>& t) override {
///       return coral_loss(s[0], t[0]);
///     }
///   };
///   void setup(tlab::Session& s) override { hooks_.run(s, o_.source, o_.weight); }
/// \endcode

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tlab/sdk/sampler.hpp"
#include "tlab/sdk/source.hpp"
#include "tlab/sdk/strategy.hpp"

namespace tlab {

/// Hooks of an adaptation stage on the labelled source and the unlabelled target. Derive and
/// override term(); with no layers (the base class as is) the stage is plain cross-entropy on the
/// source, the baseline of domain adaptation.
class AdaptationHooks : public StageHooks {
 public:
  /// Activations at `layers` ("features", "logits", in that order of preference of the caller)
  /// feed term(); its epoch mean is logged as source/train/`term_name`.
  explicit AdaptationHooks(std::vector<std::string> layers = {}, std::string term_name = "")
      : layers_(std::move(layers)), term_name_(std::move(term_name)) {}

  /// The adaptation term of one step: source and target activations, one tensor per layer (in
  /// the order given to the constructor), to a scalar. Called only when there are layers.
  virtual torch::Tensor term(Session& /*session*/, const std::vector<torch::Tensor>& /*source*/,
                             const std::vector<torch::Tensor>& /*target*/) {
    return {};
  }

  /// Builds the stage (source_stage with `o`; `extra` parameter groups, e.g. a domain
  /// classifier's), checks the data (a source with the target's classes; unlabelled target
  /// inputs when there is a term) and fits it with these hooks. `weight` is the term's
  /// trade-off. Returns the stage (its forward evaluates the adapted model).
  Stage run(Session& s, const SourceOptions& o, double weight, std::vector<ParamGroup> extra = {}) {
    need_same_classes(s, need_source(s));
    Stage st = source_stage(s, o);
    for (auto& g : extra) st.groups.push_back(std::move(g));
    weight_ = weight;
    if (!layers_.empty())  // the baseline (no term) needs no target data
      target_ = Sampler(need_unlabeled(s).to(s.context().device), st.config.batch_size);
    term_sum_ = torch::zeros({}, torch::TensorOptions(s.context().device));
    steps_ = 0;
    st.hooks = this;
    s.fit(st);
    return st;
  }

  torch::Tensor loss(Session& s, const Batch& b) override {
    Model& model = s.model();
    const int64_t ns = b.x.size(0);
    // No term, or a last batch too small for covariances and pairs: cross-entropy alone.
    if (layers_.empty() || ns < 2) return cross_entropy(model.forward(b.x), b.y);
    auto xt = target_.next();
    auto feats = model.features(torch::cat({b.x, xt.to(b.x.dtype())}));
    std::vector<torch::Tensor> as, at;
    torch::Tensor logits;
    for (const auto& l : layers_) {
      torch::Tensor a = feats;
      if (l == "logits") a = logits.defined() ? logits : (logits = model.head->forward(feats));
      as.push_back(a.slice(0, 0, ns));
      at.push_back(a.slice(0, ns));
    }
    if (!logits.defined()) logits = model.head->forward(feats);
    auto ce = cross_entropy(logits.slice(0, 0, ns), b.y);
    auto t = term(s, as, at);
    term_sum_ += t.detach().to(term_sum_.dtype());
    ++steps_;
    return ce + weight_ * t;
  }

  void on_epoch_end(Session& s, int64_t epoch) override {
    if (layers_.empty()) return;
    s.context().metrics->log("source/train/" + term_name_,
                             steps_ ? term_sum_.item<double>() / static_cast<double>(steps_) : 0.0,
                             s.step(), epoch);
    term_sum_.zero_();
    steps_ = 0;
  }

 protected:
  std::vector<std::string> layers_;
  std::string term_name_;
  double weight_ = 1.0;
  Sampler target_;          ///< Unlabelled target inputs, train.batch_size per step.
  torch::Tensor term_sum_;  ///< Sum of the term over the epoch's steps (on the device).
  int64_t steps_ = 0;
};

}  // namespace tlab
