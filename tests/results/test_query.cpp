// Tests of run selection (`--where` expressions, sort, limit), table rendering, and the
// `tlab results list | show | export` commands on a database the tests make.

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "results/query.hpp"
#include "results/store_test_util.hpp"
#include "results/table.hpp"
#include "store/store.hpp"

namespace tlab {
namespace {

namespace fs = std::filesystem;
using store_test::TempDbTest;
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "expected to find '" << (part) << "' in:\n  " << (text)

/// A run as list_runs returns it, built by hand.
RunSummaryRow make_row(int64_t id, const std::string& status, std::vector<ParamEntry> params,
                       std::vector<std::pair<std::string, double>> summaries) {
  RunSummaryRow r;
  r.id = id;
  r.name = "run" + std::to_string(id);
  r.status = status;
  r.seed = id;
  r.device = "cpu";
  r.host = "node-1";
  r.uuid = fmt::format("{:08x}-0000-4000-8000-000000000000", id * 0x1111);
  r.params = std::move(params);
  r.summaries = std::move(summaries);
  return r;
}

ParamEntry str(const std::string& key, const std::string& v) { return {key, v, "string"}; }
ParamEntry num(const std::string& key, double v) { return {key, v, "float"}; }
ParamEntry integer(const std::string& key, int64_t v) { return {key, v, "int"}; }
ParamEntry boolean(const std::string& key, bool v) { return {key, v, "bool"}; }

/// Four runs: dann/mmd/scratch/dann with a few params and summaries.
std::vector<RunSummaryRow> sample_rows() {
  return {
      make_row(1, "finished",
               {str("strategy.plugin", "dann"), num("train.lr", 0.001), integer("target.shots", 5),
                boolean("train.amp", true), str("adapters.0.plugin", "linear_head")},
               {{"target/test/acc", 0.81}, {"run/wall_seconds", 12.5}}),
      make_row(2, "finished",
               {str("strategy.plugin", "mmd"), num("train.lr", 0.01), integer("target.shots", 10),
                boolean("train.amp", false), str("adapters.0.plugin", "mlp_head")},
               {{"target/test/acc", 0.74}, {"run/wall_seconds", 9.0}}),
      make_row(3, "failed",
               {str("strategy.plugin", "scratch"), num("train.lr", 0.001),
                integer("target.shots", 5), str("model.name", "it's")},
               {{"target/test/acc", kNaN}, {"run/wall_seconds", 1.0}}),
      make_row(4, "finished",
               {str("strategy.plugin", "dann"), num("train.lr", 0.1), integer("target.shots", 20)},
               {{"target/test/acc", kInf}}),
  };
}

/// The ids of the rows of sample_rows() that `where` matches.
std::vector<int64_t> matching(const std::string& where) {
  const RunFilter filter = RunFilter::parse(where);
  std::vector<int64_t> ids;
  for (const auto& r : sample_rows())
    if (filter.matches(r)) ids.push_back(r.id);
  return ids;
}

using Ids = std::vector<int64_t>;

/// The message of the QueryError `action` throws ("" and a failure if none).
std::string query_error(const std::function<void()>& action) {
  try {
    action();
  } catch (const QueryError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a QueryError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected a QueryError, nothing was thrown";
  return "";
}

std::string parse_error(const std::string& where) {
  return query_error([&] { RunFilter::parse(where); });
}

// ---------------------------------------------------------------------------------------------
// Parsing and matching

TEST(QueryParseTest, EmptyExpressionMatchesEveryRun) {
  EXPECT_EQ(matching(""), (Ids{1, 2, 3, 4}));
  EXPECT_EQ(matching("   "), (Ids{1, 2, 3, 4}));
  RunFilter filter;  // default-constructed
  EXPECT_TRUE(filter.matches(sample_rows()[0]));
  EXPECT_TRUE(filter.fields().empty());
}

TEST(QueryParseTest, ComparesStringsNumbersAndBooleans) {
  EXPECT_EQ(matching("strategy.plugin = 'dann'"), (Ids{1, 4}));
  EXPECT_EQ(matching("strategy.plugin == 'dann'"), (Ids{1, 4}));
  EXPECT_EQ(matching("strategy.plugin != 'dann'"), (Ids{2, 3}));
  EXPECT_EQ(matching("strategy.plugin <> 'dann'"), (Ids{2, 3}));
  EXPECT_EQ(matching("strategy.plugin < 'n'"), (Ids{1, 2, 4}));  // lexicographic
  EXPECT_EQ(matching("target/test/acc > 0.8"), (Ids{1, 4}));
  EXPECT_EQ(matching("target/test/acc >= 0.74"), (Ids{1, 2, 4}));
  EXPECT_EQ(matching("target/test/acc < 0.8"), (Ids{2}));  // NaN is not < 0.8
  EXPECT_EQ(matching("target/test/acc <= 0.81"), (Ids{1, 2}));
  EXPECT_EQ(matching("train.lr = 1e-3"), (Ids{1, 3}));
  EXPECT_EQ(matching("train.lr=0.001"), (Ids{1, 3}));  // no spaces needed
  EXPECT_EQ(matching("target.shots >= 10"), (Ids{2, 4}));
  EXPECT_EQ(matching("target.shots = 5.0"), (Ids{1, 3}));  // int param vs float literal
  EXPECT_EQ(matching("target.shots > -1"), (Ids{1, 2, 3, 4}));
  EXPECT_EQ(matching("target.shots>-1"), (Ids{1, 2, 3, 4}));
  EXPECT_EQ(matching("train.amp = true"), (Ids{1}));
  EXPECT_EQ(matching("train.amp = FALSE"), (Ids{2}));
  EXPECT_EQ(matching("train.amp != true"), (Ids{2}));  // runs without it are not != either
  EXPECT_EQ(matching("adapters.0.plugin = 'mlp_head'"), (Ids{2}));
}

TEST(QueryParseTest, StringAndNumberNeverCompareEqual) {
  EXPECT_EQ(matching("strategy.plugin = 5"), Ids{});
  EXPECT_EQ(matching("strategy.plugin != 5"), Ids{});
  EXPECT_EQ(matching("target.shots = '5'"), Ids{});
  EXPECT_EQ(matching("train.amp = 1"), Ids{});
}

TEST(QueryParseTest, RunColumns) {
  EXPECT_EQ(matching("status = 'finished'"), (Ids{1, 2, 4}));
  EXPECT_EQ(matching("id > 2"), (Ids{3, 4}));
  EXPECT_EQ(matching("seed = 2"), (Ids{2}));
  EXPECT_EQ(matching("name = 'run3'"), (Ids{3}));
  EXPECT_EQ(matching("host = 'node-1' AND device = 'cpu'"), (Ids{1, 2, 3, 4}));
  EXPECT_EQ(matching("uuid LIKE '00002222%'"), (Ids{2}));
  // Empty text columns (NULL in the database) are NULL.
  EXPECT_EQ(matching("reason IS NULL"), (Ids{1, 2, 3, 4}));
  EXPECT_EQ(matching("ended_at IS NOT NULL"), Ids{});
  EXPECT_EQ(matching("reason = ''"), (Ids{1, 2, 3, 4}));
}

TEST(QueryParseTest, KeywordsAreCaseInsensitive) {
  EXPECT_EQ(matching("strategy.plugin = 'dann' and target.shots = 5"), (Ids{1}));
  EXPECT_EQ(matching("strategy.plugin = 'dann' AnD target.shots = 5"), (Ids{1}));
  EXPECT_EQ(matching("status = 'failed' oR id = 1"), (Ids{1, 3}));
  EXPECT_EQ(matching("not status = 'failed'"), (Ids{1, 2, 4}));
  EXPECT_EQ(matching("strategy.plugin in ('mmd')"), (Ids{2}));
  EXPECT_EQ(matching("strategy.plugin Like 'm%'"), (Ids{2}));
  EXPECT_EQ(matching("model.name is not null"), (Ids{3}));
  EXPECT_EQ(matching("train.amp = True"), (Ids{1}));
}

TEST(QueryParseTest, AndBindsTighterThanOr) {
  // a OR b AND c == a OR (b AND c)
  EXPECT_EQ(matching("id = 1 OR strategy.plugin = 'dann' AND target.shots = 20"), (Ids{1, 4}));
  EXPECT_EQ(matching("id = 3 OR id = 2 AND status = 'failed'"), (Ids{3}));
  EXPECT_EQ(matching("status = 'failed' AND id = 3 OR id = 2"), (Ids{2, 3}));
  // Parentheses change it.
  EXPECT_EQ(matching("(id = 3 OR id = 2) AND status = 'failed'"), (Ids{3}));
  EXPECT_EQ(matching("(id = 1 OR strategy.plugin = 'dann') AND target.shots = 20"), (Ids{4}));
  EXPECT_EQ(matching("((id = 1))"), (Ids{1}));
  EXPECT_EQ(matching("id = 1 OR id = 2 OR id = 3"), (Ids{1, 2, 3}));
  EXPECT_EQ(matching("id >= 1 AND id <= 3 AND id != 2"), (Ids{1, 3}));
}

TEST(QueryParseTest, NotBindsTighterThanAnd) {
  EXPECT_EQ(matching("NOT id = 1 AND status = 'finished'"), (Ids{2, 4}));
  EXPECT_EQ(matching("NOT (id = 1 AND status = 'finished')"), (Ids{2, 3, 4}));
  EXPECT_EQ(matching("NOT NOT id = 1"), (Ids{1}));
  EXPECT_EQ(matching("NOT (id = 1 OR id = 2)"), (Ids{3, 4}));
  // A missing field is false, so NOT of it is true.
  EXPECT_EQ(matching("NOT model.name = 'x'"), (Ids{1, 2, 3, 4}));
  EXPECT_EQ(matching("model.name != 'x'"), (Ids{3}));
}

TEST(QueryParseTest, InLists) {
  EXPECT_EQ(matching("strategy.plugin IN ('dann', 'mmd')"), (Ids{1, 2, 4}));
  EXPECT_EQ(matching("strategy.plugin NOT IN ('dann', 'mmd')"), (Ids{3}));
  EXPECT_EQ(matching("target.shots IN (5, 20)"), (Ids{1, 3, 4}));
  EXPECT_EQ(matching("target.shots IN (5,20)"), (Ids{1, 3, 4}));
  EXPECT_EQ(matching("id IN (2)"), (Ids{2}));
  // NOT IN on a missing field is false; NOT (... IN ...) is true.
  EXPECT_EQ(matching("model.name NOT IN ('a')"), (Ids{3}));
  EXPECT_EQ(matching("NOT model.name IN ('a')"), (Ids{1, 2, 3, 4}));
}

TEST(QueryParseTest, LikePatterns) {
  EXPECT_EQ(matching("adapters.0.plugin LIKE '%head'"), (Ids{1, 2}));
  EXPECT_EQ(matching("adapters.0.plugin LIKE 'm__\\_head'"), Ids{});  // no escapes
  EXPECT_EQ(matching("adapters.0.plugin LIKE 'm__%'"), (Ids{2}));
  EXPECT_EQ(matching("strategy.plugin LIKE '_a__'"), (Ids{1, 4}));
  EXPECT_EQ(matching("strategy.plugin LIKE 'DANN'"), Ids{});  // case-sensitive
  EXPECT_EQ(matching("strategy.plugin NOT LIKE 'd%'"), (Ids{2, 3}));
  EXPECT_EQ(matching("strategy.plugin LIKE '%'"), (Ids{1, 2, 3, 4}));
  EXPECT_EQ(matching("strategy.plugin LIKE '%%a%%n%'"), (Ids{1, 4}));
  EXPECT_EQ(matching("target.shots LIKE '1%'"), (Ids{2}));  // numbers as text
  EXPECT_EQ(matching("model.name LIKE 'it''s'"), (Ids{3}));
  EXPECT_EQ(matching("model.name NOT LIKE '%'"), Ids{});  // missing: false
}

TEST(QueryParseTest, IsNull) {
  EXPECT_EQ(matching("model.name IS NULL"), (Ids{1, 2, 4}));
  EXPECT_EQ(matching("model.name IS NOT NULL"), (Ids{3}));
  EXPECT_EQ(matching("run/wall_seconds IS NULL"), (Ids{4}));
  EXPECT_EQ(matching("model.name = null"), (Ids{1, 2, 4}));  // = null reads as IS NULL
  EXPECT_EQ(matching("model.name != NULL"), (Ids{3}));
  // A NaN summary is present: not NULL.
  EXPECT_EQ(matching("target/test/acc IS NULL"), Ids{});
}

TEST(QueryParseTest, NonFiniteValues) {
  EXPECT_EQ(matching("target/test/acc = nan"), (Ids{3}));
  EXPECT_EQ(matching("target/test/acc = NaN"), (Ids{3}));
  EXPECT_EQ(matching("target/test/acc != nan"), (Ids{1, 2, 4}));
  EXPECT_EQ(matching("target/test/acc = inf"), (Ids{4}));
  EXPECT_EQ(matching("target/test/acc = +Infinity"), (Ids{4}));
  EXPECT_EQ(matching("target/test/acc > -inf"), (Ids{1, 2, 4}));
  EXPECT_EQ(matching("target/test/acc > 1e308"), (Ids{4}));
  EXPECT_EQ(matching("target/test/acc < 1e999"), (Ids{1, 2}));  // overflows to inf
  EXPECT_EQ(matching("target/test/acc IN (nan, inf)"), (Ids{3, 4}));
}

TEST(QueryParseTest, QuotedFieldNames) {
  EXPECT_EQ(matching("`strategy.plugin` = 'mmd'"), (Ids{2}));
  EXPECT_EQ(matching("\"strategy.plugin\" = 'mmd'"), (Ids{2}));
  EXPECT_EQ(matching("`target/test/acc` > 0.8"), (Ids{1, 4}));
  EXPECT_EQ(matching("`model.name` = 'it''s'"), (Ids{3}));
}

TEST(QueryParseTest, ParamsWinOverSummariesOfTheSameName) {
  RunSummaryRow r = make_row(1, "finished", {num("score", 1.0)}, {{"score", 2.0}});
  EXPECT_TRUE(RunFilter::parse("score = 1").matches(r));
  EXPECT_FALSE(RunFilter::parse("score = 2").matches(r));
  // Run columns win over params.
  RunSummaryRow s = make_row(7, "finished", {integer("seed", 99), str("name", "p")}, {});
  EXPECT_TRUE(RunFilter::parse("seed = 7").matches(s));
  EXPECT_TRUE(RunFilter::parse("name = 'run7'").matches(s));
}

TEST(QueryParseTest, LargeIntegersCompareExactly) {
  RunSummaryRow r = make_row(1, "finished", {integer("data.big", (int64_t{1} << 62) + 1)}, {});
  EXPECT_TRUE(RunFilter::parse("data.big = 4611686018427387905").matches(r));
  EXPECT_FALSE(RunFilter::parse("data.big = 4611686018427387904").matches(r));
  EXPECT_TRUE(RunFilter::parse("data.big > 4611686018427387904").matches(r));
}

TEST(QueryParseTest, FieldsListsEveryNamedFieldOnce) {
  const RunFilter f = RunFilter::parse(
      "(a = 1 OR `b c` IS NULL) AND NOT a IN (1, 2) AND target/test/acc LIKE '%' AND d != 1");
  EXPECT_EQ(f.fields(), (std::vector<std::string>{"a", "b c", "target/test/acc", "d"}));
}

TEST(QueryParseTest, FilterCanBeMoved) {
  RunFilter a = RunFilter::parse("id = 2");
  RunFilter b = std::move(a);
  EXPECT_TRUE(b.matches(sample_rows()[1]));
  EXPECT_FALSE(b.matches(sample_rows()[0]));
  RunFilter c;
  c = std::move(b);
  EXPECT_TRUE(c.matches(sample_rows()[1]));
  EXPECT_EQ(c.fields(), std::vector<std::string>{"id"});
}

// ---------------------------------------------------------------------------------------------
// Error messages

TEST(QueryErrorTest, MissingValueNamesPositionAndCaret) {
  const std::string m = parse_error("target/test/acc >");
  EXPECT_CONTAINS(m, "--where 'target/test/acc >' at character 18: expected a value after '>'");
  EXPECT_CONTAINS(m, "found the end of the expression");
  EXPECT_CONTAINS(m, "\n  target/test/acc >\n                   ^");
  // The caret line: two spaces, then 17 spaces for the 17 characters before the position.
  EXPECT_EQ(m.substr(m.rfind('\n') + 1), "  " + std::string(17, ' ') + "^");
}

TEST(QueryErrorTest, UnquotedWordAsValueSuggestsQuotes) {
  const std::string m = parse_error("strategy.plugin = dann");
  EXPECT_CONTAINS(m, "at character 19: expected a value after '='");
  EXPECT_CONTAINS(m, "found 'dann'; quote text values: 'dann'");
  EXPECT_CONTAINS(parse_error("started_at > 2024-01-01"), "quote text values: '2024-01-01'");
  EXPECT_CONTAINS(parse_error("x = 1.2.3"), "found '1.2.3'");
  EXPECT_CONTAINS(parse_error("x = \"dann\""), "strings take single quotes: 'dann'");
}

TEST(QueryErrorTest, MissingOperator) {
  const std::string m = parse_error("target/test/acc 0.5");
  EXPECT_CONTAINS(m, "at character 17: expected an operator (=, ==, !=, <>, <, <=, >, >=, IN");
  EXPECT_CONTAINS(m, "after field 'target/test/acc', found '0.5'");
  EXPECT_CONTAINS(parse_error("a ! 1"), "for 'not equal' write != or <>");
  EXPECT_CONTAINS(parse_error("a"), "after field 'a', found the end of the expression");
}

TEST(QueryErrorTest, MissingField) {
  const std::string m = parse_error("a = 1 AND");
  EXPECT_CONTAINS(m, "at character 10: expected a field name");
  EXPECT_CONTAINS(m, "after 'AND', found the end of the expression");
  EXPECT_CONTAINS(parse_error("AND a = 1"), "at character 1: expected a field name");
  EXPECT_CONTAINS(parse_error("AND a = 1"), "found keyword 'AND'");
  EXPECT_CONTAINS(parse_error("AND a = 1"), "needs backquotes: `AND`");
  EXPECT_CONTAINS(parse_error("'dann' = strategy.plugin"),
                  "field names take backquotes or double quotes, strings single quotes");
  EXPECT_CONTAINS(parse_error("()"), "at character 2: expected a field name");
  EXPECT_CONTAINS(parse_error("NOT"), "after 'NOT', found the end of the expression");
}

TEST(QueryErrorTest, UnbalancedParentheses) {
  const std::string m = parse_error("(a = 1 OR b = 2");
  EXPECT_CONTAINS(m, "at character 16: expected ')' to close the '(' at character 1");
  const std::string extra = parse_error("a = 1)");
  EXPECT_CONTAINS(extra, "at character 6: expected AND, OR or the end of the expression");
  EXPECT_CONTAINS(extra, "this ')' has no matching '('");
}

TEST(QueryErrorTest, TrailingTokensAndSymbols) {
  const std::string m = parse_error("a = 1 b = 2");
  EXPECT_CONTAINS(m,
                  "at character 7: expected AND, OR or the end of the expression after '1', "
                  "found 'b'");
  EXPECT_CONTAINS(parse_error("a = 1 && b = 2"), "write AND and OR instead of && and ||");
  EXPECT_CONTAINS(parse_error("a = 1 || b = 2"), "write AND and OR instead of && and ||");
}

TEST(QueryErrorTest, UnterminatedStringsAndFields) {
  const std::string m = parse_error("name = 'abc");
  EXPECT_CONTAINS(m, "at character 8: unterminated string: the ' at character 8 has no closing '");
  EXPECT_CONTAINS(m, "write '' for a quote inside a string");
  EXPECT_CONTAINS(parse_error("`abc = 1"), "unterminated field name: the ` at character 1");
  EXPECT_CONTAINS(parse_error("`` = 1"), "empty field name");
}

TEST(QueryErrorTest, InLikeIsAndNot) {
  EXPECT_CONTAINS(parse_error("a IN 1"), "expected '(' and a list of values after 'IN'");
  EXPECT_CONTAINS(parse_error("a IN ()"), "expected a value after '('");
  EXPECT_CONTAINS(parse_error("a IN (1,)"), "expected a value after ','");
  EXPECT_CONTAINS(parse_error("a IN (1 2)"), "expected ',' or ')' after the value '1'");
  EXPECT_CONTAINS(parse_error("a IN (1, null)"), "null cannot be in an IN list");
  EXPECT_CONTAINS(parse_error("a LIKE dann"), "expected a 'quoted pattern' after 'LIKE'");
  EXPECT_CONTAINS(parse_error("a IS 1"), "expected NULL or NOT NULL after 'IS', found '1'");
  EXPECT_CONTAINS(parse_error("a IS NOT 1"), "expected NULL after 'NOT', found '1'");
  const std::string n = parse_error("a NOT = 1");
  EXPECT_CONTAINS(n, "at character 3: expected IN, LIKE or an operator after field 'a'");
  EXPECT_CONTAINS(n, "NOT a = ...");
  EXPECT_CONTAINS(parse_error("a < null"), "null has no order");
  EXPECT_CONTAINS(parse_error("a < null"), "use a IS NULL or a IS NOT NULL");
}

TEST(QueryErrorTest, PositionsCountCharactersNotBytes) {
  // "é" is two bytes but one character.
  const std::string m = parse_error("name = 'é' AND");
  EXPECT_CONTAINS(m, "at character 15:");
  EXPECT_EQ(m.substr(m.rfind('\n') + 1), "  " + std::string(14, ' ') + "^");
}

// ---------------------------------------------------------------------------------------------
// select_runs on a database

class QuerySelectTest : public TempDbTest {
 protected:
  QuerySelectTest() : TempDbTest("tlab_query") {}

  /// Runs like sample_rows(), written through Store.
  void fill(Store& store) {
    for (const auto& row : sample_rows()) {
      NewRun run;
      run.experiment = "experiments/quickstart.toml";
      run.name = row.name;
      run.host = "node-1";
      run.pid = 100 + row.id;
      run.device = "cpu";
      run.seed = row.seed;
      run.git_commit = "0123456789abcdef0123456789abcdef01234567";
      run.git_dirty = 0;
      run.config_toml = fmt::format("[strategy]\nplugin = \"x\"\n\n[train]\nlr = {}\n", row.id);
      run.config_hash = "hash";
      run.overrides = "{}";
      run.run_dir = fmt::format("results/runs/{}", row.id);
      run.tlab_version = "0.1.0";
      run.params = row.params;
      run.uuid = row.uuid;
      run.run_key = fmt::format("key{}", row.id);
      run.override_args = {fmt::format("seed={}", row.seed)};
      const int64_t id = store.create_run(run);
      store.write_summaries(id, row.summaries);
      store.write_metrics(id, {{"target/train/loss", 10, 0, 0.5, 1.0},
                               {"target/train/loss", 20, 1, 0.25, 2.0},
                               {"target/val/acc", 20, 1, 0.75, 2.0}});
      store.add_plugins(id, {{"strategy", "dann", "0.3.1", "/p/dann.so", "def456"}});
      if (row.status != "running") store.finish_run(id, parse_run_status(row.status), "");
    }
  }

  /// The ids select_runs gives; for_each_selected_run (which streams without a sort) must
  /// visit the same runs in the same order.
  std::vector<int64_t> ids(Store& store, const QueryOptions& options) {
    std::vector<int64_t> out, streamed;
    for (const auto& r : select_runs(store, options)) out.push_back(r.id);
    for_each_selected_run(store, options,
                          [&](const RunSummaryRow& r) { streamed.push_back(r.id); });
    EXPECT_EQ(streamed, out) << "where '" << options.where << "'";
    return out;
  }
  /// The QueryError message of both ways to select.
  std::string both_errors(Store& store, const QueryOptions& options) {
    const std::string selected = query_error([&] { select_runs(store, options); });
    const std::string streamed =
        query_error([&] { for_each_selected_run(store, options, [](const RunSummaryRow&) {}); });
    EXPECT_EQ(streamed, selected);
    return selected;
  }
};

TEST_F(QuerySelectTest, FiltersSortsAndLimits) {
  Store store(db_path_);
  fill(store);
  EXPECT_EQ(ids(store, {}), (Ids{1, 2, 3, 4}));
  EXPECT_EQ(ids(store, {"strategy.plugin = 'dann'", {}, 0}), (Ids{1, 4}));
  // Descending: +inf first; NaN after the numbers; missing values last.
  EXPECT_EQ(ids(store, {"", {"target/test/acc desc"}, 0}), (Ids{4, 1, 2, 3}));
  EXPECT_EQ(ids(store, {"", {"target/test/acc"}, 0}), (Ids{2, 1, 4, 3}));
  EXPECT_EQ(ids(store, {"", {"target/test/acc ASC"}, 0}), (Ids{2, 1, 4, 3}));
  EXPECT_EQ(ids(store, {"", {"run/wall_seconds desc"}, 0}), (Ids{1, 2, 3, 4}));
  EXPECT_EQ(ids(store, {"", {"run/wall_seconds"}, 0}), (Ids{3, 2, 1, 4}));
  EXPECT_EQ(ids(store, {"", {"model.name desc"}, 0}), (Ids{3, 1, 2, 4}));  // stable
  // Several keys, repeated or comma-separated.
  EXPECT_EQ(ids(store, {"", {"train.lr", "id desc"}, 0}), (Ids{3, 1, 2, 4}));
  EXPECT_EQ(ids(store, {"", {"train.lr, id desc"}, 0}), (Ids{3, 1, 2, 4}));
  EXPECT_EQ(ids(store, {"", {"`strategy.plugin` desc"}, 0}), (Ids{3, 2, 1, 4}));
  // Limit after the sort.
  EXPECT_EQ(ids(store, {"status = 'finished'", {"target/test/acc desc"}, 2}), (Ids{4, 1}));
  EXPECT_EQ(ids(store, {"", {}, 10}), (Ids{1, 2, 3, 4}));
  EXPECT_EQ(ids(store, {"status = 'failed'", {}, 0}), (Ids{3}));
  EXPECT_EQ(ids(store, {"uuid LIKE '00003333%'", {}, 0}), (Ids{3}));
  EXPECT_EQ(ids(store, {"run_key = 'key2'", {}, 0}), (Ids{2}));
}

TEST_F(QuerySelectTest, UnknownFieldSuggestsTheNearest) {
  Store store(db_path_);
  fill(store);
  const std::string m = both_errors(store, {"target/tst/acc > 0.5", {}, 0});
  EXPECT_EQ(m, fmt::format("--where: no field 'target/tst/acc' in any run of '{}'; did you mean "
                           "'target/test/acc'?",
                           db_path_.string()));
  const std::string s = query_error([&] { select_runs(store, {"", {"stategy.plugin desc"}, 0}); });
  EXPECT_CONTAINS(s, "--sort: no field 'stategy.plugin'");
  EXPECT_CONTAINS(s, "did you mean 'strategy.plugin'?");
  const std::string far = both_errors(store, {"zzzzzzzzzz = 1", {}, 3});
  EXPECT_CONTAINS(far, "no field 'zzzzzzzzzz'");
  EXPECT_CONTAINS(far, "fields are the run columns (id, name, status");
  // A field only some runs have is known.
  EXPECT_EQ(ids(store, {"model.name IS NULL", {}, 0}), (Ids{1, 2, 4}));
}

TEST_F(QuerySelectTest, BadSortAndLimit) {
  Store store(db_path_);
  fill(store);
  EXPECT_CONTAINS(query_error([&] {
                    select_runs(store, {"", {"id descending"}, 0});
                  }),
                  "--sort 'id descending': expected asc or desc after the field 'id', found "
                  "'descending'");
  EXPECT_CONTAINS(query_error([&] {
                    select_runs(store, {"", {""}, 0});
                  }),
                  "--sort '': expected a field, found nothing");
  EXPECT_CONTAINS(query_error([&] {
                    select_runs(store, {"", {"id,"}, 0});
                  }),
                  "expected a field after ','");
  EXPECT_CONTAINS(query_error([&] {
                    select_runs(store, {"", {"id desc x"}, 0});
                  }),
                  "expected ',' or the end after the field 'id', found 'x'");
  EXPECT_CONTAINS(both_errors(store, {"", {}, -1}),
                  "--limit -1: expected a number of runs >= 1, or 0 for no limit");
  EXPECT_CONTAINS(both_errors(store, {"id >", {}, 0}),
                  "--where 'id >' at character 5: expected a value after '>'");
}

TEST_F(QuerySelectTest, EmptyDatabaseSelectsNothing) {
  Store store(db_path_);
  EXPECT_TRUE(select_runs(store, {"anything = 1", {"x desc"}, 3}).empty());
}

// ---------------------------------------------------------------------------------------------
// Tables

Table sample_table() {
  Table t;
  t.title = "Results";
  t.header = {"method", "acc", "note"};
  t.numeric = {false, true, false};
  t.rows = {{"dann", "0.81", "plain"},
            {"a,b", "nan", "say \"hi\""},
            {"x_y & 50%", "-inf", "line\nbreak"},
            {"±", "12", ""}};
  t.notes = {"2 runs failed"};
  return t;
}

TEST(TableRenderTest, ParsesFormatNames) {
  EXPECT_EQ(parse_table_format("text"), TableFormat::Text);
  EXPECT_EQ(parse_table_format("table"), TableFormat::Text);
  EXPECT_EQ(parse_table_format("csv"), TableFormat::Csv);
  EXPECT_EQ(parse_table_format("JSON"), TableFormat::Json);
  EXPECT_EQ(parse_table_format("md"), TableFormat::Markdown);
  EXPECT_EQ(parse_table_format("markdown"), TableFormat::Markdown);
  EXPECT_EQ(parse_table_format("latex"), TableFormat::Latex);
  try {
    parse_table_format("xlsx");
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_CONTAINS(e.what(), "unknown table format 'xlsx'; expected 'text'");
    EXPECT_CONTAINS(e.what(), "'latex'");
  }
}

TEST(TableRenderTest, TextAlignsColumnsNumericOnesRight) {
  Table t;
  t.title = "T";
  t.header = {"name", "acc"};
  t.numeric = {false, true};
  t.rows = {{"dann", "0.5"}, {"±x", "12.25"}, {"mmd", "inf"}};
  t.notes = {"note"};
  EXPECT_EQ(render(t, TableFormat::Text),
            "T\n"
            "name    acc\n"
            "----  -----\n"
            "dann    0.5\n"
            "±x    12.25\n"
            "mmd     inf\n"
            "note\n");
  t.numeric.clear();  // empty: all left-aligned
  EXPECT_EQ(render(t, TableFormat::Text),
            "T\nname  acc\n----  -----\ndann  0.5\n±x    12.25\nmmd   inf\nnote\n");
}

TEST(TableRenderTest, CsvQuotesPerRfc4180) {
  EXPECT_EQ(render(sample_table(), TableFormat::Csv),
            "method,acc,note\n"
            "dann,0.81,plain\n"
            "\"a,b\",nan,\"say \"\"hi\"\"\"\n"
            "x_y & 50%,-inf,\"line\nbreak\"\n"
            "±,12,\n");
}

TEST(TableRenderTest, JsonNumbersAndNulls) {
  const std::string out = render(sample_table(), TableFormat::Json);
  const auto j = nlohmann::json::parse(out);
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), 4u);
  EXPECT_EQ(j[0]["method"], "dann");
  EXPECT_TRUE(j[0]["acc"].is_number_float());
  EXPECT_DOUBLE_EQ(j[0]["acc"].get<double>(), 0.81);
  EXPECT_TRUE(j[1]["acc"].is_null());  // nan
  EXPECT_TRUE(j[2]["acc"].is_null());  // -inf
  EXPECT_EQ(j[1]["note"], "say \"hi\"");
  EXPECT_EQ(j[2]["note"], "line\nbreak");
  EXPECT_TRUE(j[3]["acc"].is_number_integer());
  EXPECT_EQ(j[3]["acc"].get<int64_t>(), 12);
  EXPECT_TRUE(j[3]["note"].is_null());  // empty cell
  EXPECT_EQ(j[3]["method"], "±");

  Table n;
  n.header = {"v"};
  n.rows = {{"1e-3"}, {"-7"}, {"9007199254740993"}, {"0x10"}, {"1.5.2"}, {" 3"}, {"inf"}, {"1e999"},
            {"007"},  {"."}};
  const auto k = nlohmann::json::parse(render(n, TableFormat::Json));
  EXPECT_DOUBLE_EQ(k[0]["v"].get<double>(), 0.001);
  EXPECT_EQ(k[1]["v"].get<int64_t>(), -7);
  EXPECT_EQ(k[2]["v"].get<int64_t>(), 9007199254740993);  // exact
  EXPECT_EQ(k[3]["v"], "0x10");
  EXPECT_EQ(k[4]["v"], "1.5.2");
  EXPECT_EQ(k[5]["v"], " 3");
  EXPECT_TRUE(k[6]["v"].is_null());
  EXPECT_EQ(k[7]["v"], "1e999");  // not a finite number
  EXPECT_EQ(k[8]["v"].get<int64_t>(), 7);
  EXPECT_EQ(k[9]["v"], ".");
  EXPECT_EQ(render(Table{}, TableFormat::Json), "[]\n");
}

TEST(TableRenderTest, MarkdownEscapesPipesAndAlignsNumbers) {
  Table t;
  t.title = "Results";
  t.header = {"method", "acc"};
  t.numeric = {false, true};
  t.rows = {{"a|b", "0.5"}, {"two\nlines", "nan"}};
  t.notes = {"note"};
  EXPECT_EQ(render(t, TableFormat::Markdown),
            "**Results**\n\n"
            "| method | acc |\n"
            "| --- | ---: |\n"
            "| a\\|b | 0.5 |\n"
            "| two<br>lines | nan |\n"
            "\nnote\n");
}

TEST(TableRenderTest, LatexBooktabsWithEscapes) {
  EXPECT_EQ(render(sample_table(), TableFormat::Latex),
            "\\begin{table}[htbp]\n"
            "\\centering\n"
            "\\caption{Results}\n"
            "\\begin{tabular}{lrl}\n"
            "\\toprule\n"
            "method & acc & note \\\\\n"
            "\\midrule\n"
            "dann & 0.81 & plain \\\\\n"
            "a,b & nan & say \"hi\" \\\\\n"
            "x\\_y \\& 50\\% & -inf & line break \\\\\n"
            "± & 12 &  \\\\\n"
            "\\bottomrule\n"
            "\\end{tabular}\n"
            "\\par{\\footnotesize 2 runs failed}\n"
            "\\end{table}\n");
  Table t;
  t.header = {"a"};
  t.rows = {{"\\ $ # { } ~ ^"}};
  EXPECT_EQ(render(t, TableFormat::Latex),
            "\\begin{tabular}{l}\n\\toprule\na \\\\\n\\midrule\n"
            "\\textbackslash{} \\$ \\# \\{ \\} \\textasciitilde{} \\textasciicircum{} \\\\\n"
            "\\bottomrule\n\\end{tabular}\n");
}

TEST(TableRenderTest, RejectsRowsOfTheWrongWidth) {
  Table t;
  t.title = "bad";
  t.header = {"a", "b"};
  t.rows = {{"1", "2"}, {"3"}};
  try {
    render(t, TableFormat::Text);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_CONTAINS(e.what(), "table 'bad': row 2 has 1 cells but the header has 2 columns (a, b)");
  }
  t.rows = {{"1", "2"}};
  t.numeric = {true};
  EXPECT_THROW(render(t, TableFormat::Csv), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// The tlab binary

struct Command {
  int code = -1;
  std::string out, err;
};

/// Runs the built tlab with `args` (each single-quoted for the shell).
Command run_tlab(const std::vector<std::string>& args, const fs::path& dir) {
  std::string command = std::string(TLAB_TEST_BIN_DIR) + "/tlab";
  for (const auto& a : args) {
    std::string quoted = "'";
    for (char c : a) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    command += " " + quoted + "'";
  }
  const fs::path out = dir / "stdout.txt", err = dir / "stderr.txt";
  command += " >'" + out.string() + "' 2>'" + err.string() + "'";
  Command result;
  const int status = std::system(command.c_str());
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto slurp = [](const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  result.out = slurp(out);
  result.err = slurp(err);
  return result;
}

class QueryCliTest : public QuerySelectTest {
 protected:
  void SetUp() override {
    if (!fs::exists(fs::path(TLAB_TEST_BIN_DIR) / "tlab"))
      GTEST_SKIP() << "no tlab binary in " << TLAB_TEST_BIN_DIR << " (build the tlab target)";
    QuerySelectTest::SetUp();
    Store store(db_path_);
    fill(store);
    store.record_exit(3, 1, -1, "Traceback: boom\nlast line");
  }
  Command tlab(std::vector<std::string> args) {
    args.push_back("--db");
    args.push_back(db_path_.string());
    return run_tlab(args, dir_);
  }
};

// Issue 27: in a folder the user cannot write, results list/show failed with "attempt to write
// a readonly database". Reading needs no write access: nothing is created or changed there. As
// root (who may write anywhere) the commands run as the user nobody.
TEST_F(QueryCliTest, ReadingNeedsNoWriteAccess) {
  const bool root = ::geteuid() == 0;
  if (root && std::system("command -v runuser >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "running as root without runuser: cannot drop the write access";
  const fs::path ro = dir_ / "ro";
  fs::create_directories(ro);
  {
    Store store(ro / "results.db");
    fill(store);
  }
  ASSERT_FALSE(fs::exists(ro / "results.db-wal"));
  fs::permissions(ro / "results.db",
                  fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                          fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
  auto run = [&](const std::string& args) {
    const std::string command =
        std::string(root ? "runuser -u nobody -- " : "") + TLAB_TEST_BIN_DIR + "/tlab " + args +
        " --db '" + (ro / "results.db").string() + "' >'" + (dir_ / "ro.out").string() + "' 2>&1";
    const int status = std::system(command.c_str());
    std::ifstream in(dir_ / "ro.out");
    std::stringstream text;
    text << in.rdbuf();
    return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, text.str());
  };
  const auto list = run("results list");
  EXPECT_EQ(list.first, 0) << list.second;
  EXPECT_CONTAINS(list.second, "id  status");
  const auto show = run("results show 1");
  EXPECT_EQ(show.first, 0) << show.second;
  EXPECT_CONTAINS(show.second, "Provenance");
  const auto compare = run("results compare");
  EXPECT_EQ(compare.first, 0) << compare.second;
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(ro)) files.push_back(e.path().filename().string());
  EXPECT_EQ(files, std::vector<std::string>{"results.db"}) << "nothing may be created there";
  fs::permissions(ro, fs::perms::owner_all);
}

// Issue 27: on a full disk `results list` said "disk I/O error; ... keep the database on a
// local filesystem". A full disk is said as such; reading works on (read-only), and a write
// names the full disk. The disk is a 1 MiB tmpfs in a private mount namespace (root only).
TEST_F(QueryCliTest, AFullDiskIsSaidAsSuchAndReadingStillWorks) {
  if (::geteuid() != 0 || std::system("unshare -m true >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "needs root and unshare -m to mount a small tmpfs";
  {
    Store store(db_path_);  // checkpointed and closed: the whole database is in one file
  }
  const fs::path disk = dir_ / "disk";
  fs::create_directories(disk);
  const fs::path db = disk / "results.db";
  const fs::path out = dir_ / "full.out";
  const std::string tlab = std::string(TLAB_TEST_BIN_DIR) + "/tlab";
  const std::string script = fmt::format(
      "mount -t tmpfs -o size=1m tmpfs '{0}' && cp '{1}' '{2}' && "
      "(dd if=/dev/zero of='{0}/fill' bs=4k 2>/dev/null; true) && "
      "'{3}' results list --db '{2}'; echo list rc=$?; "
      "'{3}' results merge '{1}' --into '{2}'; echo merge rc=$?\n",
      disk.string(), db_path_.string(), db.string(), tlab);
  std::ofstream(dir_ / "full.sh") << script;
  const std::string command =
      fmt::format("unshare -m sh '{}' >'{}' 2>&1", (dir_ / "full.sh").string(), out.string());
  ASSERT_EQ(std::system(command.c_str()), 0);
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  const std::string output = text.str();
  EXPECT_CONTAINS(output, fmt::format("warning: the disk holding '{}' is full: reading it "
                                      "read-only; writing needs free space",
                                      db.string()));
  EXPECT_CONTAINS(output, "id  status");
  EXPECT_CONTAINS(output, "list rc=0");
  EXPECT_CONTAINS(output, fmt::format("the disk holding '{}' is full", disk.string()));
  EXPECT_CONTAINS(output, "free some space (results committed earlier are intact)");
  EXPECT_CONTAINS(output, "merge rc=2");
  EXPECT_EQ(output.find("local filesystem"), std::string::npos) << output;
}

TEST_F(QueryCliTest, ListKeepsItsOutputAndFilters) {
  const Command all = tlab({"results", "list"});
  ASSERT_EQ(all.code, 0) << all.err;
  EXPECT_CONTAINS(all.out, "id  status");
  const Command some = tlab({"results", "list", "--where", "strategy.plugin = 'dann'", "--sort",
                             "target/test/acc desc", "--format", "csv"});
  ASSERT_EQ(some.code, 0) << some.err;
  std::istringstream lines(some.out);
  std::string header, first, second, third;
  std::getline(lines, header);
  std::getline(lines, first);
  std::getline(lines, second);
  EXPECT_EQ(first.substr(0, 2), "4,");
  EXPECT_EQ(second.substr(0, 2), "1,");
  EXPECT_FALSE(std::getline(lines, third));
  const Command limited = tlab({"results", "list", "--format", "json", "--sort", "id desc",
                                "--sort", "name", "--limit", "1"});
  ASSERT_EQ(limited.code, 0) << limited.err;
  const auto j = nlohmann::json::parse(limited.out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["id"], 4);
}

TEST_F(QueryCliTest, BadWhereIsAUsageError) {
  const Command bad = tlab({"results", "export", "--where", "target/tst/acc > 0.5"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_EQ(bad.out, "");
  EXPECT_CONTAINS(bad.err, "error: --where: no field 'target/tst/acc'");
  EXPECT_CONTAINS(bad.err, "did you mean 'target/test/acc'?");
}

/// The line of `text` that starts with `start` ("" when none).
std::string line_starting(const std::string& text, const std::string& start) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind(start, 0) == 0) return line;
  return "";
}

/// The whitespace-separated words of `line`.
std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

using Words = std::vector<std::string>;

TEST_F(QueryCliTest, ShowPrintsEverythingAboutOneRun) {
  const Command show = tlab({"results", "show", "3"});
  ASSERT_EQ(show.code, 0) << show.err;
  EXPECT_CONTAINS(show.out, "Run 3: run3 (failed)");
  EXPECT_CONTAINS(show.out, "[train]\n  lr = 3");  // config
  EXPECT_EQ(words(line_starting(show.out, "model.name")), (Words{"model.name", "it's", "string"}));
  EXPECT_EQ(words(line_starting(show.out, "target/test/acc")), (Words{"target/test/acc", "nan"}));
  // Compact metrics: name, count, last step, last epoch, last value.
  EXPECT_EQ(words(line_starting(show.out, "target/train/loss")),
            (Words{"target/train/loss", "2", "20", "1", "0.25"}));
  EXPECT_EQ(words(line_starting(show.out, "strategy ")),
            (Words{"strategy", "dann", "0.3.1", "def456", "/p/dann.so"}));
  EXPECT_CONTAINS(show.out, "  Traceback: boom\n  last line\n");  // stderr tail
  EXPECT_EQ(words(line_starting(show.out, "  git ")),
            (Words{"git", "0123456789abcdef0123456789abcdef01234567", "(clean)"}));
  EXPECT_EQ(words(line_starting(show.out, "  override_args")), (Words{"override_args", "seed=3"}));
  EXPECT_EQ(words(line_starting(show.out, "  exit_code")), (Words{"exit_code", "1"}));
  EXPECT_EQ(words(line_starting(show.out, "  pid ")), (Words{"pid", "103"}));
  EXPECT_EQ(show.out.find("wall_time"), std::string::npos);  // no full history

  // By uuid prefix, as JSON, with the full metric history.
  const Command json = tlab({"results", "show", "00003333", "--format", "json", "--metrics"});
  ASSERT_EQ(json.code, 0) << json.err;
  const auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["id"], 3);
  EXPECT_EQ(j["params"]["strategy.plugin"], "scratch");
  EXPECT_EQ(j["param_types"]["train.lr"], "float");
  EXPECT_TRUE(j["summaries"]["target/test/acc"].is_null());  // NaN
  EXPECT_DOUBLE_EQ(j["summaries"]["run/wall_seconds"].get<double>(), 1.0);
  EXPECT_EQ(j["metrics"]["target/train/loss"]["count"], 2);
  EXPECT_DOUBLE_EQ(j["metrics"]["target/train/loss"]["last_value"].get<double>(), 0.25);
  ASSERT_EQ(j["metric_history"].size(), 3u);
  EXPECT_EQ(j["metric_history"][0]["step"], 10);
  EXPECT_EQ(j["plugins"][0]["file_hash"], "def456");
  EXPECT_EQ(j["provenance"]["pid"], 103);
  EXPECT_EQ(j["provenance"]["git_dirty"], false);
  EXPECT_EQ(j["provenance"]["exit_code"], 1);
  EXPECT_TRUE(j["provenance"]["signal"].is_null());
  EXPECT_EQ(j["provenance"]["override_args"], nlohmann::json::array({"seed=3"}));

  const Command missing = tlab({"results", "show", "99"});
  EXPECT_EQ(missing.code, 2);
  EXPECT_CONTAINS(missing.err, "no run '99' in");
  EXPECT_CONTAINS(missing.err, "expected a run id (1 to 4) or the start of a run's uuid");
  const Command ambiguous = tlab({"results", "show", "0000"});
  EXPECT_EQ(ambiguous.code, 2);
  EXPECT_CONTAINS(ambiguous.err, "run '0000' is ambiguous");
  EXPECT_CONTAINS(ambiguous.err, "00002222-0000-4000-8000-000000000000 (id 2)");
}

TEST_F(QueryCliTest, ExportWritesEveryParamAndSummary) {
  const Command csv = tlab({"results", "export", "--sort", "id"});
  ASSERT_EQ(csv.code, 0) << csv.err;
  std::istringstream lines(csv.out);
  std::string header;
  std::getline(lines, header);
  EXPECT_EQ(header,
            "id,name,status,seed,adapters.0.plugin,model.name,strategy.plugin,target.shots,"
            "train.amp,train.lr,run/wall_seconds,target/test/acc");
  std::string row1, row2, row3;
  std::getline(lines, row1);
  std::getline(lines, row2);
  std::getline(lines, row3);
  EXPECT_EQ(row1, "1,run1,finished,1,linear_head,,dann,5,true,0.001,12.5,0.81");
  EXPECT_EQ(row3, "3,run3,failed,3,,it's,scratch,5,,0.001,1,nan");

  const fs::path file = dir_ / "out" / "runs.json";
  fs::create_directories(file.parent_path());
  const Command json = tlab({"results", "export", "--format", "json", "--where",
                             "status = 'finished'", "--sort", "id", "--output", file.string()});
  ASSERT_EQ(json.code, 0) << json.err;
  EXPECT_EQ(json.out, "");
  EXPECT_CONTAINS(json.err, "wrote 3 run(s) to");
  std::ifstream in(file);
  const auto j = nlohmann::json::parse(in);
  ASSERT_EQ(j.size(), 3u);
  EXPECT_EQ(j[2]["id"], 4);
  EXPECT_TRUE(j[2]["target/test/acc"].is_null());  // +inf
  EXPECT_TRUE(j[2]["train.amp"].is_null());        // run 4 has none
  EXPECT_FALSE(j[2].contains("model.name"));       // only run 3 has it
  EXPECT_DOUBLE_EQ(j[0]["train.lr"].get<double>(), 0.001);
  EXPECT_EQ(j[0]["target.shots"], 5);

  const Command latex = tlab({"results", "export", "--format", "latex", "--limit", "1"});
  ASSERT_EQ(latex.code, 0) << latex.err;
  EXPECT_CONTAINS(latex.out, "\\begin{tabular}{rllrllrlrrr}");
  EXPECT_CONTAINS(latex.out, "1 & run1 & finished & 1 & linear\\_head");
  EXPECT_EQ(latex.out.find("run2"), std::string::npos);

  const Command unwritable =
      tlab({"results", "export", "--output", (dir_ / "no" / "such" / "x.csv").string()});
  EXPECT_EQ(unwritable.code, 2);
  EXPECT_CONTAINS(unwritable.err, "cannot write '");
  EXPECT_CONTAINS(unwritable.err, "check that its folder exists");
}

// Issue 27: 20,000 nested parentheses (or NOTs) ended in a segmentation fault; the depth and
// the length are bounded with a located error.
TEST(QueryErrorTest, DeepNestingAndEndlessChainsAreRefusedNotACrash) {
  std::string deep = std::string(20000, '(') + "seed = 1" + std::string(20000, ')');
  EXPECT_CONTAINS(parse_error(deep),
                  "at character 201: parentheses nested more than 200 levels deep");
  std::string nots;
  for (int i = 0; i < 20000; ++i) nots += "NOT(";
  EXPECT_CONTAINS(parse_error(nots + "seed = 1"), "NOT nested more than 200 levels deep");
  std::string chain = "seed = 1";
  for (int i = 0; i < 1500; ++i) chain += " and seed = 1";
  EXPECT_CONTAINS(parse_error(chain), "more than 1000 comparisons");
  // Within the bounds, deep expressions still work.
  const std::string fine = std::string(150, '(') + "seed = 1" + std::string(150, ')');
  EXPECT_NO_THROW(RunFilter::parse(fine));
}

}  // namespace
}  // namespace tlab
