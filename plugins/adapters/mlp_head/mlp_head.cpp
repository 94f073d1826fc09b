// mlp_head: a multi-layer classifier from the model's current output to the target's classes:
// for each hidden width, Linear -> activation -> [dropout]; then a Linear to the classes.
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

#include <string>
#include <vector>

#include "tlab/sdk/model.hpp"

struct MlpHeadOptions {
  std::vector<int64_t> hidden{256};
  std::string activation = "relu";
  double dropout = 0.0;
};

class MlpHead : public tlab::Adapter {
 public:
  using Options = MlpHeadOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("hidden", &Options::hidden, "widths of the hidden layers, input side first")
        .min(1)
        .max(1 << 20)
        .min_size(1)
        .field("activation", &Options::activation, "nonlinearity after each hidden layer")
        .choices({"relu", "gelu"})
        .field("dropout", &Options::dropout, "dropout after each hidden layer's activation")
        .range(0, 0.95);
  }
  explicit MlpHead(Options o) : o_(std::move(o)) {
    if (o_.hidden.empty())
      throw std::invalid_argument(
          "mlp_head: 'hidden' is empty; give at least one width, e.g. "
          "[256] (for no hidden layer use linear_head)");
    for (int64_t h : o_.hidden)
      if (h < 1)
        throw std::invalid_argument("mlp_head: hidden width " + std::to_string(h) +
                                    " must be at least 1");
    if (o_.activation != "relu" && o_.activation != "gelu")
      throw std::invalid_argument("mlp_head: activation '" + o_.activation +
                                  "' is not one of relu, gelu");
    if (o_.dropout < 0 || o_.dropout >= 1)
      throw std::invalid_argument("mlp_head: dropout " + std::to_string(o_.dropout) +
                                  " must be in [0, 1)");
  }

  void attach(tlab::Model& model, const tlab::TaskInfo& task, tlab::Context& ctx) override {
    int64_t in = model.out_dim(), added = 0;
    auto linear = [&](int64_t from, int64_t to) {
      torch::nn::Linear fc(from, to);
      fc->to(ctx.device);
      model.add_head(fc, to);
      added += (from + 1) * to;
    };
    for (int64_t h : o_.hidden) {
      linear(in, h);
      if (o_.activation == "gelu")
        model.add_head(torch::nn::GELU(), h);
      else
        model.add_head(torch::nn::ReLU(), h);
      if (o_.dropout > 0) model.add_head(torch::nn::Dropout(o_.dropout), h);
      in = h;
    }
    linear(in, task.num_classes);
    if (ctx.log) {
      int64_t trainable = 0, total = 0;
      for (const auto& p : model.parameters()) {
        total += p.numel();
        if (p.requires_grad()) trainable += p.numel();
      }
      ctx.log->info("added " + std::to_string(o_.hidden.size() + 1) + " linear layer(s), " +
                    std::to_string(added) + " parameters; trainable " + std::to_string(trainable) +
                    " of " + std::to_string(total) + " parameters");
    }
  }

 private:
  Options o_;
};

TLAB_PLUGIN(MlpHead, "mlp_head", "1.0.0", "Multi-layer classifier on the features")
