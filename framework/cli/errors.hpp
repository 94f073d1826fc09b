#pragma once
// What every command of tlab shares about failing: the exit codes and the error a user must fix.
// Used by the front (framework/cli) and the training engine (framework/engine) alike.

#include <stdexcept>

namespace tlab::cli {

constexpr int kRunFailed = 1;   ///< A run failed (its status says why).
constexpr int kUsageError = 2;  ///< Usage or configuration error: nothing was run.
/// Out of memory where no run could record it (loading LibTorch, a run's process before its
/// status is written): the supervisor gives such a run the status oom.
constexpr int kOutOfMemory = 3;

/// Thrown for problems the user must fix (exit code 2): a missing database, an unknown key.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Thrown where memory ran out and the message says so (exit code 3).
struct OutOfMemory : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace tlab::cli
