#pragma once
// `tlab results ...`: each subcommand lives in its own file (results_<name>.cpp) and registers
// itself here. main.cpp creates the `results` command, calls every add_* function, and after
// parsing runs the one the user chose.

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "store/store.hpp"

namespace tlab::cli {

/// Thrown for problems the user must fix (exit code 2): a missing database, an unknown key.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A registered subcommand: when `app` was chosen on the command line, main runs `run`, whose
/// return value is the exit code.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

/// Opens an existing results database for reading (UsageError naming the path and the fix when
/// it does not exist or is refused).
Store open_results(const std::string& db);

/// Adds `--db PATH` (default results/results.db) to `cmd`, bound to `db`.
void add_db_option(CLI::App& cmd, std::string& db);

// One per file; each appends its subcommands of `results` to `out`.
void add_results_query(CLI::App& results, std::vector<Command>& out);    // list, show, export
void add_results_compare(CLI::App& results, std::vector<Command>& out);  // compare, gain
void add_results_plot(CLI::App& results, std::vector<Command>& out);     // plot, report
void add_results_merge(CLI::App& results, std::vector<Command>& out);    // merge

}  // namespace tlab::cli

namespace tlab {
class PluginLoader;
}

namespace tlab::cli {

/// `tlab new plugin KIND NAME [--dir DIR]` (new_plugin.cpp): an out-of-tree plugin project.
void add_new_commands(CLI::App& app, std::vector<Command>& out);

/// `tlab sweep list|status|cancel|collect` (sweep_cli.cpp): SLURM sweeps. `loader` gives the
/// plugin loader (needed to resubmit runs).
void add_sweep_commands(CLI::App& sweep, std::vector<Command>& out,
                        std::function<PluginLoader&()> loader);

}  // namespace tlab::cli
