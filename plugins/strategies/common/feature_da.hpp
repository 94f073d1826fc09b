#pragma once
// Feature-level domain adaptation, shared by source_only, dan, coral and dann (header-only,
// compiled into each): the losses between source and target activations, the gradient reversal
// layer and DANN's schedules, and the domain distances every one of them logs after its
// adaptation stage (the stage itself is the SDK's tlab::AdaptationHooks).
//
// Losses (all differentiable, on the tensors' device and dtype):
//  - Multi-kernel MMD (Long et al. 2015, "Learning Transferable Features with Deep Adaptation
//    Networks", eq. 1-3; Gretton et al. 2012): k = sum_u exp(-||x - y||^2 / gamma_u), a family
//    of Gaussian kernels with gamma_u = base * kernel_mul^(u - kernel_num / 2), u = 0..num-1,
//    base = the mean squared distance between distinct rows of the joint batch (detached), as
//    the reference implementations do, or fixed bandwidths. Kernels are summed with equal
//    weights (the paper learns the weights beta by a quadratic program; the reference code
//    uses equal ones). Estimators of MMD^2:
//      biased   (quadratic V-statistic) mean K_ss + mean K_tt - 2 mean K_st;
//      unbiased (quadratic U-statistic) as biased without the diagonals of K_ss and K_tt;
//      linear   (the paper's linear-time unbiased estimator, Gretton 2012 sec. 6):
//               quads z_i = (s_2i-1, s_2i, t_2i-1, t_2i), i = 1..m/2,
//               g(z_i) = k(s_2i-1, s_2i) + k(t_2i-1, t_2i) - k(s_2i-1, t_2i) - k(s_2i, t_2i-1),
//               MMD^2 = (2/m) sum_i g(z_i), m = the even part of min(n_s, n_t).
//  - CORAL (Sun & Saenko 2016, "Deep CORAL", eq. 1-3): ||C_s - C_t||_F^2 / (4 d^2), C the
//    unbiased covariance (1/(n-1)) (X^T X - (1^T X)^T (1^T X) / n).
//  - Gradient reversal (Ganin et al. 2016, JMLR, sec. 5): identity forward, -lambda * grad
//    backward; lambda_p = 2 / (1 + exp(-gamma p)) - 1 and mu_p = mu_0 / (1 + alpha p)^beta.
#include <cmath>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/autograd.h>
#include <torch/nn/functional/loss.h>
#include <torch/types.h>

#include "tlab/sdk/adaptation.hpp"

namespace tlab_strategy::da {

/// Squared Euclidean distances between the rows of `x` (n x d) and `y` (m x d): n x m.
inline torch::Tensor sq_dists(const torch::Tensor& x, const torch::Tensor& y) {
  auto xx = x.pow(2).sum(1, true);
  auto yy = y.pow(2).sum(1, true).t();
  return (xx + yy - 2 * x.matmul(y.t())).clamp_min(0);
}

/// Settings of the Gaussian kernel family.
struct KernelFamily {
  double kernel_mul = 2.0;           ///< Ratio of consecutive bandwidths.
  int64_t kernel_num = 5;            ///< Kernels (when `bandwidths` is empty).
  std::vector<double> bandwidths;    ///< Fixed gamma_u; empty = base * kernel_mul^(u - num/2).
  std::string estimator = "biased";  ///< "biased", "unbiased" or "linear".
};

/// The bandwidths gamma_u for the joint batch `z` (rows of both domains): fixed ones, or the
/// mean squared distance between distinct rows (computed in O(n d), detached) times
/// kernel_mul^(u - kernel_num / 2). 0-dim double tensors on z's device: computing them reads
/// nothing back to the host (no synchronisation per step on a GPU).
inline std::vector<torch::Tensor> bandwidths(const torch::Tensor& z, const KernelFamily& k) {
  const auto opts = z.options().dtype(torch::kDouble);
  std::vector<torch::Tensor> out;
  if (!k.bandwidths.empty()) {
    for (double g : k.bandwidths) out.push_back(torch::scalar_tensor(g, opts));
    return out;
  }
  const int64_t n = z.size(0);
  auto zd = z.detach().to(torch::kDouble);
  torch::Tensor base = torch::ones({}, opts);
  if (n > 1) {
    // sum_{i,j} ||z_i - z_j||^2 = 2 n sum_i ||z_i||^2 - 2 ||sum_i z_i||^2
    auto total = 2.0 * n * zd.pow(2).sum() - 2.0 * zd.sum(0).pow(2).sum();
    base = total / static_cast<double>(n * n - n);
    // All rows equal: any bandwidth gives the same (zero) MMD.
    base = torch::where(base > 0, base, torch::ones_like(base));
  }
  for (int64_t u = 0; u < k.kernel_num; ++u)
    out.push_back(base * std::pow(k.kernel_mul, static_cast<double>(u - k.kernel_num / 2)));
  return out;
}

/// sum_u exp(-d / gamma_u) elementwise for squared distances `d`.
inline torch::Tensor kernel_of(const torch::Tensor& d, const std::vector<torch::Tensor>& gammas) {
  torch::Tensor k;
  for (const auto& g : gammas) {
    auto ku = torch::exp(-d / g);
    k = k.defined() ? k + ku : ku;
  }
  return k;
}

/// Multi-kernel MMD^2 between `s` (n_s x d) and `t` (n_t x d) with `k.estimator`.
inline torch::Tensor mk_mmd(const torch::Tensor& s, const torch::Tensor& t, const KernelFamily& k) {
  if (s.dim() != 2 || t.dim() != 2 || s.size(1) != t.size(1))
    throw std::invalid_argument("mk_mmd: expected two matrices with the same number of columns");
  const auto gammas = bandwidths(torch::cat({s, t}), k);
  if (k.estimator == "linear") {
    const int64_t m = std::min(s.size(0), t.size(0)) / 2 * 2;
    if (m < 2)
      throw std::invalid_argument("mk_mmd: the linear estimator needs at least 2 rows per domain");
    auto pair = [&](const torch::Tensor& a, const torch::Tensor& b) {  // k(a_i, b_i) per row
      return kernel_of((a - b).pow(2).sum(1), gammas);
    };
    auto s1 = s.slice(0, 0, m, 2), s2 = s.slice(0, 1, m, 2);
    auto t1 = t.slice(0, 0, m, 2), t2 = t.slice(0, 1, m, 2);
    return (pair(s1, s2) + pair(t1, t2) - pair(s1, t2) - pair(s2, t1)).mean();
  }
  auto kss = kernel_of(sq_dists(s, s), gammas);
  auto ktt = kernel_of(sq_dists(t, t), gammas);
  auto kst = kernel_of(sq_dists(s, t), gammas);
  if (k.estimator == "unbiased") {
    const int64_t ns = s.size(0), nt = t.size(0);
    if (ns < 2 || nt < 2)
      throw std::invalid_argument(
          "mk_mmd: the unbiased estimator needs at least 2 rows per domain");
    auto off = [](const torch::Tensor& kk, int64_t n) {
      return (kk.sum() - kk.diagonal().sum()) / static_cast<double>(n * (n - 1));
    };
    return off(kss, ns) + off(ktt, nt) - 2 * kst.mean();
  }
  if (k.estimator != "biased")
    throw std::invalid_argument("mk_mmd: unknown estimator '" + k.estimator +
                                "'; expected biased, unbiased or linear");
  return kss.mean() + ktt.mean() - 2 * kst.mean();
}

/// Unbiased covariance of the rows of `x` (n x d, n >= 2): d x d.
inline torch::Tensor covariance(const torch::Tensor& x) {
  const int64_t n = x.size(0);
  auto colsum = x.sum(0, true);
  return (x.t().matmul(x) - colsum.t().matmul(colsum) / static_cast<double>(n)) /
         static_cast<double>(n - 1);
}

/// Deep CORAL loss ||C_s - C_t||_F^2 / (4 d^2).
inline torch::Tensor coral(const torch::Tensor& s, const torch::Tensor& t) {
  if (s.dim() != 2 || t.dim() != 2 || s.size(1) != t.size(1))
    throw std::invalid_argument("coral: expected two matrices with the same number of columns");
  if (s.size(0) < 2 || t.size(0) < 2)
    throw std::invalid_argument("coral: covariances need at least 2 rows per domain");
  const double d = static_cast<double>(s.size(1));
  return (covariance(s) - covariance(t)).pow(2).sum() / (4.0 * d * d);
}

/// Gradient reversal layer: identity forward, -lambda * upstream gradient backward.
struct GradReverse : public torch::autograd::Function<GradReverse> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               double lambda) {
    ctx->saved_data["lambda"] = lambda;
    return x.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const double lambda = ctx->saved_data["lambda"].toDouble();
    return {grad[0] * -lambda, torch::Tensor()};
  }
};
inline torch::Tensor grad_reverse(const torch::Tensor& x, double lambda) {
  return GradReverse::apply(x, lambda);
}

/// DANN's adaptation factor lambda_p = 2 / (1 + exp(-gamma p)) - 1 (0 at p = 0, -> 1).
inline double grl_lambda(double p, double gamma) {
  return 2.0 / (1.0 + std::exp(-gamma * p)) - 1.0;
}
/// DANN's annealed learning-rate factor mu_p / mu_0 = 1 / (1 + alpha p)^beta.
inline double annealed_lr_factor(double p, double alpha, double beta) {
  return 1.0 / std::pow(1.0 + alpha * p, beta);
}

/// Activations of a batch at the named layers: "features" (the backbone's output) and/or
/// "logits" (the head's output), in the order of `layers`.
inline std::vector<torch::Tensor> activations(tlab::Model& model, const torch::Tensor& x,
                                              const std::vector<std::string>& layers) {
  auto f = model.features(x);
  std::vector<torch::Tensor> out;
  torch::Tensor logits;
  for (const auto& l : layers) {
    if (l == "features") {
      out.push_back(f);
    } else {
      if (!logits.defined()) logits = model.head->forward(f);
      out.push_back(logits);
    }
  }
  return out;
}

/// Checks a list of layer names (non-empty, each "features" or "logits", no repeats).
inline void check_layers(const std::vector<std::string>& layers, const std::string& strategy,
                         const std::string& key) {
  if (layers.empty())
    throw std::invalid_argument(strategy + ": " + key +
                                " is empty; expected [\"features\"], [\"logits\"] or both");
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (layers[i] != "features" && layers[i] != "logits")
      throw std::invalid_argument(strategy + ": " + key + " has '" + layers[i] +
                                  "'; expected \"features\" (the backbone's output) or "
                                  "\"logits\" (the head's output)");
    for (std::size_t j = 0; j < i; ++j)
      if (layers[j] == layers[i])
        throw std::invalid_argument(strategy + ": " + key + " lists '" + layers[i] +
                                    "' twice; list each layer once");
  }
}

/// Up to `max_rows` rows of a split's inputs (resident), or of `pool`.
inline torch::Tensor head_rows(const torch::Tensor& x, int64_t max_rows) {
  return x.slice(0, 0, std::min<int64_t>(x.size(0), max_rows));
}

/// After adaptation, the distances between the domains on held-out inputs, the same for every
/// strategy so that they compare: source val (else train) against target test inputs (else the
/// unlabelled pool), up to 1000 each, in eval mode; summaries source/final/{coral,mmd}_{layer}
/// (MMD: biased estimator, kernel_mul 2, kernel_num 5).
inline void log_final_distances(tlab::Session& s, const tlab::DomainData& src) {
  auto& model = s.model();
  const auto& tgt = s.target();
  auto pick_src = src.val.size() >= 2 && !src.val.streamed() ? src.val.x : src.train.x;
  auto pick_tgt = tgt.test.size() >= 2 && !tgt.test.streamed() ? tgt.test.x : tgt.unlabeled;
  if (!pick_src.defined() || !pick_tgt.defined() || pick_src.size(0) < 2 || pick_tgt.size(0) < 2)
    return;
  const bool was_training = model.is_training();
  model.eval();
  {
    torch::NoGradGuard no_grad;
    auto xs = head_rows(pick_src, 1000).to(s.context().device);
    auto xt = head_rows(pick_tgt, 1000).to(s.context().device);
    const std::vector<std::string> layers{"features", "logits"};
    auto as = activations(model, xs, layers), at = activations(model, xt, layers);
    KernelFamily k;
    auto* m = s.context().metrics;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      auto a = as[i].to(torch::kDouble), b = at[i].to(torch::kDouble);
      m->summary("source/final/coral_" + layers[i], coral(a, b).item<double>());
      m->summary("source/final/mmd_" + layers[i], mk_mmd(a, b, k).item<double>());
    }
  }
  model.train(was_training);
}

/// Runs `hooks`' adaptation stage (AdaptationHooks::run), then logs source/test/acc and the
/// domain distances after adaptation (log_final_distances).
inline void adapt_and_measure(tlab::Session& s, tlab::AdaptationHooks& hooks,
                              const tlab::SourceOptions& o, double weight,
                              std::vector<tlab::ParamGroup> extra = {}) {
  const tlab::Stage st = hooks.run(s, o, weight, std::move(extra));
  const tlab::DomainData& src = *s.source();
  if (src.test.size() > 0 && !src.test.streamed())
    s.context().metrics->summary("source/test/acc",
                                 s.evaluate(s.model(), st.forward, src.test).acc);
  log_final_distances(s, src);
}

}  // namespace tlab_strategy::da
