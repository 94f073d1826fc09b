#pragma once
// Transferability scores: how well a candidate model's outputs on the target's labelled
// examples predict the labels, before any fine-tuning (issue 24). Each is the paper's
// definition, computed in double precision on the CPU:
//
//   LogME   You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer
//           Learning", ICML 2021: the log marginal evidence of a Bayesian linear model from the
//           features to each class's one-hot column, maximised over its prior precision alpha
//           and noise precision beta by the paper's fixed-point iteration (Algorithm 1: at most
//           11 steps, stopping when alpha/beta changes by less than 1 %), per example, averaged
//           over the classes.
//   LEEP    Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned
//           Representations", ICML 2020: the mean log-likelihood of the empirical predictor
//           p(y|x) = sum_z p(y|z) theta(x)_z built from the source model's class probabilities.
//   NCE     Tran et al., "Transferability and Hardness of Supervised Classification Tasks",
//           ICCV 2019: the negative conditional entropy -H(Y|Z) of the target labels given the
//           source model's predicted (argmax) labels.
//   H-score Bao et al., "An Information-Theoretic Approach to Transferability in Task Transfer
//           Learning", ICIP 2019: tr(cov(f)^+ cov(E[f|y])), with the pseudo-inverse.
//
// Higher is better for all four. Errors (ScoreError) name the score and what is wrong: too few
// examples or classes, labels outside [0, classes), probabilities that are not a distribution.

#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace tlab::transfer {

struct ScoreError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// LogME of `features` (N x D) for `labels` (N, integers in [0, num_classes)).
double logme(const torch::Tensor& features, const torch::Tensor& labels, int64_t num_classes);

/// LEEP of the source model's class probabilities `source_probs` (N x Z, rows summing to 1) for
/// the target `labels`.
double leep(const torch::Tensor& source_probs, const torch::Tensor& labels, int64_t num_classes);

/// NCE of the source model's predicted classes `source_labels` (N, in [0, source_classes); one
/// class for all is allowed: NCE is then -H(Y)) for the target `labels`.
double nce(const torch::Tensor& source_labels, int64_t source_classes, const torch::Tensor& labels,
           int64_t num_classes);

/// H-score of `features` (N x D) for `labels`.
double hscore(const torch::Tensor& features, const torch::Tensor& labels, int64_t num_classes);

/// The four scores of one starting point; LEEP and NCE are NaN when it has no source classifier.
struct ScoreSet {
  double logme = std::numeric_limits<double>::quiet_NaN();
  double leep = std::numeric_limits<double>::quiet_NaN();
  double nce = std::numeric_limits<double>::quiet_NaN();
  double hscore = std::numeric_limits<double>::quiet_NaN();
};

/// Inputs to outputs: a model's features, or a source classifier from features to class scores.
using ModelFn = std::function<torch::Tensor(const torch::Tensor&)>;

/// Every score of a starting point on the labelled target examples `inputs` (on the model's
/// device, as the model takes them) with `labels`: `features` in batches of 256 (no gradients;
/// put the model in eval mode first), and, when `classifier` is set, the source class
/// probabilities softmax(classifier(features)) for LEEP and NCE (over the source's classes).
ScoreSet score_starting_point(const ModelFn& features, const ModelFn& classifier,
                              const torch::Tensor& inputs, const torch::Tensor& labels,
                              int64_t num_classes);

/// The source classifier held by the tensors of `tensors` whose names start with `prefix` (""
/// for a module's own parameters, "head." for a tlab model file; names taken relative to it): a
/// single linear layer, `weight` (classes x feature_dim) and optionally its `bias`, under any one
/// further prefix (`0.weight` of a Sequential head). Empty, with `why` set, when those tensors
/// are anything else (none, several layers, another width): LEEP and NCE then need another
/// classifier.
ModelFn linear_classifier(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                          const std::string& prefix, int64_t feature_dim, std::string* why);

}  // namespace tlab::transfer
