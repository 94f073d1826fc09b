// lenet: LeNet-5 (LeCun et al., "Gradient-based learning applied to document recognition",
// 1998): conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> fc 120 -> fc 84; the 84 units are the
// features. Inputs under 32 pixels (28x28 digits) get 2 pixels of zero padding in the first
// convolution, the usual MNIST variant, so that 28x28 and 32x32 inputs give the same maps.
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <stdexcept>

#include "tlab/sdk/model.hpp"

struct LeNetOptions {
  std::string activation = "relu";
  std::string pool = "max";
};

namespace {

class LeNetNet : public tlab::BackboneNet {
 public:
  LeNetNet(const std::vector<int64_t>& shape, int64_t pad, const LeNetOptions& o)
      : tanh_(o.activation == "tanh"), avg_(o.pool == "avg") {
    const int64_t h = ((shape[1] + 2 * pad - 4) / 2 - 4) / 2;
    const int64_t w = ((shape[2] + 2 * pad - 4) / 2 - 4) / 2;
    conv1_ = register_module(
        "conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(shape[0], 6, 5).padding(pad)));
    conv2_ = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(6, 16, 5)));
    fc1_ = register_module("fc1", torch::nn::Linear(16 * h * w, 120));
    fc2_ = register_module("fc2", torch::nn::Linear(120, 84));
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = tap("conv1", pool(act(conv1_->forward(x))));
    x = tap("conv2", pool(act(conv2_->forward(x))));
    x = tap("fc1", act(fc1_->forward(x.flatten(1))));
    return tap("fc2", act(fc2_->forward(x)));
  }
  int64_t feature_dim() const override { return 84; }
  std::vector<tlab::LayerGroup> layer_groups() override {
    return {{"conv1", conv1_->parameters()},
            {"conv2", conv2_->parameters()},
            {"fc1", fc1_->parameters()},
            {"fc2", fc2_->parameters()}};
  }

 private:
  torch::Tensor act(const torch::Tensor& x) const {
    return tanh_ ? torch::tanh(x) : torch::relu(x);
  }
  torch::Tensor pool(const torch::Tensor& x) const {
    return avg_ ? torch::avg_pool2d(x, 2) : torch::max_pool2d(x, 2);
  }

  bool tanh_, avg_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};

}  // namespace

class LeNet : public tlab::Backbone {
 public:
  using Options = LeNetOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("activation", &Options::activation,
               "nonlinearity after every layer: relu, or tanh as in the original")
        .choices({"relu", "tanh"})
        .field("pool", &Options::pool, "2x2 pooling: max, or avg as the original's subsampling")
        .choices({"max", "avg"});
  }
  explicit LeNet(Options o) : o_(std::move(o)) {}
  std::shared_ptr<tlab::BackboneNet> build(const std::vector<int64_t>& shape,
                                           tlab::Context&) override {
    if (shape.size() != 3)
      throw std::invalid_argument("lenet needs image inputs of shape CxHxW, got " +
                                  std::to_string(shape.size()) +
                                  " dimension(s); use mlp for vectors");
    const int64_t side = std::min(shape[1], shape[2]);
    const int64_t pad = side < 32 ? 2 : 0;
    if (side + 2 * pad < 16)
      throw std::invalid_argument(
          "lenet needs images of at least 12x12 pixels (28x28 or 32x32 "
          "as in the original), got " +
          std::to_string(shape[1]) + "x" + std::to_string(shape[2]));
    return std::make_shared<LeNetNet>(shape, pad, o_);
  }

 private:
  Options o_;
};

TLAB_PLUGIN(LeNet, "lenet", "1.0.0", "LeNet-5 (conv 6, conv 16, fc 120, fc 84) for small images")
