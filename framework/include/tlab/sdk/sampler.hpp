#pragma once
/// \file sampler.hpp
/// Random batches from a pool of inputs, for strategies that draw a second batch per step (the
/// target's unlabelled inputs next to the labelled batch the runner hands over).
///
/// Example (a member, made in setup(); the pool is the target's unlabelled inputs):
/// \code
///   tlab::Sampler unlabeled_;
///   void setup(tlab::Session& s) override { unlabeled_ = tlab::unlabeled_sampler(s); }
///   torch::Tensor loss(tlab::Session& s, const tlab::Batch& b) override {
///     auto xu = unlabeled_.next();   // train.batch_size rows
///     ...
///   }
/// \endcode

#include <algorithm>
#include <cstdint>
#include <utility>

#include "tlab/sdk/check.hpp"
#include "tlab/sdk/source.hpp"
#include "tlab/sdk/strategy.hpp"

namespace tlab {

/// Batches of rows from a pool: a fresh permutation each time the pool is used up, drawn with
/// LibTorch's generator (seeded by the host), on the pool's device.
class Sampler {
 public:
  Sampler() = default;  ///< Empty: give it a pool before next() (assign a Sampler(pool, b)).
  /// Batches of `batch` rows (at most the pool's size) of `pool`.
  Sampler(torch::Tensor pool, int64_t batch) : pool_(std::move(pool)), batch_(batch) {
    TLAB_CHECK(batch_ >= 1, "tlab::Sampler: batch size ", batch_, " must be >= 1");
    TLAB_CHECK(pool_.defined() && pool_.dim() >= 1 && pool_.size(0) > 0,
               "tlab::Sampler: the pool is empty; expected at least one row");
  }
  /// Indices (int64, on the pool's device) of the next batch: min(batch, pool size) rows.
  torch::Tensor next_index() {
    TLAB_CHECK(pool_.defined(),
               "tlab::Sampler used before it was given a pool: make it in setup() or later, e.g. "
               "unlabeled_ = tlab::unlabeled_sampler(session)");
    const int64_t n = pool_.size(0);
    const int64_t b = std::min(batch_, n);
    if (!perm_.defined() || pos_ + b > n) {
      perm_ = torch::randperm(n, torch::TensorOptions(pool_.device()).dtype(torch::kLong));
      pos_ = 0;
    }
    auto idx = perm_.slice(0, pos_, pos_ + b);
    pos_ += b;
    return idx;
  }
  /// The next batch of the pool's rows.
  torch::Tensor next() { return pool_.index_select(0, next_index()); }
  /// The whole pool.
  const torch::Tensor& pool() const { return pool_; }

 private:
  torch::Tensor pool_;
  int64_t batch_ = 1;
  torch::Tensor perm_;
  int64_t pos_ = 0;
};

/// A sampler of the target's unlabelled inputs on the run's device, `batch` rows per draw
/// (0 = the experiment's train.batch_size). Throws need_unlabeled's message when there are none.
inline Sampler unlabeled_sampler(Session& s, int64_t batch = 0) {
  return Sampler(need_unlabeled(s).to(s.context().device),
                 batch > 0 ? batch : s.train_config().batch_size);
}

}  // namespace tlab
