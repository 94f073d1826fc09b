#pragma once
// Shared by the instance-based and semi-supervised strategies (importance_weighting, tradaboost,
// pseudo_label), header-only: a probabilistic domain classifier and the importance weights it
// gives, per-example weighted cross-entropy (and the stage hooks that look each row's weight up
// by its index), the
// TrAdaBoost weight update, and Lee's pseudo-label ramp-up. The formulas are here, free of the
// runner, so that the tests check them on tensors whose answer is known.
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "tlab/sdk/files.hpp"
#include "tlab/sdk/strategy.hpp"

namespace tlab_strategy {

/// Per-example weighted cross-entropy: mean_i w_i * CE(scores_i, y_i). With weights of mean 1
/// over the training set, a uniform batch gives an unbiased estimate of the weighted risk.
inline torch::Tensor weighted_cross_entropy(const torch::Tensor& scores, const torch::Tensor& y,
                                            const torch::Tensor& w) {
  namespace F = torch::nn::functional;
  auto ce = F::cross_entropy(scores, y, F::CrossEntropyFuncOptions().reduction(torch::kNone));
  return (w.to(ce.dtype()) * ce).mean();
}

/// Stage hooks whose loss is weighted_cross_entropy with each row's weight looked up in
/// `weights` by its index in the stage's training split (Batch::index).
struct WeightedHooks : tlab::StageHooks {
  torch::Tensor weights;  ///< One per training row.
  torch::Tensor loss(tlab::Session& s, const tlab::Batch& b) override {
    return weighted_cross_entropy(s.model().forward(b.x), b.y, weights.index_select(0, b.index));
  }
};

/// Class predictions of `forward` on `x`, in batches of 256, without gradients.
inline torch::Tensor predict(const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                             const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < x.size(0); i += 256)
    out.push_back(forward(x.slice(0, i, std::min(x.size(0), i + 256))).argmax(1));
  return torch::cat(out);
}

/// Writes per-example weights to `path` as CSV: `domain,row,weight`, the first `n_source` rows
/// of `w` as source rows 0.., the rest as target rows 0.. (a run's artifact: which examples
/// counted). Throws if the file cannot be written.
inline void write_weights(const std::filesystem::path& path, const torch::Tensor& w,
                          int64_t n_source) {
  std::ostringstream out;
  out << "domain,row,weight\n";
  auto c = w.to(torch::kCPU, torch::kDouble).contiguous();
  const double* p = c.data_ptr<double>();
  out.precision(9);
  for (int64_t i = 0; i < c.size(0); ++i)
    out << (i < n_source ? "source," : "target,") << (i < n_source ? i : i - n_source) << ','
        << p[i] << '\n';
  tlab::write_file_atomic(path, out.str());  // throws "cannot write 'PATH': why; ..."
}

// ---------------------------------------------------------------------------------------------
// Importance weighting under covariate shift (Shimodaira 2000; Sugiyama et al. 2007) with the
// density ratio estimated by a probabilistic domain classifier (Bickel, Brueckner & Scheffer
// 2007): trained on n_s source inputs (label 0) and n_t target inputs (label 1),
//   p_t(x) / p_s(x) = [p(t|x) / p(s|x)] * (n_s / n_t) = exp(logit(x)) * n_s / n_t.

/// Settings of the domain classifier.
struct DomainClassifierOptions {
  std::string kind = "mlp";    ///< "logistic" (one linear layer) or "mlp" (one hidden ReLU layer).
  int64_t hidden = 64;         ///< Hidden width of "mlp".
  int64_t epochs = 5;          ///< Passes over source and target inputs.
  int64_t batch_size = 128;    ///< Examples per step.
  double lr = 1e-3;            ///< Adam's learning rate (inputs are standardised).
  double weight_decay = 1e-4;  ///< L2 penalty (keeps the probabilities from saturating).
};

/// A trained domain classifier: the logit of p(target | x) for each source row, and its accuracy
/// on the data it was trained on (0.5 = the domains look alike to it).
struct DomainFit {
  torch::Tensor source_logits;  ///< One per source row.
  double accuracy = 0;          ///< Fraction of source and target rows classified right.
};

/// Trains a domain classifier on flattened `xs` (label 0) and `xt` (label 1) with shuffled
/// batches of the pooled rows (so its prior is n_t / (n_s + n_t), undone by the weights), using
/// LibTorch's global generator (seeded by the host).
inline DomainFit fit_domain_classifier(const torch::Tensor& xs, const torch::Tensor& xt,
                                       const DomainClassifierOptions& o) {
  namespace nn = torch::nn;
  auto s = xs.flatten(1).to(torch::kFloat), t = xt.flatten(1).to(torch::kFloat);
  if (s.size(1) != t.size(1))
    throw std::invalid_argument("domain classifier: source inputs have " +
                                std::to_string(s.size(1)) + " values and target inputs " +
                                std::to_string(t.size(1)) + "; the domains need one input shape");
  auto x = torch::cat({s, t});
  auto d =
      torch::cat({torch::zeros({s.size(0)}, s.options()), torch::ones({t.size(0)}, s.options())});
  // Standardised inputs (statistics of the pooled rows), so one learning rate fits every dataset.
  auto mean = x.mean(0), sd = x.std(0).clamp_min(1e-6);
  x = (x - mean) / sd;
  nn::Sequential net;
  if (o.kind == "logistic") {
    net->push_back(nn::Linear(x.size(1), 1));
  } else if (o.kind == "mlp") {
    net->push_back(nn::Linear(x.size(1), o.hidden));
    net->push_back(nn::ReLU());
    net->push_back(nn::Linear(o.hidden, 1));
  } else {
    throw std::invalid_argument("domain classifier \"" + o.kind +
                                "\" is unknown; expected \"logistic\" or \"mlp\"");
  }
  // The output layer starts at zero: logit 0 everywhere, i.e. equal weights (the source risk),
  // so that a classifier trained too briefly errs toward source-only, not toward random weights.
  {
    torch::NoGradGuard no_grad;
    auto last = net->ptr(net->size() - 1)->as<nn::Linear>();
    last->weight.zero_();
    last->bias.zero_();
  }
  net->to(x.device());
  torch::optim::Adam opt(net->parameters(),
                         torch::optim::AdamOptions(o.lr).weight_decay(o.weight_decay));
  const int64_t n = x.size(0);
  for (int64_t e = 0; e < o.epochs; ++e) {
    auto perm = torch::randperm(n, torch::TensorOptions(x.device()).dtype(torch::kLong));
    for (int64_t i = 0; i < n; i += o.batch_size) {
      auto idx = perm.slice(0, i, std::min(n, i + o.batch_size));
      opt.zero_grad();
      auto loss = torch::nn::functional::binary_cross_entropy_with_logits(
          net->forward(x.index_select(0, idx)).squeeze(1), d.index_select(0, idx));
      loss.backward();
      opt.step();
    }
  }
  torch::NoGradGuard no_grad;
  net->eval();
  auto logits = net->forward(x).squeeze(1);
  DomainFit fit;
  fit.source_logits = logits.slice(0, 0, s.size(0));
  fit.accuracy = logits.gt(0).to(torch::kFloat).eq(d).to(torch::kDouble).mean().item<double>();
  return fit;
}

/// Importance weights from domain-classifier logits of the source rows:
///   w_i = min((exp(logit_i) * n_s / n_t)^lambda, clip),  then w_i / mean(w)  (mean 1 over the
/// source). lambda in [0, 1] is Shimodaira's (2000) flattening: 1 = the density ratio (unbiased,
/// high variance), 0 = equal weights (the source risk).
inline torch::Tensor importance_weights(const torch::Tensor& source_logits, int64_t n_source,
                                        int64_t n_target, double clip, double lambda = 1.0) {
  auto w = torch::exp(lambda * (source_logits.to(torch::kDouble) +
                                std::log(static_cast<double>(n_source) / n_target)));
  w = w.clamp(0.0, clip);
  return (w / w.mean()).to(torch::kFloat);
}

/// Effective sample size of weights: (sum w)^2 / sum w^2 (n for equal weights).
inline double effective_sample_size(const torch::Tensor& w) {
  auto d = w.to(torch::kDouble);
  return (d.sum().pow(2) / d.pow(2).sum()).item<double>();
}

// ---------------------------------------------------------------------------------------------
// TrAdaBoost (Dai, Yang, Xue & Yu 2007, Algorithm 1). Rows 0..n-1 are the diff-distribution
// data T_d (the source), rows n..n+m-1 the same-distribution data T_s (the target's labels).

/// One round's quantities.
struct BoostRound {
  double error = 0;   ///< eps_t: error on T_s weighted by w, clamped to [kMinError, kMaxError].
  double beta_t = 0;  ///< eps_t / (1 - eps_t).
  double beta = 0;    ///< 1 / (1 + sqrt(2 ln n / N)).
};

/// eps_t's bounds: the paper needs eps_t < 1/2; an error of 0 (a network fitting the few target
/// labels) would make beta_t = 0 and the vote weight log(1/beta_t) infinite.
constexpr double kMinError = 1e-3, kMaxError = 0.499;

/// Updates `w` (n + m weights, double) in place from the round's mistakes (`wrong`, bool, one
/// per row) and returns the round's quantities:
///   eps_t = sum_{T_s} w_i [wrong_i] / sum_{T_s} w_i,   beta_t = eps_t / (1 - eps_t),
///   beta  = 1 / (1 + sqrt(2 ln n / N)),
///   w_i <- w_i * beta^[wrong_i]        (T_d: a source row the learner gets wrong loses weight),
///   w_i <- w_i * beta_t^-[wrong_i]     (T_s: a target row it gets wrong gains weight).
inline BoostRound tradaboost_update(torch::Tensor& w, const torch::Tensor& wrong, int64_t n,
                                    int64_t rounds) {
  BoostRound r;
  auto miss = wrong.to(torch::kDouble);
  auto ws = w.slice(0, n), ms = miss.slice(0, n);
  const double err = ((ws * ms).sum() / ws.sum()).item<double>();
  r.error = std::min(kMaxError, std::max(kMinError, err));
  r.beta_t = r.error / (1.0 - r.error);
  r.beta = 1.0 / (1.0 + std::sqrt(2.0 * std::log(static_cast<double>(n)) / rounds));
  auto factor = torch::cat({torch::pow(r.beta, miss.slice(0, 0, n)), torch::pow(r.beta_t, -ms)});
  w.mul_(factor);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Pseudo-Label (Lee 2013): the unlabelled term's weight
//   alpha(t) = 0 for t < T1,  alpha_f (t - T1) / (T2 - T1) for T1 <= t < T2,  alpha_f for t >= T2.

/// Lee's ramp-up at epoch `t` (0-based).
inline double pseudo_label_alpha(int64_t t, int64_t t1, int64_t t2, double alpha_f) {
  if (t < t1) return 0.0;
  if (t >= t2) return alpha_f;
  return alpha_f * static_cast<double>(t - t1) / static_cast<double>(t2 - t1);
}

/// The pseudo-label term of a batch of unlabelled scores: argmax labels of the detached scores,
/// cross-entropy on the rows whose top softmax probability is >= threshold, averaged over the
/// whole batch (rows below the threshold add 0). `confident` gets the mask.
inline torch::Tensor pseudo_label_loss(const torch::Tensor& scores, double threshold,
                                       torch::Tensor* confident) {
  namespace F = torch::nn::functional;
  auto [conf, label] = torch::softmax(scores.detach(), 1).max(1);
  auto mask = conf.ge(threshold);
  if (confident) *confident = mask;
  auto ce = F::cross_entropy(scores, label, F::CrossEntropyFuncOptions().reduction(torch::kNone));
  return (ce * mask.to(ce.dtype())).mean();
}

}  // namespace tlab_strategy
