#pragma once
// How a run computes (`[train] precision`, `channels_last`, `cuda_graphs`; ComputeSpec in
// config/experiment.hpp): autocast around a step's forward and loss, dynamic loss scaling for
// float16, channels-last layouts, and the checks of these settings against the run's device.
// Session::fit uses them for every stage (docs/performance.md).

#include <string>
#include <vector>

#include <ATen/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include "config/experiment.hpp"

namespace tlab {

/// Checks `compute` against `device` before anything runs: fp16 and cuda_graphs need CUDA;
/// cuda_graphs is not implemented yet. std::invalid_argument naming the key, the value, why and
/// the fix.
void check_compute(const ComputeSpec& compute, torch::Device device);

/// LibTorch's autocast on `device` in the precision's dtype while it lives, as torch.autocast
/// does (nesting counted, cast cache cleared on the outermost exit, the previous state restored);
/// nothing for "fp32".
class AutocastScope {
 public:
  AutocastScope(torch::Device device, const std::string& precision);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false, cuda_ = false, was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kFloat;
};

/// Dynamic loss scaling for float16 training (CUDA), as torch.cuda.amp.GradScaler: the loss is
/// multiplied by the scale before backward; step() unscales the gradients and skips the
/// optimiser's step when any is inf or NaN (one host read per step); the scale halves after a
/// skipped step and doubles after `growth_interval` good ones. Device-side: LibTorch's
/// _amp_foreach_non_finite_check_and_unscale_ and _amp_update_scale_.
class LossScaler {
 public:
  explicit LossScaler(torch::Device device, double initial_scale = 65536.0,
                      int64_t growth_interval = 2000);
  torch::Tensor scale(const torch::Tensor& loss) const { return loss * scale_; }
  /// Unscales the gradients of `parameters`, steps `optimizer` unless one is not finite, updates
  /// the scale. True when the step was taken.
  bool step(torch::optim::Optimizer& optimizer, const std::vector<torch::Tensor>& parameters);
  double current_scale() const;

 private:
  torch::Tensor scale_, growth_tracker_;
  int64_t growth_interval_;
};

/// 4-D parameters and buffers of `module` (convolution weights) in channels-last layout.
void to_channels_last(torch::nn::Module& module);

/// A 4-D batch (N x C x H x W) in channels-last layout; any other input unchanged.
torch::Tensor channels_last_input(const torch::Tensor& x);

}  // namespace tlab
