// tlab sweep: follow, cancel and collect the sweeps launched on SLURM (run/slurm.hpp).
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "engine_client.hpp"
#include "results_cli.hpp"
#include "run/slurm_state.hpp"
#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab::cli {

namespace {

struct Options {
  std::string db = "results/results.db";
  std::string sweep;
  std::vector<int> tasks;
  bool retry_failed = false;
};

fs::path sweep_dir(Options& o, CLI::App& cmd) {
  // A sweep named by its folder brings its database, unless --db says otherwise.
  std::error_code ec;
  if (!cmd.get_option("--db")->count() && fs::exists(fs::path(o.sweep) / "sweep.json", ec)) {
    const fs::path owner = slurm::sweep_database(o.sweep);
    if (!owner.empty()) o.db = owner.string();
  }
  try {
    return slurm::find_sweep(o.db, o.sweep);
  } catch (const slurm::SlurmError& e) {
    throw UsageError(e.what());
  }
}

}  // namespace

void add_sweep_commands(CLI::App& sweep, std::vector<Command>& out,
                        std::shared_ptr<engine::Globals> globals) {
  auto o = std::make_shared<Options>();
  const char* sweep_help =
      "Sweep: its name under <db folder>/sweeps, a unique prefix of it, or its folder "
      "(default: the newest)";

  auto* list = sweep.add_subcommand("list", "The sweeps launched on SLURM with this database");
  add_db_option(*list, o->db);
  out.push_back({list, [o] {
                   const auto all = slurm::list_sweeps(o->db);
                   if (all.empty()) {
                     std::cout << fmt::format("no sweeps in {}\n",
                                              slurm::sweeps_dir(o->db).string());
                     return 0;
                   }
                   for (const auto& dir : all) {
                     const auto st = slurm::sweep_status(dir);
                     std::vector<std::string> parts;
                     for (const auto& [state, n] : st.counts())
                       parts.push_back(fmt::format("{} {}", n, state));
                     std::cout << fmt::format("{}  {}  job(s) {}  {}\n", st.name, st.experiment,
                                              st.jobs, join(parts, ", "));
                   }
                   return 0;
                 }});

  auto* status = sweep.add_subcommand(
      "status", "Progress of a SLURM sweep: each task's state (from its shard and from SLURM)");
  status->add_option("sweep", o->sweep, sweep_help);
  add_db_option(*status, o->db);
  out.push_back({status, [o, status] {
                   std::cout << slurm::format_status(slurm::sweep_status(sweep_dir(*o, *status)));
                   return 0;
                 }});

  auto* cancel = sweep.add_subcommand("cancel", "Cancel a SLURM sweep's pending and running tasks");
  cancel->add_option("sweep", o->sweep, sweep_help);
  cancel->add_option("--task", o->tasks, "Cancel only these tasks (repeatable)");
  add_db_option(*cancel, o->db);
  out.push_back({cancel, [o, cancel] {
                   const fs::path dir = sweep_dir(*o, *cancel);
                   std::vector<std::string> ids;
                   try {
                     ids = slurm::cancel_sweep(dir, o->tasks);
                   } catch (const std::invalid_argument& e) {
                     throw UsageError(e.what());
                   }
                   if (ids.empty())
                     std::cout << "nothing to cancel: no task of the sweep is pending or running\n";
                   else
                     std::cout << fmt::format(
                         "cancelled {} task(s): {}; their runs become 'cancelled' when "
                         "collected (tlab sweep collect {})\n",
                         ids.size(), join(ids, " "), dir.filename().string());
                   return 0;
                 }});

  auto* collect = sweep.add_subcommand(
      "collect",
      "Merge the shards of a SLURM sweep's ended tasks into the results database (again and "
      "again: runs already merged are skipped)");
  collect->add_option("sweep", o->sweep, std::string(sweep_help) + "; default here: every sweep");
  collect->add_flag("--retry-failed", o->retry_failed,
                    "Then submit again the tasks that failed, crashed, timed out, ran out of "
                    "memory or lost their node (not cancelled ones)");
  add_db_option(*collect, o->db);
  out.push_back({collect, [o, globals, collect] {
                   std::vector<fs::path> dirs;
                   if (o->sweep.empty())
                     dirs = slurm::list_sweeps(o->db);
                   else
                     dirs.push_back(sweep_dir(*o, *collect));
                   if (dirs.empty()) {
                     std::cout << fmt::format("no sweeps in {}\n",
                                              slurm::sweeps_dir(o->db).string());
                     return 0;
                   }
                   Store store = open_results(o->db);  // the sweeps' database exists
                   int code = 0;
                   engine::RetryArgs retry{o->db, {}};
                   for (const auto& dir : dirs) {
                     const auto r = slurm::collect_sweep(dir, store);
                     std::cout << fmt::format(
                         "sweep {}: merged {} run(s) into {} ({} merged before), {} task(s) "
                         "still pending or running\n",
                         dir.filename().string(), r.merged, o->db, r.already, r.open);
                     for (const auto& line : r.lines) std::cout << "  " << line << "\n";
                     if (!r.lines.empty()) code = kRunFailed;
                     retry.sweeps.push_back(dir.string());
                     retry.unfinished.push_back(!r.lines.empty());
                   }
                   // Resubmitting validates the runs with their plugins: the engine's part.
                   if (o->retry_failed)
                     return open_engine("sweep collect --retry-failed").retry(*globals, retry);
                   return code;
                 }});
}

}  // namespace tlab::cli
