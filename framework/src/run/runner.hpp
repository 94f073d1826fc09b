#pragma once
// The runner: executes one validated RunSpec in this process (load plugins, data, model,
// strategy hooks, training loop, evaluation, checkpoint) and records it in the store.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "run/data_prep.hpp"  // take_shots
#include "run/distributed.hpp"
#include "run/signals.hpp"
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
  /// A rank > 0 of a run on several processes, connected (run_rank): trains with the others,
  /// evaluates and saves nothing. Null for the run's own process, which starts the other ranks
  /// itself when its [run] processes > 1.
  std::shared_ptr<Distributed> dist;
  /// The run's process is rank 0 of ranks that srun started (SLURM): it connects with them
  /// instead of starting them.
  bool srun_ranks = false;
};

/// What became of a run.
struct RunOutcome {
  int64_t id = 0;
  RunStatus status = RunStatus::kFailed;  ///< kFinished, kFailed, kDiverged, kKilled or kOom.
  std::string reason;                     ///< Why it did not finish ("" when finished).
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
/// Warns when no OpenBLAS is loaded (the reference BLAS is about 7x slower). Under a memory
/// limit (ulimit -v) it first checks that the threads' buffers fit, and lets each thread take
/// its OpenBLAS buffer at once (both would otherwise hang when memory runs out): throws
/// OutOfMemoryError, with the limit, when they do not fit.
void configure_threads(int threads);

}  // namespace tlab
