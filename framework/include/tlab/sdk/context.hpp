#pragma once
/// \file context.hpp
/// What a plugin gets from the host: device, seed, run folder, a logger and a metric sink.
/// Plugins never open the database, choose paths or use a global logger.

#include <cstdint>
#include <filesystem>
#include <string>

#include <torch/types.h>

namespace tlab {

/// Log sink for plugins; lines are prefixed with the plugin's name by the host.
class Logger {
 public:
  virtual ~Logger() = default;
  virtual void debug(const std::string& msg) = 0;  ///< Detail, hidden by default.
  virtual void info(const std::string& msg) = 0;   ///< Progress a user wants to see.
  virtual void warn(const std::string& msg) = 0;   ///< Something suspicious but not fatal.
};

/// Metric sink. Names are `<domain>/<split>/<metric>`, e.g. `source/val/acc`. Values are
/// buffered and written to the database in batches; NaN and infinities are kept.
class Metrics {
 public:
  virtual ~Metrics() = default;
  /// Records `value` for `name` at global step `step` of epoch `epoch` (-1 when not in an epoch).
  virtual void log(const std::string& name, double value, int64_t step, int64_t epoch) = 0;
  /// Sets the final value of `name` for the run (a summary; the last write wins).
  virtual void summary(const std::string& name, double value) = 0;
};

/// Everything a plugin may touch of the run it is part of.
struct Context {
  std::string plugin;                 ///< Name of the plugin this context is for (messages).
  torch::Device device{torch::kCPU};  ///< Where tensors and modules live.
  uint64_t seed = 0;                  ///< The run's seed (the host already seeded LibTorch).
  std::filesystem::path run_dir;      ///< Folder for this run's artifacts.
  Logger* log = nullptr;              ///< Never null while a hook runs.
  Metrics* metrics = nullptr;         ///< Never null while a hook runs.
};

}  // namespace tlab
