#pragma once
/// \file source.hpp
/// The labelled source domain, as strategies use it: checks with clear messages, the options
/// fragment of a source stage, the stage that trains the model on the source, and supervised
/// pre-training of the backbone shared between runs (Session::reuse).
///
/// Example (pre-train on the source, then fine-tune on the target with the runner's loop):
/// \code
///   struct MyOptions {
///     tlab::SourceOptions source;  // source_epochs, source_lr
///     double weight = 0.1;
///   };
///   static tlab::Schema schema() {
///     return tlab::SchemaFor<MyOptions>().include(&MyOptions::source).field(...);
///   }
///   void prepare(tlab::Session& s) override { tlab::pretrain_on_source(s, o_.source); }
/// \endcode
/// Messages name the strategy (Context::plugin); the runner adds the hook they came from.

#include <cstdint>
#include <sstream>
#include <string>

#include "tlab/sdk/check.hpp"
#include "tlab/sdk/params.hpp"
#include "tlab/sdk/strategy.hpp"

namespace tlab {

/// Options of a stage on the labelled source: a fragment for a strategy's options
/// (SchemaFor::include). A strategy sets its own defaults in its options struct.
struct SourceOptions {
  int64_t source_epochs = 10;
  double source_lr = 0.0;
  /// Keys `source_epochs` (>= 1) and `source_lr` (0 = train.lr).
  static Schema schema() {
    return SchemaFor<SourceOptions>()
        .field("source_epochs", &SourceOptions::source_epochs,
               "epochs of training on the labelled source")
        .range(1, 100000)
        .field("source_lr", &SourceOptions::source_lr,
               "learning rate on the labelled source (0 = train.lr)")
        .range(0, 1000);
  }
};

/// The labelled source domain (resident), or an error saying the strategy needs one.
inline const DomainData& need_source(Session& s) {
  const std::string& who = s.context().plugin;
  const DomainData* src = s.source();
  TLAB_CHECK(src, who,
             " trains on a labelled source domain: add a [source] table (e.g. defaults = [{ "
             "\"dataset@source\" = \"digits_clean\" }])");
  TLAB_CHECK(!src->train.streamed(), who,
             " needs a resident source training split; this one is streamed (raise the "
             "dataset's resident_max_mb, or on a GPU train.device_data_mb)");
  return *src;
}

/// Checks that `src` and the target share their classes (one classifier serves both).
inline void need_same_classes(Session& s, const DomainData& src) {
  const int64_t t = s.target().num_classes;
  TLAB_CHECK(src.num_classes == t, s.context().plugin,
             " uses one classifier for both domains, but the source has ", src.num_classes,
             " classes and the target ", t,
             "; use domains with the same classes, or finetune/multitask for different ones");
}

/// The target's unlabelled inputs, or an error saying how to get some.
inline const torch::Tensor& need_unlabeled(Session& s) {
  const torch::Tensor& u = s.target().unlabeled;
  TLAB_CHECK(u.defined() && u.size(0) > 0, s.context().plugin,
             " adapts to unlabelled target inputs, but the target has none: keep a few labels per "
             "class with [target] shots = K (the other training examples become the unlabelled "
             "pool), or use a dataset that provides unlabelled data");
  return u;
}

/// A stage that trains the whole model (backbone and head: every parameter that requires a
/// gradient) with `[train]`'s settings but `epochs` epochs at `lr` (0 = train.lr); its metrics
/// are `<domain>/...`. Set `train` (and `val`, `hooks`, more `groups`) before Session::fit.
inline Stage model_stage(Session& s, const std::string& domain, int64_t epochs, double lr) {
  Model& model = s.model();
  Stage st;
  st.domain = domain;
  st.config = s.train_config();
  st.config.epochs = epochs;
  if (lr > 0) st.config.lr = lr;
  for (auto& p : model.parameters())
    if (p.requires_grad()) st.parameters.push_back(p);
  st.module = &model;
  st.forward = [&model](const torch::Tensor& x) { return model.forward(x); };
  return st;
}

/// model_stage on the labelled source: `o.source_epochs` epochs at `o.source_lr`, metrics
/// source/..., source val evaluated each epoch.
inline Stage source_stage(Session& s, const SourceOptions& o) {
  const DomainData& src = need_source(s);
  Stage st = model_stage(s, "source", o.source_epochs, o.source_lr);
  st.train = &src.train;
  st.val = &src.val;
  return st;
}

/// Supervised pre-training, for strategies that fine-tune a pre-trained backbone: the backbone
/// and a temporary linear head with the source's classes train on the labelled source
/// (o.source_epochs at o.source_lr), once for all the runs that share it (Session::reuse: equal
/// source, backbone, [train], seed and these options). Call it in prepare(), before adapters
/// attach. Logs source/test/acc of the pre-trained model when the source has a test split.
inline void pretrain_on_source(Session& s, const SourceOptions& o) {
  const DomainData& src = need_source(s);
  Model& model = s.model();
  torch::nn::Linear head(model.backbone->feature_dim(), src.num_classes);
  head->to(s.context().device);
  Stage st;
  st.domain = "source";
  st.config = s.train_config();
  st.config.epochs = o.source_epochs;
  if (o.source_lr > 0) st.config.lr = o.source_lr;
  st.parameters = model.backbone->parameters();
  for (auto& p : head->parameters()) st.parameters.push_back(p);
  st.module = &model;
  st.forward = [&](const torch::Tensor& x) { return head->forward(model.features(x)); };
  st.train = &src.train;
  st.val = &src.val;
  // What reuse restores: the backbone and the temporary head.
  torch::nn::Module pretrained;
  pretrained.register_module("backbone", model.backbone);
  pretrained.register_module("head", head.ptr());
  // The key text is finetune's since its 1.0.0: every strategy that pre-trains with equal
  // options runs the same procedure (each plugin still has its own entries: the key holds the
  // plugin's build).
  std::ostringstream key;
  key.precision(17);
  key << "source_epochs=" << o.source_epochs << " source_lr=" << st.config.lr;
  s.reuse(key.str(), pretrained, [&] { s.fit(st); });
  if (src.test.size() > 0)
    s.context().metrics->summary("source/test/acc", s.evaluate(model, st.forward, src.test).acc);
}

}  // namespace tlab
