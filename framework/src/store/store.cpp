// One file (~1,000 lines) because it is the only code that speaks SQL to the results database:
// schema and migrations, writes and reads share the connection, prepared statements and the
// busy/retry handling; keeping them together keeps every query next to the schema it relies on.
#include "store/store.hpp"

#include <fmt/format.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <ctime>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <ostream>
#include <random>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "store/sqlite.hpp"

namespace tlab {
namespace fs = std::filesystem;

namespace {

// The schema, as a list of migrations: kMigrations[v] takes a database from version v to v + 1.
// All pending migrations run in one BEGIN IMMEDIATE transaction together with the final
// `PRAGMA user_version`, so a database is never left half-migrated. To change the schema, append
// a migration and raise Store::kSchemaVersion; never edit one that has been released.
//
// Columns that hold a param value have no declared type on purpose: a column declared REAL or
// NUMERIC would turn the float 2.0 into the integer 2 or the string "123" into a number, while an
// untyped column keeps each value's own storage class (INTEGER, REAL, TEXT).
constexpr const char* kMigrations[] = {
    // 0 -> 1: everything.
    R"sql(
CREATE TABLE runs (
  id INTEGER PRIMARY KEY,
  experiment TEXT NOT NULL,
  name TEXT NOT NULL,
  status TEXT NOT NULL,
  reason TEXT,
  created_at TEXT NOT NULL,
  started_at TEXT,
  ended_at TEXT,
  heartbeat_at TEXT,
  host TEXT,
  pid INTEGER,
  device TEXT,
  seed INTEGER,
  git_commit TEXT,
  git_dirty INTEGER,
  config_toml TEXT,
  config_hash TEXT,
  overrides TEXT NOT NULL DEFAULT '{}',
  run_dir TEXT,
  tlab_version TEXT
);
CREATE INDEX runs_status ON runs (status);

CREATE TABLE params (
  run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  key TEXT NOT NULL,
  value,
  type TEXT NOT NULL,
  PRIMARY KEY (run_id, key)
);

-- value and wall_time are NULL only for NaN.
CREATE TABLE metrics (
  run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  step INTEGER NOT NULL,
  epoch INTEGER NOT NULL,
  value REAL,
  wall_time REAL
);
CREATE INDEX metrics_run_name_step ON metrics (run_id, name, step);

-- value is NULL only for NaN.
CREATE TABLE summaries (
  run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  value REAL,
  PRIMARY KEY (run_id, name)
);

CREATE TABLE run_plugins (
  run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  kind TEXT NOT NULL,
  name TEXT NOT NULL,
  version TEXT,
  path TEXT,
  file_hash TEXT
);
CREATE INDEX run_plugins_run ON run_plugins (run_id);

CREATE VIEW run_summaries AS
  SELECT r.id AS run_id, r.name AS run_name, r.status AS status, s.name AS metric,
         s.value AS value
  FROM runs AS r JOIN summaries AS s ON s.run_id = r.id;
)sql",
    // 1 -> 2: the executor (queued runs, run keys, how a child ended) and merging databases.
    R"sql(
ALTER TABLE runs ADD COLUMN uuid TEXT;
UPDATE runs SET uuid = lower(hex(randomblob(16))) WHERE uuid IS NULL;
CREATE UNIQUE INDEX runs_uuid ON runs (uuid);
ALTER TABLE runs ADD COLUMN run_key TEXT;
CREATE INDEX runs_run_key ON runs (run_key, status);
ALTER TABLE runs ADD COLUMN sweep TEXT;
ALTER TABLE runs ADD COLUMN override_args TEXT NOT NULL DEFAULT '[]';
ALTER TABLE runs ADD COLUMN gpu TEXT;
ALTER TABLE runs ADD COLUMN exit_code INTEGER;
ALTER TABLE runs ADD COLUMN signal INTEGER;
ALTER TABLE runs ADD COLUMN stderr_tail TEXT;
)sql",
    // 2 -> 3: views, so that the common tables are one SELECT away in sqlite3 or pandas
    // (docs/results.md). Views hold no data: they cost nothing until queried. They use
    // julianday(), window functions (SQLite 3.25+) and json_remove() (JSON1, built in since
    // 3.38), never the optional math functions, so that any reader can query them.
    R"sql(
-- One row per run: identity, status, where and when it ran, wall seconds from start to end
-- (NULL until it ends), its plugins (NULL when the run has no such param) and the headline
-- accuracies (NULL when absent or NaN).
CREATE VIEW run_overview AS
  SELECT r.id AS run_id, r.uuid AS uuid, r.experiment AS experiment, r.name AS name,
         r.status AS status, r.reason AS reason, r.seed AS seed, r.host AS host,
         r.device AS device, r.created_at AS created_at, r.started_at AS started_at,
         r.ended_at AS ended_at,
         round((julianday(r.ended_at) - julianday(r.started_at)) * 86400.0, 3) AS wall_seconds,
         (SELECT value FROM params WHERE run_id = r.id AND key = 'strategy.plugin') AS strategy,
         (SELECT value FROM params WHERE run_id = r.id AND key = 'backbone.plugin') AS backbone,
         (SELECT value FROM params WHERE run_id = r.id AND key = 'source.plugin') AS source,
         (SELECT value FROM params WHERE run_id = r.id AND key = 'target.plugin') AS target,
         (SELECT value FROM summaries WHERE run_id = r.id AND name = 'target/val/acc')
           AS target_val_acc,
         (SELECT value FROM summaries WHERE run_id = r.id AND name = 'target/test/acc')
           AS target_test_acc
  FROM runs AS r;

-- Per run and metric, the row with the highest step (the last written among equal steps).
CREATE VIEW metric_last AS
  SELECT run_id, name AS metric, step, epoch, value, wall_time
  FROM (SELECT run_id, name, step, epoch, value, wall_time,
               row_number() OVER (PARTITION BY run_id, name ORDER BY step DESC, rowid DESC) AS rn
        FROM metrics)
  WHERE rn = 1;

-- Params in long form with the run's name and status.
CREATE VIEW run_params AS
  SELECT p.run_id AS run_id, r.name AS run_name, r.status AS status, p.key AS key,
         p.value AS value, p.type AS type
  FROM params AS p JOIN runs AS r ON r.id = p.run_id;

-- Summaries of finished runs aggregated over seeds: one row per experiment name, strategy
-- plugin, config (the run's swept values except `seed`, as JSON) and metric. n counts the
-- values used (NaN is NULL and left out, counted in n_nan); variance is the sample variance
-- (NULL below two values). Standard error: sqrt(variance / n).
CREATE VIEW summary_stats AS
  WITH finished AS (
    SELECT r.name AS experiment,
           (SELECT value FROM params WHERE run_id = r.id AND key = 'strategy.plugin') AS strategy,
           json_remove(r.overrides, '$.seed') AS config, s.name AS metric, s.value AS value
    FROM runs AS r JOIN summaries AS s ON s.run_id = r.id
    WHERE r.status = 'finished'),
  grouped AS (
    SELECT experiment, strategy, config, metric, count(value) AS n,
           count(*) - count(value) AS n_nan, avg(value) AS mean, min(value) AS min,
           max(value) AS max
    FROM finished
    GROUP BY experiment, strategy, config, metric)
  SELECT g.experiment AS experiment, g.strategy AS strategy, g.config AS config,
         g.metric AS metric, g.n AS n, g.n_nan AS n_nan, g.mean AS mean,
         sum((f.value - g.mean) * (f.value - g.mean)) / (g.n - 1) AS variance, g.min AS min,
         g.max AS max
  FROM grouped AS g JOIN finished AS f
    ON f.experiment IS g.experiment AND f.strategy IS g.strategy AND f.config IS g.config
       AND f.metric = g.metric
  GROUP BY g.experiment, g.strategy, g.config, g.metric;
)sql",
    // 3 -> 4: which process a run is, beyond its pid (pids are reused, above all after a reboot).
    R"sql(
ALTER TABLE runs ADD COLUMN boot_id TEXT;
ALTER TABLE runs ADD COLUMN pid_start INTEGER;
)sql",
    // 4 -> 5: where a run was executed by a batch system ("slurm 123_4": job and array task).
    R"sql(
ALTER TABLE runs ADD COLUMN job TEXT;
)sql",
    // 5 -> 6: evaluations beyond accuracy (the counts behind every classification metric, the
    // confusion matrix among them) of the run's target splits and of `tlab eval` passes.
    R"sql(
-- counts: JSON {num_classes, confusion (row-major [label][predicted]), top_k, top_k_correct,
-- bin_count, bin_correct, bin_confidence}; dataset: the evaluated dataset table as TOML (NULL
-- for the run's own target); loss is NULL only for NaN.
CREATE TABLE evaluations (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  dataset TEXT,
  counts TEXT NOT NULL,
  loss REAL,
  created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX evaluations_run_name ON evaluations (run_id, name);
)sql",
    // 6 -> 7: how a sweep chose the run (sweeper, the draw's trial number, the distribution of
    // each swept value), JSON; NULL outside sweeps.
    R"sql(
ALTER TABLE runs ADD COLUMN search TEXT;
)sql",
    // 7 -> 8: one run on several processes ([run] processes): its world size, the c10d
    // backend and the collectives' timeout in seconds; NULL for a run on one process.
    R"sql(
ALTER TABLE runs ADD COLUMN processes INTEGER;
ALTER TABLE runs ADD COLUMN backend TEXT;
ALTER TABLE runs ADD COLUMN collective_timeout REAL;
)sql",
};
static_assert(std::size(kMigrations) == Store::kSchemaVersion, "one migration per schema version");

// Every status, in the order of the enum: its text is what the database stores.
constexpr std::pair<RunStatus, const char*> kRunStatuses[] = {{RunStatus::kQueued, "queued"},
                                                              {RunStatus::kRunning, "running"},
                                                              {RunStatus::kFinished, "finished"},
                                                              {RunStatus::kFailed, "failed"},
                                                              {RunStatus::kCrashed, "crashed"},
                                                              {RunStatus::kKilled, "killed"},
                                                              {RunStatus::kTimeout, "timeout"},
                                                              {RunStatus::kDiverged, "diverged"},
                                                              {RunStatus::kOom, "oom"},
                                                              {RunStatus::kLost, "lost"},
                                                              {RunStatus::kCancelled, "cancelled"},
                                                              {RunStatus::kNodeFail, "node_fail"},
                                                              {RunStatus::kPruned, "pruned"}};

/// The texts of the statuses, ", "-separated; only the terminal ones when `terminal_only`.
std::string run_statuses_text(bool terminal_only) {
  std::string text;
  for (const auto& [status, name] : kRunStatuses)
    if (!terminal_only || is_terminal(status))
      text += (text.empty() ? "" : ", ") + std::string(name);
  return text;
}

/// Throws StoreError unless `status` is terminal, listing the terminal statuses.
void require_terminal(RunStatus status) {
  if (is_terminal(status)) return;
  throw StoreError(fmt::format("'{}' is not a terminal run status; expected one of {}",
                               to_string(status), run_statuses_text(true)));
}

// Pause before retrying a busy write: grows from kFirstPause, capped at kMaxPause, plus up to
// half again of random jitter so that writers that collided do not collide again in lockstep.
constexpr std::chrono::milliseconds kFirstPause{10};
constexpr std::chrono::milliseconds kMaxPause{1000};

/// 128 random bits as 32 lowercase hex digits: a run id that stays unique across databases.
std::string new_uuid() {
  // Reseeded in a forked child, which would otherwise repeat its parent's numbers.
  static thread_local std::mt19937_64 rng;
  static thread_local pid_t seeded_for = 0;
  if (seeded_for != getpid()) {
    std::random_device device;
    std::seed_seq seq{device(), device(), device(), device(), static_cast<unsigned>(getpid())};
    rng.seed(seq);
    seeded_for = getpid();
  }
  return fmt::format("{:016x}{:016x}", rng(), rng());
}

/// Now as ISO-8601 UTC with milliseconds: "2026-11-23T12:00:00.123Z".
std::string utc_now() {
  const auto since_epoch = std::chrono::system_clock::now().time_since_epoch();
  const int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch).count();
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
}

}  // namespace

bool is_complete(RunStatus status) {
  return status == RunStatus::kFinished || status == RunStatus::kPruned;
}

std::string disk_full_text(const fs::path& db) {
  const fs::path folder = db.has_parent_path() ? db.parent_path() : fs::path(".");
  struct statvfs vfs {};
  if (::statvfs(folder.c_str(), &vfs) != 0) return "";
  const unsigned long long free_bytes =
      static_cast<unsigned long long>(vfs.f_bavail) * vfs.f_frsize;
  if (free_bytes >= (1u << 20)) return "";
  return fmt::format(
      "the disk holding '{}' is full ({} KiB free): free some space (results committed earlier "
      "are intact)",
      folder.string(), free_bytes >> 10);
}

namespace detail {

enum class TxMode { kRead, kWrite };

/// One SQLite connection with its cached prepared statements.
class Connection {
 public:
  /// `uri`: open this SQLite URI read-only instead of `path` read-write (Journal::kReadOnly).
  Connection(fs::path path, bool create, std::chrono::milliseconds busy_timeout,
             const std::string& uri = "")
      : path_(std::move(path)), busy_timeout_(busy_timeout), pid_(getpid()) {
    retry("opening the results database", [&] {
      const int flags = !uri.empty() ? SQLITE_OPEN_READONLY | SQLITE_OPEN_URI
                                     : SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
      db_.reset();
      db_ = std::make_unique<sqlite::Database>(uri.empty() ? path_.string() : uri, flags,
                                               busy_timeout_);
      // Per-connection settings. journal_mode=WAL is persistent and changes the file, so it is
      // set only once the file is known to be ours (prepare_schema).
      exec("PRAGMA foreign_keys = ON");
      exec("PRAGMA synchronous = NORMAL");
      // Reads through a memory map of the file (up to 256 MiB; larger files read the rest
      // with pread): no copy into SQLite's page cache, a fault per 64 KiB instead of a
      // read per 4 KiB page. `tlab results list` on 1,000 runs 63 -> 50 ms (docs/benchmarks.md).
      exec("PRAGMA mmap_size = 268435456");
    });
  }

  ~Connection() {
    if (getpid() != pid_) {
      // Inherited through fork(): closing it here could disturb the parent's locks and WAL
      // files, so the handles are leaked on purpose.
      for (auto& entry : statements_) entry.second.release();
      if (db_) db_->release();
      return;
    }
    statements_.clear();  // statements must be finalized before the connection closes
  }

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  const fs::path& path() const { return path_; }

  /// A prepared statement for `sql`, prepared once per connection and reused.
  sqlite3_stmt* statement(const std::string& sql) {
    auto found = statements_.find(sql);
    if (found != statements_.end()) return found->second.get();
    return statements_.emplace(sql, db_->prepare(sql, true)).first->second.get();
  }

  /// Runs one or more statements that return no rows.
  void exec(const std::string& sql) { db_->exec(sql); }

  /// The open connection.
  const sqlite::Database& database() const { return *db_; }

  /// Runs `body`; a busy or locked database rolls back and runs `body` again from the start, up
  /// to Store::kMaxAttempts times in all. Every other failure rolls back and throws StoreError
  /// saying that `what` failed.
  template <class Body>
  void retry(const std::string& what, Body&& body) {
    check_process(what);
    for (int attempt = 1;; ++attempt) {
      try {
        body();
        return;
      } catch (const sqlite::Failure& failure) {
        rollback();
        if (!sqlite::is_busy(failure.code()) || attempt >= Store::kMaxAttempts) {
          throw error(what, failure, attempt);
        }
      } catch (...) {
        rollback();
        throw;
      }
      pause_before_retry(attempt);
    }
  }

  /// Runs `body` in one transaction, retried whole while the database is busy. Write
  /// transactions start with BEGIN IMMEDIATE: taking the write lock up front lets the busy
  /// timeout wait for it, whereas a deferred transaction that reads and then writes fails at
  /// once with SQLITE_BUSY when another writer got in between.
  template <class Body>
  void transaction(TxMode mode, const std::string& what, Body&& body) {
    retry(what, [&] {
      exec(mode == TxMode::kWrite ? "BEGIN IMMEDIATE" : "BEGIN");
      body();
      exec("COMMIT");
    });
  }

  /// Number of rows the last INSERT, UPDATE or DELETE changed.
  int64_t changes() { return db_->changes(); }
  int64_t last_insert_rowid() { return db_->last_insert_rowid(); }

 private:
  void rollback() {
    if (db_) db_->rollback();
  }

  void check_process(const std::string& what) const {
    if (getpid() == pid_) return;
    throw StoreError(fmt::format(
        "{} in '{}' refused: this connection was opened by process {} and cannot be used in "
        "process {} after fork(); open a new Store in the child",
        what, path_.string(), pid_, getpid()));
  }

  static void pause_before_retry(int attempt) {
    const auto pause = std::min(kMaxPause, kFirstPause * (int64_t{1} << std::min(attempt - 1, 20)));
    // Seeded per call from the pid and the clock: a generator kept in a static would be copied
    // into forked children, which would then all draw the same jitter.
    std::minstd_rand random(static_cast<unsigned>(
        getpid() * 7919 + std::chrono::steady_clock::now().time_since_epoch().count()));
    std::uniform_int_distribution<int64_t> jitter(0, pause.count() / 2);
    std::this_thread::sleep_for(pause + std::chrono::milliseconds(jitter(random)));
  }

  StoreError error(const std::string& what, const sqlite::Failure& failure, int attempts) const {
    const std::string path = path_.string();
    const int code = failure.code();
    if ((code & 0xff) == SQLITE_NOTADB) {
      return StoreError(fmt::format(
          "'{}' is not an SQLite database ({}); pass another --db path or move the file away", path,
          failure.what()));
    }
    std::string message = fmt::format("{} in '{}' failed: {}", what, path, failure.what());
    if (sqlite::is_busy(code)) {
      message += fmt::format(
          " (still locked after {} attempts, each waiting {} ms for the lock); another process "
          "kept a write transaction open all that time: find it with `fuser '{}'`",
          attempts, busy_timeout_.count(), path);
    } else if (code == SQLITE_CONSTRAINT_FOREIGNKEY) {
      message += "; the run id is not in this database (create the run first)";
    } else if ((code & 0xff) == SQLITE_FULL) {
      message += "; the disk is full: free some space (results committed earlier are intact)";
    } else if ((code & 0xff) == SQLITE_READONLY) {
      message += read_only_hint();
    } else if ((code & 0xff) == SQLITE_CANTOPEN) {
      message += "; check that the folder exists and is writable, or pass another --db path";
    } else if ((code & 0xff) == SQLITE_CORRUPT) {
      message += fmt::format(
          "; the database is damaged: restore it from a backup or try `sqlite3 '{}' .recover`",
          path);
    } else if ((code & 0xff) == SQLITE_IOERR) {
      // SQLite reports a full disk as an I/O error where it maps its shared memory (-shm).
      const std::string full = disk_full_text(path_);
      message += full.empty() ? "; check the disk, and keep the database on a local filesystem"
                              : "; " + full;
    }
    return StoreError(message);
  }

  /// Why writing failed on a read-only database: a leftover -shm, -wal or -journal file this
  /// process cannot write (left by a reader with other rights, root for one), or the file or
  /// its folder.
  std::string read_only_hint() const {
    for (const char* suffix : {"-shm", "-wal", "-journal"}) {
      const std::string side = path_.string() + suffix;
      struct stat st {};
      if (::stat(side.c_str(), &st) != 0 || ::access(side.c_str(), W_OK) == 0) continue;
      const passwd* owner = ::getpwuid(st.st_uid);
      return fmt::format(
          "; '{}' is read-only to this process (owner {}, mode {:04o}): it was left by an "
          "earlier open with other rights (root's, or a read-only one); when no process has "
          "the database open, remove it (rm '{}') or give it to its user (chown)",
          side, owner ? owner->pw_name : std::to_string(st.st_uid), st.st_mode & 07777, side);
    }
    return "; the file or its folder is read-only: fix the permissions or pass another --db path";
  }

  fs::path path_;
  std::chrono::milliseconds busy_timeout_;
  pid_t pid_;  // the process that opened the connection
  std::unique_ptr<sqlite::Database> db_;
  // Declared after db_ so that the statements are finalized before the connection closes.
  std::unordered_map<std::string, sqlite::StatementHandle> statements_;
};

}  // namespace detail

namespace {

using detail::Connection;
using detail::TxMode;

/// One use of a cached prepared statement of `db`: bind, step, read columns (sqlite::Statement).
class Query : public sqlite::Statement {
 public:
  Query(Connection& db, const std::string& sql) : Statement(db.database(), db.statement(sql)) {}
};

// --- Schema ----------------------------------------------------------------------------------

struct SchemaState {
  int version = 0;
  int64_t application_id = 0;
  std::vector<std::string> objects;  // tables, indexes, views and triggers
  std::string not_ours;  // why the tables are not TransferLab's ("" when they are, or none)
};

// What a TransferLab database of any schema version has (version 1's tables and runs columns):
// how a file made before the application id existed is told from another application's.
std::string missing_tlab_tables(Connection& db, const std::vector<std::string>& objects) {
  for (const char* table : {"runs", "params", "metrics", "summaries", "run_plugins"})
    if (std::find(objects.begin(), objects.end(), table) == objects.end())
      return fmt::format("it has no table '{}'", table);
  std::vector<std::string> columns;
  Query info(db, "SELECT name FROM pragma_table_info('runs')");
  while (info.step()) columns.push_back(info.text_at(0));
  for (const char* column : {"experiment", "status", "config_toml", "config_hash", "overrides",
                             "run_dir", "tlab_version"})
    if (std::find(columns.begin(), columns.end(), column) == columns.end())
      return fmt::format("its table 'runs' has no column '{}'", column);
  return "";
}

SchemaState read_schema_state(Connection& db) {
  SchemaState state;
  Query version(db, "PRAGMA user_version");
  if (version.step()) state.version = static_cast<int>(version.int_at(0));
  Query application(db, "PRAGMA application_id");
  if (application.step()) state.application_id = application.int_at(0);
  Query objects(db, "SELECT name FROM sqlite_master ORDER BY name");
  while (objects.step()) state.objects.push_back(objects.text_at(0));
  if (state.version > 0 && state.application_id != Store::kApplicationId)
    state.not_ours = missing_tlab_tables(db, state.objects);
  return state;
}

void refuse_unusable(const Connection& db, const SchemaState& state) {
  const std::string path = db.path().string();
  if (state.application_id != 0 && state.application_id != Store::kApplicationId) {
    throw StoreError(fmt::format(
        "'{}' belongs to another application (SQLite application_id {:#010x}; TransferLab's is "
        "{:#010x}): tlab leaves it unchanged; pass another --db path",
        path, static_cast<uint32_t>(state.application_id),
        static_cast<uint32_t>(Store::kApplicationId)));
  }
  if (!state.not_ours.empty()) {
    throw StoreError(fmt::format(
        "'{}' is not a TransferLab results database: it has schema version {} but {} (another "
        "application's file?); tlab leaves it unchanged; pass another --db path",
        path, state.version, state.not_ours));
  }
  if (state.version > Store::kSchemaVersion || state.version < 0) {
    throw StoreError(fmt::format(
        "'{}' has results schema version {} but this tlab reads schema version {} (and older); "
        "upgrade tlab to open it, or pass another --db path",
        path, state.version, Store::kSchemaVersion));
  }
  if (state.version == 0 && !state.objects.empty()) {
    std::string names;
    for (size_t i = 0; i < state.objects.size() && i < 5; ++i) {
      names += fmt::format("{}'{}'", i == 0 ? "" : ", ", state.objects[i]);
    }
    if (state.objects.size() > 5) names += ", ...";
    throw StoreError(fmt::format(
        "'{}' is not a TransferLab results database (it holds {} and has schema version 0); "
        "pass another --db path or move the file away",
        path, names));
  }
}

/// Checks that the file is an SQLite database that this tlab can use, switches it to WAL and
/// migrates it to Store::kSchemaVersion. A refused file is left untouched.
void prepare_schema(Connection& db, Store::Journal journal) {
  SchemaState state;
  db.transaction(TxMode::kRead, "reading the schema version",
                 [&] { state = read_schema_state(db); });
  refuse_unusable(db, state);
  if (journal == Store::Journal::kReadOnly) {
    if (state.version != Store::kSchemaVersion)
      throw StoreError(fmt::format(
          "'{}' has results schema version {} and can only be read here (no write access), so "
          "it cannot be migrated to version {}; run a tlab command on it once where it can be "
          "written, or copy it to a writable folder",
          db.path().string(), state.version, Store::kSchemaVersion));
    return;
  }

  std::string mode;
  const bool wal = journal == Store::Journal::kWal;
  db.retry(wal ? "switching to WAL journal mode" : "switching to rollback journal mode", [&] {
    Query query(db, wal ? "PRAGMA journal_mode = WAL" : "PRAGMA journal_mode = DELETE");
    mode = query.step() ? query.text_at(0) : "";
  });
  if (!wal && mode != "delete") {
    throw StoreError(fmt::format(
        "'{}' could not be switched to rollback journal mode (it stays in '{}' mode); another "
        "process has it open in WAL mode: wait until it ends",
        db.path().string(), mode));
  }
  if (wal && mode != "wal") {
    throw StoreError(fmt::format(
        "'{}' could not be switched to WAL journal mode (it stays in '{}' mode); WAL needs "
        "shared memory, so keep the database on a local filesystem",
        db.path().string(), mode));
  }
  if (state.version == Store::kSchemaVersion) return;

  const std::string what = fmt::format("migrating the schema from version {} to {}", state.version,
                                       Store::kSchemaVersion);
  db.transaction(TxMode::kWrite, what, [&] {
    // Read again under the write lock: another process may have migrated meanwhile.
    const SchemaState locked = read_schema_state(db);
    refuse_unusable(db, locked);
    for (int version = locked.version; version < Store::kSchemaVersion; ++version) {
      db.exec(kMigrations[version]);
    }
    db.exec(fmt::format("PRAGMA user_version = {}", Store::kSchemaVersion));
    db.exec(fmt::format("PRAGMA application_id = {}", Store::kApplicationId));
  });
}

// --- Params ----------------------------------------------------------------------------------

/// Checks that the declared type of `param` is known and matches the value it holds.
void check_param(const ParamEntry& param) {
  size_t expected = 0;  // index of the ParamValue alternative the type needs
  if (param.type == "bool") {
    expected = 0;
  } else if (param.type == "int") {
    expected = 1;
  } else if (param.type == "float") {
    expected = 2;
  } else if (param.type == "string" || param.type == "list" || param.type == "table") {
    expected = 3;
  } else {
    throw StoreError(fmt::format(
        "param '{}' has type '{}'; expected one of bool, int, float, string, list, table",
        param.key, param.type));
  }
  if (param.value.index() != expected) {
    constexpr const char* kHeld[] = {"a bool", "an int", "a float", "a string"};
    throw StoreError(fmt::format("param '{}' has type '{}' but holds {}", param.key, param.type,
                                 kHeld[param.value.index()]));
  }
}

void bind_param_value(Query& query, int index, const ParamValue& value) {
  switch (value.index()) {
    case 0:
      query.bind_int(index, std::get<bool>(value) ? 1 : 0);
      break;
    case 1:
      query.bind_int(index, std::get<int64_t>(value));
      break;
    case 2:
      query.bind_real(index, std::get<double>(value));
      break;
    default:
      query.bind_text(index, std::get<std::string>(value));
      break;
  }
}

ParamValue read_param_value(const Query& query, int column, const std::string& type) {
  switch (query.type_at(column)) {
    case SQLITE_INTEGER:
      if (type == "bool") return query.int_at(column) != 0;
      return query.int_at(column);
    case SQLITE_FLOAT:
    case SQLITE_NULL:  // a NaN float
      return query.real_at(column);
    default:
      return query.text_at(column);
  }
}

}  // namespace

const char* to_string(RunStatus status) {
  for (const auto& [value, name] : kRunStatuses)
    if (value == status) return name;
  assert(false && "a RunStatus without a text in kRunStatuses");
  return "unknown";
}

std::ostream& operator<<(std::ostream& out, RunStatus status) { return out << to_string(status); }

RunStatus parse_run_status(const std::string& text) {
  for (const auto& [status, name] : kRunStatuses)
    if (text == name) return status;
  throw StoreError(fmt::format(
      "'{}' is not a run status; expected one of {} (a database written by a newer tlab? read it "
      "with that tlab)",
      text, run_statuses_text(false)));
}

bool is_terminal(RunStatus status) {
  return status != RunStatus::kQueued && status != RunStatus::kRunning;
}

std::string param_text(const ParamValue& value) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>)
          return x ? "true" : "false";
        else if constexpr (std::is_same_v<T, std::string>)
          return x;
        else
          return fmt::format("{}", x);
      },
      value);
}

// --- Store -----------------------------------------------------------------------------------

Store::Store(const fs::path& path, bool create, std::chrono::milliseconds busy_timeout,
             Journal journal) {
  std::error_code ec;
  if (!create && !fs::exists(path, ec)) {
    throw StoreError(fmt::format(
        "results database '{}' does not exist; check the --db path (nothing was created)",
        path.string()));
  }
  if (create && path.has_parent_path() && !fs::create_directories(path.parent_path(), ec) && ec) {
    throw StoreError(
        fmt::format("cannot create the folder '{}' for the results database: {}; "
                    "check permissions or pass another --db path",
                    path.parent_path().string(), ec.message()));
  }
  if (journal != Journal::kReadOnly) {
    db_ = std::make_unique<detail::Connection>(path, create, busy_timeout);
    prepare_schema(*db_, journal);
    return;
  }
  // Read-only: "mode=ro" first (it still sees a WAL file's recent commits); a WAL database in a
  // folder where its -shm cannot be created needs "immutable=1", which reads the file as it is.
  std::string escaped;
  for (char c : fs::absolute(path, ec).string())
    escaped += c == '%' ? "%25" : c == '?' ? "%3f" : c == '#' ? "%23" : std::string(1, c);
  try {
    db_ = std::make_unique<detail::Connection>(path, false, busy_timeout,
                                               "file:" + escaped + "?mode=ro");
    prepare_schema(*db_, journal);
  } catch (const StoreError& first) {
    if (std::string(first.what()).find("schema version") != std::string::npos ||
        std::string(first.what()).find("TransferLab") != std::string::npos ||
        std::string(first.what()).find("another application") != std::string::npos)
      throw;  // refused for what it holds, not for how it was opened
    db_ = std::make_unique<detail::Connection>(path, false, busy_timeout,
                                               "file:" + escaped + "?immutable=1");
    prepare_schema(*db_, journal);
  }
}

Store::~Store() = default;
Store::Store(Store&&) noexcept = default;
Store& Store::operator=(Store&&) noexcept = default;

const fs::path& Store::path() const {
  assert(db_ && "Store used after being moved from");
  return db_->path();
}

int64_t Store::create_run(const NewRun& run, int64_t* same_key) {
  assert(db_ && "Store used after being moved from");
  for (const ParamEntry& param : run.params) check_param(param);
  if (run.git_dirty < -1 || run.git_dirty > 1) {
    throw StoreError(
        fmt::format("git_dirty of run '{}' is {}; expected -1, 0 or 1", run.name, run.git_dirty));
  }
  const std::string overrides = run.overrides.empty() ? "{}" : run.overrides;
  const auto parsed = nlohmann::json::parse(overrides, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) {
    throw StoreError(
        fmt::format("overrides of run '{}' are not a JSON object: '{}'", run.name, overrides));
  }

  if (!run.search.empty() &&
      !nlohmann::json::parse(run.search, nullptr, /*allow_exceptions=*/false).is_object())
    throw StoreError(
        fmt::format("search of run '{}' is not a JSON object: '{}'", run.name, run.search));
  if (run.status != RunStatus::kRunning && run.status != RunStatus::kQueued) {
    throw StoreError(fmt::format("a new run's status is '{}'; expected 'running' or 'queued'",
                                 to_string(run.status)));
  }
  const std::string uuid = run.uuid.empty() ? new_uuid() : run.uuid;

  int64_t id = 0;
  db_->transaction(TxMode::kWrite, fmt::format("recording the new run '{}'", run.name), [&] {
    id = 0;
    if (same_key && !run.run_key.empty()) {
      Query same(*db_,
                 "SELECT id FROM runs WHERE run_key = ?1 AND (status IN ('finished', 'pruned') OR "
                 "(status IN ('queued', 'running') AND COALESCE(sweep, '') <> ?2)) "
                 "ORDER BY status IN ('finished', 'pruned') DESC, id DESC LIMIT 1");
      same.bind_text(1, run.run_key).bind_text(2, run.sweep);
      if (same.step()) {
        *same_key = same.int_at(0);
        return;
      }
    }
    const std::string now = utc_now();
    Query insert(*db_,
                 "INSERT INTO runs (experiment, name, status, created_at, started_at, "
                 "heartbeat_at, host, pid, device, seed, git_commit, git_dirty, config_toml, "
                 "config_hash, overrides, run_dir, tlab_version, uuid, run_key, sweep, "
                 "override_args, gpu, boot_id, pid_start, search, processes, backend, "
                 "collective_timeout) "
                 "VALUES (?1, ?2, ?15, ?3, CASE WHEN ?15 = 'running' THEN ?3 END, ?3, ?4, ?5, ?6, "
                 "?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, "
                 "?24, ?25, ?26)");
    if (run.processes > 1) {
      insert.bind_int(24, run.processes).bind_text(25, run.backend);
      insert.bind_real(26, run.collective_timeout);
    }
    insert.bind_text(15, to_string(run.status))
        .bind_text(16, uuid)
        .bind_text_or_null(17, run.run_key);
    insert.bind_text_or_null(18, run.sweep);
    insert.bind_text(19, nlohmann::json(run.override_args).dump());
    insert.bind_text_or_null(20, run.gpu).bind_text_or_null(21, run.boot_id);
    if (run.pid_start >= 0) insert.bind_int(22, run.pid_start);
    insert.bind_text_or_null(23, run.search);
    insert.bind_text(1, run.experiment).bind_text(2, run.name).bind_text(3, now);
    insert.bind_text_or_null(4, run.host);
    if (run.pid != 0) insert.bind_int(5, run.pid);
    insert.bind_text_or_null(6, run.device).bind_int(7, run.seed);
    insert.bind_text_or_null(8, run.git_commit);
    if (run.git_dirty >= 0) insert.bind_int(9, run.git_dirty);
    insert.bind_text_or_null(10, run.config_toml).bind_text_or_null(11, run.config_hash);
    insert.bind_text(12, overrides).bind_text_or_null(13, run.run_dir);
    insert.bind_text_or_null(14, run.tlab_version);
    insert.run();
    id = db_->last_insert_rowid();

    Query param(*db_, "INSERT INTO params (run_id, key, value, type) VALUES (?, ?, ?, ?)");
    param.bind_int(1, id);
    for (const ParamEntry& entry : run.params) {
      param.bind_text(2, entry.key).bind_text(4, entry.type);
      bind_param_value(param, 3, entry.value);
      param.run();
    }
  });
  return id;
}

void Store::add_plugins(int64_t run, const std::vector<PluginRecord>& plugins) {
  assert(db_ && "Store used after being moved from");
  if (plugins.empty()) return;
  db_->transaction(TxMode::kWrite, fmt::format("recording the plugins of run {}", run), [&] {
    Query insert(*db_,
                 "INSERT INTO run_plugins (run_id, kind, name, version, path, file_hash) "
                 "VALUES (?, ?, ?, ?, ?, ?)");
    insert.bind_int(1, run);
    for (const PluginRecord& plugin : plugins) {
      insert.bind_text(2, plugin.kind).bind_text(3, plugin.name);
      insert.bind_text_or_null(4, plugin.version).bind_text_or_null(5, plugin.path);
      insert.bind_text_or_null(6, plugin.file_hash);
      insert.run();
    }
  });
}

void Store::write_metrics(int64_t run, const std::vector<MetricRow>& rows) {
  assert(db_ && "Store used after being moved from");
  if (rows.empty()) return;
  db_->transaction(
      TxMode::kWrite, fmt::format("writing {} metric rows for run {}", rows.size(), run), [&] {
        Query insert(*db_,
                     "INSERT INTO metrics (run_id, name, step, epoch, value, wall_time) "
                     "VALUES (?, ?, ?, ?, ?, ?)");
        insert.bind_int(1, run);
        for (const MetricRow& row : rows) {
          insert.bind_text(2, row.name).bind_int(3, row.step).bind_int(4, row.epoch);
          insert.bind_real(5, row.value).bind_real(6, row.wall_time);
          insert.run();
        }
      });
}

void Store::write_summaries(int64_t run,
                            const std::vector<std::pair<std::string, double>>& values) {
  assert(db_ && "Store used after being moved from");
  if (values.empty()) return;
  db_->transaction(TxMode::kWrite, fmt::format("writing the summaries of run {}", run), [&] {
    Query upsert(*db_,
                 "INSERT INTO summaries (run_id, name, value) VALUES (?, ?, ?) "
                 "ON CONFLICT (run_id, name) DO UPDATE SET value = excluded.value");
    upsert.bind_int(1, run);
    for (const auto& [name, value] : values) {
      upsert.bind_text(2, name).bind_real(3, value);
      upsert.run();
    }
  });
}

void Store::heartbeat(int64_t run) {
  assert(db_ && "Store used after being moved from");
  const std::string what = fmt::format("recording a heartbeat of run {}", run);
  int64_t changed = 0;
  db_->transaction(TxMode::kWrite, what, [&] {
    Query update(*db_, "UPDATE runs SET heartbeat_at = ? WHERE id = ?");
    update.bind_text(1, utc_now()).bind_int(2, run).run();
    changed = db_->changes();
  });
  if (changed == 0) {
    throw StoreError(
        fmt::format("{} in '{}' failed: there is no run {}", what, db_->path().string(), run));
  }
}

void Store::finish_run(int64_t run, RunStatus status, const std::string& reason) {
  assert(db_ && "Store used after being moved from");
  const std::string text = to_string(status);
  require_terminal(status);
  const std::string what = fmt::format("recording status '{}' of run {}", text, run);
  int64_t changed = 0;
  db_->transaction(TxMode::kWrite, what, [&] {
    Query update(*db_, "UPDATE runs SET status = ?, reason = ?, ended_at = ? WHERE id = ?");
    update.bind_text(1, text).bind_text_or_null(2, reason).bind_text(3, utc_now());
    update.bind_int(4, run).run();
    changed = db_->changes();
  });
  if (changed == 0) {
    throw StoreError(
        fmt::format("{} in '{}' failed: there is no run {}", what, db_->path().string(), run));
  }
}

bool Store::finish_open_run(int64_t run, RunStatus status, const std::string& reason) {
  assert(db_ && "Store used after being moved from");
  const std::string text = to_string(status);
  require_terminal(status);
  int64_t changed = 0;
  db_->transaction(TxMode::kWrite, fmt::format("recording status '{}' of run {}", text, run), [&] {
    Query update(*db_,
                 "UPDATE runs SET status = ?, reason = ?, ended_at = ? "
                 "WHERE id = ? AND status IN ('queued', 'running')");
    update.bind_text(1, text).bind_text_or_null(2, reason);
    update.bind_text(3, utc_now()).bind_int(4, run).run();
    changed = db_->changes();
  });
  return changed > 0;
}

bool Store::start_run(int64_t run, int64_t pid, const std::string& device, const std::string& gpu,
                      const std::string& boot_id, int64_t pid_start, const std::string& host) {
  assert(db_ && "Store used after being moved from");
  int64_t changed = 0;
  db_->transaction(TxMode::kWrite, fmt::format("starting run {}", run), [&] {
    const std::string now = utc_now();
    Query update(*db_,
                 "UPDATE runs SET status = 'running', started_at = ?1, heartbeat_at = ?1, "
                 "pid = ?2, device = ?3, gpu = ?5, boot_id = ?6, pid_start = ?7, "
                 "host = COALESCE(?8, host) WHERE id = ?4 AND status = 'queued'");
    update.bind_text(1, now).bind_int(2, pid).bind_text_or_null(3, device).bind_int(4, run);
    update.bind_text_or_null(5, gpu).bind_text_or_null(6, boot_id);
    if (pid_start >= 0) update.bind_int(7, pid_start);
    update.bind_text_or_null(8, host);
    update.run();
    changed = db_->changes();
  });
  return changed > 0;
}

void Store::set_job(int64_t run, const std::string& job) {
  assert(db_ && "Store used after being moved from");
  db_->transaction(TxMode::kWrite, fmt::format("recording the job of run {}", run), [&] {
    Query update(*db_, "UPDATE runs SET job = ? WHERE id = ?");
    update.bind_text_or_null(1, job).bind_int(2, run).run();
  });
}

void Store::record_exit(int64_t run, int64_t exit_code, int64_t signal,
                        const std::string& stderr_tail) {
  assert(db_ && "Store used after being moved from");
  db_->transaction(TxMode::kWrite, fmt::format("recording how run {} ended", run), [&] {
    Query update(*db_, "UPDATE runs SET exit_code = ?, signal = ?, stderr_tail = ? WHERE id = ?");
    if (exit_code >= 0) update.bind_int(1, exit_code);
    if (signal >= 0) update.bind_int(2, signal);
    update.bind_text_or_null(3, stderr_tail).bind_int(4, run).run();
  });
}

RunRecord Store::run(int64_t id) {
  assert(db_ && "Store used after being moved from");
  RunRecord r;
  bool found = false;
  db_->transaction(TxMode::kRead, fmt::format("reading run {}", id), [&] {
    Query q(*db_,
            "SELECT id, uuid, experiment, name, status, reason, created_at, started_at, ended_at, "
            "heartbeat_at, host, pid, device, seed, git_commit, git_dirty, config_toml, "
            "config_hash, overrides, run_dir, tlab_version, run_key, sweep, override_args, gpu, "
            "exit_code, signal, stderr_tail, job, search, processes, backend, collective_timeout "
            "FROM runs WHERE id = ?");
    q.bind_int(1, id);
    found = q.step();
    if (!found) return;
    auto int_or = [&](int column) {
      return q.type_at(column) == SQLITE_NULL ? int64_t{-1} : q.int_at(column);
    };
    r.id = q.int_at(0);
    r.uuid = q.text_at(1);
    r.experiment = q.text_at(2);
    r.name = q.text_at(3);
    r.status = q.text_at(4);
    r.reason = q.text_at(5);
    r.created_at = q.text_at(6);
    r.started_at = q.text_at(7);
    r.ended_at = q.text_at(8);
    r.heartbeat_at = q.text_at(9);
    r.host = q.text_at(10);
    r.pid = int_or(11);
    r.device = q.text_at(12);
    r.seed = int_or(13);
    r.git_commit = q.text_at(14);
    r.git_dirty = int_or(15);
    r.config_toml = q.text_at(16);
    r.config_hash = q.text_at(17);
    r.overrides = q.text_at(18);
    r.run_dir = q.text_at(19);
    r.tlab_version = q.text_at(20);
    r.run_key = q.text_at(21);
    r.sweep = q.text_at(22);
    const auto args = nlohmann::json::parse(q.text_at(23), nullptr, false);
    if (args.is_array())
      for (const auto& a : args)
        if (a.is_string()) r.override_args.push_back(a.get<std::string>());
    r.gpu = q.text_at(24);
    r.exit_code = int_or(25);
    r.signal = int_or(26);
    r.stderr_tail = q.text_at(27);
    r.job = q.text_at(28);
    r.search = q.text_at(29);
    r.processes = q.type_at(30) == SQLITE_NULL ? 1 : q.int_at(30);
    r.backend = q.text_at(31);
    if (q.type_at(32) != SQLITE_NULL) r.collective_timeout = q.real_at(32);
  });
  if (!found) {
    throw StoreError(
        fmt::format("there is no run {} in '{}'; `tlab results list` shows the runs there are", id,
                    db_->path().string()));
  }
  return r;
}

std::vector<std::pair<int64_t, std::string>> Store::searches() {
  assert(db_ && "Store used after being moved from");
  std::vector<std::pair<int64_t, std::string>> out;
  db_->transaction(TxMode::kRead, "reading how sweeps chose their runs", [&] {
    out.clear();
    Query q(*db_, "SELECT id, search FROM runs WHERE search IS NOT NULL ORDER BY id");
    while (q.step()) out.emplace_back(q.int_at(0), q.text_at(1));
  });
  return out;
}

std::vector<double> Store::rung_values(const std::string& bracket, const std::string& name,
                                       int64_t epoch) {
  assert(db_ && "Store used after being moved from");
  std::vector<double> values;
  db_->transaction(TxMode::kRead, "reading the runs' values at an ASHA rung", [&] {
    values.clear();
    Query q(*db_,
            "SELECT m.value FROM metrics AS m JOIN runs AS r ON r.id = m.run_id "
            "WHERE m.name = ?1 AND m.epoch = ?2 AND r.search IS NOT NULL "
            "AND json_extract(r.search, '$.bracket') = ?3");
    q.bind_text(1, name).bind_int(2, epoch).bind_text(3, bracket);
    while (q.step()) values.push_back(q.real_at(0));
  });
  return values;
}

int64_t Store::finished_run_with_key(const std::string& run_key) {
  assert(db_ && "Store used after being moved from");
  int64_t id = 0;
  db_->transaction(TxMode::kRead, "looking up a finished run by its key", [&] {
    Query q(*db_,
            "SELECT id FROM runs WHERE run_key = ? AND status IN ('finished', 'pruned') "
            "ORDER BY id DESC LIMIT 1");
    q.bind_text(1, run_key);
    id = q.step() ? q.int_at(0) : 0;
  });
  return id;
}

std::vector<OpenRun> Store::open_runs(const std::string& host) {
  assert(db_ && "Store used after being moved from");
  std::vector<OpenRun> runs;
  db_->transaction(TxMode::kRead, "listing queued and running runs", [&] {
    runs.clear();
    Query q(*db_,
            "SELECT id, pid, status, (julianday('now') - julianday(COALESCE(heartbeat_at, "
            "created_at))) * 86400.0, boot_id, pid_start FROM runs "
            "WHERE status IN ('queued', 'running') AND host = ? ORDER BY id");
    q.bind_text(1, host);
    while (q.step()) {
      runs.push_back({q.int_at(0), q.type_at(1) == SQLITE_NULL ? int64_t{-1} : q.int_at(1),
                      q.text_at(2), q.real_at(3), q.text_at(4),
                      q.type_at(5) == SQLITE_NULL ? int64_t{-1} : q.int_at(5)});
    }
  });
  return runs;
}

namespace {

constexpr const char* kRunColumns =
    "id, name, status, reason, started_at, ended_at, device, seed, uuid, host, run_key, "
    "experiment, created_at";

// The runs columns (kRunColumns) of the current row of `run` into `row`.
void fill_run_row(const Query& run, RunSummaryRow& row) {
  row.id = run.int_at(0);
  row.name = run.text_at(1);
  row.status = run.text_at(2);
  row.reason = run.text_at(3);
  row.started_at = run.text_at(4);
  row.ended_at = run.text_at(5);
  row.device = run.text_at(6);
  row.seed = run.int_at(7);
  row.uuid = run.text_at(8);
  row.host = run.text_at(9);
  row.run_key = run.text_at(10);
  row.experiment = run.text_at(11);
  row.created_at = run.text_at(12);
}

// Columns (run_id,) key, value, type of a params query starting at `first`.
ParamEntry read_param_row(const Query& params, int first) {
  std::string type = params.text_at(first + 2);
  ParamValue value = read_param_value(params, first + 1, type);
  return {params.text_at(first), std::move(value), std::move(type)};
}

}  // namespace

std::vector<RunSummaryRow> Store::list_runs(const std::vector<int64_t>& ids) {
  assert(db_ && "Store used after being moved from");
  std::vector<RunSummaryRow> rows;
  if (ids.empty()) {
    for_each_run([&](RunSummaryRow& row) { rows.push_back(row); });  // exact-size copies
    return rows;
  }
  std::vector<int64_t> missing;
  // One read transaction: a consistent snapshot even while other processes write.
  db_->transaction(TxMode::kRead, "listing runs", [&] {
    rows.clear();
    missing.clear();
    rows.reserve(ids.size());
    for (int64_t id : ids) {
      Query run(*db_, std::string("SELECT ") + kRunColumns + " FROM runs WHERE id = ?");
      run.bind_int(1, id);
      if (!run.step()) {
        missing.push_back(id);
        continue;
      }
      RunSummaryRow row;
      fill_run_row(run, row);
      Query params(*db_, "SELECT key, value, type FROM params WHERE run_id = ? ORDER BY key");
      params.bind_int(1, id);
      while (params.step()) row.params.push_back(read_param_row(params, 0));
      Query summaries(*db_, "SELECT name, value FROM summaries WHERE run_id = ? ORDER BY name");
      summaries.bind_int(1, id);
      while (summaries.step())
        row.summaries.emplace_back(summaries.text_at(0), summaries.real_at(1));
      rows.push_back(std::move(row));
    }
  });
  if (!missing.empty()) {
    std::string list;
    for (int64_t id : missing) list += fmt::format("{}{}", list.empty() ? "" : ", ", id);
    throw StoreError(
        fmt::format("listing runs in '{}' failed: there is no run {}; `tlab results "
                    "list` shows the runs there are",
                    db_->path().string(), list));
  }
  return rows;
}

void Store::for_each_run(const std::function<void(RunSummaryRow&)>& visit) {
  assert(db_ && "Store used after being moved from");
  // Three cursors in run id order (runs by its key, params and summaries by their primary-key
  // index), merged: each run's rows are read once, into one reused row. Should the read be
  // retried (a busy database), it resumes after the last run visited: none is visited twice.
  int64_t visited = std::numeric_limits<int64_t>::min();
  db_->transaction(TxMode::kRead, "listing runs", [&] {
    Query run(*db_, std::string("SELECT ") + kRunColumns + " FROM runs WHERE id > ? ORDER BY id");
    Query params(*db_,
                 "SELECT run_id, key, value, type FROM params WHERE run_id > ? "
                 "ORDER BY run_id, key");
    Query summaries(*db_,
                    "SELECT run_id, name, value FROM summaries WHERE run_id > ? "
                    "ORDER BY run_id, name");
    run.bind_int(1, visited);
    params.bind_int(1, visited);
    summaries.bind_int(1, visited);
    bool param = params.step(), summary = summaries.step();
    RunSummaryRow row;
    while (run.step()) {
      row.params.clear();
      row.summaries.clear();
      fill_run_row(run, row);
      while (param && params.int_at(0) < row.id) param = params.step();  // rows of no run
      for (; param && params.int_at(0) == row.id; param = params.step())
        row.params.push_back(read_param_row(params, 1));
      while (summary && summaries.int_at(0) < row.id) summary = summaries.step();
      for (; summary && summaries.int_at(0) == row.id; summary = summaries.step())
        row.summaries.emplace_back(summaries.text_at(1), summaries.real_at(2));
      visited = row.id;
      visit(row);
    }
  });
}

std::vector<MetricRow> Store::metrics(int64_t run, const std::string& name) {
  assert(db_ && "Store used after being moved from");
  std::vector<MetricRow> rows;
  db_->transaction(TxMode::kRead, fmt::format("reading the metrics of run {}", run), [&] {
    rows.clear();
    Query select(*db_, name.empty() ? "SELECT name, step, epoch, value, wall_time FROM metrics "
                                      "WHERE run_id = ? ORDER BY step, rowid"
                                    : "SELECT name, step, epoch, value, wall_time FROM metrics "
                                      "WHERE run_id = ? AND name = ? ORDER BY step, rowid");
    select.bind_int(1, run);
    if (!name.empty()) select.bind_text(2, name);
    while (select.step()) {
      rows.push_back({select.text_at(0), select.int_at(1), select.int_at(2), select.real_at(3),
                      select.real_at(4)});
    }
  });
  return rows;
}

std::vector<PluginRecord> Store::plugins(int64_t run) {
  assert(db_ && "Store used after being moved from");
  std::vector<PluginRecord> records;
  db_->transaction(TxMode::kRead, fmt::format("reading the plugins of run {}", run), [&] {
    records.clear();
    Query select(*db_,
                 "SELECT kind, name, version, path, file_hash FROM run_plugins "
                 "WHERE run_id = ? ORDER BY rowid");
    select.bind_int(1, run);
    while (select.step()) {
      records.push_back({select.text_at(0), select.text_at(1), select.text_at(2), select.text_at(3),
                         select.text_at(4)});
    }
  });
  return records;
}

void Store::write_evaluation(const EvaluationRecord& e,
                             const std::vector<std::pair<std::string, double>>& summaries) {
  assert(db_ && "Store used after being moved from");
  db_->transaction(
      TxMode::kWrite, fmt::format("writing evaluation '{}' of run {}", e.name, e.run_id), [&] {
        Query erase(*db_, "DELETE FROM evaluations WHERE run_id = ? AND name = ?");
        erase.bind_int(1, e.run_id).bind_text(2, e.name).run();
        // The summaries of an earlier evaluation of this name go with it (its metric list may
        // have been longer).
        Query erase_summaries(*db_,
                              "DELETE FROM summaries WHERE run_id = ? AND substr(name, 1, ?) = ?");
        erase_summaries.bind_int(1, e.run_id)
            .bind_int(2, static_cast<int64_t>(e.name.size() + 1))
            .bind_text(3, e.name + "/")
            .run();
        Query insert(*db_,
                     "INSERT INTO evaluations (run_id, name, dataset, counts, loss, created_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)");
        insert.bind_int(1, e.run_id).bind_text(2, e.name);
        if (e.dataset.empty())
          insert.bind_null(3);
        else
          insert.bind_text(3, e.dataset);
        insert.bind_text(4, e.counts).bind_real(5, e.loss);
        insert.bind_text(6, e.created_at.empty() ? utc_now() : e.created_at).run();
        Query upsert(*db_,
                     "INSERT INTO summaries (run_id, name, value) VALUES (?, ?, ?) "
                     "ON CONFLICT (run_id, name) DO UPDATE SET value = excluded.value");
        upsert.bind_int(1, e.run_id);
        for (const auto& [name, value] : summaries) {
          upsert.bind_text(2, name).bind_real(3, value);
          upsert.run();
        }
      });
}

std::vector<EvaluationRecord> Store::evaluations(int64_t run) {
  assert(db_ && "Store used after being moved from");
  std::vector<EvaluationRecord> records;
  db_->transaction(TxMode::kRead, fmt::format("reading the evaluations of run {}", run), [&] {
    records.clear();
    Query select(*db_,
                 "SELECT name, coalesce(dataset, ''), counts, loss, created_at FROM evaluations "
                 "WHERE run_id = ? ORDER BY name");
    select.bind_int(1, run);
    while (select.step()) {
      EvaluationRecord e;
      e.run_id = run;
      e.name = select.text_at(0);
      e.dataset = select.text_at(1);
      e.counts = select.text_at(2);
      e.loss = select.real_at(3);
      e.created_at = select.text_at(4);
      records.push_back(std::move(e));
    }
  });
  return records;
}

std::string Store::integrity_check() {
  assert(db_ && "Store used after being moved from");
  std::vector<std::string> problems;
  db_->transaction(TxMode::kRead, "checking integrity", [&] {
    problems.clear();
    Query integrity(*db_, "PRAGMA integrity_check");
    while (integrity.step()) {
      std::string line = integrity.text_at(0);
      if (line != "ok") problems.push_back(std::move(line));
    }
    Query foreign(*db_, "PRAGMA foreign_key_check");
    while (foreign.step()) {
      problems.push_back(fmt::format("row {} of '{}' refers to a missing row of '{}'",
                                     foreign.int_at(1), foreign.text_at(0), foreign.text_at(2)));
    }
  });
  if (problems.empty()) return "ok";
  std::string report;
  for (const std::string& problem : problems) {
    if (!report.empty()) report += '\n';
    report += problem;
  }
  return report;
}

}  // namespace tlab
