#pragma once
// The results store: one SQLite file that records every run (config, params, plugins, metrics,
// summaries). Many processes write to it at once (parallel runs, later a sweep's child processes),
// so every connection uses WAL, a busy timeout and `BEGIN IMMEDIATE` write transactions, and a
// write that still finds the database locked is retried whole, never dropped.
//
// Non-finite values: SQLite stores a NaN bound as REAL as NULL, so a NaN metric or summary value
// is written as NULL (those `value` columns are otherwise never NULL) and NULL is read back as a
// quiet NaN; pandas' `read_sql` likewise reads NULL as NaN. The sign and payload of a NaN are not
// kept. +Inf and -Inf are stored natively as REAL (`value = 9e999` matches +Inf in SQL).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace tlab {

/// The results database could not be opened, migrated, read or written. The message names the
/// database file in quotes, what failed, SQLite's message and, where there is one, the fix.
class StoreError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Where a run stands. The database stores the text of to_string (the `runs.status` column:
/// sqlite3 and pandas users read it), so the text of a value never changes.
enum class RunStatus {
  kQueued,     ///< "queued": recorded, waiting for a process (a child, a batch job) to run it
  kRunning,    ///< "running": a process runs it now
  kFinished,   ///< "finished": trained and evaluated; the only status with final results
  kFailed,     ///< "failed": an error stopped it (the reason says which)
  kCrashed,    ///< "crashed": its process died from a signal
  kKilled,     ///< "killed": stopped by a user (Ctrl-C, SIGTERM) or by its time limit
  kTimeout,    ///< "timeout": the batch system ended it at its time limit
  kDiverged,   ///< "diverged": the loss became NaN or infinite
  kOom,        ///< "oom": out of (GPU or host) memory
  kLost,       ///< "lost": its process vanished without recording a status
  kCancelled,  ///< "cancelled": cancelled before it started
  kNodeFail,   ///< "node_fail": the batch system lost the machine it ran on
  kPruned,     ///< "pruned": stopped early by a sweep's pruner (ASHA); keeps its metrics
};

/// Whether a run with `status` is done and need not run again: finished, or pruned by a sweep's
/// pruner (a resumed sweep skips both).
bool is_complete(RunStatus status);

/// The text stored for `status` ("finished", "node_fail", ...).
const char* to_string(RunStatus status);
/// Writes to_string(status) (test failures and logs show "finished", not 2).
std::ostream& operator<<(std::ostream& out, RunStatus status);

/// The status whose text is `text`. Throws StoreError naming `text` and listing the valid
/// statuses when there is none (e.g. a database written by a newer tlab).
RunStatus parse_run_status(const std::string& text);

/// Whether a run in `status` has ended (every status but queued and running).
bool is_terminal(RunStatus status);

/// A flattened config parameter value. Lists and tables arrive as TOML text strings.
using ParamValue = std::variant<bool, int64_t, double, std::string>;

/// A param value as text: true/false, integers, the shortest float that reads back the same,
/// strings as they are (TOML text for lists and tables).
std::string param_text(const ParamValue& value);

/// One flattened config parameter ("train.lr" -> 0.001).
struct ParamEntry {
  std::string key;   ///< Dotted key.
  ParamValue value;  ///< bool, int64_t, double, or TOML text for lists and tables.
  std::string type;  ///< "bool", "int", "float", "string", "list" or "table"; must match `value`.
};

/// One metric value at one step.
struct MetricRow {
  std::string name;  ///< Metric name, `<domain>/<split>/<metric>` ("target/train/loss").
  int64_t step;      ///< Global optimisation step.
  int64_t epoch;     ///< Epoch the step belongs to.
  double value;      ///< NaN and +-Inf are kept (see the top of this file).
  double wall_time;  ///< Seconds since the run started.
};

/// A plugin a run used.
struct PluginRecord {
  std::string kind, name, version, path, file_hash;
};

/// One evaluation pass of a run's model (table `evaluations`): the run's own target splits
/// ("target/val", "target/test", recorded when it finishes) and the passes `tlab eval` adds
/// ("eval/<label>/<split>"). Its metrics are also summaries `<name>/<metric>` of the run.
struct EvaluationRecord {
  int64_t run_id = 0;
  std::string name;        ///< "target/test", "eval/digits_rotated/test", ...
  std::string dataset;     ///< The dataset table evaluated, as TOML ("" for the run's target).
  std::string counts;      ///< results/classification.hpp ClassificationCounts::to_json().
  double loss = 0;         ///< Mean cross-entropy (NaN kept as NULL).
  std::string created_at;  ///< UTC, ISO 8601.
};

/// "the disk holding '<folder>' is full (N KiB free): free some space ..." when the filesystem
/// of the database `db` has less than 1 MiB free; "" otherwise. SQLite reports a full disk as a
/// "disk I/O error" where it maps its shared memory (-shm): errors add this to say what it is.
std::string disk_full_text(const std::filesystem::path& db);

/// What `Store::create_run` records about a new run.
struct NewRun {
  std::string experiment;          ///< Experiment file path as given.
  std::string name;                ///< Experiment (or run) name.
  std::string host;                ///< Host name.
  int64_t pid = 0;                 ///< Process id of the process that executes the run.
  std::string device;              ///< "cpu", "cuda:0", ...
  int64_t seed = 0;                ///< Seed of the run.
  std::string git_commit;          ///< Commit of the experiment's repository; "" when unknown.
  int git_dirty = -1;              ///< -1 unknown, 0 clean, 1 uncommitted changes.
  std::string config_toml;         ///< Resolved config as TOML, defaults included.
  std::string config_hash;         ///< Hash of `config_toml`.
  std::string overrides;           ///< JSON object of swept key -> value; "{}" when none.
  std::string run_dir;             ///< The run's folder (checkpoints, logs).
  std::string tlab_version;        ///< Version of tlab that ran it.
  std::vector<ParamEntry> params;  ///< `config_toml` flattened; keys must be unique.
  RunStatus status = RunStatus::kRunning;  ///< kRunning (runs now) or kQueued (a child will).
  std::string uuid;                        ///< Globally unique id; "" = a new random one.
  std::string run_key;                     ///< Hash of the resolved config and the plugin builds.
  std::string sweep;                       ///< Id of the `tlab run` invocation that queued it.
  std::vector<std::string> override_args;  ///< Every override of the run, as text.
  std::string gpu;                         ///< CUDA_VISIBLE_DEVICES given to the run ("" none).
  std::string boot_id;                     ///< Boot of the machine `pid` runs on ("" unknown).
  int64_t pid_start = -1;                  ///< Start of `pid` in ticks since boot (-1 unknown).
  /// How a sweep chose the run, JSON: {"sweeper": "grid"|"random", "trial": N (random),
  /// "samples", "search_seed", "distributions": {key: "tag(log, interval(...))", ...}};
  /// "" for a run that is not part of a sweep.
  std::string search;
  /// [run] processes > 1: the ranks, their c10d backend and collective timeout (seconds),
  /// for the run's process to start them with; a single process records NULLs.
  int64_t processes = 1;
  std::string backend;
  double collective_timeout = 300;
};

/// Every column of a run (`tlab results show`, the child process that executes a queued run).
/// Text columns that are NULL read as ""; integers that are NULL read as -1.
struct RunRecord {
  int64_t id = 0;
  std::string uuid, experiment, name, status, reason, created_at, started_at, ended_at,
      heartbeat_at, host;
  int64_t pid = -1;
  std::string device;
  int64_t seed = 0;
  std::string git_commit;
  int64_t git_dirty = -1;
  std::string config_toml, config_hash, overrides, run_dir, tlab_version, run_key, sweep;
  std::vector<std::string> override_args;
  std::string gpu;
  int64_t exit_code = -1;   ///< Exit status of the child process; -1 unknown or none.
  int64_t signal = -1;      ///< Signal that ended the child process; -1 none.
  std::string stderr_tail;  ///< Last lines the child wrote to stderr.
  std::string job;          ///< Batch job that executed it ("slurm 123_4"); "" for none.
  std::string search;       ///< NewRun::search.
  int64_t processes = 1;    ///< [run] processes: the ranks that trained it (1 = one process).
  std::string backend;      ///< Their c10d backend ("gloo"); "" for one process.
  double collective_timeout = 300;  ///< Seconds before one of their collectives fails.
};

/// A queued or running run, as the supervisor checks it at start.
struct OpenRun {
  int64_t id = 0;
  int64_t pid = -1;
  std::string status;
  double heartbeat_age = 0;  ///< Seconds since its last heartbeat (or creation).
  std::string boot_id;       ///< Boot of the machine its pid belongs to ("" unknown).
  int64_t pid_start = -1;    ///< Start of its process in ticks since boot (-1 unknown).
};

/// A run as listed by `Store::list_runs`. Text columns that are NULL read as "".
struct RunSummaryRow {
  int64_t id;
  std::string name, status, reason, started_at, ended_at, device;
  std::string uuid, host, run_key, experiment, created_at;
  int64_t seed;
  std::vector<ParamEntry> params;                         ///< Ordered by key.
  std::vector<std::pair<std::string, double>> summaries;  ///< Ordered by name; NaN stays NaN.

  /// The param `key`, or nullptr.
  const ParamEntry* param(std::string_view key) const {
    for (const auto& p : params)
      if (p.key == key) return &p;
    return nullptr;
  }
  /// The summary `name`, or nullptr.
  const double* summary(std::string_view name) const {
    for (const auto& s : summaries)
      if (s.first == name) return &s.second;
    return nullptr;
  }
};

namespace detail {
class Connection;
}

/// A connection to one results database. Not thread-safe: use one Store per thread. A Store
/// must not be used after fork(); open a new one in the child (using one throws StoreError).
///
/// Example:
///   Store store("results/results.db");
///   int64_t run = store.create_run(new_run);
///   store.write_metrics(run, {{"target/train/loss", 10, 0, 0.42, 1.5}});
///   store.finish_run(run, RunStatus::kFinished, "");
class Store {
 public:
  /// Schema version this build reads and writes (`PRAGMA user_version`).
  static constexpr int kSchemaVersion = 8;
  /// `PRAGMA application_id` of a TransferLab database ("TLAB"), set when its schema is created
  /// or migrated. A file with another application id, or an older one whose tables are not
  /// TransferLab's, is refused before anything in it changes.
  static constexpr int32_t kApplicationId = 0x544C4142;
  /// How long one statement waits for another process's lock before SQLite reports busy.
  static constexpr std::chrono::milliseconds kBusyTimeout{10000};
  /// Write transactions still busy after the busy timeout are retried whole, this many times
  /// in all, with a growing pause between attempts.
  static constexpr int kMaxAttempts = 8;

  /// Opens `path` (creating the file and its parent folder when `create`) and migrates it to
  /// kSchemaVersion. Refuses, with StoreError: a missing file when not `create`; a file that is
  /// not an SQLite database; a database with a newer schema version (upgrade tlab); a non-empty
  /// database with version 0 (not a TransferLab results database). A refused file is left as
  /// it was. `busy_timeout` is meant for tests.
  /// How the database file journals its writes. kWal (the default) lets readers and one writer
  /// work at once, but needs shared memory: every process on one machine. kRollback (a `-journal`
  /// file) is for a database on a network filesystem that one process writes at a time: the
  /// per-task shards of a SLURM sweep. kReadOnly opens for reading only: nothing is created,
  /// migrated or switched (a database in a folder this user cannot write, a read-only file);
  /// a WAL database whose `-shm` cannot be created there is read as the file is (SQLite's
  /// immutable mode). Writing through such a Store fails.
  enum class Journal { kWal, kRollback, kReadOnly };

  explicit Store(const std::filesystem::path& path, bool create = true,
                 std::chrono::milliseconds busy_timeout = kBusyTimeout,
                 Journal journal = Journal::kWal);
  ~Store();
  Store(Store&&) noexcept;
  Store& operator=(Store&&) noexcept;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  /// The database file, as given.
  const std::filesystem::path& path() const;

  /// Records a new run with status "running", started and heartbeat now, and its params.
  /// Returns the run id.
  ///
  /// With `same_key`: when a run with the same run_key is finished, or queued or running in
  /// another sweep (another `tlab run`), nothing is created; that run's id goes to *same_key
  /// and 0 is returned. Checked and inserted in one write transaction, so that processes that
  /// start one config at the same moment create it once.
  int64_t create_run(const NewRun& run, int64_t* same_key = nullptr);
  /// Records the plugins `run` uses (may be called more than once; rows are appended).
  void add_plugins(int64_t run, const std::vector<PluginRecord>& plugins);
  /// Appends `rows` to the metrics of `run` in one transaction: all rows or none.
  void write_metrics(int64_t run, const std::vector<MetricRow>& rows);
  /// (run id, runs.search) of every run that has one (a sweep's), by id: one query.
  std::vector<std::pair<int64_t, std::string>> searches();
  /// The values of metric `name` at epoch `epoch` of every run whose runs.search has this
  /// `bracket` (ASHA's rung values, run/asha.hpp), whatever their status.
  std::vector<double> rung_values(const std::string& bracket, const std::string& name,
                                  int64_t epoch);
  /// Sets summary values of `run`, replacing earlier values of the same names.
  void write_summaries(int64_t run, const std::vector<std::pair<std::string, double>>& values);
  /// Sets the heartbeat time of `run` to now.
  void heartbeat(int64_t run);
  /// Sets the terminal `status` of `run` (is_terminal), its `reason` ("" for none) and ended_at
  /// now. Throws StoreError for queued or running.
  void finish_run(int64_t run, RunStatus status, const std::string& reason);
  /// As finish_run, but only while `run` is still queued or running; returns whether it was.
  /// The supervisor uses it: a status the child recorded itself is never overwritten.
  bool finish_open_run(int64_t run, RunStatus status, const std::string& reason);
  /// A queued run starts: status running, started_at and heartbeat now, `pid`, `device` and
  /// `gpu` (CUDA_VISIBLE_DEVICES, "" for none), and `host` unless "" (a batch job runs on
  /// another machine than the one that queued it). Returns false (changing nothing) when the run is
  /// no longer queued, e.g. cancelled.
  bool start_run(int64_t run, int64_t pid, const std::string& device, const std::string& gpu = "",
                 const std::string& boot_id = "", int64_t pid_start = -1,
                 const std::string& host = "");
  /// The batch job executing `run` ("slurm 123_4"), recorded by the run's process.
  void set_job(int64_t run, const std::string& job);
  /// How the child process that executed `run` ended (-1 for "not applicable").
  void record_exit(int64_t run, int64_t exit_code, int64_t signal, const std::string& stderr_tail);
  /// Every column of `run`; StoreError for an unknown id.
  RunRecord run(int64_t run);
  /// The newest finished run whose run key is `run_key`, or 0 when there is none.
  int64_t finished_run_with_key(const std::string& run_key);
  /// Runs still queued or running that were started on `host`.
  std::vector<OpenRun> open_runs(const std::string& host);

  /// All runs ordered by id, or the runs `ids` in that order (StoreError for an unknown id).
  std::vector<RunSummaryRow> list_runs(const std::vector<int64_t>& ids = {});
  /// Calls `visit` with every run in id order, as list_runs() gives them, without keeping them:
  /// one row is reused, so a listing of many runs needs the memory of one (`visit` may move
  /// from it). One read transaction: a consistent snapshot.
  void for_each_run(const std::function<void(RunSummaryRow&)>& visit);
  /// The metrics of `run` (only those called `name` unless it is ""), ordered by step, then
  /// by insertion.
  std::vector<MetricRow> metrics(int64_t run, const std::string& name = "");
  /// The plugins of `run`, in the order they were added.
  std::vector<PluginRecord> plugins(int64_t run);
  /// Records an evaluation of `run` and its summaries (`<name>/<metric>`) in one transaction,
  /// replacing an earlier evaluation of the same name and its summaries.
  void write_evaluation(const EvaluationRecord& evaluation,
                        const std::vector<std::pair<std::string, double>>& summaries);
  /// The evaluations of `run`, by name.
  std::vector<EvaluationRecord> evaluations(int64_t run);

  /// `PRAGMA integrity_check` plus `PRAGMA foreign_key_check`: "ok" when both find nothing,
  /// else one line per problem.
  std::string integrity_check();

 private:
  std::unique_ptr<detail::Connection> db_;  // null only after being moved from
};

}  // namespace tlab
