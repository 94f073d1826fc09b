#pragma once
// Composition: an experiment file plus config groups (folders of TOML options picked by a
// `defaults` list), command-line overrides, sweeps (cartesian and zipped) and `${...}`
// interpolation. Generic: what the keys mean is decided later (config/experiment.hpp), except
// that `defaults` and `sweep` are reserved at the top of a file.
// The grammar, with Hydra's equivalents, is in docs/configuration.md.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "config/node.hpp"
#include "config/override.hpp"

namespace tlab::cfg {

/// Folders searched for config groups, first match wins.
struct SearchPath {
  std::vector<std::filesystem::path> roots;

  /// The experiment's folder (when `experiment` is not empty), then each --config-dir, then
  /// ./experiments (existing folders only, each once).
  static SearchPath for_experiment(const std::filesystem::path& experiment,
                                   const std::vector<std::filesystem::path>& config_dirs);

  /// Config groups and their options: a group is a folder (path relative to a root, e.g.
  /// "backbone" or "dataset/digits", at most 3 levels deep, hidden folders skipped) holding
  /// .toml files; an option is a file's stem. Scans the roots: for listings and hints only.
  std::map<std::string, std::vector<std::string>> groups() const;
  /// The options of `group` (sorted, from every root); empty when it is not a group.
  std::vector<std::string> options(const std::string& group) const;
  /// The file of `group`/`option` in the first root that has it.
  std::optional<std::filesystem::path> find(const std::string& group,
                                            const std::string& option) const;
};

/// Keys that may be set although the composed config does not hold them (a plugin parameter
/// left at its default): the valid keys of the table at `table_path` in `root`. May return
/// an empty list when nothing is known.
using SchemaKeys = std::function<std::vector<std::string>(
    const Node& root, const std::vector<std::string>& table_path)>;

/// A configuration an outside sweeper (Optuna) chose: for each drawn dimension of the search
/// space (SearchSpec::space, by name), the number drawn from an interval or the index of the
/// chosen value of a categorical dimension.
struct GivenDraw {
  int64_t trial = 0;  ///< The sweeper's trial number.
  std::vector<std::pair<std::string, double>> values;
};

struct ComposeOptions {
  std::vector<std::filesystem::path> config_dirs;  ///< --config-dir entries.
  bool multirun = false;                           ///< -m: command-line sweeps allowed.
  SchemaKeys schema_keys;                          ///< May be empty.
  std::optional<std::string> primary_text;         ///< Experiment text instead of reading the file.
  std::size_t max_runs = 100000;  ///< A larger expansion is refused before it starts.
  /// `[sweep] sweeper = "optuna"`: the configurations to expand, each crossed with the seeds.
  /// Null: no job, only the search space (Composition::search_spec).
  const std::vector<GivenDraw>* draws = nullptr;
};

/// One run: the composed config with its overrides and sweep values applied (no `sweep` and
/// `defaults` left; interpolations not yet resolved).
struct Job {
  Node config;
  /// Hydra's "task overrides" of this run, in override syntax: sweep values, then the
  /// command line.
  std::vector<std::string> overrides;
  /// The value of each swept key (group sweeps as the option name), in sweep order.
  std::vector<std::pair<std::string, Node>> swept;
  /// A sampled sweep's draw this run belongs to (0-based; the runs of one draw differ only in
  /// the crossed keys, `seed`), or -1 in a grid sweep.
  int64_t trial = -1;
  /// Each swept key with what its value was drawn or taken from, in override syntax:
  /// ("train.lr", "tag(log, interval(0.0001, 0.1))"), ("strategy", "choice(dann, coral)").
  std::vector<std::pair<std::string, std::string>> distributions;
  /// The values that set this run's competitors apart (config-group choices and sweep.crossed
  /// keys, e.g. "strategy=dann"): ASHA compares runs with the same bracket only.
  std::string bracket;
};

/// One drawn dimension of a sampled search, as an outside sweeper needs it.
struct SearchDim {
  enum class Kind { Float, Int, Categorical };
  std::string name;          ///< The swept key ("train.lr"); a zip group: its keys joined by ",".
  std::string distribution;  ///< In override syntax: "tag(log, interval(0.0001, 0.1))".
  Kind kind = Kind::Categorical;
  double low = 0, high = 0;  ///< Float and Int: both bounds included.
  bool log = false;
  std::vector<std::string> choices;  ///< Categorical: each value in override syntax.
};

/// How a sweep chose its runs: "grid" (every combination), "random" ([sweep] samples = N
/// draws of the swept keys other than `seed`, each crossed with the seeds) or "optuna" (N trials
/// asked from an Optuna study as results come in; ComposeOptions::draws).
struct SearchSpec {
  std::string sweeper = "grid";
  int64_t samples = 0;      ///< [sweep] samples: draws (random) or trials (optuna).
  int64_t search_seed = 0;  ///< [sweep] search_seed: the draws for equal seeds are equal.
  /// [sweep.asha]: stop runs early by asynchronous successive halving (Li et al. 2020) on the
  /// target's validation value (train.monitor): at rungs of min_epochs * reduction^k epochs, a
  /// run continues only when it is in the best 1/reduction of the runs of its bracket there.
  bool asha = false;
  int64_t asha_min_epochs = 1;
  int64_t asha_reduction = 3;
  /// [sweep.optuna]: the objective (a run's summary, else its last logged value, averaged over
  /// a trial's runs; "" = target/val/<train.monitor>), its direction ("" = from the name), the
  /// sampler ("tpe" or "random"), TPE's random startup trials, and the study's name and storage
  /// ("" = derived by the runner).
  std::string metric, direction, sampler = "tpe", study, storage;
  int64_t startup_trials = 10;
  /// The drawn dimensions (random and optuna), in sweep order.
  std::vector<SearchDim> space;
  /// What identifies the search: the composed config without the trial count and the study's
  /// name and storage (a different experiment, space or objective is a different study).
  std::string fingerprint;
};

struct Composition {
  /// The experiment composed with the command-line overrides that are not sweeps, its `sweep`
  /// table kept: what `tlab config` prints.
  Node config;
  std::vector<Job> jobs;  ///< One per run, in sweep order (last dimension fastest; a sampled
                          ///< sweep: draw by draw, the crossed keys within each).
  SearchSpec search_spec;
  SearchPath search;
  /// The config-group choices of the composed config: "backbone" -> "cnn",
  /// "dataset@target" -> "digits_noisy" (Hydra's runtime.choices).
  std::vector<std::pair<std::string, std::string>> choices;
};

/// Composes `experiment` with `overrides` and expands the sweep. Throws ConfigError, located.
Composition compose(const std::filesystem::path& experiment,
                    const std::vector<std::string>& overrides, const ComposeOptions& options = {});

/// A copy of `config` with every `${...}` interpolation resolved: `${a.b}` (absolute),
/// `${.b}` / `${..b}` (relative to the table holding the value), `${env:NAME}` and
/// `${env:NAME,default}`; `\${` is a literal `${`. A value that is one interpolation takes the
/// referenced value's type (an environment variable is typed like an override value).
/// Missing keys, unset variables and cycles are ConfigErrors located at the referring value.
Node resolve(const Node& config);

/// Help text listing the config groups of `search` and their options (`tlab config --groups`).
std::string describe_groups(const SearchPath& search);

}  // namespace tlab::cfg
