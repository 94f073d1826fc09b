#pragma once
// Submitting sweeps to SLURM (docs/cluster.md): the launcher behind `--launcher slurm` and
// `tlab sweep collect --retry-failed`. The sweep folder, its state and collecting it are in
// run/slurm_state.hpp, which needs no LibTorch.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "run/launcher.hpp"
#include "run/slurm_state.hpp"

namespace tlab::slurm {

/// The launcher behind `--launcher slurm`.
std::unique_ptr<Launcher> make_slurm_launcher();

/// Submits again the tasks of the sweep in `dir` whose latest attempt failed, crashed, timed
/// out, ran out of memory, lost its node or was lost (not cancelled or diverged ones), unless
/// their run key (of the current plugin builds) finished meanwhile in `store`. Call after
/// collect_sweep. `submitted` is 0 when there was nothing to resubmit.
SweepResult retry_failed(const std::filesystem::path& dir, Store& store, PluginLoader& loader);

/// "0-3,5,7-8" for {0,1,2,3,5,7,8}, with "%N" appended when parallelism > 0.
std::string array_spec(const std::vector<int>& tasks, int64_t parallelism);

/// The sbatch script of one submission.
struct ScriptInput {
  std::string job_name;
  std::filesystem::path dir;  ///< The sweep folder (absolute).
  int submission = 1;
  std::vector<int> tasks;
  int64_t parallelism = 0;
  LauncherSpec launcher;
  int64_t threads = 0;                    ///< Intra-op threads per run; 0 = cpus_per_task.
  std::string tlab;                       ///< Absolute path of the tlab executable.
  std::vector<std::string> plugin_paths;  ///< --plugin-path entries (absolute).
  int64_t processes = 1;  ///< [run] processes of its runs: tasks per array task, via srun
};
std::string render_script(const ScriptInput& in);

}  // namespace tlab::slurm
