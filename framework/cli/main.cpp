// tlab: the TransferLab command line. Exit codes: 0 success, 1 a run failed, 2 usage or
// configuration error (nothing was run).

#include <algorithm>
#include <cmath>
#include <iostream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "report/report.hpp"
#include "results_cli.hpp"
#include "run/runner.hpp"
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
  auto found = loader.discover(refused);
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
  run->add_option("--threads", threads, "LibTorch intra-op threads (0 = LibTorch's default)")
      ->check(CLI::Range(0, 1024));

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
    std::vector<RunSpec> specs = load_experiment(experiment, overrides, loader, load_options);
    if (dry_run) {
      std::cout << fmt::format("{}: {} run(s)\n", experiment, specs.size());
      for (std::size_t i = 0; i < specs.size(); ++i)
        std::cout << fmt::format(
            "[{}/{}] {}\n", i + 1, specs.size(),
            specs[i].overrides.empty() ? "(no overrides)" : join(specs[i].overrides, " "));
      return 0;
    }
    Store store = open_store(db, true);
    configure_threads(threads);
    install_stop_handlers();
    RunOptions options;
    options.results_dir =
        fs::path(db).parent_path().empty() ? fs::path(".") : fs::path(db).parent_path();
    options.threads = threads;
    options.verbose = verbose || specs.size() == 1;
    spdlog::info("[runner] {}: {} run(s), results in '{}'", experiment, specs.size(), db);
    std::vector<int64_t> ids;
    std::vector<std::string> failures;
    for (std::size_t i = 0; i < specs.size(); ++i) {
      spdlog::info("[runner] run {} of {}: {}", i + 1, specs.size(),
                   specs[i].overrides.empty() ? "(no overrides)" : join(specs[i].overrides, " "));
      RunOutcome o = execute_run(specs[i], loader, store, options);
      ids.push_back(o.id);
      if (o.status != "finished")
        failures.push_back(fmt::format("run {} {}: {}", o.id, o.status, o.reason));
      if (stop_signal()) {
        std::cerr << fmt::format("\nstopped by signal {}: {} of {} runs not started\n",
                                 stop_signal(), specs.size() - i - 1, specs.size());
        break;
      }
    }
    std::cout << "\n" << format_comparison(store.list_runs(ids), {}, {"target/test/acc"});
    if (!failures.empty()) {
      std::cerr << fmt::format("\n{} of {} runs failed:\n  {}\n", failures.size(), specs.size(),
                               join(failures, "\n  "));
      return stop_signal() ? 128 + stop_signal() : kRunFailed;
    }
    if (stop_signal()) return 128 + stop_signal();  // stopped early, even if every run finished
    std::cout << fmt::format("\n{} run(s) finished; results in '{}' (tlab results list --db {})\n",
                             specs.size(), db, db);
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
    return kRunFailed;
  }
}
