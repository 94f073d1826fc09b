#pragma once
// The engine's commands, one file each (run_command.cpp, plugins_command.cpp); engine.cpp puts
// them in the table the front calls (api.hpp). They throw for errors; engine.cpp prints them.

#include <filesystem>
#include <vector>

#include "api.hpp"

namespace tlab::engine {

int run_experiment(const Globals& g, const RunArgs& a);               ///< tlab run
int run_queued(const Globals& g, const ChildArgs& a);                 ///< tlab _run
int plugins(const Globals& g, const PluginsArgs& a);                  ///< tlab plugins [show NAME]
int config(const Globals& g, const ConfigArgs& a);                    ///< tlab config EXPERIMENT
int evaluate(const Globals& g, const EvalArgs& a);                    ///< tlab eval RUN
int export_model(const Globals& g, const ExportArgs& a);              ///< tlab export RUN
int predict(const Globals& g, const PredictArgs& a);                  ///< tlab predict RUN
int transferability(const Globals& g, const TransferabilityArgs& a);  ///< tlab transferability

/// --plugin-path folders, then TLAB_PLUGIN_PATH, then tlab's own.
std::vector<std::filesystem::path> plugin_search_dirs(const Globals& g);

}  // namespace tlab::engine
