// tlab: the TransferLab command line. Exit codes: 0 success, 1 a run failed, 2 usage or
// configuration error (nothing was run), 3 out of memory before a run could record it,
// 128 + signal when stopped by one.
//
// This front does not link LibTorch. It defines and parses every command; results, sweep
// (list, status, cancel, collect), new, --help and --version run here in milliseconds, and the
// commands that train or open plugins (run, _run, config, plugins, sweep collect
// --retry-failed) call the training engine, libtlab_engine.so, opened on first need
// (engine_cli.cpp, engine_client.hpp, framework/engine/api.hpp).

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <memory>
#include <new>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "config/node.hpp"
#include "engine_client.hpp"
#include "results_cli.hpp"
#include "util.hpp"

using namespace tlab;

namespace {

// LibTorch's static initialisers allocate as the engine loads; under a tight memory limit they
// throw std::bad_alloc through dlopen, where nothing can catch it. Said as one line, with the
// exit code of an out-of-memory failure (a run's supervisor then records the run as oom).
[[noreturn]] void on_terminate() {
  if (auto current = std::current_exception()) {
    try {
      std::rethrow_exception(current);
    } catch (const std::bad_alloc&) {
      const std::string line = "error: out of memory" + memory_limit_hint() + "\n";
      [[maybe_unused]] auto n = ::write(STDERR_FILENO, line.data(), line.size());
      std::_Exit(cli::kOutOfMemory);
    } catch (...) {
    }
  }
  __gnu_cxx::__verbose_terminate_handler();  // the default: names the exception, aborts
  std::abort();
}

}  // namespace

int main(int argc, char** argv) {
  std::set_terminate(on_terminate);
  auto logger = spdlog::stderr_color_mt("tlab");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%H:%M:%S %^%l%$ %v");

  CLI::App app{"TransferLab: transfer-learning experiments with plugins, sweeps and results"};
  app.set_version_flag("--version", std::string("tlab ") + TLAB_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // global options (--plugin-path, -v) may follow the subcommand
  auto globals = std::make_shared<engine::Globals>();
  app.add_option("--plugin-path", globals->plugin_paths,
                 "Extra plugin folder, searched first (repeatable; also TLAB_PLUGIN_PATH)");
  app.add_flag("-v,--verbose", globals->verbose, "Log every epoch and debug detail");

  std::vector<cli::Command> commands;
  cli::add_engine_commands(app, commands, globals);  // run, _run, config, plugins

  auto* results = app.add_subcommand("results", "Query the results database");
  results->require_subcommand(1);
  cli::add_results_query(*results, commands);
  cli::add_results_compare(*results, commands);
  cli::add_results_plot(*results, commands);
  cli::add_results_merge(*results, commands);

  cli::add_new_commands(app, commands);

  auto* sweep = app.add_subcommand(
      "sweep", "Follow, cancel and collect sweeps launched on SLURM (--launcher slurm)");
  sweep->require_subcommand(1);
  cli::add_sweep_commands(*sweep, commands, globals);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : cli::kUsageError;
  }
  if (globals->verbose) spdlog::set_level(spdlog::level::debug);

  try {
    // A --plugin-path that names no folder is a typo, not an empty search path: said at once.
    for (const auto& path : globals->plugin_paths) {
      std::error_code ec;
      const auto st = std::filesystem::status(path, ec);
      if (ec && ec.value() == ELOOP)
        throw cli::UsageError(fmt::format(
            "--plugin-path '{}' is a loop of symbolic links; point it at a folder of plugin "
            "libraries",
            path));
      if (!std::filesystem::exists(st))
        throw cli::UsageError(fmt::format(
            "--plugin-path '{}': no such folder; expected a folder of plugin libraries (.so), "
            "e.g. build/plugins or an out-of-tree plugin's build folder",
            path));
      if (!std::filesystem::is_directory(st))
        throw cli::UsageError(fmt::format(
            "--plugin-path '{}' is not a folder; give the folder that holds the plugin's .so",
            path));
    }
    // The innermost chosen command: `plugins show` is registered as `plugins`.
    for (const auto& c : commands)
      if (c.app->parsed()) return c.run();
    return cli::kUsageError;
  } catch (const ConfigError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return cli::kUsageError;
  } catch (const cli::UsageError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return cli::kUsageError;
  } catch (const cli::OutOfMemory& e) {
    std::cerr << "error: " << e.what() << "\n";
    return cli::kOutOfMemory;
  } catch (const std::bad_alloc&) {
    std::cerr << "error: out of memory" << memory_limit_hint() << "\n";
    return cli::kOutOfMemory;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return cli::kRunFailed;
  }
}
