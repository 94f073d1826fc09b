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
//
// This half needs no LibTorch (tlab sweep list, status, cancel and collect run without loading
// it); submitting and resubmitting, which validate runs with their plugins, is run/slurm.hpp.

#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "store/store.hpp"

namespace tlab::slurm {

/// A SLURM command failed, or a sweep folder is missing or damaged. The message says which and
/// how to fix it.
class SlurmError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

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
  SweepState state;                ///< The sweep as found (before the merge and the retry).
};

/// Merges the shards of the sweep's ended tasks into `store` (SLURM's verdict recorded in the
/// shard first: cancelled, timeout, node_fail ...). Resubmitting the failed ones needs the plugins:
/// retry_failed in run/slurm.hpp.
CollectReport collect_sweep(const std::filesystem::path& dir, Store& store);

// --- Pieces, exposed for tests ---------------------------------------------------------------

/// The state of one attempt from what its shard says (status, reason, seconds since its last
/// heartbeat) and what SLURM says ("" when SLURM does not know the task). {state, reason}.
std::pair<std::string, std::string> resolve_state(const std::string& shard_status,
                                                  const std::string& shard_reason,
                                                  double heartbeat_age,
                                                  const std::string& slurm_state,
                                                  const std::string& slurm_reason);

/// Parses `squeue -h -r -o '%F|%K|%T|%r'` output: "arrayjob_task" -> {state, reason}.
std::map<std::string, std::pair<std::string, std::string>> parse_squeue(const std::string& out);
/// Parses `sacct -n -P -X -o JobID,State` output: "arrayjob_task" -> {state, ""}.
std::map<std::string, std::pair<std::string, std::string>> parse_sacct(const std::string& out);

// --- Shared with the submitting side (run/slurm.cpp) -----------------------------------------
namespace detail {

using json = nlohmann::ordered_json;
using SlurmStates = std::map<std::string, std::pair<std::string, std::string>>;

inline constexpr int kManifestFormat = 1;

/// What a program printed and how it ended.
struct Output {
  int code = -1;  ///< exit code, 128 + signal, or 127 when the program could not be executed
  std::string out, err;
};

/// Runs `argv` (searched on PATH) with stdin from /dev/null; returns its exit code and output.
/// SlurmError naming the program when it is not on PATH.
Output run_program(const std::vector<std::string>& argv);
std::string trim(std::string s);
std::string utc_stamp(const char* format);
std::string shell_quote(const std::string& s);

std::filesystem::path manifest_path(const std::filesystem::path& dir);
/// The manifest of `dir`; SlurmError when it is missing or damaged.
json read_manifest(const std::filesystem::path& dir);
void write_manifest(const std::filesystem::path& dir, const json& m);

/// Holds flock(2) on <sweep>/sweep.lock: one collect or submission at a time per sweep. Waiting
/// ends with SlurmError when a stop signal arrives (run/signals.hpp).
class SweepLock {
 public:
  explicit SweepLock(const std::filesystem::path& dir);
  ~SweepLock();
  SweepLock(const SweepLock&) = delete;
  SweepLock& operator=(const SweepLock&) = delete;

 private:
  int fd_ = -1;
};

std::filesystem::path shard_path(const std::filesystem::path& dir, int task, int submission);
std::filesystem::path log_path(const std::filesystem::path& dir, int task, int submission);

/// What a shard says of its run (its task may be writing it).
struct ShardView {
  bool exists = false;  ///< The file exists.
  std::string error;    ///< Why it could not be read ("" when it was).
  std::string status, reason, uuid;
  double heartbeat_age = 1e18;
};
ShardView read_shard(const std::filesystem::path& path);

/// The last `lines` lines of a text file ("" when unreadable).
std::string tail_of(const std::filesystem::path& path, std::size_t lines);

/// SLURM's state of every task of `jobs`: squeue, then sacct for the tasks squeue forgot.
SlurmStates query_slurm(const std::vector<std::string>& jobs,
                        const std::vector<std::string>& tasks);
/// The sweep of `dir` as its manifest `m`, its shards and SLURM describe it.
SweepState state_of(const std::filesystem::path& dir, const json& m);

/// "4 finished, 1 failed": the latest attempts per state, in a fixed order.
std::string counts_text(const SweepState& st);

bool is_open(const std::string& state);
/// Not ended, or not known to have ended: never merged or retried.
bool unsettled(const std::string& state);
/// Failed, crashed, timed out, ran out of memory, lost its node or was lost.
bool retryable(const std::string& state);

}  // namespace detail

}  // namespace tlab::slurm
