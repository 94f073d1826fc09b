#pragma once
// Tables of results: one row per run (`tlab results list`); runs grouped by configuration with
// mean ± standard error over seeds, optionally as a pivot table with one column per value of a
// key and a model-selection rule (`tlab results compare`, and the end of `tlab run`); and the
// transfer gain of each method over a baseline with a paired t-test (`tlab results gain`).

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "results/stats.hpp"
#include "results/table.hpp"
#include "store/store.hpp"

namespace tlab {

/// One evaluation of a run (Store::evaluations) as a table: the confusion matrix (rows the true
/// class, columns the predicted one) with each class's precision, recall, F1 and support, and
/// the headline metrics as notes under it. Beyond `max_matrix_classes` classes the matrix
/// columns are left out (a note says so) and only the per-class columns remain.
Table evaluation_table(const EvaluationRecord& evaluation, int64_t max_matrix_classes = 20);

/// Output formats of `tlab results list`.
enum class Format { Table, Json, Csv };

/// Parses "table", "json" or "csv"; throws std::invalid_argument naming the choices.
Format parse_format(const std::string& s);

/// One row per run. Table: id, status, name, the params that differ between the runs, and the
/// main summaries (target test and val accuracy, wall time). CSV: every param and summary.
/// JSON: an array of {id, name, status, reason, seed, device, started_at, ended_at,
/// params: {key: value}, summary: {metric: value}}; non-finite summaries are null in JSON.
std::string format_runs(const std::vector<RunSummaryRow>& runs, Format format);

/// format_runs as a table or CSV, built one run at a time (Store::for_each_run): of each run it
/// keeps the id, status, name, the summaries the format shows, and each param as an index into
/// its key's distinct values, a few hundred bytes a run (`tlab results list` on 1,000 runs,
/// docs/benchmarks.md). render() gives what format_runs gives for the same runs.
class RunListing {
 public:
  /// Format::Table or Format::Csv (std::invalid_argument for Json: it needs every value).
  explicit RunListing(Format format);
  void add(const RunSummaryRow& run);
  std::string render() const;

 private:
  struct Key {
    std::vector<std::string> values;          // distinct texts, by first appearance
    std::map<std::string, uint32_t> indexes;  // text -> index in values
    std::size_t present = 0;                  // runs that have the key
  };
  struct Row {
    int64_t id = 0;
    std::string status, name;
    std::vector<std::pair<uint32_t, uint32_t>> params;   // (key id, value index)
    std::vector<std::pair<uint32_t, double>> summaries;  // (metric id, value)
  };
  Format format_;
  std::map<std::string, uint32_t> key_ids_, metric_ids_;  // name -> id, in name order
  std::vector<Key> keys_;
  std::vector<Row> rows_;
};

/// A comparison or gain table cannot be built as asked: an unknown key, metric or baseline, a
/// metric without the per-epoch history a selection rule needs, conflicting options. The
/// message names the database, the offending value, the nearest valid one and the fix.
class ReportError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Which epoch of a run a comparison reports (model selection; names as in DomainBed,
/// Gulrajani & Lopez-Paz 2021).
enum class Selection {
  /// The value after the last epoch: the run's summary.
  Final,
  /// "Training-domain validation": the target-stage epoch with the highest source/val/acc.
  /// Runs without source/val/acc in their target stage (no source domain) use Final.
  SourceVal,
  /// "Test-domain validation" (oracle): the epoch with the highest target/val/acc.
  Oracle,
};

/// Parses "final", "source-val" or "oracle"; throws ReportError naming the value and choices.
Selection parse_selection(const std::string& name);
/// "final", "source-val" or "oracle".
std::string selection_name(Selection selection);

/// What `compare_table` shows.
struct CompareOptions {
  /// Row keys (params). Empty: `strategy.plugin` with a pivot (when it is not the pivot key),
  /// else the params that vary except `seed` and the options of a varying plugin that are
  /// constant per plugin.
  std::vector<std::string> group_by;
  /// Metrics, one column each. A pivot table shows exactly one.
  std::vector<std::string> metrics = {"target/test/acc"};
  Selection selection = Selection::Final;
  /// A param whose values become the columns ("target.variant"); "" = no pivot.
  std::string pivot;
  /// For CSV and JSON: every statistic in its own column at full precision ("<m> mean",
  /// "<m> se", "<m> n"), instead of "mean ± s.e." text with 4 decimals.
  bool machine_readable = false;
  /// The `--where` expression that chose the runs ("" = all); only named in messages.
  std::string where;
  /// Model selection over a search (`--select-config`): "" = none; "source-val"
  /// (training-domain validation, source/val/acc), "source-val-worst" (source/val/worst/acc,
  /// the worst pooled source domain's), "oracle" (target/val/acc) or a metric
  /// name. Per row, the configuration (the values of the keys the sweep searched, from
  /// runs.search) with the best mean validation value over its seeds is chosen, and the
  /// metrics are shown for its runs (DomainBed's table).
  std::string select_config;
};

/// Groups the finished runs of `runs` (read from `store`) and shows each metric as
/// "mean ± s.e." over the runs of each group, with the group's run count. With a pivot: one
/// row per group, one column per pivot value (sorted; numerically when all are numbers), each
/// cell "mean ± s.e." over that cell's runs, and "Avg" = the mean of the row's column means
/// (blank when the row lacks a column). Notes under the table count the runs that did not
/// finish, lack a value, or fell back to the final value; and name params that differ within
/// a cell although they are not seeds. A cell of one run shows its value without "± s.e.".
/// The selection rules other than Final read metric histories from `store`. Throws
/// ReportError (see there).
Table compare_table(Store& store, const std::vector<RunSummaryRow>& runs,
                    const CompareOptions& options);

/// The domain of a `tlab eval` summary `eval/<domain>/<split_metric>` (e.g. "rotated" for
/// "eval/rotated/test/acc" and "test/acc"); "" when `summary` is not one.
std::string evaluated_domain(const std::string& summary, const std::string& split_metric);

/// The cross-domain matrix's runs (`tlab results compare --cross-domain`): for each run and each
/// label L it was evaluated on with `tlab eval` (summary `eval/L/<split>/<metric>`), a copy of
/// the run with the param `eval.domain` = L and the one summary `eval/*/<split>/<metric>` =
/// that value. compare_table pivoted on `eval.domain` then gives rows of runs or methods,
/// columns of evaluated domains, mean ± s.e. over seeds. `split_metric` is "<split>/<metric>"
/// (e.g. "test/acc"); ReportError when it is not of that form or no run has such a summary.
std::vector<RunSummaryRow> cross_domain_rows(const std::vector<RunSummaryRow>& runs,
                                             const std::string& split_metric,
                                             const std::string& db);

/// compare_table of the final summaries, grouped by `by`, rendered as text (the end of
/// `tlab run`). Unknown keys and metrics give empty cells here, not errors.
std::string format_comparison(const std::vector<RunSummaryRow>& runs,
                              const std::vector<std::string>& by,
                              const std::vector<std::string>& metrics);

/// What `gain_table` shows.
struct GainOptions {
  /// `strategy.plugin` of the reference runs (trained without transfer).
  std::string baseline = "scratch";
  /// A summary metric; gain = method - baseline, so "higher is better" is assumed.
  std::string metric = "target/test/acc";
  /// Row keys. Empty: `strategy.plugin`, then the other params that vary among the transfer
  /// runs except `seed`, `target.*` and `backbone.*` (and options of a varying plugin that are
  /// constant per plugin).
  std::vector<std::string> group_by;
  /// For CSV and JSON: numbers at full precision instead of 4 decimals.
  bool machine_readable = false;
  /// The `--where` expression that chose the runs ("" = all); only named in messages.
  std::string where;
};

/// Transfer gain: each finished run whose strategy.plugin is not `baseline` is paired with the
/// finished baseline run with the same seed and the same `target.*` and `backbone.*` params.
/// When several baseline runs qualify, the ones whose other non-strategy params also equal the
/// transfer run's are preferred; identical duplicates resolve to the newest (highest id), and
/// a remaining ambiguity is a ReportError. One row per group: pairs, mean of the baseline and
/// of the method, mean gain, its s.e., t, the paired t-test's two-sided p-value (Student t,
/// n - 1 df) and a flag: "NEGATIVE TRANSFER" (mean gain < 0 and p < 0.05) or "negative (n.s.)"
/// (mean gain < 0 otherwise). Notes count unmatched transfer and baseline runs, runs without
/// a finite value, and unfinished runs.
Table gain_table(Store& store, const std::vector<RunSummaryRow>& runs, const GainOptions& options);

/// What `transferability_table` shows.
struct TransferabilityOptions {
  /// strategy.plugin of the runs without transfer the gains are measured against.
  std::string baseline = "scratch";
  /// The realised outcome (higher is better).
  std::string metric = "target/test/acc";
  bool machine_readable = false;  ///< Full precision for CSV and JSON.
  std::string where;              ///< Only named in messages.
};

/// The scores the runs recorded (summaries transfer/<score>, [eval] transferability), in the
/// order logme, leep, nce, hscore.
const std::vector<std::string>& transferability_scores();

/// One run's point in a score's scatter plot.
struct ScorePoint {
  int64_t run = 0;
  double score = 0, metric = 0;
  double gain = 0;    ///< metric - its baseline run's; NaN when the run has no baseline run.
  std::string group;  ///< Its configuration: the values of group_keys ("clean, finetune").
};

/// Every finished run of `runs` that recorded scores, with its realised `metric` and its gain
/// over the paired `baseline` run (gain_table's pairing: target.*, backbone.* but its weights,
/// seed): per score, the points; `notes` says what was left out. Throws ReportError when no run
/// recorded a score (naming how to record them) or the metric is unknown.
struct TransferabilityData {
  std::map<std::string, std::vector<ScorePoint>> points;  ///< By score name ("logme").
  std::vector<std::string> group_keys;   ///< What ScorePoint::group shows (varying params).
  std::vector<std::string> group_names;  ///< The same, short: "domain" for source.domain.
  std::vector<std::string> notes;
};
TransferabilityData transferability_data(const std::vector<RunSummaryRow>& runs,
                                         const TransferabilityOptions& options,
                                         const std::string& db);

/// Does a score rank the runs as they turned out? One row per score: runs, Kendall's tau-b and
/// Pearson's r (each with its two-sided p, scipy.stats's) against the metric and against the
/// gain over the baseline, and a flag where a score ranks against the outcome (tau < 0).
Table transferability_table(Store& store, const std::vector<RunSummaryRow>& runs,
                            const TransferabilityOptions& options);

}  // namespace tlab
