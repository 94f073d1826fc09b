#include "results/merge.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <thread>

// Relative: tlab_results does not have the SDK's include folder on its include path (yet).
#include "store/sqlite.hpp"
#include "store/store.hpp"
#include "tlab/sdk/files.hpp"

namespace tlab {
namespace fs = std::filesystem;

namespace {

using sqlite::Failure;
using sqlite::is_busy;

/// A plain connection to `path` opened as an SQLite URI with `query` ("mode=ro" or "").
class Db : public sqlite::Database {
 public:
  Db(const fs::path& path, const std::string& query, int flags)
      : Database(sqlite::uri(path, query), flags | SQLITE_OPEN_URI, Store::kBusyTimeout) {}
};

std::string sql_name(const std::string& identifier) {
  std::string out = "\"";
  for (const char c : identifier) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

/// What a file holds, as far as merging cares.
struct Inspection {
  enum Kind { kMissing, kNotSqlite, kUnreadable, kOurs, kForeign, kEmpty } kind = kMissing;
  int version = 0;
  std::vector<std::string> objects;  // up to 6 table names, for the message
  std::string detail;                // why, when kNotSqlite or kUnreadable
};

/// Looks at `path` read-only, without changing it.
Inspection inspect(const fs::path& path) {
  Inspection result;
  std::error_code ec;
  if (!fs::exists(path, ec)) return result;
  if (!fs::is_regular_file(path, ec)) {
    result.kind = Inspection::kNotSqlite;
    result.detail = "not a regular file";
    return result;
  }
  if (fs::file_size(path, ec) == 0 && !ec) {
    result.kind = Inspection::kEmpty;
    return result;
  }
  // SQLite reads a file lazily and accepts anything until the first query; the header says
  // at once whether the file is an SQLite database at all, before any -wal file is made.
  char header[16] = {};
  std::ifstream file(path, std::ios::binary);
  file.read(header, sizeof header);
  if (file.gcount() != sizeof header || std::memcmp(header, "SQLite format 3", 16) != 0) {
    result.kind = Inspection::kNotSqlite;
    result.detail = "it does not start with the SQLite header";
    return result;
  }
  try {
    Db db(path, "mode=ro", SQLITE_OPEN_READONLY);
    db.exec("BEGIN");
    result.version = static_cast<int>(db.integer("PRAGMA user_version"));
    bool has_runs = false;
    for (const auto& row :
         db.rows("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                 "'sqlite_%' ORDER BY name")) {
      if (row.values[0] == "runs") has_runs = true;
      if (result.objects.size() < 6) result.objects.push_back(row.values[0]);
    }
    db.exec("COMMIT");
    if (result.objects.empty() && result.version == 0) {
      result.kind = Inspection::kEmpty;
    } else if (result.version <= 0 || !has_runs) {
      result.kind = Inspection::kForeign;
    } else {
      result.kind = Inspection::kOurs;
    }
  } catch (const Failure& failure) {
    result.kind =
        (failure.code() & 0xff) == SQLITE_NOTADB || (failure.code() & 0xff) == SQLITE_CORRUPT
            ? Inspection::kNotSqlite
            : Inspection::kUnreadable;
    result.detail = failure.what();
  }
  return result;
}

std::string table_list(const std::vector<std::string>& names) {
  std::string list;
  for (size_t i = 0; i < names.size() && i < 5; ++i) {
    list += fmt::format("{}'{}'", i == 0 ? "" : ", ", names[i]);
  }
  if (names.size() > 5) list += ", ...";
  return list.empty() ? "nothing" : list;
}

/// Refuses an input that merge cannot take, naming the file and the fix.
void check_input(const fs::path& input) {
  const Inspection found = inspect(input);
  const std::string name = input.string();
  switch (found.kind) {
    case Inspection::kMissing:
      throw MergeError(fmt::format("input '{}' does not exist; check the path", name));
    case Inspection::kEmpty:
      throw MergeError(fmt::format(
          "input '{}' is empty, not a TransferLab results database; leave it out of the merge",
          name));
    case Inspection::kNotSqlite:
      throw MergeError(fmt::format(
          "input '{}' is not an SQLite database ({}); leave it out, or pass the results.db that "
          "tlab wrote",
          name, found.detail));
    case Inspection::kUnreadable:
      throw MergeError(fmt::format(
          "input '{}' cannot be read ({}); check its permissions, and that its folder is "
          "writable (SQLite creates '{}-shm' next to a database in WAL mode)",
          name, found.detail, name));
    case Inspection::kForeign:
      throw MergeError(fmt::format(
          "input '{}' is not a TransferLab results database (it holds {} and has schema version "
          "{}); leave it out of the merge",
          name, table_list(found.objects), found.version));
    case Inspection::kOurs:
      break;
  }
  if (found.version > Store::kSchemaVersion) {
    throw MergeError(fmt::format(
        "input '{}' has results schema version {} but this tlab uses schema version {}; merge "
        "with a newer tlab (the one that wrote it)",
        name, found.version, Store::kSchemaVersion));
  }
  if (found.version < Store::kSchemaVersion) {
    throw MergeError(fmt::format(
        "input '{}' has results schema version {} but this tlab uses schema version {}; open it "
        "once with this tlab to migrate it (`tlab results list --db '{}'`), then merge again",
        name, found.version, Store::kSchemaVersion, name));
  }
}

/// Refuses an output that is not a TransferLab results database or is newer than this tlab. An
/// older one is fine: Store migrates it.
void check_output(const fs::path& output) {
  const Inspection found = inspect(output);
  const std::string name = output.string();
  if (found.kind == Inspection::kNotSqlite) {
    throw MergeError(fmt::format(
        "--into '{}' is not an SQLite database ({}); pass another --into path or move the file "
        "away",
        name, found.detail));
  }
  if (found.kind == Inspection::kUnreadable) {
    if (const std::string full = disk_full_text(output); !full.empty())
      throw MergeError(
          fmt::format("--into '{}' cannot be opened ({}): {}", name, found.detail, full));
    throw MergeError(
        fmt::format("--into '{}' cannot be read ({}); check its permissions and its folder's", name,
                    found.detail));
  }
  if (found.kind == Inspection::kForeign) {
    throw MergeError(fmt::format(
        "--into '{}' is not a TransferLab results database (it holds {} and has schema version "
        "{}); pass another --into path",
        name, table_list(found.objects), found.version));
  }
  if (found.kind == Inspection::kOurs && found.version > Store::kSchemaVersion) {
    throw MergeError(fmt::format(
        "--into '{}' has results schema version {} but this tlab uses schema version {}; merge "
        "with a newer tlab",
        name, found.version, Store::kSchemaVersion));
  }
}

/// Whether `a` and `b` name the same file (also through links or other spellings).
bool same_file(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  if (fs::exists(a, ec) && fs::exists(b, ec)) return fs::equivalent(a, b, ec);
  return fs::weakly_canonical(fs::absolute(a), ec) == fs::weakly_canonical(fs::absolute(b), ec);
}

/// The fix to add to a failed write's message, by SQLite's result code.
std::string hint(int code, const std::string& output) {
  switch (code & 0xff) {
    case SQLITE_FULL:
      return "; the disk is full: free some space and merge again";
    case SQLITE_READONLY:
      return "; the output or its folder is read-only: fix the permissions or pass another "
             "--into path";
    case SQLITE_CANTOPEN:
      return "; check that the file exists and its folder is writable";
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return fmt::format(
          "; another process kept a write transaction open all that time: find it with "
          "`fuser '{}'`",
          output);
    case SQLITE_CORRUPT:
      return "; a database is damaged: check each with `sqlite3 FILE 'PRAGMA integrity_check'`";
    default:
      return "";
  }
}

/// Creates `output` as a copy of `input` with the backup API: into a temporary file next to it,
/// then linked into place, so that a failure never leaves half a database under the name.
void create_as_copy(const fs::path& input, const fs::path& output) {
  std::error_code ec;
  if (output.has_parent_path()) fs::create_directories(output.parent_path(), ec);
  const fs::path temporary = output.string() + fmt::format(".merge-{}.tmp", getpid());
  fs::remove(temporary, ec);
  try {
    Db source(input, "mode=ro", SQLITE_OPEN_READONLY);
    {
      Db copy(temporary, "", SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
      for (int attempt = 1;; ++attempt) {
        sqlite3_backup* backup = sqlite3_backup_init(copy.get(), "main", source.get(), "main");
        if (backup == nullptr) copy.fail(sqlite3_extended_errcode(copy.get()));
        const int rc = sqlite3_backup_step(backup, -1);  // every page, in one read transaction
        const int finished = sqlite3_backup_finish(backup);
        if (rc == SQLITE_DONE && finished == SQLITE_OK) break;
        const int code = rc == SQLITE_DONE ? finished : rc;
        if (!is_busy(code) || attempt >= Store::kMaxAttempts) {
          throw Failure(code, sqlite3_errstr(code));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50 * attempt));
      }
    }
  } catch (const Failure& failure) {
    fs::remove(temporary, ec);
    throw StoreError(fmt::format("copying '{}' to '{}' with the SQLite backup API failed: {}{}",
                                 input.string(), output.string(), failure.what(),
                                 hint(failure.code(), output.string())));
  }
  // link() refuses to replace a file that appeared meanwhile; rename() would not.
  if (link(temporary.c_str(), output.c_str()) != 0) {
    const int error = errno;
    if (error == EEXIST) {
      fs::remove(temporary, ec);
      throw MergeError(fmt::format(
          "--into '{}' appeared while it was being created from '{}'; merge again (it will be "
          "merged into, not replaced)",
          output.string(), input.string()));
    }
    // A filesystem without hard links: rename, which replaces a file made meanwhile.
    fs::rename(temporary, output, ec);
    if (ec) {
      fs::remove(temporary, ec);
      throw StoreError(fmt::format("cannot create '{}': {}; check that its folder is writable",
                                   output.string(), std::strerror(error)));
    }
  } else {
    fs::remove(temporary, ec);
  }
  // The copy's data was synced by SQLite when the backup committed; this makes its name durable.
  try {
    sync_folder(output.parent_path());
  } catch (const std::runtime_error& e) {
    throw StoreError(fmt::format("creating '{}' failed: {}", output.string(), e.what()));
  }
}

/// How rows of one table are copied: the column that refers to runs gets the new id.
struct TablePlan {
  std::string name;
  std::vector<std::string> columns;  // copied as they are
  std::string run_column;            // the column that refers to runs(id)
  bool has_rowid = true;             // copied in rowid order (insertion order)
};

/// The tables of `db` (schema `schema`) that refer to runs. A table that does not cannot be
/// merged run by run: refused before anything is written.
std::vector<TablePlan> plan_tables(Db& db, const std::string& output) {
  std::vector<TablePlan> plans;
  for (const auto& table :
       db.rows("SELECT name, sql FROM main.sqlite_master WHERE type = 'table' AND name NOT LIKE "
               "'sqlite_%' AND name <> 'runs' ORDER BY name")) {
    TablePlan plan;
    plan.name = table.values[0];
    std::string sql = table.values[1];
    std::transform(sql.begin(), sql.end(), sql.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    plan.has_rowid = sql.find("WITHOUT ROWID") == std::string::npos;
    for (const auto& key :
         db.rows(fmt::format("PRAGMA main.foreign_key_list({})", sql_name(plan.name)))) {
      // id, seq, table, from, to, ...
      if (key.values[2] == "runs") plan.run_column = key.values[3];
    }
    if (plan.run_column.empty()) {
      throw MergeError(fmt::format(
          "'{}' has a table '{}' with no column that refers to runs; tlab results merge cannot "
          "tell which run its rows belong to (a newer tlab may)",
          output, plan.name));
    }
    // cid, name, type, notnull, dflt_value, pk. An INTEGER PRIMARY KEY of the table's own is
    // left out so that the copies get fresh ids.
    const auto columns = db.rows(fmt::format("PRAGMA main.table_info({})", sql_name(plan.name)));
    int64_t key_columns = 0;
    for (const auto& column : columns) key_columns += column.values[5] != "0";
    for (const auto& column : columns) {
      std::string type = column.values[2];
      std::transform(type.begin(), type.end(), type.begin(),
                     [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
      const bool own_id = column.values[5] == "1" && key_columns == 1 && type == "INTEGER" &&
                          column.values[1] != plan.run_column;
      if (!own_id) plan.columns.push_back(column.values[1]);
    }
    plans.push_back(std::move(plan));
  }
  return plans;
}

/// Copies the runs of the attached input `src` that `main` lacks, and their rows.
void merge_attached(Db& db, const std::vector<TablePlan>& plans, MergeInputReport& report) {
  report.runs_merged = report.duplicates_skipped = report.rows_copied = 0;
  report.differing.clear();

  const int version = static_cast<int>(db.integer("PRAGMA src.user_version"));
  if (version != Store::kSchemaVersion) {  // migrated by another process since it was checked
    throw MergeError(
        fmt::format("input '{}' now has results schema version {}, not {}; merge again",
                    report.input.string(), version, Store::kSchemaVersion));
  }

  // Duplicates: the output keeps its copy; say so when the copies differ.
  const auto duplicates = db.rows(
      "SELECT s.uuid, s.id, m.id, s.status, m.status, coalesce(s.ended_at, ''), "
      "coalesce(m.ended_at, ''), "
      "(SELECT count(*) FROM src.metrics WHERE run_id = s.id), "
      "(SELECT count(*) FROM main.metrics WHERE run_id = m.id), "
      "(SELECT count(*) FROM src.summaries WHERE run_id = s.id), "
      "(SELECT count(*) FROM main.summaries WHERE run_id = m.id) "
      "FROM src.runs AS s JOIN main.runs AS m ON m.uuid = s.uuid ORDER BY s.id");
  report.duplicates_skipped = static_cast<int64_t>(duplicates.size());
  for (const auto& row : duplicates) {
    const auto& v = row.values;
    std::vector<std::string> differences;
    if (v[3] != v[4]) differences.push_back(fmt::format("status '{}' vs '{}'", v[3], v[4]));
    if (v[5] != v[6]) {
      auto shown = [](const std::string& time) { return time.empty() ? "none" : "'" + time + "'"; };
      differences.push_back(fmt::format("ended_at {} vs {}", shown(v[5]), shown(v[6])));
    }
    if (v[7] != v[8]) differences.push_back(fmt::format("{} vs {} metric rows", v[7], v[8]));
    if (v[9] != v[10]) differences.push_back(fmt::format("{} vs {} summaries", v[9], v[10]));
    if (differences.empty()) continue;
    std::string what;
    for (const auto& difference : differences) what += (what.empty() ? "" : ", ") + difference;
    report.differing.push_back({v[0], std::stoll(v[1]), std::stoll(v[2]), what});
  }

  // Fresh ids, above every id the output has, in the input's order.
  db.exec("DROP TABLE IF EXISTS temp.merge_ids");
  db.exec("CREATE TEMP TABLE merge_ids (old_id INTEGER PRIMARY KEY, new_id INTEGER NOT NULL)");
  db.exec(
      "INSERT INTO temp.merge_ids (old_id, new_id) "
      "SELECT s.id, (SELECT coalesce(max(id), 0) FROM main.runs) + "
      "row_number() OVER (ORDER BY s.id) FROM src.runs AS s "
      "WHERE s.uuid IS NULL OR s.uuid NOT IN (SELECT uuid FROM main.runs WHERE uuid IS NOT NULL)");

  // Every column the input's runs table has (the output has the same: same schema version).
  std::string columns, values;
  for (const auto& column : db.rows("PRAGMA src.table_info(runs)")) {
    if (column.values[1] == "id") continue;
    columns += ", " + sql_name(column.values[1]);
    values += ", s." + sql_name(column.values[1]);
  }
  db.exec(
      fmt::format("INSERT INTO main.runs (id{}) SELECT m.new_id{} FROM src.runs AS s "
                  "JOIN temp.merge_ids AS m ON m.old_id = s.id ORDER BY m.new_id",
                  columns, values));
  report.runs_merged = db.changes();

  for (const TablePlan& plan : plans) {
    std::string names, selected;
    for (const std::string& column : plan.columns) {
      const std::string separator = names.empty() ? "" : ", ";
      names += separator + sql_name(column);
      selected += separator + (column == plan.run_column ? "m.new_id" : "x." + sql_name(column));
    }
    db.exec(
        fmt::format("INSERT INTO main.{0} ({1}) SELECT {2} FROM src.{0} AS x "
                    "JOIN temp.merge_ids AS m ON m.old_id = x.{3}{4}",
                    sql_name(plan.name), names, selected, sql_name(plan.run_column),
                    plan.has_rowid ? " ORDER BY x.rowid" : ""));
    report.rows_copied += db.changes();
  }
  db.exec("DROP TABLE temp.merge_ids");
}

/// Pause before retrying a busy merge: 50 ms doubling up to 2 s, plus jitter.
void pause_before_retry(int attempt) {
  std::minstd_rand random(static_cast<unsigned>(
      getpid() * 7919 + std::chrono::steady_clock::now().time_since_epoch().count()));
  const int64_t pause = std::min<int64_t>(2000, 50LL << std::min(attempt - 1, 10));
  std::uniform_int_distribution<int64_t> jitter(0, pause / 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(pause + jitter(random)));
}

}  // namespace

MergeReport merge_databases(const std::vector<fs::path>& inputs, const fs::path& output) {
  if (inputs.empty()) {
    throw MergeError("nothing to merge: name at least one input database before --into");
  }
  // Every check first: a refused input must not leave a half-done merge behind.
  for (const fs::path& input : inputs) {
    if (same_file(input, output)) {
      throw MergeError(fmt::format(
          "--into '{}' is also an input ('{}'); merge into another file, e.g. --into merged.db",
          output.string(), input.string()));
    }
  }
  for (const fs::path& input : inputs) check_input(input);
  check_output(output);

  MergeReport report;
  report.output = output;
  report.created = !fs::exists(output);
  size_t first = 0;
  if (report.created) {
    create_as_copy(inputs[0], output);
    first = 1;
  }
  // Opening it as a Store switches it to WAL and migrates an older output.
  { Store store(output, /*create=*/false); }

  Db db(output, "", SQLITE_OPEN_READWRITE);
  db.exec("PRAGMA foreign_keys = ON");
  db.exec("PRAGMA synchronous = NORMAL");
  const std::vector<TablePlan> plans = plan_tables(db, output.string());

  if (report.created) {
    MergeInputReport copied;
    copied.input = inputs[0];
    copied.created_output = true;
    db.exec("BEGIN");
    copied.runs_merged = db.integer("SELECT count(*) FROM runs");
    for (const TablePlan& plan : plans) {
      copied.rows_copied += db.integer(fmt::format("SELECT count(*) FROM {}", sql_name(plan.name)));
    }
    db.exec("COMMIT");
    report.inputs.push_back(std::move(copied));
  }

  for (size_t index = first; index < inputs.size(); ++index) {
    MergeInputReport input_report;
    input_report.input = inputs[index];
    const std::string what =
        fmt::format("merging '{}' into '{}'", inputs[index].string(), output.string());
    try {
      db.rows("ATTACH ? AS src", {sqlite::uri(inputs[index], "mode=ro")});
    } catch (const Failure& failure) {
      throw StoreError(fmt::format("{} failed: cannot attach it: {}{}", what, failure.what(),
                                   hint(failure.code(), output.string())));
    }
    struct Detach {
      Db& db;
      ~Detach() { sqlite3_exec(db.get(), "DETACH src", nullptr, nullptr, nullptr); }
    } detach{db};
    for (int attempt = 1;; ++attempt) {
      try {
        db.exec("BEGIN IMMEDIATE");
        merge_attached(db, plans, input_report);
        db.exec("COMMIT");
        break;
      } catch (const Failure& failure) {
        db.rollback();
        if (!is_busy(failure.code()) || attempt >= Store::kMaxAttempts) {
          throw StoreError(
              fmt::format("{} failed{}: {}{}; nothing of it was written{}", what,
                          is_busy(failure.code()) ? fmt::format(" after {} attempts", attempt) : "",
                          failure.what(), hint(failure.code(), output.string()),
                          index > 0 ? " (the inputs before it are merged)" : ""));
        }
      } catch (...) {
        db.rollback();
        throw;
      }
      pause_before_retry(attempt);
    }
    report.inputs.push_back(std::move(input_report));
  }
  report.output_runs = db.integer("SELECT count(*) FROM runs");
  return report;
}

}  // namespace tlab
