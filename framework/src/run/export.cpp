#include "run/export.hpp"

#include <cctype>
#include <optional>
#include <unordered_set>
#include <vector>

#include <fmt/format.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "tlab/sdk/mode.hpp"

namespace tlab {
namespace {

using Forward = std::function<torch::Tensor(const torch::Tensor&)>;

// One traced pass of `forward` on `example`; with `self`, tensors registered in it become its
// attributes, every other tensor the pass reads a constant of the graph.
std::shared_ptr<torch::jit::Graph> trace_graph(const Forward& forward, const torch::Tensor& example,
                                               torch::jit::Module* self, const std::string& what) {
  try {
    auto traced = torch::jit::tracer::trace(
        {example},
        [&](torch::jit::Stack inputs) -> torch::jit::Stack {
          return {forward(inputs.at(0).toTensor())};
        },
        [](const torch::Tensor&) { return std::string(); }, /*strict=*/true,
        /*force_outplace=*/false, self, {"x"});
    // What the pass computed but did not use (e.g. a check that a cached merged weight is
    // still valid) goes, and with it the tensors only it read.
    auto graph = traced.first->graph;
    torch::jit::EliminateDeadCode(graph);
    return graph;
  } catch (const std::exception& e) {
    torch::jit::tracer::abandon();
    std::string message = e.what();
    if (const auto cut = message.find('\n'); cut != std::string::npos) message.resize(cut);
    throw ExportError(fmt::format(
        "{} cannot be traced into TorchScript: its forward pass failed under the tracer: {}", what,
        message));
  }
}

// The tensors a graph holds as constants: with no module given to the tracer, every parameter
// and buffer the forward pass read.
std::unordered_set<const void*> constant_tensors(const torch::jit::Graph& graph) {
  std::unordered_set<const void*> used;
  for (const torch::jit::Node* node : graph.nodes())
    if (node->kind() == c10::prim::Constant && node->outputs().size() == 1 &&
        node->output()->type()->cast<c10::TensorType>() && node->hasAttribute(c10::attr::value))
      used.insert(node->t(c10::attr::value).unsafeGetTensorImpl());
  return used;
}

std::string class_name(const torch::nn::Module& m, int index) {
  std::string name;
  for (char c : m.name()) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return fmt::format("__torch__.tlab.{}_{}", name.empty() ? "Module" : name, index);
}

// A TorchScript module mirroring `m`'s hierarchy with the tensors in `used`; none when its
// subtree has none. Linear and Conv2d give the tensors their forward() reads (the members
// `weight` and `bias`, which an adapter such as LoRA may have replaced by a merged weight).
std::optional<torch::jit::Module> mirror(torch::nn::Module& m,
                                         const std::unordered_set<const void*>& used,
                                         const std::shared_ptr<torch::jit::CompilationUnit>& cu,
                                         int& counter, const std::string& name = "") {
  torch::jit::Module j(c10::QualifiedName(name.empty() ? class_name(m, counter++) : name), cu,
                       /*shouldMangle=*/true);
  bool any = false;
  auto add = [&](const std::string& name, const torch::Tensor& t, bool buffer) {
    if (!t.defined() || !used.count(t.unsafeGetTensorImpl())) return;
    j.register_parameter(name, t, buffer);
    any = true;
  };
  if (auto* l = m.as<torch::nn::Linear>()) {
    add("weight", l->weight, false);
    add("bias", l->bias, false);
  } else if (auto* c = m.as<torch::nn::Conv2d>()) {
    add("weight", c->weight, false);
    add("bias", c->bias, false);
  } else {
    for (const auto& p : m.named_parameters(/*recurse=*/false)) add(p.key(), p.value(), false);
  }
  for (const auto& b : m.named_buffers(/*recurse=*/false)) add(b.key(), b.value(), true);
  for (const auto& child : m.named_children()) {
    if (auto sub = mirror(*child.value(), used, cu, counter)) {
      j.register_module(child.key(), *sub);
      any = true;
    }
  }
  if (!any && !name.empty()) return j;  // the top module, even with nothing to hold
  if (!any) return std::nullopt;
  return j;
}

}  // namespace

torch::jit::Module trace_module(torch::nn::Module& model, const Forward& forward,
                                const torch::Tensor& example, const torch::Tensor& check,
                                const std::string& what, ExportCheck* result) {
  ModeScope restore(model);
  model.eval();
  torch::NoGradGuard no_grad;
  // The tracer keeps the tensors it meets as constants (pass 1) or attributes, neither of which
  // may require a gradient: switched off while tracing, restored after.
  struct Frozen {
    std::vector<torch::Tensor> params;
    ~Frozen() {
      for (auto& p : params) p.requires_grad_(true);
    }
  } frozen;
  for (auto& p : model.parameters())
    if (p.requires_grad()) {
      p.requires_grad_(false);
      frozen.params.push_back(p);
    }
  // A pass outside the tracer first: layers that cache what inference reads (LoRA merges its
  // weight once) then read their cache under the tracer, not the computation behind it.
  try {
    forward(example);
  } catch (const std::exception& e) {
    std::string message = e.what();
    if (const auto cut = message.find('\n'); cut != std::string::npos) message.resize(cut);
    throw ExportError(
        fmt::format("{} cannot be exported: its forward pass fails on the example "
                    "batch of {}: {}",
                    what, example.size(0), message));
  }
  // Pass 1: which tensors the forward pass reads (a LoRA layer reads its merged weight).
  const auto used = constant_tensors(*trace_graph(forward, example, nullptr, what));
  // Pass 2: those tensors as the module's attributes, the graph as its forward method.
  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  int counter = 0;
  torch::jit::Module top = *mirror(model, used, cu, counter, "__torch__.tlab.Model");
  auto graph = trace_graph(forward, example, &top, what);
  auto fn = top._ivalue()->compilation_unit()->create_function(
      c10::QualifiedName(*top.type()->name(), "forward"), graph);
  top.type()->addMethod(fn);
  top.eval();

  // The check: another batch size, compared with the model itself.
  const auto expected = forward(check);
  torch::Tensor got;
  try {
    got = top.forward({check}).toTensor();
  } catch (const std::exception& e) {
    std::string message = e.what();
    if (const auto cut = message.find("\nException raised from"); cut != std::string::npos)
      message.resize(cut);
    throw ExportError(fmt::format(
        "{}: the traced module fails on a batch of {} examples (traced with {}): {}; its forward "
        "pass fixes a batch size (e.g. it reads x.size(0) as a number), which tracing cannot "
        "keep free",
        what, check.size(0), example.size(0), message));
  }
  if (got.sizes() != expected.sizes() ||
      !torch::allclose(got.to(torch::kDouble), expected.to(torch::kDouble), 1e-5, 1e-5)) {
    const double diff =
        got.sizes() == expected.sizes()
            ? (got.to(torch::kDouble) - expected.to(torch::kDouble)).abs().max().item<double>()
            : -1;
    throw ExportError(fmt::format(
        "{}: the traced module disagrees with the model on a batch of {} examples (traced with "
        "{}; {}): its forward pass depends on the batch size or branches on tensor values, which "
        "tracing fixes to the example; such a model cannot be exported as TorchScript",
        what, check.size(0), example.size(0),
        diff < 0 ? fmt::format("output shape [{}] instead of [{}]", fmt::join(got.sizes(), ", "),
                               fmt::join(expected.sizes(), ", "))
                 : fmt::format("largest difference {:.3g}", diff)));
  }
  if (result) {
    result->examples = check.size(0);
    result->max_abs_diff =
        (got.to(torch::kDouble) - expected.to(torch::kDouble)).abs().max().item<double>();
  }
  return top;
}

}  // namespace tlab
