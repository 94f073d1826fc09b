// tlab results compare: mean ± s.e. over seeds, grouped by configuration, optionally as a pivot
// table (methods x targets) under a model-selection rule.
// tlab results gain: each method's gain over a baseline, paired by target, backbone and seed,
// with a paired t-test and a negative-transfer flag.
// tlab results transferability: do the scores runs recorded of their starting points rank them as
// fine-tuning turned out? Kendall's tau and Pearson's r against the metric and the gain.
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "report/report.hpp"
#include "results/query.hpp"
#include "results/table.hpp"
#include "results_cli.hpp"
#include "util.hpp"

namespace tlab::cli {
namespace {

TableFormat table_format(const std::string& name) {
  try {
    return parse_table_format(name);
  } catch (const std::invalid_argument& e) {
    throw UsageError(fmt::format("--format: {}", e.what()));
  }
}

// The runs of `store` that `where` selects (all for ""), in id order.
std::vector<RunSummaryRow> selected_runs(Store& store, const std::string& where) {
  try {
    QueryOptions query;
    query.where = where;
    return select_runs(store, query);
  } catch (const QueryError& e) {
    throw UsageError(e.what());  // names the expression, the position and the database
  }
}

// Prints `table`. CSV and JSON carry no notes, so those go to stderr, where they do not spoil
// the data.
void print(const Table& table, TableFormat format) {
  std::cout << render(table, format);
  if (format == TableFormat::Csv || format == TableFormat::Json)
    for (const auto& note : table.notes) std::cerr << note << "\n";
}

bool machine_readable(TableFormat format) {
  return format == TableFormat::Csv || format == TableFormat::Json;
}

}  // namespace

void add_results_compare(CLI::App& results, std::vector<Command>& out) {
  struct CompareArgs {
    std::string db = "results/results.db";
    std::vector<std::string> by;
    std::vector<std::string> metrics = {"target/test/acc"};
    std::string select = "final";
    std::string pivot;
    std::string format = "table";
    std::string where;
    bool cross_domain = false;
    std::string select_config;
  };
  auto c = std::make_shared<CompareArgs>();
  auto* compare = results.add_subcommand(
      "compare", "Mean ± s.e. over seeds per configuration; pivot tables; model selection");
  add_db_option(*compare, c->db);
  compare
      ->add_option("--group-by,--by", c->by,
                   "Row keys (params). Default: strategy.plugin with --pivot, else the params "
                   "that vary, except seed")
      ->delimiter(',');
  compare->add_option("--metric", c->metrics, "Metrics to show (one with --pivot)")
      ->delimiter(',')
      ->capture_default_str();
  compare
      ->add_option("--select", c->select,
                   "Which epoch: final (after the last epoch), source-val (training-domain "
                   "validation: best source/val/acc), oracle (test-domain validation: best "
                   "target/val/acc)")
      ->capture_default_str();
  compare
      ->add_option("--select-config", c->select_config,
                   "Model selection over a search: per row, the configuration of the searched "
                   "keys (runs.search) with the best mean validation value over its seeds: "
                   "source-val (source/val/acc, training-domain validation), source-val-worst "
                   "(source/val/worst/acc: the worst of several pooled source domains), "
                   "oracle (target/val/acc) or a metric name; its runs' --metric values are "
                   "shown")
      ->check(CLI::TypeValidator<std::string>());
  compare->add_option("--pivot", c->pivot,
                      "A param whose values become the columns (e.g. target.variant), with an "
                      "Avg column");
  compare->add_option("--format", c->format, "table, csv, json, markdown or latex")
      ->capture_default_str();
  compare->add_option("--where", c->where,
                      "Only runs matching this expression, e.g. \"target.plugin = 'office31'\"");
  compare->add_flag("--cross-domain", c->cross_domain,
                    "The cross-domain matrix: columns are the domains the runs were evaluated on "
                    "with tlab eval; --metric is then <split>/<metric> (default test/acc)");
  out.push_back(
      {compare, [c] {
         const TableFormat format = table_format(c->format);
         CompareOptions options;
         options.group_by = c->by;
         options.metrics = c->metrics;
         options.pivot = c->pivot;
         options.where = c->where;
         options.select_config = c->select_config;
         options.machine_readable = machine_readable(format);
         Store store = open_results(c->db);
         try {
           options.selection = parse_selection(c->select);
           const auto runs = selected_runs(store, c->where);
           if (runs.empty() && !c->where.empty())
             std::cerr << fmt::format("no run in '{}' matches --where '{}'\n", c->db, c->where);
           if (c->cross_domain && !c->select_config.empty())
             throw UsageError(
                 "--cross-domain shows every evaluated domain of each run; --select-config "
                 "chooses configurations: run them separately");
           if (c->cross_domain) {
             if (!c->pivot.empty())
               throw UsageError(
                   "--cross-domain pivots on the evaluated domains; leave out --pivot");
             if (options.selection != Selection::Final)
               throw UsageError(
                   "--cross-domain reports each evaluation of the kept model; "
                   "--select applies to training epochs only, leave it out");
             std::string metric = c->metrics.size() == 1 ? c->metrics[0] : "";
             if (metric == "target/test/acc") metric = "test/acc";  // the default
             if (metric.rfind("eval/*/", 0) == 0) metric = metric.substr(7);
             if (c->metrics.size() != 1)
               throw UsageError(
                   fmt::format("--cross-domain shows one metric, but {} were given ({})",
                               c->metrics.size(), join(c->metrics, ", ")));
             options.pivot = "eval.domain";
             options.metrics = {"eval/*/" + metric};
             print(compare_table(store, cross_domain_rows(runs, metric, c->db), options), format);
             return 0;
           }
           print(compare_table(store, runs, options), format);
         } catch (const ReportError& e) {
           throw UsageError(e.what());
         }
         return 0;
       }});

  struct GainArgs {
    std::string db = "results/results.db";
    std::string baseline = "scratch";
    std::string metric = "target/test/acc";
    std::vector<std::string> by;
    std::string format = "table";
    std::string where;
  };
  auto g = std::make_shared<GainArgs>();
  auto* gain = results.add_subcommand(
      "gain",
      "Gain of each method over a baseline, paired by target, backbone and seed; paired t-test "
      "and negative-transfer flag");
  add_db_option(*gain, g->db);
  gain->add_option("--baseline", g->baseline,
                   "strategy.plugin of the runs without transfer that the others are paired with")
      ->capture_default_str();
  gain->add_option("--metric", g->metric, "Summary metric (higher is better)")
      ->capture_default_str();
  gain->add_option("--by,--group-by", g->by,
                   "Row keys. Default: strategy.plugin and the other params that vary among "
                   "the transfer runs, except seed, target.* and backbone.*")
      ->delimiter(',');
  gain->add_option("--format", g->format, "table, csv, json, markdown or latex")
      ->capture_default_str();
  gain->add_option("--where", g->where, "Only runs matching this expression");
  out.push_back({gain, [g] {
                   const TableFormat format = table_format(g->format);
                   GainOptions options;
                   options.baseline = g->baseline;
                   options.metric = g->metric;
                   options.group_by = g->by;
                   options.where = g->where;
                   options.machine_readable = machine_readable(format);
                   Store store = open_results(g->db);
                   try {
                     const auto runs = selected_runs(store, g->where);
                     print(gain_table(store, runs, options), format);
                   } catch (const ReportError& e) {
                     throw UsageError(e.what());
                   }
                   return 0;
                 }});

  struct TransferabilityArgs {
    std::string db = "results/results.db";
    std::string baseline = "scratch";
    std::string metric = "target/test/acc";
    std::string format = "table";
    std::string where;
  };
  auto tr = std::make_shared<TransferabilityArgs>();
  auto* transfer = results.add_subcommand(
      "transferability",
      "Do the transferability scores runs recorded (eval.transferability) rank them as they "
      "turned out? Kendall's tau and Pearson's r against the metric and the gain over a baseline");
  add_db_option(*transfer, tr->db);
  transfer
      ->add_option("--baseline", tr->baseline,
                   "strategy.plugin of the runs without transfer the gains are measured against")
      ->capture_default_str();
  transfer->add_option("--metric", tr->metric, "The realised outcome (higher is better)")
      ->capture_default_str();
  transfer->add_option("--format", tr->format, "table, csv, json, markdown or latex")
      ->capture_default_str();
  transfer->add_option("--where", tr->where, "Only runs matching this expression");
  out.push_back({transfer, [tr] {
                   const TableFormat format = table_format(tr->format);
                   TransferabilityOptions options;
                   options.baseline = tr->baseline;
                   options.metric = tr->metric;
                   options.where = tr->where;
                   options.machine_readable = machine_readable(format);
                   Store store = open_results(tr->db);
                   try {
                     const auto runs = selected_runs(store, tr->where);
                     print(transferability_table(store, runs, options), format);
                   } catch (const ReportError& e) {
                     throw UsageError(e.what());
                   }
                   return 0;
                 }});
}

}  // namespace tlab::cli
