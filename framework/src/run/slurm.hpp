#pragma once
// Sweeps on a SLURM cluster (docs/cluster.md). `tlab run EXP -m ... --launcher slurm` writes a
// sweep folder and submits one job array, one task per run:
//
//   <results>/sweeps/<sweep>/sweep.json        the manifest: runs, launcher, submissions
//   <results>/sweeps/<sweep>/submit-<k>.sh     the sbatch script of submission k
//   <results>/sweeps/<sweep>/shards/<t>.<k>.db task t's own results database (submission k)
//   <results>/sweeps/<sweep>/logs/<t>.<k>.out  task t's output (SLURM's --output)
//
// SQLite must not be shared over a network filesystem, so every task writes only its shard
// (rollback journal, one writer); `tlab sweep collect` merges the shards of ended tasks into the
// results database, idempotently (runs are matched by uuid). A task's state comes from its
// shard and from SLURM (squeue, else sacct): pending, running, finished, failed, crashed,
// diverged, oom, cancelled, timeout, node_fail, lost.

#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "run/launcher.hpp"

namespace tlab::slurm {

/// A SLURM command failed, or a sweep folder is missing or damaged. The message says which and
/// how to fix it.
class SlurmError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The launcher behind `--launcher slurm`.
std::unique_ptr<Launcher> make_slurm_launcher();

/// One task of a sweep, in one submission (attempt).
struct TaskState {
  int task = 0;           ///< Array index = position in the sweep.
  int submission = 0;     ///< 1 for the first submission, 2 for the first retry ...
  std::string job;        ///< "12_3" (array job id _ task); "" when never submitted.
  std::string overrides;  ///< The run's overrides, as text.
  std::string run_key;    ///< The run's key.
  std::string state;      ///< pending, running, finished, failed, cancelled, timeout ...
  std::string reason;     ///< Why it did not finish, or SLURM's pending reason.
  std::string slurm;      ///< SLURM's state of the task ("" when SLURM no longer knows it).
  std::filesystem::path shard, log;
  bool collected = false;  ///< Already merged into the results database.
};

/// A sweep folder and the state of its tasks.
struct SweepState {
  std::filesystem::path dir;
  std::string name, experiment, jobs;  ///< jobs: the array job ids, comma-separated.
  std::vector<TaskState> attempts;     ///< Every (task, submission), in task then submission order.
  /// The latest attempt of each task, in task order.
  std::vector<const TaskState*> latest() const;
  /// Latest attempts per state ("finished" -> 4).
  std::map<std::string, std::size_t> counts() const;
};

/// <folder of db>/sweeps.
std::filesystem::path sweeps_dir(const std::filesystem::path& db);
/// The results database a sweep folder belongs to ("" when its manifest cannot be read).
std::filesystem::path sweep_database(const std::filesystem::path& dir);
/// The sweep folders of `db` (those whose manifest names it), oldest first.
std::vector<std::filesystem::path> list_sweeps(const std::filesystem::path& db);
/// The folder of sweep `name` (a name under sweeps_dir(db), or a path); "" = the newest.
/// SlurmError naming the sweeps there when there is no such sweep.
std::filesystem::path find_sweep(const std::filesystem::path& db, const std::string& name);

/// Reads the manifest and shards of `dir` and asks SLURM about its jobs.
SweepState sweep_status(const std::filesystem::path& dir);
/// The status table of `tlab sweep status`.
std::string format_status(const SweepState& state);

/// Cancels the sweep's tasks still pending or running (only `tasks`, when not empty) with
/// scancel. Returns the job ids cancelled ("12_3"), or the whole arrays ("12").
std::vector<std::string> cancel_sweep(const std::filesystem::path& dir,
                                      const std::vector<int>& tasks);

/// What `collect_sweep` did.
struct CollectReport {
  std::size_t merged = 0;          ///< Runs added to the results database now.
  std::size_t already = 0;         ///< Ended attempts merged before.
  std::size_t open = 0;            ///< Tasks still pending or running (not merged).
  std::vector<std::string> uuids;  ///< uuids of every ended attempt (merged now or before).
  std::vector<std::string> lines;  ///< One line per run that did not finish: "task 3 failed: ..."
  SweepResult retried;             ///< With retry_failed: what was submitted again.
  SweepState state;                ///< The sweep as found (before the merge and the retry).
};

/// Merges the shards of the sweep's ended tasks into `db` (SLURM's verdict recorded in the
/// shard first: cancelled, timeout, node_fail ...). With `retry_failed`, then submits again the
/// tasks whose latest attempt failed, crashed, timed out, ran out of memory, lost its node or
/// was lost (not cancelled or diverged ones), unless their run key finished meanwhile.
CollectReport collect_sweep(const std::filesystem::path& dir, Store& store, PluginLoader& loader,
                            bool retry_failed);

// --- Pieces, exposed for tests ---------------------------------------------------------------

/// The state of one attempt from what its shard says (status, reason, seconds since its last
/// heartbeat) and what SLURM says ("" when SLURM does not know the task). {state, reason}.
std::pair<std::string, std::string> resolve_state(const std::string& shard_status,
                                                  const std::string& shard_reason,
                                                  double heartbeat_age,
                                                  const std::string& slurm_state,
                                                  const std::string& slurm_reason);

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
};
std::string render_script(const ScriptInput& in);

/// Parses `squeue -h -r -o '%F|%K|%T|%r'` output: "arrayjob_task" -> {state, reason}.
std::map<std::string, std::pair<std::string, std::string>> parse_squeue(const std::string& out);
/// Parses `sacct -n -P -X -o JobID,State` output: "arrayjob_task" -> {state, ""}.
std::map<std::string, std::pair<std::string, std::string>> parse_sacct(const std::string& out);

}  // namespace tlab::slurm
