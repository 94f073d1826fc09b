#pragma once
// Preparing a run's data: the checks on what a dataset plugin returned, the k-shot sample of a
// split, moving domains to the run's device. Private to the engine (run/runner.cpp, session.cpp).

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "tlab/sdk/data.hpp"

namespace tlab {

/// "auto" is the first GPU when one is visible, else the CPU; otherwise LibTorch's device name.
torch::Device resolve_device(const std::string& d);

/// Checks what a dataset plugin returned, so that a bad plugin fails with a clear message
/// (PluginError naming the plugin, its role and the problem) rather than deep inside LibTorch.
void check_domain(const DomainData& d, const std::string& role, const std::string& plugin);

/// Device memory a run's resident data may take (`[train] device_data_mb`), shared by its
/// domains in the order they load.
struct DeviceBudget {
  int64_t bytes_left = 0;
};

/// The domain's splits on `dev`: token ids (int64) stay integers, other inputs become float;
/// a streamed split keeps its stream (batches move when they are made). On a device other than
/// the CPU, data moves while it fits in `budget`: first the unlabelled inputs (adaptation
/// methods sample them directly), then train, val and test. A split that does not fit stays in
/// host memory (pinned on CUDA) and becomes a streamed split over those rows, so the step loop
/// copies each batch without blocking; its batches are the same as on the device. `on_host`
/// gets the names of such splits. On the CPU the budget is not used (`apply_budget` makes it
/// apply anyway, for tests).
DomainData to_device(DomainData d, torch::Device dev, DeviceBudget& budget,
                     std::vector<std::string>* on_host = nullptr, bool apply_budget = false);

/// Examples that are rows of a host tensor: a resident split kept off the device.
class HostRows : public ExampleSource {
 public:
  explicit HostRows(torch::Tensor rows) : rows_(std::move(rows)) {}
  torch::Tensor get(int64_t index, uint64_t) const override { return rows_[index]; }
  const torch::Tensor& rows() const { return rows_; }

 private:
  torch::Tensor rows_;
};

/// Inputs of a batch: resident rows, or the examples of a streamed split stacked; on `dev` as
/// float (int64 token ids stay integers). A host batch for a CUDA device is pinned and copied
/// without blocking.
torch::Tensor as_input(torch::Tensor x, torch::Device dev);

/// Prefetch depth for a streamed split: two batches per worker keep every worker busy.
int prefetch_capacity(const ExampleSource& s);

/// Keeps `shots` examples per class of `split` (all of a class when it has fewer), chosen with
/// `seed`; the order of kept examples is shuffled. `shots` = 0 returns `split` unchanged.
/// With `rest` (resident splits only): the inputs of the examples not kept, in their order.
Split take_shots(const Split& split, int64_t shots, int64_t num_classes, uint64_t seed,
                 torch::Tensor* rest = nullptr);

}  // namespace tlab
