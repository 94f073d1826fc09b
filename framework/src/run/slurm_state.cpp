#include "run/slurm_state.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "results/merge.hpp"
#include "run/heartbeat.hpp"
#include "run/signals.hpp"
#include "store/sqlite.hpp"
#include "tlab/sdk/files.hpp"
#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab::slurm {
namespace {

constexpr const char* kExecFailed = "tlab: cannot execute ";

}  // namespace

namespace detail {

// --- Running SLURM's commands ----------------------------------------------------------------

/// Runs `argv` (searched on PATH) with stdin from /dev/null; returns its exit code and output.
Output run_program(const std::vector<std::string>& argv) {
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw SlurmError(fmt::format("pipe: {}", strerror(errno)));
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    throw SlurmError(fmt::format("pipe: {}", strerror(errno)));
  }
  std::vector<std::string> args = argv;
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  const std::string failed = kExecFailed + argv[0] + "\n";
  const pid_t pid = ::fork();
  if (pid < 0) {
    for (int fd : {out[0], out[1], err[0], err[1]}) ::close(fd);
    throw SlurmError(fmt::format("cannot start {}: fork failed: {}", argv[0], strerror(errno)));
  }
  if (pid == 0) {
    ::setpgid(0, 0);  // Ctrl-C is for tlab (which stops waiting), not for squeue mid-answer
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(err[1], STDERR_FILENO);
    ::execvp(cargs[0], cargs.data());
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, failed.data(), failed.size());
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  Output r;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  int open = 2;
  while (open > 0) {
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) break;
    for (auto& f : fds) {
      if (f.fd < 0 || !(f.revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      const ssize_t n = ::read(f.fd, buf, sizeof buf);
      if (n > 0) {
        (f.fd == out[0] ? r.out : r.err).append(buf, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(f.fd);
        f.fd = -1;
        --open;
      }
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (r.code == 127 && r.err.rfind(kExecFailed, 0) == 0)
    throw SlurmError(fmt::format(
        "'{}' was not found on PATH: the SLURM launcher needs SLURM's commands (sbatch, squeue, "
        "scancel; sacct where accounting runs). Run tlab on a cluster login node, install them "
        "(Debian: apt-get install slurm-client), or run the sweep locally (launcher.name = "
        "\"local\")",
        argv[0]));
  return r;
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

std::string utc_stamp(const char* format) {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// --- The sweep folder ------------------------------------------------------------------------

fs::path manifest_path(const fs::path& dir) { return dir / "sweep.json"; }

json read_manifest(const fs::path& dir) {
  std::ifstream in(manifest_path(dir));
  if (!in)
    throw SlurmError(fmt::format(
        "'{}' is not a sweep folder: it has no sweep.json; list the sweeps with: tlab sweep list",
        dir.string()));
  json m = json::parse(in, nullptr, /*allow_exceptions=*/false);
  auto well_formed = [&] {
    if (m.is_discarded() || !m.is_object() || m.value("format", 0) != kManifestFormat) return false;
    if (!m.contains("tasks") || !m["tasks"].is_array() || !m.contains("submissions") ||
        !m["submissions"].is_array())
      return false;
    for (const auto& t : m["tasks"])
      if (!t.is_object() || !t.contains("config_toml") || !t["config_toml"].is_string())
        return false;
    for (const auto& sub : m["submissions"]) {
      if (!sub.is_object() || !sub.contains("n") || !sub["n"].is_number_integer() ||
          !sub.contains("job") || !sub["job"].is_string() || !sub.contains("tasks") ||
          !sub["tasks"].is_array())
        return false;
      for (const auto& t : sub["tasks"])
        if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
            t.get<std::size_t>() >= m["tasks"].size())
          return false;
    }
    for (const char* key : {"collected", "cancelled"})
      if (m.contains(key) && !m[key].is_array()) return false;
    return true;
  };
  if (!well_formed())
    throw SlurmError(fmt::format(
        "'{}' is damaged or was written by another tlab version (expected format {}); its shards "
        "can still be merged by hand: tlab results merge {}/shards/*.db --into DB",
        manifest_path(dir).string(), kManifestFormat, dir.string()));
  return m;
}

void write_manifest(const fs::path& dir, const json& m) {
  // Durable and atomic: readers see the old or the new manifest, and it survives a crash.
  write_file_atomic(manifest_path(dir), m.dump(2) + "\n");
}

SweepLock::SweepLock(const fs::path& dir) {
  fd_ = ::open((dir / "sweep.lock").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw SlurmError(
        fmt::format("cannot open '{}': {}", (dir / "sweep.lock").string(), strerror(errno)));
  // Polled, so that Ctrl-C (or SIGTERM) still ends a tlab waiting for another one.
  const auto start = std::chrono::steady_clock::now();
  bool told = false;
  while (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) {
      const int error = errno;
      ::close(fd_);
      throw SlurmError(
          fmt::format("cannot lock '{}': {}", (dir / "sweep.lock").string(), strerror(error)));
    }
    if (stop_signal()) {
      ::close(fd_);
      throw SlurmError(
          fmt::format("stopped while waiting for another tlab working on sweep "
                      "'{}'",
                      dir.filename().string()));
    }
    if (!told && std::chrono::steady_clock::now() - start > std::chrono::seconds(2)) {
      spdlog::info(
          "[slurm] waiting for another tlab working on sweep {} (collect, cancel or "
          "submit)",
          dir.filename().string());
      told = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

SweepLock::~SweepLock() { ::close(fd_); }

fs::path shard_path(const fs::path& dir, int task, int submission) {
  return dir / "shards" / fmt::format("{}.{}.db", task, submission);
}
fs::path log_path(const fs::path& dir, int task, int submission) {
  return dir / "logs" / fmt::format("{}.{}.out", task, submission);
}

ShardView read_shard(const fs::path& path) {
  ShardView v;
  std::error_code ec;
  if (!fs::exists(path, ec)) return v;
  v.exists = true;
  // Read-write when allowed, so that a journal left by a task killed mid-write is rolled back
  // (a read-only connection cannot); only SELECT runs. Read-only otherwise.
  for (int flags : {SQLITE_OPEN_READWRITE, SQLITE_OPEN_READONLY}) {
    try {
      sqlite::Database db(path.string(), flags, std::chrono::milliseconds(5000));
      const sqlite::StatementHandle handle = db.prepare(
          "SELECT status, reason, uuid, (julianday('now') - julianday(COALESCE(heartbeat_at, "
          "created_at))) * 86400.0 FROM runs ORDER BY id LIMIT 1");
      sqlite::Statement q(db, handle.get());
      if (!q.step()) {
        v.error = "it holds no run";
        continue;
      }
      v.error.clear();
      v.status = q.text_at(0);
      v.reason = q.text_at(1);
      v.uuid = q.text_at(2);
      if (q.type_at(3) != SQLITE_NULL) v.heartbeat_age = q.real_at(3);
      break;
    } catch (const sqlite::Failure& e) {
      v.error = e.what();
    }
  }
  return v;
}

/// The last `lines` lines of a text file ("" when unreadable).
std::string tail_of(const fs::path& path, std::size_t lines) {
  std::ifstream in(path);
  std::vector<std::string> kept;
  for (std::string line; std::getline(in, line);) {
    kept.push_back(line.size() > 400 ? line.substr(0, 400) + " ..." : line);
    if (kept.size() > lines) kept.erase(kept.begin());
  }
  std::string out;
  for (const auto& l : kept) out += l + "\n";
  return out;
}

// --- SLURM's view ----------------------------------------------------------------------------

/// SLURM's state of every task of `jobs`: squeue (which keeps ended jobs for MinJobAge), then
/// sacct for the tasks squeue no longer lists (where accounting runs).
SlurmStates query_slurm(const std::vector<std::string>& jobs,
                        const std::vector<std::string>& tasks) {
  SlurmStates states;
  if (jobs.empty()) return states;
  Output q = run_program({"squeue", "-h", "-r", "--states=all", "--me", "-o", "%F|%K|%T|%r"});
  if (q.code != 0)
    throw SlurmError(fmt::format(
        "squeue failed (exit code {}): {}; is the SLURM controller reachable (scontrol ping)?",
        q.code, trim(q.err)));
  states = parse_squeue(q.out);
  const bool missing = std::any_of(tasks.begin(), tasks.end(),
                                   [&](const std::string& t) { return !states.count(t); });
  if (missing) {
    Output a = run_program({"sacct", "-n", "-P", "-X", "-j", join(jobs, ","), "-o", "JobID,State"});
    if (a.code == 0)  // accounting disabled: sacct fails, squeue is all there is
      for (auto& [task, state] : parse_sacct(a.out)) states.emplace(task, state);
  }
  return states;
}

SweepState state_of(const fs::path& dir, const json& m) {
  SweepState st;
  st.dir = dir;
  st.name = m.value("name", dir.filename().string());
  st.experiment = m.value("experiment", "");
  std::set<std::string> collected, cancelled;
  for (const auto& c : m.value("collected", json::array())) collected.insert(c.get<std::string>());
  for (const auto& c : m.value("cancelled", json::array())) cancelled.insert(c.get<std::string>());
  std::vector<std::string> jobs, tasks;
  for (const auto& s : m["submissions"]) {
    const int k = s.value("n", 0);
    const std::string job = s.value("job", "");
    jobs.push_back(job);
    for (const auto& t : s["tasks"]) {
      TaskState a;
      a.task = t.get<int>();
      a.submission = k;
      a.job = fmt::format("{}_{}", job, a.task);
      const json& def = m["tasks"].at(static_cast<std::size_t>(a.task));
      std::vector<std::string> args = def.value("override_args", std::vector<std::string>{});
      a.overrides = args.empty() ? "(no overrides)" : join(args, " ");
      a.run_key = def.value("run_key", "");
      a.shard = shard_path(dir, a.task, k);
      a.log = log_path(dir, a.task, k);
      a.collected = collected.count(fmt::format("{}.{}", a.task, k)) > 0;
      if (!a.collected) tasks.push_back(a.job);
      st.attempts.push_back(std::move(a));
    }
  }
  st.jobs = join(jobs, ",");
  const SlurmStates slurm = tasks.empty() ? SlurmStates{} : query_slurm(jobs, tasks);
  for (TaskState& a : st.attempts) {
    const ShardView shard = read_shard(a.shard);
    if (a.collected) {  // its shard holds the final verdict
      a.state = shard.status;
      a.reason = shard.reason;
      continue;
    }
    auto found = slurm.find(a.job);
    if (found != slurm.end()) a.slurm = found->second.first;
    if (!shard.exists) {
      a.state = "lost";
      a.reason =
          fmt::format("its shard '{}' is missing: was the sweep folder cleaned?", a.shard.string());
      continue;
    }
    if (!shard.error.empty()) {  // busy, or a network filesystem hiccup: ask again later
      a.state = "unreadable";
      a.reason = fmt::format("its shard '{}' cannot be read now ({}); collect again later",
                             a.shard.string(), shard.error);
      continue;
    }
    std::tie(a.state, a.reason) =
        resolve_state(shard.status, shard.reason, shard.heartbeat_age, a.slurm,
                      found == slurm.end() ? "" : found->second.second);
    if ((a.state == "killed" || a.state == "lost") &&
        cancelled.count(fmt::format("{}.{}", a.task, a.submission))) {
      a.state = "cancelled";
      a.reason = "cancelled with `tlab sweep cancel`";
    }
    if (a.state == "failed" && shard.status != "failed")
      a.reason += fmt::format("; see its output: {}", a.log.string());
  }
  std::stable_sort(st.attempts.begin(), st.attempts.end(),
                   [](const TaskState& a, const TaskState& b) {
                     return std::pair(a.task, a.submission) < std::pair(b.task, b.submission);
                   });
  return st;
}

bool is_open(const std::string& state) { return state == "pending" || state == "running"; }

/// Not ended, or not known to have ended: never merged or retried.
bool unsettled(const std::string& state) { return is_open(state) || state == "unreadable"; }

bool retryable(const std::string& state) {
  return state == "failed" || state == "crashed" || state == "timeout" || state == "oom" ||
         state == "node_fail" || state == "lost";
}

std::string counts_text(const SweepState& st) {
  std::vector<std::string> parts;
  const auto counts = st.counts();
  for (const char* s : {"finished", "running", "pending", "failed", "crashed", "diverged", "oom",
                        "timeout", "cancelled", "node_fail", "lost", "killed"}) {
    if (auto f = counts.find(s); f != counts.end() && f->second) {
      parts.push_back(fmt::format("{} {}", f->second, s));
    }
  }
  return join(parts, ", ");
}

}  // namespace detail

using namespace detail;

// --- Pieces ----------------------------------------------------------------------------------

std::pair<std::string, std::string> resolve_state(const std::string& shard_status,
                                                  const std::string& shard_reason,
                                                  double heartbeat_age,
                                                  const std::string& slurm_state,
                                                  const std::string& slurm_reason) {
  const std::string s = slurm_state.substr(0, slurm_state.find(' '));  // "CANCELLED by 0"
  const std::string why =
      slurm_reason.empty() || slurm_reason == "None" ? "" : " (" + slurm_reason + ")";
  // While SLURM runs the task, its process may still write the shard: it is running, whatever
  // the shard says (e.g. cancelled by `tlab sweep cancel` just as it started).
  if (s == "PENDING" || s == "CONFIGURING" || s == "REQUEUED" || s == "REQUEUE_HOLD" ||
      s == "REQUEUE_FED" || s == "RESV_DEL_HOLD")
    return {"pending", "waiting in SLURM's queue" + why};
  if (s == "RUNNING" || s == "COMPLETING" || s == "STAGE_OUT" || s == "SIGNALING" ||
      s == "SUSPENDED" || s == "STOPPED")
    return {"running", s == "RUNNING" ? "" : "SLURM state " + s};
  // What the run recorded itself, when it got that far, is the most precise.
  if (shard_status == "finished" || shard_status == "failed" || shard_status == "crashed" ||
      shard_status == "diverged" || shard_status == "oom" || shard_status == "cancelled" ||
      shard_status == "timeout" || shard_status == "node_fail" || shard_status == "pruned")
    return {shard_status, shard_reason};
  if (s == "CANCELLED" || s == "REVOKED" || s == "DEADLINE")
    return {"cancelled", fmt::format("cancelled in SLURM ({}{}){}", slurm_state,
                                     shard_status == "queued" ? ", before it started" : "", why)};
  if (s == "PREEMPTED")  // the script asks for --no-requeue: retry it with --retry-failed
    return {"lost", "preempted by SLURM" + why + "; resubmit with --retry-failed"};
  if (s == "TIMEOUT")
    return {"timeout", "exceeded SLURM's time limit (launcher.time); raise it or shorten the run"};
  if (s == "NODE_FAIL" || s == "BOOT_FAIL")
    return {"node_fail", fmt::format("the node running it failed (SLURM state {}); retry with: "
                                     "tlab sweep collect SWEEP --retry-failed",
                                     s)};
  if (s == "OUT_OF_MEMORY")
    return {"oom", "SLURM ended it for exceeding its memory limit (launcher.mem); raise it"};
  if (s == "COMPLETED" || s == "FAILED") {
    if (shard_status == "killed" || shard_status == "lost") return {shard_status, shard_reason};
    return {"failed", fmt::format("the task ended (SLURM state {}) without the run recording a "
                                  "final status{}",
                                  s, shard_status == "queued" ? ": tlab never started" : "")};
  }
  // SLURM does not know the task (any more): judge by the shard alone.
  if (shard_status == "killed" || shard_status == "lost") return {shard_status, shard_reason};
  if (shard_status == "running" && heartbeat_age < 3 * heartbeat_interval())
    return {"running", "SLURM no longer lists the task, but its heartbeat is fresh"};
  return {"lost", shard_status == "queued"
                      ? "SLURM no longer lists the task and it never started (cancelled or "
                        "purged before it ran)"
                      : fmt::format("SLURM no longer lists the task and its last heartbeat is "
                                    "{:.0f} s old",
                                    heartbeat_age)};
}

SlurmStates parse_squeue(const std::string& out) {
  SlurmStates states;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f;
    std::istringstream fields(line);
    for (std::string x; std::getline(fields, x, '|');) f.push_back(trim(x));
    if (f.size() < 3 || f[1].empty() || f[1].find_first_not_of("0123456789") != std::string::npos)
      continue;  // not an array task ("N/A"), or a pending range not expanded
    states[f[0] + "_" + f[1]] = {f[2], f.size() > 3 ? f[3] : ""};
  }
  return states;
}

SlurmStates parse_sacct(const std::string& out) {
  SlurmStates states;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    const auto bar = line.find('|');
    if (bar == std::string::npos) continue;
    const std::string id = trim(line.substr(0, bar));
    const auto underscore = id.find('_');
    if (underscore == std::string::npos ||
        id.find_first_not_of("0123456789", underscore + 1) != std::string::npos)
      continue;  // "12_[3-5]": tasks not started, squeue lists them
    states[id] = {trim(line.substr(bar + 1)), ""};
  }
  return states;
}

// --- Sweeps ----------------------------------------------------------------------------------

std::vector<const TaskState*> SweepState::latest() const {
  std::map<int, const TaskState*> last;
  for (const auto& a : attempts) last[a.task] = &a;  // attempts are in submission order
  std::vector<const TaskState*> out;
  for (const auto& [task, a] : last) out.push_back(a);
  return out;
}

std::map<std::string, std::size_t> SweepState::counts() const {
  std::map<std::string, std::size_t> c;
  for (const TaskState* a : latest()) ++c[a->state];
  return c;
}

fs::path sweeps_dir(const fs::path& db) {
  const fs::path parent = fs::absolute(db).parent_path();
  return parent / "sweeps";
}

fs::path sweep_database(const fs::path& dir) {
  std::ifstream in(manifest_path(dir));
  const json m = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (m.is_discarded() || !m.is_object() || !m.contains("db") || !m["db"].is_string()) return {};
  return m["db"].get<std::string>();
}

namespace {
bool same_file(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  return fs::weakly_canonical(a, ec) == fs::weakly_canonical(b, ec);
}
}  // namespace

std::vector<fs::path> list_sweeps(const fs::path& db) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(sweeps_dir(db), ec)) {
    if (!e.is_directory() || !fs::exists(manifest_path(e.path()))) continue;
    // Sweeps of another database in the same folder (results/a.db, results/b.db) are not ours.
    const fs::path owner = sweep_database(e.path());
    if (owner.empty() || same_file(owner, db)) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());  // names start with the UTC time
  return out;
}

fs::path find_sweep(const fs::path& db, const std::string& name) {
  const auto all = list_sweeps(db);
  if (name.empty()) {
    if (all.empty())
      throw SlurmError(fmt::format(
          "no sweeps in '{}'; launch one with: tlab run EXPERIMENT -m ... --launcher slurm "
          "--db {}",
          sweeps_dir(db).string(), db.string()));
    return all.back();
  }
  std::error_code ec;
  if (fs::exists(manifest_path(name), ec)) {
    const fs::path owner = sweep_database(name);
    if (!owner.empty() && !same_file(owner, db))
      throw SlurmError(
          fmt::format("sweep '{}' belongs to the database '{}', not '{}'; pass "
                      "--db {}",
                      name, owner.string(), db.string(), owner.string()));
    return fs::absolute(name);
  }
  std::vector<std::string> names;
  for (const auto& p : all) {
    names.push_back(p.filename().string());
    if (p.filename() == name) return p;
  }
  // A unique prefix is enough ("20261123-1930").
  std::vector<fs::path> matches;
  for (const auto& p : all)
    if (p.filename().string().rfind(name, 0) == 0) matches.push_back(p);
  if (matches.size() == 1) return matches.front();
  throw SlurmError(fmt::format("no sweep '{}' in '{}'{}; the sweeps there: {}", name,
                               sweeps_dir(db).string(),
                               matches.size() > 1 ? " (the prefix names several)" : "",
                               names.empty() ? "none" : join(names, ", ")));
}

SweepState sweep_status(const fs::path& dir) { return state_of(dir, read_manifest(dir)); }

std::string format_status(const SweepState& st) {
  std::string out = fmt::format("sweep {}: {}, {} task(s), SLURM job(s) {}\n", st.name,
                                st.experiment, st.latest().size(), st.jobs);
  out += "  " + counts_text(st) + "\n\n";
  std::size_t w = 9;
  for (const TaskState* t : st.latest()) w = std::max(w, t->overrides.size());
  w = std::min<std::size_t>(w, 48);
  out += fmt::format("{:<5} {:<4} {:<12} {:<10} {:<{}} {}\n", "task", "try", "job", "state",
                     "overrides", w, "reason");
  std::size_t collected = 0, ended = 0;
  for (const TaskState* t : st.latest()) {
    std::string reason = t->reason;
    if (!t->slurm.empty() && !is_open(t->state) && t->state != "finished")
      reason += fmt::format(" [SLURM: {}]", t->slurm);
    out += fmt::format("{:<5} {:<4} {:<12} {:<10} {:<{}} {}\n", t->task, t->submission, t->job,
                       t->state, t->overrides, w, reason);
    if (!unsettled(t->state)) ++ended;
    if (t->collected) ++collected;
  }
  if (ended > collected)
    out +=
        fmt::format("\n{} ended task(s) not yet in the results database: tlab sweep collect {}\n",
                    ended - collected, st.name);
  return out;
}

std::vector<std::string> cancel_sweep(const fs::path& dir, const std::vector<int>& tasks) {
  SweepLock lock(dir);
  json m = read_manifest(dir);
  const SweepState st = state_of(dir, m);
  for (int task : tasks)
    if (task < 0 || task >= static_cast<int>(st.latest().size()))
      throw std::invalid_argument(fmt::format("sweep {} has no task {}; its tasks are 0 to {}",
                                              st.name, task, st.latest().size() - 1));
  std::vector<const TaskState*> chosen;
  std::vector<std::string> ids;
  for (const TaskState* t : st.latest()) {
    if (!is_open(t->state)) continue;
    if (!tasks.empty() && std::find(tasks.begin(), tasks.end(), t->task) == tasks.end()) continue;
    chosen.push_back(t);
    ids.push_back(t->job);
  }
  if (ids.empty()) return ids;
  // SLURM forgets a pending array task once cancelled (without accounting, nothing lists it
  // again): the sweep remembers the cancellation first. It only names a task that then ends
  // killed or never starts; one that finishes anyway stays finished.
  for (const TaskState* t : chosen)
    m["cancelled"].push_back(fmt::format("{}.{}", t->task, t->submission));
  write_manifest(dir, m);
  std::vector<std::string> argv = {"scancel"};
  argv.insert(argv.end(), ids.begin(), ids.end());
  const Output r = run_program(argv);
  if (r.code != 0)  // e.g. a task ended meanwhile: the others are cancelled all the same
    spdlog::warn("[slurm] scancel {} exited with code {}: {}", join(ids, " "), r.code, trim(r.err));
  // The shard of a task that never started says so at once. A running task records "killed"
  // itself; SLURM's CANCELLED refines it.
  for (const TaskState* t : chosen) {
    if (t->state != "pending") continue;
    try {
      Store shard(t->shard, /*create=*/false, Store::kBusyTimeout, Store::Journal::kRollback);
      shard.finish_open_run(1, RunStatus::kCancelled,
                            "cancelled with `tlab sweep cancel` before it started");
    } catch (const std::exception& e) {
      spdlog::warn("[slurm] task {}: {}", t->task, e.what());
    }
  }
  return ids;
}

CollectReport collect_sweep(const fs::path& dir, Store& store) {
  SweepLock lock(dir);
  json m = read_manifest(dir);
  const SweepState st = state_of(dir, m);
  CollectReport report;
  report.state = st;
  std::vector<fs::path> to_merge;
  std::vector<std::string> newly;
  const auto latest = st.latest();
  for (const TaskState& a : st.attempts) {
    const bool is_latest = std::find(latest.begin(), latest.end(), &a) != latest.end();
    if (unsettled(a.state)) {
      report.open += is_latest;
      continue;
    }
    if (is_latest && a.state != "finished")
      report.lines.push_back(
          fmt::format("task {} ({}) {}: {}", a.task, a.overrides, a.state, a.reason));
    if (a.collected) {
      ++report.already;
      const ShardView v = read_shard(a.shard);
      if (!v.uuid.empty()) report.uuids.push_back(v.uuid);
      continue;
    }
    std::error_code ec;
    if (!fs::exists(a.shard, ec)) continue;  // reported as lost above
    // SLURM's verdict goes into the shard before it is merged: cancelled, timeout, node_fail.
    Store shard(a.shard, /*create=*/false, Store::kBusyTimeout, Store::Journal::kRollback);
    RunRecord rec = shard.run(1);
    if (rec.status != a.state) {
      const RunStatus status = parse_run_status(a.state);
      if (!shard.finish_open_run(1, status, a.reason)) shard.finish_run(1, status, a.reason);
    }
    if (rec.stderr_tail.empty()) {
      const std::string tail = tail_of(a.log, 20);
      if (!tail.empty()) shard.record_exit(1, rec.exit_code, rec.signal, tail);
    }
    report.uuids.push_back(rec.uuid);
    to_merge.push_back(a.shard);
    newly.push_back(fmt::format("{}.{}", a.task, a.submission));
  }
  if (!to_merge.empty()) {
    const MergeReport merged = merge_databases(to_merge, store.path());
    for (const auto& input : merged.inputs) {
      report.merged += static_cast<std::size_t>(input.runs_merged);
      report.already += static_cast<std::size_t>(input.duplicates_skipped);
    }
    for (const auto& n : newly) m["collected"].push_back(n);
    write_manifest(dir, m);
  }
  return report;
}

}  // namespace tlab::slurm
