// Tests of the SQLite results store: schema, round trips, non-finite values, refused files,
// busy retries and many processes writing at once (forked children).

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <iterator>
#include <limits>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "results/store_test_util.hpp"
#include "store/store.hpp"

namespace tlab {
namespace {

using namespace store_test;

std::string store_error(const std::function<void()>& action) {
  return error_of<StoreError>(action);
}

bool is_timestamp(const std::string& text) {
  static const std::regex iso(R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$)");
  return std::regex_match(text, iso);
}

NewRun sample_run(const std::string& name = "mnist_to_usps") {
  NewRun run;
  run.experiment = "experiments/mnist_to_usps.toml";
  run.name = name;
  run.host = "node-7";
  run.pid = 4242;
  run.device = "cpu";
  run.seed = 17;
  run.git_commit = "0123456789abcdef0123456789abcdef01234567";
  run.git_dirty = 1;
  run.config_toml = "[train]\nlr = 2.0\n";
  run.config_hash = "9f86d081884c7d65";
  run.overrides = R"({"train.lr": 2.0})";
  run.run_dir = "results/runs/1";
  run.tlab_version = "0.1.0";
  run.params = {
      {"train.lr", 2.0, "float"},           {"model.name", std::string("123"), "string"},
      {"train.epochs", int64_t{-7}, "int"}, {"data.big", int64_t{1} << 40, "int"},
      {"train.amp", true, "bool"},          {"strategy.layers", std::string("[1, 2]"), "list"},
  };
  return run;
}

class StoreTest : public TempDbTest {
 protected:
  StoreTest() : TempDbTest("tlab_store") {}

  /// Many processes writing metrics at once: each child has its own run and writes `batches`
  /// batches of `rows` rows (one transaction each) with a heartbeat after each batch.
  void write_concurrently(int processes, int batches, int rows) {
    std::vector<int64_t> runs;
    {
      Store store(db_path_);
      for (int i = 0; i < processes; ++i) runs.push_back(store.create_run(sample_run()));
    }
    const auto codes = run_children(processes, [&](int index) {
      Store store(db_path_, /*create=*/false);
      const int64_t run = runs[static_cast<size_t>(index)];
      for (int batch = 0; batch < batches; ++batch) {
        std::vector<MetricRow> metrics;
        for (int i = 0; i < rows; ++i) {
          const int64_t step = int64_t{batch} * rows + i;
          metrics.push_back({"train/loss", step, batch, index + step / 1000.0, step * 0.5});
        }
        store.write_metrics(run, metrics);
        store.heartbeat(run);
      }
    });
    ASSERT_EQ(codes.size(), static_cast<size_t>(processes));
    for (int i = 0; i < processes; ++i) EXPECT_EQ(codes[i], 0) << "child " << i;

    Store store(db_path_, /*create=*/false);
    RawDb raw(db_path_);
    EXPECT_EQ(raw.scalar("SELECT count(*) FROM metrics"),
              std::to_string(processes * batches * rows));
    for (int index = 0; index < processes; ++index) {
      const auto metrics = store.metrics(runs[static_cast<size_t>(index)]);
      ASSERT_EQ(metrics.size(), static_cast<size_t>(batches * rows));
      for (size_t step = 0; step < metrics.size(); ++step) {
        EXPECT_EQ(metrics[step].step, static_cast<int64_t>(step));
        EXPECT_EQ(metrics[step].value, index + static_cast<double>(step) / 1000.0);
      }
    }
    EXPECT_EQ(store.integrity_check(), "ok");
  }
};

TEST_F(StoreTest, CreatesFolderAndCurrentSchemaVersionInWalMode) {
  const fs::path nested = dir_ / "a" / "b" / "results.db";
  Store store(nested);
  EXPECT_EQ(store.path(), nested);
  EXPECT_TRUE(fs::exists(nested));

  RawDb raw(nested);
  EXPECT_EQ(raw.scalar("PRAGMA user_version"), std::to_string(Store::kSchemaVersion));
  EXPECT_EQ(raw.scalar("PRAGMA journal_mode"), "wal");
  const auto objects =
      raw.rows("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name");
  const std::vector<std::vector<std::string>> expected = {{"table", "metrics"},
                                                          {"index", "metrics_run_name_step"},
                                                          {"table", "params"},
                                                          {"table", "run_plugins"},
                                                          {"index", "run_plugins_run"},
                                                          {"view", "run_summaries"},
                                                          {"table", "runs"},
                                                          {"index", "runs_status"},
                                                          {"table", "summaries"},
                                                          {"index", "runs_run_key"},
                                                          {"index", "runs_uuid"},
                                                          {"view", "run_overview"},
                                                          {"view", "metric_last"},
                                                          {"view", "run_params"},
                                                          {"view", "summary_stats"}};
  for (const auto& object : expected)
    EXPECT_NE(std::find(objects.begin(), objects.end(), object), objects.end())
        << object[0] << " " << object[1];
  EXPECT_EQ(store.integrity_check(), "ok");
}

TEST_F(StoreTest, RollbackJournalForShardsOnNetworkFilesystems) {
  const fs::path shard = dir_ / "shards" / "0.1.db";
  {
    Store store(shard, true, Store::kBusyTimeout, Store::Journal::kRollback);
    NewRun queued = sample_run();
    queued.status = RunStatus::kQueued;  // as a SLURM submission writes it
    const int64_t run = store.create_run(queued);
    store.set_job(run, "slurm 12_0");
    EXPECT_TRUE(store.start_run(run, 42, "cpu", "", "", -1, "node7"));
    store.finish_run(run, RunStatus::kNodeFail, "the node failed");
    const RunRecord rec = store.run(run);
    EXPECT_EQ(rec.job, "slurm 12_0");
    EXPECT_EQ(rec.host, "node7");
    EXPECT_EQ(rec.status, "node_fail");
    store.finish_run(run, RunStatus::kCancelled,
                     "scancel");  // SLURM's verdict replaces "killed" and such
    EXPECT_EQ(store.run(run).status, "cancelled");
  }
  RawDb raw(shard);
  EXPECT_EQ(raw.scalar("PRAGMA journal_mode"), "delete");
  EXPECT_FALSE(fs::exists(shard.string() + "-wal"));
  // Reopened with the default, it becomes a WAL database (the main results database).
  Store store(shard, false);
  EXPECT_EQ(RawDb(shard).scalar("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(store.run(1).host, "node7");  // start_run without a host keeps it
}

TEST_F(StoreTest, ListingEveryRunGivesEachRunItsOwnRowsAsListingThemByIdDoes) {
  // list_runs() scans each table once and merges by run id; rows of several runs interleaved
  // in the table (summaries written in turns, a run with none, a deleted run between) must
  // land in their own run, ordered, exactly as the lookup by id gives them.
  Store store(db_path_);
  const int64_t a = store.create_run(sample_run("a"));
  const int64_t gone = store.create_run(sample_run("gone"));
  const int64_t b = store.create_run(sample_run("b"));
  const int64_t empty = store.create_run(sample_run("empty"));
  store.write_summaries(b, {{"z/last", 1.0}});
  store.write_summaries(a, {{"m/middle", 2.0}, {"a/first", 3.0}});
  store.write_summaries(b, {{"a/first", 4.0}});
  store.write_summaries(gone, {{"a/first", 5.0}});
  RawDb(db_path_).exec("DELETE FROM runs WHERE id = " + std::to_string(gone));

  const auto all = store.list_runs();
  const auto by_id = store.list_runs({a, b, empty});
  ASSERT_EQ(all.size(), 3u);
  ASSERT_EQ(by_id.size(), 3u);
  const std::vector<std::pair<std::string, double>> of_a = {{"a/first", 3.0}, {"m/middle", 2.0}};
  const std::vector<std::pair<std::string, double>> of_b = {{"a/first", 4.0}, {"z/last", 1.0}};
  EXPECT_EQ(all[0].summaries, of_a);
  EXPECT_EQ(all[1].summaries, of_b);
  EXPECT_TRUE(all[2].summaries.empty());
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].id, by_id[i].id);
    EXPECT_EQ(all[i].name, by_id[i].name);
    EXPECT_EQ(all[i].summaries, by_id[i].summaries);
    ASSERT_EQ(all[i].params.size(), by_id[i].params.size());
    for (std::size_t k = 0; k < all[i].params.size(); ++k) {
      EXPECT_EQ(all[i].params[k].key, by_id[i].params[k].key);
      EXPECT_EQ(all[i].params[k].value, by_id[i].params[k].value);
    }
  }
  ASSERT_NE(all[1].param("train.lr"), nullptr);
  EXPECT_EQ(std::get<double>(all[1].param("train.lr")->value), 2.0);
  EXPECT_EQ(all[1].param("no.such"), nullptr);
  ASSERT_NE(all[1].summary("z/last"), nullptr);
  EXPECT_EQ(*all[1].summary("z/last"), 1.0);
  EXPECT_EQ(all[1].summary("no/such"), nullptr);
}

TEST_F(StoreTest, RoundTripsRunParamsMetricsSummariesAndPlugins) {
  Store store(db_path_);
  const NewRun input = sample_run();
  const int64_t run = store.create_run(input);
  EXPECT_EQ(run, 1);

  store.add_plugins(run, {{"dataset", "mnist", "1.2.0", "/p/datasets/mnist.so", "abc123"},
                          {"strategy", "dann", "0.3.1", "/p/strategies/dann.so", "def456"}});
  // Steps out of order and two names: metrics() orders by step, then by insertion.
  store.write_metrics(run, {{"train/loss", 20, 1, 0.25, 2.5},
                            {"train/loss", 10, 0, 0.5, 1.25},
                            {"val/acc", 10, 0, 0.875, 1.5}});
  store.write_summaries(run, {{"val/acc", 0.875}, {"test/acc", 0.8125}});

  auto listed = store.list_runs();
  ASSERT_EQ(listed.size(), 1u);
  RunSummaryRow row = listed[0];
  EXPECT_EQ(row.id, run);
  EXPECT_EQ(row.name, "mnist_to_usps");
  EXPECT_EQ(row.status, "running");
  EXPECT_EQ(row.reason, "");
  EXPECT_TRUE(is_timestamp(row.started_at)) << row.started_at;
  EXPECT_EQ(row.ended_at, "");
  EXPECT_EQ(row.device, "cpu");
  EXPECT_EQ(row.seed, 17);

  ASSERT_EQ(row.params.size(), 6u);  // ordered by key
  EXPECT_EQ(row.params[0].key, "data.big");
  EXPECT_EQ(std::get<int64_t>(row.params[0].value), int64_t{1} << 40);
  EXPECT_EQ(row.params[1].key, "model.name");
  EXPECT_EQ(std::get<std::string>(row.params[1].value), "123");
  EXPECT_EQ(row.params[1].type, "string");
  EXPECT_EQ(row.params[2].key, "strategy.layers");
  EXPECT_EQ(std::get<std::string>(row.params[2].value), "[1, 2]");
  EXPECT_EQ(row.params[2].type, "list");
  EXPECT_EQ(row.params[3].key, "train.amp");
  EXPECT_EQ(std::get<bool>(row.params[3].value), true);
  EXPECT_EQ(row.params[3].type, "bool");
  EXPECT_EQ(row.params[4].key, "train.epochs");
  EXPECT_EQ(std::get<int64_t>(row.params[4].value), -7);
  EXPECT_EQ(row.params[4].type, "int");
  EXPECT_EQ(row.params[5].key, "train.lr");
  EXPECT_EQ(std::get<double>(row.params[5].value), 2.0);
  EXPECT_EQ(row.params[5].type, "float");

  const std::vector<std::pair<std::string, double>> summaries = {{"test/acc", 0.8125},
                                                                 {"val/acc", 0.875}};
  EXPECT_EQ(row.summaries, summaries);

  const auto all = store.metrics(run);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].name, "train/loss");
  EXPECT_EQ(all[0].step, 10);
  EXPECT_EQ(all[0].epoch, 0);
  EXPECT_EQ(all[0].value, 0.5);
  EXPECT_EQ(all[0].wall_time, 1.25);
  EXPECT_EQ(all[1].name, "val/acc");
  EXPECT_EQ(all[1].value, 0.875);
  EXPECT_EQ(all[2].step, 20);
  EXPECT_EQ(all[2].epoch, 1);
  EXPECT_EQ(all[2].value, 0.25);
  EXPECT_EQ(all[2].wall_time, 2.5);
  const auto losses = store.metrics(run, "train/loss");
  ASSERT_EQ(losses.size(), 2u);
  EXPECT_EQ(losses[0].step, 10);
  EXPECT_EQ(losses[1].step, 20);
  EXPECT_TRUE(store.metrics(run, "nope").empty());

  const auto plugins = store.plugins(run);
  ASSERT_EQ(plugins.size(), 2u);
  EXPECT_EQ(plugins[0].kind, "dataset");
  EXPECT_EQ(plugins[0].name, "mnist");
  EXPECT_EQ(plugins[0].version, "1.2.0");
  EXPECT_EQ(plugins[0].path, "/p/datasets/mnist.so");
  EXPECT_EQ(plugins[0].file_hash, "abc123");
  EXPECT_EQ(plugins[1].name, "dann");

  // Every column of the run, and the natural storage class of each param value.
  RawDb raw(db_path_);
  const auto columns = raw.rows(
      "SELECT experiment, host, pid, git_commit, git_dirty, config_toml, config_hash, "
      "overrides, run_dir, tlab_version, created_at = started_at, heartbeat_at = started_at "
      "FROM runs");
  const std::vector<std::vector<std::string>> expected_columns = {
      {input.experiment, input.host, "4242", input.git_commit, "1", input.config_toml,
       input.config_hash, input.overrides, input.run_dir, input.tlab_version, "1", "1"}};
  EXPECT_EQ(columns, expected_columns);
  const auto types = raw.rows("SELECT key, typeof(value) FROM params ORDER BY key");
  const std::vector<std::vector<std::string>> expected_types = {
      {"data.big", "integer"},  {"model.name", "text"},      {"strategy.layers", "text"},
      {"train.amp", "integer"}, {"train.epochs", "integer"}, {"train.lr", "real"}};
  EXPECT_EQ(types, expected_types);
  const auto view = raw.rows(
      "SELECT run_id, run_name, status, metric, value FROM run_summaries "
      "ORDER BY metric");
  const std::vector<std::vector<std::string>> expected_view = {
      {"1", "mnist_to_usps", "running", "test/acc", "0.8125"},
      {"1", "mnist_to_usps", "running", "val/acc", "0.875"}};
  EXPECT_EQ(view, expected_view);

  store.heartbeat(run);
  store.finish_run(run, RunStatus::kDiverged, "loss became NaN at step 20");
  row = store.list_runs({run}).at(0);
  EXPECT_EQ(row.status, "diverged");
  EXPECT_EQ(row.reason, "loss became NaN at step 20");
  EXPECT_TRUE(is_timestamp(row.ended_at)) << row.ended_at;
  EXPECT_GE(row.ended_at, row.started_at);  // ISO-8601 text sorts by time
  const std::string heartbeat = raw.scalar("SELECT heartbeat_at FROM runs");
  EXPECT_TRUE(is_timestamp(heartbeat)) << heartbeat;
  EXPECT_GE(heartbeat, row.started_at);
  EXPECT_EQ(store.integrity_check(), "ok");
}

TEST_F(StoreTest, StoresUnknownFieldsAsNull) {
  Store store(db_path_);
  NewRun run;
  run.experiment = "e.toml";
  run.name = "bare";
  const int64_t id = store.create_run(run);
  RawDb raw(db_path_);
  const auto columns = raw.rows(
      "SELECT host, pid, device, git_commit, git_dirty, config_toml, overrides, run_dir, "
      "reason, ended_at FROM runs");
  const std::vector<std::vector<std::string>> expected = {
      {"NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "{}", "NULL", "NULL", "NULL"}};
  EXPECT_EQ(columns, expected);
  EXPECT_TRUE(store.list_runs({id}).at(0).params.empty());
  EXPECT_EQ(store.integrity_check(), "ok");
}

TEST_F(StoreTest, KeepsNanAndInfinityInMetricsAndSummaries) {
  Store store(db_path_);
  const int64_t run = store.create_run(sample_run());
  store.write_metrics(run, {{"loss", 1, 0, kNaN, 0.5},
                            {"loss", 2, 0, kInf, 1.0},
                            {"loss", 3, 0, -kInf, kNaN},
                            {"loss", 4, 0, -kNaN, 2.0}});
  store.write_summaries(run, {{"a_nan", kNaN}, {"b_inf", kInf}, {"c_minus_inf", -kInf}});

  const auto metrics = store.metrics(run);
  ASSERT_EQ(metrics.size(), 4u);
  EXPECT_TRUE(std::isnan(metrics[0].value));
  EXPECT_EQ(metrics[0].wall_time, 0.5);
  EXPECT_TRUE(std::isinf(metrics[1].value));
  EXPECT_GT(metrics[1].value, 0);
  EXPECT_TRUE(std::isinf(metrics[2].value));
  EXPECT_LT(metrics[2].value, 0);
  EXPECT_TRUE(std::isnan(metrics[2].wall_time));
  EXPECT_TRUE(std::isnan(metrics[3].value));

  const auto summaries = store.list_runs().at(0).summaries;
  ASSERT_EQ(summaries.size(), 3u);
  EXPECT_TRUE(std::isnan(summaries[0].second));
  EXPECT_EQ(summaries[1].second, kInf);
  EXPECT_EQ(summaries[2].second, -kInf);

  // What other readers see: NaN as NULL, infinities as REAL.
  RawDb raw(db_path_);
  const auto types = raw.rows("SELECT typeof(value), typeof(wall_time) FROM metrics ORDER BY step");
  const std::vector<std::vector<std::string>> expected = {
      {"null", "real"}, {"real", "real"}, {"real", "null"}, {"null", "real"}};
  EXPECT_EQ(types, expected);
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM metrics WHERE value = 9e999"), "1");
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM metrics WHERE value = -9e999"), "1");
  EXPECT_EQ(raw.real("SELECT value FROM metrics WHERE step = 2"), kInf);
  EXPECT_EQ(raw.real("SELECT value FROM summaries WHERE name = 'c_minus_inf'"), -kInf);
  EXPECT_EQ(raw.scalar("SELECT typeof(value) FROM summaries WHERE name = 'a_nan'"), "null");
  EXPECT_EQ(store.integrity_check(), "ok");
}

TEST_F(StoreTest, SummariesAreUpserted) {
  Store store(db_path_);
  const int64_t run = store.create_run(sample_run());
  store.write_summaries(run, {{"acc", 0.5}, {"loss", 2.0}});
  store.write_summaries(run, {{"acc", 0.75}});
  const std::vector<std::pair<std::string, double>> expected = {{"acc", 0.75}, {"loss", 2.0}};
  EXPECT_EQ(store.list_runs().at(0).summaries, expected);
  EXPECT_EQ(store.integrity_check(), "ok");
}

TEST_F(StoreTest, RefusesFileThatIsNotADatabase) {
  for (const std::string& content :
       {std::string("just some text\n"), std::string(4096, 'x') + "\n"}) {
    {
      std::ofstream file(db_path_, std::ios::binary | std::ios::trunc);
      file << content;
    }
    const std::string message = store_error([&] { Store store(db_path_); });
    EXPECT_EQ(message, fmt::format("'{}' is not an SQLite database (file is not a database); "
                                   "pass another --db path or move the file away",
                                   db_path_.string()));
    // Left as it was.
    std::ifstream file(db_path_, std::ios::binary);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(file), {}), content);
    EXPECT_FALSE(fs::exists(db_path_.string() + "-wal"));
  }
}

TEST_F(StoreTest, RefusesNewerSchemaVersionNamingBoth) {
  { Store store(db_path_); }
  {
    RawDb raw(db_path_);
    raw.exec(fmt::format("PRAGMA user_version = {}", Store::kSchemaVersion + 1));
  }
  const std::string message = store_error([&] { Store store(db_path_); });
  EXPECT_CONTAINS(message, "'" + db_path_.string() + "'");
  EXPECT_CONTAINS(message, fmt::format("schema version {}", Store::kSchemaVersion + 1));
  EXPECT_CONTAINS(message, fmt::format("schema version {}", Store::kSchemaVersion));
  EXPECT_CONTAINS(message, "upgrade tlab");

  RawDb raw(db_path_);
  EXPECT_EQ(raw.scalar("PRAGMA user_version"), std::to_string(Store::kSchemaVersion + 1));
  EXPECT_EQ(raw.scalar("PRAGMA integrity_check"), "ok");
}

TEST_F(StoreTest, RefusesForeignDatabase) {
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(db_path_.c_str(), &db), SQLITE_OK);
    sqlite3_exec(db, "CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)", nullptr, nullptr,
                 nullptr);
    sqlite3_close(db);
  }
  const std::string message = store_error([&] { Store store(db_path_); });
  EXPECT_CONTAINS(message, "'" + db_path_.string() + "' is not a TransferLab results database");
  EXPECT_CONTAINS(message, "'invoices'");
  EXPECT_CONTAINS(message, "pass another --db path");

  // Left as it was: not switched to WAL, no tables added.
  RawDb raw(db_path_);
  EXPECT_EQ(raw.scalar("PRAGMA journal_mode"), "delete");
  EXPECT_EQ(raw.scalar("SELECT group_concat(name) FROM sqlite_master"), "invoices");
  EXPECT_EQ(raw.scalar("PRAGMA user_version"), "0");
  EXPECT_EQ(raw.scalar("PRAGMA integrity_check"), "ok");
}

TEST_F(StoreTest, RefusesMissingFileUnlessCreating) {
  const std::string message = store_error([&] { Store store(db_path_, /*create=*/false); });
  EXPECT_CONTAINS(message, "'" + db_path_.string() + "' does not exist");
  EXPECT_FALSE(fs::exists(db_path_));
}

TEST_F(StoreTest, ReopenKeepsDataAndVersion) {
  {
    Store store(db_path_);
    const int64_t run = store.create_run(sample_run("first"));
    store.write_metrics(run, {{"loss", 1, 0, 0.5, 0.1}});
    store.write_summaries(run, {{"acc", 0.5}});
  }
  Store store(db_path_, /*create=*/false);
  const auto runs = store.list_runs();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].name, "first");
  EXPECT_EQ(runs[0].params.size(), 6u);
  EXPECT_EQ(store.metrics(runs[0].id).at(0).value, 0.5);
  EXPECT_EQ(store.create_run(sample_run("second")), 2);
  RawDb raw(db_path_);
  EXPECT_EQ(raw.scalar("PRAGMA user_version"), std::to_string(Store::kSchemaVersion));
  EXPECT_EQ(store.integrity_check(), "ok");
}

TEST_F(StoreTest, ErrorsNameWhatFailedAndTheDatabase) {
  Store store(db_path_);
  const std::string quoted = "'" + db_path_.string() + "'";

  std::string message = store_error([&] { store.write_metrics(999, {{"loss", 1, 0, 1, 1}}); });
  EXPECT_CONTAINS(message, "writing 1 metric rows for run 999 in " + quoted);
  EXPECT_CONTAINS(message, "FOREIGN KEY constraint failed");
  EXPECT_CONTAINS(message, "the run id is not in this database");

  message = store_error([&] { store.heartbeat(999); });
  EXPECT_CONTAINS(message, "there is no run 999");
  message = store_error([&] { store.finish_run(999, RunStatus::kFinished, ""); });
  EXPECT_CONTAINS(message, "there is no run 999");
  message = store_error([&] { store.list_runs({999}); });
  EXPECT_CONTAINS(message, "there is no run 999");
  message = store_error([&] { parse_run_status("done"); });
  EXPECT_CONTAINS(message,
                  "'done' is not a run status; expected one of queued, running, finished, "
                  "failed, crashed, killed, timeout, diverged, oom, lost, cancelled, "
                  "node_fail, pruned (a database written by a newer tlab?");
  message = store_error([&] { store.finish_run(1, RunStatus::kRunning, ""); });
  EXPECT_CONTAINS(message,
                  "'running' is not a terminal run status; expected one of finished, "
                  "failed, crashed, killed, timeout, diverged, oom, lost, cancelled, "
                  "node_fail");
  message = store_error([&] { store.finish_open_run(1, RunStatus::kQueued, ""); });
  EXPECT_CONTAINS(message, "'queued' is not a terminal run status; expected one of finished, ");

  NewRun bad = sample_run();
  bad.params.push_back({"train.lr2", int64_t{3}, "float"});
  message = store_error([&] { store.create_run(bad); });
  EXPECT_EQ(message, "param 'train.lr2' has type 'float' but holds an int");
  bad = sample_run();
  bad.params.push_back({"train.lr", 0.5, "float"});
  message = store_error([&] { store.create_run(bad); });
  EXPECT_CONTAINS(message, "recording the new run 'mnist_to_usps' in " + quoted);
  EXPECT_CONTAINS(message, "UNIQUE constraint failed: params.run_id, params.key");
  bad = sample_run();
  bad.overrides = "[1, 2";
  message = store_error([&] { store.create_run(bad); });
  EXPECT_CONTAINS(message, "overrides of run 'mnist_to_usps' are not a JSON object: '[1, 2'");

  // Nothing of the failed writes remains.
  RawDb raw(db_path_);
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM runs"), "0");
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM params"), "0");
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM metrics"), "0");
  EXPECT_EQ(store.integrity_check(), "ok");
}

TEST_F(StoreTest, RetriesAWriteStillBusyAfterTheTimeout) {
  // A 20 ms busy timeout; another connection holds the write lock for 300 ms, so the first
  // attempts fail with SQLITE_BUSY and a later one must succeed.
  Store store(db_path_, true, std::chrono::milliseconds(20));
  const int64_t run = store.create_run(sample_run());
  std::promise<void> locked;
  std::thread holder([&] {
    RawDb raw(db_path_);
    raw.exec("BEGIN IMMEDIATE");
    raw.exec(fmt::format("INSERT INTO summaries VALUES ({}, 'held', 1.0)", run));
    locked.set_value();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    raw.exec("COMMIT");
  });
  locked.get_future().wait();
  std::vector<MetricRow> rows;
  for (int step = 0; step < 20; ++step) rows.push_back({"loss", step, 0, step * 0.25, 0});
  EXPECT_NO_THROW(store.write_metrics(run, rows));
  holder.join();

  EXPECT_EQ(store.metrics(run).size(), 20u);
  EXPECT_EQ(store.list_runs().at(0).summaries.size(), 1u);
  EXPECT_EQ(store.integrity_check(), "ok");
}

TEST_F(StoreTest, GivesUpOnALockHeldForeverWithoutWritingHalfABatch) {
  Store store(db_path_, true, std::chrono::milliseconds(20));
  const int64_t run = store.create_run(sample_run());
  std::promise<void> locked;
  std::promise<void> done;
  std::thread holder([&] {
    RawDb raw(db_path_);
    raw.exec("BEGIN IMMEDIATE");
    locked.set_value();
    done.get_future().wait();
    raw.exec("ROLLBACK");
  });
  locked.get_future().wait();
  const std::vector<MetricRow> rows = {{"loss", 1, 0, 1, 0}, {"loss", 2, 0, 2, 0}};
  const std::string message = store_error([&] { store.write_metrics(run, rows); });
  done.set_value();
  holder.join();
  EXPECT_CONTAINS(message, "writing 2 metric rows for run " + std::to_string(run) + " in '" +
                               db_path_.string() + "' failed: database is locked");
  EXPECT_CONTAINS(message, fmt::format("after {} attempts", Store::kMaxAttempts));

  EXPECT_TRUE(store.metrics(run).empty());
  store.write_metrics(run, rows);  // the lock is free again
  EXPECT_EQ(store.metrics(run).size(), 2u);
  EXPECT_EQ(store.integrity_check(), "ok");
}

TEST_F(StoreTest, EightProcessesWriteConcurrently) { write_concurrently(8, 50, 20); }

TEST_F(StoreTest, ThirtyTwoProcessesWriteConcurrently) { write_concurrently(32, 25, 5); }

TEST_F(StoreTest, ProcessesCreatingTheSameNewDatabaseAtOnce) {
  // Each child opens a database that does not exist yet: one migrates it, the others wait for
  // the write lock and then find it migrated.
  const auto codes = run_children(8, [&](int index) {
    Store store(db_path_);
    store.create_run(sample_run(fmt::format("run{}", index)));
  });
  for (size_t i = 0; i < codes.size(); ++i) EXPECT_EQ(codes[i], 0) << "child " << i;
  Store store(db_path_, /*create=*/false);
  EXPECT_EQ(store.list_runs().size(), 8u);
  RawDb raw(db_path_);
  EXPECT_EQ(raw.scalar("PRAGMA user_version"), std::to_string(Store::kSchemaVersion));
  EXPECT_EQ(raw.scalar("SELECT count(*) FROM sqlite_master WHERE name = 'runs'"), "1");
  EXPECT_EQ(store.integrity_check(), "ok");
}

TEST_F(StoreTest, RefusesAStoreCarriedAcrossFork) {
  Store store(db_path_);
  const int64_t run = store.create_run(sample_run());
  const auto codes = run_children(1, [&](int) {
    try {
      store.heartbeat(run);
    } catch (const StoreError& e) {
      const std::string message = e.what();
      if (message.find("after fork(); open a new Store in the child") != std::string::npos) {
        _exit(3);
      }
      throw;
    }
  });
  EXPECT_EQ(codes, std::vector<int>{3});
  store.heartbeat(run);  // still fine in the parent
  EXPECT_EQ(store.integrity_check(), "ok");
}

TEST_F(StoreTest, MovedStoreKeepsWorking) {
  Store first(db_path_);
  Store second = std::move(first);
  const int64_t run = second.create_run(sample_run());
  second.write_metrics(run, {{"loss", 1, 0, 0.5, 0}});
  Store third(dir_ / "other.db");
  third = std::move(second);
  EXPECT_EQ(third.path(), db_path_);
  EXPECT_EQ(third.metrics(run).size(), 1u);
  EXPECT_EQ(third.integrity_check(), "ok");
}

}  // namespace
}  // namespace tlab
