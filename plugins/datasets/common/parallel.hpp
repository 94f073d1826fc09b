#pragma once
// Shared by the file-reading dataset plugins (header only): runs independent jobs on a few
// threads of our own, with the same result and the same error whatever their number.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace tlab_ds {

/// Threads for `workers` (0 = one per hardware thread), at least 1 and at most `jobs`.
inline int64_t thread_count(int64_t workers, int64_t jobs) {
  int64_t n = workers > 0 ? workers : static_cast<int64_t>(std::thread::hardware_concurrency());
  return std::max<int64_t>(1, std::min(n, jobs));
}

/// Calls `job(i)` for i in [0, n) on `thread_count(workers, n)` threads. Jobs must write only
/// their own outputs. If jobs throw, the exception of the lowest index is rethrown after all
/// threads finished, so the error reported does not depend on the number of threads.
template <class F>
void parallel_jobs(int64_t n, int64_t workers, F&& job) {
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(std::max<int64_t>(n, 0)));
  std::atomic<int64_t> next{0}, first_error{n};
  auto run = [&] {
    for (int64_t i = next++; i < n; i = next++) {
      if (i > first_error.load()) continue;  // a lower index failed: this one cannot matter
      try {
        job(i);
      } catch (...) {
        errors[static_cast<std::size_t>(i)] = std::current_exception();
        int64_t seen = first_error.load();
        while (i < seen && !first_error.compare_exchange_weak(seen, i)) {
        }
      }
    }
  };
  const int64_t threads = thread_count(workers, n);
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(run);
  run();
  for (auto& t : pool) t.join();
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace tlab_ds
