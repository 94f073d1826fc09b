// Sweeps on SLURM: the pieces (state resolution, array specs, squeue/sacct parsing, the sbatch
// script, [launcher] validation) and, on a real one-node cluster started by
// tools/slurm/local-cluster.sh, a whole sweep: a failing run, a cancelled task, merge, re-launch
// and --retry-failed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "run/slurm.hpp"
#include "store/store.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"
#include "util.hpp"
#include "weights/safetensors.hpp"

using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;
namespace slurm = tlab::slurm;

namespace {

using tlab::test::Result;
using tlab::test::shell;

// --- Pieces ----------------------------------------------------------------------------------

TEST(SlurmState, TheRunsOwnFinalStatusWins) {
  EXPECT_EQ(slurm::resolve_state("finished", "", 1, "COMPLETED", "").first, "finished");
  auto failed = slurm::resolve_state("failed", "plugin threw: boom", 1, "FAILED", "");
  EXPECT_EQ(failed.first, "failed");
  EXPECT_EQ(failed.second, "plugin threw: boom");
  EXPECT_EQ(slurm::resolve_state("diverged", "loss is nan", 1, "", "").first, "diverged");
}

TEST(SlurmState, SlurmsVerdictForRunsThatCouldNotRecordOne) {
  auto pending = slurm::resolve_state("queued", "", 5, "PENDING", "JobArrayTaskLimit");
  EXPECT_EQ(pending.first, "pending");
  EXPECT_THAT(pending.second, HasSubstr("JobArrayTaskLimit"));
  EXPECT_EQ(slurm::resolve_state("running", "", 1, "RUNNING", "None").first, "running");
  // scancel: the run got SIGTERM and recorded "killed"; SLURM says why.
  auto cancelled = slurm::resolve_state("killed", "stopped by SIGTERM", 1, "CANCELLED", "");
  EXPECT_EQ(cancelled.first, "cancelled");
  EXPECT_THAT(cancelled.second, HasSubstr("cancelled in SLURM"));
  EXPECT_THAT(slurm::resolve_state("queued", "", 1, "CANCELLED by 0", "").second,
              HasSubstr("before it started"));
  auto timeout = slurm::resolve_state("killed", "stopped by SIGTERM", 1, "TIMEOUT", "");
  EXPECT_EQ(timeout.first, "timeout");
  EXPECT_THAT(timeout.second, HasSubstr("launcher.time"));
  auto node = slurm::resolve_state("running", "", 900, "NODE_FAIL", "");
  EXPECT_EQ(node.first, "node_fail");
  EXPECT_THAT(node.second, HasSubstr("--retry-failed"));
  EXPECT_EQ(slurm::resolve_state("running", "", 1, "OUT_OF_MEMORY", "").first, "oom");
  auto preempted = slurm::resolve_state("running", "", 1, "PREEMPTED", "");
  EXPECT_EQ(preempted.first, "lost");  // retryable: the script asks for --no-requeue
  EXPECT_THAT(preempted.second, HasSubstr("preempted by SLURM"));
  auto died = slurm::resolve_state("queued", "", 1, "FAILED", "NonZeroExitCode");
  EXPECT_EQ(died.first, "failed");
  EXPECT_THAT(died.second, HasSubstr("tlab never started"));
}

TEST(SlurmState, ATaskSlurmStillRunsIsRunningWhateverItsShardSays) {
  // `tlab sweep cancel` marked it cancelled just as it started, or it is exiting: its process
  // may still write the shard, so it is neither merged nor retried yet.
  EXPECT_EQ(slurm::resolve_state("cancelled", "", 1, "RUNNING", "").first, "running");
  EXPECT_EQ(slurm::resolve_state("finished", "", 1, "COMPLETING", "").first, "running");
}

TEST(SlurmState, TasksSlurmForgotAreJudgedByTheirShard) {
  EXPECT_EQ(slurm::resolve_state("running", "", 1, "", "").first, "running");  // fresh heartbeat
  auto stale = slurm::resolve_state("running", "", 3600, "", "");
  EXPECT_EQ(stale.first, "lost");
  EXPECT_THAT(stale.second, HasSubstr("3600 s old"));
  auto never = slurm::resolve_state("queued", "", 3600, "", "");
  EXPECT_EQ(never.first, "lost");
  EXPECT_THAT(never.second, HasSubstr("never started"));
}

TEST(SlurmArray, RangesAndParallelism) {
  EXPECT_EQ(slurm::array_spec({0, 1, 2, 3, 4, 5}, 2), "0-5%2");
  EXPECT_EQ(slurm::array_spec({5, 2, 3, 0}, 0), "0,2-3,5");
  EXPECT_EQ(slurm::array_spec({7}, 0), "7");
}

TEST(SlurmParse, SqueueAndSacct) {
  auto q = slurm::parse_squeue(
      "12|0|COMPLETED|None\n12|1|RUNNING|None\n12|2|PENDING|JobArrayTaskLimit\n13|N/A|RUNNING|"
      "None\n");
  ASSERT_EQ(q.size(), 3u);
  EXPECT_EQ(q["12_1"].first, "RUNNING");
  EXPECT_EQ(q["12_2"].second, "JobArrayTaskLimit");
  auto a =
      slurm::parse_sacct("12_0|COMPLETED\n12_1|CANCELLED by 0\n12_[2-5%2]|PENDING\n14|FAILED\n");
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a["12_1"].first, "CANCELLED by 0");
}

TEST(SlurmScript, OptionsSetupAndTheTaskCommand) {
  slurm::ScriptInput in;
  in.job_name = "tlab-quick";
  in.dir = "/shared/results/sweeps/20261123-120000-abcdef";
  in.submission = 2;
  in.tasks = {1, 4, 5};
  in.parallelism = 2;
  in.launcher.partition = "gpu";
  in.launcher.time = "2:00:00";
  in.launcher.mem = "8G";
  in.launcher.cpus_per_task = 4;
  in.launcher.gpus_per_task = 1;
  in.launcher.account = "proj1";
  in.launcher.qos = "normal";
  in.launcher.sbatch = {"--constraint=a100"};
  in.launcher.setup = {"module load cuda"};
  in.tlab = "/opt/tlab it's/bin/tlab";
  in.plugin_paths = {"/home/me/plugins"};
  const std::string s = slurm::render_script(in);
  for (const char* line :
       {"#!/bin/bash\n", "#SBATCH --job-name=tlab-quick\n", "#SBATCH --array=1,4-5%2\n",
        "#SBATCH --output=/shared/results/sweeps/20261123-120000-abcdef/logs/%a.2.out\n",
        "#SBATCH --cpus-per-task=4\n", "#SBATCH --gpus-per-task=1\n", "#SBATCH --partition=gpu\n",
        "#SBATCH --time=2:00:00\n", "#SBATCH --mem=8G\n", "#SBATCH --account=proj1\n",
        "#SBATCH --qos=normal\n", "#SBATCH --constraint=a100\n", "module load cuda\n"})
    EXPECT_THAT(s, HasSubstr(line));
  EXPECT_THAT(s, HasSubstr("exec '/opt/tlab it'\\''s/bin/tlab' --plugin-path '/home/me/plugins' "
                           "_run --shard --db "
                           "'/shared/results/sweeps/20261123-120000-abcdef/shards/'"
                           "\"$SLURM_ARRAY_TASK_ID\"'.2.db' --id 1 --threads 4\n"));
  // The script is valid bash.
  const fs::path dir = tlab::test::temp_dir("slurm_script");
  tlab::test::write_file(dir / "s.sh", s);
  EXPECT_EQ(shell("bash -n '" + (dir / "s.sh").string() + "'").code, 0);
  fs::remove_all(dir);
}

// --- Through the tlab binary -----------------------------------------------------------------

std::string experiment(const std::string& launcher = "", bool sweep = true) {
  return fmt::format(
      R"(name = "slurm_sweep"
seed = 1
device = "cpu"

[target]
plugin = "gaussians"
domain = "target"
train_size = 64
val_size = 16
test_size = 32

[backbone]
plugin = "mlp"
hidden = [8]

[[adapters]]
plugin = "linear_head"

[strategy]
plugin = "faulty"

[train]
epochs = 2
batch_size = 16

{}
{}
)",
      sweep ? R"(# 6 runs: seed 3 fails in setup; seed 6 sleeps (it is the one cancelled).
[[sweep.zip]]
seed = [1, 2, 3, 4, 5, 6]
"strategy.fail_in" = ["none", "none", "setup", "none", "none", "none"]
"strategy.sleep_ms" = [0, 0, 0, 0, 0, 300]
)"
            : "",
      launcher);
}

class SlurmCli : public ::testing::Test {
 protected:
  fs::path dir_ = tlab::test::temp_dir(
      std::string("slurm_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::path db_ = dir_ / "results.db";
  void TearDown() override { fs::remove_all(dir_); }

  Result tlab(const std::string& args, const std::string& exp_text = experiment()) {
    tlab::test::write_file(dir_ / "exp.toml", exp_text);
    return shell(fmt::format(
        "cd '{}' && OMP_NUM_THREADS=1 '{}/tlab' --plugin-path '{}' --plugin-path '{}' {}",
        dir_.string(), TLAB_TEST_BIN_DIR, TLAB_TEST_PLUGIN_DIR, TLAB_TEST_FIXTURE_DIR, args));
  }
};

TEST_F(SlurmCli, LauncherTableIsValidatedWithLocatedErrors) {
  auto r =
      tlab("run exp.toml --dry-run", experiment("[launcher]\nname = \"slurm\"\ntime = \"1h\""));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_THAT(r.out,
              HasSubstr("'launcher.time' = \"1h\" is not valid; expected a SLURM time limit"));
  r = tlab("run exp.toml --dry-run", experiment("[launcher]\nname = \"pbs\""));
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr("'launcher.name' = \"pbs\" is not valid"));
  r = tlab("run exp.toml --dry-run", experiment("[launcher]\npartiton = \"gpu\""));
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr("unknown key 'launcher.partiton' in [launcher]; did you mean "
                               "'partition'?"));
  r = tlab("run exp.toml --dry-run", experiment("[launcher]\nsbatch = [\"constraint=a100\"]"));
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr("is not an sbatch option; write it as on sbatch's command line"));
  r = tlab("run exp.toml --dry-run", experiment("[launcher]\nmem = \"4 GB\""));
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr("'launcher.mem' = \"4 GB\" is not valid"));
}

TEST_F(SlurmCli, LauncherKeysAreNotSweptAndNotPartOfTheRun) {
  auto r = tlab("run exp.toml -m launcher.partition=a,b --launcher slurm");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_THAT(r.out, HasSubstr("different [launcher] tables; a sweep goes to one launcher"));
  // A run finished locally is the same run on SLURM: same run key, so it is not run again.
  r = tlab(fmt::format("run exp.toml --db '{}'", db_.string()), experiment("", false));
  ASSERT_EQ(r.code, 0) << r.out;
  r = tlab(
      fmt::format("run exp.toml --dry-run launcher.name=slurm launcher.partition=gpu --db '{}'",
                  db_.string()),
      experiment("[launcher]\nname = \"local\"", false));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("(finished as run 1: skipped"));
}

TEST_F(SlurmCli, LauncherFlagPicksTheConfigGroupOption) {
  const Result r = shell(fmt::format(
      "cd '{}' && '{}/tlab' --plugin-path '{}' run experiments/quickstart.toml --launcher slurm "
      "--dry-run && '{}/tlab' --plugin-path '{}' config experiments/quickstart.toml "
      "+launcher=slurm",
      TLAB_SOURCE_DIR, TLAB_TEST_BIN_DIR, TLAB_TEST_PLUGIN_DIR, TLAB_TEST_BIN_DIR,
      TLAB_TEST_PLUGIN_DIR));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("[1/6] strategy=scratch seed=1 +launcher=slurm"));
  EXPECT_THAT(r.out,
              HasSubstr("[launcher]\nname = \"slurm\"\npartition = \"\"\ntime = \"1:00:00\""));
}

TEST_F(SlurmCli, LocalOnlyOptionsAreRefusedWithTheSlurmEquivalent) {
  auto r = tlab("run exp.toml --launcher slurm --timeout 10m");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_THAT(r.out, HasSubstr("--timeout applies to local runs, not to --launcher slurm; set "
                               "SLURM's time limit instead: launcher.time=HH:MM:SS"));
  r = tlab("run exp.toml --launcher slurm --gpus 0");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_THAT(r.out, HasSubstr("launcher.gpus_per_task=N"));
  r = tlab("run exp.toml --wait");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr("--wait applies to --launcher slurm"));
}

TEST_F(SlurmCli, MissingSlurmCommandsAreNamed) {
  tlab::test::write_file(dir_ / "exp.toml", experiment());
  const Result r = shell(fmt::format(
      "cd '{}' && PATH=/nonexistent '{}/tlab' --plugin-path '{}' --plugin-path '{}' run exp.toml "
      "-m --launcher slurm --db '{}'",
      dir_.string(), TLAB_TEST_BIN_DIR, TLAB_TEST_PLUGIN_DIR, TLAB_TEST_FIXTURE_DIR, db_.string()));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("'sbatch' was not found on PATH: the SLURM launcher needs SLURM's "
                               "commands"));
  EXPECT_THAT(r.out, HasSubstr("apt-get install slurm-client"));
  EXPECT_TRUE(slurm::list_sweeps(db_).empty());  // nothing submitted: no sweep folder left
}

TEST_F(SlurmCli, WeightsFromAnEarlierRunAreRefusedNamingTheFileToUse) {
  tlab::test::write_file(dir_ / "exp.toml", experiment());
  const Result r = shell(fmt::format(
      "cd '{}' && PATH=/nonexistent '{}/tlab' --plugin-path '{}' --plugin-path '{}' run exp.toml "
      "--launcher slurm --db '{}' backbone.weights=run:4",
      dir_.string(), TLAB_TEST_BIN_DIR, TLAB_TEST_PLUGIN_DIR, TLAB_TEST_FIXTURE_DIR, db_.string()));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("backbone.weights = \"run:4\" cannot be used with --launcher "
                               "slurm: each task sees only its own shard database"));
  EXPECT_THAT(r.out, HasSubstr("name the file instead: backbone.weights=\"<that run's "
                               "folder>/model.safetensors\""));
}

TEST_F(SlurmCli, CtrlCEndsALaunchWaitingForAnotherTlabOnASweep) {
  // An earlier sweep of this database, locked by another tlab (here: the test).
  const fs::path sweep = dir_ / "sweeps" / "20261123-000000-abcdef";
  fs::create_directories(sweep);
  tlab::test::write_file(
      sweep / "sweep.json",
      fmt::format(R"({{"format": 1, "name": "20261123-000000-abcdef", "db": "{}", "tasks": [],
                      "submissions": [], "collected": [], "cancelled": []}})",
                  db_.string()));
  const int fd = ::open((sweep / "sweep.lock").c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  tlab::test::write_file(dir_ / "exp.toml", experiment());
  const Result r = shell(fmt::format(
      "cd '{}' && timeout --foreground --preserve-status -s INT 4 '{}/tlab' --plugin-path '{}' "
      "--plugin-path "
      "'{}' run exp.toml "
      "-m --launcher slurm --db '{}'",
      dir_.string(), TLAB_TEST_BIN_DIR, TLAB_TEST_PLUGIN_DIR, TLAB_TEST_FIXTURE_DIR, db_.string()));
  ::close(fd);
  EXPECT_EQ(r.code, 130) << r.out;
  EXPECT_THAT(r.out, HasSubstr("waiting for another tlab working on sweep 20261123-000000-abcdef"));
  EXPECT_THAT(r.out, HasSubstr("stopped while waiting for another tlab working on sweep"));
}

TEST_F(SlurmCli, SweepCommandsWithoutSweepsSaySo) {
  auto r = tlab(fmt::format("sweep status --db '{}'", db_.string()));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_THAT(r.out, HasSubstr("no sweeps in"));
  EXPECT_THAT(r.out, HasSubstr("--launcher slurm"));
  r = tlab(fmt::format("sweep list --db '{}'", db_.string()));
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("no sweeps in"));
}

// --- On a real cluster -----------------------------------------------------------------------

/// A one-node SLURM cluster for the test (tools/slurm/local-cluster.sh), stopped at the end.
class SlurmCluster : public SlurmCli {
 protected:
  fs::path cluster_;
  void SetUp() override {
    if (access("/usr/sbin/slurmctld", X_OK) != 0 || access("/usr/sbin/munged", X_OK) != 0)
      GTEST_SKIP() << "SLURM is not installed (Debian's slurm-wlm and munge): tools/setup.sh "
                      "installs them; without them the cluster test cannot run";
    if (geteuid() != 0) GTEST_SKIP() << "SLURM's daemons need root here; run the tests as root";
    cluster_ = fmt::format("/tmp/tlab-slurm-{}", getpid());  // short: it holds UNIX sockets
    const Result r = shell(fmt::format("'{}/tools/slurm/local-cluster.sh' start '{}'",
                                       TLAB_SOURCE_DIR, cluster_.string()));
    ASSERT_EQ(r.code, 0) << r.out;
    setenv("SLURM_CONF", (cluster_ / "slurm.conf").c_str(), 1);
  }
  void TearDown() override {
    if (!cluster_.empty()) {
      const Result r = shell(fmt::format("'{}/tools/slurm/local-cluster.sh' stop '{}'",
                                         TLAB_SOURCE_DIR, cluster_.string()));
      EXPECT_EQ(r.code, 0) << r.out;
      // Nothing is left: no daemon (their command lines name the folder), no task of ours.
      const Result left =
          shell(fmt::format("pgrep -af '{}|{}' | grep -v pgrep", cluster_.string(), dir_.string()));
      EXPECT_EQ(left.out, "") << "left running after stop";
      fs::remove_all(cluster_);
    }
    if (fs::exists(db_)) {
      tlab::Store store(db_, false);
      EXPECT_EQ(store.integrity_check(), "ok");
    }
    SlurmCli::TearDown();
  }

  // Waits until no latest task of the sweep is pending or running.
  slurm::SweepState wait_for(const fs::path& sweep, double seconds = 180) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    slurm::SweepState st;
    while (std::chrono::steady_clock::now() < until) {
      st = slurm::sweep_status(sweep);
      bool open = false;
      for (const auto* t : st.latest()) open |= t->state == "pending" || t->state == "running";
      if (!open) return st;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    ADD_FAILURE() << "the sweep did not end in " << seconds << " s:\n" << slurm::format_status(st);
    return st;
  }

  std::map<std::string, int> statuses() {
    tlab::Store store(db_, false);
    std::map<std::string, int> count;
    for (const auto& r : store.list_runs()) ++count[r.status];
    return count;
  }
};

TEST_F(SlurmCluster, SweepWithAFailureAndACancelMergesAndRelaunchesOnlyTheUnfinished) {
  // Held at submission (sbatch --hold), so that task 5 is surely pending when it is cancelled.
  const std::string held = experiment("[launcher]\nsbatch = [\"--hold\"]");
  const std::string run =
      fmt::format("run exp.toml -m --launcher slurm -j 2 --db '{}'", db_.string());
  Result r = tlab(run, held);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("submitted 6 run(s) to SLURM as job array"));
  const auto sweeps = slurm::list_sweeps(db_);
  ASSERT_EQ(sweeps.size(), 1u);
  const fs::path sweep = sweeps.front();
  EXPECT_THAT(tlab::test::read_file(sweep / "submit-1.sh"), HasSubstr("#SBATCH --array=0-5%2\n"));
  EXPECT_THAT(slurm::format_status(slurm::sweep_status(sweep)), HasSubstr("6 pending"));

  // Task 5 (seed 6) waits behind the array limit of 2: cancel it.
  r = tlab(
      fmt::format("sweep cancel {} --task 9 --db '{}'", sweep.filename().string(), db_.string()));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_THAT(r.out, HasSubstr("has no task 9; its tasks are 0 to 5"));
  r = tlab(
      fmt::format("sweep cancel {} --task 5 --db '{}'", sweep.filename().string(), db_.string()));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("cancelled 1 task(s): "));
  EXPECT_THAT(r.out, HasSubstr("_5"));
  r = shell("scontrol release " + slurm::sweep_status(sweep).jobs);
  ASSERT_EQ(r.code, 0) << r.out;

  slurm::SweepState st = wait_for(sweep);
  EXPECT_EQ(st.counts()["finished"], 4u) << slurm::format_status(st);
  EXPECT_EQ(st.counts()["failed"], 1u);
  EXPECT_EQ(st.counts()["cancelled"], 1u);
  r = tlab(fmt::format("sweep status --db '{}'", db_.string()));
  EXPECT_THAT(r.out, HasSubstr("4 finished, 1 failed, 1 cancelled"));
  EXPECT_THAT(r.out, HasSubstr("6 ended task(s) not yet in the results database"));

  // Merge: 4 finished with their metrics, 1 failed with its reason, 1 cancelled.
  r = tlab(fmt::format("sweep collect {} --db '{}'", sweep.filename().string(), db_.string()));
  EXPECT_EQ(r.code, 1) << r.out;  // not every run finished
  EXPECT_THAT(r.out, HasSubstr("merged 6 run(s)"));
  EXPECT_THAT(r.out, HasSubstr("task 2 (seed=3 strategy.fail_in=setup"));
  EXPECT_THAT(r.out, HasSubstr("task 5 (seed=6"));
  EXPECT_EQ(statuses(),
            (std::map<std::string, int>{{"finished", 4}, {"failed", 1}, {"cancelled", 1}}));
  {
    tlab::Store store(db_, false);
    for (const auto& row : store.list_runs()) {
      const tlab::RunRecord rec = store.run(row.id);
      EXPECT_EQ(rec.sweep, sweep.filename().string());
      EXPECT_THAT(rec.job, ::testing::StartsWith("slurm ")) << rec.status;
      if (rec.status == "finished") {
        EXPECT_FALSE(store.metrics(row.id, "target/test/acc").empty());
      } else if (rec.status == "failed") {
        EXPECT_EQ(rec.seed, 3);
        EXPECT_THAT(rec.reason, HasSubstr("setup"));
      } else {
        EXPECT_EQ(rec.seed, 6);
        EXPECT_THAT(rec.reason, HasSubstr("cancelled with `tlab sweep cancel` before it started"));
      }
    }
  }
  // Collecting again adds nothing.
  r = tlab(fmt::format("sweep collect --db '{}'", db_.string()));
  EXPECT_THAT(r.out, HasSubstr("merged 0 run(s)"));
  EXPECT_THAT(r.out, HasSubstr("(6 merged before)"));
  EXPECT_EQ(statuses().size(), 3u);

  // --retry-failed resubmits the failed task alone (not the cancelled one).
  r = tlab(fmt::format("sweep collect {} --retry-failed --db '{}'", sweep.filename().string(),
                       db_.string()));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("resubmitted 1 task(s) as job"));
  const std::string jobs = slurm::sweep_status(sweep).jobs;  // "12,13": the retry is held too
  r = shell("scontrol release " + jobs.substr(jobs.rfind(',') + 1));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(tlab::test::read_file(sweep / "submit-2.sh"), HasSubstr("#SBATCH --array=2%2\n"));
  st = wait_for(sweep);
  EXPECT_EQ(st.latest()[2]->submission, 2);
  EXPECT_EQ(st.latest()[2]->state, "failed");  // it fails again, deterministically

  // Re-launching the same sweep submits only the runs without a finished twin: seeds 3 and 6.
  r = tlab(run + " --wait");
  EXPECT_EQ(r.code, 1) << r.out;  // seed 3 fails again
  EXPECT_THAT(r.out, HasSubstr("submitted 2 run(s) as job array"));
  EXPECT_THAT(r.out, HasSubstr("4 of 6 run(s) already finished or in flight"));
  EXPECT_EQ(slurm::list_sweeps(db_).size(), 2u);
  EXPECT_EQ(statuses(),
            (std::map<std::string, int>{{"finished", 5}, {"failed", 3}, {"cancelled", 1}}));
}

// An Optuna search on the cluster: each batch of trials is one job array that tlab waits for,
// collects and tells the study about before it asks for the next.
TEST_F(SlurmCluster, OptunaSearchRunsEachBatchOfTrialsAsAnArray) {
  const std::string exp = experiment("", false) + R"toml([sweep]
sweeper = "optuna"
samples = 2
"train.lr" = "tag(log, interval(1e-3, 1e-1))"
)toml";
  Result r = tlab(fmt::format("run exp.toml --launcher slurm -j 1 --db '{}'", db_.string()), exp);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("[optuna] trial 0: target/val/acc = "));
  EXPECT_THAT(r.out, HasSubstr("[optuna] trial 1: target/val/acc = "));
  EXPECT_EQ(slurm::list_sweeps(db_).size(), 2u);  // one array per batch of one trial
  EXPECT_EQ(statuses(), (std::map<std::string, int>{{"finished", 2}}));
  tlab::Store store(db_, false);
  std::string study, storage;
  std::set<int64_t> trials;
  for (const auto& row : store.list_runs()) {
    const tlab::RunRecord rec = store.run(row.id);
    EXPECT_THAT(rec.job, ::testing::StartsWith("slurm "));
    const auto search = nlohmann::json::parse(rec.search);
    EXPECT_EQ(search["sweeper"], "optuna");
    trials.insert(search["trial"].get<int64_t>());
    study = search["study"].get<std::string>();
    storage = search["storage"].get<std::string>();
  }
  EXPECT_EQ(trials, (std::set<int64_t>{0, 1}));
  const std::string text = tlab::test::optuna_study(storage, study);
  const auto s = nlohmann::json::parse(text, nullptr, false);
  ASSERT_TRUE(s.is_object()) << text;
  ASSERT_EQ(s["trials"].size(), 2u);
  for (const auto& t : s["trials"]) {
    EXPECT_EQ(t["state"], "COMPLETE");
    EXPECT_EQ(t["attrs"]["tlab_runs"].size(), 1u);
  }
}

// [run] processes on SLURM: the run's ranks are the tasks of one srun step in its array task
// (--ntasks=2), ranks from SLURM_PROCID; the same parameters as one process here.
TEST_F(SlurmCluster, ARunOnTwoRanksIsOneSrunStepOfTwoTasks) {
  // Two tasks of one CPU each: a one-CPU node would leave the job pending for ever.
  const Result cpus = shell("scontrol show node | grep -o 'CPUTot=[0-9]*'");
  if (cpus.out.find("CPUTot=1\n") != std::string::npos || cpus.out == "CPUTot=1")
    GTEST_SKIP() << "the local cluster has one CPU; two ranks need two";
  const std::string exp = R"toml(name = "slurm_ranks"
seed = 2
device = "cpu"
[target]
plugin = "gaussians"
train_size = 61
val_size = 16
test_size = 16
[backbone]
plugin = "mlp"
hidden = [8]
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
optimizer = "adam"
epochs = 2
batch_size = 16
)toml";
  Result r =
      tlab(fmt::format("run exp.toml --threads 1 --db '{}'", (dir_ / "one.db").string()), exp);
  ASSERT_EQ(r.code, 0) << r.out;
  r = tlab(fmt::format("run exp.toml --launcher slurm --nproc 2 --wait --db '{}'", db_.string()),
           exp);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto sweeps = slurm::list_sweeps(db_);
  ASSERT_EQ(sweeps.size(), 1u);
  const std::string script = tlab::test::read_file(sweeps.front() / "submit-1.sh");
  EXPECT_THAT(script, HasSubstr("#SBATCH --ntasks=2\n"));
  EXPECT_THAT(script, HasSubstr("#SBATCH --nodes=1\n"));
  EXPECT_THAT(script, HasSubstr("exec srun --kill-on-bad-exit=1 "));
  EXPECT_THAT(script, HasSubstr(" --srun\n"));
  EXPECT_EQ(statuses(), (std::map<std::string, int>{{"finished", 1}}));
  tlab::Store one(dir_ / "one.db", false), two(db_, false);
  const tlab::RunRecord a = one.run(one.list_runs().at(0).id);
  const tlab::RunRecord b = two.run(two.list_runs().at(0).id);
  EXPECT_EQ(b.processes, 2);
  EXPECT_EQ(b.backend, "gloo");
  EXPECT_THAT(b.job, ::testing::StartsWith("slurm "));
  const auto wa = tlab::weights::read_safetensors(fs::path(a.run_dir) / "model.safetensors");
  const auto wb = tlab::weights::read_safetensors(fs::path(b.run_dir) / "model.safetensors");
  ASSERT_EQ(wa.size(), wb.size());
  for (std::size_t i = 0; i < wa.size(); ++i)
    EXPECT_TRUE(torch::allclose(wa[i].second, wb[i].second, 0, 1e-5)) << wa[i].first;
}

}  // namespace
