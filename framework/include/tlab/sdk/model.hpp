#pragma once
/// \file model.hpp
/// Backbones, the model the runner trains, and adapters that attach to it.
///
/// Example (a backbone plugin builds its network for the dataset's input shape):
/// \code
///   class Mlp : public tlab::Backbone {
///    public:
///     std::shared_ptr<tlab::BackboneNet> build(const std::vector<int64_t>& input_shape,
///                                              tlab::Context& ctx) override {
///       return std::make_shared<MlpNet>(input_shape, opts_);
///     }
///   };
/// \endcode

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>

#include "tlab/sdk/context.hpp"
#include "tlab/sdk/plugin.hpp"

namespace tlab {

/// A named, ordered slice of a backbone's parameters (input side first), so strategies can
/// freeze, unfreeze gradually or give each group its own learning rate.
struct LayerGroup {
  std::string name;                       ///< e.g. "conv1", "block2", "fc".
  std::vector<torch::Tensor> parameters;  ///< The group's parameters.
};

/// A network mapping inputs (N x input_shape) to features (N x feature_dim()).
class BackboneNet : public torch::nn::Module {
 public:
  /// Features of a batch.
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  /// Width of the features.
  virtual int64_t feature_dim() const = 0;
  /// Parameter groups from input to output; together they hold every parameter.
  virtual std::vector<LayerGroup> layer_groups() = 0;
};

/// A backbone plugin: builds a fresh, randomly initialised network for an input shape.
class Backbone : public Plugin {
 public:
  static constexpr Kind kKind = Kind::Backbone;
  Kind kind() const final { return kKind; }
  /// A new network for examples of shape `input_shape` (e.g. {1, 28, 28}); uses LibTorch's
  /// global generator, already seeded by the host.
  virtual std::shared_ptr<BackboneNet> build(const std::vector<int64_t>& input_shape,
                                             Context& ctx) = 0;
};

/// The model the runner trains: a backbone followed by a head that adapters fill.
class Model : public torch::nn::Module {
 public:
  /// Wraps `net`; the head starts empty and its output width equals the feature width.
  explicit Model(std::shared_ptr<BackboneNet> net)
      : backbone(register_module("backbone", std::move(net))),
        head(register_module("head", torch::nn::Sequential())),
        head_out_dim(backbone->feature_dim()) {}

  /// Features of a batch (the backbone's output).
  torch::Tensor features(const torch::Tensor& x) { return backbone->forward(x); }
  /// Class scores of a batch.
  torch::Tensor forward(const torch::Tensor& x) { return head->forward(features(x)); }

  std::shared_ptr<BackboneNet> backbone;  ///< The feature extractor.
  torch::nn::Sequential head;             ///< Layers after the features, in order.
  int64_t head_out_dim;                   ///< Output width of `head` so far.
};

/// What an adapter needs to know about the task it attaches for.
struct TaskInfo {
  int64_t num_classes = 0;           ///< Classes of the target domain.
  std::vector<int64_t> input_shape;  ///< Shape of one input example.
};

/// An adapter plugin: changes the model before the target is trained: adds a head, wraps layers
/// (LoRA, bottlenecks) or selects what trains. Adapters attach in the order listed.
///
/// Example (a linear classifier; the runner checks that the head ends at num_classes):
/// \code
///   model.head->push_back(torch::nn::Linear(model.head_out_dim, task.num_classes));
///   model.head_out_dim = task.num_classes;
/// \endcode
class Adapter : public Plugin {
 public:
  static constexpr Kind kKind = Kind::Adapter;
  Kind kind() const final { return kKind; }
  /// Attaches to `model`; new modules must be created on `ctx.device`.
  virtual void attach(Model& model, const TaskInfo& task, Context& ctx) = 0;
};

}  // namespace tlab
