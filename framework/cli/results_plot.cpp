// tlab results plot / report: learning curves and bar charts (SVG, PNG), one HTML report.
#include <iostream>
#include <memory>
#include <stdexcept>

#include <fmt/format.h>

#include "results/plot.hpp"
#include "results/query.hpp"
#include "results/report_html.hpp"
#include "results_cli.hpp"

namespace tlab::cli {
namespace {

struct PlotOptions {
  std::string db = "results/results.db";
  std::string metric = "target/test/acc";
  std::string x;
  std::vector<std::string> group_by;
  std::string where;
  std::string band = "se";
  bool include_unfinished = false;
  std::string title;
  int width = 800, height = 480;
  double scale = 2;
  std::string output;
};

// Problems the user must fix (bad --where, unknown metric or key, bad extension) are usage
// errors (exit 2), as everywhere in `tlab results`.
template <class F>
int usage_errors(F&& body) {
  try {
    return body();
  } catch (const plot::PlotError& e) {
    throw UsageError(e.what());
  } catch (const QueryError& e) {
    throw UsageError(e.what());
  }
}

std::vector<RunSummaryRow> selected(Store& store, const std::string& where) {
  QueryOptions query;
  query.where = where;
  auto runs = select_runs(store, query);
  if (runs.empty())
    throw UsageError(where.empty()
                         ? fmt::format("the results database '{}' has no runs; run an experiment "
                                       "first (tlab run experiments/quickstart.toml)",
                                       store.path().string())
                         : fmt::format("no run matches --where \"{}\" in '{}'; tlab results list "
                                       "shows the runs there",
                                       where, store.path().string()));
  return runs;
}

void print_notes(const std::vector<std::string>& notes) {
  for (const auto& n : notes) std::cerr << "note: " << n << "\n";
}

void add_common(CLI::App& cmd, PlotOptions& o) {
  add_db_option(cmd, o.db);
  cmd.add_option("--metric", o.metric, "Metric to plot")->capture_default_str();
  cmd.add_option("--group-by", o.group_by,
                 "Param keys that make a group, comma-separated (default: the params that "
                 "differ between the runs, seed excepted)")
      ->delimiter(',');
  cmd.add_option("--where", o.where,
                 "Select runs, e.g. \"strategy.plugin = 'dann' AND status = 'finished'\"");
  cmd.add_flag("--include-unfinished", o.include_unfinished,
               "Also use runs whose status is not 'finished'");
  cmd.add_option("--title", o.title, "Figure title (default: metric by group keys)");
  cmd.add_option("--width", o.width, "Figure width in pixels")
      ->check(CLI::Range(200, 8000))
      ->capture_default_str();
  cmd.add_option("--height", o.height, "Figure height in pixels")
      ->check(CLI::Range(150, 8000))
      ->capture_default_str();
  cmd.add_option("--scale", o.scale, "PNG pixels per figure pixel")
      ->check(CLI::Range(0.5, 8.0))
      ->capture_default_str();
  cmd.add_option("-o,--output", o.output, "Output file: FILE.svg or FILE.png")->required();
}

}  // namespace

void add_results_plot(CLI::App& results, std::vector<Command>& out) {
  auto* plot_cmd = results.add_subcommand("plot", "Plot learning curves or bar charts (SVG, PNG)");
  plot_cmd->require_subcommand(1);

  auto c = std::make_shared<PlotOptions>();
  c->x = "epoch";
  auto* curves = plot_cmd->add_subcommand(
      "curves",
      "A metric's history vs epoch or step: per configuration, the mean over seeds and a band");
  add_common(*curves, *c);
  curves
      ->add_option("--x", c->x,
                   "epoch (of the target stage, from 0: fine-tuned and from-scratch runs line "
                   "up) or step (global, across stages: the whole history)")
      ->check(CLI::IsMember({"epoch", "step"}))
      ->capture_default_str();
  curves->add_option("--band", c->band, "se (± standard error), minmax or none")
      ->check(CLI::IsMember({"se", "minmax", "none"}))
      ->capture_default_str();
  out.push_back(
      {curves, [c] {
         return usage_errors([&] {
           plot::format_for_path(c->output);  // a bad extension fails before any work
           Store store = open_results(c->db);
           const auto runs = selected(store, c->where);
           plot::Histories histories;
           for (const auto& r : runs) histories[r.id] = store.metrics(r.id);
           plot::CurveOptions options;
           options.metric = c->metric;
           options.x = plot::parse_x_axis(c->x);
           options.group_by = c->group_by;
           options.band = plot::parse_band(c->band);
           options.include_unfinished = c->include_unfinished;
           options.title = c->title;
           const auto chart = plot::learning_curves(runs, histories, options);
           plot::write_scene(plot::line_chart(chart, {c->width, c->height}), c->output, c->scale);
           print_notes(chart.notes);
           std::cout << fmt::format("wrote {}: {} curve(s) of {} from {} run(s)\n", c->output,
                                    chart.series.size(), c->metric, runs.size());
           return 0;
         });
       }});

  auto b = std::make_shared<PlotOptions>();
  auto* bars = plot_cmd->add_subcommand(
      "bars", "A summary metric as grouped bars: mean ± s.e. over seeds per x value and group");
  add_common(*bars, *b);
  bars->add_option("--x", b->x, "Param key along x, e.g. target.variant (default: one category)");
  out.push_back(
      {bars, [b] {
         return usage_errors([&] {
           plot::format_for_path(b->output);
           Store store = open_results(b->db);
           const auto runs = selected(store, b->where);
           plot::BarOptions options;
           options.metric = b->metric;
           options.x_key = b->x;
           options.group_by = b->group_by;
           options.include_unfinished = b->include_unfinished;
           options.title = b->title;
           const auto chart = plot::summary_bars(runs, options);
           plot::write_scene(plot::bar_chart(chart, {b->width, b->height}), b->output, b->scale);
           print_notes(chart.notes);
           std::cout << fmt::format(
               "wrote {}: {} of {} group(s) over {} x value(s) from {} run(s)\n", b->output,
               b->metric, chart.groups.size(), chart.categories.size(), runs.size());
           return 0;
         });
       }});

  struct ReportCli {
    std::string db = "results/results.db";
    std::string where;
    std::string title = "TransferLab results";
    std::string output = "report.html";
  };
  auto r = std::make_shared<ReportCli>();
  auto* report = results.add_subcommand(
      "report",
      "One self-contained HTML page: runs by status, comparison table, learning curves, bar "
      "chart, failed runs");
  add_db_option(*report, r->db);
  report->add_option("--where", r->where, "Select runs (as for tlab results list)");
  report->add_option("--title", r->title, "Page title")->capture_default_str();
  report->add_option("-o,--output", r->output, "Output HTML file")->capture_default_str();
  out.push_back({report, [r] {
                   return usage_errors([&] {
                     Store store = open_results(r->db);
                     QueryOptions query;
                     query.where = r->where;
                     const auto runs = select_runs(store, query);
                     plot::ReportOptions options;
                     options.title = r->title;
                     options.source = r->db;
                     options.where = r->where;
                     plot::write_text_file(r->output, plot::html_report(store, runs, options));
                     std::cout << fmt::format("wrote {}: report of {} run(s)\n", r->output,
                                              runs.size());
                     return 0;
                   });
                 }});
}

}  // namespace tlab::cli
