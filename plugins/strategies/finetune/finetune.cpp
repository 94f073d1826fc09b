// finetune: pre-train backbone + a source head on the labelled source domain, then train on
// the target with a new head (attached by the adapters). With freeze_backbone the backbone is
// fixed after pre-training and only the head trains: a linear probe.
#include <torch/nn/modules/linear.h>

#include <sstream>

#include "tlab/sdk/strategy.hpp"

struct FinetuneOptions {
  int64_t source_epochs = 5;     ///< Epochs of supervised pre-training on the source.
  double source_lr = 0.0;        ///< Learning rate of pre-training (0 = train.lr).
  bool freeze_backbone = false;  ///< Train only the head on the target (linear probe).
};

class Finetune : public tlab::Strategy {
 public:
  using Options = FinetuneOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("source_epochs", &Options::source_epochs, "epochs of pre-training on the source")
        .range(1, 100000)
        .field("source_lr", &Options::source_lr, "learning rate of pre-training (0 = train.lr)")
        .range(0, 1000)
        .field("freeze_backbone", &Options::freeze_backbone,
               "after pre-training, train only the head (linear probe)");
  }
  explicit Finetune(Options o) : o_(o) {}

  void prepare(tlab::Session& s) override {
    const tlab::DomainData* src = s.source();
    if (!src)
      throw std::invalid_argument("finetune pre-trains on the source domain: add a [source] table");
    auto& model = s.model();
    torch::nn::Linear head(model.backbone->feature_dim(), src->num_classes);
    head->to(s.context().device);
    tlab::Stage st;
    st.domain = "source";
    st.config = s.train_config();
    st.config.epochs = o_.source_epochs;
    if (o_.source_lr > 0) st.config.lr = o_.source_lr;
    st.parameters = model.backbone->parameters();
    for (auto& p : head->parameters()) st.parameters.push_back(p);
    st.module = &model;
    st.forward = [&](const torch::Tensor& x) { return head->forward(model.features(x)); };
    st.train = &src->train;
    st.val = &src->val;
    // Pre-training depends only on the source, the backbone and these options: runs that differ
    // on the target side (heads, freezing, target settings) share one pre-trained model.
    torch::nn::Module pretrained;
    pretrained.register_module("backbone", model.backbone);
    pretrained.register_module("head", head.ptr());
    std::ostringstream key;
    key.precision(17);
    key << "source_epochs=" << o_.source_epochs << " source_lr=" << st.config.lr;
    s.reuse(key.str(), pretrained, [&] { s.fit(st); });
    if (src->test.size() > 0)
      s.context().metrics->summary("source/test/acc", s.evaluate(model, st.forward, src->test).acc);
  }

  void setup(tlab::Session& s) override {
    if (o_.freeze_backbone)
      for (auto& p : s.model().backbone->parameters()) p.requires_grad_(false);
  }

  void on_epoch_start(tlab::Session& s, int64_t) override {
    if (o_.freeze_backbone) s.model().backbone->eval();  // keep batch-norm statistics fixed too
  }

 private:
  Options o_;
};

TLAB_PLUGIN(Finetune, "finetune", "1.0.0", "Pre-train on source labels, then fine-tune on target")
