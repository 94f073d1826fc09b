#include "run/slurm.hpp"

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
#include <nlohmann/json.hpp>

#include "results/merge.hpp"
#include "run/runner.hpp"
#include "util.hpp"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace tlab::slurm {
namespace {

constexpr int kManifestFormat = 1;
constexpr const char* kExecFailed = "tlab: cannot execute ";

// --- Running SLURM's commands ----------------------------------------------------------------

struct Output {
  int code = -1;  // exit code, 128 + signal, or 127 when the program could not be executed
  std::string out, err;
};

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
  const fs::path tmp = dir / fmt::format("sweep.json.{}.tmp", getpid());
  {
    std::ofstream out(tmp);
    out << m.dump(2) << "\n";
    if (!out.flush())
      throw SlurmError(fmt::format("cannot write '{}': {}", tmp.string(), strerror(errno)));
  }
  fs::rename(tmp, manifest_path(dir));  // atomic: readers see the old or the new manifest
}

/// Holds flock(2) on <sweep>/sweep.lock: one collect or submission at a time per sweep.
class SweepLock {
 public:
  explicit SweepLock(const fs::path& dir) {
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
  ~SweepLock() { ::close(fd_); }
  SweepLock(const SweepLock&) = delete;
  SweepLock& operator=(const SweepLock&) = delete;

 private:
  int fd_ = -1;
};

fs::path shard_path(const fs::path& dir, int task, int submission) {
  return dir / "shards" / fmt::format("{}.{}.db", task, submission);
}
fs::path log_path(const fs::path& dir, int task, int submission) {
  return dir / "logs" / fmt::format("{}.{}.out", task, submission);
}

/// What a shard says of its run (its task may be writing it).
struct ShardView {
  bool exists = false;  ///< The file exists.
  std::string error;    ///< Why it could not be read ("" when it was).
  std::string status, reason, uuid;
  double heartbeat_age = 1e18;
};

ShardView read_shard(const fs::path& path) {
  ShardView v;
  std::error_code ec;
  if (!fs::exists(path, ec)) return v;
  v.exists = true;
  // Read-write when allowed, so that a journal left by a task killed mid-write is rolled back
  // (a read-only connection cannot); only SELECT runs. Read-only otherwise.
  for (int flags : {SQLITE_OPEN_READWRITE, SQLITE_OPEN_READONLY}) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
      v.error = db ? sqlite3_errmsg(db) : "cannot open";
      sqlite3_close(db);
      continue;
    }
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* q = nullptr;
    const char* sql =
        "SELECT status, reason, uuid, (julianday('now') - julianday(COALESCE(heartbeat_at, "
        "created_at))) * 86400.0 FROM runs ORDER BY id LIMIT 1";
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
      auto text = [&](int c) {
        const unsigned char* t = sqlite3_column_text(q, c);
        return t ? std::string(reinterpret_cast<const char*>(t)) : std::string();
      };
      v.error.clear();
      v.status = text(0);
      v.reason = text(1);
      v.uuid = text(2);
      if (sqlite3_column_type(q, 3) != SQLITE_NULL) v.heartbeat_age = sqlite3_column_double(q, 3);
    } else {
      v.error = rc == SQLITE_DONE ? "it holds no run" : sqlite3_errmsg(db);
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    if (v.error.empty()) break;
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

using SlurmStates = std::map<std::string, std::pair<std::string, std::string>>;

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

// --- Submitting ------------------------------------------------------------------------------

std::string tlab_executable() {
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) throw SlurmError("cannot find the tlab executable (/proc/self/exe)");
  return std::string(self, static_cast<std::size_t>(n));
}

/// Writes the shard of one task: its run, queued, exactly as a local sweep queues it.
void create_shard(const fs::path& path, const RunSpec& spec, const std::string& key,
                  const std::string& sweep, const fs::path& results_dir, const GitState& git) {
  RunOptions ro;
  ro.results_dir = results_dir;
  NewRun row = describe_run(spec, ro, &git);
  row.status = "queued";
  row.run_key = key;
  row.sweep = sweep;
  std::error_code ec;
  if (fs::exists(path, ec))
    throw SlurmError(
        fmt::format("shard '{}' exists already; the sweep folder is in use by "
                    "another submission",
                    path.string()));
  Store shard(path, /*create=*/true, Store::kBusyTimeout, Store::Journal::kRollback);
  const int64_t id = shard.create_run(row);
  if (id != 1) throw SlurmError(fmt::format("shard '{}' got run id {}, not 1", path.string(), id));
}

/// Submits `tasks` (with their specs and run keys) as submission k of the sweep in `dir`;
/// records it in `m` and the manifest. Returns the job id.
std::string submit(const fs::path& dir, json& m, const std::vector<int>& tasks,
                   const std::vector<const RunSpec*>& specs, const std::vector<std::string>& keys) {
  const int k = static_cast<int>(m["submissions"].size()) + 1;
  const fs::path results_dir = m.value("results_dir", "");
  std::map<fs::path, GitState> git;
  std::vector<fs::path> made;
  std::string job;
  auto undo = [&] {
    std::error_code ec;
    for (const auto& p : made) fs::remove(p, ec);
  };
  try {
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      const RunSpec& spec = *specs[i];
      const fs::path where = fs::absolute(spec.experiment).parent_path();
      auto found = git.find(where);
      if (found == git.end()) found = git.emplace(where, git_state(where)).first;
      const fs::path shard = shard_path(dir, tasks[i], k);
      create_shard(shard, spec, keys[i], m.value("name", ""), results_dir, found->second);
      made.push_back(shard);
    }
    LauncherSpec launcher;
    const json& l = m["launcher"];
    launcher.partition = l.value("partition", "");
    launcher.time = l.value("time", "");
    launcher.mem = l.value("mem", "");
    launcher.account = l.value("account", "");
    launcher.qos = l.value("qos", "");
    launcher.cpus_per_task = l.value("cpus_per_task", int64_t{1});
    launcher.gpus_per_task = l.value("gpus_per_task", int64_t{0});
    launcher.sbatch = l.value("sbatch", std::vector<std::string>{});
    launcher.setup = l.value("setup", std::vector<std::string>{});
    ScriptInput in;
    in.job_name = "tlab-" + m.value("job_name", std::string("sweep"));
    in.dir = dir;
    in.submission = k;
    in.tasks = tasks;
    in.parallelism = m.value("parallelism", int64_t{0});
    in.launcher = launcher;
    in.threads = m.value("threads", int64_t{0});
    in.tlab = m.value("tlab", "");
    in.plugin_paths = m.value("plugin_paths", std::vector<std::string>{});
    const fs::path script = dir / fmt::format("submit-{}.sh", k);
    {
      std::ofstream out(script);
      out << render_script(in);
      if (!out.flush())
        throw SlurmError(fmt::format("cannot write '{}': {}", script.string(), strerror(errno)));
    }
    made.push_back(script);
    fs::permissions(script, fs::perms::owner_exec | fs::perms::group_exec, fs::perm_options::add);
    const Output r = run_program({"sbatch", "--parsable", script.string()});
    job = trim(r.out.substr(0, r.out.find(';')));
    if (r.code != 0 || job.empty() || job.find_first_not_of("0123456789") != std::string::npos)
      throw SlurmError(fmt::format(
          "sbatch refused the sweep's job array (exit code {}): {}; check the [launcher] options "
          "(partition, time, mem, account, qos, sbatch) against `sinfo` and your site's "
          "limits, then run again (the script was {})",
          r.code, trim(r.err.empty() ? r.out : r.err), script.string()));
  } catch (...) {
    undo();  // nothing was submitted
    throw;
  }
  // Submitted: from here on nothing is undone. The manifest first, so that the job is known.
  m["submissions"].push_back({{"n", k},
                              {"job", job},
                              {"tasks", tasks},
                              {"script", fmt::format("submit-{}.sh", k)},
                              {"submitted_at", utc_stamp("%Y-%m-%dT%H:%M:%SZ")}});
  try {
    write_manifest(dir, m);
  } catch (const std::exception& e) {
    throw SlurmError(fmt::format(
        "job array {} was submitted, but the sweep's manifest could not be written ({}); the "
        "sweep cannot be followed or collected: cancel it with `scancel {}` and launch again",
        job, e.what(), job));
  }
  for (int task : tasks) {  // provenance even for a task that never starts; the task sets it too
    try {
      Store shard(shard_path(dir, task, k), false, Store::kBusyTimeout, Store::Journal::kRollback);
      shard.set_job(1, fmt::format("slurm {}_{}", job, task));
    } catch (const std::exception& e) {
      spdlog::warn("[slurm] could not record job {}_{} in its shard: {}", job, task, e.what());
    }
  }
  return job;
}

/// The RunSpec of task `task` from the manifest (for a resubmission).
RunSpec spec_of_task(const json& m, int task, PluginLoader& loader) {
  const json& def = m["tasks"].at(static_cast<std::size_t>(task));
  RunSpec spec =
      load_resolved_run(def.value("config_toml", ""), def.value("experiment", ""), loader);
  spec.overrides = def.value("override_args", std::vector<std::string>{});
  spec.overrides_json = def.value("overrides_json", "{}");
  return spec;
}

/// Ids in `store` of the runs with these uuids, in that order (unknown ones left out).
std::vector<int64_t> ids_of(Store& store, const std::vector<std::string>& uuids) {
  std::map<std::string, int64_t> by_uuid;
  for (const auto& r : store.list_runs()) by_uuid[r.uuid] = r.id;
  std::vector<int64_t> ids;
  for (const auto& u : uuids)
    if (auto f = by_uuid.find(u); f != by_uuid.end()) ids.push_back(f->second);
  return ids;
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

class SlurmLauncher : public Launcher {
 public:
  std::string name() const override { return "slurm"; }

  SweepResult launch(const std::vector<RunSpec>& specs, PluginLoader& loader, Store& store,
                     const SweepOptions& o) override {
    const LauncherSpec& launcher = sweep_launcher(specs);
    // A task sees its own shard database only: "run:<id>" cannot be resolved there.
    for (const auto& spec : specs)
      for (const auto& [key, w] : {std::pair{"backbone.weights", &spec.backbone.weights},
                                   std::pair{"adapter_weights", &spec.adapter_weights}})
        if (w->rfind("run:", 0) == 0) {
          const char* file =
              std::string(key) == "adapter_weights" ? "adapter.safetensors" : "model.safetensors";
          std::string where;
          try {
            where = (fs::absolute(store.run(std::stoll(w->substr(4))).run_dir) / file).string();
          } catch (const std::exception&) {
            where = fmt::format("<that run's folder>/{}", file);
          }
          throw ConfigError(fmt::format(
              "{} = \"{}\" cannot be used with --launcher slurm: each task sees only its own "
              "shard database, not run {}; name the file instead: {}=\"{}\"",
              key, *w, w->substr(4), key, where));
        }
    SweepResult result;
    result.total = specs.size();
    result.ids.assign(specs.size(), 0);
    const fs::path db = fs::absolute(store.path());

    // Earlier sweeps of this database: merge what ended, and note the runs still in flight so
    // that they are not submitted twice.
    std::map<std::string, std::string> in_flight;  // run key -> where
    for (const fs::path& dir : list_sweeps(db)) {
      CollectReport c = collect_sweep(dir, store, loader, false);
      if (c.merged)
        spdlog::info("[slurm] collected {} ended run(s) of earlier sweep {}", c.merged,
                     dir.filename().string());
      const SweepState& st = c.state;
      for (const TaskState* t : st.latest())
        if (unsettled(t->state))
          in_flight[t->run_key] =
              fmt::format("task {} of sweep {} (job {})", t->task, st.name, t->job);
    }

    std::vector<std::size_t> todo;
    std::vector<std::string> keys(specs.size());
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const std::string& key = keys[i] = run_key(specs[i], loader);
      if (!o.rerun) {
        if (int64_t done = store.finished_run_with_key(key)) {
          result.ids[i] = done;
          ++result.skipped;
          continue;
        }
      }
      if (auto f = in_flight.find(key); f != in_flight.end()) {
        ++result.skipped;
        spdlog::warn("[slurm] {} is already pending or running as {}: not submitted again",
                     specs[i].overrides.empty() ? "the run" : join(specs[i].overrides, " "),
                     f->second);
        continue;
      }
      todo.push_back(i);
    }
    if (result.skipped)
      spdlog::info("[slurm] {} of {} run(s) already finished or in flight: not submitted{}",
                   result.skipped, result.total,
                   o.rerun ? "" : " (--rerun runs finished ones again)");
    auto drop_unknown = [&] {  // runs not (yet) in the results database have no id
      result.ids.erase(std::remove(result.ids.begin(), result.ids.end(), 0), result.ids.end());
    };
    if (todo.empty()) {
      drop_unknown();
      return result;
    }

    // The sweep folder and its manifest.
    const std::string name = fmt::format(
        "{}-{}", utc_stamp("%Y%m%d-%H%M%S"),
        hash_string(fmt::format("{} {} {}", host_name(), getpid(),
                                std::chrono::steady_clock::now().time_since_epoch().count()))
            .substr(0, 6));
    const fs::path dir = sweeps_dir(db) / name;
    if (dir.string().find_first_of(" \t\n'\"%") != std::string::npos)
      throw SlurmError(fmt::format(
          "the sweep folder '{}' would contain a space, quote or %, which sbatch's #SBATCH "
          "lines cannot hold; use a --db path without them",
          dir.string()));
    fs::create_directories(dir / "shards");
    fs::create_directories(dir / "logs");
    auto lock = std::make_unique<SweepLock>(dir);  // until submitted: a collect waits for it
    std::vector<std::string> plugin_paths;
    for (const auto& p : o.plugin_paths) plugin_paths.push_back(fs::absolute(p).string());
    std::string job_name = specs[0].name;
    for (char& c : job_name)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
    json m = {{"format", kManifestFormat},
              {"name", name},
              {"experiment", specs[0].experiment},
              {"job_name", job_name},
              {"db", db.string()},
              {"results_dir", db.parent_path().string()},
              {"created_at", utc_stamp("%Y-%m-%dT%H:%M:%SZ")},
              {"tlab", tlab_executable()},
              {"plugin_paths", plugin_paths},
              {"threads", o.threads},
              {"parallelism", launcher.array_parallelism > 0 ? launcher.array_parallelism
                                                             : static_cast<int64_t>(o.jobs)},
              {"launcher",
               {{"partition", launcher.partition},
                {"time", launcher.time},
                {"mem", launcher.mem},
                {"account", launcher.account},
                {"qos", launcher.qos},
                {"cpus_per_task", launcher.cpus_per_task},
                {"gpus_per_task", launcher.gpus_per_task},
                {"array_parallelism", launcher.array_parallelism},
                {"sbatch", launcher.sbatch},
                {"setup", launcher.setup}}},
              {"tasks", json::array()},
              {"submissions", json::array()},
              {"collected", json::array()},
              {"cancelled", json::array()}};
    std::vector<int> tasks;
    std::vector<const RunSpec*> task_specs;
    std::vector<std::string> task_keys;
    for (std::size_t t = 0; t < todo.size(); ++t) {
      const RunSpec& spec = specs[todo[t]];
      m["tasks"].push_back({{"task", t},
                            {"experiment", fs::absolute(spec.experiment).string()},
                            {"config_toml", spec.config_toml},
                            {"overrides_json", spec.overrides_json},
                            {"override_args", spec.overrides},
                            {"run_key", keys[todo[t]]}});
      tasks.push_back(static_cast<int>(t));
      task_specs.push_back(&spec);
      task_keys.push_back(keys[todo[t]]);
    }
    write_manifest(dir, m);
    std::string job;
    try {
      job = submit(dir, m, tasks, task_specs, task_keys);
    } catch (...) {
      std::error_code ec;
      if (m["submissions"].empty()) fs::remove_all(dir, ec);  // nothing submitted: no sweep left
      throw;
    }
    lock.reset();
    result.submitted = tasks.size();
    result.sweep_dir = dir.string();
    result.job = job;
    spdlog::info("[slurm] submitted {} run(s) as job array {} ({}), sweep {}", tasks.size(), job,
                 array_spec(tasks, m.value("parallelism", int64_t{0})), name);
    if (!o.wait) {
      drop_unknown();
      return result;
    }

    // --wait: follow the tasks until none is pending or running, then collect.
    std::string last;
    for (;;) {
      if (stop_signal()) {
        spdlog::warn(
            "[slurm] stopped waiting; the tasks go on in SLURM: tlab sweep status {} (cancel "
            "them with: tlab sweep cancel {})",
            name, name);
        result.stop_signal = stop_signal();
        drop_unknown();
        return result;
      }
      const SweepState st = sweep_status(dir);
      const std::string now = counts_text(st);
      if (now != last) spdlog::info("[slurm] sweep {}: {}", name, now);
      last = now;
      const auto latest = st.latest();
      if (std::none_of(latest.begin(), latest.end(),
                       [](const TaskState* t) { return is_open(t->state); }))
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    CollectReport c = collect_sweep(dir, store, loader, false);
    const std::vector<int64_t> merged = ids_of(store, c.uuids);
    std::size_t next = 0;
    for (std::size_t i = 0; i < result.ids.size() && next < merged.size(); ++i)
      if (!result.ids[i]) result.ids[i] = merged[next++];
    drop_unknown();
    result.failures = c.lines;
    result.finished = c.uuids.size() - c.lines.size();
    return result;
  }
};

}  // namespace

std::unique_ptr<Launcher> make_slurm_launcher() { return std::make_unique<SlurmLauncher>(); }

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
      shard_status == "timeout" || shard_status == "node_fail")
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

std::string array_spec(const std::vector<int>& tasks, int64_t parallelism) {
  std::vector<int> sorted = tasks;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  std::vector<std::string> parts;
  for (std::size_t i = 0; i < sorted.size();) {
    std::size_t j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1) ++j;
    parts.push_back(j == i ? std::to_string(sorted[i])
                           : fmt::format("{}-{}", sorted[i], sorted[j]));
    i = j + 1;
  }
  return join(parts, ",") + (parallelism > 0 ? fmt::format("%{}", parallelism) : "");
}

std::string render_script(const ScriptInput& in) {
  const LauncherSpec& l = in.launcher;
  const int64_t threads = in.threads > 0 ? in.threads : l.cpus_per_task;
  std::string s = fmt::format(
      "#!/bin/bash\n"
      "# TransferLab sweep {}, submission {}: one array task per run, each writing its own\n"
      "# shard database (shards/TASK.{}.db). Written by tlab; see docs/cluster.md.\n",
      in.dir.filename().string(), in.submission, in.submission);
  auto opt = [&](const std::string& o) { s += "#SBATCH " + o + "\n"; };
  opt("--job-name=" + in.job_name);
  opt("--array=" + array_spec(in.tasks, in.parallelism));
  opt(fmt::format("--output={}/logs/%a.{}.out", in.dir.string(), in.submission));
  opt("--ntasks=1");
  opt("--no-requeue");  // a requeued task would find its run started; --retry-failed instead
  opt(fmt::format("--cpus-per-task={}", l.cpus_per_task));
  if (l.gpus_per_task > 0) opt(fmt::format("--gpus-per-task={}", l.gpus_per_task));
  if (!l.partition.empty()) opt("--partition=" + l.partition);
  if (!l.time.empty()) opt("--time=" + l.time);
  if (!l.mem.empty()) opt("--mem=" + l.mem);
  if (!l.account.empty()) opt("--account=" + l.account);
  if (!l.qos.empty()) opt("--qos=" + l.qos);
  for (const auto& extra : l.sbatch) opt(extra);
  s += "set -u\n";
  for (const auto& line : l.setup) s += line + "\n";
  s += "exec " + shell_quote(in.tlab);
  for (const auto& p : in.plugin_paths) s += " --plugin-path " + shell_quote(p);
  s += fmt::format(" _run --shard --db {}\"$SLURM_ARRAY_TASK_ID\"{} --id 1 --threads {}\n",
                   shell_quote((in.dir / "shards").string() + "/"),
                   shell_quote(fmt::format(".{}.db", in.submission)), threads);
  return s;
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
      shard.finish_open_run(1, "cancelled", "cancelled with `tlab sweep cancel` before it started");
    } catch (const std::exception& e) {
      spdlog::warn("[slurm] task {}: {}", t->task, e.what());
    }
  }
  return ids;
}

CollectReport collect_sweep(const fs::path& dir, Store& store, PluginLoader& loader,
                            bool retry_failed) {
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
      if (!shard.finish_open_run(1, a.state, a.reason)) shard.finish_run(1, a.state, a.reason);
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
  if (retry_failed) {
    std::vector<int> tasks;
    std::vector<RunSpec> specs;
    std::vector<std::string> keys;
    for (const TaskState* t : latest) {
      if (!retryable(t->state)) continue;
      RunSpec spec = spec_of_task(m, t->task, loader);
      std::string key = run_key(spec, loader);  // of the current plugin builds
      if (store.finished_run_with_key(key)) continue;
      tasks.push_back(t->task);
      specs.push_back(std::move(spec));
      keys.push_back(std::move(key));
    }
    if (!tasks.empty()) {
      std::vector<const RunSpec*> ptrs;
      for (const auto& s : specs) ptrs.push_back(&s);
      report.retried.job = submit(dir, m, tasks, ptrs, keys);
      report.retried.submitted = tasks.size();
      report.retried.sweep_dir = dir.string();
    }
  }
  return report;
}

}  // namespace tlab::slurm
