// Sweeps through the real `tlab` binary: every run in its own process, plugins that misbehave on
// purpose (tests/fixtures/faulty.cpp), kill -9, Ctrl-C, a killed supervisor, timeouts, resume,
// GPU slots, pre-training reuse. Every test ends with an integrity check of the database.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <torch/cuda.h>
#include "run/asha.hpp"
#include "run/executor.hpp"
#include "store/store.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"
#include "util.hpp"

using ::testing::HasSubstr;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// A tiny experiment with the `faulty` strategy: 4 runs (seeds 1..4), the second one misbehaving
// as `fail_in` says (zipped sweep).
std::string experiment(const std::string& fail_in, int runs = 4, int sleep_ms = 0, int epochs = 2,
                       const std::string& failing = "2") {
  std::string seeds, fails;
  for (int i = 1; i <= runs; ++i) {
    seeds += fmt::format("{}{}", i > 1 ? ", " : "", i);
    fails += fmt::format("{}\"{}\"", i > 1 ? ", " : "",
                         std::to_string(i) == failing ? fail_in : std::string("none"));
  }
  return fmt::format(R"(name = "sweep"
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
sleep_ms = {}

[train]
epochs = {}
batch_size = 16

[[sweep.zip]]
seed = [{}]
"strategy.fail_in" = [{}]
)",
                     sleep_ms, epochs, seeds, fails);
}

struct Result {
  int code = -1;
  std::string out;
};

class Sweep : public ::testing::Test {
 protected:
  fs::path dir_ = tlab::test::temp_dir(
      std::string("sweep_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::path db_ = dir_ / "results.db";
  void TearDown() override {
    if (fs::exists(db_)) {
      tlab::Store store(db_, false);
      EXPECT_EQ(store.integrity_check(), "ok");
    }
    fs::remove_all(dir_);
  }

  std::string command(const std::string& exp_text, const std::string& args,
                      const std::string& env = "") {
    tlab::test::write_file(dir_ / "exp.toml", exp_text);
    return fmt::format(
        "cd '{}' && {} OMP_NUM_THREADS=1 '{}/tlab' --plugin-path '{}' "
        "--plugin-path '{}' run exp.toml --db '{}' {} 2>&1",
        dir_.string(), env, TLAB_TEST_BIN_DIR, TLAB_TEST_PLUGIN_DIR, TLAB_TEST_FIXTURE_DIR,
        db_.string(), args);
  }

  Result tlab(const std::string& exp_text, const std::string& args, const std::string& env = "") {
    FILE* p = popen(command(exp_text, args, env).c_str(), "r");
    Result r;
    char buf[4096];
    while (std::size_t n = fread(buf, 1, sizeof buf, p)) r.out.append(buf, n);
    int status = pclose(p);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
  }

  // Starts tlab in the background (its own process group, output to a file); returns its pid.
  pid_t start(const std::string& exp_text, const std::string& args, const std::string& env = "") {
    std::string cmd = command(exp_text, args, env);
    cmd.replace(cmd.find("&& "), 3, "&& exec env ");  // tlab itself gets the pid: signals reach it
    cmd.replace(cmd.rfind(" 2>&1"), 5, " > '" + (dir_ / "out.txt").string() + "' 2>&1");
    pid_t pid = fork();
    if (pid == 0) {
      setpgid(0, 0);
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    return pid;
  }

  std::vector<tlab::RunRecord> runs() {
    tlab::Store store(db_, false);
    std::vector<tlab::RunRecord> out;
    for (const auto& r : store.list_runs()) out.push_back(store.run(r.id));
    return out;
  }

  // Waits until `pred(runs)` holds (or fails the test after `seconds`).
  template <class Pred>
  std::vector<tlab::RunRecord> wait_for(Pred pred, double seconds = 60) {
    const auto until = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < until) {
      if (fs::exists(db_)) {
        try {
          auto r = runs();
          if (pred(r)) return r;
        } catch (const tlab::StoreError&) {  // the schema is being created
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "timed out waiting; output so far:\n"
                  << tlab::test::read_file(dir_ / "out.txt");
    return fs::exists(db_) ? runs() : std::vector<tlab::RunRecord>{};
  }
};

bool alive(int64_t pid) { return pid > 0 && (kill(static_cast<pid_t>(pid), 0) == 0); }

// --- a plugin that misbehaves fails only its own run --------------------------------------

struct Misbehaviour {
  std::string fail_in, status, reason;
};

void PrintTo(const Misbehaviour& m, std::ostream* os) { *os << m.fail_in; }

class Misbehaving : public Sweep, public ::testing::WithParamInterface<Misbehaviour> {};

TEST_P(Misbehaving, OnlyItsOwnRunFailsWithTheRightStatusAndMessage) {
  const Misbehaviour& m = GetParam();
  Result r = tlab(experiment(m.fail_in), "-j 2 --timeout 8s --grace 1s");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("1 of 4 runs failed"));
  auto all = runs();
  ASSERT_EQ(all.size(), 4u) << r.out;
  for (const auto& run : all) {
    if (run.seed == 2) {
      EXPECT_EQ(run.status, m.status) << run.reason;
      EXPECT_THAT(run.reason, HasSubstr(m.reason));
      EXPECT_THAT(r.out, HasSubstr(fmt::format("run {} {}", run.id, m.status)));
    } else {
      EXPECT_EQ(run.status, "finished") << run.seed << ": " << run.reason;
      EXPECT_EQ(run.exit_code, 0);
    }
    EXPECT_FALSE(alive(run.pid)) << "run " << run.id << " left its process behind";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Plugins, Misbehaving,
    ::testing::Values(Misbehaviour{"loss", "failed", "strategy plugin 'faulty' failed in loss"},
                      Misbehaviour{"segfault", "crashed", "crashed with signal 11 (SIGSEGV)"},
                      Misbehaviour{"abort", "crashed", "crashed with signal 6 (SIGABRT)"},
                      Misbehaviour{"exit0", "failed", "exited with code 0 without a final status"},
                      Misbehaviour{"hang", "timeout", "exceeded the wall-clock limit of 8 s"},
                      Misbehaviour{"oom", "oom",
                                   "strategy plugin 'faulty' ran out of memory in loss"}),
    [](const auto& info) { return info.param.fail_in; });

// Issue 27: with few file descriptors (`ulimit -n`) runs failed as "disk full?" or "a plugin
// called exit()", or stayed queued for ever. Whichever open fails first (the supervisor's pipes,
// LibTorch's thread pool reading /proc/cpuinfo, the run's files), every run ends finished or
// failed with a reason that names the limit.
TEST_F(Sweep, TooFewOpenFilesIsSaidAndLeavesNoRunQueued) {
  if (tlab::test::shell("command -v prlimit").code != 0) GTEST_SKIP() << "no prlimit";
  const std::string exp = R"(name = "fds"
device = "cpu"
[target]
plugin = "gaussians"
train_size = 64
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
epochs = 1
)";
  for (int n : {8, 12, 16}) {
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(db_.string() + suffix);
    const Result r = tlab(exp, "-m seed=1,2", fmt::format("prlimit --nofile={} env", n));
    const auto all = runs();
    ASSERT_EQ(all.size(), 2u) << "nofile " << n << ": " << r.out;
    if (n == 8) EXPECT_NE(r.code, 0) << r.out;  // 16 may be enough on some machines
    for (const auto& run : all) {
      if (run.status == "finished") continue;
      EXPECT_EQ(run.status, "failed") << "nofile " << n;
      EXPECT_THAT(run.reason,
                  HasSubstr(fmt::format("only {} files may be open at once here (ulimit -n)", n)))
          << "nofile " << n;
    }
  }
}

// Issue 27: under a memory limit (ulimit -v) a run hung for ever (OpenBLAS retrying a failed
// buffer allocation, in fork()'s pre-fork handler or in the run; LibTorch's thread pool waiting
// for a worker that could not start), crashed with SIGSEGV (oneDNN's JIT not checking an
// allocation), or ended as oom with a 30-frame backtrace as its reason; loading LibTorch
// itself ended in "terminate called after throwing std::bad_alloc". At every limit from too
// little to load LibTorch to enough to train, tlab ends within its time, each run finished or
// oom with one line naming the limit, nothing left queued or running.
TEST_F(Sweep, AMemoryLimitEndsEveryRunFinishedOrOomInOneLine) {
  if (tlab::test::shell("command -v prlimit").code != 0) GTEST_SKIP() << "no prlimit";
  const std::string exp = R"(name = "memory"
device = "cpu"
[target]
plugin = "digits"
train_size = 300
val_size = 50
test_size = 50
[backbone]
plugin = "cnn"
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = 1
)";
  bool some_oom = false, some_finished = false;
  for (int mib : {300, 500, 700, 780, 800, 810, 820, 850, 900, 1000, 1200}) {
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(db_.string() + suffix);
    const auto t0 = Clock::now();
    const Result r = tlab(exp, "-m seed=1,2 --threads 1 --timeout 100s",
                          fmt::format("prlimit --as={} timeout -s KILL 150 env", mib << 20));
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    SCOPED_TRACE(
        fmt::format("limit {} MiB, exit code {}, {:.0f} s:\n{}", mib, r.code, seconds, r.out));
    EXPECT_NE(r.code, 137) << "killed by the test's timeout: a hang";
    EXPECT_LT(seconds, 100);
    EXPECT_EQ(r.out.find("terminate called"), std::string::npos);
    EXPECT_EQ(r.out.find("frame #"), std::string::npos);
    if (!fs::exists(db_)) {  // LibTorch could not even load: said, with exit code 3
      EXPECT_EQ(r.code, 3);
      EXPECT_THAT(r.out, HasSubstr(fmt::format("(ulimit -v {})", mib << 10)));
      EXPECT_THAT(r.out, HasSubstr("out of memory"));
      some_oom = true;
      continue;
    }
    const auto all = runs();
    EXPECT_EQ(all.size(), 2u);
    for (const auto& run : all) {
      if (run.status == "finished") {
        some_finished = true;
        continue;
      }
      some_oom = true;
      EXPECT_EQ(run.status, "oom") << run.reason;
      EXPECT_THAT(run.reason, HasSubstr(fmt::format("(ulimit -v {})", mib << 10)));
      EXPECT_EQ(run.reason.find('\n'), std::string::npos) << run.reason;
    }
  }
  EXPECT_TRUE(some_oom) << "no limit was tight enough to test anything";
  EXPECT_TRUE(some_finished) << "no limit was loose enough to train";
}

// A library that crashes because an allocation failed (oneDNN's JIT does) ends its run as oom,
// under a memory limit (without one a crash stays a crash: Misbehaving/segfault).
TEST_F(Sweep, ACrashWithTheAddressSpaceExhaustedIsOutOfMemory) {
  if (tlab::test::shell("command -v prlimit").code != 0) GTEST_SKIP() << "no prlimit";
  const Result r = tlab(experiment("exhaust"), "--threads 1", "prlimit --as=4294967296 env");
  EXPECT_EQ(r.code, 1) << r.out;
  for (const auto& run : runs()) {
    if (run.seed != 2) {
      EXPECT_EQ(run.status, "finished") << run.reason;
      continue;
    }
    EXPECT_EQ(run.status, "oom") << run.reason;
    EXPECT_EQ(run.exit_code, 3);
    EXPECT_EQ(run.reason,
              "out of memory: a library crashed when an allocation failed; this process may use "
              "at most 4096 MiB of memory (ulimit -v 4194304): raise the limit or make the run "
              "smaller");
  }
}

// Issue 27: six `tlab run`s of one config started at once ran it six times (one run key, six
// rows), and compare counted them as six seeds. The config runs once; the others leave it to
// the process that runs it (or skip it as finished), and say so.
TEST_F(Sweep, IdenticalRunsStartedAtOnceRunOnce) {
  const std::string exp = experiment("none", 1, /*sleep_ms=*/100, /*epochs=*/2);
  std::vector<pid_t> pids;
  std::vector<fs::path> outs;
  for (int i = 0; i < 4; ++i) {
    const fs::path out = dir_ / fmt::format("out{}.txt", i);
    std::string cmd = command(exp, "");
    cmd.replace(cmd.rfind(" 2>&1"), 5, " > '" + out.string() + "' 2>&1");
    const pid_t pid = fork();
    if (pid == 0) {
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    pids.push_back(pid);
    outs.push_back(out);
  }
  int ran = 0;
  for (std::size_t i = 0; i < pids.size(); ++i) {
    int status = 0;
    waitpid(pids[i], &status, 0);
    const std::string out = tlab::test::read_file(outs[i]);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
    if (out.find("1 run(s) finished;") != std::string::npos) {
      ++ran;
    } else {
      EXPECT_THAT(out,
                  ::testing::AnyOf(HasSubstr("0 run(s) finished, 1 skipped as already finished"),
                                   HasSubstr("0 run(s) finished, 1 left to the other tlab process "
                                             "running them")))
          << out;
    }
  }
  EXPECT_EQ(ran, 1);
  const auto all = runs();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].status, "finished");
}

TEST_F(Sweep, ACrashKeepsTheLastLinesOfItsOutput) {
  Result r = tlab(experiment("segfault"), "-j 2");
  ASSERT_EQ(r.code, 1) << r.out;
  for (const auto& run : runs())
    if (run.seed == 2) {
      EXPECT_EQ(run.signal, SIGSEGV);
      EXPECT_EQ(run.exit_code, -1);
      EXPECT_THAT(run.stderr_tail, HasSubstr("faulty: about to segfault"));
      EXPECT_THAT(r.out, HasSubstr("| faulty: about to segfault"));  // reported as it happens
      EXPECT_TRUE(fs::exists(fs::path(run.run_dir) / "output.log"));
    }
}

// --- kill -9 at random moments --------------------------------------------------------------

TEST_F(Sweep, KillNineAtRandomMomentsLeavesWholeEpochs) {
  // 20 slow runs, 2 at once; each is killed with SIGKILL at a random moment of its training
  // (which lasts at least 3 epochs x 4 steps x 50 ms): mid-step, mid-evaluation or mid-flush.
  const int kRuns = 20;
  pid_t tlab_pid = start(experiment("none", kRuns, /*sleep_ms=*/50, /*epochs=*/3),
                         "-j 2 --grace 1s", "TLAB_HEARTBEAT_SECONDS=0.05");
  std::mt19937 rng(20261123);
  std::map<int64_t, Clock::time_point> kill_at;  // run id -> when to kill it
  std::set<int64_t> killed;
  const auto until = Clock::now() + std::chrono::seconds(120);
  while (static_cast<int>(killed.size()) < kRuns && Clock::now() < until) {
    std::vector<tlab::RunRecord> all;
    try {
      if (fs::exists(db_)) all = runs();
    } catch (const tlab::StoreError&) {
    }
    const auto now = Clock::now();
    for (const auto& run : all) {
      if (run.status != "running" || killed.count(run.id) || run.pid <= 0) continue;
      auto [it, first] = kill_at.emplace(run.id, now + std::chrono::milliseconds(rng() % 600));
      if (now < it->second) continue;
      kill(static_cast<pid_t>(run.pid), SIGKILL);
      killed.insert(run.id);
    }
    int status;
    if (waitpid(tlab_pid, &status, WNOHANG) == tlab_pid) {
      tlab_pid = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (tlab_pid > 0) waitpid(tlab_pid, nullptr, 0);
  const std::string out = tlab::test::read_file(dir_ / "out.txt");
  auto all = runs();
  ASSERT_EQ(all.size(), static_cast<std::size_t>(kRuns)) << out;
  tlab::Store store(db_, false);
  int killed_count = 0;
  for (const auto& run : all) {
    // A run may finish before its kill lands (a late random moment): then it is whole.
    if (run.status == "finished") continue;
    ++killed_count;
    EXPECT_EQ(run.status, "killed") << run.reason;
    EXPECT_EQ(run.signal, SIGKILL);
    EXPECT_THAT(run.reason, HasSubstr("killed by signal 9 (SIGKILL) from outside the sweep"));
    // Metrics are flushed once per epoch in one transaction: each step has all of its rows
    // (train loss and lr, val and test acc and loss), never part of them.
    std::map<int64_t, int> per_step;
    for (const auto& m : store.metrics(run.id)) ++per_step[m.step];
    for (const auto& [step, n] : per_step) EXPECT_EQ(n, 6) << "run " << run.id << " step " << step;
  }
  EXPECT_GE(killed_count, kRuns - 2) << out;  // a kill may land just after a run ended
  EXPECT_THAT(out, HasSubstr(fmt::format("{} of {} runs failed", killed_count, kRuns)));
}

// --- Ctrl-C and a killed supervisor ----------------------------------------------------------

TEST_F(Sweep, CtrlCStopsEveryChildAndLeavesNoOrphans) {
  pid_t tlab_pid = start(experiment("none", 4, /*sleep_ms=*/50, /*epochs=*/20), "-j 2 --grace 5s");
  auto started = wait_for([](const auto& all) {
    return std::count_if(all.begin(), all.end(),
                         [](const auto& r) { return r.status == "running"; }) == 2;
  });
  const auto t0 = Clock::now();
  kill(tlab_pid, SIGINT);
  int status = 0;
  waitpid(tlab_pid, &status, 0);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_LT(secs, 5.0) << "children must stop within the grace period";
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGINT);
  const std::string out = tlab::test::read_file(dir_ / "out.txt");
  EXPECT_THAT(out, HasSubstr("stopping on signal 2 (SIGINT)"));
  int stopped = 0, not_started = 0;
  for (const auto& run : runs()) {
    EXPECT_EQ(run.status, "killed") << run.reason;
    EXPECT_FALSE(alive(run.pid)) << "run " << run.id << " is an orphan";
    if (run.reason.find("not started") != std::string::npos)
      ++not_started;
    else if (run.reason.find("stopped by signal 2 (SIGINT, Ctrl-C)") != std::string::npos)
      ++stopped;
  }
  EXPECT_EQ(stopped, 2) << out;
  EXPECT_EQ(not_started, 2) << out;
}

TEST_F(Sweep, SigtermToEveryProcessStillStopsEachRunCleanly) {
  // What SLURM's scancel or a systemd stop does: SIGTERM to the supervisor and to every run at
  // once. A run then gets it twice (directly and forwarded): it must still flush and record.
  pid_t tlab_pid = start(experiment("none", 2, /*sleep_ms=*/50, /*epochs=*/20), "-j 2 --grace 5s");
  auto started = wait_for([](const auto& all) {
    return std::count_if(all.begin(), all.end(),
                         [](const auto& r) { return r.status == "running"; }) == 2;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(tlab_pid, SIGTERM);
  for (const auto& r : started) kill(static_cast<pid_t>(r.pid), SIGTERM);
  int status = 0;
  waitpid(tlab_pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM);
  for (const auto& run : runs()) {
    EXPECT_EQ(run.status, "killed");
    EXPECT_THAT(run.reason, HasSubstr("stopped by signal 15"));
    EXPECT_EQ(run.signal, -1) << "the run must exit by itself, not by the signal";
  }
}

TEST_F(Sweep, CtrlCAfterTheOutputPipeClosedStillStopsTheRunsCleanly) {
  // `tlab run ... | tee log`, tee dies, then Ctrl-C: writing to the closed pipe must not kill
  // the supervisor (and with it, unrecorded, every run).
  std::string cmd = command(experiment("none", 2, /*sleep_ms=*/50, /*epochs=*/20), "-j 2");
  cmd.replace(cmd.find("&& "), 3, "&& exec env ");
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    close(out[0]);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  wait_for([](const auto& all) {
    return std::count_if(all.begin(), all.end(),
                         [](const auto& r) { return r.status == "running"; }) == 2;
  });
  close(out[0]);  // the reader is gone
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status)) << "the supervisor died of signal " << WTERMSIG(status);
  for (const auto& run : runs()) {
    EXPECT_EQ(run.status, "killed");
    EXPECT_THAT(run.reason, HasSubstr("stopped by signal 2"));
  }
}

TEST_F(Sweep, AKilledSupervisorTakesItsChildrenAndTheNextStartMarksThemLost) {
  const std::string exp = experiment("none", 4, /*sleep_ms=*/50, /*epochs=*/20);
  pid_t tlab_pid = start(exp, "-j 2", "TLAB_HEARTBEAT_SECONDS=0.1");
  auto started = wait_for([](const auto& all) {
    return std::count_if(all.begin(), all.end(),
                         [](const auto& r) { return r.status == "running"; }) == 2;
  });
  kill(tlab_pid, SIGKILL);
  waitpid(tlab_pid, nullptr, 0);
  // The children die with it (PR_SET_PDEATHSIG).
  const auto until = Clock::now() + std::chrono::seconds(5);
  auto any_alive = [&] {
    for (const auto& r : started)
      if (r.status == "running" && alive(r.pid)) return true;
    return false;
  };
  while (any_alive() && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(any_alive()) << "children outlived their supervisor";
  for (const auto& r : runs()) EXPECT_THAT(r.status, ::testing::AnyOf("running", "queued"));

  // The next start: stale heartbeat + dead process = lost; then the sweep runs them again.
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  Result r = tlab(experiment("none", 4, 0, 2), "-j 2", "TLAB_HEARTBEAT_SECONDS=0.1");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("lost: the run's process"));
  int lost = 0, finished = 0;
  for (const auto& run : runs()) {
    lost += run.status == "lost";
    finished += run.status == "finished";
    if (run.status == "lost")
      EXPECT_THAT(run.reason, HasSubstr("its supervisor or the machine died"));
  }
  EXPECT_EQ(lost, 4);  // 2 running + 2 queued
  EXPECT_EQ(finished, 4);
}

// --- resume, rerun, parallel = sequential ---------------------------------------------------

TEST_F(Sweep, ARerunSkipsFinishedRunsAndRerunForcesThem) {
  const std::string exp = experiment("loss", 3);  // seed 2 fails
  Result first = tlab(exp, "-j 2");
  EXPECT_EQ(first.code, 1) << first.out;
  Result second = tlab(exp, "-j 2");
  EXPECT_EQ(second.code, 1) << second.out;
  EXPECT_THAT(second.out, HasSubstr("2 of 3 run(s) already finished"));
  EXPECT_THAT(second.out, HasSubstr("1 of 3 runs failed"));
  EXPECT_EQ(runs().size(), 4u);  // only the failed one ran again
  Result dry = tlab(exp, "--dry-run");
  EXPECT_EQ(dry.code, 0) << dry.out;
  EXPECT_THAT(dry.out,
              HasSubstr("[1/3] seed=1 strategy.fail_in=none  (finished as run 1: skipped"));
  EXPECT_THAT(dry.out, ::testing::Not(HasSubstr("[2/3] seed=2 strategy.fail_in=loss  (finished")));
  EXPECT_EQ(runs().size(), 4u);
  Result forced = tlab(exp, "-j 2 --rerun");
  EXPECT_EQ(runs().size(), 7u) << forced.out;
  // Same config and plugins = same key; the failing run has its own.
  std::map<int64_t, std::set<std::string>> keys;
  for (const auto& r : runs()) keys[r.seed].insert(r.run_key);
  for (const auto& [seed, k] : keys) EXPECT_EQ(k.size(), 1u) << seed;
}

// A random search end to end: --dry-run lists the distributions and each run's trial; the runs
// record the sweeper, trial and distributions; a second start finds them all finished (the
// draws are the same), and the crossed seeds of a draw share its values.
TEST_F(Sweep, ARandomSearchRecordsItsDrawsAndResumes) {
  const std::string exp = R"toml(name = "search"
seed = 1
device = "cpu"
[target]
plugin = "gaussians"
domain = "target"
train_size = 32
val_size = 16
test_size = 16
[backbone]
plugin = "mlp"
hidden = [4]
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = 1
batch_size = 16
[sweep]
samples = 3
seed = [1, 2]
"train.lr" = "tag(log, interval(1e-4, 1e-1))"
"train.batch_size" = [8, 16]
)toml";
  Result dry = tlab(exp, "--dry-run");
  ASSERT_EQ(dry.code, 0) << dry.out;
  EXPECT_THAT(
      dry.out,
      HasSubstr("exp.toml: 6 run(s): random search, 3 draw(s) (search_seed 0) x 2 "
                "crossed (seed)\n  seed ~ choice(1, 2)\n  train.lr ~ tag(log, "
                "interval(0.0001, 0.1))\n  train.batch_size ~ choice(8, 16)\n[1/6] trial 0: "
                "seed=1 train.lr="));
  EXPECT_THAT(dry.out, HasSubstr("[6/6] trial 2: seed=2 train.lr="));
  Result first = tlab(exp, "-j 2");
  ASSERT_EQ(first.code, 0) << first.out;
  const auto rs = runs();
  ASSERT_EQ(rs.size(), 6u);
  std::map<int64_t, std::set<std::string>> values_of_trial;
  for (const auto& r : rs) {
    EXPECT_EQ(r.status, "finished");
    const auto search = nlohmann::json::parse(r.search);
    EXPECT_EQ(search["sweeper"], "random");
    EXPECT_EQ(search["samples"], 3);
    EXPECT_EQ(search["search_seed"], 0);
    EXPECT_EQ(search["distributions"]["train.lr"], "tag(log, interval(0.0001, 0.1))");
    const auto swept = nlohmann::json::parse(r.overrides);
    values_of_trial[search["trial"].get<int64_t>()].insert(swept["train.lr"].dump() + " " +
                                                           swept["train.batch_size"].dump());
  }
  ASSERT_EQ(values_of_trial.size(), 3u);
  for (const auto& [trial, values] : values_of_trial) EXPECT_EQ(values.size(), 1u) << trial;
  // Through SQL, as any client reads it.
  EXPECT_EQ(tlab::test::shell("sqlite3 '" + db_.string() +
                              "' \"SELECT count(DISTINCT json_extract(search, '$.trial')) FROM "
                              "runs WHERE json_extract(search, '$.sweeper') = 'random'\"")
                .out,
            "3\n");
  Result again = tlab(exp, "-j 2");
  EXPECT_EQ(again.code, 0) << again.out;
  EXPECT_THAT(again.out, HasSubstr("6 of 6 run(s) already finished"));
  EXPECT_EQ(runs().size(), 6u);
  // A grid sweep records its sweeper and distributions, without a trial.
  db_ = dir_ / "grid.db";
  ASSERT_EQ(tlab(exp, "~sweep.samples train.lr=0.01").code, 0);
  const auto grid = nlohmann::json::parse(runs().at(0).search);
  EXPECT_EQ(grid["sweeper"], "grid");
  EXPECT_FALSE(grid.contains("trial"));
  EXPECT_EQ(grid["distributions"]["train.batch_size"], "choice(8, 16)");
}

// ASHA's decision, as Optuna's SuccessiveHalvingPruner makes it: the run goes on when its value
// is at least the (n / reduction)-th best at the rung (the best when n < reduction).
TEST(Asha, TheRuleAndTheRungs) {
  using tlab::asha_promotes;
  EXPECT_TRUE(asha_promotes({0.5}, 0.5, 3, true));  // the first run at a rung never waits
  EXPECT_FALSE(asha_promotes({0.9, 0.5}, 0.5, 3, true));
  EXPECT_TRUE(asha_promotes({0.9, 0.5}, 0.9, 3, true));
  EXPECT_TRUE(asha_promotes({0.9, 0.5, 0.7}, 0.9, 3, true));
  EXPECT_FALSE(asha_promotes({0.9, 0.5, 0.7}, 0.7, 3, true));
  // Six values, reduction 3: the best two go on.
  const std::vector<double> six = {0.1, 0.6, 0.3, 0.8, 0.2, 0.5};
  EXPECT_TRUE(asha_promotes(six, 0.6, 3, true));
  EXPECT_FALSE(asha_promotes(six, 0.5, 3, true));
  EXPECT_TRUE(asha_promotes(six, 0.2, 3, false));  // lower is better (a loss)
  EXPECT_FALSE(asha_promotes(six, 0.3, 3, false));
  EXPECT_TRUE(asha_promotes(six, 0.5, 2, true));  // reduction 2: the best three
  const double nan = std::nan("");
  EXPECT_FALSE(asha_promotes({0.4, nan}, nan, 3, true));  // NaN ranks last
  EXPECT_TRUE(asha_promotes({nan, 0.4}, 0.4, 3, true));
  tlab::AshaSpec spec;
  std::vector<int64_t> rungs;
  for (int64_t e = 1; e <= 30; ++e)
    if (tlab::is_rung(e, spec)) rungs.push_back(e);
  EXPECT_EQ(rungs, (std::vector<int64_t>{1, 3, 9, 27}));
  spec.min_epochs = 2;
  spec.reduction = 2;
  rungs.clear();
  for (int64_t e = 1; e <= 17; ++e)
    if (tlab::is_rung(e, spec)) rungs.push_back(e);
  EXPECT_EQ(rungs, (std::vector<int64_t>{2, 4, 8, 16}));
  const auto parsed = tlab::asha_of(
      R"j({"sweeper":"random","pruner":{"name":"asha","min_epochs":2,"reduction":4},"bracket":"b1"})j");
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->min_epochs, 2);
  EXPECT_EQ(parsed->reduction, 4);
  EXPECT_EQ(parsed->bracket, "b1");
  EXPECT_FALSE(tlab::asha_of(R"j({"sweeper":"grid"})j"));
  EXPECT_FALSE(tlab::asha_of(""));
}

// [sweep.asha]: runs that fall behind their bracket at a rung end 'pruned' (metrics and reason
// kept, exit 0); the first run at each rung always goes on; a second start skips pruned runs.
TEST_F(Sweep, AshaPrunesRunsBehindTheirBracketAndAResumeSkipsThem) {
  const std::string exp = R"toml(name = "asha"
seed = 1
device = "cpu"
[target]
plugin = "gaussians"
domain = "target"
train_size = 64
val_size = 32
test_size = 16
[backbone]
plugin = "mlp"
hidden = [4]
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = 9
batch_size = 16
[sweep]
samples = 8
seed = [1]
"train.lr" = "tag(log, interval(1e-6, 1e-1))"
[sweep.asha]
min_epochs = 1
reduction = 3
)toml";
  Result first = tlab(exp, "-j 1");
  ASSERT_EQ(first.code, 0) << first.out;
  const auto rs = runs();
  ASSERT_EQ(rs.size(), 8u);
  EXPECT_EQ(rs[0].status, "finished");  // alone at every rung
  int pruned = 0;
  tlab::Store store(db_, false);
  for (const auto& r : rs) {
    const auto search = nlohmann::json::parse(r.search);
    EXPECT_EQ(search["pruner"]["name"], "asha");
    EXPECT_EQ(search["bracket"], nlohmann::json::parse(rs[0].search)["bracket"]);
    // Every run records its value at rung 1; a rung's value is the epoch's target/val/acc.
    const auto rung = store.metrics(r.id, "asha/rung");
    ASSERT_FALSE(rung.empty()) << r.id;
    EXPECT_EQ(rung[0].epoch, 1);
    const auto val = store.metrics(r.id, "target/val/acc");
    ASSERT_FALSE(val.empty());
    EXPECT_DOUBLE_EQ(rung[0].value, val[0].value);
    if (r.status != "pruned") continue;
    ++pruned;
    EXPECT_THAT(r.reason, HasSubstr("pruned by ASHA after epoch "));
    EXPECT_THAT(r.reason, HasSubstr("[sweep.asha] reduction = 3"));
    EXPECT_LT(val.size(), 9u) << "a pruned run stops training";
    EXPECT_TRUE(store.list_runs({r.id}).at(0).summary("target/test/acc"));  // kept
  }
  EXPECT_GE(pruned, 2) << first.out;  // 3 with these draws
  EXPECT_LT(pruned, 8);
  EXPECT_THAT(first.out, HasSubstr(fmt::format("8 run(s) ended: {} finished, {} pruned by ASHA",
                                               8 - pruned, pruned)));
  Result again = tlab(exp, "-j 1");
  EXPECT_EQ(again.code, 0) << again.out;
  EXPECT_THAT(again.out, HasSubstr("0 run(s) finished, 8 skipped as already finished"));
  // The same draws without ASHA are other runs: a pruned run did not train to the end.
  Result plain = tlab(exp, "'~sweep.asha'");
  EXPECT_EQ(plain.code, 0) << plain.out;
  EXPECT_THAT(plain.out, HasSubstr("8 run(s) finished; results in"));
  // SLURM tasks write shard databases: ASHA cannot compare them, and says so before submitting.
  Result slurm = tlab(exp, "--launcher slurm");
  EXPECT_EQ(slurm.code, 2) << slurm.out;
  EXPECT_THAT(slurm.out, HasSubstr("SLURM tasks write their own shard databases until `tlab "
                                   "sweep collect`, so they cannot see each other's rungs"));
  // A target without a validation split cannot be compared: the run fails saying so.
  db_ = dir_ / "noval.db";
  Result noval = tlab(exp, "target.val_size=0 sweep.samples=1");
  EXPECT_NE(noval.code, 0);
  EXPECT_THAT(noval.out, HasSubstr("[sweep.asha] compares the runs of a sweep on the target's "
                                   "validation split, but the target dataset has none"));
}

const char* const kOptunaExperiment = R"toml(name = "tpe"
seed = 1
device = "cpu"
[target]
plugin = "gaussians"
domain = "target"
train_size = 64
val_size = 32
test_size = 16
[backbone]
plugin = "mlp"
hidden = [4]
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = 2
batch_size = 16
[sweep]
seed = [1, 2]
"train.lr" = "tag(log, interval(1e-4, 1e-1))"
"train.batch_size" = [8, 16]
[sweep.optuna]
startup_trials = 2
)toml";

// --sweeper optuna: Optuna's TPE, through its ask-and-tell interface and its own SQLite storage,
// chooses each trial; a trial runs once per seed and its objective is the mean over its runs;
// the study and the runs name each other. Read back with Optuna itself. More trials extend the
// study; a trial a stopped search left running, and one a user enqueued, are run next.
TEST_F(Sweep, OptunaStudyChoosesTheTrialsAndKnowsTheirRuns) {
  const std::string exp = kOptunaExperiment;
  Result dry = tlab(exp, "--sweeper optuna --trials 4 --dry-run");
  ASSERT_EQ(dry.code, 0) << dry.out;
  EXPECT_THAT(dry.out, HasSubstr("Optuna search: 4 trial(s) of TPE after 2 random startup "
                                 "trial(s) (seed 0), each 2 run(s) (one per seed); objective: "
                                 "maximize target/val/acc (mean over a trial's runs)\n  study "
                                 "'tpe-"));
  EXPECT_THAT(dry.out, HasSubstr("  train.lr ~ tag(log, interval(0.0001, 0.1))\n  "
                                 "train.batch_size ~ choice(8, 16)\n"));
  EXPECT_FALSE(fs::exists(dir_ / "optuna.db"));
  EXPECT_FALSE(fs::exists(db_));

  Result first = tlab(exp, "--sweeper optuna --trials 4 -j 2");
  ASSERT_EQ(first.code, 0) << first.out;
  EXPECT_THAT(first.out, HasSubstr(": 0 of 4 trial(s) done\n"));
  EXPECT_THAT(first.out, HasSubstr("[optuna] trial 3: target/val/acc = "));
  EXPECT_THAT(first.out, HasSubstr("8 run(s) finished; results in"));
  const auto rs = runs();
  ASSERT_EQ(rs.size(), 8u);
  std::map<int64_t, std::vector<tlab::RunRecord>> by_trial;
  std::string study, storage;
  for (const auto& r : rs) {
    EXPECT_EQ(r.status, "finished");
    const auto search = nlohmann::json::parse(r.search);
    EXPECT_EQ(search["sweeper"], "optuna");
    EXPECT_EQ(search["metric"], "target/val/acc");
    EXPECT_EQ(search["direction"], "maximize");
    EXPECT_EQ(search["sampler"], "tpe");
    EXPECT_EQ(search["samples"], 4);
    EXPECT_EQ(search["distributions"]["train.lr"], "tag(log, interval(0.0001, 0.1))");
    study = search["study"].get<std::string>();
    storage = search["storage"].get<std::string>();
    by_trial[search["trial"].get<int64_t>()].push_back(r);
  }
  EXPECT_EQ(storage, "sqlite:///" + (dir_ / "optuna.db").string());
  EXPECT_THAT(study, ::testing::StartsWith("tpe-"));
  ASSERT_EQ(by_trial.size(), 4u);

  auto study_of = [&] {
    const std::string text = tlab::test::optuna_study(storage, study);
    auto j = nlohmann::json::parse(text, nullptr, false);
    EXPECT_TRUE(j.is_object()) << text;
    return j;
  };
  auto s = study_of();
  EXPECT_EQ(s["direction"], "MAXIMIZE");
  EXPECT_EQ(s["attrs"]["tlab_db"], db_.string());
  EXPECT_EQ(s["attrs"]["tlab_metric"], "target/val/acc");
  ASSERT_EQ(s["trials"].size(), 4u);
  tlab::Store store(db_, false);
  for (const auto& t : s["trials"]) {
    EXPECT_EQ(t["state"], "COMPLETE");
    const auto& mine = by_trial.at(t["number"].get<int64_t>());
    ASSERT_EQ(mine.size(), 2u);  // one run per seed
    double mean = 0;
    std::set<int64_t> ids;
    for (const auto& r : mine) {
      ids.insert(r.id);
      mean += *store.list_runs({r.id}).at(0).summary("target/val/acc") / 2;
      const auto swept = nlohmann::json::parse(r.overrides);
      // The run trains with the value Optuna chose, to the last bit.
      EXPECT_EQ(swept["train.lr"].get<double>(), t["params"]["train.lr"].get<double>());
      EXPECT_EQ(swept["train.batch_size"].dump(), t["params"]["train.batch_size"]);
    }
    EXPECT_NEAR(t["value"].get<double>(), mean, 1e-12);
    EXPECT_EQ(t["attrs"]["tlab_runs"].get<std::set<int64_t>>(), ids);
  }

  // More trials extend the study: the four are neither asked for nor run again.
  Result more = tlab(exp, "--sweeper optuna --trials 6 -j 2");
  ASSERT_EQ(more.code, 0) << more.out;
  EXPECT_THAT(more.out, HasSubstr(": 4 of 6 trial(s) done\n"));
  EXPECT_EQ(runs().size(), 12u);
  // A trial left running (as by a search that was killed) and one a user enqueues in Python.
  tlab::test::write_file(dir_ / "enqueue.py", R"py(import sys, optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
s = optuna.load_study(study_name=sys.argv[2], storage=sys.argv[1])
s.ask()
s.ask({"train.lr": FloatDistribution(1e-4, 1e-1, log=True),
       "train.batch_size": CategoricalDistribution(["8", "16"])})
s.enqueue_trial({"train.lr": 0.0125, "train.batch_size": "8"})
)py");
  const auto py = tlab::test::shell(fmt::format("/usr/bin/python3 '{}' '{}' '{}'",
                                                (dir_ / "enqueue.py").string(), storage, study));
  ASSERT_EQ(py.code, 0) << py.out;
  // (and one asked without a configuration: it cannot be run again, so it is told failed).
  Result resumed = tlab(exp, "--sweeper optuna --trials 9 -j 1");
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  EXPECT_THAT(resumed.out, HasSubstr("[optuna] trial 6 was left running without a configuration "
                                     "of this search: told failed (trial 6 of the study has no "
                                     "value for 'train.lr'"));
  EXPECT_THAT(resumed.out, HasSubstr(": 7 of 9 trial(s) done, 1 left running by a stopped "
                                     "search: run again\n"));
  EXPECT_THAT(resumed.out, HasSubstr("[optuna] trial 7: "));
  EXPECT_THAT(resumed.out, HasSubstr("[optuna] trial 8: "));
  s = study_of();
  ASSERT_EQ(s["trials"].size(), 9u);
  for (const auto& t : s["trials"])
    EXPECT_EQ(t["state"], t["number"] == 6 ? "FAIL" : "COMPLETE") << t.dump();
  EXPECT_EQ(s["trials"][8]["params"]["train.lr"], 0.0125);
  int enqueued = 0;
  for (const auto& r : runs())
    if (nlohmann::json::parse(r.overrides)["train.lr"] == 0.0125) ++enqueued;
  EXPECT_EQ(enqueued, 2);
  EXPECT_EQ(runs().size(), 16u);
}

// A located error before anything runs: Python or Optuna missing, an unknown sweeper; an
// objective the runs do not record fails the search after the first trial, which the study
// marks failed; a study of the other direction is refused.
TEST_F(Sweep, OptunaSearchErrorsNameTheFix) {
  const std::string one = kOptunaExperiment;
  Result nopython = tlab(one, "--sweeper optuna --trials 1", "TLAB_PYTHON=/nonexistent/python3");
  EXPECT_EQ(nopython.code, 2) << nopython.out;
  EXPECT_THAT(nopython.out, HasSubstr("cannot start the Optuna sweeper: '/nonexistent/python3' "
                                      "could not be executed"));
  EXPECT_THAT(nopython.out, HasSubstr("set TLAB_PYTHON to a Python that has Optuna"));
  // A Python without Optuna: Debian's, without its site packages.
  tlab::test::write_file(dir_ / "py", "#!/bin/sh\nexec /usr/bin/python3 -S \"$@\"\n");
  fs::permissions(dir_ / "py", fs::perms::owner_all);
  Result nooptuna =
      tlab(one, "--sweeper optuna --trials 1", "TLAB_PYTHON='" + (dir_ / "py").string() + "'");
  EXPECT_EQ(nooptuna.code, 2) << nooptuna.out;
  EXPECT_THAT(nooptuna.out,
              HasSubstr("the Optuna sweeper needs Optuna, and import optuna failed (No module "
                        "named 'optuna') in /usr/bin/python3: install it with `apt-get install "
                        "python3-optuna`"));
  EXPECT_TRUE(!fs::exists(db_) || runs().empty());
  Result unknown = tlab(one, "--sweeper hyperopt --trials 1");
  EXPECT_EQ(unknown.code, 2) << unknown.out;
  EXPECT_THAT(unknown.out, HasSubstr("'sweep.sweeper' is \"hyperopt\": not a sweeper; expected "
                                     "\"grid\" (every combination), \"random\" (sweep.samples "
                                     "draws) or \"optuna\""));
  Result nocount = tlab(one, "--sweeper optuna");
  EXPECT_EQ(nocount.code, 2) << nocount.out;
  EXPECT_THAT(nocount.out, HasSubstr("needs the number of trials: add sweep.samples = N"));

  Result nometric = tlab(one,
                         "--sweeper optuna --trials 2 sweep.optuna.metric=target/val/nope "
                         "sweep.optuna.study=s1");
  EXPECT_EQ(nometric.code, 2) << nometric.out;
  EXPECT_THAT(nometric.out, HasSubstr("the Optuna objective target/val/nope is not a value of "
                                      "run(s) "));
  EXPECT_THAT(nometric.out, HasSubstr("(trial 0): name a metric the runs record with "
                                      "sweep.optuna.metric=NAME"));
  const std::string storage = "sqlite:///" + (dir_ / "optuna.db").string();
  auto s = nlohmann::json::parse(tlab::test::optuna_study(storage, "s1"));
  ASSERT_EQ(s["trials"].size(), 1u);  // the search stopped at the first trial
  EXPECT_EQ(s["trials"][0]["state"], "FAIL");
  Result flipped = tlab(one,
                        "--sweeper optuna --trials 1 sweep.optuna.study=s1 "
                        "sweep.optuna.direction=minimize");
  EXPECT_EQ(flipped.code, 2) << flipped.out;
  EXPECT_THAT(flipped.out, HasSubstr("study 's1' in " + storage +
                                     " exists with direction maximize, not minimize"));
}

TEST_F(Sweep, AParallelSweepGivesTheSameRowsAsASequentialOne) {
  const std::string exp = experiment("none", 4);
  Result seq = tlab(exp, "-j 1");
  ASSERT_EQ(seq.code, 0) << seq.out;
  db_ = dir_ / "parallel.db";
  Result par = tlab(exp, "-j 2");
  ASSERT_EQ(par.code, 0) << par.out;
  tlab::Store a(dir_ / "results.db", false), b(db_, false);
  auto ra = a.list_runs(), rb = b.list_runs();
  ASSERT_EQ(ra.size(), rb.size());
  std::map<std::string, std::vector<double>> by_key;
  for (const auto& r : ra)
    for (const auto& m : a.metrics(r.id)) by_key[r.run_key].push_back(m.value);
  for (const auto& r : rb) {
    std::vector<double> values;
    for (const auto& m : b.metrics(r.id)) values.push_back(m.value);
    EXPECT_EQ(values, by_key[r.run_key]) << "seed " << r.seed;
  }
  tlab::Store first(dir_ / "results.db", false);
  EXPECT_EQ(first.integrity_check(), "ok");
}

TEST_F(Sweep, GpusAreHandedOutRoundRobinWithRunsPerGpu) {
  // On a machine without CUDA, device "auto" runs on the CPU, but the supervisor still hands
  // out CUDA_VISIBLE_DEVICES, which each run records.
  std::string exp = experiment("none", 4);
  exp.replace(exp.find("device = \"cpu\""), 14, "device = \"auto\"");
  Result r = tlab(exp, "-j 4 --gpus 3,5 --runs-per-gpu 1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("only 2 GPU slot(s)"));
  std::map<std::string, int> per_gpu;
  for (const auto& run : runs()) ++per_gpu[run.gpu];
  EXPECT_EQ(per_gpu, (std::map<std::string, int>{{"3", 2}, {"5", 2}}));
  Result bad = tlab(exp, "--gpus 0,x");
  EXPECT_EQ(bad.code, 2);
  EXPECT_THAT(bad.out, HasSubstr("--gpus '0,x': 'x' is not a GPU index"));
}

TEST_F(Sweep, RunsThatShareASourcePreTrainingDoItOnce) {
  const std::string exp = R"(name = "reuse"
seed = 3
device = "cpu"

[source]
plugin = "gaussians"
domain = "source"
train_size = 128
val_size = 32

[target]
plugin = "gaussians"
domain = "target"
train_size = 64
val_size = 16
test_size = 32
shots = 4

[backbone]
plugin = "mlp"
hidden = [8]

[[adapters]]
plugin = "linear_head"

[strategy]
plugin = "finetune"
source_epochs = 2

[train]
epochs = 2
batch_size = 16

[sweep]
"strategy.freeze_backbone" = [false, true]
"target.shots" = [4, 8]
)";
  Result r = tlab(exp, "-j 2");
  ASSERT_EQ(r.code, 0) << r.out;
  std::size_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir_ / "cache" / "pretrain"))
    entries += e.path().extension() == ".json";
  EXPECT_EQ(entries, 1u) << "4 target-side variants, one pre-training";
  tlab::Store store(db_, false);
  auto all = store.list_runs();
  ASSERT_EQ(all.size(), 4u);
  int reused = 0;
  std::vector<double> first_source;
  for (const auto& run : all) {
    for (const auto& [name, value] : run.summaries)
      if (name == "source/pretrain_reused") reused += value == 1.0;
    std::vector<double> source;
    for (const auto& m : store.metrics(run.id, "source/train/loss")) source.push_back(m.value);
    ASSERT_EQ(source.size(), 2u) << "the reusing runs replay the pre-training's metrics";
    if (first_source.empty()) first_source = source;
    EXPECT_EQ(source, first_source);
  }
  EXPECT_EQ(reused, 3);

  // Trained or reused, a run computes the same target results.
  std::map<std::string, double> acc;
  for (const auto& run : all)
    for (const auto& [name, value] : run.summaries)
      if (name == "target/test/acc") acc[run.run_key] = value;
  fs::remove_all(dir_ / "cache");
  Result again = tlab(exp, "-j 1 --rerun");
  ASSERT_EQ(again.code, 0) << again.out;
  for (const auto& run : store.list_runs())
    for (const auto& [name, value] : run.summaries)
      if (name == "target/test/acc") EXPECT_EQ(value, acc[run.run_key]) << "run " << run.id;
}

TEST_F(Sweep, SpawnForkIsolatesCrashesAndGivesTheSameRowsAsExec) {
  const std::string exp = experiment("segfault");
  Result exec = tlab(exp, "-j 2 --spawn exec");
  ASSERT_EQ(exec.code, 1) << exec.out;
  db_ = dir_ / "fork.db";
  Result fork = tlab(exp, "-j 2 -v");  // --spawn auto: every run is on the CPU
  ASSERT_EQ(fork.code, 1) << fork.out;
  EXPECT_THAT(fork.out, HasSubstr("[sweep] --spawn auto: fork"));
  EXPECT_THAT(fork.out, HasSubstr("1 of 4 runs failed"));
  tlab::Store a(dir_ / "results.db", false), b(db_, false);
  std::map<int64_t, std::vector<double>> exec_values;
  for (const auto& r : a.list_runs())
    for (const auto& m : a.metrics(r.id)) exec_values[r.seed].push_back(m.value);
  for (const auto& r : b.list_runs()) {
    tlab::RunRecord rec = b.run(r.id);
    if (r.seed == 2) {
      EXPECT_EQ(rec.status, "crashed");
      EXPECT_EQ(rec.signal, SIGSEGV);
      continue;
    }
    EXPECT_EQ(rec.status, "finished") << rec.reason;
    std::vector<double> values;
    for (const auto& m : b.metrics(r.id)) values.push_back(m.value);
    EXPECT_EQ(values, exec_values[r.seed]) << "seed " << r.seed;
  }
  std::string gpu = experiment("none", 1);
  gpu.replace(gpu.find("device = \"cpu\""), 14, "device = \"auto\"");
  Result with_auto = tlab(gpu, "--spawn fork");
  if (torch::cuda::is_available()) {  // "auto" means the GPU here: a fork cannot use it
    EXPECT_EQ(with_auto.code, 2);
    EXPECT_THAT(with_auto.out, HasSubstr("--spawn fork needs device = \"cpu\" in every run"));
  } else {  // "auto" means the CPU: forking is fine
    EXPECT_EQ(with_auto.code, 0) << with_auto.out;
  }
  tlab::Store first(dir_ / "results.db", false);
  EXPECT_EQ(first.integrity_check(), "ok");
}

TEST_F(Sweep, AProgressBarOnATerminalOnly) {
  // Not a terminal (a pipe): no bar, no cursor control.
  const std::string exp = experiment("none", 2, /*sleep_ms=*/40, /*epochs=*/3);
  Result piped = tlab(exp, "-j 2");
  ASSERT_EQ(piped.code, 0) << piped.out;
  EXPECT_EQ(piped.out.find("\033[K"), std::string::npos);
  // A terminal (script(1) gives the command a pseudo-terminal): runs done and failed, each
  // running run's epoch, elapsed time and ETA.
  db_ = dir_ / "tty.db";
  std::string cmd = command(exp, "-j 2");
  cmd = cmd.substr(0, cmd.rfind(" 2>&1"));
  std::string quoted;
  for (char c : cmd) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  FILE* p = popen(("script -qefc '" + quoted + "' /dev/null 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  while (std::size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  ASSERT_EQ(pclose(p), 0) << out;
  EXPECT_THAT(out, HasSubstr("\r\033[K["));
  EXPECT_THAT(out, HasSubstr("/2 runs, 0 failed, 2 running: #"));
  EXPECT_THAT(out, ::testing::ContainsRegex("#[0-9]+ target [1-3]/3"));
  EXPECT_THAT(out, HasSubstr("elapsed, ETA"));
}

TEST_F(Sweep, ALostRunIsToldFromAProcessThatReusedItsPid) {
  // Three runs "running" under this test's own pid, which is alive: one recorded with this
  // process's boot and start time (alive: kept), one from another boot and one whose process
  // started at another time (both: the pid was reused, the run's process is gone -> lost).
  tlab::Store store(db_);
  auto add = [&](const std::string& boot, int64_t start) {
    tlab::NewRun run;
    run.experiment = "exp.toml";
    run.name = "pid";
    run.host = tlab::host_name();
    run.pid = getpid();
    run.boot_id = boot;
    run.pid_start = start;
    return store.create_run(run);
  };
  const int64_t self = tlab::process_start_ticks(getpid());
  ASSERT_GT(self, 0);
  ASSERT_FALSE(tlab::boot_id().empty());
  const int64_t alive = add(tlab::boot_id(), self);
  const int64_t rebooted = add("00000000-another-boot", self);
  const int64_t reused = add(tlab::boot_id(), self + 1);
  auto marked = tlab::mark_lost_runs(store, 0.0);
  EXPECT_EQ(marked.size(), 2u);
  EXPECT_EQ(store.run(alive).status, "running");
  EXPECT_EQ(store.run(rebooted).status, "lost");
  EXPECT_EQ(store.run(reused).status, "lost");
  EXPECT_THAT(store.run(reused).reason, HasSubstr("is gone"));
}

TEST_F(Sweep, TimeoutNeedsADuration) {
  Result r = tlab(experiment("none", 1), "--timeout soon");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr("--timeout 'soon' is not a duration"));
  EXPECT_FALSE(fs::exists(db_));
}

}  // namespace
