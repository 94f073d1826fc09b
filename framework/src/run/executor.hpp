#pragma once
// The executor: runs every run of a sweep in its own child process (fork + exec of `tlab`
// itself, hidden subcommand `_run`), N at a time, so that a plugin that throws, segfaults,
// aborts, hangs or calls exit() fails only its own run. The supervisor queues the runs in the
// database, skips runs already finished with the same run key, assigns threads and GPUs, enforces
// timeouts, forwards Ctrl-C, and records how each child ended. See docs/architecture.md, "Run
// lifecycle".

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "run/heartbeat.hpp"
#include "store/store.hpp"

namespace tlab {

/// How a sweep runs.
struct SweepOptions {
  std::filesystem::path db;                       ///< Results database (already migrated).
  std::filesystem::path results_dir = "results";  ///< Run folders and caches go under it.
  int jobs = 1;                                   ///< Runs at once.
  int threads = 0;                                ///< Intra-op threads per run; 0 = cores / jobs.
  double timeout = 0;                             ///< Wall-clock limit per run (s); 0 = none.
  double grace = 10;                              ///< Seconds between SIGTERM and SIGKILL.
  bool rerun = false;                             ///< Run again runs already finished.
  bool verbose = false;                           ///< Pass -v to the runs, echo their output.
  std::vector<std::string> gpus;                  ///< GPU ids to hand out; empty = none.
  int runs_per_gpu = 1;                           ///< Runs sharing one GPU at once.
  std::vector<std::string> plugin_paths;          ///< --plugin-path, passed to the children.
  std::filesystem::path tlab = "/proc/self/exe";  ///< Named as the children's argv[0].
  /// `--spawn fork`: when set, a child does not exec but calls this (run id, threads) in the
  /// forked copy of the supervisor and exits with its result; saves the ~0.65 s a new process
  /// spends loading Debian's LibTorch. Only for sweeps whose runs all use the CPU, from a
  /// supervisor that has run no LibTorch operation and started no thread.
  std::function<int(int64_t, int)> in_fork;
  /// SLURM: wait for the submitted tasks to end, then collect their shards.
  bool wait = false;
  /// `--in-process`: run each run in the supervisor itself, one after another (no child
  /// process, no crash isolation, no timeout): for gdb, valgrind and sanitizers.
  bool in_process = false;
};

/// What became of a sweep.
struct SweepResult {
  std::size_t total = 0;    ///< Runs of the sweep.
  std::size_t skipped = 0;  ///< Already finished with the same run key (not run again).
  /// Of `skipped`: queued or running in another `tlab run` when this sweep began (it runs
  /// there, once; its id is in `ids`).
  std::size_t elsewhere = 0;
  std::size_t finished = 0;  ///< Finished now (pruned ones included).
  std::size_t pruned = 0;    ///< Of `finished`: stopped early by [sweep.asha].
  std::vector<int64_t> ids;  ///< Every run of the sweep, skipped ones included, in sweep order.
  std::vector<std::string> failures;  ///< "run 7 crashed: ..." for each run that did not finish.
  int stop_signal = 0;                ///< The signal that stopped the sweep (0: none).
  std::size_t submitted = 0;          ///< SLURM: runs submitted as array tasks.
  std::string sweep_dir;              ///< SLURM: the sweep's folder ("" when none was made).
  std::string job;                    ///< SLURM: the job id of the array.
};

/// Hash of the resolved config and the plugin builds (file hashes) of `spec`: two runs with the
/// same key compute the same thing.
std::string run_key(const RunSpec& spec, PluginLoader& loader);

/// Runs `specs`, each in a child process. Never throws for a run's failure (it becomes the
/// run's status); throws StoreError for database failures.
SweepResult run_sweep(const std::vector<RunSpec>& specs, PluginLoader& loader, Store& store,
                      const SweepOptions& options);

/// Marks as `lost` the queued or running runs of this host whose process is gone and whose
/// heartbeat is older than `stale_seconds` (their supervisor or machine died). Returns the
/// reasons recorded, one per run.
std::vector<std::string> mark_lost_runs(Store& store, double stale_seconds);

/// The child side (`tlab _run --db DB --id ID`): executes queued run `id` of `db` with a
/// heartbeat thread. Returns the process exit code: 0 finished, 1 otherwise, 128 + signal when
/// stopped by one. `shard`: `db` is the one-run shard of a SLURM task, kept in rollback journal
/// mode (it may live on a network filesystem).
/// `install_handlers` = false keeps the caller's signal handlers (--in-process).
int run_child(const std::filesystem::path& db, int64_t id, int threads, PluginLoader& loader,
              bool shard = false, bool install_handlers = true, bool srun_ranks = false);

/// A rank > 0 of a run on several processes (`tlab _run --rank R --world N`, started by rank 0,
/// run/distributed.hpp): connects, then trains run `id` of `db` with the other ranks, recording
/// into a scratch database in the run folder's ranks/rank<R>/. Exit code 0 when it trained.
/// `timeout_ms` 0: the run's collective_timeout. `shard`: `db` is a SLURM task's shard.
int run_rank(const std::filesystem::path& db, int64_t id, int rank, int world, int64_t timeout_ms,
             int threads, PluginLoader& loader, bool shard = false);

/// The cores this process may run on (its CPU affinity).
int available_cores();

}  // namespace tlab
