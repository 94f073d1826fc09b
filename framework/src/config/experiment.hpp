#pragma once
// Experiment files: one TOML file describes a run; a [sweep] table turns it into several.
// Everything is validated against the host's keys and the plugins' schemas before any run
// starts; errors start with `file:line:col:`.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "store/store.hpp"
#include "tlab/sdk/params.hpp"
#include "tlab/sdk/strategy.hpp"

namespace tlab {

class PluginLoader;

/// A malformed, unknown, mistyped or out-of-range setting. The message starts with the
/// location (`file:line:col:`) when one is known.
class ConfigError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A plugin chosen by an experiment table, with its validated parameters (defaults filled in).
struct PluginSpec {
  std::string plugin;  ///< Plugin name.
  Params params;       ///< Every schema key, with its effective value.
};

/// A dataset table: a plugin plus the host's `shots` (labelled examples per class kept in the
/// training split; 0 keeps all).
struct DatasetSpec : PluginSpec {
  int64_t shots = 0;
};

/// One fully resolved and validated run.
struct RunSpec {
  std::string experiment;             ///< Experiment file as given.
  std::string name;                   ///< Experiment name (`name`, default: file stem).
  int64_t seed = 0;                   ///< Run seed.
  std::string device = "auto";        ///< "auto", "cpu", "cuda" or "cuda:N".
  std::optional<DatasetSpec> source;  ///< Source domain, if any.
  DatasetSpec target;                 ///< Target domain.
  PluginSpec backbone;                ///< Feature extractor.
  std::vector<PluginSpec> adapters;   ///< Attached in order.
  PluginSpec strategy;                ///< Training method.
  TrainConfig train;                  ///< The target stage's settings.
  std::string config_toml;            ///< The resolved config as TOML, defaults included.
  std::string config_hash;            ///< xxh3-64 of `config_toml`.
  std::string overrides_json;         ///< Swept values of this run, as a JSON object.
  std::vector<ParamEntry> params;     ///< `config_toml` flattened ("train.lr" -> 0.001).
};

/// Reads `path`, expands the [sweep] table (cartesian product, in key order), applies
/// `overrides` ("key=value", value in TOML syntax or a bare string; `sweep.*` keys change the
/// sweep, others apply to every run and replace a sweep dimension of the same key) and
/// validates every run.
/// Throws ConfigError; no run is returned unless all are valid.
std::vector<RunSpec> load_experiment(const std::filesystem::path& path,
                                     const std::vector<std::string>& overrides,
                                     PluginLoader& loader);

}  // namespace tlab
