#pragma once
// `tlab results ...`: each subcommand lives in its own file (results_<name>.cpp) and registers
// itself here. main.cpp creates the `results` command, calls every add_* function, and after
// parsing runs the one the user chose.

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "../engine/api.hpp"
#include "errors.hpp"
#include "store/store.hpp"

namespace tlab::cli {

/// A registered subcommand: when `app` was chosen on the command line, main runs `run`, whose
/// return value is the exit code.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

/// Opens an existing results database for reading (UsageError naming the path and the fix when
/// it does not exist or is refused).
Store open_results(const std::string& db);

/// The run `spec` names in the database `db` (its path, for messages): an integer id, else a
/// case-insensitive prefix of a run's uuid. UsageError naming the ids that exist otherwise.
int64_t resolve_run(Store& store, const std::string& spec, const std::string& db);

/// Several runs: a comma-separated list of what resolve_run takes and id ranges "3-7" (both
/// ends included, each id must exist), in the order given, without repeats.
std::vector<int64_t> resolve_runs(Store& store, const std::string& spec, const std::string& db);

/// Adds `--db PATH` (default results/results.db) to `cmd`, bound to `db`.
void add_db_option(CLI::App& cmd, std::string& db);

// One per file; each appends its subcommands of `results` to `out`.
void add_results_query(CLI::App& results, std::vector<Command>& out);    // list, show, export
void add_results_compare(CLI::App& results, std::vector<Command>& out);  // compare, gain
void add_results_plot(CLI::App& results, std::vector<Command>& out);     // plot, report
void add_results_merge(CLI::App& results, std::vector<Command>& out);    // merge

}  // namespace tlab::cli

namespace tlab::cli {

/// `tlab new plugin KIND NAME [--dir DIR]` (new_plugin.cpp): an out-of-tree plugin project.
void add_new_commands(CLI::App& app, std::vector<Command>& out);

/// `tlab sweep list|status|cancel|collect` (sweep_cli.cpp): SLURM sweeps. Resubmitting failed
/// tasks (collect --retry-failed) is the engine's, with `globals` (--plugin-path, -v).
void add_sweep_commands(CLI::App& sweep, std::vector<Command>& out,
                        std::shared_ptr<engine::Globals> globals);

/// `tlab run`, `tlab _run`, `tlab config`, `tlab plugins` (engine_cli.cpp): parsed here, run by
/// the training engine.
void add_engine_commands(CLI::App& app, std::vector<Command>& out,
                         std::shared_ptr<engine::Globals> globals);

}  // namespace tlab::cli
