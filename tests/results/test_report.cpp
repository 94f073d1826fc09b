// Result tables: mean ± standard error, grouping, formats; `compare` (pivot tables, model
// selection) and `gain` (paired transfer gain) on databases built with Store.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "report/report.hpp"
#include "results/report_html.hpp"
#include "results/table.hpp"
#include "store/store.hpp"

using ::testing::HasSubstr;
using ::testing::Not;

namespace {

tlab::RunSummaryRow run(int64_t id, const std::string& strategy, int64_t seed, double acc,
                        double alpha = -1, const std::string& status = "finished") {
  tlab::RunSummaryRow r;
  r.id = id;
  r.name = "exp";
  r.status = status;
  r.seed = seed;
  r.params = {{"seed", seed, "int"}, {"strategy.plugin", strategy, "string"}};
  if (alpha >= 0) r.params.push_back({"strategy.alpha", alpha, "float"});
  r.summaries = {{"target/test/acc", acc}};
  return r;
}

TEST(Report, MeanAndStandardError) {
  auto m = tlab::mean_se({1.0, 2.0, 3.0, 4.0});
  EXPECT_DOUBLE_EQ(m.mean, 2.5);
  EXPECT_NEAR(m.se, std::sqrt(1.6666666666666667) / 2.0, 1e-12);  // sd (n-1) / sqrt(n)
  EXPECT_EQ(m.n, 4u);
  EXPECT_EQ(tlab::mean_se({5.0}).se, 0.0);
}

TEST(Report, ComparisonGroupsOverSeedsAndSkipsUnfinishedRuns) {
  std::vector<tlab::RunSummaryRow> rows = {run(1, "scratch", 1, 0.5), run(2, "finetune", 1, 0.8),
                                           run(3, "scratch", 2, 0.7), run(4, "finetune", 2, 0.9),
                                           run(5, "scratch", 3, 0.1, -1, "failed")};
  auto t = tlab::format_comparison(rows, {}, {"target/test/acc"});
  EXPECT_THAT(t, HasSubstr("scratch          0.6000 ± 0.1000"));
  EXPECT_THAT(t, HasSubstr("finetune         0.8500 ± 0.0500"));
  EXPECT_THAT(t, Not(HasSubstr("seed")));
  EXPECT_THAT(t, HasSubstr("(1 of 5 runs did not finish and are not counted)"));
}

TEST(Report, OptionsOfAVaryingPluginGroupOnlyWhenTheyVaryWithinIt) {
  // l2sp with two alphas: alpha must be a column; scratch has no alpha.
  std::vector<tlab::RunSummaryRow> rows = {run(1, "scratch", 1, 0.5), run(2, "l2sp", 1, 0.8, 0.0),
                                           run(3, "l2sp", 1, 0.9, 1.0)};
  auto t = tlab::format_comparison(rows, {}, {"target/test/acc"});
  EXPECT_THAT(t, HasSubstr("strategy.alpha"));
  // One alpha only: the column is noise and is left out.
  rows.pop_back();
  EXPECT_THAT(tlab::format_comparison(rows, {}, {"target/test/acc"}),
              Not(HasSubstr("strategy.alpha")));
}

TEST(Report, JsonKeepsTypesAndWritesNonFiniteAsNull) {
  auto r = run(1, "scratch", 1, std::nan(""));
  auto j = nlohmann::json::parse(tlab::format_runs({r}, tlab::Format::Json));
  EXPECT_EQ(j[0]["params"]["seed"], 1);
  EXPECT_EQ(j[0]["params"]["strategy.plugin"], "scratch");
  EXPECT_TRUE(j[0]["summary"]["target/test/acc"].is_null());
  EXPECT_THROW(tlab::parse_format("xml"), std::invalid_argument);
}

// Issue 27: a database can hold names with escape sequences; the terminal table shows them as
// text (the window title stays, the screen is not cleared) and keeps its columns.
TEST(Report, ControlCharactersInTheDatabaseAreShownAsText) {
  auto r = run(1, "scratch", 1, 0.5);
  r.name = "\x1b]0;pwned\x07\x1b[2Jname\x1b[31m";
  const std::string table = tlab::format_runs({r}, tlab::Format::Table);
  EXPECT_EQ(table.find('\x1b'), std::string::npos) << table;
  EXPECT_EQ(table.find('\x07'), std::string::npos) << table;
  EXPECT_THAT(table, HasSubstr("\\x1b]0;pwned\\x07\\x1b[2Jname\\x1b[31m  0.5"));
}

TEST(Report, CsvQuotesFields) {
  auto r = run(1, "has,comma", 1, 0.5);
  auto csv = tlab::format_runs({r}, tlab::Format::Csv);
  EXPECT_THAT(csv, HasSubstr("id,status,name,seed,strategy.plugin,target/test/acc\n"));
  EXPECT_THAT(csv, HasSubstr("1,finished,exp,1,\"has,comma\",0.5\n"));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// compare (groups, pivot tables, model selection) and gain, on real databases.

namespace tlab {
namespace {

namespace fs = std::filesystem;

/// One run to record: its params, final summaries and per-epoch metric history.
struct RunSpec {
  std::string strategy;
  int64_t seed = 1;
  std::string variant = "usps";
  std::string status = "finished";
  std::vector<ParamEntry> extra;  ///< More params (train.lr, strategy.alpha, backbone.plugin).
  std::vector<std::pair<std::string, double>> summaries;
  std::vector<MetricRow> metrics;
  std::string search;  ///< runs.search JSON ("" outside sweeps).
};

/// Per-epoch rows of one training stage: `values[name][e]` at step first_step + 10 * e.
std::vector<MetricRow> stage(
    int64_t first_step, const std::vector<std::pair<std::string, std::vector<double>>>& values) {
  std::vector<MetricRow> rows;
  for (const auto& [name, series] : values)
    for (std::size_t e = 0; e < series.size(); ++e)
      rows.push_back({name, first_step + 10 * static_cast<int64_t>(e), static_cast<int64_t>(e),
                      series[e], 1.0 + e});
  return rows;
}

class ReportDb : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("tlab_report_{}_{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    store_ = std::make_unique<Store>(dir_ / "results.db");
    db_ = store_->path().string();
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }

  int64_t add(const RunSpec& spec) {
    NewRun run;
    run.experiment = "experiments/digits.toml";
    run.name = "digits";
    run.host = "node-1";
    run.device = "cpu";
    run.seed = spec.seed;
    run.config_toml = "";
    run.config_hash = "0";
    run.overrides = "{}";
    run.tlab_version = "0.1.0";
    run.search = spec.search;
    std::map<std::string, ParamEntry> params = {
        {"seed", {"seed", spec.seed, "int"}},
        {"strategy.plugin", {"strategy.plugin", spec.strategy, "string"}},
        {"target.plugin", {"target.plugin", std::string("digits"), "string"}},
        {"target.variant", {"target.variant", spec.variant, "string"}},
        {"backbone.plugin", {"backbone.plugin", std::string("lenet"), "string"}},
        {"train.lr", {"train.lr", 0.01, "float"}},
    };
    for (const auto& p : spec.extra) params[p.key] = p;
    for (const auto& [k, p] : params) run.params.push_back(p);
    const int64_t id = store_->create_run(run);
    if (!spec.metrics.empty()) store_->write_metrics(id, spec.metrics);
    if (!spec.summaries.empty()) store_->write_summaries(id, spec.summaries);
    store_->finish_run(id, tlab::parse_run_status(spec.status), "");
    return id;
  }

  /// A run with only a final target/test/acc.
  int64_t add_final(const std::string& strategy, int64_t seed, const std::string& variant,
                    double acc, std::vector<ParamEntry> extra = {},
                    const std::string& status = "finished") {
    RunSpec s;
    s.strategy = strategy;
    s.seed = seed;
    s.variant = variant;
    s.status = status;
    s.extra = std::move(extra);
    s.summaries = {{"target/test/acc", acc}, {"run/wall_seconds", 3.0}};
    return add(s);
  }

  Table compare(const CompareOptions& o) { return compare_table(*store_, store_->list_runs(), o); }
  Table gain(const GainOptions& o) { return gain_table(*store_, store_->list_runs(), o); }

  /// The message of the ReportError `action` throws.
  std::string error(const std::function<void()>& action) {
    try {
      action();
    } catch (const ReportError& e) {
      return e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "expected a ReportError, got: " << e.what();
      return "";
    }
    ADD_FAILURE() << "expected a ReportError, nothing was thrown";
    return "";
  }

  fs::path dir_;
  std::unique_ptr<Store> store_;
  std::string db_;
};

using Row = std::vector<std::string>;

TEST_F(ReportDb, CompareMeanAndStandardErrorPerGroup) {
  add_final("scratch", 1, "usps", 0.5);
  add_final("scratch", 2, "usps", 0.7);
  add_final("scratch", 3, "usps", 0.9);
  add_final("finetune", 1, "usps", 0.8);
  add_final("finetune", 2, "usps", 0.9);
  add_final("finetune", 3, "usps", 0.1, {}, "failed");
  CompareOptions o;
  Table t = compare(o);
  EXPECT_EQ(t.header, (Row{"strategy.plugin", "target/test/acc (mean ± s.e.)", "runs"}));
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.rows[0], (Row{"scratch", "0.7000 ± 0.1155", "3"}));  // sd 0.2, se 0.2/sqrt(3)
  EXPECT_EQ(t.rows[1], (Row{"finetune", "0.8500 ± 0.0500", "2"}));
  EXPECT_EQ(t.notes,
            (std::vector<std::string>{"(1 of 6 runs did not finish and are not counted)"}));
  EXPECT_EQ(t.title, "");  // final selection, no pivot: no title

  // Several metrics; machine-readable columns at full precision.
  o.metrics = {"target/test/acc", "run/wall_seconds"};
  o.machine_readable = true;
  t = compare(o);
  EXPECT_EQ(t.header, (Row{"strategy.plugin", "target/test/acc mean", "target/test/acc se",
                           "target/test/acc n", "run/wall_seconds mean", "run/wall_seconds se",
                           "run/wall_seconds n", "runs"}));
  EXPECT_EQ(t.rows[1][0], "finetune");
  EXPECT_NEAR(std::stod(t.rows[1][1]), 0.85, 1e-15);
  EXPECT_NEAR(std::stod(t.rows[1][2]), 0.05, 1e-15);
  EXPECT_EQ(t.rows[1][3], "2");
  EXPECT_EQ(t.rows[1][4], "3");
  EXPECT_EQ(t.rows[1][5], "0");
  auto json = nlohmann::json::parse(render(t, TableFormat::Json));
  EXPECT_NEAR(json[0]["target/test/acc mean"].get<double>(), 0.7, 1e-15);
  EXPECT_NEAR(json[0]["target/test/acc se"].get<double>(), 0.2 / std::sqrt(3.0), 1e-15);
}

TEST_F(ReportDb, CompareNotesRunsPooledInOneRowAndRunsWithoutTheMetric) {
  add_final("scratch", 1, "usps", 0.5);
  add_final("scratch", 1, "svhn", 0.3);
  RunSpec no_acc;
  no_acc.strategy = "scratch";
  no_acc.seed = 2;
  no_acc.summaries = {{"run/wall_seconds", 1.0}};
  const int64_t id = add(no_acc);
  CompareOptions o;
  o.group_by = {"strategy.plugin"};
  Table t = compare(o);
  ASSERT_EQ(t.rows.size(), 1u);
  EXPECT_EQ(t.rows[0], (Row{"scratch", "0.4000 ± 0.1000 (n=2)", "3"}));
  EXPECT_EQ(t.notes,
            (std::vector<std::string>{
                fmt::format(
                    "(1 run has no target/test/acc summary and is not counted in it: run {})", id),
                "(runs that differ in target.variant share a row; add it to --group-by to "
                "separate them)"}));
}

TEST_F(ReportDb, PivotCellsAndAvgColumn) {
  // DomainBed's layout: two strategies over two targets, two seeds each; dann ran on one target
  // only, with one seed.
  add_final("scratch", 1, "usps", 0.60);
  add_final("scratch", 2, "usps", 0.70);
  add_final("finetune", 1, "usps", 0.80);
  add_final("finetune", 2, "usps", 0.90);
  add_final("scratch", 1, "svhn", 0.20);
  add_final("scratch", 2, "svhn", 0.30);
  add_final("finetune", 1, "svhn", 0.30);
  add_final("finetune", 2, "svhn", 0.50);
  add_final("dann", 1, "usps", 0.88);
  CompareOptions o;
  o.pivot = "target.variant";
  Table t = compare(o);
  EXPECT_EQ(t.header, (Row{"strategy.plugin", "svhn", "usps", "Avg"}));
  ASSERT_EQ(t.rows.size(), 3u);
  EXPECT_EQ(t.rows[0], (Row{"scratch", "0.2500 ± 0.0500", "0.6500 ± 0.0500", "0.4500"}));
  EXPECT_EQ(t.rows[1], (Row{"finetune", "0.4000 ± 0.1000", "0.8500 ± 0.0500", "0.6250"}));
  EXPECT_EQ(t.rows[2], (Row{"dann", "", "0.8800", ""}));  // no svhn run: Avg blank
  EXPECT_EQ(t.title,
            "target/test/acc: mean ± s.e. over seeds, columns = target.variant; selection: final "
            "(the value after the last epoch)");
  EXPECT_EQ(t.notes, (std::vector<std::string>{
                         "(each cell: mean ± s.e. over 1 to 2 runs; a cell of one run shows its "
                         "value alone)",
                         "(Avg is the mean of a row's column means; blank in 1 row that lacks a "
                         "column)"}));

  o.machine_readable = true;
  t = compare(o);
  EXPECT_EQ(t.header, (Row{"strategy.plugin", "svhn mean", "svhn se", "svhn n", "usps mean",
                           "usps se", "usps n", "Avg"}));
  EXPECT_EQ(t.rows[2], (Row{"dann", "", "", "0", "0.88", "", "1", ""}));
  EXPECT_NEAR(std::stod(t.rows[1][7]), (0.4 + 0.85) / 2, 1e-15);
  EXPECT_NEAR(std::stod(t.rows[1][2]), 0.1, 1e-15);

  // Text rendering: header, then the cells.
  o.machine_readable = false;
  const std::string text = render(compare(o), TableFormat::Text);
  EXPECT_THAT(text, HasSubstr("strategy.plugin  svhn             usps             Avg\n"));
  EXPECT_THAT(text, HasSubstr("finetune         0.4000 ± 0.1000  0.8500 ± 0.0500  0.6250\n"));
  const std::string md = render(compare(o), TableFormat::Markdown);
  EXPECT_THAT(md, HasSubstr("| finetune | 0.4000 ± 0.1000 | 0.8500 ± 0.0500 | 0.6250 |"));
}

TEST_F(ReportDb, PivotColumnsSortNumericallyAndRowsCanBeAnyKeys) {
  for (int64_t seed : {10, 2, 1}) add_final("scratch", seed, "usps", 0.1 * seed);
  add_final("finetune", 2, "usps", 0.5);
  CompareOptions o;
  o.pivot = "seed";
  Table t = compare(o);
  EXPECT_EQ(t.header, (Row{"strategy.plugin", "1", "2", "10", "Avg"}));  // not 1, 10, 2
  EXPECT_EQ(t.rows[0], (Row{"scratch", "0.1000", "0.2000", "1.0000", "0.4333"}));
  EXPECT_EQ(t.rows[1], (Row{"finetune", "", "0.5000", "", ""}));
  EXPECT_EQ(t.notes[0], "(each cell: mean ± s.e. over 1 run)");

  // Pivot on the strategy: rows default to the other varying params (here none but seed).
  o.pivot = "strategy.plugin";
  o.group_by = {"target.variant"};
  t = compare(o);
  EXPECT_EQ(t.header, (Row{"target.variant", "finetune", "scratch", "Avg"}));
  EXPECT_EQ(t.rows[0], (Row{"usps", "0.5000", "0.4333 ± 0.2848", "0.4667"}));
}

// A transfer run: a source stage (steps 10, 20) then a target stage (steps 30..60) that also
// logs source/val/acc. Each selection rule picks a different epoch.
RunSpec transfer_run(int64_t seed, double offset = 0) {
  RunSpec s;
  s.strategy = "finetune";
  s.seed = seed;
  auto add = [&](std::vector<double> v) {
    for (auto& x : v) x += offset;
    return v;
  };
  s.metrics = stage(10, {{"source/train/loss", {1.0, 0.5}}, {"source/val/acc", {0.95, 0.99}}});
  // source/val/acc peaks in target epoch 0; target/val/acc ties in epochs 1 and 2 (earliest
  // wins); the last epoch is 3, and the summary differs from every epoch.
  auto target = stage(30, {{"source/val/acc", add({0.92, 0.85, 0.80, 0.70})},
                           {"target/val/acc", add({0.60, 0.75, 0.75, 0.70})},
                           {"target/test/acc", add({0.50, 0.58, 0.61, 0.66})},
                           {"target/train/loss", {0.9, 0.7, 0.6, 0.5}}});
  s.metrics.insert(s.metrics.end(), target.begin(), target.end());
  s.summaries = {{"target/test/acc", 0.665 + offset},
                 {"target/val/acc", 0.70 + offset},
                 {"run/wall_seconds", 10}};
  return s;
}

// A run without a source domain: target stage only, no source/val/acc.
RunSpec scratch_run(int64_t seed) {
  RunSpec s;
  s.strategy = "scratch";
  s.seed = seed;
  s.metrics = stage(10, {{"target/val/acc", {0.50, 0.60}}, {"target/test/acc", {0.45, 0.52}}});
  s.summaries = {{"target/test/acc", 0.53}, {"target/val/acc", 0.6}, {"run/wall_seconds", 5}};
  return s;
}

TEST_F(ReportDb, SelectionFinalReportsTheSummary) {
  add(transfer_run(1));
  add(transfer_run(2, 0.02));
  add(scratch_run(1));
  CompareOptions o;
  o.selection = Selection::Final;
  Table t = compare(o);
  EXPECT_EQ(t.rows[0], (Row{"finetune", "0.6750 ± 0.0100", "2"}));
  EXPECT_EQ(t.rows[1], (Row{"scratch", "0.5300", "1"}));
  EXPECT_TRUE(t.notes.empty());
}

TEST_F(ReportDb, SelectionSourceValPicksTheTargetStageEpochWithTheBestSourceVal) {
  add(transfer_run(1));
  add(transfer_run(2, 0.02));
  const int64_t scratch = add(scratch_run(1));
  CompareOptions o;
  o.selection = Selection::SourceVal;
  o.metrics = {"target/test/acc", "target/val/acc"};
  Table t = compare(o);
  // Target epoch 0 (step 30): the source stage's 0.99 at step 20 does not count.
  EXPECT_EQ(t.rows[0], (Row{"finetune", "0.5100 ± 0.0100", "0.6100 ± 0.0100", "2"}));
  // No source/val/acc: the final value, and a note.
  EXPECT_EQ(t.rows[1], (Row{"scratch", "0.5300", "0.6000", "1"}));
  EXPECT_EQ(t.title,
            "selection: source-val = training-domain validation (the target-stage epoch with the "
            "highest source/val/acc)");
  EXPECT_EQ(t.notes, (std::vector<std::string>{fmt::format(
                         "(1 of 3 finished runs has no source/val/acc in its target stage (no "
                         "source domain, or an older runner) and reports the final value "
                         "instead: run {})",
                         scratch)}));
}

TEST_F(ReportDb, SelectionOraclePicksTheEarliestEpochWithTheBestTargetVal) {
  add(transfer_run(1));
  add(transfer_run(2, 0.02));
  add(scratch_run(1));
  CompareOptions o;
  o.selection = Selection::Oracle;
  Table t = compare(o);
  EXPECT_EQ(t.rows[0], (Row{"finetune", "0.5900 ± 0.0100", "2"}));  // epoch 1, not 2
  EXPECT_EQ(t.rows[1], (Row{"scratch", "0.5200", "1"}));            // its last epoch
  EXPECT_EQ(t.title,
            "selection: oracle = test-domain validation (the epoch with the highest "
            "target/val/acc)");
  EXPECT_TRUE(t.notes.empty());

  // A pivot with a selection rule.
  o.pivot = "seed";
  t = compare(o);
  EXPECT_EQ(t.header, (Row{"strategy.plugin", "1", "2", "Avg"}));
  EXPECT_EQ(t.rows[0], (Row{"finetune", "0.5800", "0.6000", "0.5900"}));
  EXPECT_EQ(t.rows[1], (Row{"scratch", "0.5200", "", ""}));
}

TEST_F(ReportDb, SelectionSkipsNonFiniteValuesAndCountsRunsWithoutASelector) {
  RunSpec nan_epoch = transfer_run(1);
  for (auto& m : nan_epoch.metrics)
    if (m.name == "source/val/acc" && m.step == 30) m.value = std::nan("");
  add(nan_epoch);  // source-val: epoch 1 (0.85) is now the best
  RunSpec no_val;
  no_val.strategy = "finetune";
  no_val.seed = 2;
  no_val.metrics = stage(10, {{"target/test/acc", {0.4, 0.5}}});
  no_val.summaries = {{"target/test/acc", 0.5}};
  const int64_t id = add(no_val);
  CompareOptions o;
  o.group_by = {"strategy.plugin"};  // nothing but the seed varies
  o.selection = Selection::SourceVal;
  Table t = compare(o);
  EXPECT_EQ(t.rows[0], (Row{"finetune", "0.5400 ± 0.0400", "2"}));  // 0.58 and 0.50 (final)
  o.selection = Selection::Oracle;
  t = compare(o);
  EXPECT_EQ(t.rows[0], (Row{"finetune", "0.5800 (n=1)", "2"}));
  EXPECT_EQ(t.notes, (std::vector<std::string>{fmt::format(
                         "(1 run logs no target/val/acc to select an epoch by and is not "
                         "counted: run {})",
                         id)}));
}

TEST_F(ReportDb, CompareErrorsNameTheNearestKeyOrMetricAndTheDatabase) {
  add(transfer_run(1));
  add(scratch_run(1));
  CompareOptions o;
  o.group_by = {"strategy.plugn"};
  EXPECT_EQ(error([&] { compare(o); }),
            fmt::format("--group-by 'strategy.plugn': no run in '{}' has a param "
                        "'strategy.plugn'; did you mean 'strategy.plugin'?",
                        db_));
  o.group_by = {"zzzzzzzzzz"};
  EXPECT_EQ(error([&] { compare(o); }),
            fmt::format("--group-by 'zzzzzzzzzz': no run in '{}' has a param 'zzzzzzzzzz'; the "
                        "database has: backbone.plugin, seed, strategy.plugin, target.plugin, "
                        "target.variant, train.lr",
                        db_));
  o.group_by = {};
  o.pivot = "target.varient";
  EXPECT_EQ(error([&] { compare(o); }),
            fmt::format("--pivot 'target.varient': no run in '{}' has a param 'target.varient'; "
                        "did you mean 'target.variant'?",
                        db_));
  o.pivot = "seed";
  o.group_by = {"seed"};
  EXPECT_EQ(error([&] { compare(o); }),
            "--pivot 'seed' is also a --group-by key; a key gives either the rows or the "
            "columns, so drop it from --group-by");
  o.group_by = {};
  o.metrics = {"target/test/acc", "target/val/acc"};
  EXPECT_EQ(error([&] { compare(o); }),
            "--pivot 'seed' shows one metric, but 2 were given (target/test/acc, "
            "target/val/acc); run compare once per metric");
  o.pivot = "";
  o.metrics = {};
  EXPECT_EQ(error([&] { compare(o); }),
            "--metric: no metric given; name at least one, e.g. --metric target/test/acc");
  o.metrics = {"target/tset/acc"};
  EXPECT_EQ(error([&] { compare(o); }),
            fmt::format("--metric 'target/tset/acc': no run in '{}' has a summary "
                        "'target/tset/acc'; did you mean 'target/test/acc' or 'target/val/acc'?",
                        db_));
  o.metrics = {"target/train/loss"};  // logged per epoch, no summary
  EXPECT_EQ(error([&] { compare(o); }),
            fmt::format("--metric 'target/train/loss': no run in '{}' has a summary "
                        "'target/train/loss'; the database has: run/wall_seconds, "
                        "target/test/acc, target/val/acc; it is only logged per epoch: pick an "
                        "epoch with --select oracle or --select source-val",
                        db_));
  o.selection = Selection::Oracle;
  o.metrics = {"run/wall_seconds"};
  EXPECT_EQ(error([&] { compare(o); }),
            fmt::format("--metric 'run/wall_seconds': --select oracle picks an epoch, so it needs "
                        "the metric's per-epoch history, but no finished run in '{}' logs "
                        "'run/wall_seconds' per epoch (it is only a final summary); use --select "
                        "final for it, or a metric logged per epoch: source/train/loss, "
                        "source/val/acc, target/test/acc, target/train/loss, target/val/acc",
                        db_));
  o.metrics = {"target/test/accuracy"};
  EXPECT_EQ(error([&] { compare(o); }),
            fmt::format("--metric 'target/test/accuracy': no run in '{}' has a metric "
                        "'target/test/accuracy'; did you mean 'target/test/acc'?",
                        db_));
  EXPECT_EQ(error([] { parse_selection("orcale"); }),
            "--select 'orcale': unknown model selection; did you mean 'oracle'?; expected "
            "'final' (the value after the last epoch), 'source-val' (training-domain "
            "validation) or 'oracle' (test-domain validation)");
  EXPECT_EQ(parse_selection("source-val"), Selection::SourceVal);
  EXPECT_EQ(selection_name(Selection::Oracle), "oracle");
}

TEST_F(ReportDb, ErrorsSayWhenTheRunsWereFilteredByWhere) {
  add_final("scratch", 1, "usps", 0.5);
  add_final("finetune", 1, "usps", 0.6);
  CompareOptions o;
  o.where = "seed = 1";
  o.group_by = {"train.l"};
  EXPECT_EQ(error([&] { compare(o); }),
            fmt::format("--group-by 'train.l': no run in '{}' (of those matching --where 'seed = "
                        "1') has a param 'train.l'; did you mean 'train.lr'?",
                        db_));
  GainOptions g;
  g.where = "seed = 1";
  g.metric = "acc";
  EXPECT_EQ(error([&] { gain(g); }),
            fmt::format("--metric 'acc': no run in '{}' (of those matching --where 'seed = 1') "
                        "has a summary 'acc'; did you mean 'target/test/acc'?",
                        db_));
}

TEST_F(ReportDb, OracleNeedsTargetValHistory) {
  add_final("scratch", 1, "usps", 0.5);
  RunSpec s;
  s.strategy = "finetune";
  s.metrics = stage(10, {{"target/test/acc", {0.4, 0.5}}});
  s.summaries = {{"target/test/acc", 0.5}};
  add(s);
  CompareOptions o;
  o.selection = Selection::Oracle;
  EXPECT_EQ(error([&] { compare(o); }),
            fmt::format("--select oracle picks the epoch with the highest target/val/acc of each "
                        "run, but no finished run in '{}' logs target/val/acc per epoch (its "
                        "target dataset has no validation split?); use --select final",
                        db_));
}

TEST_F(ReportDb, CompareWithoutRuns) {
  Table t = compare(CompareOptions{});
  EXPECT_TRUE(t.rows.empty());
  EXPECT_EQ(t.notes, (std::vector<std::string>{"(no runs)"}));
  add_final("scratch", 1, "usps", 0.5, {}, "failed");
  t = compare(CompareOptions{});
  EXPECT_EQ(t.notes, (std::vector<std::string>{"(1 of 1 runs did not finish and are not counted)",
                                               "(no finished runs to compare)"}));
}

// ---------------------------------------------------------------------------------------------
// gain

TEST_F(ReportDb, GainPairsByTargetBackboneAndSeedWithPairedTTest) {
  for (int64_t seed = 1; seed <= 5; ++seed) add_final("scratch", seed, "usps", 0.5);
  // finetune: +0.1, +0.2, +0.3 -> mean 0.2, se 0.1/sqrt(3), t = 2 sqrt(3), df 2.
  add_final("finetune", 1, "usps", 0.6);
  add_final("finetune", 2, "usps", 0.7);
  add_final("finetune", 3, "usps", 0.8);
  // Unmatched: no scratch on svhn, none with seed 9, none with the resnet backbone.
  const int64_t u1 = add_final("finetune", 1, "svhn", 0.9);
  const int64_t u2 = add_final("finetune", 9, "usps", 0.9);
  const int64_t u3 =
      add_final("finetune", 1, "usps", 0.9, {{"backbone.plugin", std::string("resnet"), "string"}});
  add_final("finetune", 4, "usps", 0.1, {}, "failed");
  // Significantly worse: -0.10, -0.11, -0.12, -0.10.
  add_final("bad", 1, "usps", 0.40);
  add_final("bad", 2, "usps", 0.39);
  add_final("bad", 3, "usps", 0.38);
  add_final("bad", 4, "usps", 0.40);
  // Worse on average but not significantly: -0.05, +0.03.
  add_final("l2sp", 1, "usps", 0.45, {{"strategy.alpha", 0.1, "float"}});
  add_final("l2sp", 2, "usps", 0.53, {{"strategy.alpha", 0.1, "float"}});
  // One pair only: no t-test, flag without significance.
  add_final("dann", 3, "usps", 0.49);

  GainOptions o;
  Table t = gain(o);
  EXPECT_EQ(t.header, (Row{"strategy.plugin", "pairs", "baseline", "method", "gain", "s.e.", "t",
                           "p", "flag"}));
  ASSERT_EQ(t.rows.size(), 4u);
  const double p_finetune = 1 - 2 * std::sqrt(3.0) / std::sqrt(14.0);  // df = 2 closed form
  EXPECT_NEAR(p_finetune, 0.07417990022744858, 1e-15);
  EXPECT_EQ(t.rows[0],
            (Row{"finetune", "3", "0.5000", "0.7000", "+0.2000", "0.0577", "3.46", "0.0742", ""}));
  EXPECT_EQ(t.rows[1], (Row{"bad", "4", "0.5000", "0.3925", "-0.1075", "0.0048", "-22.46", "0.0002",
                            "NEGATIVE TRANSFER"}));
  EXPECT_EQ(t.rows[2], (Row{"l2sp", "2", "0.5000", "0.4900", "-0.0100", "0.0400", "-0.25", "0.8440",
                            "negative (n.s.)"}));
  EXPECT_EQ(t.rows[3],
            (Row{"dann", "1", "0.5000", "0.4900", "-0.0100", "", "", "", "negative (n.s.)"}));
  EXPECT_EQ(
      t.title,
      "transfer gain on target/test/acc over 'scratch' (paired by target, backbone and seed)");
  EXPECT_EQ(t.notes,
            (std::vector<std::string>{
                "(1 of 19 runs did not finish and are not counted)",
                fmt::format("(3 transfer runs have no 'scratch' run with the same target.*, "
                            "backbone.* and seed and are not counted: run {}, {}, {})",
                            u1, u2, u3),
                "(1 'scratch' run matches no transfer run: run 5)",
                "(gain = method - baseline, mean over pairs; p: two-sided paired t-test, n - 1 "
                "degrees of freedom; NEGATIVE TRANSFER: mean gain < 0 with p < 0.05)"}));

  o.machine_readable = true;
  t = gain(o);
  EXPECT_NEAR(std::stod(t.rows[0][4]), 0.2, 1e-15);
  EXPECT_NEAR(std::stod(t.rows[0][5]), 0.1 / std::sqrt(3.0), 1e-15);
  EXPECT_NEAR(std::stod(t.rows[0][6]), 2 * std::sqrt(3.0), 1e-12);
  EXPECT_NEAR(std::stod(t.rows[0][7]), p_finetune, 1e-13);
  EXPECT_NEAR(std::stod(t.rows[1][7]), 0.00019336628845322313, 1e-12);  // t = -22.456, df 3
  const double t_l2sp = -0.01 / 0.04;  // differences -0.05, +0.03: se 0.04, df 1
  EXPECT_NEAR(std::stod(t.rows[2][7]), 1 - 2 / std::acos(-1.0) * std::atan(-t_l2sp), 1e-12);
}

TEST_F(ReportDb, GainGroupsByOtherVaryingParamsAndPrefersBaselinesTrainedAlike) {
  const ParamEntry lr1{"train.lr", 0.1, "float"}, lr2{"train.lr", 0.01, "float"};
  add_final("scratch", 1, "usps", 0.50, {lr1});
  add_final("scratch", 1, "usps", 0.40, {lr2});
  add_final("finetune", 1, "usps", 0.70, {lr1});
  add_final("finetune", 1, "usps", 0.45, {lr2});
  Table t = gain(GainOptions{});
  EXPECT_EQ(t.header, (Row{"strategy.plugin", "train.lr", "pairs", "baseline", "method", "gain",
                           "s.e.", "t", "p", "flag"}));
  EXPECT_EQ(t.rows[0][1], "0.1");
  EXPECT_EQ(t.rows[0][5], "+0.2000");  // 0.70 - 0.50, not 0.70 - 0.40
  EXPECT_EQ(t.rows[1][1], "0.01");
  EXPECT_EQ(t.rows[1][5], "+0.0500");

  // --by replaces the default rows; the target may be a row key.
  GainOptions by;
  by.group_by = {"target.variant"};
  t = gain(by);
  EXPECT_EQ(t.rows, (std::vector<Row>{{"usps", "2", "0.4500", "0.5750", "+0.1250", "0.0750", "1.67",
                                       "0.3440", ""}}));
}

TEST_F(ReportDb, GainUsesTheNewestOfIdenticalBaselinesAndCountsPairsWithoutValues) {
  add_final("scratch", 1, "usps", 0.1);
  add_final("scratch", 1, "usps", 0.5);  // rerun of the same configuration: this one counts
  const int64_t tr = add_final("finetune", 1, "usps", 0.6);
  add_final("scratch", 2, "usps", 0.5);
  const int64_t nan_run = add_final("finetune", 2, "usps", std::nan(""));
  Table t = gain(GainOptions{});
  EXPECT_EQ(t.rows[0], (Row{"finetune", "1", "0.5000", "0.6000", "+0.1000", "", "", "", ""}));
  EXPECT_EQ(t.notes[0], "(1 'scratch' run matches no transfer run: run 1)");
  EXPECT_EQ(t.notes[1], fmt::format("(1 pair without a finite target/test/acc on both sides is "
                                    "not counted: transfer run {})",
                                    nan_run));
  EXPECT_EQ(t.notes[2], fmt::format("(1 transfer run had several identical 'scratch' runs to pair "
                                    "with; the newest is used: run {})",
                                    tr));
}

TEST_F(ReportDb, GainFlagsLossMetrics) {
  RunSpec a = scratch_run(1), b = transfer_run(1);
  a.summaries.push_back({"target/train/loss", 0.5});
  b.summaries.push_back({"target/train/loss", 0.4});
  add(a);
  add(b);
  GainOptions o;
  o.metric = "target/train/loss";
  Table t = gain(o);
  EXPECT_EQ(t.rows[0][4], "-0.1000");
  EXPECT_EQ(t.rows[0][8], "negative (n.s.)");
  EXPECT_EQ(t.notes[0],
            "(target/train/loss is a loss: lower is better, so a positive gain is worse here, and "
            "the flags, which assume higher is better, do not apply)");
}

TEST_F(ReportDb, GainErrors) {
  add_final("scratch", 1, "usps", 0.5);
  add_final("finetune", 1, "usps", 0.6);
  GainOptions o;
  o.baseline = "scrach";
  EXPECT_EQ(error([&] { gain(o); }),
            fmt::format("--baseline 'scrach': no finished run in '{}' has strategy.plugin = "
                        "'scrach'; did you mean 'scratch'?; --baseline names the strategy trained "
                        "without transfer, whose runs the others are paired with",
                        db_));
  o.baseline = "none";
  EXPECT_EQ(error([&] { gain(o); }),
            fmt::format("--baseline 'none': no finished run in '{}' has strategy.plugin = "
                        "'none'; the strategies are: 'finetune', 'scratch'; --baseline names the "
                        "strategy trained without transfer, whose runs the others are paired with",
                        db_));
  o.baseline = "";
  EXPECT_EQ(error([&] { gain(o); }),
            "--baseline: empty; name the strategy trained without transfer, e.g. --baseline "
            "scratch");
  o.baseline = "scratch";
  o.metric = "target/test/ac";
  EXPECT_EQ(error([&] { gain(o); }),
            fmt::format("--metric 'target/test/ac': no run in '{}' has a summary "
                        "'target/test/ac'; did you mean 'target/test/acc'?",
                        db_));
  o.metric = "target/test/acc";
  o.group_by = {"strategy"};
  EXPECT_EQ(error([&] { gain(o); }),
            fmt::format("--by 'strategy': no run in '{}' has a param 'strategy'; did you mean "
                        "'strategy.plugin'?",
                        db_));
}

TEST_F(ReportDb, GainRefusesAmbiguousBaselines) {
  add_final("scratch", 1, "usps", 0.5, {{"train.lr", 0.1, "float"}});
  add_final("scratch", 1, "usps", 0.4, {{"train.lr", 0.01, "float"}});
  const int64_t id = add_final("finetune", 1, "usps", 0.7, {{"train.lr", 0.5, "float"}});
  EXPECT_EQ(error([&] { gain(GainOptions{}); }),
            fmt::format("run {} (finetune) has 2 'scratch' runs with its target, backbone and "
                        "seed (run 1, 2), which differ in train.lr; keep one of them with --where "
                        "(e.g. --where \"strategy.plugin != 'scratch' OR train.lr = 0.1\"), so "
                        "that each transfer run has one baseline",
                        id));
}

TEST_F(ReportDb, GainNeedsTransferRuns) {
  add_final("scratch", 1, "usps", 0.5);
  EXPECT_EQ(error([&] { gain(GainOptions{}); }),
            fmt::format("no finished transfer run in '{}': every finished run has "
                        "strategy.plugin = 'scratch' (the baseline); run a transfer strategy "
                        "(e.g. finetune) on the same targets and seeds",
                        db_));
}

// --- compare --select-config: model selection over a search ------------------------------------

// DomainBed's table: per method, the searched configuration (train.lr, from runs.search) with
// the best mean validation value over its seeds, and its runs' test mean ± s.e.
TEST_F(ReportDb, SelectConfigPicksTheBestMeanValidationPerMethod) {
  const std::string search =
      R"j({"sweeper":"random","trial":0,"distributions":{"seed":"choice(1, 2)",)j"
      R"j("train.lr":"tag(log, interval(0.0001, 0.1))"}})j";
  auto add_run = [&](const std::string& strategy, int64_t seed, double lr, double val, double test,
                     bool has_val = true) {
    RunSpec r;
    r.strategy = strategy;
    r.seed = seed;
    r.extra = {{"train.lr", lr, "float"}};
    r.summaries = {{"target/test/acc", test}};
    if (has_val) r.summaries.push_back({"target/val/acc", val});
    // source/val/acc only per epoch (as runs log it); its last value is what final selects on.
    // The worst pooled source domain's: lr itself, so source-val-worst picks the largest.
    r.metrics =
        stage(0, {{"source/val/acc", {0.1, 1.0 - lr}}, {"source/val/worst/acc", {0.1, lr}}});
    r.search = search;
    return add(r);
  };
  // dann: lr 0.1 has one lucky seed (mean val 0.775); lr 0.01 the best mean (0.85).
  add_run("dann", 1, 0.1, 0.95, 0.9);
  add_run("dann", 2, 0.1, 0.60, 0.5);
  add_run("dann", 1, 0.01, 0.90, 0.7);
  add_run("dann", 2, 0.01, 0.80, 0.8);
  add_run("dann", 1, 0.001, 0.50, 0.99);
  add_run("dann", 2, 0.001, 0.50, 0.99);
  // coral: lr 0.001 wins; one of its runs lacks the validation value but keeps its test value.
  add_run("coral", 1, 0.01, 0.70, 0.6);
  add_run("coral", 2, 0.01, 0.70, 0.6);
  add_run("coral", 1, 0.001, 0.80, 0.75);
  const int64_t no_val = add_run("coral", 2, 0.001, 0, 0.65, /*has_val=*/false);
  CompareOptions o;
  o.select_config = "oracle";
  Table t = compare(o);
  EXPECT_THAT(t.title, HasSubstr("model selection over the search of train.lr: per row, the "
                                 "configuration with the best mean target/val/acc over its seeds "
                                 "(test-domain validation, an oracle)"));
  EXPECT_EQ(t.header, (Row{"strategy.plugin", "configs", "selected", "val",
                           "target/test/acc (mean ± s.e.)", "runs"}));
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.rows[0], (Row{"dann", "3", "train.lr=0.01", "0.8500", "0.7500 ± 0.0500", "2"}));
  EXPECT_EQ(t.rows[1], (Row{"coral", "2", "train.lr=0.001", "0.8000", "0.7000 ± 0.0500", "2"}));
  EXPECT_THAT(t.notes,
              ::testing::Contains(fmt::format(
                  "(1 run has no target/val/acc and cannot be selected: run {})", no_val)));
  // Training-domain validation on the last logged source/val/acc (1 - lr): the smallest lr.
  o.select_config = "source-val";
  t = compare(o);
  EXPECT_EQ(t.rows[0][2], "train.lr=0.001");
  EXPECT_EQ(t.rows[0][4], "0.9900 ± 0.0000");
  // The worst training domain's validation (source/val/worst/acc = lr): the largest lr.
  o.select_config = "source-val-worst";
  t = compare(o);
  EXPECT_THAT(t.title, HasSubstr("best mean source/val/worst/acc over its seeds (the worst "
                                 "training domain's validation)"));
  EXPECT_EQ(t.rows[0][2], "train.lr=0.1");
  EXPECT_EQ(t.rows[0][3], "0.1000");
  EXPECT_EQ(t.rows[0][4], "0.7000 ± 0.2000");
  EXPECT_EQ(t.rows[1][2], "train.lr=0.01");
  // Any metric; several metrics; machine-readable columns.
  o.select_config = "target/test/acc";
  o.metrics = {"target/test/acc", "target/val/acc"};
  o.machine_readable = true;
  t = compare(o);
  EXPECT_EQ(t.header, (Row{"strategy.plugin", "configs", "selected", "val", "target/test/acc mean",
                           "target/test/acc se", "target/test/acc n", "target/val/acc mean",
                           "target/val/acc se", "target/val/acc n", "runs"}));
  EXPECT_EQ(t.rows[0][2], "train.lr=0.001");
  EXPECT_EQ(t.rows[0][4], "0.99");
  // Rows by another key: what else varies (the strategy) is part of the configuration.
  o = CompareOptions();
  o.select_config = "oracle";
  o.group_by = {"target.variant"};
  t = compare(o);
  ASSERT_EQ(t.rows.size(), 1u);
  EXPECT_EQ(t.rows[0][1], "5");  // three dann and two coral learning rates
  EXPECT_EQ(t.rows[0][2], "strategy.plugin=dann train.lr=0.01");
  // The HTML report shows both selections (oracle, and source-val: the runs log it).
  const std::string html = plot::html_report(*store_, store_->list_runs(), {});
  EXPECT_THAT(html, HasSubstr("<h2>Model selection over the search</h2>"));
  EXPECT_THAT(html, HasSubstr("best mean target/val/acc over its seeds"));
  EXPECT_THAT(html, HasSubstr("best mean source/val/acc over its seeds"));
  EXPECT_THAT(html, HasSubstr("<td>train.lr=0.01</td>"));
}

TEST_F(ReportDb, SelectConfigErrors) {
  RunSpec plain;
  plain.strategy = "dann";
  plain.summaries = {{"target/test/acc", 0.5}, {"target/val/acc", 0.5}};
  add(plain);
  // Without a search the HTML report has no selection section.
  EXPECT_THAT(plot::html_report(*store_, store_->list_runs(), {}),
              Not(HasSubstr("Model selection")));
  CompareOptions o;
  o.select_config = "oracle";
  EXPECT_THAT(error([&] { compare(o); }),
              HasSubstr("--select-config chooses among the configurations a sweep searched, but "
                        "no finished run in '" +
                        db_ + "' records a searched key other than seed"));
  RunSpec searched = plain;
  searched.seed = 2;
  searched.search = R"j({"sweeper":"grid","distributions":{"train.lr":"choice(0.01)"}})j";
  add(searched);
  o.select_config = "target/val/accc";
  EXPECT_THAT(error([&] { compare(o); }),
              HasSubstr("--select-config 'target/val/accc': no run in '" + db_ +
                        "' has a value of 'target/val/accc'; did you mean 'target/val/acc'"));
  o.select_config = "source-val";
  EXPECT_THAT(error([&] { compare(o); }),
              HasSubstr("source-val needs runs with a source domain (source/val/acc); use "
                        "--select-config oracle"));
  o.select_config = "source-val-worst";
  EXPECT_THAT(error([&] { compare(o); }),
              HasSubstr("source-val-worst needs runs whose source pools several domains, e.g. "
                        "[source.transform] rotate = [0, 15, 30]"));
  o.select_config = "oracle";
  o.pivot = "target.variant";
  EXPECT_THAT(error([&] { compare(o); }),
              HasSubstr("--select-config chooses one configuration per row; leave out --pivot"));
}

}  // namespace
}  // namespace tlab
