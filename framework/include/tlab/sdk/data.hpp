#pragma once
/// \file data.hpp
/// Datasets: a dataset plugin yields one domain with labelled splits, resident as tensors or,
/// for data too large to keep in memory, streamed from an ExampleSource.
///
/// Example:
/// \code
///   class Blobs : public tlab::Dataset {
///    public:
///     explicit Blobs(BlobsOptions o) : o_(o) {}
///     tlab::DomainData load(tlab::Context& ctx) override {
///       tlab::DomainData d;  d.name = "blobs";  d.num_classes = 2;  d.input_shape = {2};
///       d.train = make(o_.train_size); d.val = make(200); d.test = make(500);
///       return d;
///     }
///   };
/// \endcode

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "tlab/sdk/context.hpp"
#include "tlab/sdk/plugin.hpp"

namespace tlab {

/// Examples made one at a time, for data too large to keep resident (e.g. an image folder
/// decoded on the fly). The runner reads them through a bounded prefetch queue filled by
/// `workers()` threads, so get() is called concurrently and must be thread-safe. For equal
/// (index, seed) it must return equal examples.
class ExampleSource {
 public:
  virtual ~ExampleSource() = default;
  /// Example `index` (shape input_shape, float or int64, on the CPU). `seed` changes every epoch
  /// on a training split (for fresh random augmentation) and is 0 for evaluation.
  virtual torch::Tensor get(int64_t index, uint64_t seed) const = 0;
  /// Threads worth running get() on (e.g. the dataset's `workers` option); at least 1.
  virtual int workers() const { return 1; }
};

/// Labels `y` (N, int64 in [0, num_classes)) and examples: resident in `x` (N x input_shape,
/// float, or int64 token ids), or, when `stream` is set, `stream->get(i, seed)` for i < N (then
/// `x` is undefined).
struct Split {
  torch::Tensor x;
  torch::Tensor y;
  std::shared_ptr<ExampleSource> stream;  ///< Set for streamed examples.
  /// Number of examples (0 when undefined).
  int64_t size() const { return y.defined() ? y.size(0) : (x.defined() ? x.size(0) : 0); }
  /// Whether examples come from `stream` rather than `x`.
  bool streamed() const { return stream != nullptr; }
};

/// One domain of a dataset. `unlabeled` holds extra inputs without labels (may be empty).
struct DomainData {
  std::string name;                  ///< Domain name, e.g. "rotated".
  Split train, val, test;            ///< Labelled splits; val and test may be empty.
  torch::Tensor unlabeled;           ///< Inputs without labels, for adaptation methods.
  int64_t num_classes = 0;           ///< Labels are in [0, num_classes).
  std::vector<int64_t> input_shape;  ///< Shape of one example, e.g. {1, 28, 28}.
};

/// A dataset plugin. The host keeps the result on the run's device and applies `shots`
/// (k labelled examples per class) itself, so plugins only generate or read data.
class Dataset : public Plugin {
 public:
  static constexpr Kind kKind = Kind::Dataset;
  Kind kind() const final { return kKind; }
  /// Produces the domain's splits on the CPU; must be deterministic for equal options.
  virtual DomainData load(Context& ctx) = 0;
};

}  // namespace tlab
