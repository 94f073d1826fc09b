// resnet: torchvision's ResNet (He et al., "Deep residual learning for image recognition", CVPR
// 2016), layer for layer and under torchvision's module names, so that a torchvision state dict
// ("conv1.weight", "layer1.0.bn1.running_mean", "layer2.0.downsample.0.weight", "fc.bias") loads
// one to one. Depths 18 and 34 use BasicBlock, 50, 101 and 152 Bottleneck with the stride on the
// 3x3 convolution (torchvision's "ResNet v1.5").
#include <torch/nn/init.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <map>
#include <stdexcept>

#include "tlab/sdk/model.hpp"

struct ResNetOptions {
  int64_t depth = 18;
  bool classifier = false;
  int64_t classes = 1000;
  bool small_input = false;
};

namespace {

// Blocks per stage of each depth, and whether it uses Bottleneck blocks (torchvision's table).
struct Layout {
  std::vector<int64_t> blocks;
  bool bottleneck;
};
const std::map<int64_t, Layout>& layouts() {
  static const std::map<int64_t, Layout> l{{18, {{2, 2, 2, 2}, false}},
                                           {34, {{3, 4, 6, 3}, false}},
                                           {50, {{3, 4, 6, 3}, true}},
                                           {101, {{3, 4, 23, 3}, true}},
                                           {152, {{3, 8, 36, 3}, true}}};
  return l;
}

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).bias(false));
}
torch::nn::BatchNorm2d bn(int64_t c) {
  return torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(c).eps(1e-5).momentum(0.1));
}

// A residual block; `downsample` ("0" conv 1x1, "1" batch norm) projects the shortcut when the
// stride or the width changes.
class Block : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor x) = 0;

 protected:
  void make_downsample(int64_t in, int64_t out, int64_t stride) {
    if (stride == 1 && in == out) return;
    downsample_ =
        register_module("downsample", torch::nn::Sequential(conv(in, out, 1, stride), bn(out)));
  }
  torch::Tensor shortcut(const torch::Tensor& x) {
    return downsample_.is_empty() ? x : downsample_->forward(x);
  }
  torch::nn::Sequential downsample_{nullptr};
};

// torchvision's BasicBlock: 3x3 (stride) -> bn -> relu -> 3x3 -> bn, + shortcut, relu.
class BasicBlock : public Block {
 public:
  static constexpr int64_t kExpansion = 1;
  BasicBlock(int64_t in, int64_t planes, int64_t stride)
      : conv1_(register_module("conv1", conv(in, planes, 3, stride))),
        bn1_(register_module("bn1", bn(planes))),
        conv2_(register_module("conv2", conv(planes, planes, 3, 1))),
        bn2_(register_module("bn2", bn(planes))) {
    make_downsample(in, planes, stride);
  }
  torch::Tensor forward(torch::Tensor x) override {
    torch::Tensor out = torch::relu(bn1_->forward(conv1_->forward(x)));
    out = bn2_->forward(conv2_->forward(out));
    return torch::relu(out + shortcut(x));
  }

 private:
  torch::nn::Conv2d conv1_;
  torch::nn::BatchNorm2d bn1_;
  torch::nn::Conv2d conv2_;
  torch::nn::BatchNorm2d bn2_;
};

// torchvision's Bottleneck: 1x1 -> 3x3 (stride) -> 1x1 (x4 width), each with bn, + shortcut.
class Bottleneck : public Block {
 public:
  static constexpr int64_t kExpansion = 4;
  Bottleneck(int64_t in, int64_t planes, int64_t stride)
      : conv1_(register_module("conv1", conv(in, planes, 1, 1))),
        bn1_(register_module("bn1", bn(planes))),
        conv2_(register_module("conv2", conv(planes, planes, 3, stride))),
        bn2_(register_module("bn2", bn(planes))),
        conv3_(register_module("conv3", conv(planes, planes * kExpansion, 1, 1))),
        bn3_(register_module("bn3", bn(planes * kExpansion))) {
    make_downsample(in, planes * kExpansion, stride);
  }
  torch::Tensor forward(torch::Tensor x) override {
    torch::Tensor out = torch::relu(bn1_->forward(conv1_->forward(x)));
    out = torch::relu(bn2_->forward(conv2_->forward(out)));
    out = bn3_->forward(conv3_->forward(out));
    return torch::relu(out + shortcut(x));
  }

 private:
  torch::nn::Conv2d conv1_;
  torch::nn::BatchNorm2d bn1_;
  torch::nn::Conv2d conv2_;
  torch::nn::BatchNorm2d bn2_;
  torch::nn::Conv2d conv3_;
  torch::nn::BatchNorm2d bn3_;
};

class ResNetNet : public tlab::BackboneNet {
 public:
  ResNetNet(int64_t in_channels, const ResNetOptions& o) : o_(o) {
    const Layout& layout = layouts().at(o.depth);
    conv1_ = register_module(
        "conv1",
        o.small_input
            ? conv(in_channels, 64, 3, 1)
            : torch::nn::Conv2d(
                  torch::nn::Conv2dOptions(in_channels, 64, 7).stride(2).padding(3).bias(false)));
    bn1_ = register_module("bn1", bn(64));
    const int64_t expansion = layout.bottleneck ? Bottleneck::kExpansion : BasicBlock::kExpansion;
    int64_t in = 64;
    for (int64_t stage = 0; stage < 4; ++stage) {
      const int64_t planes = int64_t{64} << stage;
      auto layer = register_module("layer" + std::to_string(stage + 1),
                                   std::make_shared<torch::nn::Module>());
      std::vector<std::shared_ptr<Block>> blocks;
      for (int64_t b = 0; b < layout.blocks[stage]; ++b) {
        const int64_t stride = (stage > 0 && b == 0) ? 2 : 1;
        std::shared_ptr<Block> block;
        if (layout.bottleneck)
          block = std::make_shared<Bottleneck>(in, planes, stride);
        else
          block = std::make_shared<BasicBlock>(in, planes, stride);
        blocks.push_back(layer->register_module(std::to_string(b), block));
        in = planes * expansion;
      }
      layers_.push_back(layer);
      blocks_.push_back(std::move(blocks));
    }
    dim_ = in;
    if (o.classifier) {
      fc_ = register_module("fc", torch::nn::Linear(in, o.classes));
      dim_ = o.classes;
    }
    // torchvision's initialisation: He normal (fan_out, ReLU) for convolutions; batch norm
    // weight 1, bias 0 (LibTorch's default, as is fc's).
    for (auto& m : modules(/*include_self=*/false))
      if (auto* c = m->as<torch::nn::Conv2dImpl>())
        torch::nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
  }

  torch::Tensor forward(torch::Tensor x) override {
    x = torch::relu(bn1_->forward(conv1_->forward(x)));
    if (!o_.small_input) x = torch::max_pool2d(x, 3, 2, 1);
    x = tap("stem", x);
    for (std::size_t s = 0; s < blocks_.size(); ++s) {
      for (auto& b : blocks_[s]) x = b->forward(x);
      x = tap("layer" + std::to_string(s + 1), x);
    }
    x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
    if (!fc_.is_empty()) x = tap("fc", fc_->forward(x));
    return x;
  }
  int64_t feature_dim() const override { return dim_; }
  std::vector<tlab::LayerGroup> layer_groups() override {
    std::vector<tlab::LayerGroup> g;
    auto stem = conv1_->parameters();
    for (auto& p : bn1_->parameters()) stem.push_back(p);
    g.push_back({"stem", stem});
    for (std::size_t s = 0; s < layers_.size(); ++s)
      g.push_back({"layer" + std::to_string(s + 1), layers_[s]->parameters()});
    if (!fc_.is_empty()) g.push_back({"fc", fc_->parameters()});
    return g;
  }

 private:
  ResNetOptions o_;
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr};
  std::vector<std::shared_ptr<torch::nn::Module>> layers_;
  std::vector<std::vector<std::shared_ptr<Block>>> blocks_;
  torch::nn::Linear fc_{nullptr};
  int64_t dim_ = 0;
};

}  // namespace

class ResNet : public tlab::Backbone {
 public:
  using Options = ResNetOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("depth", &Options::depth,
               "18 or 34 (BasicBlock), 50, 101 or 152 (Bottleneck), as torchvision")
        .range(18, 152)
        .field("classifier", &Options::classifier,
               "keep the final fc layer (features = its outputs), e.g. to load a full torchvision "
               "checkpoint; false: features = the pooled 512 (18, 34) or 2048 (50+) channels")
        .field("classes", &Options::classes, "outputs of fc when classifier = true")
        .range(1, 1 << 20)
        .field("small_input", &Options::small_input,
               "CIFAR stem for small images: conv1 3x3 stride 1 and no max-pool (conv1 then no "
               "longer takes torchvision's conv1 weights)");
  }
  explicit ResNet(Options o) : o_(o) {
    if (!layouts().count(o_.depth))
      throw std::invalid_argument("resnet: depth " + std::to_string(o_.depth) +
                                  " is not one of torchvision's: allowed depths are 18, 34, 50, "
                                  "101, 152");
  }
  std::shared_ptr<tlab::BackboneNet> build(const std::vector<int64_t>& shape,
                                           tlab::Context&) override {
    if (shape.size() != 3)
      throw std::invalid_argument("resnet needs image inputs of shape CxHxW, got " +
                                  std::to_string(shape.size()) +
                                  " dimension(s); use mlp for vectors or transformer for tokens");
    return std::make_shared<ResNetNet>(shape[0], o_);
  }

 private:
  Options o_;
};

TLAB_PLUGIN(ResNet, "resnet", "1.0.0",
            "torchvision's ResNet 18/34/50/101/152 under torchvision's names (weights load 1:1)")
