#include "run/launcher.hpp"

#include <fmt/format.h>

#include "run/slurm.hpp"
#include "util.hpp"

namespace tlab {
namespace {

/// Child processes on this machine (run/executor.hpp).
class LocalLauncher : public Launcher {
 public:
  std::string name() const override { return "local"; }
  SweepResult launch(const std::vector<RunSpec>& specs, PluginLoader& loader, Store& store,
                     const SweepOptions& options) override {
    return run_sweep(specs, loader, store, options);
  }
};

}  // namespace

std::unique_ptr<Launcher> make_launcher(const LauncherSpec& spec) {
  if (spec.name == "local") return std::make_unique<LocalLauncher>();
  if (spec.name == "slurm") return slurm::make_slurm_launcher();
  throw ConfigError(fmt::format(
      "launcher.name = \"{}\" is not a launcher; expected \"local\" or \"slurm\"", spec.name));
}

const LauncherSpec& sweep_launcher(const std::vector<RunSpec>& specs) {
  static const LauncherSpec local;
  if (specs.empty()) return local;
  for (std::size_t i = 1; i < specs.size(); ++i) {
    if (specs[i].launcher.config_toml == specs[0].launcher.config_toml) continue;
    throw ConfigError(fmt::format(
        "runs 1 and {} of the sweep have different [launcher] tables; a sweep goes to one "
        "launcher, so do not sweep over launcher.* keys (run 1: {} / run {}: {})",
        i + 1, join(specs[0].overrides, " "), i + 1, join(specs[i].overrides, " ")));
  }
  return specs[0].launcher;
}

}  // namespace tlab
