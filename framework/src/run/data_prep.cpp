#include "run/data_prep.hpp"

#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/cuda.h>

#include "plugins/loader.hpp"

namespace tlab {
namespace {

torch::ScalarType input_type(const torch::Tensor& x) {
  // Token ids (int64) stay integers; everything else becomes float.
  return x.scalar_type() == torch::kLong ? torch::kLong : torch::kFloat;
}

// Bytes `x` takes on the device (as input_type).
int64_t device_bytes(const torch::Tensor& x) {
  return x.defined() ? x.numel() * static_cast<int64_t>(c10::elementSize(input_type(x))) : 0;
}

Split to_device(const Split& s, torch::Device dev, DeviceBudget& budget, bool apply_budget,
                const char* name, std::vector<std::string>* on_host) {
  if (s.size() == 0) return s;
  if (s.streamed()) return {s.x, s.y.to(dev), s.stream};  // batches move when they are made
  const int64_t bytes = device_bytes(s.x) + device_bytes(s.y);
  if (!apply_budget || bytes <= budget.bytes_left) {
    if (apply_budget) budget.bytes_left -= bytes;
    return {s.x.to(dev, input_type(s.x)), s.y.to(dev)};
  }
  // Kept in host memory, in the type it will have on the device; pinned for a CUDA device
  // so that each batch is copied asynchronously. Labels are small and move.
  torch::Tensor rows = s.x.to(input_type(s.x)).contiguous();
  if (dev.is_cuda()) rows = rows.pin_memory();
  if (on_host) on_host->push_back(name);
  return {torch::Tensor(), s.y.to(dev), std::make_shared<HostRows>(std::move(rows))};
}

}  // namespace

torch::Device resolve_device(const std::string& d) {
  if (d == "auto")
    return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0)
                                       : torch::Device(torch::kCPU);
  return torch::Device(d);
}

void check_domain(const DomainData& d, const std::string& role, const std::string& plugin) {
  auto fail = [&](const std::string& msg) {
    throw PluginError(
        fmt::format("dataset plugin '{}' ({}) returned invalid data: {}", plugin, role, msg));
  };
  if (d.num_classes < 1) fail(fmt::format("num_classes = {}, expected >= 1", d.num_classes));
  if (d.input_shape.empty()) fail("input_shape is empty");
  if (d.train.size() == 0) fail("the train split is empty");
  auto check_split = [&](const Split& s, const char* name) {
    if (s.size() == 0) return;
    // A streamed split: its first example stands for all (the source checks the others).
    const torch::Tensor x = s.streamed() ? s.stream->get(0, 0).unsqueeze(0) : s.x;
    if (!x.defined()) fail(fmt::format("{}: neither examples (x) nor a stream of examples", name));
    if (!s.y.defined() || s.y.dim() != 1 || (!s.streamed() && s.y.size(0) != s.x.size(0)))
      fail(fmt::format("{}: labels must be a 1-D tensor with one label per example", name));
    if (s.y.scalar_type() != torch::kLong) fail(fmt::format("{}: labels must be int64", name));
    if (!x.is_floating_point() && x.scalar_type() != torch::kLong &&
        x.scalar_type() != torch::kByte)
      fail(fmt::format("{}: inputs are {}, expected a floating-point tensor (or int64 token ids)",
                       name, c10::toString(x.scalar_type())));
    std::vector<int64_t> shape(x.sizes().begin() + 1, x.sizes().end());
    if (shape != d.input_shape)
      fail(fmt::format("{}: example shape {} differs from input_shape {}", name,
                       fmt::join(shape, "x"), fmt::join(d.input_shape, "x")));
    int64_t lo = s.y.min().item<int64_t>(), hi = s.y.max().item<int64_t>();
    if (lo < 0 || hi >= d.num_classes)
      fail(fmt::format("{}: labels span [{}, {}], expected [0, {})", name, lo, hi, d.num_classes));
  };
  check_split(d.train, "train");
  check_split(d.val, "val");
  check_split(d.test, "test");
}

DomainData to_device(DomainData d, torch::Device dev, DeviceBudget& budget,
                     std::vector<std::string>* on_host, bool apply_budget) {
  apply_budget = apply_budget || !dev.is_cpu();
  if (d.unlabeled.defined()) {  // always on the device: strategies sample it directly
    if (apply_budget) budget.bytes_left -= device_bytes(d.unlabeled);
    d.unlabeled = d.unlabeled.to(dev, input_type(d.unlabeled));
  }
  d.train = to_device(d.train, dev, budget, apply_budget, "train", on_host);
  d.val = to_device(d.val, dev, budget, apply_budget, "val", on_host);
  d.test = to_device(d.test, dev, budget, apply_budget, "test", on_host);
  return d;
}

torch::Tensor as_input(torch::Tensor x, torch::Device dev) {
  const auto dtype = input_type(x);
  if (dev.is_cuda() && x.device().is_cpu()) {
    // A streamed batch to the GPU: from pinned host memory the copy is asynchronous (the host
    // goes on preparing the step), and the dtype conversion runs on the device.
    if (!x.is_pinned()) x = x.pin_memory();
    return x.to(dev, /*non_blocking=*/true).to(dtype);
  }
  return x.to(dev, dtype);
}

int prefetch_capacity(const ExampleSource& s) { return 2 * std::max(1, s.workers()); }

Split take_shots(const Split& split, int64_t shots, int64_t num_classes, uint64_t seed,
                 torch::Tensor* rest) {
  if (shots <= 0 || split.size() == 0) return split;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto y = split.y.to(torch::kCPU);
  auto perm = torch::randperm(split.size(), gen, torch::TensorOptions().dtype(torch::kLong));
  auto labels = y.index_select(0, perm);
  std::vector<int64_t> keep;
  std::vector<int64_t> count(num_classes, 0);
  auto p = perm.accessor<int64_t, 1>();
  auto l = labels.accessor<int64_t, 1>();
  for (int64_t i = 0; i < perm.size(0); ++i)
    if (count[l[i]]++ < shots) keep.push_back(p[i]);
  if (split.streamed()) {  // k labelled examples per class: small, so kept resident
    std::vector<torch::Tensor> xs;
    for (int64_t i : keep) xs.push_back(split.stream->get(i, 0));
    auto idx = torch::tensor(keep, torch::kLong).to(split.y.device());
    return {xs.empty() ? torch::Tensor() : torch::stack(xs), split.y.index_select(0, idx)};
  }
  auto idx = torch::tensor(keep, torch::kLong).to(split.x.device());
  if (rest) {
    std::vector<bool> kept(static_cast<std::size_t>(split.size()), false);
    for (int64_t i : keep) kept[static_cast<std::size_t>(i)] = true;
    std::vector<int64_t> others;
    for (int64_t i = 0; i < split.size(); ++i)
      if (!kept[static_cast<std::size_t>(i)]) others.push_back(i);
    *rest = split.x.index_select(0, torch::tensor(others, torch::kLong).to(split.x.device()));
  }
  return {split.x.index_select(0, idx), split.y.index_select(0, idx)};
}

}  // namespace tlab
