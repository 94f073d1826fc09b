// vit: the Vision Transformer (Dosovitskiy et al. 2021) as torchvision's VisionTransformer builds
// it (vit_b_16, vit_b_32, vit_l_16, or custom sizes), under its state-dict names, so that a
// torchvision checkpoint loads strictly through backbone.weights: conv_proj (the patch
// embedding), class_token, encoder.pos_embedding, encoder.layers.encoder_layer_<i>.{ln_1,
// self_attention (in_proj_weight, in_proj_bias, out_proj), ln_2, mlp.0, mlp.3}, encoder.ln, and
// with classifier = true heads.head. Pre-LN blocks, exact GELU, LayerNorm eps 1e-6.
// Features: the class token's output after encoder.ln (hidden_dim), or heads.head's outputs.
#include <torch/nn/init.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>
#include <stdexcept>

#include "tlab/sdk/model.hpp"

struct VitOptions {
  std::string arch = "vit_b_16";
  int64_t image_size = 224;
  int64_t patch_size = 16;
  int64_t num_layers = 12;
  int64_t num_heads = 12;
  int64_t hidden_dim = 768;
  int64_t mlp_dim = 3072;
  double dropout = 0.0;
  double attention_dropout = 0.0;
  bool classifier = false;
  int64_t classes = 1000;
};

namespace {

using torch::nn::LayerNorm;
using torch::nn::LayerNormOptions;
using torch::nn::Linear;

class EncoderBlock : public torch::nn::Module {
 public:
  explicit EncoderBlock(const VitOptions& o) : p_(o.dropout) {
    ln_1_ = register_module("ln_1", LayerNorm(LayerNormOptions({o.hidden_dim}).eps(1e-6)));
    attention_ = register_module("self_attention",
                                 torch::nn::MultiheadAttention(
                                     torch::nn::MultiheadAttentionOptions(o.hidden_dim, o.num_heads)
                                         .dropout(o.attention_dropout)));
    ln_2_ = register_module("ln_2", LayerNorm(LayerNormOptions({o.hidden_dim}).eps(1e-6)));
    auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
    fc1_ = mlp->register_module("0", Linear(o.hidden_dim, o.mlp_dim));
    fc2_ = mlp->register_module("3", Linear(o.mlp_dim, o.hidden_dim));
    torch::NoGradGuard no_grad;
    for (auto& l : {fc1_, fc2_}) {  // torchvision's MLPBlock initialisation
      torch::nn::init::xavier_uniform_(l->weight);
      torch::nn::init::normal_(l->bias, 0, 1e-6);
    }
  }
  // x: N x S x D.
  torch::Tensor forward(const torch::Tensor& input) {
    torch::Tensor x = ln_1_->forward(input).transpose(0, 1);  // S x N x D, as LibTorch's takes
    x = std::get<0>(attention_->forward(x, x, x, {}, /*need_weights=*/false)).transpose(0, 1);
    x = torch::dropout(x, p_, is_training()) + input;
    torch::Tensor y = torch::gelu(fc1_->forward(ln_2_->forward(x)));
    y = torch::dropout(fc2_->forward(torch::dropout(y, p_, is_training())), p_, is_training());
    return x + y;
  }

 private:
  double p_;
  LayerNorm ln_1_{nullptr}, ln_2_{nullptr};
  torch::nn::MultiheadAttention attention_{nullptr};
  Linear fc1_{nullptr}, fc2_{nullptr};
};

class VitNet : public tlab::BackboneNet {
 public:
  explicit VitNet(const VitOptions& o) : o_(o) {
    conv_proj_ = register_module(
        "conv_proj",
        torch::nn::Conv2d(
            torch::nn::Conv2dOptions(3, o.hidden_dim, o.patch_size).stride(o.patch_size)));
    class_token_ = register_parameter("class_token", torch::zeros({1, 1, o.hidden_dim}));
    const int64_t side = o.image_size / o.patch_size;
    auto encoder = register_module("encoder", std::make_shared<torch::nn::Module>());
    pos_embedding_ = encoder->register_parameter(
        "pos_embedding", torch::empty({1, side * side + 1, o.hidden_dim}).normal_(0, 0.02));
    auto layers = encoder->register_module("layers", std::make_shared<torch::nn::Module>());
    for (int64_t i = 0; i < o.num_layers; ++i)
      blocks_.push_back(layers->register_module("encoder_layer_" + std::to_string(i),
                                                std::make_shared<EncoderBlock>(o)));
    ln_ = encoder->register_module("ln", LayerNorm(LayerNormOptions({o.hidden_dim}).eps(1e-6)));
    if (o.classifier) {
      auto heads = register_module("heads", std::make_shared<torch::nn::Module>());
      head_ = heads->register_module("head", Linear(o.hidden_dim, o.classes));
    }
    // torchvision's initialisation where it differs from LibTorch's defaults: the patch
    // embedding normal with std sqrt(1 / fan_in) (torchvision truncates at +-2, which at that
    // std changes nothing in practice), its bias and the head zero (the MLPs: EncoderBlock).
    torch::NoGradGuard no_grad;
    const double fan_in = 3.0 * static_cast<double>(o.patch_size * o.patch_size);
    torch::nn::init::normal_(conv_proj_->weight, 0, std::sqrt(1.0 / fan_in));
    torch::nn::init::zeros_(conv_proj_->bias);
    if (!head_.is_empty()) {
      torch::nn::init::zeros_(head_->weight);
      torch::nn::init::zeros_(head_->bias);
    }
  }

  torch::Tensor forward(torch::Tensor x) override {
    if (x.dim() != 4 || x.size(1) != 3 || x.size(2) != o_.image_size || x.size(3) != o_.image_size)
      throw std::invalid_argument(
          "vit: expected images 3 x " + std::to_string(o_.image_size) + " x " +
          std::to_string(o_.image_size) + " (image_size), got a batch of shape " + shape_text(x) +
          "; resize the images (imagefolder: size = " + std::to_string(o_.image_size) +
          ") or set backbone.image_size");
    const int64_t n = x.size(0);
    x = conv_proj_->forward(x);  // N x D x h x w
    x = x.reshape({n, o_.hidden_dim, -1}).permute({0, 2, 1});
    x = torch::cat({class_token_.expand({n, -1, -1}), x}, 1);
    x = torch::dropout(x + pos_embedding_, o_.dropout, is_training());
    x = tap("stem", x);
    for (std::size_t i = 0; i < blocks_.size(); ++i)
      x = tap("block" + std::to_string(i), blocks_[i]->forward(x));
    x = ln_->forward(x).select(1, 0);
    if (!head_.is_empty()) x = tap("head", head_->forward(x));
    return x;
  }
  int64_t feature_dim() const override { return head_.is_empty() ? o_.hidden_dim : o_.classes; }
  std::vector<tlab::LayerGroup> layer_groups() override {
    std::vector<torch::Tensor> stem = conv_proj_->parameters();
    stem.push_back(class_token_);
    stem.push_back(pos_embedding_);
    std::vector<tlab::LayerGroup> g{{"stem", stem}};
    for (std::size_t i = 0; i < blocks_.size(); ++i)
      g.push_back({"block" + std::to_string(i), blocks_[i]->parameters()});
    for (auto& p : ln_->parameters()) g.back().parameters.push_back(p);  // the last block's output
    if (!head_.is_empty()) g.push_back({"head", head_->parameters()});
    return g;
  }

 private:
  static std::string shape_text(const torch::Tensor& x) {
    std::string s = "[";
    for (int64_t d = 0; d < x.dim(); ++d) s += (d ? ", " : "") + std::to_string(x.size(d));
    return s + "]";
  }
  VitOptions o_;
  torch::nn::Conv2d conv_proj_{nullptr};
  torch::Tensor class_token_, pos_embedding_;
  std::vector<std::shared_ptr<EncoderBlock>> blocks_;
  LayerNorm ln_{nullptr};
  Linear head_{nullptr};
};

}  // namespace

class Vit : public tlab::Backbone {
 public:
  using Options = VitOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("arch", &Options::arch,
               "torchvision's vit_b_16, vit_b_32, vit_l_16 (their sizes; the size keys are then "
               "ignored), or custom (the size keys below)")
        .choices({"vit_b_16", "vit_b_32", "vit_l_16", "custom"})
        .field("image_size", &Options::image_size, "side of the square input images")
        .range(1, 1 << 14)
        .field("patch_size", &Options::patch_size, "custom: patch side (divides image_size)")
        .range(1, 1 << 12)
        .field("num_layers", &Options::num_layers, "custom: encoder blocks")
        .range(1, 256)
        .field("num_heads", &Options::num_heads, "custom: attention heads (divide hidden_dim)")
        .range(1, 256)
        .field("hidden_dim", &Options::hidden_dim, "custom: width (= features)")
        .range(1, 1 << 15)
        .field("mlp_dim", &Options::mlp_dim, "custom: MLP width")
        .range(1, 1 << 17)
        .field("dropout", &Options::dropout, "dropout after attention and in the MLP")
        .range(0, 0.95)
        .field("attention_dropout", &Options::attention_dropout, "dropout on attention weights")
        .range(0, 0.95)
        .field("classifier", &Options::classifier,
               "keep heads.head (features = its outputs), e.g. to load a full torchvision "
               "checkpoint; false: features = the class token (hidden_dim)")
        .field("classes", &Options::classes, "outputs of heads.head when classifier = true")
        .range(1, 1 << 20);
  }
  explicit Vit(Options o) : o_(std::move(o)) {
    if (o_.arch == "vit_b_16" || o_.arch == "vit_b_32") {
      o_.patch_size = o_.arch == "vit_b_16" ? 16 : 32;
      o_.num_layers = 12;
      o_.num_heads = 12;
      o_.hidden_dim = 768;
      o_.mlp_dim = 3072;
    } else if (o_.arch == "vit_l_16") {
      o_.patch_size = 16;
      o_.num_layers = 24;
      o_.num_heads = 16;
      o_.hidden_dim = 1024;
      o_.mlp_dim = 4096;
    }
    if (o_.image_size % o_.patch_size != 0)
      throw std::invalid_argument("vit: patch_size = " + std::to_string(o_.patch_size) +
                                  " does not divide image_size = " + std::to_string(o_.image_size) +
                                  "; torchvision requires it");
    if (o_.hidden_dim % o_.num_heads != 0)
      throw std::invalid_argument("vit: num_heads = " + std::to_string(o_.num_heads) +
                                  " does not divide hidden_dim = " + std::to_string(o_.hidden_dim));
  }
  std::shared_ptr<tlab::BackboneNet> build(const std::vector<int64_t>& shape,
                                           tlab::Context&) override {
    if (shape.size() != 3 || shape[0] != 3 || shape[1] != o_.image_size ||
        shape[2] != o_.image_size)
      throw std::invalid_argument(
          "vit needs colour images 3 x " + std::to_string(o_.image_size) + " x " +
          std::to_string(o_.image_size) +
          " (image_size; its position embeddings are fixed), but "
          "the dataset gives " +
          [&] {
            std::string s;
            for (std::size_t i = 0; i < shape.size(); ++i)
              s += (i ? " x " : "") + std::to_string(shape[i]);
            return s;
          }() +
          "; resize the images (imagefolder: size) or set backbone.image_size");
    return std::make_shared<VitNet>(o_);
  }

 private:
  Options o_;
};

TLAB_PLUGIN(Vit, "vit", "1.0.0",
            "Vision Transformer (torchvision's vit_b_16, vit_b_32, vit_l_16 or custom sizes, "
            "its names)")
