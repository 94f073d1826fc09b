// Result tables: mean ± standard error, grouping, formats.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "report/report.hpp"

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

TEST(Report, CsvQuotesFields) {
  auto r = run(1, "has,comma", 1, 0.5);
  auto csv = tlab::format_runs({r}, tlab::Format::Csv);
  EXPECT_THAT(csv, HasSubstr("id,status,name,seed,strategy.plugin,target/test/acc\n"));
  EXPECT_THAT(csv, HasSubstr("1,finished,exp,1,\"has,comma\",0.5\n"));
}

}  // namespace
