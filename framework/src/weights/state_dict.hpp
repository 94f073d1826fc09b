#pragma once
// State dicts: a module's parameters and buffers by name (PyTorch's names: "layer1.0.conv1.weight",
// "bn1.running_mean", "bn1.num_batches_tracked"), and loading named tensors into a module with a
// report of what matched, what is missing, what is unexpected and what has another shape.

#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "weights/safetensors.hpp"

namespace tlab::weights {

/// A key rewriting rule for weights from other codebases: a key starting with `from` has that
/// prefix replaced by `to` (empty `to` strips it). Written "from=to" in configs, e.g.
/// "module.=" (DataParallel's prefix) or "encoder.=" or "model.backbone.=body.".
struct RemapRule {
  std::string from, to;
};

/// Parses "from=to" rules; throws WeightsError naming the bad rule and the expected form.
std::vector<RemapRule> parse_remap(const std::vector<std::string>& rules);

/// Applies the first rule whose `from` prefixes `key` (keys no rule matches stay as they are).
std::string remap_key(const std::string& key, const std::vector<RemapRule>& rules);

/// What load_state_dict did.
struct LoadReport {
  std::vector<std::string> matched;     ///< Loaded (model names).
  std::vector<std::string> missing;     ///< In the model, not in the file: left as they were.
  std::vector<std::string> unexpected;  ///< In the file (after remapping), not in the model.
  std::vector<std::string> mismatched;  ///< "name: file 3x4, model 4x4" (not loaded).
  std::vector<std::string> ignored;     ///< Filtered out by `only_prefix` (e.g. a run's head).

  /// True when every model tensor was loaded and every file tensor was used.
  bool complete() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  /// "120 matched, 2 missing (fc.weight, fc.bias), 0 unexpected, 0 shape mismatches".
  std::string summary(std::size_t max_names = 5) const;
};

/// The module's parameters then buffers, by their full dotted names (its state dict).
NamedTensors state_dict(torch::nn::Module& module);

struct LoadOptions {
  bool strict = true;              ///< Throw unless the report is complete().
  std::vector<RemapRule> remap;    ///< Applied to the file's keys first.
  std::string only_prefix;         ///< When set: keep file keys with this prefix (stripped), the
                                   ///< rest go to `ignored` (e.g. "backbone." of a checkpoint).
  std::string what = "the model";  ///< How errors name the receiving module.
  /// How to allow or fix a difference (ends the error messages).
  std::string hint =
      "if that is intended (e.g. a new head), set weights_strict = false, or rename keys with "
      "remapping rules (weights_remap = [\"from=to\"])";
};

/// Copies `tensors` into `module` by name, converting dtype and device as needed, without
/// recording gradients. With `strict` (the default) nothing is copied unless every name and shape
/// matches; the error lists what differs and how to allow it (strict = false, remapping rules).
/// `source` names the file in messages.
LoadReport load_state_dict(torch::nn::Module& module, const NamedTensors& tensors,
                           const std::string& source, const LoadOptions& options = {});

}  // namespace tlab::weights
