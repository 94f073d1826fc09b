// finetune: pre-train backbone + a source head on the labelled source domain, then train on
// the target with a new head (attached by the adapters). With freeze_backbone the backbone is
// fixed after pre-training and only the head trains: a linear probe.
//
// Partial fine-tuning and ULMFiT (Howard & Ruder 2018, "Universal Language Model Fine-tuning
// for Text Classification", sec. 3.2-3.3), over the backbone's layer groups (input side first):
// - train_groups = K: only the top K groups and the head train (0 = head only, -1 = all);
// - discriminative fine-tuning: the head trains at lr, the top group at lr/d, the next at
//   lr/d^2, ... (theta^l_t = theta^l_{t-1} - eta^l grad, eta^{l-1} = eta^l / 2.6 in the paper:
//   lr_decay = 2.6), or explicit scales per group (group_lr_scales);
// - gradual unfreezing: only the head trains at first; every unfreeze_every epochs the next
//   group from the top joins (the paper unfreezes one group per epoch: unfreeze_every = 1).
// All groups are handed to the optimiser from the start; frozen ones have requires_grad off.
//
// What pre-trains (pretrain): "supervised" (the source's labels, tlab::pretrain_on_source),
// "mlm" (masked-language-model training on unlabelled text of the source, the target or both,
// tlab::pretrain_mlm: BERT's objective; on the target's text it is task-adaptive pre-training,
// Gururangan et al. 2020), "mlm+supervised" (the one, then the other), or "none" (fine-tune
// the backbone as built or loaded: a checkpoint given by backbone.weights).
#include <cmath>
#include <unordered_set>

#include "../common/finetuning.hpp"
#include "tlab/sdk/mlm.hpp"
#include "tlab/sdk/source.hpp"

struct FinetuneOptions {
  std::string pretrain = "supervised";
  tlab::SourceOptions source{5};
  tlab::MlmOptions mlm;
  bool freeze_backbone = false;
  int64_t train_groups = -1;
  double lr_decay = 1.0;
  std::vector<double> group_lr_scales;
  int64_t unfreeze_every = 0;
};

class Finetune : public tlab::Strategy {
 public:
  using Options = FinetuneOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("pretrain", &Options::pretrain,
               "before the target: supervised (source labels), mlm (masked-language model on "
               "mlm_text's unlabelled text), mlm+supervised, or none (the backbone as built or "
               "loaded)")
        .choices({"supervised", "mlm", "mlm+supervised", "none"})
        .include(&Options::source)
        .include(&Options::mlm)
        .field("freeze_backbone", &Options::freeze_backbone,
               "after pre-training, train only the head (linear probe)")
        .field("train_groups", &Options::train_groups,
               "backbone layer groups that train, counted from the top (0 = head only, -1 = all)")
        .range(-1, 100000)
        .field("lr_decay", &Options::lr_decay,
               "discriminative rates: the head trains at train.lr, the top backbone group at "
               "lr/d, the next at lr/d^2, ... (ULMFiT uses 2.6; 1 = one rate)")
        .range(0.01, 100)
        .field("group_lr_scales", &Options::group_lr_scales,
               "learning-rate scale per backbone layer group, input side first (instead of "
               "lr_decay; empty = from lr_decay)")
        .range(0, 1000)
        .field("unfreeze_every", &Options::unfreeze_every,
               "gradual unfreezing: start with the head only and unfreeze the next backbone group "
               "from the top every this many target epochs (0 = off)")
        .range(0, 100000);
  }
  explicit Finetune(Options o) : o_(std::move(o)) {}

  void prepare(tlab::Session& s) override {
    if (o_.pretrain == "mlm" || o_.pretrain == "mlm+supervised") tlab::pretrain_mlm(s, o_.mlm);
    if (o_.pretrain == "supervised" || o_.pretrain == "mlm+supervised")
      tlab::pretrain_on_source(s, o_.source);
  }

  void setup(tlab::Session& s) override {
    auto& model = s.model();
    groups_ = model.backbone->layer_groups();
    const int64_t n = static_cast<int64_t>(groups_.size());
    std::string names;
    for (const auto& g : groups_) names += (names.empty() ? "" : ", ") + g.name;
    if (o_.train_groups > n)
      throw std::invalid_argument("finetune: train_groups = " + std::to_string(o_.train_groups) +
                                  " but the backbone has " + std::to_string(n) + " layer groups (" +
                                  names + "); use 0.." + std::to_string(n) + ", or -1 for all");
    if (o_.freeze_backbone && o_.train_groups > 0)
      throw std::invalid_argument(
          "finetune: freeze_backbone = true freezes every backbone group but train_groups = " +
          std::to_string(o_.train_groups) +
          "; set one of them (train_groups = 0 is the same as "
          "freeze_backbone = true)");
    if (!o_.group_lr_scales.empty() && static_cast<int64_t>(o_.group_lr_scales.size()) != n)
      throw std::invalid_argument(
          "finetune: group_lr_scales has " + std::to_string(o_.group_lr_scales.size()) +
          " values but the backbone has " + std::to_string(n) + " layer groups (" + names +
          "); give one scale per group, input side first");
    if (!o_.group_lr_scales.empty() && o_.lr_decay != 1.0)
      throw std::invalid_argument(
          "finetune: both lr_decay (" + std::to_string(o_.lr_decay) +
          ") and group_lr_scales are set; use one of them (lr_decay = 1 with explicit scales)");
    trainable_ = o_.freeze_backbone ? 0 : (o_.train_groups < 0 ? n : o_.train_groups);
    if (o_.unfreeze_every > 0 && trainable_ == 0)
      throw std::invalid_argument(
          "finetune: unfreeze_every = " + std::to_string(o_.unfreeze_every) +
          " but no backbone group may train (freeze_backbone = true or train_groups = 0); "
          "set unfreeze_every = 0 or let groups train (train_groups = -1 or > 0)");
    grouped_ = o_.train_groups >= 0 || o_.lr_decay != 1.0 || !o_.group_lr_scales.empty() ||
               o_.unfreeze_every > 0;
    if (!grouped_) {  // 1.0.0's behaviour: every trainable parameter at the base rate
      if (o_.freeze_backbone)
        for (auto& p : model.backbone->parameters()) p.requires_grad_(false);
      return;
    }
    head_ = tlab_strategy::non_backbone_parameters(model);
    // Parameters an adapter froze (e.g. LoRA's base weights) stay frozen whatever the schedule.
    managed_.assign(groups_.size(), {});
    for (std::size_t i = 0; i < groups_.size(); ++i)
      for (auto& p : groups_[i].parameters)
        if (p.requires_grad()) managed_[i].push_back(p);
    for (auto& g : groups_)
      for (auto& p : g.parameters) p.requires_grad_(false);
    set_unfrozen(o_.unfreeze_every > 0 ? 0 : trainable_);
  }

  std::vector<tlab::ParamGroup> parameter_groups(tlab::Session& s) override {
    if (!grouped_) return {};
    std::vector<tlab::ParamGroup> out;
    const int64_t n = static_cast<int64_t>(groups_.size());
    for (int64_t i = n - trainable_; i < n; ++i) {
      const double scale = o_.group_lr_scales.empty()
                               ? std::pow(o_.lr_decay, -static_cast<double>(n - i))
                               : o_.group_lr_scales[static_cast<std::size_t>(i)];
      out.push_back({groups_[i].name, managed_[i], scale});
      s.context().metrics->summary("target/lr_scale/" + groups_[i].name, scale);
    }
    out.push_back({"head", head_, 1.0});
    s.context().metrics->summary("target/lr_scale/head", 1.0);
    return out;
  }

  void on_epoch_start(tlab::Session& s, int64_t epoch) override {
    if (o_.freeze_backbone || (grouped_ && trainable_ == 0))
      s.model().backbone->eval();  // keep batch-norm statistics fixed too
    if (!grouped_) return;
    if (o_.unfreeze_every > 0) set_unfrozen(std::min(trainable_, epoch / o_.unfreeze_every));
    s.context().metrics->log("target/train/unfrozen_groups", static_cast<double>(unfrozen_),
                             s.step(), epoch);
  }

 private:
  // The top `k` backbone groups train (of those this run may train), the others are frozen.
  void set_unfrozen(int64_t k) {
    const int64_t n = static_cast<int64_t>(groups_.size());
    for (int64_t i = n - trainable_; i < n; ++i)
      for (auto& p : managed_[i]) p.requires_grad_(i >= n - k);
    unfrozen_ = k;
  }

  Options o_;
  bool grouped_ = false;
  int64_t trainable_ = 0;  // backbone groups this run may train (from the top)
  int64_t unfrozen_ = 0;   // of those, how many train now
  std::vector<tlab::LayerGroup> groups_;
  std::vector<std::vector<torch::Tensor>> managed_;
  std::vector<torch::Tensor> head_;
};

TLAB_PLUGIN(Finetune, "finetune", "1.2.0",
            "Pre-train (source labels or masked-language model), then fine-tune on target")
