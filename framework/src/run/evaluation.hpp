#pragma once
// One evaluation pass of a model over a split, counted for every classification metric
// (results/classification.hpp): the confusion matrix, the top-k hits and the calibration bins
// are accumulated on the run's device and read once at the end, so evaluating on a GPU costs
// one host synchronisation per split, as accuracy alone did. Session::evaluate (the SDK's
// accuracy and loss), the per-epoch evaluation, the run's final summaries and `tlab eval` all
// count here.

#include <cstdint>
#include <functional>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "results/classification.hpp"
#include "tlab/sdk/data.hpp"

namespace tlab {

/// What one pass counted and its mean cross-entropy.
struct SplitEvaluation {
  ClassificationCounts counts;
  double loss = 0;
  double accuracy() const;
};

/// Evaluates class scores from `forward` on `split` (in eval mode, without gradients, batches of
/// 256; streamed splits through the prefetcher). `num_classes` 0 takes the width of the scores;
/// otherwise the scores must have that width (std::invalid_argument naming both). Top-k counts
/// ties as scikit-learn's top_k_accuracy_score does (among equal scores the higher class index
/// ranks first); the predicted class is the first of the highest scores (argmax).
SplitEvaluation evaluate_split(torch::nn::Module& module,
                               const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                               const Split& split, torch::Device device, int64_t num_classes,
                               const std::vector<int64_t>& top_k, int64_t calibration_bins);

}  // namespace tlab
