// cnn: a small convolutional network for images (e.g. 1x28x28 digits): blocks of
// conv3x3 -> [batch norm] -> ReLU -> 2x2 max-pool, then a fully connected feature layer.
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include "tlab/sdk/model.hpp"

struct CnnOptions {
  std::vector<int64_t> channels{16, 32};
  int64_t feature_dim = 64;
  bool batch_norm = true;
  double dropout = 0.0;
};

class CnnNet : public tlab::BackboneNet {
 public:
  CnnNet(const std::vector<int64_t>& shape, const CnnOptions& o) : o_(o) {
    int64_t in = shape[0], h = shape[1], w = shape[2];
    for (std::size_t i = 0; i < o.channels.size(); ++i) {
      auto name = "conv" + std::to_string(i + 1);
      convs_.push_back(register_module(
          name, torch::nn::Conv2d(torch::nn::Conv2dOptions(in, o.channels[i], 3).padding(1))));
      if (o.batch_norm)
        norms_.push_back(
            register_module("bn" + std::to_string(i + 1), torch::nn::BatchNorm2d(o.channels[i])));
      in = o.channels[i];
      h /= 2;
      w /= 2;
    }
    fc_ = register_module("fc", torch::nn::Linear(in * h * w, o.feature_dim));
  }
  torch::Tensor forward(torch::Tensor x) override {
    for (std::size_t i = 0; i < convs_.size(); ++i) {
      x = convs_[i]->forward(x);
      if (o_.batch_norm) x = norms_[i]->forward(x);
      x = tap("conv" + std::to_string(i + 1), torch::max_pool2d(torch::relu(x), 2));
    }
    x = x.flatten(1);
    if (o_.dropout > 0) x = torch::dropout(x, o_.dropout, is_training());
    return tap("fc", torch::relu(fc_->forward(x)));
  }
  int64_t feature_dim() const override { return o_.feature_dim; }
  std::vector<tlab::LayerGroup> layer_groups() override {
    std::vector<tlab::LayerGroup> g;
    for (std::size_t i = 0; i < convs_.size(); ++i) {
      auto p = convs_[i]->parameters();
      if (o_.batch_norm)
        for (auto& t : norms_[i]->parameters()) p.push_back(t);
      g.push_back({"conv" + std::to_string(i + 1), p});
    }
    g.push_back({"fc", fc_->parameters()});
    return g;
  }

 private:
  CnnOptions o_;
  std::vector<torch::nn::Conv2d> convs_;
  std::vector<torch::nn::BatchNorm2d> norms_;
  torch::nn::Linear fc_{nullptr};
};

class Cnn : public tlab::Backbone {
 public:
  using Options = CnnOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("channels", &Options::channels,
               "output channels of each conv block (each halves H and W)")
        .min(1)
        .max(4096)
        .min_size(1)
        .field("feature_dim", &Options::feature_dim, "width of the feature layer")
        .range(1, 1 << 16)
        .field("batch_norm", &Options::batch_norm, "batch norm after each convolution")
        .field("dropout", &Options::dropout, "dropout before the feature layer")
        .range(0, 0.95);
  }
  explicit Cnn(Options o) : o_(std::move(o)) {}
  std::shared_ptr<tlab::BackboneNet> build(const std::vector<int64_t>& shape,
                                           tlab::Context&) override {
    if (shape.size() != 3)
      throw std::invalid_argument("cnn needs image inputs of shape CxHxW, got " +
                                  std::to_string(shape.size()) +
                                  " dimension(s); use mlp for vectors");
    int64_t side = std::min(shape[1], shape[2]) >> o_.channels.size();
    if (side < 1)
      throw std::invalid_argument("cnn: " + std::to_string(o_.channels.size()) +
                                  " blocks halve a " + std::to_string(shape[1]) + "x" +
                                  std::to_string(shape[2]) +
                                  " input below 1 pixel; use fewer channels entries");
    return std::make_shared<CnnNet>(shape, o_);
  }

 private:
  Options o_;
};

TLAB_PLUGIN(Cnn, "cnn", "1.0.0", "Small convolutional network for images")
