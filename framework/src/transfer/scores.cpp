#include "transfer/scores.hpp"

#include <cmath>
#include <map>

#include <fmt/format.h>
#include <torch/linalg.h>

namespace tlab::transfer {
namespace {

constexpr double kPi = 3.14159265358979323846;

// The labels as int64 on the CPU, checked: one per example, each in [0, classes), at least two
// classes present and `min_examples` examples.
torch::Tensor checked_labels(const char* score, const torch::Tensor& labels, int64_t n,
                             int64_t classes, int64_t min_examples, bool two_classes = true) {
  if (labels.dim() != 1 || labels.size(0) != n)
    throw ScoreError(fmt::format("{}: {} labels for {} examples; expected one label per example",
                                 score, labels.dim() == 1 ? labels.size(0) : labels.numel(), n));
  if (n < min_examples)
    throw ScoreError(
        fmt::format("{}: {} labelled examples; it needs at least {}", score, n, min_examples));
  torch::Tensor y = labels.to(torch::kCPU, torch::kLong);
  const int64_t lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
  if (lo < 0 || hi >= classes)
    throw ScoreError(fmt::format("{}: label {} is outside [0, {}); the target has {} classes",
                                 score, lo < 0 ? lo : hi, classes, classes));
  if (two_classes && lo == hi)
    throw ScoreError(
        fmt::format("{}: the labels hold one class only; a score compares at least "
                    "two",
                    score));
  return y;
}

torch::Tensor checked_features(const char* score, const torch::Tensor& features) {
  if (features.dim() != 2 || features.size(0) == 0 || features.size(1) == 0)
    throw ScoreError(
        fmt::format("{}: features with {} dimension(s) and {} values; expected a "
                    "non-empty matrix of examples x features",
                    score, features.dim(), features.numel()));
  torch::Tensor f = features.to(torch::kCPU, torch::kDouble);
  if (!torch::isfinite(f).all().item<bool>())
    throw ScoreError(fmt::format("{}: the features hold inf or nan", score));
  return f;
}

}  // namespace

double logme(const torch::Tensor& features, const torch::Tensor& labels, int64_t num_classes) {
  const torch::Tensor fh = checked_features("LogME", features);  // N x D
  const int64_t n = fh.size(0), d = fh.size(1);
  const torch::Tensor y = checked_labels("LogME", labels, n, num_classes, 2);
  const torch::Tensor f = fh.t();  // D x N
  // F F^T = V diag(s) V^T (symmetric: its SVD is its eigendecomposition).
  auto [v, s, vh] = torch::linalg::svd(f.matmul(fh), /*full_matrices=*/true, c10::nullopt);
  double total = 0;
  int64_t classes = 0;
  for (int64_t k = 0; k < num_classes; ++k) {
    const torch::Tensor yk = (y == k).to(torch::kDouble);
    if (yk.sum().item<double>() == 0) continue;  // a class absent from the labels: no column
    const double eps = 1e-5;
    double alpha = 1, beta = 1, lam = alpha / beta, alpha_de = 0, beta_de = 0;
    const torch::Tensor tmp = vh.matmul(f.matmul(yk));
    for (int step = 0; step < 11; ++step) {
      const double gamma = (s / (s + lam)).sum().item<double>();
      const torch::Tensor m = v.matmul(tmp * beta / (alpha + beta * s));
      alpha_de = (m * m).sum().item<double>();
      alpha = gamma / (alpha_de + eps);
      beta_de = (yk - fh.matmul(m)).pow(2).sum().item<double>();
      beta = (static_cast<double>(n) - gamma) / (beta_de + eps);
      const double new_lam = alpha / beta;
      if (std::abs(new_lam - lam) / lam < 0.01) break;
      lam = new_lam;
    }
    const double evidence =
        static_cast<double>(d) / 2 * std::log(alpha) + static_cast<double>(n) / 2 * std::log(beta) -
        0.5 * torch::log(alpha + beta * s).sum().item<double>() - beta / 2 * (beta_de + eps) -
        alpha / 2 * (alpha_de + eps) - static_cast<double>(n) / 2 * std::log(2 * kPi);
    total += evidence / static_cast<double>(n);
    ++classes;
  }
  return total / static_cast<double>(classes);
}

double leep(const torch::Tensor& source_probs, const torch::Tensor& labels, int64_t num_classes) {
  const torch::Tensor theta = checked_features("LEEP", source_probs);  // N x Z
  const int64_t n = theta.size(0);
  const torch::Tensor y = checked_labels("LEEP", labels, n, num_classes, 1);
  if ((theta < 0).any().item<bool>() || (theta.sum(1) - 1).abs().max().item<double>() > 1e-4)
    throw ScoreError(
        "LEEP: the source model's outputs are not probabilities (each row must be >= 0 and sum "
        "to 1): pass softmax outputs, not logits");
  // Joint P(y, z) = 1/N sum_i theta_i(z) [y_i = y]; P(y | z) = P(y, z) / P(z).
  const torch::Tensor onehot = torch::one_hot(y, num_classes).to(torch::kDouble);  // N x C
  const torch::Tensor joint = onehot.t().matmul(theta) / static_cast<double>(n);   // C x Z
  const torch::Tensor marginal = joint.sum(0, /*keepdim=*/true);                   // 1 x Z
  const torch::Tensor conditional = joint / marginal.clamp_min(1e-300);            // C x Z
  // p(y_i | x_i) = sum_z P(y_i | z) theta_i(z)
  const torch::Tensor eep = (theta.matmul(conditional.t()) * onehot).sum(1);
  return eep.log().mean().item<double>();
}

double nce(const torch::Tensor& source_labels, int64_t source_classes, const torch::Tensor& labels,
           int64_t num_classes) {
  if (source_labels.dim() != 1)
    throw ScoreError("NCE: the source model's predictions must be one class per example");
  const int64_t n = source_labels.size(0);
  // A source model may predict one class for every example (NCE is then -H(Y)).
  const torch::Tensor z = checked_labels("NCE (source predictions)", source_labels, n,
                                         source_classes, 1, /*two_classes=*/false);
  const torch::Tensor y = checked_labels("NCE", labels, n, num_classes, 1);
  // Empirical joint P(y, z), then -H(Y|Z) = sum P(y, z) log P(y | z).
  const torch::Tensor joint =
      torch::bincount(y * source_classes + z, {}, num_classes * source_classes)
          .to(torch::kDouble)
          .reshape({num_classes, source_classes}) /
      static_cast<double>(n);
  const torch::Tensor pz = joint.sum(0, /*keepdim=*/true);
  const torch::Tensor mask = joint > 0;
  const torch::Tensor terms = torch::where(mask, joint * torch::log(joint / pz.clamp_min(1e-300)),
                                           torch::zeros_like(joint));
  return terms.sum().item<double>();
}

double hscore(const torch::Tensor& features, const torch::Tensor& labels, int64_t num_classes) {
  const torch::Tensor f = checked_features("H-score", features);
  const int64_t n = f.size(0);
  const torch::Tensor y = checked_labels("H-score", labels, n, num_classes, 2);
  const torch::Tensor centred = f - f.mean(0, /*keepdim=*/true);
  const torch::Tensor cov_f = centred.t().matmul(centred) / static_cast<double>(n);
  // E[f | y] for each example's class, then its covariance.
  const torch::Tensor onehot = torch::one_hot(y, num_classes).to(torch::kDouble);  // N x C
  const torch::Tensor counts = onehot.sum(0).clamp_min(1);
  const torch::Tensor class_means = onehot.t().matmul(f) / counts.unsqueeze(1);  // C x D
  const torch::Tensor g = onehot.matmul(class_means);                            // N x D
  const torch::Tensor g_centred = g - g.mean(0, /*keepdim=*/true);
  const torch::Tensor cov_g = g_centred.t().matmul(g_centred) / static_cast<double>(n);
  return torch::trace(torch::linalg::pinv(cov_f, 1e-15, /*hermitian=*/true).matmul(cov_g))
      .item<double>();
}

ScoreSet score_starting_point(const ModelFn& features, const ModelFn& classifier,
                              const torch::Tensor& inputs, const torch::Tensor& labels,
                              int64_t num_classes) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> fs, ps;
  const int64_t n = inputs.size(0);
  for (int64_t b = 0; b < n; b += 256) {
    const torch::Tensor f = features(inputs.slice(0, b, std::min<int64_t>(b + 256, n)));
    fs.push_back(f.flatten(1).to(torch::kCPU, torch::kDouble));
    if (classifier) ps.push_back(torch::softmax(classifier(f).to(torch::kDouble), 1).cpu());
  }
  ScoreSet s;
  const torch::Tensor f = torch::cat(fs);
  const torch::Tensor y = labels.to(torch::kCPU, torch::kLong);
  s.logme = logme(f, y, num_classes);
  s.hscore = hscore(f, y, num_classes);
  if (classifier) {
    const torch::Tensor p = torch::cat(ps);
    s.leep = leep(p, y, num_classes);
    s.nce = nce(p.argmax(1), p.size(1), y, num_classes);
  }
  return s;
}

ModelFn linear_classifier(const std::vector<std::pair<std::string, torch::Tensor>>& all,
                          const std::string& prefix, int64_t feature_dim, std::string* why) {
  auto no = [&](std::string reason) {
    if (why) *why = std::move(reason);
    return ModelFn();
  };
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& [name, t] : all)
    if (name.rfind(prefix, 0) == 0) tensors.emplace_back(name.substr(prefix.size()), t);
  if (tensors.empty()) return no("it has no classifier");
  std::map<std::string, torch::Tensor> by_name(tensors.begin(), tensors.end());
  // One prefix for all: "" (a Linear) or "N." (the one Linear of a Sequential).
  const std::string& first = tensors.front().first;
  const std::string layer =
      first.substr(0, first.rfind('.') == std::string::npos ? 0 : first.rfind('.') + 1);
  auto w = by_name.find(layer + "weight"), b = by_name.find(layer + "bias");
  const std::size_t expected = 1 + (b != by_name.end());
  if (w == by_name.end() || by_name.size() != expected)
    return no(fmt::format("its classifier has {} tensors ({}...), not one linear layer",
                          tensors.size(), first));
  const torch::Tensor weight = w->second.detach().to(torch::kDouble).clone();
  if (weight.dim() != 2 || weight.size(1) != feature_dim)
    return no(fmt::format("its classifier's weight has shape [{}], not [classes, {}]",
                          fmt::join(weight.sizes(), ", "), feature_dim));
  torch::Tensor bias;
  if (b != by_name.end()) {
    bias = b->second.detach().to(torch::kDouble).clone();
    if (bias.dim() != 1 || bias.size(0) != weight.size(0))
      return no(fmt::format("its classifier's bias has shape [{}], not [{}]",
                            fmt::join(bias.sizes(), ", "), weight.size(0)));
  }
  return [weight, bias](const torch::Tensor& f) {
    const torch::Tensor x = f.flatten(1).to(weight.device(), torch::kDouble);
    return bias.defined() ? torch::addmm(bias, x, weight.t()) : x.matmul(weight.t());
  };
}

}  // namespace tlab::transfer
