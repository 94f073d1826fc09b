// One run on several processes ([run] processes, run/distributed.hpp): two Gloo ranks on the
// CPU take the steps one process takes; a rank that dies or hangs fails the run promptly, with
// no process left; bad settings are refused before any rank starts.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "run/distributed.hpp"
#include "store/store.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"
#include "weights/safetensors.hpp"

namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace {

using Clock = std::chrono::steady_clock;

// Fine-tuning with a source stage and Adam; 97 target examples in batches of 32: the last
// batch has one example, so rank 0's share of it is empty.
const char* kExperiment = R"toml(name = "ranks"
device = "cpu"
seed = 5
[source]
plugin = "digits"
domain = "clean"
train_size = 80
val_size = 20
test_size = 20
[target]
plugin = "digits"
domain = "noisy"
train_size = 97
val_size = 20
test_size = 20
[backbone]
plugin = "mlp"
hidden = [16]
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "finetune"
source_epochs = 2
[train]
optimizer = "adam"
lr = 0.01
epochs = 3
batch_size = 32
)toml";

class Ranks : public ::testing::Test {
 protected:
  fs::path dir_ = tlab::test::temp_dir(
      std::string("ranks_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  void TearDown() override { fs::remove_all(dir_); }

  std::string command(const std::string& db, const std::string& args) {
    tlab::test::write_file(dir_ / "exp.toml", kExperiment);
    return fmt::format(
        "cd '{}' && OMP_NUM_THREADS=1 '{}/tlab' --plugin-path '{}' run exp.toml --db '{}' "
        "--threads 1 {}",
        dir_.string(), TLAB_TEST_BIN_DIR, TLAB_TEST_PLUGIN_DIR, (dir_ / db).string(), args);
  }
  tlab::RunRecord only_run(const std::string& db) {
    tlab::Store store(dir_ / db, false);
    const auto runs = store.list_runs();
    EXPECT_EQ(runs.size(), 1u);
    return store.run(runs.at(0).id);
  }
  // Processes whose command line names this test's folder (tlab and its ranks).
  std::string left_over() {
    return tlab::test::shell(fmt::format("pgrep -af -- '{}' | grep -v pgrep", dir_.string())).out;
  }
};

TEST_F(Ranks, TwoRanksTakeTheStepsOfOneProcess) {
  const auto one = tlab::test::shell(command("one.db", ""));
  ASSERT_EQ(one.code, 0) << one.out;
  const auto two = tlab::test::shell(command("two.db", "--nproc 2"));
  ASSERT_EQ(two.code, 0) << two.out;
  const tlab::RunRecord a = only_run("one.db"), b = only_run("two.db");
  EXPECT_EQ(a.status, "finished");
  EXPECT_EQ(b.status, "finished") << b.reason;
  EXPECT_EQ(a.processes, 1);
  EXPECT_EQ(a.backend, "");
  EXPECT_EQ(b.processes, 2);
  EXPECT_EQ(b.backend, "gloo");
  EXPECT_EQ(a.run_key, b.run_key);  // how a run executes is not what it is
  // The same parameters after both stages (source pre-training, then the target).
  const auto wa = tlab::weights::read_safetensors(fs::path(a.run_dir) / "model.safetensors");
  const auto wb = tlab::weights::read_safetensors(fs::path(b.run_dir) / "model.safetensors");
  ASSERT_EQ(wa.size(), wb.size());
  ASSERT_FALSE(wa.empty());
  for (std::size_t i = 0; i < wa.size(); ++i) {
    EXPECT_EQ(wa[i].first, wb[i].first);
    EXPECT_TRUE(torch::allclose(wa[i].second, wb[i].second, 0, 1e-5))
        << wa[i].first << ": largest difference "
        << (wa[i].second - wb[i].second).abs().max().item<double>();
  }
  // The logged training loss is the global batch's, as one process logs it.
  auto losses = [&](const std::string& db) {
    return tlab::test::shell(
               fmt::format("sqlite3 '{}' \"SELECT name, printf('%.5f', value) FROM "
                           "metrics WHERE name LIKE '%/train/loss' ORDER BY step, name\"",
                           (dir_ / db).string()))
        .out;
  };
  EXPECT_EQ(losses("one.db"), losses("two.db"));
  EXPECT_THAT(losses("two.db"), HasSubstr("source/train/loss"));
  // Rank 1 trained (its log) and recorded nothing in the run's database.
  std::ifstream log(fs::path(b.run_dir) / "ranks" / "rank1.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr("[target] epoch 3/3"));
  EXPECT_THAT(text, HasSubstr("the pre-training cache is not used by a run on 2 processes"));
  const auto results = tlab::test::shell(fmt::format(
      "'{}/tlab' results show {} --db '{}'", TLAB_TEST_BIN_DIR, b.id, (dir_ / "two.db").string()));
  EXPECT_THAT(results.out, HasSubstr("processes"));
  EXPECT_THAT(results.out, HasSubstr("2 (gloo)"));
  EXPECT_EQ(left_over(), "");
}

// Waits until `file` contains `text` (true) or `seconds` pass (false).
bool wait_for_text(const fs::path& file, const std::string& text, double seconds) {
  const auto until = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < until) {
    std::ifstream in(file);
    const std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (s.find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// Rank 1 killed (SIGKILL) or stopped (SIGSTOP: a hung rank) while the run trains.
void rank_fails(Ranks& t, const fs::path& dir, const std::string& command, int sig,
                const std::string& expected, double within) {
  const pid_t tlab = fork();
  if (tlab == 0) {
    setpgid(0, 0);
    const std::string logged = command + " > '" + (dir / "out.txt").string() + "' 2>&1";
    execl("/bin/sh", "sh", "-c", logged.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // The run folder's rank 1 log, once training is under way.
  fs::path log;
  const auto until = Clock::now() + std::chrono::seconds(60);
  while (log.empty() && Clock::now() < until) {
    std::error_code ec;
    if (fs::exists(dir / "runs", ec))
      for (const auto& run : fs::directory_iterator(dir / "runs", ec))
        if (fs::exists(run.path() / "ranks" / "rank1.log"))
          log = run.path() / "ranks" / "rank1.log";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(log.empty()) << "rank 1 never started";
  ASSERT_TRUE(wait_for_text(log, "[target] epoch 2/", 60)) << "rank 1 never trained";
  const auto pid = tlab::test::shell(
      fmt::format("pgrep -f -- '{}.*--rank 1 ' | head -1", (dir / "r.db").string()));
  ASSERT_FALSE(pid.out.empty()) << "no rank 1 process";
  const auto t0 = Clock::now();
  ASSERT_EQ(::kill(std::stoi(pid.out), sig), 0);
  int status = 0;
  ASSERT_EQ(waitpid(tlab, &status, 0), tlab);
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_LT(seconds, within);
  EXPECT_EQ(WEXITSTATUS(status), 1);
  tlab::Store store(dir / "r.db", false);
  const auto r = store.run(store.list_runs().at(0).id);
  EXPECT_EQ(r.status, "failed");
  EXPECT_THAT(r.reason, HasSubstr(expected));
  if (::testing::Test::HasFailure())  // what tlab and rank 1 said
    std::printf("tlab:\n%s\nrank 1:\n%s\n", tlab::test::read_file(dir / "out.txt").c_str(),
                tlab::test::read_file(log).c_str());
  (void)t;
}

TEST_F(Ranks, AKilledRankFailsTheRunPromptlyWithNoProcessLeft) {
  rank_fails(*this, dir_, command("r.db", "--nproc 2 train.epochs=100000"), SIGKILL,
             "rank 1 of 2 was killed by signal 9 (Killed)", 15);
  EXPECT_EQ(left_over(), "");
}

TEST_F(Ranks, AHungRankFailsTheRunAfterTheCollectiveTimeout) {
  rank_fails(*this, dir_,
             command("r.db", "--nproc 2 train.epochs=100000 +run.collective_timeout=3"), SIGSTOP,
             "the other ranks did not answer within run.collective_timeout = 3 s", 20);
  EXPECT_EQ(left_over(), "");
}

TEST_F(Ranks, BadSettingsAreRefusedBeforeAnyRankStarts) {
  auto error = [&](const std::string& args) {
    const auto r = tlab::test::shell(command("e.db", args));
    EXPECT_NE(r.code, 0) << r.out;
    EXPECT_FALSE(fs::exists(dir_ / "runs")) << "a run started: " << r.out;
    return r.out;
  };
  EXPECT_THAT(error("--nproc 999"), HasSubstr("'run.processes' = 999 ranks, and this machine has"));
  EXPECT_THAT(error("--nproc 999"), HasSubstr("set run.oversubscribe = true to run them anyway"));
  EXPECT_THAT(error("--nproc 2 +run.backend=nccl"),
              HasSubstr("'run.backend' = \"nccl\": NCCL ranks (one GPU each) are not built yet, "
                        "and Debian's LibTorch has no CUDA; use backend = \"gloo\""));
  EXPECT_THAT(error("+run.backend=mpi"),
              HasSubstr("'run.backend' = \"mpi\" is not a c10d backend tlab has; expected "
                        "\"gloo\""));
  EXPECT_THAT(error("+run.processes=0"), HasSubstr("run.processes"));
  EXPECT_TRUE(tlab::gloo_available());  // tools/setup.sh installs libgloo-dev
}

}  // namespace
