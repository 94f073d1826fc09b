// tlab results compare: mean ± s.e. over seeds, grouped by configuration.
#include <iostream>
#include <memory>
#include <set>

#include <fmt/format.h>

#include "report/report.hpp"
#include "results_cli.hpp"
#include "util.hpp"

namespace tlab::cli {

void add_results_compare(CLI::App& results, std::vector<Command>& out) {
  struct Options {
    std::string db = "results/results.db";
    std::vector<std::string> by;
    std::vector<std::string> metrics = {"target/test/acc"};
  };
  auto o = std::make_shared<Options>();
  auto* compare =
      results.add_subcommand("compare", "Mean ± s.e. over seeds, grouped by configuration");
  add_db_option(*compare, o->db);
  compare->add_option("--by", o->by, "Group by these params (default: those that vary, but seed)");
  compare->add_option("--metric", o->metrics, "Summaries to show")->capture_default_str();
  out.push_back({compare, [o] {
                   auto rows = open_results(o->db).list_runs();
                   // A misspelt key or metric would silently make one empty group: refuse it.
                   std::set<std::string> keys, names;
                   for (const auto& r : rows) {
                     for (const auto& p : r.params) keys.insert(p.key);
                     for (const auto& m : r.summaries) names.insert(m.first);
                   }
                   auto check = [&](const std::vector<std::string>& wanted,
                                    const std::set<std::string>& have, const char* what) {
                     for (const auto& w : wanted)
                       if (!rows.empty() && !have.count(w)) {
                         std::vector<std::string> all(have.begin(), have.end());
                         std::string hint = did_you_mean(nearest(w, all));
                         throw UsageError(fmt::format("no {} '{}' in '{}'{}{}", what, w, o->db,
                                                      hint.empty() ? "" : "; ", hint));
                       }
                   };
                   check(o->by, keys, "param");
                   check(o->metrics, names, "summary metric");
                   std::cout << format_comparison(rows, o->by, o->metrics);
                   return 0;
                 }});
}

}  // namespace tlab::cli
