// tlab results merge: combine databases written on different machines.
#include <filesystem>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "results/merge.hpp"
#include "results_cli.hpp"

namespace tlab::cli {

void add_results_merge(CLI::App& results, std::vector<Command>& out) {
  struct Options {
    std::vector<std::string> inputs;
    std::string into;
  };
  auto o = std::make_shared<Options>();
  auto* merge = results.add_subcommand(
      "merge",
      "Combine results databases written on different machines into one (runs keep their "
      "uuid, host and every column; a run already there, by uuid, is skipped)");
  merge->add_option("inputs", o->inputs, "Results databases to merge, in this order")->required();
  merge
      ->add_option("--into", o->into,
                   "Database to merge into; when missing, it is created as a copy of the first "
                   "input (SQLite backup API)")
      ->required();
  out.push_back(
      {merge, [o] {
         const std::vector<std::filesystem::path> inputs(o->inputs.begin(), o->inputs.end());
         MergeReport report;
         try {
           report = merge_databases(inputs, o->into);
         } catch (const MergeError& e) {
           throw UsageError(e.what());
         }
         for (const MergeInputReport& input : report.inputs) {
           if (input.created_output) {
             std::cout << fmt::format("created {} as a copy of {}\n", o->into,
                                      input.input.string());
           }
           std::cout << fmt::format("merged {} runs from {} ({} duplicates skipped)\n",
                                    input.runs_merged, input.input.string(),
                                    input.duplicates_skipped);
           for (const DifferingDuplicate& run : input.differing) {
             std::cerr << fmt::format(
                 "warning: run {} (id {} in {}) differs from the copy kept in {} (id "
                 "{}): {}\n",
                 run.uuid, run.input_id, input.input.string(), o->into, run.output_id, run.what);
           }
         }
         std::cout << fmt::format("{} now holds {} runs\n", o->into, report.output_runs);
         return 0;
       }});
}

}  // namespace tlab::cli
