#pragma once
/// \file strategy.hpp
/// Strategies: the training method. The runner owns the loop (batches, device, optimiser,
/// schedule, evaluation, checkpoints, metrics) and calls the strategy's hooks in this order:
///
///   1. `prepare(session)`  before adapters attach: e.g. pre-train the backbone on the source;
///   2. adapters attach to the model (the target head appears);
///   3. `setup(session)`    e.g. freeze the backbone for a linear probe;
///   4. the target stage: for each epoch `on_epoch_start`, then for each batch `loss`, then
///      `on_epoch_end`, then evaluation on target val and test;
///   5. final evaluation, summaries and a checkpoint of the model.
///
/// The hooks of step 4 are a StageHooks interface that every stage uses alike: a strategy whose
/// procedure does not fit (pre-training, adaptation stages, boosting rounds) runs more stages
/// with `Session::fit`, each with its own StageHooks object (often a member of the strategy).
/// Helpers for such stages: tlab/sdk/source.hpp, sampler.hpp, adaptation.hpp, mode.hpp.
///
/// Example (a strategy adding an L2 penalty to the classification loss):
/// \code
///   torch::Tensor loss(tlab::Session& s, const tlab::Batch& b) override {
///     return tlab::cross_entropy(s.model().forward(b.x), b.y) + o_.weight * penalty(s.model());
///   }
/// \endcode

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tlab/sdk/context.hpp"
#include "tlab/sdk/data.hpp"
#include "tlab/sdk/model.hpp"
#include "tlab/sdk/plugin.hpp"
#include "tlab/sdk/torch.hpp"

namespace tlab {

/// Optimisation settings of a stage (from the experiment's `[train]` table by default).
struct TrainConfig {
  int64_t epochs = 10;                ///< Passes over the training split.
  int64_t batch_size = 64;            ///< Examples per step.
  std::string optimizer = "adam";     ///< "sgd", "adam" or "adamw".
  double lr = 1e-3;                   ///< Base learning rate.
  double momentum = 0.9;              ///< SGD momentum.
  double weight_decay = 0.0;          ///< L2 (sgd, adam) or decoupled (adamw) weight decay.
  std::string schedule = "constant";  ///< "constant", "cosine" or "step".
  int64_t step_epochs = 10;           ///< For "step": epochs between decays.
  double gamma = 0.1;                 ///< For "step": decay factor.
};

/// Parameters that share a learning rate: `lr_scale` times the stage's (scheduled) rate.
/// Discriminative fine-tuning gives each layer group its own scale. A group's parameters may
/// start frozen (requires_grad false) and be unfrozen later (gradual unfreezing): the optimiser
/// holds them from the start and skips those without gradients.
struct ParamGroup {
  std::string name;                       ///< For logs and metrics, e.g. "layer4" or "head".
  std::vector<torch::Tensor> parameters;  ///< The group's parameters.
  double lr_scale = 1.0;                  ///< Multiplies the stage's learning rate.
};

/// A batch of labelled examples on the run's device.
struct Batch {
  torch::Tensor x;  ///< Inputs.
  torch::Tensor y;  ///< Labels (int64).
  /// Rows of the stage's training split the batch holds (int64, on the device), so a strategy
  /// can keep per-example state: importance weights, boosting distributions.
  torch::Tensor index;
};

class Session;

/// What a training stage calls back, for every stage alike: the runner's target stage calls the
/// strategy (a Strategy is a StageHooks), and a stage a strategy runs itself with Session::fit
/// calls the object in its Stage::hooks, typically a member of the strategy. State between the
/// calls (accumulators, schedules, samplers) lives in the object's members; to extend a hooks
/// class, derive from it and call the base's hooks.
///
/// Example (a stage on the source with a penalty, run from setup()):
/// \code
///   struct Penalised : tlab::StageHooks {
///     double weight = 0.1;
///     torch::Tensor loss(tlab::Session& s, const tlab::Batch& b) override {
///       return tlab::StageHooks::loss(s, b) + weight * penalty(s.model());
///     }
///   } hooks_;
///   void setup(tlab::Session& s) override {
///     tlab::Stage st = tlab::source_stage(s, o_.source);
///     st.hooks = &hooks_;
///     s.fit(st);
///   }
/// \endcode
class StageHooks {
 public:
  virtual ~StageHooks() = default;
  /// At the start of each epoch (0-based), after the stage's module was put in train mode (so a
  /// hook may put parts of it back in eval mode).
  virtual void on_epoch_start(Session& /*session*/, int64_t /*epoch*/) {}
  /// Loss of one training step. Default: cross-entropy of the stage's `forward` on the batch.
  virtual torch::Tensor loss(Session& session, const Batch& batch);
  /// At the end of each epoch (0-based), before evaluation: the place to read metrics
  /// accumulated on the device during the epoch (one host synchronisation).
  virtual void on_epoch_end(Session& /*session*/, int64_t /*epoch*/) {}
};

/// One training stage for `Session::fit`.
struct Stage {
  std::string domain;                     ///< Metric prefix: "source" or "target".
  TrainConfig config;                     ///< Optimisation settings.
  std::vector<torch::Tensor> parameters;  ///< What the optimiser updates (at the stage's rate).
  /// More parameters, a learning-rate scale per group (after `parameters`, which may be empty
  /// when groups hold everything). A tensor must not appear twice.
  std::vector<ParamGroup> groups;
  torch::nn::Module* module = nullptr;  ///< Put in train mode for training, eval for evaluation.
  /// Class scores of a batch of inputs (what evaluation measures).
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  /// Called for each epoch and step (not owned; must outlive fit). Null: cross-entropy of
  /// `forward`, no epoch hooks. One object may serve one running stage at a time.
  StageHooks* hooks = nullptr;
  const Split* train = nullptr;  ///< Labelled training data.
  const Split* val = nullptr;    ///< Evaluated each epoch as `<domain>/val/...` (may be null).
  const Split* test = nullptr;   ///< Evaluated each epoch as `<domain>/test/...` (may be null).
};

/// Accuracy and mean loss of a model on a split.
struct Evaluation {
  double acc = 0;   ///< Fraction correct in [0, 1].
  double loss = 0;  ///< Mean cross-entropy.
};

/// The run as a strategy sees it. Implemented by the host.
class Session {
 public:
  virtual ~Session() = default;
  virtual Context& context() = 0;  ///< Device, seed, logger, metrics.
  virtual Model& model() = 0;      ///< The model being trained.
  /// Source domain, or nullptr if none; loaded on the first call.
  virtual const DomainData* source() const = 0;
  virtual const DomainData& target() const = 0;         ///< Target domain (train = k-shot subset).
  virtual const TrainConfig& train_config() const = 0;  ///< The experiment's `[train]`.
  /// Optimiser steps taken so far in this run, over all stages (the `step` of metric rows).
  virtual int64_t step() const = 0;
  /// Runs a training stage with the runner's loop: batches, optimiser, schedule, metrics,
  /// divergence checks. Throws if the loss becomes NaN or infinite.
  virtual void fit(const Stage& stage) = 0;
  /// The stage being fit (the innermost when a hook fits another); throws outside fit().
  virtual const Stage& stage() const = 0;
  /// Evaluates class scores from `forward` on `split`, in eval mode, without gradients.
  virtual Evaluation evaluate(torch::nn::Module& module,
                              const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                              const Split& split) = 0;
  /// Runs `train` (e.g. source pre-training with `fit`) once for all the runs that share it,
  /// then restores its result: the parameters and buffers of `module`, the metric rows it
  /// logged and the steps it took. Runs share it when `key` (every option of the strategy that
  /// affects `train`, e.g. "source_epochs=3 source_lr=0.01", and whatever data `train` reads
  /// beyond the source's), the plugins' builds, the source table, the backbone table,
  /// `[train]`, the seed, the device type, the input shape and the state of `module` when
  /// reuse is called (so a stage that ran before, e.g. masked-language-model training, makes
  /// its own entries) are all equal. Concurrent runs wait for the first one. Afterwards the random
  /// number generator is reseeded from the seed and the key, so a run gives the same results
  /// whether it trained or reused. Returns true if `train` ran in this run. When `module` has a
  /// child named `head` that is one linear layer on the backbone's features (pretrain_on_source's
  /// temporary head), it is the source classifier `[eval] transferability` scores LEEP and NCE
  /// with (docs/evaluation.md).
  virtual bool reuse(const std::string& key, torch::nn::Module& module,
                     const std::function<void()>& train) = 0;
  /// The trained model of an earlier finished run, e.g. a teacher for distillation: `ref` is
  /// "run:<id>" (a run of this results database) or the path of a run folder. The model is
  /// rebuilt from the run's adapter.json (backbone and adapter plugins with their parameters)
  /// and its model.safetensors loaded strictly; it is on the run's device, in eval mode, with
  /// requires_grad off. Its input shape must be the target's. Throws with the reason otherwise.
  virtual std::shared_ptr<Model> load_model(const std::string& ref) = 0;
};

/// A strategy plugin. Every hook has a default, so the simplest strategy overrides nothing. Its
/// StageHooks (on_epoch_start, loss, on_epoch_end) are those of the runner's target stage.
class Strategy : public Plugin, public StageHooks {
 public:
  static constexpr Kind kKind = Kind::Strategy;
  Kind kind() const final { return kKind; }
  /// Before adapters attach (the model has no head yet): pre-training stages.
  virtual void prepare(Session& /*session*/) {}
  /// After adapters attach, before the target stage: freezing, extra modules, extra stages.
  virtual void setup(Session& /*session*/) {}
  /// What the target stage's optimiser updates, by group with learning-rate scales
  /// (discriminative rates, gradual unfreezing). Called after setup(). Default (empty): every
  /// parameter of the model that requires a gradient, at the base rate.
  virtual std::vector<ParamGroup> parameter_groups(Session& /*session*/) { return {}; }
};

/// Cross-entropy of `scores` against `labels` (mean over the batch).
inline torch::Tensor cross_entropy(const torch::Tensor& scores, const torch::Tensor& labels) {
  return torch::nn::functional::cross_entropy(scores, labels);
}

inline torch::Tensor StageHooks::loss(Session& session, const Batch& batch) {
  return cross_entropy(session.stage().forward(batch.x), batch.y);
}

}  // namespace tlab
