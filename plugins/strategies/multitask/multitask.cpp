// multitask: multi-task learning with hard parameter sharing (Caruana 1997, "Multitask
// Learning"): one shared backbone, one head per task. The target task's head is the one the
// adapters attach (the model's head); the source task gets its own linear head with the source's
// classes, so the two tasks' classes may differ. Each target step minimises
//   target_weight * CE(head_t(f(x_t)), y_t) + source_weight * CE(head_s(f(x_s)), y_s)
// with (x_s, y_s) a random batch of the labelled source (same batch size). The source head trains
// with the model (a parameter group of its own) but is not part of the model: the target
// classifier's forward and the saved checkpoint hold the target task only. Optionally both tasks'
// shared part warms up on the source first (`source_epochs`, backbone + source head).
// Metrics per epoch: source/train/loss and source/train/acc (the source task during the joint
// stage), target/train/ce; at the end source/test/acc (source head on source test).
#include <sstream>

#include "tlab/sdk/sampler.hpp"
#include "tlab/sdk/source.hpp"

struct MultitaskOptions {
  double target_weight = 1.0;
  double source_weight = 1.0;
  int64_t source_epochs = 0;
  double source_lr = 0.0;
};

class Multitask : public tlab::Strategy {
 public:
  using Options = MultitaskOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("target_weight", &Options::target_weight,
               "weight of the target task's cross-entropy")
        .range(0, 1e6)
        .field("source_weight", &Options::source_weight,
               "weight of the source task's cross-entropy")
        .range(0, 1e6)
        .field("source_epochs", &Options::source_epochs,
               "epochs of warm-up on the source task alone before the joint stage (0 = none)")
        .range(0, 100000)
        .field("source_lr", &Options::source_lr, "learning rate of the warm-up (0 = train.lr)")
        .range(0, 1000);
  }
  explicit Multitask(Options o) : o_(o) {
    TLAB_CHECK(o_.target_weight > 0,
               "multitask: target_weight is 0, so the target head would never train; give it a "
               "positive weight (default 1)");
  }

  // The source head is made before the adapters attach (their random initialisation follows),
  // and warms up with the backbone when asked.
  void prepare(tlab::Session& s) override {
    const auto& src = tlab::need_source(s);
    auto& model = s.model();
    head_ = torch::nn::Linear(model.backbone->feature_dim(), src.num_classes);
    head_->to(s.context().device);
    if (o_.source_epochs == 0) return;
    auto st = tlab::source_stage(s, {o_.source_epochs, o_.source_lr});
    for (auto& p : head_->parameters()) st.parameters.push_back(p);
    st.forward = [this, &model](const torch::Tensor& x) {
      return head_->forward(model.features(x));
    };
    // Warm-up depends only on the source, the backbone and these options: runs that differ on
    // the target side share it.
    torch::nn::Module shared;
    shared.register_module("backbone", model.backbone);
    shared.register_module("source_head", head_.ptr());
    std::ostringstream key;
    key.precision(17);
    key << "multitask warm-up source_epochs=" << o_.source_epochs << " source_lr=" << st.config.lr;
    s.reuse(key.str(), shared, [&] { s.fit(st); });
  }

  void setup(tlab::Session& s) override {
    const auto& src = *s.source();
    sampler_ = tlab::Sampler(src.train.x, s.train_config().batch_size);
  }

  // Everything of the model that trains, plus the source head (not in the model).
  std::vector<tlab::ParamGroup> parameter_groups(tlab::Session& s) override {
    tlab::ParamGroup model{"model", {}, 1.0};
    for (auto& p : s.model().parameters())
      if (p.requires_grad()) model.parameters.push_back(p);
    return {model, tlab::ParamGroup{"source_head", head_->parameters(), 1.0}};
  }

  void on_epoch_start(tlab::Session& s, int64_t) override {
    auto opts = torch::TensorOptions(s.context().device);
    src_loss_ = torch::zeros({}, opts);
    tgt_loss_ = torch::zeros({}, opts);
    src_correct_ = torch::zeros({}, opts.dtype(torch::kLong));
    steps_ = seen_ = 0;
  }

  torch::Tensor loss(tlab::Session& s, const tlab::Batch& b) override {
    auto& model = s.model();
    const auto& src = *s.source();
    auto idx = sampler_.next_index();
    auto ys = src.train.y.index_select(0, idx);
    auto scores = head_->forward(model.features(src.train.x.index_select(0, idx)));
    auto source_ce = tlab::cross_entropy(scores, ys);
    auto target_ce = tlab::cross_entropy(model.forward(b.x), b.y);
    src_loss_ += source_ce.detach();
    tgt_loss_ += target_ce.detach();
    src_correct_ += scores.detach().argmax(1).eq(ys).sum();
    ++steps_;
    seen_ += ys.size(0);
    return o_.target_weight * target_ce + o_.source_weight * source_ce;
  }

  void on_epoch_end(tlab::Session& s, int64_t epoch) override {
    auto& m = *s.context().metrics;
    if (steps_ > 0) {
      m.log("source/train/loss", src_loss_.item<double>() / steps_, s.step(), epoch);
      m.log("source/train/acc", src_correct_.item<double>() / seen_, s.step(), epoch);
      m.log("target/train/ce", tgt_loss_.item<double>() / steps_, s.step(), epoch);
    }
    const auto& src = *s.source();
    if (epoch + 1 == s.train_config().epochs && src.test.size() > 0) {
      auto& model = s.model();
      auto forward = [this, &model](const torch::Tensor& x) {
        return head_->forward(model.features(x));
      };
      m.summary("source/test/acc", s.evaluate(model, forward, src.test).acc);
    }
  }

 private:
  Options o_;
  torch::nn::Linear head_{nullptr};
  tlab::Sampler sampler_;
  torch::Tensor src_loss_, tgt_loss_, src_correct_;
  int64_t steps_ = 0, seen_ = 0;
};

TLAB_PLUGIN(Multitask, "multitask", "1.0.0",
            "Shared backbone, a head per task: target and source losses together (Caruana 1997)")
