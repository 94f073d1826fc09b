#pragma once
// The runner: executes one validated RunSpec in this process (load plugins, data, model,
// strategy hooks, training loop, evaluation, checkpoint) and records it in the store.

#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>

#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "store/store.hpp"
#include "util.hpp"

namespace tlab {

/// The loss became NaN or infinite: the run ends with status `diverged`.
class DivergedError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Memory ran out (LibTorch's allocator failed, std::bad_alloc): status `oom`.
class OutOfMemoryError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

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

/// The signal that asked runs to stop (0 if none).
int stop_signal();

/// How runs are executed.
struct RunOptions {
  std::filesystem::path results_dir = "results";  ///< Run folders go to `<results_dir>/runs/`.
  int threads = 0;       ///< LibTorch intra-op threads; 0 keeps LibTorch's default.
  bool verbose = false;  ///< Log every epoch at info level (otherwise debug).
  int64_t run_id = 0;    ///< Execute this queued run (its row exists); 0 = record a new run.
  std::string gpu;       ///< CUDA_VISIBLE_DEVICES the supervisor gave this run ("" none).
  /// Time each phase of training (data, forward + loss, backward, optimiser, evaluation,
  /// logging) into profile/<domain>/* summaries; also on with TLAB_PROFILE=1 (how `tlab run
  /// --profile` reaches its child processes). On a GPU it synchronises after each phase.
  bool profile = false;
};

/// What became of a run.
struct RunOutcome {
  int64_t id = 0;
  std::string status;  ///< finished, failed, diverged, killed or oom.
  std::string reason;  ///< Why it did not finish ("" when finished).
  std::map<std::string, double> summary;
};

/// The row that records `spec` (provenance, params, run folder under `options.results_dir`),
/// before it runs: the supervisor queues runs with it. `git`: the state of the experiment's
/// repository when the caller already has it (a sweep asks git once, not once per run).
NewRun describe_run(const RunSpec& spec, const RunOptions& options, const GitState* git = nullptr);

/// Runs `spec` to its end and records it (as a new run, or as the queued `options.run_id`); never
/// throws for failures of the run itself (they become its status), only for failures of the store.
RunOutcome execute_run(const RunSpec& spec, PluginLoader& loader, Store& store,
                       const RunOptions& options);

/// Sets LibTorch's intra-op threads (`threads` > 0; 0 keeps its default) and keeps OpenBLAS
/// single-threaded inside them: LibTorch already parallelises around its BLAS calls, and
/// OpenBLAS's own spinning threads on top of that multiplied system time by 20 (measured).
/// Warns when no OpenBLAS is loaded (the reference BLAS is about 7x slower).
void configure_threads(int threads);

/// Keeps `shots` examples per class of `split` (all of a class when it has fewer), chosen with
/// `seed`; the order of kept examples is shuffled. `shots` = 0 returns `split` unchanged.
/// With `rest` (resident splits only): the inputs of the examples not kept, in their order.
Split take_shots(const Split& split, int64_t shots, int64_t num_classes, uint64_t seed,
                 torch::Tensor* rest = nullptr);

}  // namespace tlab
