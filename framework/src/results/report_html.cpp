// The HTML report: one self-contained page of tables and inline SVG plots.
#include "results/report_html.hpp"

#include <chrono>
#include <cmath>
#include <ctime>
#include <map>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "report/report.hpp"
#include "results/classification.hpp"
#include "results/stats.hpp"
#include "util.hpp"

namespace tlab::plot {
namespace {

const char* kReportStyle = R"(
body{font-family:"DejaVu Sans",Verdana,Arial,sans-serif;color:#222;background:#fff;
  margin:24px auto;max-width:1320px;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:12px 0 4px}
.meta{color:#555;font-size:13px;margin:0 0 8px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
.wide{overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" \25B2"}
table.sortable th[aria-sort=descending]::after{content:" \25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best{font-weight:bold}
td.reason{white-space:pre-wrap;font-family:"DejaVu Sans Mono",monospace;font-size:12px;
  max-width:760px}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-size:12px}
.figs{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;border:1px solid #eee;padding:8px;max-width:100%}
figure svg{max-width:100%;height:auto;display:block}
figcaption,.note{color:#555;font-size:12px;margin:2px 0}
.empty{color:#777;font-style:italic}
table.confusion td{min-width:28px}
footer{margin-top:32px;color:#777;font-size:12px}
)";

const char* kReportScript = R"(
(function () {
  function key(cell) {
    var v = cell.getAttribute('data-v');
    if (v === null) v = cell.textContent.trim();
    var n = Number(v);
    return v !== '' && isFinite(n) ? {num: true, v: n} : {num: false, v: v.toLowerCase()};
  }
  var tables = document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables, function (table) {
    if (!table.tHead || !table.tBodies.length) return;
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th) {
      th.title = 'Click to sort';
      th.addEventListener('click', function () {
        var col = th.cellIndex;
        var asc = th.getAttribute('aria-sort') !== 'ascending';
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]), c;
          if (x.num && y.num) c = x.v - y.v;
          else if (x.num !== y.num) c = x.num ? -1 : 1;
          else c = x.v < y.v ? -1 : x.v > y.v ? 1 : 0;
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
)";

std::string status_color(const std::string& status) {
  if (status == "finished") return "#009E73";
  if (status == "failed" || status == "crashed" || status == "oom") return "#D55E00";
  if (status == "diverged") return "#B8860B";
  if (status == "killed" || status == "timeout" || status == "lost" || status == "cancelled" ||
      status == "node_fail")
    return "#CC79A7";
  if (status == "running" || status == "queued") return "#0072B2";
  return "#777777";
}

std::string badge(const std::string& status) {
  return fmt::format("<span class=\"badge\" style=\"background:{}\">{}</span>",
                     status_color(status), escape_html(status));
}

std::string html_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{:.4f}", v);
}

// The summaries shown in the comparison table: the main ones first, then the others.
std::vector<std::string> table_metrics(const std::vector<const RunSummaryRow*>& runs) {
  std::set<std::string> present;
  for (const auto* r : runs)
    for (const auto& [k, v] : r->summaries) present.insert(k);
  std::vector<std::string> out;
  for (const char* m : {"target/test/acc", "target/val/acc", "target/test/f1_macro",
                        "target/test/balanced_acc", "target/test/ece", "target/test/loss",
                        "target/val/loss", "source/val/acc", "source/test/acc", "run/wall_seconds"})
    if (present.erase(m)) out.push_back(m);
  // Then others, but not the evaluations on other domains (their own table) or per-class values.
  for (const auto& m : present)
    if (out.size() < 8 && m.rfind("eval/", 0) != 0 && m.find("/per_class/") == std::string::npos)
      out.push_back(m);
  return out;
}

void comparison_section(std::string& html, const std::vector<RunSummaryRow>& runs) {
  html += "<h2>Comparison: mean ± standard error over seeds</h2>\n";
  std::vector<const RunSummaryRow*> finished;
  for (const auto& r : runs)
    if (r.status == "finished") finished.push_back(&r);
  if (finished.empty()) {
    html += "<p class=\"empty\">No finished runs to compare.</p>\n";
    return;
  }
  const auto keys = config_keys(finished, {});
  const auto groups = group_runs(finished, keys);
  const auto metrics = table_metrics(finished);
  struct Cell {
    MeanSe m;
    std::size_t skipped = 0;
  };
  std::vector<std::vector<Cell>> cells(groups.size(), std::vector<Cell>(metrics.size()));
  std::size_t skipped = 0;
  for (std::size_t g = 0; g < groups.size(); ++g)
    for (std::size_t j = 0; j < metrics.size(); ++j) {
      std::vector<double> values;
      for (const auto* r : groups[g].runs)
        for (const auto& [k, v] : r->summaries)
          if (k == metrics[j]) {
            if (std::isfinite(v))
              values.push_back(v);
            else
              ++cells[g][j].skipped;
          }
      cells[g][j].m = mean_se(values);
      skipped += cells[g][j].skipped;
    }
  // Best mean per column: highest accuracy, lowest loss (only with two groups or more).
  std::vector<int> best(metrics.size(), -1);
  for (std::size_t j = 0; j < metrics.size() && groups.size() > 1; ++j) {
    const bool higher = metrics[j].find("acc") != std::string::npos;
    const bool lower = metrics[j].find("loss") != std::string::npos;
    if (!higher && !lower) continue;
    for (std::size_t g = 0; g < groups.size(); ++g) {
      if (cells[g][j].m.n == 0) continue;
      if (best[j] < 0 || (higher ? cells[g][j].m.mean > cells[best[j]][j].m.mean
                                 : cells[g][j].m.mean < cells[best[j]][j].m.mean))
        best[j] = static_cast<int>(g);
    }
  }
  html += "<div class=\"wide\"><table class=\"sortable\" id=\"comparison\"><thead><tr>";
  if (keys.empty()) html += "<th>configuration</th>";
  for (const auto& k : keys) html += "<th>" + escape_html(display_key(k)) + "</th>";
  for (const auto& m : metrics) html += "<th>" + escape_html(m) + "</th>";
  html += "<th>runs</th><th>seeds</th></tr></thead>\n<tbody>\n";
  for (std::size_t g = 0; g < groups.size(); ++g) {
    html += "<tr>";
    if (keys.empty()) html += "<td>all runs</td>";
    for (const auto& v : groups[g].values) html += "<td>" + escape_html(v) + "</td>";
    for (std::size_t j = 0; j < metrics.size(); ++j) {
      const Cell& c = cells[g][j];
      const std::string cls = best[j] == static_cast<int>(g) ? "num best" : "num";
      if (c.m.n == 0) {
        html += fmt::format("<td class=\"{}\">{}</td>", cls, c.skipped ? "NaN/Inf" : "n/a");
        continue;
      }
      std::string shown =
          c.m.n == 1 ? html_number(c.m.mean) : html_number(c.m.mean) + " ± " + html_number(c.m.se);
      if (c.skipped) shown += fmt::format(" ({} NaN/Inf skipped)", c.skipped);
      html += fmt::format("<td class=\"{}\" data-v=\"{}\">{}</td>", cls,
                          fmt::format("{:.17g}", c.m.mean), escape_html(shown));
    }
    std::vector<std::string> seeds;
    for (const auto* r : groups[g].runs) seeds.push_back(std::to_string(r->seed));
    html += fmt::format("<td class=\"num\">{}</td><td>{}</td></tr>\n", groups[g].runs.size(),
                        escape_html(join(seeds, ", ")));
  }
  html += "</tbody></table></div>\n";
  html +=
      "<p class=\"note\">Finished runs only, grouped by the parameters that differ between "
      "them (seed excepted); n = 1 shows the value alone. Click a column to sort.";
  if (skipped) html += fmt::format(" {} NaN/Inf value(s) were left out of the means.", skipped);
  const auto pooled = pooled_keys(groups, {});
  if (!pooled.empty())
    html += " Some rows average runs that differ in " + escape_html(join(pooled, ", ")) + ".";
  html += "</p>\n";
}

// Finished runs grouped as the comparison table groups them.
std::vector<RunGroup> finished_groups(const std::vector<RunSummaryRow>& runs,
                                      std::vector<std::string>* keys) {
  std::vector<const RunSummaryRow*> finished;
  for (const auto& r : runs)
    if (r.status == "finished") finished.push_back(&r);
  *keys = config_keys(finished, {});
  return group_runs(finished, *keys);
}

// Rows: configurations; columns: the domains runs were evaluated on (tlab eval); cells: mean ±
// s.e. of eval/<domain>/test/acc. Nothing when no run was evaluated elsewhere.
void cross_domain_section(std::string& html, const std::vector<RunSummaryRow>& runs) {
  std::vector<std::string> keys;
  const auto groups = finished_groups(runs, &keys);
  const std::string suffix = "/test/acc";
  std::set<std::string> domains;
  for (const auto& g : groups)
    for (const auto* r : g.runs)
      for (const auto& [k, v] : r->summaries)
        if (std::string d = evaluated_domain(k, "test/acc"); !d.empty()) domains.insert(d);
  if (domains.empty()) return;
  html += "<h2>Cross-domain evaluation: test accuracy, mean ± standard error over seeds</h2>\n";
  html += "<div class=\"wide\"><table class=\"sortable\" id=\"cross-domain\"><thead><tr>";
  if (keys.empty()) html += "<th>configuration</th>";
  for (const auto& k : keys) html += "<th>" + escape_html(display_key(k)) + "</th>";
  for (const auto& d : domains) html += "<th>" + escape_html(d) + "</th>";
  html += "</tr></thead>\n<tbody>\n";
  for (const auto& g : groups) {
    html += "<tr>";
    if (keys.empty()) html += "<td>all runs</td>";
    for (const auto& v : g.values) html += "<td>" + escape_html(v) + "</td>";
    for (const auto& d : domains) {
      std::vector<double> values;
      for (const auto* r : g.runs)
        if (const double* v = r->summary("eval/" + d + suffix); v && std::isfinite(*v))
          values.push_back(*v);
      const MeanSe m = mean_se(values);
      if (m.n == 0) {
        html += "<td class=\"num\">n/a</td>";
        continue;
      }
      html += fmt::format("<td class=\"num\" data-v=\"{:.17g}\">{}</td>", m.mean,
                          escape_html(m.n == 1 ? html_number(m.mean)
                                               : html_number(m.mean) + " ± " + html_number(m.se)));
    }
    html += "</tr>\n";
  }
  html += "</tbody></table></div>\n";
  html +=
      "<p class=\"note\">Columns are the domains the runs' models were evaluated on with "
      "<code>tlab eval</code> (summaries eval/&lt;domain&gt;/test/acc); <code>tlab results "
      "compare --cross-domain</code> prints the same matrix for other metrics.</p>\n";
}

// Each configuration's target-test confusion matrix, summed over its finished runs, as a table
// whose cells are shaded by the row's fraction (the recall of the row's class on the diagonal).
void confusion_section(std::string& html, const std::vector<RunSummaryRow>& runs,
                       const Evaluations& evaluations) {
  std::vector<std::string> keys;
  const auto groups = finished_groups(runs, &keys);
  std::string figs;
  std::size_t unreadable = 0;
  for (const auto& g : groups) {
    std::optional<ClassificationCounts> sum;
    std::size_t counted = 0;
    for (const auto* r : g.runs) {
      auto it = evaluations.find(r->id);
      if (it == evaluations.end()) continue;
      for (const auto& e : it->second) {
        if (e.name != "target/test") continue;
        try {
          const auto counts = ClassificationCounts::from_json(e.counts);
          if (!sum)
            sum = counts;
          else
            sum->merge(counts);
          ++counted;
        } catch (const ClassificationError&) {
          ++unreadable;
        }
      }
    }
    if (!sum || sum->total() == 0) continue;
    const int64_t n = sum->num_classes;
    const ClassificationReport report = summarize(*sum);
    std::string t = "<figure><table class=\"confusion\"><thead><tr><th>true \\ predicted</th>";
    for (int64_t c = 0; c < n; ++c) t += fmt::format("<th>{}</th>", c);
    t += "<th>recall</th></tr></thead>\n<tbody>\n";
    for (int64_t row = 0; row < n; ++row) {
      const auto& m = report.per_class[static_cast<std::size_t>(row)];
      t += fmt::format("<tr><th>{}</th>", row);
      for (int64_t col = 0; col < n; ++col) {
        const int64_t count = sum->confusion[static_cast<std::size_t>(row * n + col)];
        const double share = m.support ? static_cast<double>(count) / m.support : 0.0;
        // Blue on the diagonal (right), vermilion off it (confused), by the row's share.
        const char* rgb = row == col ? "0,114,178" : "213,94,0";
        t += fmt::format(
            "<td class=\"num\" style=\"background:rgba({},{:.3f});color:{}\" title=\"{:.1f}% "
            "of class {}\">{}</td>",
            rgb, share, share > 0.6 ? "#fff" : "#222", 100 * share, row, count);
      }
      t += fmt::format("<td class=\"num\">{}</td></tr>\n", html_number(m.recall));
    }
    t += "</tbody></table>\n";
    t += "<figcaption>" +
         escape_html(fmt::format("{}: {} run(s), {} test examples; acc {}, f1_macro {}, ece {}",
                                 g.label, counted, report.total, html_number(report.accuracy),
                                 html_number(report.f1_macro), html_number(report.ece))) +
         "</figcaption></figure>\n";
    figs += t;
  }
  if (figs.empty()) return;
  html += "<h2>Confusion matrices: target test, summed over each configuration's runs</h2>\n";
  html += "<div class=\"figs\">\n" + figs + "</div>\n";
  html +=
      "<p class=\"note\">Rows are the true classes, columns the predicted ones; a cell's shade "
      "is its share of the row (blue: correct, vermilion: confused with another class).";
  if (unreadable) html += fmt::format(" {} evaluation(s) could not be read.", unreadable);
  html += "</p>\n";
}

// The chart's caption and notes, moved out of the scene into HTML text under the figure.
template <class Chart>
std::vector<std::string> take_notes(Chart& chart) {
  std::vector<std::string> lines;
  if (!chart.caption.empty()) lines.push_back(chart.caption);
  lines.insert(lines.end(), chart.notes.begin(), chart.notes.end());
  chart.caption.clear();
  chart.notes.clear();
  return lines;
}

std::string when_text() {
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

std::string figure(const Scene& scene, const std::vector<std::string>& notes) {
  std::string html = "<figure>\n" + to_svg(scene);
  for (const auto& n : notes) html += "<figcaption>" + escape_html(n) + "</figcaption>\n";
  return html + "</figure>\n";
}

// Each score the runs recorded of their starting points against what fine-tuning realised: a
// scatter per score (gain over scratch when runs have one, else the test accuracy), with the
// correlation table. Nothing when no run recorded scores.
void transferability_section(std::string& html, const std::vector<RunSummaryRow>& runs) {
  bool any = false;
  for (const auto& r : runs)
    for (const auto& [k, v] : r.summaries) any = any || k == "transfer/logme";
  if (!any) return;
  TransferabilityOptions options;
  TransferabilityData data;
  try {
    data = transferability_data(runs, options, "the database");
  } catch (const ReportError& e) {
    return;  // e.g. no finished run among them
  }
  html += "<h2>Transferability: scores before training against the realised gain</h2>\n";
  std::string figs;
  bool gains = false;
  for (const auto& [score, points] : data.points)
    for (const auto& p : points) gains = gains || std::isfinite(p.gain);
  for (const auto& score : transferability_scores()) {
    auto it = data.points.find(score);
    if (it == data.points.end()) continue;
    LineChart chart;
    chart.title = fmt::format("{} against {}", score,
                              gains ? "the gain over " + options.baseline : options.metric);
    chart.x_label = "transfer/" + score + " (starting point)";
    chart.y_label = gains ? options.metric + " gain over " + options.baseline : options.metric;
    chart.legend_title = join(data.group_names, ", ");
    std::map<std::string, std::size_t> index;
    std::vector<double> xs, ys;
    for (const auto& p : it->second) {
      const double y = gains ? p.gain : p.metric;
      if (!std::isfinite(y)) continue;
      if (!index.count(p.group)) {
        index[p.group] = chart.series.size();
        chart.series.push_back({});
        chart.series.back().label = p.group.empty() ? "runs" : p.group;
        chart.series.back().markers = true;
      }
      chart.series[index[p.group]].x.push_back(p.score);
      chart.series[index[p.group]].y.push_back(y);
      xs.push_back(p.score);
      ys.push_back(y);
    }
    const Correlation tau = kendall_tau(xs, ys), r = pearson(xs, ys);
    chart.caption =
        fmt::format("one point per run; Kendall tau {}, Pearson r {} over {} runs",
                    std::isfinite(tau.value) ? fmt::format("{:.2f}", tau.value) : "-",
                    std::isfinite(r.value) ? fmt::format("{:.2f}", r.value) : "-", xs.size());
    try {
      figs += figure(line_chart(chart, {560, 360}), {});
    } catch (const PlotError& e) {
      figs += "<p class=\"empty\">" + escape_html(e.what()) + "</p>\n";
    }
  }
  html += "<div class=\"figs\">\n" + figs + "</div>\n";
  html +=
      "<p class=\"note\">Each run recorded LogME, LEEP, NCE and H-score of its starting point "
      "(after source pre-training, before the target stage; [eval] transferability). A score "
      "that predicts transfer puts the points on a rising line; tlab results transferability "
      "gives the correlations with their p-values.";
  for (const auto& n : data.notes) html += " " + escape_html(n);
  html += "</p>\n";
}

}  // namespace

// Model selection over a search: each table as compare --select-config prints it.
void selection_section(std::string& html, const std::vector<Table>& selections) {
  if (selections.empty()) return;
  html += "<h2>Model selection over the search</h2>\n";
  for (const Table& t : selections) {
    html += "<p>" + escape_html(t.title) + "</p>\n<table><thead><tr>";
    for (const auto& h : t.header) html += "<th>" + escape_html(h) + "</th>";
    html += "</tr></thead><tbody>\n";
    for (const auto& row : t.rows) {
      html += "<tr>";
      for (std::size_t i = 0; i < row.size(); ++i)
        html += std::string(i < t.numeric.size() && t.numeric[i] ? "<td class=\"num\">" : "<td>") +
                escape_html(row[i]) + "</td>";
      html += "</tr>\n";
    }
    html += "</tbody></table>\n";
    for (const auto& note : t.notes) html += "<p class=\"note\">" + escape_html(note) + "</p>\n";
  }
}

std::string html_report(const std::vector<RunSummaryRow>& runs, const Histories& histories,
                        const ReportOptions& options, const Evaluations& evaluations,
                        const std::vector<Table>& selections) {
  std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
      "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n";
  html += "<title>" + escape_html(options.title) + "</title>\n";
  html += std::string("<style>") + kReportStyle + "</style>\n</head>\n<body>\n";
  html += "<h1>" + escape_html(options.title) + "</h1>\n<p class=\"meta\">";
  html += fmt::format("{} run(s)", runs.size());
  if (!options.source.empty()) html += " from <code>" + escape_html(options.source) + "</code>";
  if (!options.where.empty()) html += ", where <code>" + escape_html(options.where) + "</code>";
  html += "; generated " + when_text() + " by tlab " + escape_html(TLAB_VERSION) + "</p>\n";

  // Runs by status.
  std::map<std::string, std::size_t> by_status;
  for (const auto& r : runs) ++by_status[r.status];
  html += "<h2>Runs by status</h2>\n";
  if (runs.empty()) {
    html += "<p class=\"empty\">No runs match.</p>\n";
  } else {
    html += "<table id=\"status\"><thead><tr><th>status</th><th>runs</th></tr></thead><tbody>\n";
    for (const auto& [status, count] : by_status)
      html += fmt::format("<tr><td>{}</td><td class=\"num\">{}</td></tr>\n", badge(status), count);
    html += fmt::format("<tr><th>all</th><th class=\"num\">{}</th></tr>\n", runs.size());
    html += "</tbody></table>\n";
  }

  comparison_section(html, runs);
  selection_section(html, selections);
  cross_domain_section(html, runs);
  confusion_section(html, runs, evaluations);
  transferability_section(html, runs);

  // Learning curves.
  html += "<h2>Learning curves</h2>\n";
  std::string figs;
  for (const auto& metric : options.curve_metrics) {
    bool present = false;
    for (const auto& r : runs) {
      auto it = histories.find(r.id);
      if (r.status != "finished" || it == histories.end()) continue;
      for (const auto& m : it->second) present = present || m.name == metric;
    }
    if (!present) continue;
    CurveOptions curve;
    curve.metric = metric;
    curve.x = XAxis::Epoch;
    try {
      LineChart chart = learning_curves(runs, histories, curve);
      const auto notes = take_notes(chart);
      figs += figure(line_chart(chart, {560, 360}), notes);
    } catch (const PlotError& e) {
      figs += "<p class=\"empty\">" + escape_html(metric) + ": " + escape_html(e.what()) + "</p>\n";
    }
  }
  html += figs.empty() ? "<p class=\"empty\">No metric histories of finished runs to plot.</p>\n"
                       : "<div class=\"figs\">\n" + figs + "</div>\n";

  // Bar chart of the main summary.
  html += "<h2>Final results</h2>\n";
  std::vector<const RunSummaryRow*> finished;
  for (const auto& r : runs)
    if (r.status == "finished") finished.push_back(&r);
  const auto metrics = table_metrics(finished);
  if (metrics.empty()) {
    html += "<p class=\"empty\">No summaries of finished runs to plot.</p>\n";
  } else {
    BarOptions bars;
    bars.metric = metrics.front();
    const auto keys = config_keys(finished, {});
    // Along x: the target (or source) setting when it varies, the methods as bars.
    for (const char* prefix : {"target.", "source."}) {
      for (const auto& k : keys)
        if (bars.x_key.empty() && k.rfind(prefix, 0) == 0) bars.x_key = k;
    }
    try {
      BarChart chart = summary_bars(runs, bars);
      const auto notes = take_notes(chart);
      html += "<div class=\"figs\">\n" + figure(bar_chart(chart, {900, 420}), notes) + "</div>\n";
    } catch (const PlotError& e) {
      html += "<p class=\"empty\">" + escape_html(e.what()) + "</p>\n";
    }
  }

  // Runs that did not finish.
  html += "<h2>Runs that did not finish</h2>\n";
  std::vector<const RunSummaryRow*> failed;
  for (const auto& r : runs)
    if (r.status != "finished" && r.status != "running" && r.status != "queued" &&
        r.status != "pruned")  // stopped on purpose by the sweep's pruner
      failed.push_back(&r);
  if (failed.empty()) {
    html += "<p class=\"empty\">None: every run finished or is still queued or running.</p>\n";
  } else {
    const auto keys = config_keys(runs, {});
    html +=
        "<div class=\"wide\"><table class=\"sortable\" "
        "id=\"failed\"><thead><tr><th>id</th><th>name</th>"
        "<th>status</th><th>seed</th><th>configuration</th><th>ended</th><th>reason</th>"
        "</tr></thead>\n<tbody>\n";
    for (const auto* r : failed) {
      const auto params = param_texts(*r);
      std::vector<std::string> config;  // "strategy=dann, target.variant=usps"
      for (const auto& k : keys) {
        auto it = params.find(k);
        if (it != params.end()) config.push_back(display_key(k) + "=" + it->second);
      }
      html += fmt::format(
          "<tr><td class=\"num\">{}</td><td>{}</td><td data-v=\"{}\">{}</td>"
          "<td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"reason\">{}</td></tr>\n",
          r->id, escape_html(r->name), escape_html(r->status), badge(r->status), r->seed,
          escape_html(join(config, ", ")), escape_html(r->ended_at),
          escape_html(r->reason.empty() ? "(no reason recorded)" : r->reason));
    }
    html += "</tbody></table></div>\n";
  }
  html +=
      "<footer>Self-contained: no external files, fonts or scripts. Generated by "
      "<code>tlab results report</code>.</footer>\n";
  html += std::string("<script>") + kReportScript + "</script>\n</body>\n</html>\n";
  return html;
}

std::string html_report(Store& store, const std::vector<RunSummaryRow>& runs,
                        const ReportOptions& options) {
  Histories histories;
  Evaluations evaluations;
  for (const auto& r : runs) {
    histories[r.id] = store.metrics(r.id);
    if (r.status == "finished") evaluations[r.id] = store.evaluations(r.id);
  }
  // The searches' model selection, when the runs record one (a ReportError means they do not,
  // or have nothing to select by: no section).
  std::vector<Table> selections;
  for (const char* rule : {"oracle", "source-val"}) {
    CompareOptions o;
    o.select_config = rule;
    o.where = options.where;
    try {
      selections.push_back(compare_table(store, runs, o));
    } catch (const ReportError&) {
    }
  }
  return html_report(runs, histories, options, evaluations, selections);
}

}  // namespace tlab::plot
