// linear_head: a linear classifier from the model's current output to the target's classes.
#include "tlab/sdk/model.hpp"

struct LinearHeadOptions {
  double dropout = 0.0;
  bool bias = true;
};

class LinearHead : public tlab::Adapter {
 public:
  using Options = LinearHeadOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("dropout", &Options::dropout, "dropout on the features before the classifier")
        .range(0, 0.95)
        .field("bias", &Options::bias, "learn a bias per class");
  }
  explicit LinearHead(Options o) : o_(o) {}
  void attach(tlab::Model& model, const tlab::TaskInfo& task, tlab::Context& ctx) override {
    if (o_.dropout > 0) model.add_head(torch::nn::Dropout(o_.dropout), model.out_dim());
    torch::nn::Linear fc(torch::nn::LinearOptions(model.out_dim(), task.num_classes).bias(o_.bias));
    fc->to(ctx.device);
    model.add_head(fc, task.num_classes);
  }

 private:
  Options o_;
};

TLAB_PLUGIN(LinearHead, "linear_head", "1.0.0", "Linear classifier on the features")
