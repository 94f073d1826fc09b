#include "run/executor.hpp"

#include "run/asha.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "errors.hpp"  // framework/cli: the exit codes
#include "run/distributed.hpp"
#include "run/runner.hpp"
#include "util.hpp"

extern char** environ;

namespace fs = std::filesystem;

namespace tlab {

int available_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kTailLines = 20;       // stderr lines kept per run
constexpr std::size_t kTailLineBytes = 400;  // longer lines are cut

std::string signal_text(int sig) {
  const char* name = sigabbrev_np(sig);
  return fmt::format("signal {} ({}{})", sig, name ? "SIG" : "", name ? name : strsignal(sig));
}

bool is_crash_signal(int sig) {
  return sig == SIGSEGV || sig == SIGBUS || sig == SIGABRT || sig == SIGFPE || sig == SIGILL ||
         sig == SIGTRAP || sig == SIGSYS;
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0)) return "?";
  auto s = static_cast<int64_t>(seconds + 0.5);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
}

/// One child process and what the supervisor knows of it.
struct Child {
  std::size_t index = 0;  // into the sweep
  int64_t id = 0;
  pid_t pid = -1;
  int out_fd = -1;       // its stdout + stderr
  int progress_fd = -1;  // "epoch <domain> <n> <of>" lines
  int gpu_slot = -1;
  std::string gpu;
  Clock::time_point started;
  bool term_sent = false;
  Clock::time_point term_at;
  bool killed_hard = false;
  bool timed_out = false;
  int sent_signal = 0;
  std::string partial;  // an output line not yet complete
  std::deque<std::string> tail;
  std::string partial_progress;
  std::string progress;  // "target 3/10"
  std::ofstream log;
};

void add_line(Child& c, std::string line) {
  if (line.size() > kTailLineBytes) line = line.substr(0, kTailLineBytes) + " ...";
  c.tail.push_back(std::move(line));
  if (c.tail.size() > kTailLines) c.tail.pop_front();
}

/// Reads what is available on `fd` (non-blocking); returns false at end of file.
bool drain(int fd, std::string& into) {
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      into.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }
}

class Supervisor {
 public:
  Supervisor(const std::vector<RunSpec>& specs, PluginLoader& loader, Store& store,
             const SweepOptions& o)
      : specs_(specs), loader_(loader), store_(store), o_(o) {
    tty_ = isatty(STDERR_FILENO) && !o_.verbose;
    // Sequential runs are easy to follow: show their output (unless a progress bar is drawn).
    echo_ = o_.verbose || (!tty_ && o_.jobs == 1);
    jobs_ = std::max(1, o_.jobs);
    if (!o_.gpus.empty()) {
      const int slots = static_cast<int>(o_.gpus.size()) * std::max(1, o_.runs_per_gpu);
      if (jobs_ > slots)
        spdlog::warn(
            "[sweep] --jobs {} but only {} GPU slot(s) ({} GPU(s) x {} run(s) each): "
            "running {} at once",
            jobs_, slots, o_.gpus.size(), o_.runs_per_gpu, slots);
      jobs_ = std::min(jobs_, slots);
      gpu_load_.assign(o_.gpus.size(), 0);
    }
    threads_ = o_.threads > 0 ? o_.threads : std::max(1, available_cores() / jobs_);
    fork_only_ = static_cast<bool>(o_.in_fork);
    char self[4096];
    ssize_t n = ::readlink(o_.tlab.c_str(), self, sizeof self - 1);
    exe_ = n > 0 ? std::string(self, static_cast<std::size_t>(n)) : o_.tlab.string();
  }

  SweepResult run() {
    SweepResult result;
    result.total = specs_.size();
    result.ids.assign(specs_.size(), 0);
    // Queue: every run that is not already finished gets a row now, so `tlab results list`
    // shows the whole sweep, and a supervisor that dies leaves rows the next start can mark lost.
    const std::string sweep = hash_string(
        fmt::format("{} {} {}", host_name(), getpid(), Clock::now().time_since_epoch().count()));
    RunOptions ro;
    ro.results_dir = o_.results_dir;
    std::map<fs::path, GitState> git;
    std::vector<int64_t> elsewhere;
    for (std::size_t i = 0; i < specs_.size(); ++i) {
      const std::string key = run_key(specs_[i], loader_);
      if (!o_.rerun) {
        if (int64_t done = store_.finished_run_with_key(key)) {
          result.ids[i] = done;
          ++result.skipped;
          continue;
        }
      }
      // Every run of a sweep comes from the same experiment file: ask git once.
      const fs::path dir = fs::absolute(specs_[i].experiment).parent_path();
      auto found = git.find(dir);
      if (found == git.end()) found = git.emplace(dir, git_state(dir)).first;
      NewRun row = describe_run(specs_[i], ro, &found->second);
      row.status = RunStatus::kQueued;
      row.run_key = key;
      row.sweep = sweep;
      // A run with this key queued or running in another tlab process (six identical
      // `tlab run`s started at once) runs there, once: not again here, and not counted twice.
      int64_t same = 0;
      result.ids[i] = store_.create_run(row, o_.rerun ? nullptr : &same);
      if (result.ids[i] == 0) {
        result.ids[i] = same;
        ++result.skipped;
        if (!is_complete(parse_run_status(store_.run(same).status))) {
          ++result.elsewhere;
          elsewhere.push_back(same);
        }
        continue;
      }
      queue_.push_back(i);
    }
    if (result.skipped > result.elsewhere)
      spdlog::info(
          "[sweep] {} of {} run(s) already finished with the same config and plugins: "
          "skipped (--rerun runs them again)",
          result.skipped - result.elsewhere, result.total);
    if (result.elsewhere)
      spdlog::info(
          "[sweep] {} of {} run(s) already queued or running with the same config and plugins "
          "in another tlab process (run{} {}): not run again here",
          result.elsewhere, result.total, elsewhere.size() > 1 ? "s" : "",
          fmt::join(elsewhere, ", "));
    ids_ = result.ids;
    if (!queue_.empty())
      spdlog::info(
          "[sweep] {} run(s), {} at once, {} thread(s) each{}", queue_.size(), jobs_, threads_,
          o_.gpus.empty()
              ? ""
              : fmt::format(", GPUs {} ({} run(s) per GPU)", join(o_.gpus, ","), o_.runs_per_gpu));
    start_ = Clock::now();
    to_run_ = queue_.size();
    // Writing to a closed pipe (`tlab run | tee` after tee died) must not kill the supervisor
    // and, through PR_SET_PDEATHSIG, every run; and children must be reapable by waitpid.
    std::signal(SIGPIPE, SIG_IGN);
    std::signal(SIGCHLD, SIG_DFL);
    try {
      if (o_.in_process)
        run_in_process();
      else
        loop();
    } catch (const std::exception& e) {
      abandon();  // e.g. the database failed: stop the runs cleanly before giving up
      // The runs not started yet get a status, rather than staying queued for ever.
      for (std::size_t index : queue_) {
        try {
          store_.finish_open_run(ids_[index], RunStatus::kFailed,
                                 fmt::format("not started: the sweep stopped: {}", e.what()));
        } catch (...) {
          unrecorded_.push_back(ids_[index]);
        }
      }
      // A full disk fails these writes too: say which rows stay open, and what closes them.
      if (!unrecorded_.empty())
        throw std::runtime_error(fmt::format(
            "{}; run{} {} stay{} queued or running in '{}', which could not be written: the "
            "next `tlab run` with this database marks {} lost",
            e.what(), unrecorded_.size() > 1 ? "s" : "", fmt::join(unrecorded_, ", "),
            unrecorded_.size() > 1 ? "" : "s", o_.db.string(),
            unrecorded_.size() > 1 ? "them" : "it"));
      throw;
    } catch (...) {
      abandon();
      throw;
    }
    clear_bar();
    result.finished = finished_;
    result.pruned = pruned_;
    result.failures = failures_;
    result.stop_signal = stop_signal();
    return result;
  }

 private:
  void loop() {
    while (!queue_.empty() || !children_.empty()) {
      if (stop_signal() && !stopping_) begin_stop();
      // A run on several processes takes one job slot per rank (alone when it has more).
      auto slots = [&](std::size_t index) {
        return static_cast<int>(std::max<int64_t>(1, specs_[index].processes));
      };
      auto in_use = [&] {
        int n = 0;
        for (const auto& c : children_) n += slots(c->index);
        return n;
      };
      while (!stopping_ && !stop_signal() && !queue_.empty() &&
             (children_.empty() || in_use() + slots(queue_.front()) <= jobs_)) {
        const bool wants_gpu = !o_.gpus.empty() && specs_[queue_.front()].device != "cpu";
        const int slot = wants_gpu ? free_gpu_slot() : -1;
        if (wants_gpu && slot < 0) break;
        launch(queue_.front(), slot);
        queue_.pop_front();
      }
      wait_for_output(100);
      reap();
      enforce_limits();
      draw_bar();
    }
  }

  // --in-process: each run in this process, one after another, for debuggers and sanitizers.
  // No isolation: a crash ends the sweep, and the next start marks the open run lost.
  void run_in_process() {
    while (!queue_.empty()) {
      if (stop_signal()) {
        begin_stop();
        break;
      }
      const std::size_t index = queue_.front();
      queue_.pop_front();
      const int64_t id = ids_[index];
      spdlog::info(
          "[sweep] run {} in this process ({} of {}): {}", id, ++launched_, to_run_,
          specs_[index].overrides.empty() ? "(no overrides)" : join(specs_[index].overrides, " "));
      try {
        // Keeps the supervisor's signal handlers: a second Ctrl-C still ends tlab at once.
        run_child(o_.db, id, threads_, loader_, /*shard=*/false, /*install_handlers=*/false);
        store_.finish_open_run(id, RunStatus::kFailed, "the run returned without a final status");
      } catch (const std::exception& e) {
        store_.finish_open_run(id, RunStatus::kFailed, e.what());
      }
      const RunRecord rec = store_.run(id);
      ++done_;
      if (is_complete(parse_run_status(rec.status))) {
        ++finished_;
        pruned_ += rec.status == to_string(RunStatus::kPruned);
      } else {
        failures_.push_back(fmt::format("run {} {}: {}", id, rec.status, rec.reason));
        spdlog::error("[sweep] {}", failures_.back());
      }
    }
  }

  int free_gpu_slot() const {
    int best = -1;
    for (std::size_t g = 0; g < gpu_load_.size(); ++g)
      if (gpu_load_[g] < std::max(1, o_.runs_per_gpu) &&
          (best < 0 || gpu_load_[g] < gpu_load_[static_cast<std::size_t>(best)]))
        best = static_cast<int>(g);
    return best;
  }

  void launch(std::size_t index, int gpu_slot) {
    const RunSpec& spec = specs_[index];
    const int64_t id = ids_[index];
    RunRecord rec = store_.run(id);
    std::error_code ec;
    fs::create_directories(rec.run_dir, ec);

    int out[2], progress[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(progress, O_CLOEXEC) != 0)
      throw std::runtime_error(
          fmt::format("cannot create a pipe for run {}: {}", id, system_error_text(errno)));

    std::vector<std::string> args = {exe_};
    for (const auto& p : o_.plugin_paths) {
      args.push_back("--plugin-path");
      args.push_back(p);
    }
    if (o_.verbose) args.push_back("-v");
    args.insert(args.end(), {"_run", "--db", o_.db.string(), "--id", std::to_string(id),
                             "--threads", std::to_string(threads_)});
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      std::string_view v(*e);
      if (v.rfind("TLAB_PROGRESS_FD=", 0) == 0 || v.rfind("CUDA_VISIBLE_DEVICES=", 0) == 0 ||
          v.rfind("TLAB_ASSIGNED_GPU=", 0) == 0)
        continue;
      env.emplace_back(v);
    }
    env.push_back("TLAB_PROGRESS_FD=3");
    std::string gpu;
    if (gpu_slot >= 0 && spec.device != "cpu") {
      gpu = o_.gpus[static_cast<std::size_t>(gpu_slot)];
      env.push_back("CUDA_VISIBLE_DEVICES=" + gpu);
      env.push_back("TLAB_ASSIGNED_GPU=" + gpu);
    } else if (const char* cvd = std::getenv("CUDA_VISIBLE_DEVICES")) {
      env.push_back(std::string("CUDA_VISIBLE_DEVICES=") + cvd);
    }
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const pid_t parent = getpid();
    std::fflush(nullptr);  // nothing buffered may be written twice, by the parent and a child
    const std::string progress_fd = std::to_string(progress[1]);

    const pid_t pid = ::fork();
    if (pid < 0) {
      const int error = errno;
      for (int fd : {out[0], out[1], progress[0], progress[1], devnull})
        if (fd >= 0) ::close(fd);
      throw std::runtime_error(fmt::format(
          "cannot start the process of run {}: fork failed: {}; lower --jobs or free memory", id,
          strerror(error)));
    }
    if (pid == 0) {
      // Child: only async-signal-safe calls until exec.
      ::setpgid(0, 0);                        // Ctrl-C reaches the supervisor, which forwards it
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);     // the supervisor dies: so does this run
      if (::getppid() != parent) ::_exit(1);  // it died before prctl
      if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(out[1], STDERR_FILENO);
      ::signal(SIGPIPE, SIG_DFL);  // ignored by the supervisor; the run gets the default back
      if (fork_only_) {
        // --spawn fork: run in this copy of the supervisor, which has LibTorch and the plugins
        // loaded already. Safe because the supervisor is single-threaded and has never run a
        // LibTorch operation or touched CUDA (see SweepOptions::in_fork).
        ::setenv("TLAB_PROGRESS_FD", progress_fd.c_str(), 1);  // fd 3 may be the database's
        if (!gpu.empty()) ::setenv("CUDA_VISIBLE_DEVICES", gpu.c_str(), 1);
        if (!gpu.empty()) ::setenv("TLAB_ASSIGNED_GPU", gpu.c_str(), 1);
        int code = 1;
        try {
          code = o_.in_fork(id, threads_);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "error: %s\n", e.what());
        }
        std::fflush(nullptr);
        ::_exit(code);  // not exit(): the supervisor's objects are not this process's to destroy
      }
      ::dup2(progress[1], 3);
      // /proc/self/exe: the very file this supervisor runs, even if tlab was rebuilt since.
      ::execve("/proc/self/exe", argv.data(), envp.data());
      const char msg[] = "tlab: cannot execute the run's process\n";
      [[maybe_unused]] auto n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
      ::_exit(127);
    }
    ::setpgid(pid, pid);  // also here: no race with a signal sent right after fork
    if (devnull >= 0) ::close(devnull);
    ::close(out[1]);
    ::close(progress[1]);
    ::fcntl(out[0], F_SETFL, O_NONBLOCK);
    ::fcntl(progress[0], F_SETFL, O_NONBLOCK);

    auto c = std::make_unique<Child>();
    c->index = index;
    c->id = id;
    c->pid = pid;
    c->out_fd = out[0];
    c->progress_fd = progress[0];
    c->gpu_slot = gpu.empty() ? -1 : gpu_slot;
    c->gpu = gpu;
    c->started = Clock::now();
    c->log.open(fs::path(rec.run_dir) / "output.log", std::ios::app);
    if (c->gpu_slot >= 0) ++gpu_load_[static_cast<std::size_t>(c->gpu_slot)];
    const std::string what = spec.overrides.empty() ? "(no overrides)" : join(spec.overrides, " ");
    if (echo_ || !tty_)
      spdlog::info("[sweep] run {} started ({} of {}): {}{}", id, ++launched_, to_run_, what,
                   gpu.empty() ? "" : fmt::format(" on GPU {}", gpu));
    else
      ++launched_;
    children_.push_back(std::move(c));
  }

  void wait_for_output(int timeout_ms) {
    std::vector<pollfd> fds;
    for (const auto& c : children_) {
      if (c->out_fd >= 0) fds.push_back({c->out_fd, POLLIN, 0});
      if (c->progress_fd >= 0) fds.push_back({c->progress_fd, POLLIN, 0});
    }
    if (fds.empty()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(timeout_ms));
    } else {
      ::poll(fds.data(), fds.size(), timeout_ms);  // EINTR (a signal): handled by the loop
    }
    for (auto& c : children_) read_child(*c);
  }

  void read_child(Child& c) {
    if (c.out_fd >= 0) {
      std::string data;
      bool open = drain(c.out_fd, data);
      if (!data.empty()) {
        c.log << data;
        c.log.flush();
        if (echo_) {
          clear_bar();
          std::fwrite(data.data(), 1, data.size(), stderr);
        }
        c.partial += data;
        std::size_t pos;
        while ((pos = c.partial.find('\n')) != std::string::npos) {
          add_line(c, c.partial.substr(0, pos));
          c.partial.erase(0, pos + 1);
        }
      }
      if (!open) {
        ::close(c.out_fd);
        c.out_fd = -1;
      }
    }
    if (c.progress_fd >= 0) {
      std::string data;
      bool open = drain(c.progress_fd, data);
      c.partial_progress += data;
      std::size_t pos;
      while ((pos = c.partial_progress.find('\n')) != std::string::npos) {
        std::string line = c.partial_progress.substr(0, pos);
        c.partial_progress.erase(0, pos + 1);
        char domain[32];
        long epoch = 0, epochs = 0;
        if (std::sscanf(line.c_str(), "epoch %31s %ld %ld", domain, &epoch, &epochs) == 3)
          c.progress = fmt::format("{} {}/{}", domain, epoch, epochs);
      }
      if (!open) {
        ::close(c.progress_fd);
        c.progress_fd = -1;
      }
    }
  }

  void reap() {
    for (auto it = children_.begin(); it != children_.end();) {
      Child& c = **it;
      int status = 0;
      const pid_t r = ::waitpid(c.pid, &status, WNOHANG);
      if (r == 0 || (r < 0 && errno == EINTR)) {
        ++it;
        continue;
      }
      // Gone: read what is left (a grandchild may hold the pipe open, so do not wait for EOF).
      read_child(c);
      if (!c.partial.empty()) add_line(c, c.partial);
      if (c.out_fd >= 0) ::close(c.out_fd);
      if (c.progress_fd >= 0) ::close(c.progress_fd);
      ::kill(-c.pid, SIGKILL);  // anything the run left behind in its process group
      finish(c, r == c.pid ? status : -1);
      if (c.gpu_slot >= 0) --gpu_load_[static_cast<std::size_t>(c.gpu_slot)];
      it = children_.erase(it);
    }
  }

  void finish(Child& c, int wstatus) {
    std::string tail;
    for (const auto& l : c.tail) tail += l + "\n";
    const int exit_code = wstatus >= 0 && WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
    const int sig = wstatus >= 0 && WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : -1;
    store_.record_exit(c.id, exit_code, sig, tail);
    RunRecord rec = store_.run(c.id);
    const double secs = std::chrono::duration<double>(Clock::now() - c.started).count();
    RunStatus status = RunStatus::kLost;
    std::string reason;
    if (c.timed_out) {
      status = RunStatus::kTimeout;
      reason = fmt::format(
          "exceeded the wall-clock limit of {} s (--timeout) after {:.1f} s; "
          "stopped with {}",
          o_.timeout, secs, signal_text(c.killed_hard ? SIGKILL : SIGTERM));
    } else if (sig > 0) {
      if (is_crash_signal(sig)) {
        status = RunStatus::kCrashed;
        reason = fmt::format("crashed with {}", signal_text(sig));
      } else {
        status = RunStatus::kKilled;
        reason = fmt::format("killed by {}{}", signal_text(sig),
                             c.sent_signal ? " after the sweep was stopped"
                                           : " from outside the sweep (kill, or the kernel's "
                                             "out-of-memory killer)");
      }
    } else if (exit_code == cli::kOutOfMemory) {
      // Ran out of memory before it could record so (loading LibTorch, opening the run).
      status = RunStatus::kOom;
      reason = "ran out of memory before the run could record it";
      for (auto it = c.tail.rbegin(); it != c.tail.rend(); ++it)
        if (it->rfind("error: ", 0) == 0) {
          reason = it->substr(7, 400);
          break;
        }
    } else if (exit_code >= 0) {
      status = RunStatus::kFailed;
      reason = exit_code == 127 && rec.status == to_string(RunStatus::kQueued)
                   ? fmt::format("the run's process could not start (exit code 127): {}",
                                 c.tail.empty() ? "" : c.tail.back())
                   : fmt::format("exited with code {} without a final status{}", exit_code, [&] {
                       // What it said last as an error, else the usual suspects.
                       for (auto it = c.tail.rbegin(); it != c.tail.rend(); ++it)
                         if (it->rfind("error: ", 0) == 0)
                           return ": " + it->substr(7, 300) + open_files_hint();
                       return std::string(
                           " (a plugin called exit(), or the process was ended from "
                           "inside)");
                     }());
    } else {
      status = RunStatus::kLost;
      reason = "the supervisor could not collect the run's exit status";
    }
    if (c.timed_out && rec.status == to_string(RunStatus::kKilled)) {
      store_.finish_run(c.id, status, reason);  // it stopped because we timed it out
    } else if (!store_.finish_open_run(c.id, status, reason)) {
      status = parse_run_status(rec.status);  // the child recorded its own status: keep it
      reason = rec.reason;
    }
    if (is_complete(status)) {
      ++finished_;
      pruned_ += status == RunStatus::kPruned;
      ++done_;
      return;
    }
    ++done_;
    std::string line = fmt::format("run {} {}: {}", c.id, to_string(status), reason);
    failures_.push_back(line);
    clear_bar();
    std::string last;
    if (!echo_ && status != RunStatus::kKilled && !c.tail.empty()) {
      const std::size_t n = std::min<std::size_t>(c.tail.size(), 5);
      for (std::size_t i = c.tail.size() - n; i < c.tail.size(); ++i)
        last += "\n    | " + c.tail[i];
    }
    spdlog::error("[sweep] {}{}{}", line, last.empty() ? "" : "\n  last output:", last);
  }

  void signal_child(Child& c, int sig) {
    c.sent_signal = sig;
    ::kill(-c.pid, sig);  // the whole process group: the run and anything it started
  }

  void begin_stop() {
    stopping_ = true;
    const int sig = stop_signal();
    clear_bar();
    spdlog::warn(
        "[sweep] stopping on {}: {} running run(s) get {} and {} s to finish, {} queued "
        "run(s) are not started",
        signal_text(sig), children_.size(), signal_text(sig), o_.grace, queue_.size());
    for (auto& c : children_) {
      if (c->term_sent) continue;  // already stopping (timeout): keep its grace period
      signal_child(*c, sig);
      c->term_sent = true;
      c->term_at = Clock::now();
    }
    for (std::size_t index : queue_) {
      const int64_t id = ids_[index];
      store_.finish_open_run(
          id, RunStatus::kKilled,
          fmt::format("not started: the sweep was stopped by {}", signal_text(sig)));
      failures_.push_back(fmt::format("run {} killed: not started", id));
    }
    queue_.clear();
  }

  // The sweep cannot go on (an exception): SIGTERM every run, SIGKILL after the grace period,
  // reap them all and record what can still be recorded.
  void abandon() noexcept {
    try {
      clear_bar();
      for (auto& c : children_)
        if (!c->term_sent) {
          signal_child(*c, SIGTERM);
          c->term_sent = true;
          c->term_at = Clock::now();
        }
      const auto until = Clock::now() + std::chrono::duration<double>(o_.grace);
      while (!children_.empty() && Clock::now() < until) {
        wait_for_output(50);
        try {
          reap();
        } catch (...) {
          // Cannot record it (the database failed): the next start marks it lost.
          unrecorded_.push_back(children_.front()->id);
          children_.erase(children_.begin());
        }
      }
      for (auto& c : children_) ::kill(-c->pid, SIGKILL);
      for (auto& c : children_) {
        ::waitpid(c->pid, nullptr, 0);
        try {
          store_.finish_open_run(c->id, RunStatus::kKilled,
                                 "stopped with SIGKILL: the sweep stopped on an error");
        } catch (...) {
          unrecorded_.push_back(c->id);
        }
      }
      children_.clear();
    } catch (...) {
    }
  }

  void enforce_limits() {
    const auto now = Clock::now();
    for (auto& c : children_) {
      if (o_.timeout > 0 && !c->term_sent &&
          std::chrono::duration<double>(now - c->started).count() > o_.timeout) {
        c->timed_out = true;
        c->term_sent = true;
        c->term_at = now;
        signal_child(*c, SIGTERM);
        spdlog::warn("[sweep] run {} exceeded its {} s limit: SIGTERM, then SIGKILL after {} s",
                     c->id, o_.timeout, o_.grace);
      }
      if (c->term_sent && !c->killed_hard &&
          std::chrono::duration<double>(now - c->term_at).count() > o_.grace) {
        c->killed_hard = true;
        signal_child(*c, SIGKILL);
      }
    }
  }

  void draw_bar() {
    if (!tty_) return;
    const auto now = Clock::now();
    if (now - last_bar_ < std::chrono::milliseconds(200)) return;
    last_bar_ = now;
    const std::size_t width = 24;
    const std::size_t filled = to_run_ ? width * done_ / to_run_ : width;
    std::string bar = "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    std::string eta = done_ ? format_duration(elapsed / done_ * (to_run_ - done_)) : "?";
    std::vector<std::string> running;
    for (const auto& c : children_)
      running.push_back(
          fmt::format("#{} {}", c->id, c->progress.empty() ? "starting" : c->progress));
    std::string line =
        fmt::format("{} {}/{} runs, {} failed, {} running{}{} | {} elapsed, ETA {}", bar, done_,
                    to_run_, done_ - finished_, children_.size(), running.empty() ? "" : ": ",
                    join(running, ", "), format_duration(elapsed), eta);
    if (line.size() > 160) line = line.substr(0, 157) + "...";
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
    std::fflush(stderr);
    bar_shown_ = true;
  }

  void clear_bar() {
    if (!bar_shown_) return;
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
    bar_shown_ = false;
  }

  const std::vector<RunSpec>& specs_;
  PluginLoader& loader_;
  Store& store_;
  const SweepOptions& o_;
  std::string exe_;
  bool tty_ = false, echo_ = false, stopping_ = false, bar_shown_ = false, fork_only_ = false;
  int jobs_ = 1, threads_ = 1;
  std::vector<int> gpu_load_;
  std::vector<int64_t> ids_;
  std::vector<int64_t> unrecorded_;  // runs whose end could not be written (abandon)
  std::deque<std::size_t> queue_;
  std::vector<std::unique_ptr<Child>> children_;
  std::vector<std::string> failures_;
  std::size_t finished_ = 0, pruned_ = 0, done_ = 0, launched_ = 0, to_run_ = 0;
  Clock::time_point start_, last_bar_;
};

// xxh3 of a weights file, remembered by path, size and modification time (a sweep asks for the
// same file once per run).
std::string weights_file_hash(const fs::path& p) {
  static std::mutex mu;
  static std::map<std::string, std::pair<std::string, std::string>> cache;  // path -> stamp, hash
  std::error_code ec;
  const auto size = fs::file_size(p, ec);
  const auto time = fs::last_write_time(p, ec).time_since_epoch().count();
  const std::string stamp = fmt::format("{} {}", size, time);
  std::lock_guard<std::mutex> lock(mu);
  auto& entry = cache[p.string()];
  if (entry.first != stamp) entry = {stamp, hash_file(p)};
  return entry.second;
}

}  // namespace

std::string run_key(const RunSpec& spec, PluginLoader& loader) {
  std::string text = fmt::format("tlab run key v1, tlab {}\n{}", TLAB_VERSION, spec.config_toml);
  // Weight files by content: converting a file again makes new runs. ("run:<id>" names a
  // finished run, whose files do not change; a missing file fails the run when it starts.)
  for (const auto& [what, w] : {std::pair{"backbone", &spec.backbone.weights},
                                std::pair{"adapters", &spec.adapter_weights}}) {
    if (w->empty() || w->rfind("run:", 0) == 0) continue;
    std::error_code ec;
    const fs::path p = fs::absolute(*w, ec);
    if (!ec && fs::is_regular_file(p, ec))
      text += fmt::format("\nweights {} {}", what, weights_file_hash(p));
  }
  auto add = [&](Kind kind, const std::string& name) {
    text +=
        fmt::format("\nplugin {} {} {}", kind_name(kind), name, loader.get(kind, name).file_hash);
  };
  if (spec.source) add(Kind::Dataset, spec.source->plugin);
  add(Kind::Dataset, spec.target.plugin);
  add(Kind::Backbone, spec.backbone.plugin);
  for (const auto& a : spec.adapters) add(Kind::Adapter, a.plugin);
  add(Kind::Strategy, spec.strategy.plugin);
  // A run under ASHA may end pruned: it is the same run only for the same pruner and bracket
  // (a resumed search), never for a sweep without one (which must train it to the end).
  if (const auto asha = asha_of(spec.search_json))
    text += fmt::format("\nasha {} {} {}", asha->min_epochs, asha->reduction, asha->bracket);
  return hash_string(text);
}

std::vector<std::string> mark_lost_runs(Store& store, double stale_seconds) {
  std::vector<std::string> marked;
  const std::string host = host_name(), boot = boot_id();
  for (const OpenRun& r : store.open_runs(host)) {
    // Its process, not merely its pid: pids are reused (soon after a reboot, above all).
    const bool alive = r.pid > 0 && (::kill(static_cast<pid_t>(r.pid), 0) == 0 || errno == EPERM) &&
                       (r.boot_id.empty() || r.boot_id == boot) &&
                       (r.pid_start < 0 || process_start_ticks(r.pid) == r.pid_start);
    if (alive || r.heartbeat_age < stale_seconds) continue;
    const std::string reason = fmt::format(
        "{} run's process {} on {} is gone and its last heartbeat is {:.0f} s old: its "
        "supervisor or the machine died",
        r.status == to_string(RunStatus::kQueued) ? "the queued" : "the", r.pid, host,
        r.heartbeat_age);
    if (store.finish_open_run(r.id, RunStatus::kLost, reason))
      marked.push_back(fmt::format("run {} lost: {}", r.id, reason));
  }
  return marked;
}

SweepResult run_sweep(const std::vector<RunSpec>& specs, PluginLoader& loader, Store& store,
                      const SweepOptions& options) {
  Supervisor supervisor(specs, loader, store, options);
  return supervisor.run();
}

int run_child(const fs::path& db, int64_t id, int threads, PluginLoader& loader, bool shard,
              bool install_handlers, bool srun_ranks) {
  if (install_handlers) install_stop_handlers(/*second_signal_ends=*/false);
  if (install_handlers) install_out_of_memory_crash_handler();
  const Store::Journal journal = shard ? Store::Journal::kRollback : Store::Journal::kWal;
  Store store(db, /*create=*/false, Store::kBusyTimeout, journal);
  try {
    configure_threads(threads);  // LibTorch's thread pool reads /proc/cpuinfo: may fail (EMFILE)
  } catch (const OutOfMemoryError& e) {
    if (store.start_run(id, getpid(), "", "")) store.finish_run(id, RunStatus::kOom, e.what());
    spdlog::error("[runner] run {} oom: {}", id, e.what());
    return 1;
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (const auto cut = what.find('\n'); cut != std::string::npos) what.resize(cut);
    const std::string reason =
        fmt::format("LibTorch could not start its threads: {}{}", what, open_files_hint());
    if (store.start_run(id, getpid(), "", "")) store.finish_run(id, RunStatus::kFailed, reason);
    spdlog::error("[runner] run {} failed: {}", id, reason);
    return 1;
  }
  RunRecord rec = store.run(id);
  // Under SLURM: which job and array task executes the run (provenance, kept by the merge).
  if (const char* job = std::getenv("SLURM_JOB_ID"); job && *job) {
    const char* array = std::getenv("SLURM_ARRAY_JOB_ID");
    const char* task = std::getenv("SLURM_ARRAY_TASK_ID");
    store.set_job(
        id, array && task ? fmt::format("slurm {}_{}", array, task) : fmt::format("slurm {}", job));
  }
  RunSpec spec;
  try {
    spec = load_resolved_run(rec.config_toml, rec.experiment, loader);
    spec.search_json = rec.search;  // part of the run key under ASHA
    if (spec.config_hash != rec.config_hash)
      throw ConfigError(fmt::format(
          "the run's resolved config changed between queueing and start (hash {} then {}): "
          "was a plugin rebuilt with other parameters? Run the sweep again",
          rec.config_hash, spec.config_hash));
    if (!rec.run_key.empty() && run_key(spec, loader) != rec.run_key)
      throw ConfigError(fmt::format(
          "the plugins, a weights file or tlab changed between queueing and start (run key {} "
          "then {}): a plugin was rebuilt or weights rewritten during the sweep; run the sweep "
          "again once they are done",
          rec.run_key, run_key(spec, loader)));
  } catch (const std::exception& e) {
    if (store.start_run(id, getpid(), "", "")) store.finish_run(id, RunStatus::kFailed, e.what());
    spdlog::error("[runner] run {} failed: {}", id, e.what());
    return 1;
  }
  spec.overrides = rec.override_args;
  spec.overrides_json = rec.overrides;
  spec.processes = rec.processes;  // [run], outside the resolved config: from the run's row
  if (!rec.backend.empty()) spec.backend = rec.backend;
  spec.collective_timeout = rec.collective_timeout;

  // The heartbeat, from its own connection: it shows the process is alive even during a long
  // epoch; the supervisor and the next start judge liveness by it.
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  std::thread beat([&] {
    try {
      Store own(db, /*create=*/false, Store::kBusyTimeout, journal);
      const auto interval = std::chrono::duration<double>(heartbeat_interval());
      std::unique_lock<std::mutex> lock(m);
      while (!cv.wait_for(lock, interval, [&] { return done; })) {
        lock.unlock();
        own.heartbeat(id);
        lock.lock();
      }
    } catch (const std::exception& e) {
      spdlog::warn("[runner] heartbeat of run {} stopped: {}", id, e.what());
    }
  });
  RunOptions options;
  options.results_dir = fs::path(rec.run_dir).parent_path().parent_path();
  options.threads = threads;
  options.verbose = true;  // epoch lines at info level: they go to the run's output.log
  options.run_id = id;
  options.srun_ranks = srun_ranks;
  if (const char* g = std::getenv("TLAB_ASSIGNED_GPU"); g && *g) {
    // The supervisor gave this run one GPU: it is the only one visible, as cuda:0.
    options.gpu = g;
    if (spec.device.rfind("cuda", 0) == 0) spec.device = "cuda:0";
  }
  RunOutcome out;
  try {
    out = execute_run(spec, loader, store, options);
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(m);
      done = true;
    }
    cv.notify_all();
    beat.join();
    throw;
  }
  {
    std::lock_guard<std::mutex> lock(m);
    done = true;
  }
  cv.notify_all();
  beat.join();
  if (is_complete(out.status)) return 0;
  if (stop_signal()) return 128 + stop_signal();
  return 1;
}

int run_rank(const fs::path& db, int64_t id, int rank, int world, int64_t timeout_ms, int threads,
             PluginLoader& loader, bool shard) {
  install_stop_handlers(/*second_signal_ends=*/false);
  RunSpec spec;
  RunRecord rec;
  std::shared_ptr<Distributed> dist;
  try {
    {
      Store store(db, /*create=*/false, Store::kBusyTimeout,
                  shard ? Store::Journal::kRollback : Store::Journal::kWal);
      rec = store.run(id);
    }
    DistributedOptions o;
    o.world = world;
    o.backend = rec.backend.empty() ? "gloo" : rec.backend;
    o.timeout = std::chrono::milliseconds(
        timeout_ms > 0 ? timeout_ms : static_cast<int64_t>(rec.collective_timeout * 1000));
    o.store = fs::path(rec.run_dir) / "c10d.store";
    o.loopback =
        std::getenv("SLURM_NNODES") == nullptr || std::atoi(std::getenv("SLURM_NNODES")) <= 1;
    dist = Distributed::join(o, rank);  // first: rank 0 waits for every rank to connect
    configure_threads(threads);
    spec = load_resolved_run(rec.config_toml, rec.experiment, loader);
    spec.search_json = rec.search;
    if (spec.config_hash != rec.config_hash)
      throw ConfigError(
          fmt::format("rank {}: run {}'s resolved config does not load as rank 0's "
                      "(hash {} then {})",
                      rank, id, rec.config_hash, spec.config_hash));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  spec.overrides = rec.override_args;
  spec.overrides_json = rec.overrides;
  // This rank records nothing of its own: a scratch database and folder beside rank 0's run.
  const fs::path scratch = fs::path(rec.run_dir) / "ranks" / fmt::format("rank{}", rank);
  std::error_code ec;
  fs::remove_all(scratch, ec);
  Store own(scratch / "rank.db", /*create=*/true);
  RunOptions options;
  options.results_dir = scratch;
  options.threads = threads;
  options.verbose = true;
  options.dist = dist;
  const RunOutcome out = execute_run(spec, loader, own, options);
  if (is_complete(out.status)) return 0;
  std::fprintf(stderr, "error: rank %d: %s\n", rank, out.reason.c_str());
  return out.status == RunStatus::kKilled ? 128 + SIGTERM : 1;
}

}  // namespace tlab
