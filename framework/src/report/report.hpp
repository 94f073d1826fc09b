#pragma once
// Tables of results: one row per run (`tlab results list`) and runs grouped by configuration
// with mean ± standard error over seeds (`tlab results compare`, and the end of `tlab run`).

#include <string>
#include <vector>

#include "store/store.hpp"

namespace tlab {

/// Output formats of `tlab results list`.
enum class Format { Table, Json, Csv };

/// Parses "table", "json" or "csv"; throws std::invalid_argument naming the choices.
Format parse_format(const std::string& s);

/// One row per run. Table: id, status, name, the params that differ between the runs, and the
/// main summaries (target test and val accuracy, wall time). CSV: every param and summary.
/// JSON: an array of {id, name, status, reason, seed, device, started_at, ended_at,
/// params: {key: value}, summary: {metric: value}}; non-finite summaries are null in JSON.
std::string format_runs(const std::vector<RunSummaryRow>& runs, Format format);

/// Groups runs by `by` (param keys; empty = the params that vary, except `seed` and the options
/// of a varying plugin that are constant per plugin) and shows `metrics` as "mean ± s.e." over
/// each group's finished runs, with the group's run count.
std::string format_comparison(const std::vector<RunSummaryRow>& runs,
                              const std::vector<std::string>& by,
                              const std::vector<std::string>& metrics);

/// Mean and standard error (sample standard deviation / sqrt(n); 0 for n = 1).
struct MeanSe {
  double mean = 0;
  double se = 0;
  std::size_t n = 0;
};
MeanSe mean_se(const std::vector<double>& values);

}  // namespace tlab
