#include "run/precision.hpp"

#include <stdexcept>

#include <ATen/autocast_mode.h>
#include <ATen/ops/_amp_foreach_non_finite_check_and_unscale.h>
#include <ATen/ops/_amp_update_scale.h>
#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/version.h>

namespace tlab {

// LibTorch 2.4 replaced the per-device autocast functions by ones taking the device type.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define TLAB_AUTOCAST_BY_DEVICE 1
#endif

void check_compute(const ComputeSpec& c, torch::Device device) {
  if (c.precision == "fp16" && !device.is_cuda())
    throw std::invalid_argument(fmt::format(
        "train.precision = \"fp16\" trains in float16 with dynamic loss scaling, which needs a "
        "CUDA device; this run's device is {}{}: on the CPU use precision = \"bf16\" (bfloat16 "
        "autocast) or \"fp32\"",
        device.str(), torch::cuda::is_available() ? "" : " (this LibTorch has no CUDA)"));
  if (c.cuda_graphs && !device.is_cuda())
    throw std::invalid_argument(fmt::format(
        "train.cuda_graphs = true captures the training step as a CUDA graph, which needs a "
        "CUDA device; this run's device is {}{}: remove train.cuda_graphs",
        device.str(), torch::cuda::is_available() ? "" : " (this LibTorch has no CUDA)"));
  if (c.cuda_graphs)
    throw std::invalid_argument(
        "train.cuda_graphs = true: capturing the training step as a CUDA graph is not "
        "implemented in this tlab yet (issue 26); remove train.cuda_graphs");
}

AutocastScope::AutocastScope(torch::Device device, const std::string& precision) {
  if (precision == "fp32") return;
  const at::ScalarType dtype = precision == "fp16" ? at::kHalf : at::kBFloat16;
  cuda_ = device.is_cuda();
#ifdef TLAB_AUTOCAST_BY_DEVICE
  const auto type = cuda_ ? at::kCUDA : at::kCPU;
  was_enabled_ = at::autocast::is_autocast_enabled(type);
  was_dtype_ = at::autocast::get_autocast_dtype(type);
  at::autocast::set_autocast_enabled(type, true);
  at::autocast::set_autocast_dtype(type, dtype);
#else
  if (cuda_) {
    was_enabled_ = at::autocast::is_enabled();
    was_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    was_enabled_ = at::autocast::is_cpu_enabled();
    was_dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
  at::autocast::increment_nesting();
  active_ = true;
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#ifdef TLAB_AUTOCAST_BY_DEVICE
  const auto type = cuda_ ? at::kCUDA : at::kCPU;
  at::autocast::set_autocast_enabled(type, was_enabled_);
  at::autocast::set_autocast_dtype(type, was_dtype_);
#else
  if (cuda_) {
    at::autocast::set_enabled(was_enabled_);
    at::autocast::set_autocast_gpu_dtype(was_dtype_);
  } else {
    at::autocast::set_cpu_enabled(was_enabled_);
    at::autocast::set_autocast_cpu_dtype(was_dtype_);
  }
#endif
}

LossScaler::LossScaler(torch::Device device, double initial_scale, int64_t growth_interval)
    : scale_(torch::full({1}, initial_scale, torch::TensorOptions(device).dtype(torch::kFloat))),
      growth_tracker_(torch::zeros({1}, torch::TensorOptions(device).dtype(torch::kInt))),
      growth_interval_(growth_interval) {}

bool LossScaler::step(torch::optim::Optimizer& optimizer,
                      const std::vector<torch::Tensor>& parameters) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : parameters)
    if (p.grad().defined()) grads.push_back(p.mutable_grad());
  torch::Tensor found_inf = torch::zeros({1}, scale_.options());
  if (!grads.empty())
    at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, scale_.reciprocal());
  const bool finite = found_inf.item<float>() == 0.0f;  // the step's one host read
  if (finite) optimizer.step();
  at::_amp_update_scale_(scale_, growth_tracker_, found_inf, 2.0, 0.5, growth_interval_);
  return finite;
}

double LossScaler::current_scale() const { return scale_.item<double>(); }

void to_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters(/*recurse=*/true))
    if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
  for (auto& b : module.buffers(/*recurse=*/true))
    if (b.dim() == 4) b.set_data(b.data().contiguous(at::MemoryFormat::ChannelsLast));
}

torch::Tensor channels_last_input(const torch::Tensor& x) {
  return x.dim() == 4 ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
}

}  // namespace tlab
