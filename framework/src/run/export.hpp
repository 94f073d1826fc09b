#pragma once
// A trained model as one self-contained TorchScript module (`tlab export --format torchscript`),
// made by tracing its forward pass: LibTorch's C++ modules cannot be scripted, but the tracer
// that torch.jit.trace uses records the operations of any forward pass, plugin code included.
//
// The module holds, under the model's own names (backbone.layer0.weight, head.weight, ...),
// exactly the parameters and buffers the forward pass reads: for a LoRA-adapted layer that is
// the merged weight W0 + (alpha / r) B A, so the export is the merged model and the factors are
// not in it. Python loads it with torch.jit.load and needs nothing from tlab.
//
// Tracing records one path through the forward pass: control flow on tensor values, and sizes
// read as numbers in C++ (x.size(0) as an int), are fixed to what the example batch gave. Every
// export is therefore checked on a second batch of another size; a model whose traced module
// disagrees there is refused with ExportError rather than exported wrong.

#include <functional>
#include <stdexcept>
#include <string>

#include <torch/nn/module.h>
#include <torch/script.h>

namespace tlab {

/// A model cannot be exported (the message says why and what to do).
class ExportError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// What the check of an export found.
struct ExportCheck {
  int64_t examples = 0;     ///< In the check batch.
  double max_abs_diff = 0;  ///< Between the model's and the module's outputs on it.
};

/// Traces `forward` of `model` (put in eval mode, without gradients) on the batch `example` and
/// returns the module with a `forward(x)` method; checks it against `forward` on `check` (a batch
/// of another size): outputs must agree within 1e-5 (absolute) + 1e-5 (relative), else
/// ExportError. `what` names the model in messages (e.g. "run 12's model").
torch::jit::Module trace_module(torch::nn::Module& model,
                                const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                                const torch::Tensor& example, const torch::Tensor& check,
                                const std::string& what, ExportCheck* result = nullptr);

}  // namespace tlab
