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

/// One row per run: id, status, name, the params that differ between the runs, the summaries.
/// JSON: an array of {id, name, status, reason, params: {key: value}, summary: {metric: value}}
/// with every param; non-finite summaries are null in JSON.
std::string format_runs(const std::vector<RunSummaryRow>& runs, Format format);

/// Groups runs by `by` (param keys; empty = every param that varies except `seed`) and shows
/// `metrics` as "mean ± s.e. (n)" over each group's finished runs.
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
