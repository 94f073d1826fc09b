#include "run/prefetch.hpp"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>
#include <torch/torch.h>

namespace tlab {

Prefetcher::Prefetcher(std::shared_ptr<ExampleSource> source,
                       std::vector<std::vector<int64_t>> batches, uint64_t seed, int workers,
                       int capacity)
    : source_(std::move(source)),
      batches_(std::move(batches)),
      seed_(seed),
      capacity_(static_cast<std::size_t>(std::max(1, capacity))) {
  const int n = std::max(1, std::min<int>(workers, static_cast<int>(batches_.size())));
  threads_.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) threads_.emplace_back([this] { work(); });
}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void Prefetcher::work() {
  // No at::set_num_threads here: it is process-wide in LibTorch and would also throttle the
  // training loop. The work here is the source's decoding, plus a stack.
  for (;;) {
    std::size_t k;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return stop_ || error_ ||
               (next_make_ < batches_.size() && next_make_ < next_take_ + capacity_);
      });
      if (stop_ || error_ || next_make_ >= batches_.size()) return;
      k = next_make_++;
    }
    try {
      std::vector<torch::Tensor> examples;
      examples.reserve(batches_[k].size());
      for (int64_t i : batches_[k]) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          if (stop_) return;
        }
        examples.push_back(source_->get(i, seed_));
      }
      torch::Tensor x = torch::stack(examples);
      {
        std::lock_guard<std::mutex> lock(mu_);
        ready_.emplace(k, std::move(x));
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
    cv_.notify_all();
  }
}

torch::Tensor Prefetcher::next() {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  if (next_take_ >= batches_.size()) return {};
  cv_.wait(lock, [&] { return error_ || ready_.count(next_take_); });
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!ready_.count(next_take_)) std::rethrow_exception(error_);
  torch::Tensor x = std::move(ready_[next_take_]);
  ready_.erase(next_take_++);
  lock.unlock();
  cv_.notify_all();  // room for one more batch
  return x;
}

std::vector<std::vector<int64_t>> index_batches(const torch::Tensor& order, int64_t batch_size) {
  const torch::Tensor o = order.to(torch::kCPU).to(torch::kLong).contiguous();
  const int64_t n = o.numel();
  const int64_t* p = o.data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> out;
  for (int64_t i = 0; i < n; i += batch_size)
    out.emplace_back(p + i, p + std::min(n, i + batch_size));
  return out;
}

}  // namespace tlab
