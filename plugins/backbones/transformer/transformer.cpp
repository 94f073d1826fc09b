// transformer: a small pre-LN transformer encoder over token sequences. Input: int64 token ids,
// N x L (input_shape = {L}); id 0 is padding, masked out of attention and of mean pooling.
// Token embedding scaled by sqrt(d_model) + sinusoidal positions, `layers` pre-LN blocks
// (x + SelfAttention(LayerNorm(x)), then x + FF(LayerNorm(x))), a final LayerNorm, and mean
// pooling over the real tokens (or the first token: "cls"). The modules carry the names of
// PyTorch's nn.TransformerEncoderLayer(d_model, heads, ff, dropout, batch_first=True,
// norm_first=True) in an nn.ModuleList "layers", next to nn.Embedding "embedding" and
// nn.LayerNorm "norm", so that such a PyTorch model's state dict loads one to one.
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>
#include <stdexcept>

#include "tlab/sdk/model.hpp"
#include "tlab/sdk/tokens.hpp"

struct TransformerOptions {
  int64_t vocab_size = 10000;
  int64_t d_model = 64;
  int64_t heads = 4;
  int64_t layers = 2;
  int64_t ff = 128;
  double dropout = 0.1;
  int64_t max_len = 512;
  std::string pooling = "mean";
};

namespace {

// PyTorch's TransformerEncoderLayer with norm_first=True and ReLU, under its names.
class EncoderLayer : public torch::nn::Module {
 public:
  EncoderLayer(const TransformerOptions& o)
      : self_attn_(register_module(
            "self_attn",
            torch::nn::MultiheadAttention(
                torch::nn::MultiheadAttentionOptions(o.d_model, o.heads).dropout(o.dropout)))),
        linear1_(register_module("linear1", torch::nn::Linear(o.d_model, o.ff))),
        linear2_(register_module("linear2", torch::nn::Linear(o.ff, o.d_model))),
        norm1_(register_module(
            "norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model}).eps(1e-5)))),
        norm2_(register_module(
            "norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model}).eps(1e-5)))),
        p_(o.dropout) {}

  // h: N x L x d; pad: N x L, true where the key is padding.
  torch::Tensor forward(torch::Tensor h, const torch::Tensor& pad) {
    torch::Tensor y = norm1_->forward(h).transpose(0, 1);  // L x N x d, as MultiheadAttention takes
    torch::Tensor a = std::get<0>(self_attn_->forward(y, y, y, pad, /*need_weights=*/false));
    h = h + torch::dropout(a.transpose(0, 1), p_, is_training());
    y = torch::dropout(torch::relu(linear1_->forward(norm2_->forward(h))), p_, is_training());
    return h + torch::dropout(linear2_->forward(y), p_, is_training());
  }

 private:
  torch::nn::MultiheadAttention self_attn_;
  torch::nn::Linear linear1_, linear2_;
  torch::nn::LayerNorm norm1_, norm2_;
  double p_;
};

class TransformerNet : public tlab::BackboneNet {
 public:
  explicit TransformerNet(const TransformerOptions& o) : o_(o) {
    embedding_ = register_module("embedding", torch::nn::Embedding(o.vocab_size, o.d_model));
    auto list = register_module("layers", std::make_shared<torch::nn::Module>());
    for (int64_t i = 0; i < o.layers; ++i)
      layers_.push_back(
          list->register_module(std::to_string(i), std::make_shared<EncoderLayer>(o)));
    norm_ = register_module(
        "norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model}).eps(1e-5)));
    // pe[pos, 2i] = sin(pos / 10000^(2i/d)), pe[pos, 2i+1] = cos(...): not a parameter nor a
    // buffer (the state dict stays PyTorch's), moved to the input's device and dtype on use.
    auto pos = torch::arange(o.max_len, torch::kDouble).unsqueeze(1);
    auto freq = torch::exp(torch::arange(0, o.d_model, 2, torch::kDouble) *
                           (-std::log(10000.0) / static_cast<double>(o.d_model)));
    pe_ = torch::zeros({o.max_len, o.d_model}, torch::kDouble);
    pe_.slice(1, 0, o.d_model, 2).copy_(torch::sin(pos * freq));
    pe_.slice(1, 1, o.d_model, 2).copy_(torch::cos(pos * freq).slice(1, 0, o.d_model / 2));
    pe_ = pe_.to(torch::kFloat);
  }

  torch::Tensor forward(torch::Tensor x) override {
    const torch::Tensor ids = token_ids(x);
    const int64_t len = ids.size(1);
    const torch::Tensor pad = ids.eq(0);
    torch::Tensor h = embedding_->forward(ids) * std::sqrt(static_cast<double>(o_.d_model));
    if (pe_.device() != h.device() || pe_.scalar_type() != h.scalar_type())
      pe_ = pe_.to(h.device(), h.scalar_type());
    h = torch::dropout(h + pe_.slice(0, 0, len), o_.dropout, is_training());
    h = tap("embedding", h);
    // A sequence of padding only attends to all its positions (masking every key gives NaN);
    // its features are zeros under mean pooling.
    const torch::Tensor key_mask = pad.logical_and(pad.all(1, /*keepdim=*/true).logical_not());
    for (std::size_t i = 0; i < layers_.size(); ++i)
      h = tap("block" + std::to_string(i), layers_[i]->forward(h, key_mask));
    h = norm_->forward(h);
    if (o_.pooling == "cls") return h.select(1, 0);
    const torch::Tensor keep = pad.logical_not().to(h.scalar_type()).unsqueeze(-1);
    return (h * keep).sum(1) / keep.sum(1).clamp_min(1);
  }
  int64_t feature_dim() const override { return o_.d_model; }
  std::vector<tlab::LayerGroup> layer_groups() override {
    std::vector<tlab::LayerGroup> g{{"embedding", embedding_->parameters()}};
    for (std::size_t i = 0; i < layers_.size(); ++i)
      g.push_back({"block" + std::to_string(i), layers_[i]->parameters()});
    // The final LayerNorm belongs to the last block (it normalises that block's output).
    for (auto& p : norm_->parameters()) g.back().parameters.push_back(p);
    return g;
  }

 private:
  // N x L token ids as int64, checked against the vocabulary and max_len.
  torch::Tensor token_ids(const torch::Tensor& x) const {
    torch::Tensor ids = tlab::token_ids(x, o_.vocab_size, "transformer",
                                        "set backbone.vocab_size to the dataset's vocabulary size "
                                        "(id 0 is padding)");
    if (ids.size(1) > o_.max_len)
      throw std::invalid_argument("transformer: a sequence of " + std::to_string(ids.size(1)) +
                                  " tokens is longer than max_len = " + std::to_string(o_.max_len) +
                                  "; raise backbone.max_len");
    return ids;
  }

  TransformerOptions o_;
  torch::nn::Embedding embedding_{nullptr};
  std::vector<std::shared_ptr<EncoderLayer>> layers_;
  torch::nn::LayerNorm norm_{nullptr};
  torch::Tensor pe_;
};

}  // namespace

class Transformer : public tlab::Backbone {
 public:
  using Options = TransformerOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("vocab_size", &Options::vocab_size,
               "the dataset's vocabulary size: token ids lie in [0, vocab_size), 0 is padding")
        .range(2, 1 << 24)
        .field("d_model", &Options::d_model, "width of the token representations (= features)")
        .range(2, 1 << 14)
        .field("heads", &Options::heads, "attention heads (must divide d_model)")
        .range(1, 256)
        .field("layers", &Options::layers, "encoder blocks (pre-LN)")
        .range(1, 128)
        .field("ff", &Options::ff, "hidden width of each block's feed-forward network")
        .range(1, 1 << 16)
        .field("dropout", &Options::dropout, "dropout on embeddings, attention and in each block")
        .range(0, 0.95)
        .field("max_len", &Options::max_len, "longest sequence (positions encoded)")
        .range(1, 1 << 16)
        .field("pooling", &Options::pooling,
               "features: mean over non-padding tokens, or cls = the first token's output")
        .choices({"mean", "cls"});
  }
  explicit Transformer(Options o) : o_(std::move(o)) {
    if (o_.d_model % o_.heads != 0)
      throw std::invalid_argument("transformer: heads = " + std::to_string(o_.heads) +
                                  " does not divide d_model = " + std::to_string(o_.d_model) +
                                  "; choose heads among the divisors of d_model");
    if (o_.d_model % 2 != 0)
      throw std::invalid_argument("transformer: d_model = " + std::to_string(o_.d_model) +
                                  " must be even (sinusoidal positions come in sin/cos pairs)");
  }
  std::shared_ptr<tlab::BackboneNet> build(const std::vector<int64_t>& shape,
                                           tlab::Context&) override {
    if (shape.size() != 1)
      throw std::invalid_argument("transformer needs token sequences, input_shape = {L}, got " +
                                  std::to_string(shape.size()) +
                                  " dimension(s); use cnn or resnet for images");
    if (shape[0] > o_.max_len)
      throw std::invalid_argument("transformer: sequences of " + std::to_string(shape[0]) +
                                  " tokens are longer than max_len = " +
                                  std::to_string(o_.max_len) + "; raise backbone.max_len");
    return std::make_shared<TransformerNet>(o_);
  }

 private:
  Options o_;
};

TLAB_PLUGIN(Transformer, "transformer", "1.0.0",
            "Pre-LN transformer encoder over token ids (PyTorch's names), mean or cls pooling")
