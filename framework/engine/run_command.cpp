// `tlab run` and `tlab _run` in the training engine: compose, expand and validate every run of
// an experiment, then launch them (local child processes or a SLURM job array), print the
// results table. The front (framework/cli/engine_cli.cpp) parses the command line.

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <torch/cuda.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "errors.hpp"
#include "optuna_search.hpp"
#include "report/report.hpp"
#include "run/asha.hpp"
#include "run/executor.hpp"
#include "run/launcher.hpp"
#include "run/optuna.hpp"
#include "run/precision.hpp"
#include "run/runner.hpp"
#include "run/slurm.hpp"
#include "store/store.hpp"
#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab::engine {
namespace {

using cli::UsageError;

Store open_store(const std::string& db, bool create) {
  try {
    return Store(db, create);
  } catch (const StoreError& e) {
    throw UsageError(e.what());
  }
}

/// "90", "90s", "1.5m", "2h" -> seconds; UsageError naming the option otherwise.
double parse_seconds(const std::string& text, const char* option) {
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  std::string unit = end ? std::string(end) : "";
  double scale = unit.empty() || unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : -1;
  if (end == text.c_str() || scale < 0 || !(v > 0) || !std::isfinite(v))
    throw UsageError(
        fmt::format("{} '{}' is not a duration; expected a positive number of "
                    "seconds, or one with a unit: 90s, 30m, 2h",
                    option, text));
  return v * scale;
}

/// The GPUs to hand out: --gpus, else the visible ones when a run may use CUDA.
std::vector<std::string> gpu_ids(const std::string& text, const std::vector<RunSpec>& specs) {
  std::vector<std::string> ids;
  if (!text.empty()) {
    // Indices into an inherited CUDA_VISIBLE_DEVICES (a SLURM allocation), else device ids.
    std::vector<std::string> visible;
    if (const char* v = std::getenv("CUDA_VISIBLE_DEVICES"); v && *v) {
      std::stringstream in(v);
      for (std::string id; std::getline(in, id, ',');) visible.push_back(id);
    }
    std::stringstream in(text);
    for (std::string id; std::getline(in, id, ',');) {
      if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos)
        throw UsageError(fmt::format(
            "--gpus '{}': '{}' is not a GPU index; expected a comma-separated list like 0,1,2",
            text, id));
      if (!visible.empty()) {
        const auto index = std::stoul(id);
        if (index >= visible.size())
          throw UsageError(fmt::format(
              "--gpus '{}': index {} is out of range; CUDA_VISIBLE_DEVICES='{}' makes {} GPU(s) "
              "visible, numbered from 0",
              text, id, join(visible, ","), visible.size()));
        id = visible[index];
      }
      ids.push_back(id);
    }
    return ids;
  }
  const bool wants_gpu =
      std::any_of(specs.begin(), specs.end(), [](const RunSpec& s) { return s.device != "cpu"; });
  if (!wants_gpu) return ids;
  const int count = static_cast<int>(torch::cuda::device_count());
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES"); visible && *visible) {
    std::stringstream in(visible);
    for (std::string id; std::getline(in, id, ',') && static_cast<int>(ids.size()) < count;)
      ids.push_back(id);
    return ids;
  }
  for (int i = 0; i < count; ++i) ids.push_back(std::to_string(i));
  return ids;
}

/// --launcher NAME also picks the config group option launcher/NAME when there is one
/// (experiments/launcher/slurm.toml: partition, time, mem ...), as +launcher=NAME would, or
/// launcher=NAME when the defaults list already chooses a launcher.
std::vector<std::string> with_launcher_group(const RunArgs& a, PluginLoader& loader,
                                             const LoadOptions& load_options) {
  std::vector<std::string> overrides = a.overrides;
  if (a.launcher.empty() ||
      !cfg::SearchPath::for_experiment(a.experiment, load_options.config_dirs)
           .find("launcher", a.launcher) ||
      std::any_of(overrides.begin(), overrides.end(), [](const std::string& o) {
        const std::string bare = o.substr(o.find_first_not_of('+'));
        return bare.rfind("launcher=", 0) == 0 || bare.rfind("launcher@", 0) == 0;
      }))
    return overrides;
  overrides.insert(overrides.begin(), "+launcher=" + a.launcher);
  try {
    compose_experiment(a.experiment, overrides, loader, load_options);
  } catch (const ConfigError& e) {
    if (std::string(e.what()).find("already chooses") == std::string::npos) throw;
    overrides.front() = "launcher=" + a.launcher;
  }
  return overrides;
}

/// `--dry-run`: the runs with their overrides, and which a real start would skip.
int dry_run(const RunArgs& a, const std::vector<RunSpec>& specs, PluginLoader& loader) {
  std::optional<Store> existing;
  if (fs::exists(a.db) && !a.rerun) existing.emplace(open_store(a.db, false));
  // A sampled sweep: the draws, their distributions, and each run's trial.
  auto search_of = [](const RunSpec& s) {
    return s.search_json.empty() ? nlohmann::ordered_json::object()
                                 : nlohmann::ordered_json::parse(s.search_json, nullptr, false);
  };
  const nlohmann::ordered_json first =
      specs.empty() ? nlohmann::ordered_json::object() : search_of(specs[0]);
  if (first.value("sweeper", "") == "random") {
    const int64_t samples = first.value("samples", int64_t{0});
    std::cout << fmt::format(
        "{}: {} run(s): random search, {} draw(s) (search_seed {}){}\n", a.experiment, specs.size(),
        samples, first.value("search_seed", int64_t{0}),
        samples > 0 && static_cast<int64_t>(specs.size()) > samples
            ? fmt::format(" x {} crossed (seed)", static_cast<int64_t>(specs.size()) / samples)
            : "");
    for (const auto& [key, d] : first["distributions"].items())
      std::cout << fmt::format("  {} ~ {}\n", key, d.get<std::string>());
  } else {
    std::cout << fmt::format("{}: {} run(s)\n", a.experiment, specs.size());
  }
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const int64_t done = existing ? existing->finished_run_with_key(run_key(specs[i], loader)) : 0;
    const nlohmann::ordered_json search = search_of(specs[i]);
    std::cout << fmt::format(
        "[{}/{}] {}{}{}\n", i + 1, specs.size(),
        search.contains("trial") ? fmt::format("trial {}: ", search["trial"].get<int64_t>()) : "",
        specs[i].overrides.empty() ? "(no overrides)" : join(specs[i].overrides, " "),
        done ? fmt::format("  (finished as run {}: skipped; --rerun runs it again)", done) : "");
  }
  return 0;
}

/// The sweep options from the command line; UsageError for combinations that cannot work.
SweepOptions sweep_options(const RunArgs& a, const std::vector<RunSpec>& specs, bool on_slurm) {
  SweepOptions sweep;
  sweep.jobs = a.jobs;
  sweep.rerun = a.rerun;
  sweep.runs_per_gpu = a.runs_per_gpu;
  sweep.in_process = a.in_process;
  sweep.wait = a.wait;
  if (on_slurm) {
    auto refuse = [&](const char* option, const std::string& instead) {
      throw UsageError(
          fmt::format("{} applies to local runs, not to --launcher slurm; {}", option, instead));
    };
    if (!a.timeout.empty())
      refuse("--timeout", "set SLURM's time limit instead: launcher.time=HH:MM:SS");
    if (!a.gpus.empty()) refuse("--gpus", "ask SLURM for GPUs instead: launcher.gpus_per_task=N");
    if (a.spawn_given) refuse("--spawn", "leave --spawn out");
    // -j N: at most N tasks at once (--array=...%N) unless launcher.array_parallelism says.
    if (!a.jobs_given) sweep.jobs = 0;
  } else if (sweep.wait) {
    throw UsageError("--wait applies to --launcher slurm; a local sweep always runs to its end");
  }
  if (sweep.in_process && (on_slurm || !a.timeout.empty() || a.spawn_given || a.jobs_given ||
                           !a.gpus.empty() || a.runs_per_gpu_given))
    throw UsageError(
        "--in-process runs one run at a time in this process: leave out --jobs, --timeout, "
        "--spawn, --gpus, --runs-per-gpu and --launcher slurm (choose the GPU with "
        "CUDA_VISIBLE_DEVICES)");
  if (!a.timeout.empty()) sweep.timeout = parse_seconds(a.timeout, "--timeout");
  sweep.grace = parse_seconds(a.grace.empty() ? "10s" : a.grace, "--grace");
  if (!on_slurm) sweep.gpus = gpu_ids(a.gpus, specs);
  return sweep;
}

/// `--spawn`: auto is fork when every run is on the CPU ("cpu", or "auto" without a visible
/// GPU); the supervisor has run no LibTorch operation, so the copy is as clean as a new process.
std::string spawn_mode(const RunArgs& a, const std::vector<RunSpec>& specs,
                       const SweepOptions& sweep, bool on_slurm) {
  std::string spawn = a.spawn.empty() ? "auto" : a.spawn;
  auto on_cpu = [&](const RunSpec& s) {
    return s.device == "cpu" || (s.device == "auto" && sweep.gpus.empty());
  };
  if (spawn == "auto" && !on_slurm && !sweep.in_process) {
    spawn = std::all_of(specs.begin(), specs.end(), on_cpu) ? "fork" : "exec";
    spdlog::debug("[sweep] --spawn auto: {}", spawn);
  }
  if (spawn == "fork")
    for (const auto& spec : specs)
      if (!on_cpu(spec))
        throw UsageError(fmt::format(
            "--spawn fork needs device = \"cpu\" in every run, but a run of '{}' has device "
            "\"{}\": a forked process cannot use CUDA safely; use --spawn exec or auto (the "
            "default)",
            a.experiment, spec.device));
  return spawn;
}

/// --threads wins; else [run] threads (one value for the whole sweep); else cores / jobs.
int sweep_threads(int threads, const std::vector<RunSpec>& specs) {
  if (threads != 0 || specs.empty()) return threads;
  for (const auto& s : specs)
    if (s.threads != specs[0].threads)
      throw ConfigError(fmt::format(
          "the runs of this sweep set different run.threads ({} and {}); a sweep runs with "
          "one thread count: set it once, or use --threads",
          specs[0].threads, s.threads));
  return static_cast<int>(specs[0].threads);
}

/// What the user reads when the sweep ends: the SLURM submission, or the results table.
int report_sweep(const RunArgs& a, const SweepResult& result, Store& store, bool on_slurm) {
  if (on_slurm && result.stop_signal) return 128 + result.stop_signal;  // stopped waiting
  if (on_slurm && !a.wait) {
    if (result.submitted == 0) {
      std::cout << fmt::format(
          "\nnothing submitted: {} of {} run(s) already finished or in "
          "flight (tlab sweep list --db {})\n",
          result.skipped, result.total, a.db);
      return 0;
    }
    const std::string name = fs::path(result.sweep_dir).filename().string();
    std::cout << fmt::format(
        "\nsubmitted {} run(s) to SLURM as job array {} (sweep {}{})\n"
        "  follow:  tlab sweep status {} --db {}\n"
        "  collect: tlab sweep collect {} --db {}   (merges the ended tasks' shards)\n",
        result.submitted, result.job, name,
        result.skipped ? fmt::format(", {} run(s) skipped", result.skipped) : "", name, a.db, name,
        a.db);
    return 0;
  }
  std::cout << "\n" << format_comparison(store.list_runs(result.ids), {}, {"target/test/acc"});
  const std::size_t ran = result.total - result.skipped;
  if (!result.failures.empty()) {
    std::cerr << fmt::format("\n{} of {} runs failed:\n  {}\n", result.failures.size(),
                             result.total, join(result.failures, "\n  "));
    return result.stop_signal ? 128 + result.stop_signal : cli::kRunFailed;
  }
  if (result.stop_signal) return 128 + result.stop_signal;
  const std::size_t done_before = result.skipped - result.elsewhere;
  const std::size_t pruned = result.pruned;  // by [sweep.asha]: ended early on purpose
  std::cout << fmt::format(
      "\n{}{}{}; results in '{}' (tlab results list --db {})\n",
      pruned ? fmt::format("{} run(s) ended: {} finished, {} pruned by ASHA", ran,
                           ran - std::min(pruned, ran), pruned)
             : fmt::format("{} run(s) finished", ran),
      done_before ? fmt::format(", {} skipped as already finished", done_before) : "",
      result.elsewhere
          ? fmt::format(", {} left to the other tlab process running them", result.elsewhere)
          : "",
      a.db, a.db);
  return 0;
}

}  // namespace

int run_experiment(const Globals& g, const RunArgs& a) {
  if (a.experiment.empty())
    throw UsageError(
        "tlab run needs an experiment file, e.g. tlab run experiments/quickstart.toml");
  PluginLoader loader(plugin_search_dirs(g));
  // Compose, expand and validate every run before the first one starts.
  LoadOptions load_options;
  load_options.config_dirs.assign(a.config_dirs.begin(), a.config_dirs.end());
  load_options.multirun = a.multirun;
  const std::vector<std::string> overrides = with_launcher_group(a, loader, load_options);
  cfg::SearchSpec search;
  load_options.search = &search;
  std::vector<RunSpec> specs = load_experiment(a.experiment, overrides, loader, load_options);
  // An Optuna search has no runs until it asks for trials: validate draws that take every
  // categorical choice and both ends of every interval instead, before anything runs.
  const bool optuna = search.sweeper == "optuna";
  std::size_t runs_per_trial = 1;
  if (optuna) {
    const std::vector<cfg::GivenDraw> probes = probe_draws(search);
    LoadOptions probe_options = load_options;
    probe_options.draws = &probes;
    specs = load_experiment(a.experiment, overrides, loader, probe_options);
    runs_per_trial = std::max<std::size_t>(1, specs.size() / probes.size());
  }
  if (a.dry_run && optuna) {
    describe_optuna(search, plan_optuna(search, specs.at(0), a.db), runs_per_trial, std::cout);
    std::cout << "  (Optuna chooses each trial from the results before it: no draws to list; "
                 "validated: every choice and both ends of every interval)\n";
    return 0;
  }
  if (a.dry_run) return dry_run(a, specs, loader);
  if (!a.launcher.empty())
    for (auto& spec : specs) spec.launcher.name = a.launcher;
  const LauncherSpec& launcher = sweep_launcher(specs);
  const bool on_slurm = launcher.name == "slurm";
  if (on_slurm)
    for (const auto& spec : specs)
      if (asha_of(spec.search_json))
        throw UsageError(
            "[sweep.asha] compares the runs of a sweep through the database, but SLURM tasks "
            "write their own shard databases until `tlab sweep collect`, so they cannot see "
            "each other's rungs: run the search locally (-j N) or leave out [sweep.asha]");
  SweepOptions sweep = sweep_options(a, specs, on_slurm);
  // float16 and CUDA graphs need CUDA: refused before any run starts where no run can have it
  // (a run on "auto" with a GPU is checked when its device is known).
  for (const auto& spec : specs)
    if (spec.device == "cpu" || !torch::cuda::is_available()) {
      try {
        check_compute(spec.compute, torch::Device(torch::kCPU));
      } catch (const std::invalid_argument& e) {
        throw UsageError(e.what());
      }
    }
  // The runs read it in their own processes (exec, fork, in-process, SLURM tasks alike).
  if (a.profile) setenv("TLAB_PROFILE", "1", 1);
  if (spawn_mode(a, specs, sweep, on_slurm) == "fork") {
    sweep.in_fork = [db = a.db, &loader](int64_t id, int threads) {
      // The supervisor's logger colours its output for a terminal; a run writes to a pipe.
      spdlog::drop_all();
      spdlog::set_default_logger(spdlog::stderr_logger_mt("tlab"));
      spdlog::set_pattern("%H:%M:%S %l %v");
      return run_child(db, id, threads, loader);
    };
  }
  Store store = open_store(a.db, true);  // created and migrated before any child starts
  for (const auto& line : mark_lost_runs(store, 3 * heartbeat_interval()))
    spdlog::warn("[sweep] {}", line);
  install_stop_handlers();
  sweep.db = a.db;
  sweep.results_dir =
      fs::path(a.db).parent_path().empty() ? fs::path(".") : fs::path(a.db).parent_path();
  sweep.threads = sweep_threads(a.threads, specs);
  sweep.verbose = g.verbose;
  sweep.plugin_paths = g.plugin_paths;
  if (!optuna) {
    spdlog::info("[runner] {}: {} run(s), results in '{}'", a.experiment, specs.size(), a.db);
    const SweepResult result = make_launcher(launcher)->launch(specs, loader, store, sweep);
    return report_sweep(a, result, store, on_slurm);
  }
  // Optuna: batches of trials; on SLURM each batch's array is waited for and collected, so
  // that the study is told its results before it is asked for more.
  if (on_slurm) sweep.wait = true;
  const std::unique_ptr<Launcher> runner = make_launcher(launcher);
  OptunaSearch os{search,
                  plan_optuna(search, specs.at(0), a.db),
                  a.experiment,
                  runs_per_trial,
                  on_slurm ? std::max(1, a.jobs) : sweep.jobs,
                  sweep,
                  store,
                  {},
                  {},
                  {}};
  describe_optuna(os.search, os.plan, runs_per_trial, std::cout);
  os.expand = [&](const std::vector<cfg::GivenDraw>& draws) {
    LoadOptions trial_options = load_options;
    trial_options.draws = &draws;
    std::vector<RunSpec> trial_specs =
        load_experiment(a.experiment, overrides, loader, trial_options);
    if (!a.launcher.empty())
      for (auto& spec : trial_specs) spec.launcher.name = a.launcher;
    return trial_specs;
  };
  os.launch = [&](const std::vector<RunSpec>& trial_specs) {
    return runner->launch(trial_specs, loader, store, sweep);
  };
  os.key = [&](const RunSpec& spec) { return run_key(spec, loader); };
  SweepResult result;
  try {
    result = run_optuna_search(os);
  } catch (const OptunaError& e) {
    throw UsageError(e.what());
  }
  if (on_slurm) {  // waited for: the results table, as a local search prints it
    RunArgs waited = a;
    waited.wait = true;
    return report_sweep(waited, result, store, on_slurm);
  }
  return report_sweep(a, result, store, on_slurm);
}

int run_queued(const Globals& g, const ChildArgs& a) {
  PluginLoader loader(plugin_search_dirs(g));
  if (a.rank > 0) return run_rank(a.db, a.id, a.rank, a.world, a.timeout_ms, a.threads, loader);
  if (a.srun) {  // one task of a run's ranks, started by srun: SLURM says which
    auto number = [](const char* name) {
      const char* v = std::getenv(name);
      return v && *v ? std::atoi(v) : -1;
    };
    const int rank = number("SLURM_PROCID"), world = number("SLURM_NTASKS");
    if (rank < 0 || world < 1)
      throw UsageError("_run --srun needs SLURM_PROCID and SLURM_NTASKS (a task started by srun)");
    if (rank > 0) return run_rank(a.db, a.id, rank, world, 0, a.threads, loader, a.shard);
    return run_child(a.db, a.id, a.threads, loader, a.shard, true, /*srun_ranks=*/true);
  }
  return run_child(a.db, a.id, a.threads, loader, a.shard);
}

}  // namespace tlab::engine
