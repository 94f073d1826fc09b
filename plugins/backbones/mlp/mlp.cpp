// mlp: a multi-layer perceptron on flattened inputs; the last hidden layer is the feature.
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

#include "tlab/sdk/model.hpp"

struct MlpOptions {
  std::vector<int64_t> hidden{256, 128};
  double dropout = 0.0;
  std::string activation = "relu";
};

class MlpNet : public tlab::BackboneNet {
 public:
  MlpNet(int64_t in, const MlpOptions& o) : dropout_(o.dropout), activation_(o.activation) {
    for (std::size_t i = 0; i < o.hidden.size(); ++i) {
      layers_.push_back(register_module("layer" + std::to_string(i),
                                        torch::nn::Linear(i ? o.hidden[i - 1] : in, o.hidden[i])));
    }
    dim_ = o.hidden.back();
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = x.flatten(1);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      x = layers_[i]->forward(x);
      x = activation_ == "gelu"   ? torch::gelu(x)
          : activation_ == "tanh" ? torch::tanh(x)
                                  : torch::relu(x);
      if (dropout_ > 0) x = torch::dropout(x, dropout_, is_training());
      x = tap("layer" + std::to_string(i), x);
    }
    return x;
  }
  int64_t feature_dim() const override { return dim_; }
  std::vector<tlab::LayerGroup> layer_groups() override {
    std::vector<tlab::LayerGroup> g;
    for (std::size_t i = 0; i < layers_.size(); ++i)
      g.push_back({"layer" + std::to_string(i), layers_[i]->parameters()});
    return g;
  }

 private:
  std::vector<torch::nn::Linear> layers_;
  double dropout_;
  std::string activation_;
  int64_t dim_;
};

class Mlp : public tlab::Backbone {
 public:
  using Options = MlpOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("hidden", &Options::hidden,
               "widths of the hidden layers; the last is the feature size")
        .min(1)
        .max(1 << 20)
        .min_size(1)
        .field("dropout", &Options::dropout, "dropout after each hidden layer")
        .range(0, 0.95)
        .field("activation", &Options::activation, "nonlinearity")
        .choices({"relu", "gelu", "tanh"});
  }
  explicit Mlp(Options o) : o_(std::move(o)) {}
  std::shared_ptr<tlab::BackboneNet> build(const std::vector<int64_t>& shape,
                                           tlab::Context&) override {
    int64_t in = 1;
    for (int64_t d : shape) in *= d;
    return std::make_shared<MlpNet>(in, o_);
  }

 private:
  Options o_;
};

TLAB_PLUGIN(Mlp, "mlp", "1.0.0", "Multi-layer perceptron on flattened inputs")
