#pragma once
// Launchers: where the runs of a sweep execute. Two implementations of one interface:
//  - local (run/executor.hpp): child processes on this machine, N at a time, until all end;
//  - slurm (run/slurm.hpp): one SLURM job array, one task per run, each writing its own shard
//    database that `tlab sweep collect` merges into the results database.
// Both skip the runs already finished with the same run key, so a sweep resumes wherever it
// ran before. The launcher comes from the experiment's [launcher] table (config group
// `launcher`, or `--launcher NAME`); it is not part of a run's config or run key.

#include <memory>
#include <string>
#include <vector>

#include "config/experiment.hpp"
#include "run/executor.hpp"

namespace tlab {

class Launcher {
 public:
  virtual ~Launcher() = default;
  /// "local" or "slurm".
  virtual std::string name() const = 0;
  /// Starts the runs of `specs` that are not finished yet. Local: runs them to their end. SLURM:
  /// submits them and returns (or, with options.wait, waits and collects). Never throws for a
  /// run's failure; throws ConfigError or std::runtime_error when the launch itself fails.
  virtual SweepResult launch(const std::vector<RunSpec>& specs, PluginLoader& loader, Store& store,
                             const SweepOptions& options) = 0;
};

/// The launcher named by `spec.name`.
std::unique_ptr<Launcher> make_launcher(const LauncherSpec& spec);

/// The [launcher] table every run of `specs` shares; ConfigError when runs differ (a sweep over
/// launcher.* keys), naming the first two runs that differ.
const LauncherSpec& sweep_launcher(const std::vector<RunSpec>& specs);

}  // namespace tlab
