#pragma once
// The model's files: the run's checkpoint (model.safetensors, the full state dict under PyTorch
// names), its adapter weights on their own (adapter.safetensors + adapter.json: what trained),
// and where a config's `weights = "..."` / `adapter_weights = "..."` comes from.

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "store/store.hpp"
#include "tlab/sdk/model.hpp"
#include "weights/state_dict.hpp"

namespace tlab {

/// A weights file a config names, resolved to a file with its hash.
struct WeightsFile {
  std::string spec;            ///< As written: "path" or "run:<id>".
  std::filesystem::path path;  ///< The absolute file.
  std::string hash;            ///< xxh3-64 of the file, hex.
  int64_t run = 0;             ///< The run it came from (run:<id>), else 0.
};

/// Resolves `spec` ("run:<id>" → `<that run's folder>/<file_in_run>`; otherwise a path, relative
/// to the current directory) and hashes the file. Throws weights::WeightsError naming the run or
/// the file and the fix: unknown run, run not finished, file missing, not a safetensors file.
WeightsFile resolve_weights(const std::string& spec, Store& store, const std::string& file_in_run,
                            const std::string& key);

/// Loads the backbone's initial weights (run:<id>: the `backbone.` tensors of its checkpoint).
weights::LoadReport load_backbone_weights(BackboneNet& net, const BackboneSpec& spec,
                                          const WeightsFile& file);

/// Parameter counts of a model.
struct ParamCounts {
  int64_t total = 0, trainable = 0;
};
ParamCounts count_parameters(torch::nn::Module& module);

/// The checkpoint: the model's full state dict (backbone.*, head.*, adapters' modules) as
/// safetensors, with the run id and tlab version as metadata. Atomic.
void save_model(torch::nn::Module& model, const std::filesystem::path& file,
                const std::map<std::string, std::string>& metadata);

/// Buffers by name, copied (to find those training changed, e.g. batch-norm statistics).
std::map<std::string, torch::Tensor> snapshot_buffers(torch::nn::Module& model);

/// Writes `dir`/adapter.safetensors (every parameter in `trained`, plus the buffers that differ
/// from `buffers_before`) and `dir`/adapter.json (backbone and adapter plugins with their
/// parameters, classes, input shape, base weights, names): what a later run needs to apply the
/// adapters to the same backbone. Returns the number of tensors written.
int64_t save_adapters(Model& model, const std::vector<torch::Tensor>& trained,
                      const std::map<std::string, torch::Tensor>& buffers_before,
                      const RunSpec& spec, int64_t num_classes,
                      const std::vector<int64_t>& input_shape, const std::filesystem::path& dir);

/// Applies adapter weights saved by save_adapters: checks that its adapter.json describes the
/// same backbone plugin, adapters (plugins and parameters), classes and input shape, then loads
/// every tensor of the file by name (each must exist with its shape; the rest of the model keeps
/// its weights). Errors name the difference and the file.
weights::LoadReport load_adapters(Model& model, const RunSpec& spec, int64_t num_classes,
                                  const std::vector<int64_t>& input_shape, const WeightsFile& file);

/// The trained model of the finished run whose folder is `run_dir` (Session::load_model): rebuilt
/// from its adapter.json (backbone and adapter plugins with their parameters, classes, input
/// shape) with `loader`, its model.safetensors loaded strictly, moved to `ctx.device`, in eval
/// mode with requires_grad off; its input shape must be `input_shape` (the run's data). `ref` is
/// how the user named it (for messages). LibTorch's random
/// state is restored afterwards: loading a model does not change the run's random numbers.
std::shared_ptr<Model> load_run_model(const std::filesystem::path& run_dir, const std::string& ref,
                                      PluginLoader& loader, Context& ctx,
                                      const std::vector<int64_t>& input_shape);

}  // namespace tlab
