#pragma once
// A bounded prefetch queue for streamed splits: worker threads build batches of examples
// (ExampleSource::get, then stack) ahead of the training loop, at most `capacity` batches ahead
// of the consumer, and hand them out in order. The first error of a worker is rethrown by next().

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include <torch/types.h>

#include "tlab/sdk/data.hpp"

namespace tlab {

class Prefetcher {
 public:
  /// Batches of example indices (into `source`), made in this order by `workers` threads,
  /// each example with `seed` (ExampleSource::get). `capacity` >= 1 batches may wait at once.
  Prefetcher(std::shared_ptr<ExampleSource> source, std::vector<std::vector<int64_t>> batches,
             uint64_t seed, int workers, int capacity);
  /// Stops the workers (they finish the example in hand) and joins them.
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  /// The next batch's examples stacked (CPU), in the order of `batches`; blocks until it is
  /// ready. Rethrows a worker's exception. Past the last batch: an undefined tensor.
  torch::Tensor next();
  /// Seconds next() spent waiting for workers so far (data loading not hidden by training).
  double wait_seconds() const { return wait_seconds_; }

 private:
  void work();

  std::shared_ptr<ExampleSource> source_;
  std::vector<std::vector<int64_t>> batches_;
  uint64_t seed_;
  std::size_t capacity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::size_t, torch::Tensor> ready_;
  std::size_t next_make_ = 0, next_take_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  double wait_seconds_ = 0;
  std::vector<std::thread> threads_;
};

/// Splits 0..n-1 (in the order of `order`, a 1-D int64 tensor) into batches of `batch_size`.
std::vector<std::vector<int64_t>> index_batches(const torch::Tensor& order, int64_t batch_size);

}  // namespace tlab
