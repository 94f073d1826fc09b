#pragma once
// The one SQLite wrapper of the host: a connection that closes itself and a statement that binds,
// steps and reads columns. Failures throw sqlite::Failure with SQLite's extended result code and
// message; each user (the Store, merge, the SLURM state) turns it into its own error with
// context (which file, what was being done, how to fix it). Retries, transactions and statement
// caching are the Store's business, not this file's.

#include <sqlite3.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace tlab::sqlite {

/// An SQLite call failed; `code()` is the extended result code, the message SQLite's.
class Failure : public std::runtime_error {
 public:
  Failure(int code, const std::string& message) : std::runtime_error(message), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

/// Whether `code` means that another connection holds a lock (worth retrying).
inline bool is_busy(int code) {
  return (code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED;
}

/// `path` as an SQLite URI ("file:/abs/path?mode=ro"): absolute, with the characters that URIs
/// reserve percent-encoded. Open it with SQLITE_OPEN_URI.
inline std::string uri(const std::filesystem::path& path, const std::string& query) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string text = "file:";
  for (const char c : std::filesystem::absolute(path).lexically_normal().string()) {
    if (c == '%' || c == '?' || c == '#') {
      const auto byte = static_cast<unsigned char>(c);
      text += '%';
      text += kHex[byte >> 4];
      text += kHex[byte & 0xf];
    } else {
      text += c;
    }
  }
  return query.empty() ? text : text + "?" + query;
}

struct StatementFinalizer {
  void operator()(sqlite3_stmt* statement) const { sqlite3_finalize(statement); }
};
/// A prepared statement that finalizes itself.
using StatementHandle = std::unique_ptr<sqlite3_stmt, StatementFinalizer>;

/// One connection, with extended result codes and a busy timeout; closes itself.
class Database {
 public:
  /// Opens `name` (a path, or a URI when `flags` has SQLITE_OPEN_URI) with `flags`
  /// (SQLITE_OPEN_READONLY, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, ...). A busy database
  /// is waited for up to `busy_timeout` per statement.
  Database(const std::string& name, int flags, std::chrono::milliseconds busy_timeout) {
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(name.c_str(), &raw, flags, nullptr);
    db_ = raw;  // a handle to close comes back even when opening fails
    if (rc != SQLITE_OK) {
      const Failure failure(rc, db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
      sqlite3_close_v2(db_);
      throw failure;
    }
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, static_cast<int>(busy_timeout.count()));
  }
  ~Database() {
    if (db_ != nullptr) sqlite3_close_v2(db_);
  }
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  sqlite3* get() const { return db_; }

  /// Forgets the handle without closing it: for a connection inherited through fork(), whose
  /// closing could disturb the parent's locks and WAL files.
  void release() { db_ = nullptr; }

  /// Throws the failure `rc` with SQLite's message for it.
  [[noreturn]] void fail(int rc) const {
    throw Failure(rc, db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
  }

  /// Runs one or more statements that return no rows.
  void exec(const std::string& sql) {
    const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) fail(rc);
  }

  /// `sql` prepared; `persistent` for a statement that is kept and reused.
  StatementHandle prepare(const std::string& sql, bool persistent = false) {
    sqlite3_stmt* raw = nullptr;
    const int rc = sqlite3_prepare_v3(db_, sql.c_str(), -1,
                                      persistent ? SQLITE_PREPARE_PERSISTENT : 0, &raw, nullptr);
    StatementHandle handle(raw);
    if (rc != SQLITE_OK) fail(rc);
    return handle;
  }

  /// A row with every value as text; NULL as "" with `nulls` marking which.
  struct Row {
    std::vector<std::string> values;
    std::vector<bool> nulls;
  };
  /// Runs `sql` with `text` bound to its parameters in order and returns every row as text.
  std::vector<Row> rows(const std::string& sql, const std::vector<std::string>& text = {});

  /// The first column of the first row of `sql` as an integer; 0 when there is no row.
  int64_t integer(const std::string& sql, const std::vector<std::string>& text = {}) {
    const auto result = rows(sql, text);
    return result.empty() || result[0].values.empty() ? 0 : std::stoll(result[0].values[0]);
  }

  /// Number of rows the last INSERT, UPDATE or DELETE changed.
  int64_t changes() const { return sqlite3_changes64(db_); }
  int64_t last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }

  /// Rolls back the open transaction, if any (never throws: used on the way out of a failure).
  void rollback() {
    if (db_ != nullptr && !sqlite3_get_autocommit(db_))
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }

 private:
  sqlite3* db_ = nullptr;
};

/// One use of a prepared statement (owned elsewhere, e.g. a cache): bind, step, read columns.
/// Resets the statement and clears its bindings when it goes out of scope, which also ends an
/// implicit read transaction.
class Statement {
 public:
  Statement(const Database& db, sqlite3_stmt* statement) : db_(db), statement_(statement) {}
  ~Statement() {
    sqlite3_reset(statement_);
    sqlite3_clear_bindings(statement_);
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind_int(int index, int64_t value) {
    return check(sqlite3_bind_int64(statement_, index, value));
  }
  /// NaN is bound as NULL (SQLite would do the same, silently).
  Statement& bind_real(int index, double value) {
    if (std::isnan(value)) return bind_null(index);
    return check(sqlite3_bind_double(statement_, index, value));
  }
  Statement& bind_text(int index, const std::string& value) {
    return check(sqlite3_bind_text64(statement_, index, value.data(), value.size(),
                                     SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  /// "" is bound as NULL ("unknown").
  Statement& bind_text_or_null(int index, const std::string& value) {
    return value.empty() ? bind_null(index) : bind_text(index, value);
  }
  Statement& bind_null(int index) { return check(sqlite3_bind_null(statement_, index)); }

  /// Steps once: true when a row is available.
  bool step() {
    const int rc = sqlite3_step(statement_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    db_.fail(rc);
  }
  /// Executes a statement that returns no rows; keeps the bindings so that it can run again
  /// after some of them are changed.
  void run() {
    while (step()) {
    }
    sqlite3_reset(statement_);
  }

  int column_count() const { return sqlite3_column_count(statement_); }
  int type_at(int column) const { return sqlite3_column_type(statement_, column); }
  int64_t int_at(int column) const { return sqlite3_column_int64(statement_, column); }
  /// NULL reads as a quiet NaN (it was stored for one).
  double real_at(int column) const {
    if (type_at(column) == SQLITE_NULL) return std::numeric_limits<double>::quiet_NaN();
    return sqlite3_column_double(statement_, column);
  }
  /// NULL reads as "".
  std::string text_at(int column) const {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(statement_, column));
    if (text == nullptr) return {};
    return std::string(text, static_cast<size_t>(sqlite3_column_bytes(statement_, column)));
  }

 private:
  Statement& check(int rc) {
    if (rc != SQLITE_OK) db_.fail(rc);
    return *this;
  }

  const Database& db_;
  sqlite3_stmt* statement_;
};

inline std::vector<Database::Row> Database::rows(const std::string& sql,
                                                 const std::vector<std::string>& text) {
  const StatementHandle handle = prepare(sql);
  Statement statement(*this, handle.get());
  for (size_t i = 0; i < text.size(); ++i) statement.bind_text(static_cast<int>(i + 1), text[i]);
  std::vector<Row> result;
  while (statement.step()) {
    Row row;
    for (int column = 0; column < statement.column_count(); ++column) {
      row.nulls.push_back(statement.type_at(column) == SQLITE_NULL);
      row.values.push_back(statement.text_at(column));
    }
    result.push_back(std::move(row));
  }
  return result;
}

}  // namespace tlab::sqlite
