#pragma once
// The training engine's entry points, between the `tlab` front and libtlab_engine.so.
//
// `tlab` itself does not link LibTorch: loading Debian's LibTorch (~290 shared libraries) costs
// ~0.8 s, and the commands that do not train (results, sweep list/status/cancel/collect, new,
// --help, --version) answer in milliseconds without it. The commands that need plugins or
// training (run, the runs' own `_run`, plugins, config with validation, sweep collect
// --retry-failed) are parsed by the front, which then opens the engine (dlopen, on first need)
// and calls one function of the table below with the parsed arguments.
//
// Front and engine are built together from one tree and pass C++ objects: `tlab_engine_api`
// returns the table only when the caller's kApiVersion and layout stamp match the engine's, so
// a stale engine beside a newer front is refused with a message, never called.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tlab::engine {

/// Bump when a struct or the table below changes meaning (the layout stamp catches size changes).
inline constexpr int kApiVersion = 6;

/// Options before or after any command.
struct Globals {
  std::vector<std::string> plugin_paths;  ///< --plugin-path, in order.
  bool verbose = false;                   ///< -v
};

/// `tlab run EXPERIMENT [overrides]` (docs/sweeps.md), as parsed by the front.
struct RunArgs {
  std::string experiment, db;
  std::vector<std::string> overrides, config_dirs;
  int threads = 0;
  bool multirun = false, dry_run = false, rerun = false, in_process = false, wait = false;
  bool profile = false;
  int jobs = 1, runs_per_gpu = 1;
  std::string timeout, grace, gpus, spawn, launcher;  ///< As typed ("" = not given).
  /// Which options the user gave (some defaults differ by launcher).
  bool jobs_given = false, spawn_given = false, runs_per_gpu_given = false;
};

/// `tlab _run`: one queued run of a database, in a sweep's child process or a SLURM task.
struct ChildArgs {
  std::string db;
  int64_t id = 0;
  int threads = 0;
  bool shard = false;  ///< A SLURM task's own database (rollback journal).
  /// One rank > 0 of a run on several processes (`[run] processes`), started by rank 0:
  /// `--rank R --world N --timeout-ms T` (run/distributed.hpp). 0 = the run itself.
  int rank = 0, world = 1;
  /// Started by srun as one task of a run's ranks (SLURM_PROCID is the rank).
  bool srun = false;
  int64_t timeout_ms = 0;
};

/// `tlab config EXPERIMENT [overrides]`: composed and validated against the plugins.
struct ConfigArgs {
  std::string experiment, format = "toml";
  std::vector<std::string> overrides, config_dirs;
  bool multirun = false, resolve = false;
};

/// `tlab plugins [show NAME]`.
struct PluginsArgs {
  std::string show;  ///< "" lists every plugin.
};

/// `tlab sweep collect --retry-failed`: resubmit the failed tasks of these sweep folders.
struct RetryArgs {
  std::string db;
  std::vector<std::string> sweeps;  ///< Sweep folders, already collected.
  /// Per sweep: some task did not finish. Exit code 1 unless the sweep resubmitted something.
  std::vector<bool> unfinished;
};

/// `tlab eval RUN [overrides]`: a finished run's model evaluated on a dataset, domain or split
/// (docs/evaluation.md); recorded as evaluations `eval/<label>/<split>` of the run.
struct EvalArgs {
  std::string db;
  std::vector<int64_t> runs;           ///< Resolved by the front.
  std::vector<std::string> overrides;  ///< On the run's resolved config: target.*, eval.*, device.
  std::vector<std::string> splits;     ///< "train", "val" and/or "test".
  std::string name;                    ///< Label ("" = the dataset's domain name).
  bool multirun = false, dry_run = false;
  int threads = 0;
};

/// `tlab export RUN --format torchscript [--output FILE]` (docs/evaluation.md).
struct ExportArgs {
  std::string db, format = "torchscript", output;
  int64_t run = 0;  ///< Resolved by the front.
};

/// `tlab predict RUN [--input PATH] [overrides]`: class probabilities as CSV.
struct PredictArgs {
  std::string db, input, split = "test", output;
  int64_t run = 0;  ///< Resolved by the front.
  std::vector<std::string> overrides;
  int threads = 0;
};

/// `tlab transferability EXPERIMENT --candidates run:3,run:7 [overrides]` (docs/evaluation.md).
struct TransferabilityArgs {
  std::string experiment, db;
  std::vector<std::string> overrides, config_dirs;
  /// "run:<id>" (resolved by the front from run:<id|uuid-prefix>) or "file:<absolute path>" of a
  /// weights file for the experiment's backbone.
  std::vector<std::string> candidates;
  int threads = 0;
};

/// Every function returns the process's exit code (0 success, 1 a run failed, 2 a usage or
/// configuration error, 128 + signal when stopped) and has printed its own error message.
struct Api {
  int (*run)(const Globals&, const RunArgs&);
  int (*child)(const Globals&, const ChildArgs&);
  int (*config)(const Globals&, const ConfigArgs&);
  int (*plugins)(const Globals&, const PluginsArgs&);
  int (*retry)(const Globals&, const RetryArgs&);
  int (*evaluate)(const Globals&, const EvalArgs&);
  int (*export_model)(const Globals&, const ExportArgs&);
  int (*predict)(const Globals&, const PredictArgs&);
  int (*transferability)(const Globals&, const TransferabilityArgs&);
};

/// Sizes of everything passed across, so that a front and an engine of different builds whose
/// structs differ refuse each other even when kApiVersion was not bumped.
inline constexpr std::size_t kLayoutStamp =
    sizeof(Globals) + 3 * sizeof(RunArgs) + 5 * sizeof(ChildArgs) + 7 * sizeof(ConfigArgs) +
    11 * sizeof(PluginsArgs) + 13 * sizeof(RetryArgs) + 17 * sizeof(Api) +
    19 * sizeof(std::string) + 23 * sizeof(std::vector<std::string>) +
    29 * sizeof(std::vector<bool>) + 31 * sizeof(TransferabilityArgs);

}  // namespace tlab::engine

extern "C" {
/// The engine's table, or nullptr when `api_version` or `layout` differ from the engine's own
/// (then `why` says which, for the front's error message). The only symbol the engine exports.
const tlab::engine::Api* tlab_engine_api(int api_version, std::size_t layout, const char** why);
}
