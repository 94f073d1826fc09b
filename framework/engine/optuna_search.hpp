#pragma once
// `tlab run --sweeper optuna` in the training engine (optuna_search.cpp): the ask-and-tell loop
// between an Optuna study (run/optuna.hpp) and the sweep's launcher.

#include <cstddef>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "config/compose.hpp"
#include "config/experiment.hpp"
#include "run/executor.hpp"
#include "store/store.hpp"

namespace tlab::engine {

/// What the search optimises and where its study lives.
struct OptunaPlan {
  std::string metric;     ///< sweep.optuna.metric, default target/val/<train.monitor>.
  std::string direction;  ///< maximize / minimize (default: from the metric's name).
  std::string study;      ///< sweep.optuna.study, default <name>-<8 hex of the search>.
  std::string storage;    ///< An Optuna storage URL; default optuna.db beside `db`.
};

/// The plan of `search` for the runs of `probe`'s experiment, results in `db`.
OptunaPlan plan_optuna(const cfg::SearchSpec& search, const RunSpec& probe, const std::string& db);

/// Draws that, together, take every categorical choice and both ends of every interval: what
/// a search validates before it asks Optuna for anything.
std::vector<cfg::GivenDraw> probe_draws(const cfg::SearchSpec& search);

/// The search, as `--dry-run` and the start of a search print it.
void describe_optuna(const cfg::SearchSpec& search, const OptunaPlan& plan,
                     std::size_t runs_per_trial, std::ostream& out);

struct OptunaSearch {
  cfg::SearchSpec search;
  OptunaPlan plan;
  std::string experiment;
  std::size_t runs_per_trial = 1;  ///< The crossed runs of one trial (its seeds).
  int slots = 1;                   ///< Runs the launcher runs at once (-j).
  SweepOptions sweep;
  Store& store;
  /// The validated runs of these trials (load_experiment with the draws).
  std::function<std::vector<RunSpec>(const std::vector<cfg::GivenDraw>&)> expand;
  /// Runs them (the launcher's launch).
  std::function<SweepResult(const std::vector<RunSpec>&)> launch;
  /// A run's run key.
  std::function<std::string(const RunSpec&)> key;
};

/// Asks, runs and tells until the study has search.samples ended trials, or a signal stops it.
/// Throws OptunaError (Optuna missing, a study for another space, an objective the runs do not
/// record) and what `expand` throws.
SweepResult run_optuna_search(const OptunaSearch& s);

}  // namespace tlab::engine
