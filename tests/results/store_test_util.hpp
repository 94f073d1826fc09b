#pragma once
// Shared by the store tests: a plain SQLite connection, exception capture, and a way to run
// many processes against one database at once.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "store/store.hpp"

namespace tlab::store_test {

namespace fs = std::filesystem;
inline constexpr double kInf = std::numeric_limits<double>::infinity();
inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
using Rows = std::vector<std::vector<std::string>>;

/// A plain SQLite connection, to look at a file the way sqlite3 or pandas do.
class RawDb {
 public:
  explicit RawDb(const fs::path& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
        SQLITE_OK) {
      ADD_FAILURE() << "cannot open " << path << ": " << sqlite3_errmsg(db_);
    }
    sqlite3_busy_timeout(db_, 10000);
  }
  ~RawDb() { sqlite3_close_v2(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  void exec(const std::string& sql) {
    char* error = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
      ADD_FAILURE() << sql << ": " << (error ? error : "?");
    }
    sqlite3_free(error);
  }

  /// All rows of `sql` as text; NULL reads as "NULL".
  Rows rows(const std::string& sql) {
    Rows result;
    sqlite3_stmt* statement = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &statement, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db_);
      return result;
    }
    int rc;
    while ((rc = sqlite3_step(statement)) == SQLITE_ROW) {
      std::vector<std::string> row;
      for (int i = 0; i < sqlite3_column_count(statement); ++i) {
        const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(statement, i));
        row.emplace_back(text ? text : "NULL");
      }
      result.push_back(std::move(row));
    }
    if (rc != SQLITE_DONE) ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db_);
    sqlite3_finalize(statement);
    return result;
  }

  std::string scalar(const std::string& sql) {
    const auto result = rows(sql);
    if (result.empty() || result[0].empty()) {
      ADD_FAILURE() << "no result for " << sql;
      return "";
    }
    return result[0][0];
  }

  double real(const std::string& sql) {
    sqlite3_stmt* statement = nullptr;
    double value = kNaN;
    sqlite3_prepare_v2(db_, sql.c_str(), -1, &statement, nullptr);
    if (sqlite3_step(statement) == SQLITE_ROW) {
      value = sqlite3_column_double(statement, 0);
    } else {
      ADD_FAILURE() << "no row for " << sql;
    }
    sqlite3_finalize(statement);
    return value;
  }

 private:
  sqlite3* db_ = nullptr;
};

/// Runs `action` and returns the message of the exception of type E it throws ("" and a
/// failure if none).
template <class E = StoreError>
inline std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected another exception type, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected an exception, nothing was thrown";
  return "";
}

#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "expected to find '" << (part) << "' in:\n  " << (text)

/// Forks `count` children that start together and run `body(index)`; returns their exit codes
/// (128 + signal when killed). A child exits 3 on a StoreError that says "database is locked",
/// 1 on another StoreError, 2 on any other exception, else 0 (or what `body` passes to _exit).
/// The caller must hold no open Store: connections must not cross fork().
inline std::vector<int> run_children(int count, const std::function<void(int)>& body) {
  int start[2];
  if (pipe(start) != 0) {
    ADD_FAILURE() << "pipe failed";
    return {};
  }
  std::fflush(nullptr);
  std::vector<pid_t> pids;
  for (int index = 0; index < count; ++index) {
    const pid_t pid = fork();
    if (pid == 0) {
      close(start[1]);
      char byte;
      while (read(start[0], &byte, 1) < 0) {
      }  // end of file when the parent closes its end: all start at once
      int code = 0;
      try {
        body(index);
      } catch (const StoreError& e) {
        std::cerr << "child " << index << ": " << e.what() << std::endl;
        code = std::string(e.what()).find("database is locked") != std::string::npos ? 3 : 1;
      } catch (const std::exception& e) {
        std::cerr << "child " << index << ": " << e.what() << std::endl;
        code = 2;
      }
      _exit(code);
    }
    if (pid < 0) ADD_FAILURE() << "fork failed";
    pids.push_back(pid);
  }
  close(start[0]);
  close(start[1]);
  std::vector<int> codes;
  for (pid_t pid : pids) {
    int status = 0;
    if (pid <= 0 || waitpid(pid, &status, 0) != pid) {
      codes.push_back(-1);
    } else if (WIFEXITED(status)) {
      codes.push_back(WEXITSTATUS(status));
    } else {
      codes.push_back(128 + WTERMSIG(status));
    }
  }
  return codes;
}

/// A fresh folder per test, removed afterwards, and the path of a results database in it:
/// <temp>/<prefix>_<pid>_<test name>_<n>/results.db.
class TempDbTest : public ::testing::Test {
 protected:
  explicit TempDbTest(std::string prefix) : prefix_(std::move(prefix)) {}
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = fs::temp_directory_path() /
           fmt::format("{}_{}_{}_{}", prefix_, getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name(), counter++);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    db_path_ = dir_ / "results.db";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  fs::path dir_;
  fs::path db_path_;

 private:
  std::string prefix_;
};

}  // namespace tlab::store_test
