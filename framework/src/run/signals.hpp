#pragma once
// Stopping cleanly on SIGINT, SIGTERM and SIGHUP: the handlers only record the signal; the
// training loop, the sweep supervisor and anything that waits poll stop_signal() and end what
// they do (a run is then recorded as `killed` instead of staying `running`). No LibTorch here:
// the commands that do not train (tlab sweep ...) wait on locks with it too.

#include <stdexcept>
#include <string>

namespace tlab {

/// The run was stopped by a signal (SIGINT, SIGTERM): status `killed`.
class InterruptedError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Installs SIGINT, SIGTERM and SIGHUP handlers that ask the running training loop (or the sweep
/// supervisor) to stop at its next step: the run flushes its metrics and is recorded as `killed`
/// instead of staying `running`. With `second_signal_ends`, a second signal ends the process at
/// once (the user insists); a sweep's child passes false, because its supervisor forwards the
/// signal the child may also have received directly, and kills it after the grace period.
void install_stop_handlers(bool second_signal_ends = true);

/// Under a memory limit (ulimit -v): a crash (SIGSEGV, SIGBUS) at a moment when the address
/// space is exhausted is a library that did not check an allocation (oneDNN's JIT does not):
/// the process then says "error: out of memory ..." with the limit and exits with code 3, which
/// the supervisor records as `oom`. Other crashes stay crashes. Nothing is installed without a
/// limit. For a run's process.
void install_out_of_memory_crash_handler();

/// The signal that asked runs to stop (0 if none).
int stop_signal();

/// Throws InterruptedError ("stopped by signal 2 (SIGINT, Ctrl-C) <where>") once a stop signal
/// arrived; does nothing otherwise.
void throw_if_stopped(const std::string& where);

}  // namespace tlab
