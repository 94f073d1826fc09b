#pragma once
// The one-file HTML report (`tlab results report`): tables of the runs and the plots of plot.hpp
// inlined as SVG.
//
// Example:
//   plot::ReportOptions options;
//   options.source = "results/results.db";
//   plot::write_text_file("report.html", plot::html_report(store, store.list_runs(), options));

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "results/plot.hpp"
#include "results/table.hpp"
#include "store/store.hpp"

namespace tlab::plot {

struct ReportOptions {
  std::string title = "TransferLab results";  ///< Page title and heading.
  std::string source;  ///< Shown under the title, e.g. the database path ("" = not shown).
  std::string where;   ///< The filter used, shown when not "".
  /// Metrics whose histories are plotted (against the target stage's epoch) when some run has
  /// them.
  std::vector<std::string> curve_metrics = {"target/test/acc", "target/val/acc",
                                            "target/train/loss", "source/train/loss"};
};

/// The evaluations of each run (Store::evaluations), by run id.
using Evaluations = std::map<int64_t, std::vector<EvaluationRecord>>;

/// One self-contained HTML page (inline CSS, inline SVG, a small sorting script; nothing from
/// the network): runs by status, the comparison table (mean ± s.e. per configuration over
/// seeds), learning curves of the main metrics, a bar chart of the main summary, and the runs
/// that did not finish with their reasons; with `evaluations`, the cross-domain matrix (mean ±
/// s.e. of eval/<domain>/test/acc per configuration) and each configuration's target-test
/// confusion matrix (summed over its runs) as a heat map. All text from the database is escaped.
/// `selections`: model selection over a search (compare_table with select_config), shown as
/// a section when not empty.
std::string html_report(const std::vector<RunSummaryRow>& runs, const Histories& histories,
                        const ReportOptions& options, const Evaluations& evaluations = {},
                        const std::vector<Table>& selections = {});

/// As above, reading the histories of `runs` from `store`; with the model selection of
/// `tlab results compare --select-config oracle` (and source-val when runs log source/val/acc)
/// when runs record a search.
std::string html_report(Store& store, const std::vector<RunSummaryRow>& runs,
                        const ReportOptions& options);

}  // namespace tlab::plot
