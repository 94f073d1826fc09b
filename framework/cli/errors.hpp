#pragma once
// What every command of tlab shares about failing: the exit codes and the error a user must fix.
// Used by the front (framework/cli) and the training engine (framework/engine) alike.

#include <stdexcept>

namespace tlab::cli {

constexpr int kRunFailed = 1;   ///< A run failed (its status says why).
constexpr int kUsageError = 2;  ///< Usage or configuration error: nothing was run.

/// Thrown for problems the user must fix (exit code 2): a missing database, an unknown key.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace tlab::cli
