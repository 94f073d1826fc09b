// tlab results plot / report: learning curves and bar charts (SVG, PNG), one HTML report.
#include "results_cli.hpp"

namespace tlab::cli {

void add_results_plot(CLI::App& /*results*/, std::vector<Command>& /*out*/) {}

}  // namespace tlab::cli
