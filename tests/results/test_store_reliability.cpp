// Reliability of the results database beyond test_store.cpp: many processes writing small
// batches to one run at once, a full disk, the SQL views of schema version 3, and merging
// databases from several machines (tlab results merge). Every test ends with an integrity check.
//
// A full disk is simulated with an SQLite VFS shim (the way SQLite's own tests do it): it wraps
// the default VFS and, while "full", fails every write that would grow a file with SQLITE_FULL,
// as the kernel's ENOSPC would. Store needs no test-only hook for it.

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "results/merge.hpp"
#include "results/store_test_util.hpp"

using ::testing::HasSubstr;
#include "store/store.hpp"

namespace tlab {
namespace {

using namespace store_test;

std::string file_contents(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), {});
}

NewRun sample_run(const std::string& name, const std::string& host, int64_t seed,
                  const std::string& strategy) {
  NewRun run;
  run.experiment = "experiments/" + name + ".toml";
  run.name = name;
  run.host = host;
  run.pid = 1000 + seed;
  run.device = "cpu";
  run.seed = seed;
  run.git_commit = "0123456789abcdef0123456789abcdef01234567";
  run.git_dirty = 0;
  run.config_toml = fmt::format("seed = {}\n[strategy]\nplugin = \"{}\"\n", seed, strategy);
  run.config_hash = fmt::format("hash-{}-{}", strategy, seed);
  run.overrides = fmt::format(R"({{"seed":{},"strategy":{{"plugin":"{}"}}}})", seed, strategy);
  run.run_dir = fmt::format("results/runs/{}-{}", host, seed);
  run.tlab_version = "0.1.0";
  run.run_key = fmt::format("key-{}-{}", strategy, seed);
  run.sweep = "sweep-" + host;
  run.override_args = {fmt::format("seed={}", seed), "strategy=" + strategy};
  run.params = {{"strategy.plugin", strategy, "string"},
                {"backbone.plugin", std::string("cnn"), "string"},
                {"source.plugin", std::string("digits"), "string"},
                {"target.plugin", std::string("digits"), "string"},
                {"train.lr", 0.001, "float"},
                {"seed", seed, "int"},
                {"train.amp", false, "bool"}};
  return run;
}

class StoreReliabilityTest : public TempDbTest {
 protected:
  StoreReliabilityTest() : TempDbTest("tlab_reliability") {}
};

// --- Many processes, one run -----------------------------------------------------------------

/// `processes` children each open their own Store and append `batches` small batches (1 to 7
/// rows) to the same run under their own metric name, upsert a shared summary every 10 batches
/// and read their rows back every 25. No write may fail, none may be written twice.
void write_small_batches_to_one_run(const fs::path& db, int processes, int batches) {
  int64_t run = 0;
  {
    Store store(db);
    run = store.create_run(sample_run("concurrent", "node", 1, "finetune"));
  }
  auto rows_in_batch = [](int batch) { return 1 + batch % 7; };
  int64_t per_process = 0;
  for (int batch = 0; batch < batches; ++batch) per_process += rows_in_batch(batch);

  const auto codes = run_children(processes, [&](int index) {
    Store store(db, /*create=*/false);
    const std::string name = fmt::format("p{}/train/loss", index);
    int64_t step = 0;
    for (int batch = 0; batch < batches; ++batch) {
      std::vector<MetricRow> rows;
      for (int i = 0; i < rows_in_batch(batch); ++i, ++step) {
        rows.push_back({name, step, batch, index + step * 1e-3, step * 0.01});
      }
      store.write_metrics(run, rows);
      if (batch % 10 == 9) store.write_summaries(run, {{"progress", double(batch)}});
      if (batch % 25 == 24 && store.metrics(run, name).size() != static_cast<size_t>(step)) {
        _exit(4);  // a committed batch is missing from this process's own view
      }
    }
  });
  ASSERT_EQ(codes.size(), static_cast<size_t>(processes));
  int locked = 0;
  for (int code : codes) locked += code == 3;
  EXPECT_EQ(locked, 0) << "children that saw 'database is locked'";
  for (int i = 0; i < processes; ++i) EXPECT_EQ(codes[i], 0) << "exit code of child " << i;

  RawDb raw(db);
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM metrics"), std::to_string(processes * per_process));
  EXPECT_EQ(raw.scalar("SELECT count(DISTINCT name) FROM metrics"), std::to_string(processes));
  // Exactly one row per (name, step): a retried batch was never written twice.
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM (SELECT name, step FROM metrics GROUP BY name, "
                       "step HAVING count(*) > 1)"),
            "0");
  EXPECT_EQ(raw.scalar("SELECT min(n) = max(n) AND min(n) = " + std::to_string(per_process) +
                       " FROM (SELECT count(*) AS n FROM metrics GROUP BY name)"),
            "1");
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM summaries"), "1");
  Store store(db, /*create=*/false);
  EXPECT_EQ(store.integrity_check(), "ok");
}

TEST_F(StoreReliabilityTest, EightProcessesAppendSmallBatchesToOneRun) {
  write_small_batches_to_one_run(db_path_, 8, 300);
}

TEST_F(StoreReliabilityTest, ThirtyTwoProcessesAppendSmallBatchesToOneRun) {
  write_small_batches_to_one_run(db_path_, 32, 100);
}

// --- A full disk -----------------------------------------------------------------------------

/// A VFS that forwards to the default one but, while `full` is set, refuses with SQLITE_FULL
/// every write that would make a file larger (as a full disk does); writes within a file's
/// current size still succeed, as they would on a real disk.
class FullDiskVfs {
 public:
  FullDiskVfs() {
    inner_ = sqlite3_vfs_find(nullptr);
    vfs_.iVersion = 2;
    vfs_.szOsFile = static_cast<int>(sizeof(File)) + inner_->szOsFile;
    vfs_.mxPathname = inner_->mxPathname;
    vfs_.zName = "tlab_full_disk";
    vfs_.xOpen = open;
    vfs_.xDelete = [](sqlite3_vfs*, const char* name, int sync) {
      return inner_->xDelete(inner_, name, sync);
    };
    vfs_.xAccess = [](sqlite3_vfs*, const char* name, int flags, int* out) {
      return inner_->xAccess(inner_, name, flags, out);
    };
    vfs_.xFullPathname = [](sqlite3_vfs*, const char* name, int size, char* out) {
      return inner_->xFullPathname(inner_, name, size, out);
    };
    vfs_.xDlOpen = [](sqlite3_vfs*, const char* name) { return inner_->xDlOpen(inner_, name); };
    vfs_.xDlError = [](sqlite3_vfs*, int size, char* out) { inner_->xDlError(inner_, size, out); };
    vfs_.xDlSym = [](sqlite3_vfs*, void* handle, const char* symbol) {
      return inner_->xDlSym(inner_, handle, symbol);
    };
    vfs_.xDlClose = [](sqlite3_vfs*, void* handle) { inner_->xDlClose(inner_, handle); };
    vfs_.xRandomness = [](sqlite3_vfs*, int size, char* out) {
      return inner_->xRandomness(inner_, size, out);
    };
    vfs_.xSleep = [](sqlite3_vfs*, int micros) { return inner_->xSleep(inner_, micros); };
    vfs_.xCurrentTime = [](sqlite3_vfs*, double* out) { return inner_->xCurrentTime(inner_, out); };
    vfs_.xGetLastError = [](sqlite3_vfs*, int size, char* out) {
      return inner_->xGetLastError(inner_, size, out);
    };
    vfs_.xCurrentTimeInt64 = [](sqlite3_vfs*, sqlite3_int64* out) {
      return inner_->xCurrentTimeInt64(inner_, out);
    };
    methods_.iVersion = 3;
    methods_.xClose = [](sqlite3_file* f) { return real(f)->pMethods->xClose(real(f)); };
    methods_.xRead = [](sqlite3_file* f, void* out, int amount, sqlite3_int64 offset) {
      return real(f)->pMethods->xRead(real(f), out, amount, offset);
    };
    methods_.xWrite = [](sqlite3_file* f, const void* data, int amount, sqlite3_int64 offset) {
      if (full_) {
        sqlite3_int64 size = 0;
        const int rc = real(f)->pMethods->xFileSize(real(f), &size);
        if (rc != SQLITE_OK) return rc;
        if (offset + amount > size) {
          ++refused_;
          return SQLITE_FULL;
        }
      }
      return real(f)->pMethods->xWrite(real(f), data, amount, offset);
    };
    methods_.xTruncate = [](sqlite3_file* f, sqlite3_int64 size) {
      return real(f)->pMethods->xTruncate(real(f), size);
    };
    methods_.xSync = [](sqlite3_file* f, int flags) {
      return real(f)->pMethods->xSync(real(f), flags);
    };
    methods_.xFileSize = [](sqlite3_file* f, sqlite3_int64* size) {
      return real(f)->pMethods->xFileSize(real(f), size);
    };
    methods_.xLock = [](sqlite3_file* f, int lock) {
      return real(f)->pMethods->xLock(real(f), lock);
    };
    methods_.xUnlock = [](sqlite3_file* f, int lock) {
      return real(f)->pMethods->xUnlock(real(f), lock);
    };
    methods_.xCheckReservedLock = [](sqlite3_file* f, int* out) {
      return real(f)->pMethods->xCheckReservedLock(real(f), out);
    };
    methods_.xFileControl = [](sqlite3_file* f, int op, void* arg) {
      // Growing a file ahead of its writes needs space too.
      if (full_ && op == SQLITE_FCNTL_SIZE_HINT) {
        sqlite3_int64 size = 0;
        real(f)->pMethods->xFileSize(real(f), &size);
        if (*static_cast<sqlite3_int64*>(arg) > size) return SQLITE_FULL;
      }
      return real(f)->pMethods->xFileControl(real(f), op, arg);
    };
    methods_.xSectorSize = [](sqlite3_file* f) { return real(f)->pMethods->xSectorSize(real(f)); };
    methods_.xDeviceCharacteristics = [](sqlite3_file* f) {
      return real(f)->pMethods->xDeviceCharacteristics(real(f));
    };
    methods_.xShmMap = [](sqlite3_file* f, int page, int size, int extend, void volatile** out) {
      return real(f)->pMethods->xShmMap(real(f), page, size, extend, out);
    };
    methods_.xShmLock = [](sqlite3_file* f, int offset, int n, int flags) {
      return real(f)->pMethods->xShmLock(real(f), offset, n, flags);
    };
    methods_.xShmBarrier = [](sqlite3_file* f) { real(f)->pMethods->xShmBarrier(real(f)); };
    methods_.xShmUnmap = [](sqlite3_file* f, int remove) {
      return real(f)->pMethods->xShmUnmap(real(f), remove);
    };
    methods_.xFetch = [](sqlite3_file* f, sqlite3_int64 offset, int amount, void** out) {
      return real(f)->pMethods->xFetch(real(f), offset, amount, out);
    };
    methods_.xUnfetch = [](sqlite3_file* f, sqlite3_int64 offset, void* page) {
      return real(f)->pMethods->xUnfetch(real(f), offset, page);
    };
    EXPECT_EQ(sqlite3_vfs_register(&vfs_, /*makeDflt=*/1), SQLITE_OK);
  }
  /// Every connection opened through it must be closed first.
  ~FullDiskVfs() {
    full_ = false;
    sqlite3_vfs_unregister(&vfs_);
  }
  FullDiskVfs(const FullDiskVfs&) = delete;
  FullDiskVfs& operator=(const FullDiskVfs&) = delete;

  void set_full(bool full) { full_ = full; }
  /// Writes refused so far.
  int refused() const { return refused_; }

 private:
  struct File {
    sqlite3_file base;  // must come first: SQLite sees a File as an sqlite3_file
  };
  static sqlite3_file* real(sqlite3_file* file) {
    return reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) + sizeof(File));
  }
  static int open(sqlite3_vfs*, const char* name, sqlite3_file* file, int flags, int* out) {
    const int rc = inner_->xOpen(inner_, name, real(file), flags, out);
    file->pMethods = real(file)->pMethods != nullptr ? &methods_ : nullptr;
    return rc;
  }

  static inline sqlite3_vfs* inner_ = nullptr;
  static inline sqlite3_vfs vfs_{};
  static inline sqlite3_io_methods methods_{};
  static inline std::atomic<bool> full_{false};
  static inline std::atomic<int> refused_{0};
};

TEST_F(StoreReliabilityTest, DiskFullFailsTheWriteSayingSoAndKeepsEverythingCommitted) {
  const int64_t committed_rows = 20 * 50;
  int64_t run = 0;
  {
    FullDiskVfs disk;
    Store store(db_path_);
    run = store.create_run(sample_run("full_disk", "node", 1, "finetune"));
    int64_t step = 0;
    for (int batch = 0; batch < 20; ++batch) {
      std::vector<MetricRow> rows;
      for (int i = 0; i < 50; ++i, ++step) rows.push_back({"train/loss", step, 0, step * 0.5, 0});
      store.write_metrics(run, rows);
    }
    store.write_summaries(run, {{"target/test/acc", 0.75}});

    disk.set_full(true);
    // One batch that fails only at COMMIT (it fits in the page cache), one that fails while
    // the page cache spills to the WAL before COMMIT.
    for (const int64_t size : {int64_t{2000}, int64_t{200000}}) {
      std::vector<MetricRow> rows;
      for (int64_t i = 0; i < size; ++i) rows.push_back({"train/loss", step + i, 1, 1.0, 0});
      const std::string message = error_of([&] { store.write_metrics(run, rows); });
      EXPECT_CONTAINS(message, fmt::format("writing {} metric rows for run {} in '{}' failed", size,
                                           run, db_path_.string()));
      EXPECT_CONTAINS(message, "disk is full");
      EXPECT_CONTAINS(message, "results committed earlier are intact");
      // Reads still work on the full disk, and see exactly what was committed.
      EXPECT_EQ(store.metrics(run).size(), static_cast<size_t>(committed_rows)) << size;
    }
    EXPECT_GT(disk.refused(), 0);
    EXPECT_EQ(store.integrity_check(), "ok");

    // Space again: the store goes on where it was.
    disk.set_full(false);
    store.write_metrics(run, {{"train/loss", step, 1, 2.0, 0}});
    EXPECT_EQ(store.metrics(run).size(), static_cast<size_t>(committed_rows + 1));
  }
  // A new process's view, through the ordinary VFS.
  Store store(db_path_, /*create=*/false);
  RawDb raw(db_path_);
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM metrics"), std::to_string(committed_rows + 1));
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM metrics WHERE epoch = 1"), "1");
  EXPECT_EQ(raw.scalar("SELECT value FROM summaries"), "0.75");
  EXPECT_EQ(raw.scalar("PRAGMA integrity_check"), "ok");
  EXPECT_EQ(store.integrity_check(), "ok");
}

// --- Views (schema version 3) ----------------------------------------------------------------

TEST_F(StoreReliabilityTest, ViewsAnswerTheCommonQuestions) {
  // Two strategies x 3 seeds, finished; one failed run (left out of summary_stats); a NaN.
  const std::map<std::string, std::vector<double>> accuracy = {{"finetune", {0.841, 0.820, 0.759}},
                                                               {"scratch", {0.727, 0.691, kNaN}}};
  {
    Store store(db_path_);
    for (const auto& [strategy, values] : accuracy) {
      for (int seed = 1; seed <= 3; ++seed) {
        const int64_t run = store.create_run(sample_run("quickstart", "vm", seed, strategy));
        store.write_metrics(run, {{"target/val/acc", 10, 0, 0.5, 1.0},
                                  {"target/val/acc", 20, 1, 0.6, 2.0},
                                  {"target/val/acc", 20, 1, 0.65, 2.5},  // same step, later
                                  {"target/val/acc", 15, 1, 0.7, 3.0},
                                  {"target/train/loss", 20, 1, 0.125, 2.0}});
        store.write_summaries(run, {{"target/test/acc", values[seed - 1]},
                                    {"target/val/acc", values[seed - 1] - 0.01}});
        store.finish_run(run, RunStatus::kFinished, "");
      }
    }
    const int64_t failed = store.create_run(sample_run("quickstart", "vm", 4, "finetune"));
    store.write_summaries(failed, {{"target/test/acc", 0.1}});
    store.finish_run(failed, RunStatus::kFailed, "boom");
  }
  RawDb raw(db_path_);

  // run_overview: one row per run.
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM run_overview"), "7");
  const Rows overview = raw.rows(
      "SELECT run_id, name, status, reason, seed, host, device, strategy, backbone, source, "
      "target, target_val_acc, target_test_acc, wall_seconds >= 0, "
      "length(uuid) FROM run_overview WHERE run_id IN (1, 7) ORDER BY run_id");
  const Rows expected_overview = {
      {"1", "quickstart", "finished", "NULL", "1", "vm", "cpu", "finetune", "cnn", "digits",
       "digits", "0.831", "0.841", "1", "32"},
      {"7", "quickstart", "failed", "boom", "4", "vm", "cpu", "finetune", "cnn", "digits", "digits",
       "NULL", "0.1", "1", "32"}};
  EXPECT_EQ(overview, expected_overview);
  // Wall seconds agree with the timestamps.
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM run_overview WHERE abs(wall_seconds - "
                       "(julianday(ended_at) - julianday(started_at)) * 86400) > 0.001"),
            "0");

  // metric_last: the highest step; among equal steps the last written.
  const Rows last = raw.rows(
      "SELECT metric, step, epoch, value, wall_time FROM metric_last WHERE run_id = 2 "
      "ORDER BY metric");
  const Rows expected_last = {{"target/train/loss", "20", "1", "0.125", "2.0"},
                              {"target/val/acc", "20", "1", "0.65", "2.5"}};
  EXPECT_EQ(last, expected_last);
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM metric_last"), "12");

  // run_params: long form, values keep their storage class.
  const Rows params = raw.rows(
      "SELECT run_name, status, key, value, typeof(value), type FROM run_params "
      "WHERE run_id = 7 AND key IN ('seed', 'train.lr', 'train.amp') ORDER BY key");
  const Rows expected_params = {{"quickstart", "failed", "seed", "4", "integer", "int"},
                                {"quickstart", "failed", "train.amp", "0", "integer", "bool"},
                                {"quickstart", "failed", "train.lr", "0.001", "real", "float"}};
  EXPECT_EQ(params, expected_params);

  // summary_stats: finished runs only, seeds pooled, NaN left out and counted.
  const Rows stats = raw.rows(
      "SELECT experiment, strategy, config, n, n_nan FROM summary_stats "
      "WHERE metric = 'target/test/acc' ORDER BY strategy");
  const Rows expected_stats = {
      {"quickstart", "finetune", R"({"strategy":{"plugin":"finetune"}})", "3", "0"},
      {"quickstart", "scratch", R"({"strategy":{"plugin":"scratch"}})", "2", "1"}};
  EXPECT_EQ(stats, expected_stats);
  for (const auto& [strategy, values] : accuracy) {
    double sum = 0;
    int n = 0;
    for (double v : values)
      if (!std::isnan(v)) sum += v, ++n;
    const double mean = sum / n;
    double squares = 0;
    for (double v : values)
      if (!std::isnan(v)) squares += (v - mean) * (v - mean);
    const std::string where = fmt::format(
        " FROM summary_stats WHERE metric = 'target/test/acc' AND strategy = '{}'", strategy);
    EXPECT_NEAR(raw.real("SELECT mean" + where), mean, 1e-12) << strategy;
    EXPECT_NEAR(raw.real("SELECT variance" + where), squares / (n - 1), 1e-12) << strategy;
    double smallest = kInf;
    for (double v : values)
      if (!std::isnan(v)) smallest = std::min(smallest, v);
    EXPECT_EQ(raw.real("SELECT min" + where), smallest) << strategy;
  }
  // A single value has no sample variance.
  {
    Store store(db_path_, /*create=*/false);
    const int64_t lone = store.create_run(sample_run("lonely", "vm", 1, "scratch"));
    store.write_summaries(lone, {{"target/test/acc", 0.5}});
    store.finish_run(lone, RunStatus::kFinished, "");
  }
  EXPECT_EQ(raw.rows("SELECT n, mean, variance FROM summary_stats WHERE experiment = 'lonely'"),
            (Rows{{"1", "0.5", "NULL"}}));
  Store store(db_path_, /*create=*/false);
  EXPECT_EQ(store.integrity_check(), "ok");
}

// Issue 27: another application's SQLite file with a `runs` table and a user_version tlab
// knows was "migrated" (a column added, the version raised, WAL switched on) before failing.
// Now it is recognised as foreign before anything changes: not one byte of it is written.
TEST_F(StoreReliabilityTest, AnotherApplicationsDatabaseIsRefusedUnchanged) {
  auto bytes = [&] {
    std::ifstream in(db_path_, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  auto refused = [&](const std::string& message) {
    const std::string before = bytes();
    EXPECT_THAT(error_of<StoreError>([&] { Store store(db_path_, /*create=*/false); }),
                HasSubstr(message));
    EXPECT_EQ(bytes(), before) << "the file changed";
    EXPECT_FALSE(fs::exists(db_path_.string() + "-wal"));
  };
  {
    RawDb raw(db_path_);
    raw.exec(
        "CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT, status TEXT); "
        "INSERT INTO runs VALUES (1, 'backup', 'done'); PRAGMA user_version = 3");
  }
  refused(
      "is not a TransferLab results database: it has schema version 3 but it has no table "
      "'params' (another application's file?); tlab leaves it unchanged");
  {
    RawDb raw(db_path_);
    raw.exec(
        "CREATE TABLE params (a); CREATE TABLE metrics (a); CREATE TABLE summaries (a); "
        "CREATE TABLE run_plugins (a)");
  }
  refused("its table 'runs' has no column 'experiment'");
  {
    RawDb raw(db_path_);
    raw.exec("PRAGMA application_id = 1234");
  }
  refused(
      "belongs to another application (SQLite application_id 0x000004d2; TransferLab's is "
      "0x544c4142): tlab leaves it unchanged");
  // A TransferLab database carries the marker from its creation.
  fs::remove(db_path_);
  { Store store(db_path_); }
  RawDb raw(db_path_);
  EXPECT_EQ(raw.scalar("PRAGMA application_id"), std::to_string(Store::kApplicationId));
}

// Issue 27: six `tlab run`s of one config started at once ran it six times, and compare counted
// them as six seeds. create_run with `same_key` checks and inserts in one transaction: a key
// queued or running in another sweep, or finished, is not created again.
TEST_F(StoreReliabilityTest, ARunKeyOpenInAnotherSweepOrFinishedIsNotCreatedAgain) {
  Store store(db_path_);
  NewRun row = sample_run("same", "node", 1, "finetune");
  row.status = RunStatus::kQueued;
  row.run_key = "k";
  row.sweep = "A";
  int64_t same = -1;
  const int64_t first = store.create_run(row, &same);
  ASSERT_GT(first, 0);
  EXPECT_EQ(same, -1);
  // The same sweep may list one config twice (Hydra runs both).
  const int64_t second = store.create_run(row, &same);
  ASSERT_GT(second, first);
  // Another sweep joins the newest open one instead.
  row.sweep = "B";
  EXPECT_EQ(store.create_run(row, &same), 0);
  EXPECT_EQ(same, second);
  // Without `same_key` (--rerun) it is created regardless.
  const int64_t rerun = store.create_run(row);
  EXPECT_GT(rerun, second);
  // Ended without finishing: a new sweep runs it again.
  for (int64_t id : {first, second, rerun}) store.finish_run(id, RunStatus::kFailed, "boom");
  row.sweep = "C";
  same = -1;
  const int64_t again = store.create_run(row, &same);
  ASSERT_GT(again, rerun);
  EXPECT_EQ(same, -1);
  ASSERT_TRUE(store.start_run(again, 4242, "cpu"));
  store.finish_run(again, RunStatus::kFinished, "");
  // Finished: every later sweep, the same one included, finds it.
  for (const char* sweep : {"C", "D"}) {
    row.sweep = sweep;
    EXPECT_EQ(store.create_run(row, &same), 0) << sweep;
    EXPECT_EQ(same, again) << sweep;
  }
  RawDb raw(db_path_);
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM runs WHERE run_key = 'k'"), "4");
}

// Issue 27: a -shm (or -wal) file left with no write access for this user (a read-only open as
// root leaves it with the database's mode and root's ownership) made every write fail with a
// message that named the database, not the file to remove.
TEST_F(StoreReliabilityTest, ALeftoverReadOnlyShmFileIsNamedWhenWritingFails) {
  const bool root = ::geteuid() == 0;
  const fs::path dir = db_path_.parent_path() / "stale";
  const fs::path db = dir / "results.db";
  fs::create_directories(dir);
  { Store store(db); }
  ASSERT_FALSE(fs::exists(db.string() + "-shm"));
  std::ofstream(db.string() + "-shm").put('\0');
  std::ofstream(db.string() + "-wal");
  fs::permissions(db.string() + "-shm",
                  fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  if (root) {
    // As root everything is writable: the write runs as the user nobody, who owns the folder
    // and the database, while the -shm stays root's.
    for (const fs::path& p : {dir, db, fs::path(db.string() + "-wal")})
      ASSERT_EQ(::chown(p.c_str(), 65534, 65534), 0) << p;
  }
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(out[0]);
    if (root && (::setgid(65534) != 0 || ::setuid(65534) != 0)) _exit(3);
    std::string message = "no error";
    try {
      Store store(db, /*create=*/false);
      store.create_run(sample_run("stale", "node", 1, "finetune"));
    } catch (const std::exception& e) {
      message = e.what();
    }
    [[maybe_unused]] auto n = ::write(out[1], message.data(), message.size());
    _exit(0);
  }
  ::close(out[1]);
  std::string message;
  char buf[1024];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) message.append(buf, n);
  ::close(out[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  const passwd* me = ::getpwuid(::geteuid());  // the -shm's owner: root, or this user
  EXPECT_CONTAINS(message,
                  fmt::format("'{}-shm' is read-only to this process (owner {}, mode 0444)",
                              db.string(), me ? me->pw_name : std::to_string(::geteuid())));
  EXPECT_CONTAINS(message, fmt::format("remove it (rm '{}-shm')", db.string()));
}

TEST_F(StoreReliabilityTest, VersionTwoDatabaseGetsTheViewsOnOpen) {
  {
    Store store(db_path_);
    store.create_run(sample_run("old", "vm", 1, "scratch"));
  }
  {  // Back to what a version 2 database looks like.
    RawDb raw(db_path_);
    raw.exec(
        "DROP VIEW run_overview; DROP VIEW metric_last; DROP VIEW run_params; "
        "DROP VIEW summary_stats; ALTER TABLE runs DROP COLUMN boot_id; "
        "ALTER TABLE runs DROP COLUMN pid_start; ALTER TABLE runs DROP COLUMN job; ALTER TABLE "
        "runs DROP COLUMN search; ALTER TABLE runs DROP COLUMN processes; ALTER TABLE runs DROP "
        "COLUMN backend; ALTER TABLE runs DROP COLUMN collective_timeout; "
        "DROP TABLE evaluations; PRAGMA user_version = 2; PRAGMA application_id = 0");
  }
  Store store(db_path_, /*create=*/false);
  RawDb raw(db_path_);
  EXPECT_EQ(raw.scalar("PRAGMA user_version"), std::to_string(Store::kSchemaVersion));
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM sqlite_master WHERE type = 'view'"), "5");
  EXPECT_EQ(raw.scalar("SELECT name FROM run_overview"), "old");
  // Made before the marker existed: recognised by its tables and given the marker.
  EXPECT_EQ(raw.scalar("PRAGMA application_id"), std::to_string(Store::kApplicationId));
  EXPECT_EQ(store.integrity_check(), "ok");
}

// --- Merging -----------------------------------------------------------------------------------

/// Writes a database as machine `host` would: `strategies` x `seeds` runs with params,
/// plugins, metrics (NaN and infinities among them) and summaries. Returns the uuids.
std::vector<std::string> write_machine(const fs::path& path, const std::string& host,
                                       const std::vector<std::string>& strategies, int seeds) {
  Store store(path);
  std::vector<std::string> uuids;
  for (const auto& strategy : strategies) {
    for (int seed = 1; seed <= seeds; ++seed) {
      const int64_t run = store.create_run(sample_run("quickstart", host, seed, strategy));
      store.add_plugins(run, {{"strategy", strategy, "0.1.0", "/p/" + strategy + ".so", "h1"},
                              {"backbone", "cnn", "0.2.0", "/p/cnn.so", "h2"}});
      std::vector<MetricRow> rows;
      for (int step = 0; step < 30; ++step) {
        rows.push_back({"target/train/loss", step, step / 10, 1.0 / (step + 1), step * 0.1});
      }
      rows.push_back({"target/train/loss", 30, 3, kNaN, 3.0});
      rows.push_back({"target/train/loss", 31, 3, kInf, kNaN});
      rows.push_back({"target/train/loss", 29, 2, -kInf, 3.1});  // out of order
      store.write_metrics(run, rows);
      store.write_summaries(run, {{"target/test/acc", 0.5 + seed * 0.1}, {"nan", kNaN}});
      store.finish_run(run, RunStatus::kFinished, "");
      uuids.push_back(store.run(run).uuid);
    }
  }
  return uuids;
}

/// Every column of every run but the id, and every row that refers to it, keyed by uuid: what
/// a merge must carry over unchanged.
Rows run_contents(const fs::path& path, const std::vector<std::string>& uuids) {
  RawDb raw(path);
  std::string list;
  for (const auto& uuid : uuids) list += (list.empty() ? "'" : ", '") + uuid + "'";
  std::string columns;
  for (const auto& column : raw.rows("PRAGMA table_info(runs)")) {
    if (column[1] != "id") columns += ", r." + column[1];
  }
  Rows all = raw.rows("SELECT 'run'" + columns + " FROM runs AS r WHERE r.uuid IN (" + list +
                      ") ORDER BY r.uuid");
  for (const std::string table : {"params", "metrics", "summaries", "run_plugins"}) {
    std::string row_columns;
    for (const auto& column : raw.rows("PRAGMA table_info(" + table + ")")) {
      if (column[1] != "run_id")
        row_columns += ", x." + column[1] + ", typeof(x." + column[1] + ")";
    }
    const Rows rows = raw.rows("SELECT '" + table + "', r.uuid" + row_columns + " FROM " + table +
                               " AS x JOIN runs AS r ON r.id = x.run_id WHERE r.uuid IN (" + list +
                               ") ORDER BY r.uuid, x.rowid");
    all.insert(all.end(), rows.begin(), rows.end());
  }
  return all;
}

TEST_F(StoreReliabilityTest, MergeCreatesTheOutputAsACopyAndRemapsRunIds) {
  const fs::path a = dir_ / "alpha.db", b = dir_ / "beta.db", c = dir_ / "out" / "merged.db";
  auto uuids_a = write_machine(a, "alpha", {"finetune"}, 2);
  const auto uuids_b = write_machine(b, "beta", {"scratch", "finetune"}, 2);

  // alpha is still open in a writer, and its last run is still in its WAL file only: a copy of
  // the database file would miss it, the backup API does not.
  Store alpha(a, /*create=*/false);
  const int64_t last = alpha.create_run(sample_run("quickstart", "alpha", 7, "scratch"));
  alpha.write_metrics(last, {{"target/train/loss", 0, 0, 0.5, 0.1},
                             {"target/train/loss", 1, 0, 0.25, 0.2},
                             {"target/train/loss", 2, 0, 0.125, 0.3},
                             {"target/train/loss", 3, 0, 0.0625, 0.4},
                             {"target/train/loss", 4, 0, 0.03125, 0.5}});
  uuids_a.push_back(alpha.run(last).uuid);
  ASSERT_GT(fs::file_size(a.string() + "-wal"), 0u);

  const MergeReport report = merge_databases({a, b}, c);
  EXPECT_TRUE(report.created);
  EXPECT_EQ(report.output, c);
  EXPECT_EQ(report.output_runs, 7);
  ASSERT_EQ(report.inputs.size(), 2u);
  EXPECT_EQ(report.inputs[0].input, a);
  EXPECT_TRUE(report.inputs[0].created_output);
  EXPECT_EQ(report.inputs[0].runs_merged, 3);
  EXPECT_EQ(report.inputs[0].duplicates_skipped, 0);
  EXPECT_FALSE(report.inputs[1].created_output);
  EXPECT_EQ(report.inputs[1].runs_merged, 4);
  EXPECT_EQ(report.inputs[1].duplicates_skipped, 0);
  // Per run: 7 params, 2 plugins, 33 metric rows, 2 summaries; the last one 7 params and 5
  // metric rows.
  EXPECT_EQ(report.inputs[0].rows_copied, 2 * 44 + 12);
  EXPECT_EQ(report.inputs[1].rows_copied, 4 * 44);
  EXPECT_TRUE(report.inputs[1].differing.empty());

  // Everything but the ids carried over unchanged: host, uuid, timestamps, NaN, infinities,
  // the storage class of each param value, insertion order.
  EXPECT_EQ(run_contents(c, uuids_a), run_contents(a, uuids_a));
  EXPECT_EQ(run_contents(c, uuids_b), run_contents(b, uuids_b));
  RawDb raw(c);
  EXPECT_EQ(raw.rows("SELECT id, host FROM runs ORDER BY id"), (Rows{{"1", "alpha"},
                                                                     {"2", "alpha"},
                                                                     {"3", "alpha"},
                                                                     {"4", "beta"},
                                                                     {"5", "beta"},
                                                                     {"6", "beta"},
                                                                     {"7", "beta"}}));
  EXPECT_EQ(raw.scalar("PRAGMA user_version"), std::to_string(Store::kSchemaVersion));
  EXPECT_EQ(raw.scalar("PRAGMA journal_mode"), "wal");
  EXPECT_FALSE(fs::exists(c.string() + fmt::format(".merge-{}.tmp", getpid())));
  // The output is an ordinary results database.
  Store merged(c, /*create=*/false);
  EXPECT_EQ(merged.list_runs().size(), 7u);
  EXPECT_EQ(merged.metrics(3).size(), 5u);
  EXPECT_EQ(merged.metrics(4).size(), 33u);
  EXPECT_EQ(merged.plugins(4).at(0).name, "scratch");
  EXPECT_EQ(merged.integrity_check(), "ok");
  EXPECT_EQ(alpha.integrity_check(), "ok");
}

// Evaluations (confusion matrices) follow their runs into the merged database, with fresh ids;
// writing an evaluation again under its name replaces it and its summaries.
TEST_F(StoreReliabilityTest, EvaluationsAreReplacedByNameAndFollowTheirRunsInAMerge) {
  const fs::path a = dir_ / "alpha.db", b = dir_ / "beta.db", c = dir_ / "merged.db";
  write_machine(a, "alpha", {"finetune"}, 1);
  write_machine(b, "beta", {"scratch"}, 2);
  for (const auto& [path, run] : {std::pair{a, int64_t{1}}, std::pair{b, int64_t{2}}}) {
    Store store(path, /*create=*/false);
    EvaluationRecord e;
    e.run_id = run;
    e.name = "eval/rotated/test";
    e.dataset = "[target]\ndomain = \"rotated\"\n";
    e.counts = R"({"num_classes":2,"confusion":[3,1,0,4]})";
    e.loss = kNaN;
    store.write_evaluation(e, {{"eval/rotated/test/acc", 0.875}, {"eval/rotated/test/ece", 0.1}});
    e.counts = R"({"num_classes":2,"confusion":[4,0,0,4]})";
    store.write_evaluation(e, {{"eval/rotated/test/acc", 1.0}});  // the ece summary goes
    const auto got = store.evaluations(run);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].counts, e.counts);
    EXPECT_TRUE(std::isnan(got[0].loss));
    const auto row = store.list_runs({run}).at(0);
    EXPECT_EQ(*row.summary("eval/rotated/test/acc"), 1.0);
    EXPECT_EQ(row.summary("eval/rotated/test/ece"), nullptr);
  }
  const MergeReport report = merge_databases({a, b}, c);
  EXPECT_EQ(report.output_runs, 3);
  Store merged(c, /*create=*/false);
  EXPECT_EQ(merged.evaluations(1).size(), 1u);  // alpha's run
  EXPECT_TRUE(merged.evaluations(2).empty());   // beta's first run had none
  ASSERT_EQ(merged.evaluations(3).size(), 1u);  // beta's second
  EXPECT_EQ(merged.evaluations(3)[0].dataset, "[target]\ndomain = \"rotated\"\n");
  EXPECT_EQ(merged.integrity_check(), "ok");
}

TEST_F(StoreReliabilityTest, MergeSkipsRunsItAlreadyHasByUuid) {
  const fs::path a = dir_ / "alpha.db", b = dir_ / "beta.db", c = dir_ / "merged.db";
  const auto uuids_a = write_machine(a, "alpha", {"finetune"}, 2);
  write_machine(b, "beta", {"scratch"}, 3);
  merge_databases({a, b}, c);
  const Rows before = run_contents(c, uuids_a);

  // The same inputs again: nothing new.
  MergeReport again = merge_databases({b, a}, c);
  EXPECT_FALSE(again.created);
  ASSERT_EQ(again.inputs.size(), 2u);
  EXPECT_EQ(again.inputs[0].runs_merged, 0);
  EXPECT_EQ(again.inputs[0].duplicates_skipped, 3);
  EXPECT_EQ(again.inputs[1].runs_merged, 0);
  EXPECT_EQ(again.inputs[1].duplicates_skipped, 2);
  EXPECT_EQ(again.inputs[1].rows_copied, 0);
  EXPECT_EQ(again.output_runs, 5);

  // A third machine holds a copy of one of alpha's runs (taken while it ran) and a new run.
  const fs::path d = dir_ / "gamma.db";
  {
    Store gamma(d);
    NewRun copy = sample_run("quickstart", "alpha", 1, "finetune");
    copy.uuid = uuids_a[0];
    const int64_t id = gamma.create_run(copy);
    gamma.write_metrics(id, {{"target/train/loss", 0, 0, 1.0, 0.0}});
    gamma.create_run(sample_run("quickstart", "gamma", 9, "scratch"));
  }
  const MergeReport third = merge_databases({d}, c);
  ASSERT_EQ(third.inputs.size(), 1u);
  EXPECT_EQ(third.inputs[0].runs_merged, 1);
  EXPECT_EQ(third.inputs[0].duplicates_skipped, 1);
  ASSERT_EQ(third.inputs[0].differing.size(), 1u);
  const DifferingDuplicate& differing = third.inputs[0].differing[0];
  EXPECT_EQ(differing.uuid, uuids_a[0]);
  EXPECT_EQ(differing.input_id, 1);
  EXPECT_EQ(differing.output_id, 1);
  EXPECT_CONTAINS(differing.what, "status 'running' vs 'finished'");
  EXPECT_CONTAINS(differing.what, "1 vs 33 metric rows");
  EXPECT_EQ(third.output_runs, 6);
  // The output's copy is kept as it was.
  EXPECT_EQ(run_contents(c, uuids_a), before);
  RawDb raw(c);
  EXPECT_EQ(raw.scalar("SELECT group_concat(host) FROM (SELECT host FROM runs ORDER BY id)"),
            "alpha,alpha,beta,beta,beta,gamma");
  Store store(c, /*create=*/false);
  EXPECT_EQ(store.integrity_check(), "ok");
}

TEST_F(StoreReliabilityTest, MergeRefusesBadInputsBeforeWritingAnything) {
  const fs::path a = dir_ / "alpha.db", c = dir_ / "merged.db";
  write_machine(a, "alpha", {"finetune"}, 1);

  // Not a database: refused, left as it was, no output made.
  const fs::path text = dir_ / "notes.db";
  { std::ofstream(text) << "just some text\n"; }
  std::string message = error_of<MergeError>([&] { merge_databases({a, text}, c); });
  EXPECT_CONTAINS(message, "input '" + text.string() + "' is not an SQLite database");
  EXPECT_EQ(file_contents(text), "just some text\n");
  EXPECT_FALSE(fs::exists(text.string() + "-wal"));
  EXPECT_FALSE(fs::exists(c));

  // Another application's SQLite database.
  const fs::path foreign = dir_ / "invoices.db";
  {
    RawDb raw(foreign);
    raw.exec("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)");
  }
  message = error_of<MergeError>([&] { merge_databases({a, foreign}, c); });
  EXPECT_CONTAINS(message, "input '" + foreign.string() +
                               "' is not a TransferLab results database (it holds 'invoices'");
  EXPECT_FALSE(fs::exists(c));

  // An empty file and a missing one.
  const fs::path empty = dir_ / "empty.db";
  { std::ofstream touch(empty); }
  message = error_of<MergeError>([&] { merge_databases({empty}, c); });
  EXPECT_CONTAINS(message, "input '" + empty.string() + "' is empty");
  message = error_of<MergeError>([&] { merge_databases({dir_ / "nope.db"}, c); });
  EXPECT_CONTAINS(message, "does not exist");
  EXPECT_FALSE(fs::exists(c));

  // Other schema versions name both versions and the fix.
  const fs::path older = dir_ / "older.db", newer = dir_ / "newer.db";
  write_machine(older, "old", {"scratch"}, 1);
  write_machine(newer, "new", {"scratch"}, 1);
  {
    RawDb raw_older(older), raw_newer(newer);
    raw_older.exec(fmt::format("PRAGMA user_version = {}", Store::kSchemaVersion - 1));
    raw_newer.exec(fmt::format("PRAGMA user_version = {}", Store::kSchemaVersion + 1));
  }
  message = error_of<MergeError>([&] { merge_databases({a, older}, c); });
  EXPECT_CONTAINS(message,
                  fmt::format("input '{}' has results schema version {} but this tlab "
                              "uses schema version {}",
                              older.string(), Store::kSchemaVersion - 1, Store::kSchemaVersion));
  EXPECT_CONTAINS(message, "open it once with this tlab to migrate it");
  message = error_of<MergeError>([&] { merge_databases({newer}, c); });
  EXPECT_CONTAINS(message, fmt::format("schema version {} but this tlab uses schema version {}",
                                       Store::kSchemaVersion + 1, Store::kSchemaVersion));
  EXPECT_CONTAINS(message, "newer tlab");
  EXPECT_FALSE(fs::exists(c));

  // --into one of the inputs, also spelt another way.
  const fs::path same = dir_ / "." / "alpha.db";
  message = error_of<MergeError>([&] { merge_databases({older, a}, same); });
  EXPECT_CONTAINS(message, "--into '" + same.string() + "' is also an input ('" + a.string());

  // --into a file that is not ours.
  message = error_of<MergeError>([&] { merge_databases({a}, foreign); });
  EXPECT_CONTAINS(message, "--into '" + foreign.string() + "' is not a TransferLab results");

  RawDb raw(a);
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM runs"), "1");
  EXPECT_EQ(raw.scalar("PRAGMA integrity_check"), "ok");
  RawDb raw_foreign(foreign);
  EXPECT_EQ(raw_foreign.scalar("SELECT group_concat(name) FROM sqlite_master"), "invoices");
}

TEST_F(StoreReliabilityTest, MergeOnAFullDiskWritesNothingOfTheFailingInput) {
  const fs::path a = dir_ / "alpha.db", b = dir_ / "beta.db", c = dir_ / "merged.db";
  write_machine(a, "alpha", {"finetune"}, 2);
  write_machine(b, "beta", {"scratch", "finetune"}, 3);
  {
    FullDiskVfs disk;
    merge_databases({a}, c);
    disk.set_full(true);
    const std::string message = error_of([&] { merge_databases({b}, c); });
    EXPECT_CONTAINS(message, fmt::format("merging '{}' into '{}' failed", b.string(), c.string()));
    EXPECT_CONTAINS(message, "the disk is full");
    EXPECT_CONTAINS(message, "nothing of it was written");
    EXPECT_GT(disk.refused(), 0);
    disk.set_full(false);
    RawDb raw(c);
    EXPECT_EQ(raw.scalar("SELECT count(*) FROM runs"), "2");
    EXPECT_EQ(raw.scalar("SELECT count(*) FROM metrics"), std::to_string(2 * 33));
    EXPECT_EQ(raw.scalar("PRAGMA integrity_check"), "ok");
  }
  // Space again: the same merge goes through.
  const MergeReport report = merge_databases({a, b}, c);
  EXPECT_EQ(report.inputs.at(0).duplicates_skipped, 2);
  EXPECT_EQ(report.inputs.at(1).runs_merged, 6);
  EXPECT_EQ(report.output_runs, 8);
  Store store(c, /*create=*/false);
  EXPECT_EQ(store.integrity_check(), "ok");
}

TEST_F(StoreReliabilityTest, MergeIntoADatabaseThatProcessesWriteTo) {
  const fs::path b = dir_ / "beta.db";
  write_machine(b, "beta", {"scratch", "finetune"}, 3);
  std::vector<int64_t> runs;
  {
    Store store(db_path_);
    for (int i = 0; i < 4; ++i) {
      runs.push_back(store.create_run(sample_run("live", "here", i, "finetune")));
    }
  }
  // Child 0 merges while children 1-4 keep writing metrics to the same database.
  const auto codes = run_children(5, [&](int index) {
    if (index == 0) {
      const MergeReport report = merge_databases({b}, db_path_);
      if (report.inputs.at(0).runs_merged != 6) _exit(5);
      return;
    }
    Store store(db_path_, /*create=*/false);
    for (int batch = 0; batch < 100; ++batch) {
      std::vector<MetricRow> rows;
      for (int i = 0; i < 10; ++i) rows.push_back({"loss", batch * 10 + i, batch, 0.5, 0});
      store.write_metrics(runs[static_cast<size_t>(index - 1)], rows);
    }
  });
  for (size_t i = 0; i < codes.size(); ++i) EXPECT_EQ(codes[i], 0) << "child " << i;
  RawDb raw(db_path_);
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM runs"), "10");
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM metrics WHERE run_id <= 4"), "4000");
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM metrics WHERE run_id > 4"), std::to_string(6 * 33));
  Store store(db_path_, /*create=*/false);
  EXPECT_EQ(store.integrity_check(), "ok");
}

}  // namespace
}  // namespace tlab
