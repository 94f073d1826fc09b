#pragma once
// ASHA, asynchronous successive halving (Li et al., "A System for Massively Parallel
// Hyperparameter Tuning", MLSys 2020), across the runs of a sweep ([sweep.asha]): each run, at
// rungs of min_epochs * reduction^k epochs of its target stage, records its validation value and
// goes on only when that value is among the best 1/reduction of the values its bracket's runs
// recorded at that rung so far. Runs never wait for each other (the first runs at a rung always
// go on), as Optuna's SuccessiveHalvingPruner decides. The values live in the database (metric
// "asha/rung", epoch = the rung's epochs), so runs in other processes and later sweeps resuming
// this one compare with each other (SLURM tasks write shard databases: refused there).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "store/store.hpp"

namespace tlab {

struct AshaSpec {
  int64_t min_epochs = 1;
  int64_t reduction = 3;
  std::string bracket;  ///< Runs with the same bracket compete.
};

/// The pruner of a run's search JSON (RunSpec::search_json); nothing when it has none.
std::optional<AshaSpec> asha_of(const std::string& search_json);

/// Whether `epochs_done` (1-based) is a rung: min_epochs * reduction^k.
bool is_rung(int64_t epochs_done, const AshaSpec& spec);

/// Optuna's rule: with `values` the rung's values of the bracket (this run's `mine` among
/// them), the run goes on when `mine` is at least the (n / reduction)-th best (the best when
/// n < reduction). NaN counts as the worst.
bool asha_promotes(std::vector<double> values, double mine, int64_t reduction, bool higher);

/// The name of the metric a rung's value is recorded under.
inline constexpr const char* kAshaMetric = "asha/rung";

class AshaPruner {
 public:
  AshaPruner(Store& store, int64_t run, AshaSpec spec, std::string monitor, bool higher);
  /// After `epochs_done` epochs with the validation value `value`: "" to go on, or why the run
  /// stops. At a rung the value is recorded first, then compared.
  std::string after_epoch(int64_t epochs_done, double value);

 private:
  Store& store_;
  int64_t run_;
  AshaSpec spec_;
  std::string monitor_;
  bool higher_;
};

}  // namespace tlab
