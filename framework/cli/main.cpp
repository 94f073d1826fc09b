// tlab: the TransferLab command line. Exit codes: 0 success, 1 a run failed, 2 usage or
// configuration error (nothing was run).

#include <algorithm>
#include <cmath>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <torch/cuda.h>
#include <CLI/CLI.hpp>

#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "report/report.hpp"
#include "results_cli.hpp"
#include "run/executor.hpp"
#include "run/launcher.hpp"
#include "run/runner.hpp"
#include "run/slurm.hpp"
#include "store/store.hpp"
#include "util.hpp"

namespace fs = std::filesystem;
using namespace tlab;

namespace {

constexpr int kRunFailed = 1;
constexpr int kUsageError = 2;

std::string value_toml(const Value& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>)
          return x ? "true" : "false";
        else if constexpr (std::is_same_v<T, int64_t>)
          return std::to_string(x);
        else if constexpr (std::is_same_v<T, double>) {
          std::string s = fmt::format("{}", x);
          return s.find_first_of(".e") == std::string::npos ? s + ".0" : s;
        } else if constexpr (std::is_same_v<T, std::string>)
          return "\"" + x + "\"";
        else {
          std::vector<std::string> items;
          for (const auto& e : x) items.push_back(value_toml(Value(e)));
          return "[" + join(items, ", ") + "]";
        }
      },
      v);
}

std::string constraints(const ParamSpec& p) {
  std::vector<std::string> c;
  if (p.min && p.max)
    c.push_back(fmt::format("in [{}, {}]", *p.min, *p.max));
  else if (p.min)
    c.push_back(fmt::format(">= {}", *p.min));
  else if (p.max)
    c.push_back(fmt::format("<= {}", *p.max));
  if (!p.choices.empty()) c.push_back("one of " + join(p.choices, ", "));
  if (p.min_size) c.push_back(fmt::format("at least {} item(s)", p.min_size));
  return join(c, "; ");
}

int cmd_plugins_list(PluginLoader& loader) {
  std::vector<RefusedPlugin> refused;
  std::vector<ShadowedPlugin> shadowed;
  auto found = loader.discover(refused, &shadowed);
  std::stable_sort(found.begin(), found.end(), [](const LoadedPlugin* a, const LoadedPlugin* b) {
    return std::pair(a->descriptor->kind, a->descriptor->name) <
           std::pair(b->descriptor->kind, b->descriptor->name);
  });
  std::size_t name_w = 4, version_w = 7, summary_w = 7;
  for (const auto* p : found) {
    name_w = std::max(name_w, p->descriptor->name.size());
    version_w = std::max(version_w, p->descriptor->version.size());
    summary_w = std::max(summary_w, p->descriptor->summary.size());
  }
  auto row = [&](const std::string& kind, const std::string& name, const std::string& version,
                 const std::string& summary, const std::string& path) {
    std::cout << fmt::format("{:<9} {:<{}} {:<{}} {:<{}} {}\n", kind, name, name_w, version,
                             version_w, summary, summary_w, path);
  };
  row("kind", "name", "version", "summary", "path");
  for (const auto* p : found)
    row(kind_name(p->descriptor->kind), p->descriptor->name, p->descriptor->version,
        p->descriptor->summary, p->path.string());
  if (!shadowed.empty()) {
    std::cout << "\nshadowed:\n";
    for (const auto& s : shadowed)
      std::cout << fmt::format(
          "  {} {}: {} is shadowed by {} (the first folder in the search path wins: "
          "--plugin-path folders in order, then TLAB_PLUGIN_PATH, then tlab's own)\n",
          s.kind, s.name, s.path.string(), s.by.string());
  }
  if (!refused.empty()) {
    std::cout << "\nrefused:\n";
    for (const auto& r : refused) std::cout << "  " << r.path.string() << ": " << r.reason << "\n";
  }
  if (found.empty())
    std::cout << "\nno plugins found; searched: "
              << join(
                     [&] {
                       std::vector<std::string> d;
                       for (const auto& s : loader.search_dirs()) d.push_back(s.string());
                       return d;
                     }(),
                     ", ", "'")
              << "\n";
  return 0;
}

int cmd_plugins_show(PluginLoader& loader, const std::string& name) {
  std::vector<const LoadedPlugin*> matches;
  for (Kind k : {Kind::Dataset, Kind::Backbone, Kind::Adapter, Kind::Strategy}) {
    try {
      matches.push_back(&loader.get(k, name));
    } catch (const PluginError& e) {
      if (std::string(e.what()).rfind("no ", 0) != 0) throw;  // found but refused
    }
  }
  if (matches.empty()) {
    std::vector<RefusedPlugin> refused;
    std::vector<std::string> names;
    for (const auto* p : loader.discover(refused)) names.push_back(p->descriptor->name);
    std::string hint = did_you_mean(nearest(name, names));
    throw PluginError(fmt::format("no plugin named '{}'{}{}; list them with: tlab plugins", name,
                                  hint.empty() ? "" : ": ", hint));
  }
  for (const auto* p : matches) {
    const Descriptor& d = *p->descriptor;
    std::cout << fmt::format("{} {} {} — {}\nfile: {}\nhash: {}\n\n", kind_name(d.kind), d.name,
                             d.version, d.summary, p->path.string(), p->file_hash);
    std::cout << fmt::format("{:<16} {:<14} {:<16} {:<28} {}\n", "parameter", "type", "default",
                             "constraints", "meaning");
    for (const auto& s : d.schema.params)
      std::cout << fmt::format("{:<16} {:<14} {:<16} {:<28} {}\n", s.key, type_name(s.type),
                               value_toml(s.default_value), constraints(s), s.doc);
    std::string table = d.kind == Kind::Dataset    ? "[target]"
                        : d.kind == Kind::Backbone ? "[backbone]"
                        : d.kind == Kind::Adapter  ? "[[adapters]]"
                                                   : "[strategy]";
    std::cout << "\nSample TOML (defaults):\n" << table << "\nplugin = \"" << d.name << "\"\n";
    if (d.kind == Kind::Dataset)
      std::cout << "shots = 0  # labelled examples per class (0 = all)\n";
    for (const auto& s : d.schema.params)
      std::cout << s.key << " = " << value_toml(s.default_value) << "  # " << s.doc << "\n";
    std::cout << "\n";
  }
  return 0;
}

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

}  // namespace

int main(int argc, char** argv) {
  auto logger = spdlog::stderr_color_mt("tlab");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%H:%M:%S %^%l%$ %v");

  CLI::App app{"TransferLab: transfer-learning experiments with plugins, sweeps and results"};
  app.set_version_flag("--version", std::string("tlab ") + TLAB_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // global options (--plugin-path, -v) may follow the subcommand
  std::vector<std::string> plugin_paths;
  app.add_option("--plugin-path", plugin_paths,
                 "Extra plugin folder, searched first (repeatable; also TLAB_PLUGIN_PATH)");
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "Log every epoch and debug detail");

  auto* run = app.add_subcommand("run", "Run an experiment: one run, or every run of its sweep");
  std::string experiment, db = "results/results.db";
  std::vector<std::string> overrides, config_dirs;
  int threads = 0;
  bool multirun = false, dry_run = false, run_help = false, resolve = false, groups = false;
  run->set_help_flag();  // --help also lists the experiment's config groups (below)
  run->add_flag("-h,--help", run_help, "Print this help and the config groups of EXPERIMENT");
  run->add_option("experiment", experiment, "Experiment TOML file");
  run->add_option("overrides", overrides,
                  "Overrides: key=value, +key=value, ++key=value, ~key, group=option, "
                  "group@package=option; with -m also sweeps a,b,c / range() / choice() / "
                  "glob() / zip() (see docs/configuration.md)");
  run->add_flag("-m,--multirun", multirun, "Allow sweeps in the overrides (one run per value)");
  run->add_flag("--dry-run", dry_run, "List the runs with their overrides; run nothing");
  run->add_option("--config-dir", config_dirs,
                  "Extra folder of config groups (repeatable; searched after the experiment's "
                  "folder, before ./experiments)");
  run->add_option("--db", db, "Results database")->capture_default_str();
  run->add_option("--threads", threads,
                  "LibTorch intra-op threads per run (0 = cores / runs at once)")
      ->check(CLI::Range(0, 1024));
  SweepOptions sweep;
  std::string timeout_text, grace_text = "10s";
  run->add_option("-j,--jobs", sweep.jobs, "Runs at once, each in its own process")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  run->add_option("--timeout", timeout_text,
                  "Wall-clock limit per run: seconds, or with a unit (90s, 30m, 2h); then the "
                  "run gets SIGTERM and, after --grace, SIGKILL; status timeout");
  run->add_option("--grace", grace_text,
                  "Time a stopped run gets to flush and exit before SIGKILL (Ctrl-C, timeout)")
      ->capture_default_str();
  run->add_flag("--rerun", sweep.rerun,
                "Run again the runs already finished with the same config and plugin builds "
                "(default: skip them, so an interrupted sweep resumes)");
  std::string gpus_text;
  run->add_option("--gpus", gpus_text,
                  "GPU ids to hand out round-robin as CUDA_VISIBLE_DEVICES, e.g. 0,1,2,3 "
                  "(default: every visible GPU when a run's device is not cpu)");
  std::string spawn = "auto";
  run->add_option("--spawn", spawn,
                  "How a run's process starts: exec (a fresh tlab), fork (a copy of this "
                  "process, without reloading LibTorch: ~0.5 s less per run; CPU runs only) or "
                  "auto (fork when every run is on the CPU, else exec)")
      ->check(CLI::IsMember({"auto", "exec", "fork"}))
      ->capture_default_str();
  run->add_option("--runs-per-gpu", sweep.runs_per_gpu, "Runs sharing one GPU at once")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  std::string launcher_name;
  run->add_option("--launcher", launcher_name,
                  "Where the runs execute: local (child processes here, the default) or slurm "
                  "(one job array; sets launcher.name, options in [launcher] or the config "
                  "group launcher=slurm; see docs/cluster.md)")
      ->check(CLI::IsMember({"local", "slurm"}));
  run->add_flag("--in-process", sweep.in_process,
                "Run each run in this process, one after another, without a child process: "
                "for gdb, valgrind and sanitizers (no crash isolation, no --timeout)");
  run->add_flag("--wait", sweep.wait,
                "With --launcher slurm: wait for the tasks to end, then collect their results");
  bool profile = false;
  run->add_flag("--profile", profile,
                "Time each phase of training (data, forward, backward, optimizer, evaluation, "
                "logging) into the runs' summaries profile/<domain>/<phase>_seconds and log a "
                "line per stage (synchronises after each phase on a GPU)");

  // The child process of a sweep (not for users): executes one queued run of the database.
  auto* child = app.add_subcommand("_run", "");
  child->group("");  // hidden from --help
  int64_t child_id = 0;
  bool shard = false;
  child->add_option("--db", db)->required();
  child->add_option("--id", child_id)->required();
  child->add_option("--threads", threads);
  child->add_flag("--shard", shard);  // a SLURM task's own database (rollback journal)

  auto* config = app.add_subcommand(
      "config", "Print an experiment composed with its config groups and overrides");
  std::string config_format = "toml";
  config->add_option("experiment", experiment, "Experiment TOML file");
  config->add_option("overrides", overrides, "Overrides, as for tlab run");
  config->add_flag("-m,--multirun", multirun, "Allow sweeps in the overrides");
  config->add_flag("--resolve", resolve, "Resolve ${...} interpolations");
  config->add_option("--format", config_format, "toml, yaml or json")
      ->check(CLI::IsMember({"toml", "yaml", "json"}))
      ->capture_default_str();
  config->add_flag("--groups", groups, "List the config groups and their options");
  config->add_option("--config-dir", config_dirs, "Extra folder of config groups (repeatable)");

  auto* plugins = app.add_subcommand("plugins", "List plugins, or show one's parameters");
  auto* show = plugins->add_subcommand("show", "Parameters and a sample TOML of a plugin");
  std::string show_name;
  show->add_option("name", show_name, "Plugin name")->required();

  auto* results = app.add_subcommand("results", "Query the results database");
  results->require_subcommand(1);
  std::vector<cli::Command> result_commands;
  cli::add_results_query(*results, result_commands);
  cli::add_results_compare(*results, result_commands);
  cli::add_results_plot(*results, result_commands);
  cli::add_results_merge(*results, result_commands);

  std::vector<cli::Command> new_commands;
  cli::add_new_commands(app, new_commands);

  auto* sweep_cmd = app.add_subcommand(
      "sweep", "Follow, cancel and collect sweeps launched on SLURM (--launcher slurm)");
  sweep_cmd->require_subcommand(1);
  std::vector<cli::Command> sweep_commands;
  std::unique_ptr<PluginLoader> sweep_loader;
  cli::add_sweep_commands(*sweep_cmd, sweep_commands, [&]() -> PluginLoader& {
    if (!sweep_loader) {
      std::vector<fs::path> extra(plugin_paths.begin(), plugin_paths.end());
      sweep_loader = std::make_unique<PluginLoader>(PluginLoader::default_search_dirs(extra));
    }
    return *sweep_loader;
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : kUsageError;
  }
  if (verbose) spdlog::set_level(spdlog::level::debug);

  try {
    std::vector<fs::path> extra(plugin_paths.begin(), plugin_paths.end());
    PluginLoader loader(PluginLoader::default_search_dirs(extra));
    if (*child) return run_child(db, child_id, threads, loader, shard);
    for (const auto& c : new_commands)
      if (c.app->parsed()) return c.run();
    if (*sweep_cmd) {
      for (const auto& c : sweep_commands)
        if (c.app->parsed()) return c.run();
      return kUsageError;
    }
    if (*plugins) {
      return *show ? cmd_plugins_show(loader, show_name) : cmd_plugins_list(loader);
    }
    if (*results) {
      for (const auto& c : result_commands)
        if (c.app->parsed()) return c.run();
      return kUsageError;
    }
    LoadOptions load_options;
    load_options.config_dirs.assign(config_dirs.begin(), config_dirs.end());
    load_options.multirun = multirun;
    if (*config) {
      if (groups) {
        std::cout << cfg::describe_groups(
            cfg::SearchPath::for_experiment(experiment, load_options.config_dirs));
        return 0;
      }
      if (experiment.empty())
        throw UsageError("tlab config needs an experiment file (or --groups)");
      auto composition = compose_experiment(experiment, overrides, loader, load_options);
      cfg::Node shown = resolve ? cfg::resolve(composition.config) : composition.config;
      std::cout << cfg::format_tree(shown, config_format);
      return 0;
    }
    if (run_help) {
      std::cout << run->help();
      std::cout << "\n"
                << cfg::describe_groups(
                       cfg::SearchPath::for_experiment(experiment, load_options.config_dirs));
      return 0;
    }
    if (experiment.empty())
      throw UsageError(
          "tlab run needs an experiment file, e.g. tlab run experiments/quickstart.toml");
    // tlab run: compose, expand and validate every run before the first one starts.
    // --launcher NAME also picks the config group option launcher/NAME when there is one
    // (experiments/launcher/slurm.toml: partition, time, mem ...), as +launcher=NAME would, or
    // launcher=NAME when the defaults list already chooses a launcher.
    if (!launcher_name.empty() &&
        cfg::SearchPath::for_experiment(experiment, load_options.config_dirs)
            .find("launcher", launcher_name) &&
        std::none_of(overrides.begin(), overrides.end(), [](const std::string& o) {
          const std::string bare = o.substr(o.find_first_not_of('+'));
          return bare.rfind("launcher=", 0) == 0 || bare.rfind("launcher@", 0) == 0;
        })) {
      std::vector<std::string> with = overrides;
      with.insert(with.begin(), "+launcher=" + launcher_name);
      try {
        compose_experiment(experiment, with, loader, load_options);
      } catch (const ConfigError& e) {
        if (std::string(e.what()).find("already chooses") == std::string::npos) throw;
        with.front() = "launcher=" + launcher_name;
      }
      overrides = std::move(with);
    }
    std::vector<RunSpec> specs = load_experiment(experiment, overrides, loader, load_options);
    if (dry_run) {
      // Which runs a real start would skip (finished with the same key), if the database exists.
      std::optional<Store> existing;
      if (fs::exists(db) && !sweep.rerun) existing.emplace(open_store(db, false));
      std::cout << fmt::format("{}: {} run(s)\n", experiment, specs.size());
      for (std::size_t i = 0; i < specs.size(); ++i) {
        const int64_t done =
            existing ? existing->finished_run_with_key(run_key(specs[i], loader)) : 0;
        std::cout << fmt::format(
            "[{}/{}] {}{}\n", i + 1, specs.size(),
            specs[i].overrides.empty() ? "(no overrides)" : join(specs[i].overrides, " "),
            done ? fmt::format("  (finished as run {}: skipped; --rerun runs it again)", done)
                 : "");
      }
      return 0;
    }
    if (!launcher_name.empty())
      for (auto& spec : specs) spec.launcher.name = launcher_name;
    const LauncherSpec& launcher = sweep_launcher(specs);
    const bool on_slurm = launcher.name == "slurm";
    if (on_slurm) {
      auto refuse = [&](const char* option, const std::string& instead) {
        throw UsageError(
            fmt::format("{} applies to local runs, not to --launcher slurm; {}", option, instead));
      };
      if (!timeout_text.empty())
        refuse("--timeout", "set SLURM's time limit instead: launcher.time=HH:MM:SS");
      if (!gpus_text.empty())
        refuse("--gpus", "ask SLURM for GPUs instead: launcher.gpus_per_task=N");
      if (run->get_option("--spawn")->count()) refuse("--spawn", "leave --spawn out");
      // -j N: at most N tasks at once (--array=...%N) unless launcher.array_parallelism says.
      if (!run->get_option("--jobs")->count()) sweep.jobs = 0;
    } else if (sweep.wait) {
      throw UsageError("--wait applies to --launcher slurm; a local sweep always runs to its end");
    }
    // The runs read it in their own processes (exec, fork, in-process, SLURM tasks alike).
    if (profile) setenv("TLAB_PROFILE", "1", 1);
    if (sweep.in_process &&
        (on_slurm || !timeout_text.empty() || run->get_option("--spawn")->count() ||
         run->get_option("--jobs")->count() || !gpus_text.empty() ||
         run->get_option("--runs-per-gpu")->count()))
      throw UsageError(
          "--in-process runs one run at a time in this process: leave out --jobs, --timeout, "
          "--spawn, --gpus, --runs-per-gpu and --launcher slurm (choose the GPU with "
          "CUDA_VISIBLE_DEVICES)");
    if (!timeout_text.empty()) sweep.timeout = parse_seconds(timeout_text, "--timeout");
    sweep.grace = parse_seconds(grace_text, "--grace");
    if (!on_slurm) sweep.gpus = gpu_ids(gpus_text, specs);
    // auto: fork when every run is on the CPU ("cpu", or "auto" without a visible GPU); the
    // supervisor has run no LibTorch operation, so the copy is as clean as a new process.
    if (spawn == "auto" && !on_slurm && !sweep.in_process) {
      const bool all_cpu = std::all_of(specs.begin(), specs.end(), [&](const RunSpec& s) {
        return s.device == "cpu" || (s.device == "auto" && sweep.gpus.empty());
      });
      spawn = all_cpu ? "fork" : "exec";
      spdlog::debug("[sweep] --spawn auto: {}", spawn);
    }
    if (spawn == "fork") {
      for (const auto& spec : specs)
        if (spec.device != "cpu" && !(spec.device == "auto" && sweep.gpus.empty()))
          throw UsageError(fmt::format(
              "--spawn fork needs device = \"cpu\" in every run, but a run of '{}' has device "
              "\"{}\": a forked process cannot use CUDA safely; use --spawn exec or auto (the "
              "default)",
              experiment, spec.device));
      sweep.in_fork = [&db, &loader](int64_t id, int threads) {
        // The supervisor's logger colours its output for a terminal; a run writes to a pipe.
        spdlog::drop_all();
        spdlog::set_default_logger(spdlog::stderr_logger_mt("tlab"));
        spdlog::set_pattern("%H:%M:%S %l %v");
        return run_child(db, id, threads, loader);
      };
    }
    Store store = open_store(db, true);  // created and migrated before any child starts
    for (const auto& line : mark_lost_runs(store, 3 * heartbeat_interval()))
      spdlog::warn("[sweep] {}", line);
    install_stop_handlers();
    sweep.db = db;
    sweep.results_dir =
        fs::path(db).parent_path().empty() ? fs::path(".") : fs::path(db).parent_path();
    // --threads wins; else [run] threads (one value for the whole sweep); else cores / jobs.
    if (threads == 0 && !specs.empty()) {
      for (const auto& s : specs)
        if (s.threads != specs[0].threads)
          throw ConfigError(fmt::format(
              "the runs of this sweep set different run.threads ({} and {}); a sweep runs with "
              "one thread count: set it once, or use --threads",
              specs[0].threads, s.threads));
      threads = static_cast<int>(specs[0].threads);
    }
    sweep.threads = threads;
    sweep.verbose = verbose;
    sweep.plugin_paths = plugin_paths;
    spdlog::info("[runner] {}: {} run(s), results in '{}'", experiment, specs.size(), db);
    SweepResult result = make_launcher(launcher)->launch(specs, loader, store, sweep);
    if (on_slurm && result.stop_signal) return 128 + result.stop_signal;  // stopped waiting
    if (on_slurm && !sweep.wait) {
      if (result.submitted == 0) {
        std::cout << fmt::format(
            "\nnothing submitted: {} of {} run(s) already finished or in "
            "flight (tlab sweep list --db {})\n",
            result.skipped, result.total, db);
        return 0;
      }
      const std::string name = fs::path(result.sweep_dir).filename().string();
      std::cout << fmt::format(
          "\nsubmitted {} run(s) to SLURM as job array {} (sweep {}{})\n"
          "  follow:  tlab sweep status {} --db {}\n"
          "  collect: tlab sweep collect {} --db {}   (merges the ended tasks' shards)\n",
          result.submitted, result.job, name,
          result.skipped ? fmt::format(", {} run(s) skipped", result.skipped) : "", name, db, name,
          db);
      return 0;
    }
    std::cout << "\n" << format_comparison(store.list_runs(result.ids), {}, {"target/test/acc"});
    const std::size_t ran = result.total - result.skipped;
    if (!result.failures.empty()) {
      std::cerr << fmt::format("\n{} of {} runs failed:\n  {}\n", result.failures.size(),
                               result.total, join(result.failures, "\n  "));
      return result.stop_signal ? 128 + result.stop_signal : kRunFailed;
    }
    if (result.stop_signal) return 128 + result.stop_signal;
    std::cout << fmt::format(
        "\n{} run(s) finished{}; results in '{}' (tlab results list --db {})\n", ran,
        result.skipped ? fmt::format(", {} skipped as already finished", result.skipped) : "", db,
        db);
    return 0;
  } catch (const ConfigError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kUsageError;
  } catch (const PluginError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kUsageError;
  } catch (const UsageError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kUsageError;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return stop_signal() ? 128 + stop_signal() : kRunFailed;  // stopped by Ctrl-C: 130
  }
}
