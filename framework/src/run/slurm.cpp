#include "run/slurm.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "run/runner.hpp"
#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab::slurm {
using namespace detail;
namespace {

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
  row.status = RunStatus::kQueued;
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
    launcher.nodes_per_run = l.value("nodes_per_run", int64_t{1});
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
    // [run] processes: the ranks of each run are the tasks of its array task (one srun step).
    in.processes = specs.empty() ? 1 : specs[0]->processes;
    for (const RunSpec* spec : specs)
      if (spec->processes != in.processes)
        throw SlurmError(fmt::format(
            "the runs of one submission train on {} and {} processes ([run] processes); a job "
            "array asks one number of tasks for all its runs: sweep run.processes in separate "
            "submissions",
            in.processes, spec->processes));
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
  spec.search_json = def.value("search", "");
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
      CollectReport c = collect_sweep(dir, store);
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
                {"nodes_per_run", launcher.nodes_per_run},
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
                            {"search", spec.search_json},
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
    CollectReport c = collect_sweep(dir, store);
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

SweepResult retry_failed(const fs::path& dir, Store& store, PluginLoader& loader) {
  SweepLock lock(dir);
  json m = read_manifest(dir);
  const SweepState st = state_of(dir, m);
  SweepResult result;
  std::vector<int> tasks;
  std::vector<RunSpec> specs;
  std::vector<std::string> keys;
  for (const TaskState* t : st.latest()) {
    if (!retryable(t->state)) continue;
    RunSpec spec = spec_of_task(m, t->task, loader);
    std::string key = run_key(spec, loader);  // of the current plugin builds
    if (store.finished_run_with_key(key)) continue;
    tasks.push_back(t->task);
    specs.push_back(std::move(spec));
    keys.push_back(std::move(key));
  }
  if (tasks.empty()) return result;
  std::vector<const RunSpec*> ptrs;
  for (const auto& s : specs) ptrs.push_back(&s);
  result.job = submit(dir, m, tasks, ptrs, keys);
  result.submitted = tasks.size();
  result.sweep_dir = dir.string();
  return result;
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
  // Several ranks: as many tasks, started by srun; SLURM's environment gives each its rank.
  opt(fmt::format("--ntasks={}", std::max<int64_t>(1, in.processes)));
  if (in.processes > 1) opt(fmt::format("--nodes={}", l.nodes_per_run));
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
  s += "exec ";
  // One srun step of all the run's tasks; one failing ends the others.
  if (in.processes > 1) s += "srun --kill-on-bad-exit=1 ";
  s += shell_quote(in.tlab);
  for (const auto& p : in.plugin_paths) s += " --plugin-path " + shell_quote(p);
  s += fmt::format(" _run --shard --db {}\"$SLURM_ARRAY_TASK_ID\"{} --id 1 --threads {}{}\n",
                   shell_quote((in.dir / "shards").string() + "/"),
                   shell_quote(fmt::format(".{}.db", in.submission)), threads,
                   in.processes > 1 ? " --srun" : "");
  return s;
}

}  // namespace tlab::slurm
