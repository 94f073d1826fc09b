#pragma once
/// \file data.hpp
/// Datasets: a dataset plugin yields one domain with labelled splits, resident as tensors.
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
#include <string>
#include <vector>

#include <torch/types.h>

#include "tlab/sdk/context.hpp"
#include "tlab/sdk/plugin.hpp"

namespace tlab {

/// Examples `x` (N x input_shape, float) and labels `y` (N, int64 in [0, num_classes)).
struct Split {
  torch::Tensor x;
  torch::Tensor y;
  /// Number of examples (0 when undefined).
  int64_t size() const { return x.defined() ? x.size(0) : 0; }
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
