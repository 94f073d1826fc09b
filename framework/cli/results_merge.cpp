// tlab results merge: combine databases written on different machines.
#include "results_cli.hpp"

namespace tlab::cli {

void add_results_merge(CLI::App& /*results*/, std::vector<Command>& /*out*/) {}

}  // namespace tlab::cli
