#pragma once
// Experiments: a TOML file composed with config groups and overrides (config/compose.hpp)
// describes one run; a [sweep] table or -m sweeps turn it into several. Every run is resolved
// and validated against the host's keys and the plugins' schemas before any run starts; errors
// start with `file:line:col:` or the override and character they came from.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/compose.hpp"
#include "run/domain_shift.hpp"
#include "store/store.hpp"
#include "tlab/sdk/params.hpp"
#include "tlab/sdk/strategy.hpp"

namespace tlab {

class PluginLoader;

/// A plugin chosen by an experiment table, with its validated parameters (defaults filled in).
struct PluginSpec {
  std::string plugin;  ///< Plugin name.
  Params params;       ///< Every schema key, with its effective value.
};

/// A dataset table: a plugin plus the host's `shots` (labelled examples per class kept in the
/// training split; 0 keeps all) and its domain shift.
struct DatasetSpec : PluginSpec {
  int64_t shots = 0;
  DomainShift shift;
  /// `[target] disjoint_classes = true`: the target's class_subset must share no label with
  /// the source's (task transfer to new classes); checked when the experiment is loaded. A
  /// check, not a setting: outside the resolved config and the run key.
  bool disjoint_classes = false;
};

/// The backbone table: a plugin plus the host's weights keys (docs/models.md).
struct BackboneSpec : PluginSpec {
  /// Initial weights: "" (random), a safetensors file, or "run:<id>" (an earlier run's
  /// model.safetensors, its `backbone.` tensors).
  std::string weights;
  bool weights_strict = true;              ///< Every name and shape must match.
  std::vector<std::string> weights_remap;  ///< Key prefix rules "from=to", applied first.
};

/// Where the runs of a sweep execute: the `[launcher]` table (config group `launcher`). Not part
/// of a run's resolved config or run key: the same run gives the same result wherever it runs.
struct LauncherSpec {
  std::string name = "local";  ///< "local" (child processes here) or "slurm".
  std::string partition;       ///< SLURM partition ("" = the cluster's default).
  std::string time;            ///< Time limit per task ("" = the partition's), e.g. 1:00:00.
  std::string mem;             ///< Memory per task ("" = the partition's), e.g. 4G.
  std::string account, qos;    ///< SLURM account and QOS ("" = none).
  int64_t cpus_per_task = 1;   ///< CPUs per task; also the run's intra-op threads.
  /// Nodes for one run's ranks ([run] processes > 1: its tasks, started by srun); default 1.
  int64_t nodes_per_run = 1;
  int64_t gpus_per_task = 0;        ///< GPUs per task.
  int64_t array_parallelism = 0;    ///< Tasks at once (`--array=...%N`); 0 = --jobs or no limit.
  std::vector<std::string> sbatch;  ///< Extra sbatch options, e.g. "--constraint=a100".
  std::vector<std::string> setup;   ///< Shell lines run before tlab (e.g. module load ...).
  std::string config_toml;          ///< The table as TOML (for the sweep's manifest).
};

/// The `[eval]` table: what every evaluation of a run records (docs/evaluation.md).
struct EvalSpec {
  /// Metric names (results/classification.hpp): summaries `<domain>/<split>/<metric>`.
  std::vector<std::string> metrics;
  int64_t calibration_bins = 15;  ///< Equal-width bins of the expected calibration error.
  /// Score the run's starting point (after the strategy's prepare: source pre-training, loaded
  /// weights) on the target's labelled training examples before the target stage: summaries
  /// transfer/{logme,leep,nce,hscore,seconds} (transfer/scores.hpp).
  bool transferability = false;
  /// `transferability = "only"`: score the starting point and end the run there (finished, no
  /// target stage, no model saved): candidates ranked before any fine-tuning.
  bool transferability_only = false;
};

/// Which epoch of the target stage a run keeps: `[train] checkpoint`, `monitor`, `patience`.
/// Kept apart from TrainConfig (the SDK's stage settings): it concerns the runner's target stage.
struct SelectionSpec {
  std::string checkpoint = "last";  ///< "last", or "best" on `monitor`.
  std::string monitor = "acc";      ///< A single-valued metric on the target's validation split.
  int64_t patience = 0;  ///< Stop after this many epochs without improvement; 0 never stops.
};

/// How the host computes every stage of a run: `[train] precision`, `channels_last`,
/// `cuda_graphs` (docs/performance.md). Host keys like SelectionSpec, not in the SDK's
/// TrainConfig; in the resolved config only when not the default.
struct ComputeSpec {
  /// "fp32"; "bf16": forward and loss under LibTorch's autocast in bfloat16 (CPU and CUDA),
  /// parameters, gradients and optimiser state in fp32; "fp16": the same in float16 with dynamic
  /// loss scaling, CUDA only.
  std::string precision = "fp32";
  bool channels_last = false;  ///< 4-D parameters and image batches in channels-last layout.
  bool cuda_graphs = false;    ///< Capture the training step as a CUDA graph (CUDA only).
  /// MiB of resident splits the run keeps in device memory (a GPU's; no effect on the CPU,
  /// where host memory is the device's). Splits beyond it stay in pinned host memory and are
  /// streamed to the device batch by batch (non-blocking copies); the batches are the same.
  int64_t device_data_mb = 2048;
};

/// One fully resolved and validated run.
struct RunSpec {
  std::string experiment;             ///< Experiment file as given.
  std::string name;                   ///< Experiment name (`name`, default: file stem).
  int64_t seed = 0;                   ///< Run seed.
  std::string device = "auto";        ///< "auto", "cpu", "cuda" or "cuda:N".
  std::optional<DatasetSpec> source;  ///< Source domain, if any.
  DatasetSpec target;                 ///< Target domain.
  BackboneSpec backbone;              ///< Feature extractor.
  std::vector<PluginSpec> adapters;   ///< Attached in order.
  /// Adapter weights to apply after the adapters attach: "" (none), an adapter.safetensors
  /// file (its adapter.json beside it) or "run:<id>" (the adapters an earlier run trained).
  std::string adapter_weights;
  PluginSpec strategy;                 ///< Training method.
  TrainConfig train;                   ///< The target stage's settings.
  SelectionSpec selection;             ///< [train] checkpoint, monitor, patience.
  ComputeSpec compute;                 ///< [train] precision, channels_last, cuda_graphs.
  EvalSpec eval;                       ///< [eval].
  std::string config_toml;             ///< The resolved config as TOML, defaults included.
  std::string config_yaml;             ///< The same as YAML (Hydra's .hydra/config.yaml).
  std::string config_hash;             ///< xxh3-64 of `config_toml`.
  std::string overrides_json;          ///< Swept values of this run, as a JSON object.
  std::vector<std::string> overrides;  ///< Sweep values then command-line overrides, as text.
  std::string search_json;  ///< How the sweep chose this run (NewRun::search); "" outside sweeps.
  std::vector<ParamEntry> params;  ///< `config_toml` flattened ("train.lr" -> 0.001).
  LauncherSpec launcher;           ///< [launcher]: the same for every run of a sweep.
  /// [run] threads: LibTorch intra-op threads per run (0 = cores / runs at once); like the
  /// launcher, not part of the resolved config or the run key. `tlab run --threads` wins.
  int64_t threads = 0;
  /// [run] processes: ranks that train this run together (data-parallel, run/distributed.hpp);
  /// train.batch_size stays the global batch, so 1 and N ranks take the same steps. Like
  /// threads, outside the resolved config and the run key; recorded in runs.processes.
  int64_t processes = 1;
  std::string backend = "gloo";     ///< [run] backend: the c10d backend (gloo)
  double collective_timeout = 300;  ///< [run] collective_timeout: seconds before a collective fails
  bool oversubscribe = false;       ///< [run] oversubscribe: allow more ranks than cores
};

struct LoadOptions {
  std::vector<std::filesystem::path> config_dirs;  ///< --config-dir entries.
  bool multirun = false;                           ///< -m: command-line sweeps allowed.
  /// An Optuna search's trials to expand (cfg::ComposeOptions::draws); null: none.
  const std::vector<cfg::GivenDraw>* draws = nullptr;
  /// When set, receives how the sweep searches (its sweeper, space and objective).
  cfg::SearchSpec* search = nullptr;
};

/// Composes `path` with config groups and `overrides` (Hydra's grammar, see
/// docs/configuration.md), without expanding validation: what `tlab config` shows. Overrides
/// may name plugin parameters left at their defaults.
cfg::Composition compose_experiment(const std::filesystem::path& path,
                                    const std::vector<std::string>& overrides, PluginLoader& loader,
                                    const LoadOptions& options = {});

/// Composes, expands the sweep, resolves interpolations and validates every run.
/// Throws ConfigError; no run is returned unless all are valid (a bad sweep combination is
/// named in the message).
std::vector<RunSpec> load_experiment(const std::filesystem::path& path,
                                     const std::vector<std::string>& overrides,
                                     PluginLoader& loader, const LoadOptions& options = {});

/// Rebuilds the RunSpec of a run from its resolved config (RunSpec::config_toml), as the child
/// process of a sweep does; `experiment` is the experiment file it came from. Throws
/// ConfigError (e.g. a plugin rebuilt since with other parameters).
RunSpec load_resolved_run(const std::string& config_toml, const std::string& experiment,
                          PluginLoader& loader);

}  // namespace tlab
