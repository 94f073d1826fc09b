// Tests of the host's single-home utilities without LibTorch: the durable atomic write of the SDK
// (tlab/sdk/files.hpp), the SQLite wrapper (store/sqlite.hpp) and the run statuses.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

// Relative: this binary does not have the SDK's include folder on its include path (yet).
#include "results/store_test_util.hpp"
#include "store/sqlite.hpp"
#include "store/store.hpp"
#include "tlab/sdk/files.hpp"

namespace tlab {
namespace {

namespace fs = std::filesystem;
using store_test::error_of;
using ::testing::HasSubstr;

class AtomicWrite : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tlab_atomic_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ignored;
    fs::permissions(dir_, fs::perms::owner_all, ignored);
    fs::remove_all(dir_, ignored);
  }

  static std::string read(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  }
  /// The names in the test's folder: a temporary file left behind shows up here.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& entry : fs::directory_iterator(dir_)) out.push_back(entry.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }

  fs::path dir_;
};

TEST_F(AtomicWrite, ReplacesTheWholeContentAndLeavesNoTemporaryFile) {
  const fs::path file = dir_ / "summary.json";
  write_file_atomic(file, std::string(10000, 'x'));
  EXPECT_EQ(read(file), std::string(10000, 'x'));
  write_file_atomic(file, "short");  // shorter: nothing of the old content remains
  EXPECT_EQ(read(file), "short");
  write_file_atomic(file, std::string("a\0b", 3));
  EXPECT_EQ(read(file), std::string("a\0b", 3));
  write_file_atomic(file, "");
  EXPECT_EQ(read(file), "");
  EXPECT_EQ(names(), std::vector<std::string>{"summary.json"});
}

TEST_F(AtomicWrite, WithAWriterThatWritesThePathItIsGiven) {
  const fs::path file = dir_ / "weights.bin";
  write_file_atomic(file, "old");
  fs::path given;
  write_file_atomic_with(file, [&](const fs::path& temporary) {
    given = temporary;
    EXPECT_EQ(temporary.parent_path(), dir_);  // same folder: the rename stays atomic
    EXPECT_NE(temporary, file);
    std::ofstream(temporary, std::ios::binary) << "new content";
    EXPECT_EQ(read(file), "old");  // the target is untouched until the writer is done
  });
  EXPECT_EQ(read(file), "new content");
  EXPECT_FALSE(fs::exists(given));
  EXPECT_EQ(names(), std::vector<std::string>{"weights.bin"});
}

TEST_F(AtomicWrite, AWriterThatThrowsLeavesTheOldFileAndNoTemporaryFile) {
  const fs::path file = dir_ / "cache.pt";
  write_file_atomic(file, "old");
  EXPECT_THROW(write_file_atomic_with(file,
                                      [&](const fs::path& temporary) {
                                        std::ofstream(temporary) << "half";
                                        throw std::invalid_argument("disk full");
                                      }),
               std::invalid_argument);
  EXPECT_EQ(read(file), "old");
  EXPECT_EQ(names(), std::vector<std::string>{"cache.pt"});
}

TEST_F(AtomicWrite, AMissingFolderIsAnErrorNamingThePath) {
  const fs::path file = dir_ / "missing" / "out.json";
  const std::string message = error_of<std::runtime_error>([&] { write_file_atomic(file, "x"); });
  EXPECT_EQ(message, "cannot write '" + file.string() +
                         "': No such file or directory; check that its folder exists, is "
                         "writable and has free space");
  EXPECT_THAT(
      error_of<std::runtime_error>([&] { write_file_atomic_with(file, [](const fs::path&) {}); }),
      HasSubstr("cannot write '" + file.string() + "': No such file or directory"));
}

TEST_F(AtomicWrite, AFolderThatIsAFileIsAnErrorNamingThePath) {
  write_file_atomic(dir_ / "plain", "x");
  const fs::path file = dir_ / "plain" / "out.json";
  EXPECT_THAT(error_of<std::runtime_error>([&] { write_file_atomic(file, "x"); }),
              HasSubstr("cannot write '" + file.string() + "': Not a directory"));
}

TEST_F(AtomicWrite, AReadOnlyFolderIsAnErrorNamingThePath) {
  if (geteuid() == 0) GTEST_SKIP() << "root writes into read-only folders; run as a user";
  fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec);
  const fs::path file = dir_ / "out.json";
  EXPECT_THAT(error_of<std::runtime_error>([&] { write_file_atomic(file, "x"); }),
              HasSubstr("cannot write '" + file.string() + "': Permission denied"));
}

TEST_F(AtomicWrite, AFailedRenameRemovesTheTemporaryFile) {
  // A non-empty folder where the file should go: rename(2) refuses to replace it.
  const fs::path file = dir_ / "taken";
  fs::create_directories(file / "inside");
  EXPECT_THAT(error_of<std::runtime_error>([&] { write_file_atomic(file, "x"); }),
              HasSubstr("cannot write '" + file.string() + "': "));
  EXPECT_EQ(names(), std::vector<std::string>{"taken"});
}

TEST_F(AtomicWrite, SyncFolderNamesAMissingFolder) {
  EXPECT_NO_THROW(sync_folder(dir_));
  EXPECT_EQ(error_of<std::runtime_error>([&] { sync_folder(dir_ / "missing"); }),
            "cannot sync the folder '" + (dir_ / "missing").string() +
                "' (which makes a new file in it durable): No such file or directory");
}

// --- The SQLite wrapper ------------------------------------------------------------------------

TEST(SqliteWrapper, BindsStepsAndReadsRowsAsText) {
  sqlite::Database db(":memory:", SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                      std::chrono::milliseconds(100));
  db.exec("CREATE TABLE t (a INTEGER, b REAL, c TEXT)");
  {
    const sqlite::StatementHandle insert = db.prepare("INSERT INTO t VALUES (?, ?, ?)");
    sqlite::Statement statement(db, insert.get());
    statement.bind_int(1, 7).bind_real(2, 0.5).bind_text(3, "x").run();
    statement.bind_int(1, 8).bind_real(2, std::nan("")).bind_text_or_null(3, "").run();
  }
  EXPECT_EQ(db.changes(), 1);
  EXPECT_EQ(db.last_insert_rowid(), 2);
  const auto rows = db.rows("SELECT a, b, c FROM t WHERE a >= ? ORDER BY a", {"7"});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].values, (std::vector<std::string>{"7", "0.5", "x"}));
  EXPECT_EQ(rows[1].values, (std::vector<std::string>{"8", "", ""}));
  EXPECT_EQ(rows[1].nulls, (std::vector<bool>{false, true, true}));
  EXPECT_EQ(db.integer("SELECT count(*) FROM t"), 2);
}

TEST(SqliteWrapper, FailuresCarryTheExtendedCodeAndSqlitesMessage) {
  sqlite::Database db(":memory:", SQLITE_OPEN_READWRITE, std::chrono::milliseconds(100));
  try {
    db.exec("SELECT * FROM nowhere");
    FAIL() << "expected a failure";
  } catch (const sqlite::Failure& failure) {
    EXPECT_EQ(failure.code() & 0xff, SQLITE_ERROR);
    EXPECT_STREQ(failure.what(), "no such table: nowhere");
  }
  try {
    sqlite::Database missing(sqlite::uri("/nonexistent/folder/x.db", "mode=ro"),
                             SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, std::chrono::milliseconds(1));
    FAIL() << "expected a failure";
  } catch (const sqlite::Failure& failure) {
    EXPECT_EQ(failure.code() & 0xff, SQLITE_CANTOPEN);
    EXPECT_STREQ(failure.what(), "unable to open database file");
  }
}

TEST(SqliteWrapper, UriEncodesTheCharactersUrisReserve) {
  EXPECT_EQ(sqlite::uri("/a/b%c?d#e.db", "mode=ro"), "file:/a/b%25c%3Fd%23e.db?mode=ro");
  EXPECT_EQ(sqlite::uri("/a/./b.db", ""), "file:/a/b.db");
}

// --- Run statuses ------------------------------------------------------------------------------

TEST(RunStatusText, RoundTripsEveryStatusWithTheTextTheDatabaseKeeps) {
  const std::vector<std::pair<RunStatus, std::string>> all = {{RunStatus::kQueued, "queued"},
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
  for (const auto& [status, text] : all) {
    EXPECT_EQ(to_string(status), text);
    EXPECT_EQ(parse_run_status(text), status) << text;
    EXPECT_EQ(is_terminal(status), status != RunStatus::kQueued && status != RunStatus::kRunning);
  }
}

TEST(RunStatusText, UnknownTextIsAnErrorListingTheStatuses) {
  EXPECT_EQ(
      error_of<StoreError>([] { parse_run_status("Finished"); }),
      "'Finished' is not a run status; expected one of queued, running, finished, failed, "
      "crashed, killed, timeout, diverged, oom, lost, cancelled, node_fail, pruned (a database "
      "written by a newer tlab? read it with that tlab)");
}

}  // namespace
}  // namespace tlab
