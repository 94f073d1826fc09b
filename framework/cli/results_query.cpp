// tlab results list: one row per run.
#include <iostream>
#include <memory>

#include "report/report.hpp"
#include "results_cli.hpp"

namespace tlab::cli {

void add_results_query(CLI::App& results, std::vector<Command>& out) {
  struct Options {
    std::string db = "results/results.db";
    std::string format = "table";
  };
  auto o = std::make_shared<Options>();
  auto* list = results.add_subcommand("list", "One row per run");
  add_db_option(*list, o->db);
  list->add_option("--format", o->format, "table, json or csv")
      ->check(CLI::IsMember({"table", "json", "csv"}))
      ->capture_default_str();
  out.push_back({list, [o] {
                   auto rows = open_results(o->db).list_runs();
                   std::cout << format_runs(rows, parse_format(o->format));
                   return 0;
                 }});
}

}  // namespace tlab::cli
