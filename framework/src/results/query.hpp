#pragma once
// Selecting runs: `--where` expressions with AND, OR, NOT and parentheses over params
// (`strategy.plugin = 'dann'`), summaries (`target/test/acc > 0.8`) and run columns (`status`,
// `id`, `name`, `seed`, `host`, ...), then sort and limit. Used by every `tlab results` command.

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "store/store.hpp"

namespace tlab {

/// A `--where` expression that cannot be parsed or names an unknown field. The message quotes
/// the expression, the character position (with a caret line), and the nearest valid field.
class QueryError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A parsed `--where` expression (grammar and examples: docs/results.md). A field name is
/// looked up as a run column (id, name, status, reason, seed, device, host, uuid, run_key,
/// experiment, created_at, started_at, ended_at), then a param, then a summary: a name that is
/// both a param and a summary means the param. Numbers compare numerically, strings
/// lexicographically; a value of another kind (a string param against a number) never matches.
/// `= nan` matches NaN values; an empty run column counts as NULL.
class RunFilter {
 public:
  /// Parses `where`; "" matches every run. Throws QueryError.
  static RunFilter parse(const std::string& where);
  /// Whether `run` satisfies the expression. A field the run lacks compares as NULL (false,
  /// except under `IS NULL`).
  bool matches(const RunSummaryRow& run) const;
  /// Every field the expression names, for checking against the database.
  const std::vector<std::string>& fields() const;

  RunFilter();
  ~RunFilter();
  RunFilter(RunFilter&&) noexcept;
  RunFilter& operator=(RunFilter&&) noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct QueryOptions {
  std::string where;              ///< A RunFilter expression; "" = all runs.
  std::vector<std::string> sort;  ///< Fields, each optionally followed by " desc" / " asc".
  int64_t limit = 0;              ///< 0 = no limit.
};

/// The runs of `store` that match `options`, sorted and limited. Throws QueryError for a bad
/// expression or a field that no run in the database has (naming the nearest one).
std::vector<RunSummaryRow> select_runs(Store& store, const QueryOptions& options);

/// Calls `visit` with each run select_runs gives, in its order, with its errors. Without a
/// sort the runs are streamed (Store::for_each_run) and none is kept: the memory of one run,
/// whatever the database holds. `visit` may be called before an error about a field is thrown
/// (the fields are checked as the runs go by): collect, and print once it returns.
void for_each_selected_run(Store& store, const QueryOptions& options,
                           const std::function<void(const RunSummaryRow&)>& visit);

}  // namespace tlab
