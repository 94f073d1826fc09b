// bert: the BERT encoder (Devlin et al. 2019) as Hugging Face's BertModel computes it, under its
// parameter names, so that a checkpoint's model.safetensors (its BertModel part) loads strictly
// through backbone.weights: embeddings.{word,position,token_type}_embeddings, embeddings.LayerNorm,
// encoder.layer.N.attention.self.{query,key,value}, encoder.layer.N.attention.output.{dense,
// LayerNorm}, encoder.layer.N.intermediate.dense, encoder.layer.N.output.{dense,LayerNorm},
// pooler.dense. Post-LN blocks, exact (erf) GELU, the checkpoint's LayerNorm eps.
// Input: int64 token ids N x L (the text dataset's tokenize = "wordpiece"); the attention mask
// comes from padding (pad_token_id), token type ids are 0 (one segment). variant = "roberta":
// RoBERTa's positions (counted over the real tokens, from pad_token_id + 1; pad_token_id 1).
// Features: the pooler's output (tanh(dense(h[CLS])), BertForSequenceClassification's input),
// the [CLS] token's hidden state, or the mean over the real tokens. mlm_head = true also holds a
// masked-LM head under the checkpoint's names (BertForMaskedLM: cls.predictions.*,
// RobertaForMaskedLM: lm_head.*), frozen and unused by forward(), so that a ...ForMaskedLM
// checkpoint loads with its head and masked-LM pre-training (tlab/sdk/mlm.hpp) continues from it.
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>
#include <limits>
#include <stdexcept>

#include "tlab/sdk/model.hpp"
#include "tlab/sdk/tokens.hpp"

struct BertOptions {
  std::string variant = "bert";
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  int64_t pad_token_id = -1;  // -1: the variant's (bert 0, roberta 1)
  std::string pooling = "pooler";
  bool mlm_head = false;
};

namespace {

using torch::nn::Embedding;
using torch::nn::LayerNorm;
using torch::nn::LayerNormOptions;
using torch::nn::Linear;

// A module holding named children only (HF's containers: attention, output, ...).
std::shared_ptr<torch::nn::Module> node(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

class Layer : public torch::nn::Module {
 public:
  explicit Layer(const BertOptions& o) : o_(o) {
    const int64_t h = o.hidden_size;
    auto attention = node(*this, "attention");
    auto self = node(*attention, "self");
    query_ = self->register_module("query", Linear(h, h));
    key_ = self->register_module("key", Linear(h, h));
    value_ = self->register_module("value", Linear(h, h));
    auto attention_output = node(*attention, "output");
    attention_dense_ = attention_output->register_module("dense", Linear(h, h));
    attention_norm_ = attention_output->register_module(
        "LayerNorm", LayerNorm(LayerNormOptions({h}).eps(o.layer_norm_eps)));
    intermediate_ =
        node(*this, "intermediate")->register_module("dense", Linear(h, o.intermediate_size));
    auto output = node(*this, "output");
    output_dense_ = output->register_module("dense", Linear(o.intermediate_size, h));
    output_norm_ = output->register_module("LayerNorm",
                                           LayerNorm(LayerNormOptions({h}).eps(o.layer_norm_eps)));
  }

  // h: N x L x H; bias: N x 1 x 1 x L (0 for real keys, the dtype's lowest for padding).
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& bias) {
    const int64_t n = h.size(0), len = h.size(1), heads = o_.num_attention_heads,
                  d = o_.hidden_size / heads;
    auto split = [&](const torch::Tensor& t) { return t.view({n, len, heads, d}).transpose(1, 2); };
    const torch::Tensor q = split(query_->forward(h)), k = split(key_->forward(h)),
                        v = split(value_->forward(h));
    torch::Tensor scores =
        torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(d)) + bias;
    torch::Tensor probs =
        torch::dropout(torch::softmax(scores, -1), o_.attention_probs_dropout_prob, is_training());
    torch::Tensor context = torch::matmul(probs, v).transpose(1, 2).reshape({n, len, heads * d});
    const double p = o_.hidden_dropout_prob;
    torch::Tensor a = attention_norm_->forward(
        torch::dropout(attention_dense_->forward(context), p, is_training()) + h);
    torch::Tensor mid = torch::gelu(intermediate_->forward(a));  // exact: erf
    return output_norm_->forward(torch::dropout(output_dense_->forward(mid), p, is_training()) + a);
  }

 private:
  BertOptions o_;
  Linear query_{nullptr}, key_{nullptr}, value_{nullptr}, attention_dense_{nullptr},
      intermediate_{nullptr}, output_dense_{nullptr};
  LayerNorm attention_norm_{nullptr}, output_norm_{nullptr};
};

class BertNet : public tlab::BackboneNet {
 public:
  explicit BertNet(const BertOptions& o) : o_(o) {
    auto embeddings = node(*this, "embeddings");
    const int64_t h = o.hidden_size;
    words_ = embeddings->register_module(
        "word_embeddings",
        Embedding(torch::nn::EmbeddingOptions(o.vocab_size, h).padding_idx(o.pad_token_id)));
    auto positions = torch::nn::EmbeddingOptions(o.max_position_embeddings, h);
    if (o.variant == "roberta") positions.padding_idx(o.pad_token_id);
    positions_ = embeddings->register_module("position_embeddings", Embedding(positions));
    types_ = embeddings->register_module("token_type_embeddings", Embedding(o.type_vocab_size, h));
    embedding_norm_ = embeddings->register_module(
        "LayerNorm", LayerNorm(LayerNormOptions({h}).eps(o.layer_norm_eps)));
    embedding_modules_ = embeddings;
    auto list = node(*node(*this, "encoder"), "layer");
    for (int64_t i = 0; i < o.num_hidden_layers; ++i)
      layers_.push_back(list->register_module(std::to_string(i), std::make_shared<Layer>(o)));
    pooler_ = node(*this, "pooler")->register_module("dense", Linear(h, h));
    if (o.mlm_head) {  // the checkpoint's masked-LM head, read by tlab::load_mlm_head
      const bool roberta = o.variant == "roberta";
      std::shared_ptr<torch::nn::Module> transform, owner;
      if (roberta) {
        owner = transform = node(*this, "lm_head");
      } else {
        owner = node(*node(*this, "cls"), "predictions");
        transform = node(*owner, "transform");
      }
      transform->register_module("dense", Linear(h, h));
      transform->register_module(roberta ? "layer_norm" : "LayerNorm",
                                 LayerNorm(LayerNormOptions({h}).eps(o.layer_norm_eps)));
      owner->register_parameter("bias", torch::zeros({o.vocab_size}));
      for (auto& p : owner->parameters()) {
        p.requires_grad_(false);
        mlm_head_.push_back(p);
      }
    }
  }

  torch::Tensor forward(torch::Tensor x) override {
    const torch::Tensor ids = token_ids(x);
    const int64_t len = ids.size(1);
    const torch::Tensor real = ids.ne(o_.pad_token_id);
    torch::Tensor positions;
    if (o_.variant == "roberta") {  // create_position_ids_from_input_ids
      const torch::Tensor mask = real.to(torch::kLong);
      positions = torch::cumsum(mask, 1) * mask + o_.pad_token_id;
    } else {
      positions = torch::arange(len, ids.options()).unsqueeze(0).expand_as(ids);
    }
    if (positions.numel() > 0 && !x.is_cuda() &&
        positions.max().item<int64_t>() >= o_.max_position_embeddings)
      throw std::invalid_argument("bert: a sequence of " + std::to_string(len) +
                                  " tokens needs more than max_position_embeddings = " +
                                  std::to_string(o_.max_position_embeddings) +
                                  " positions; lower the dataset's max_len");
    torch::Tensor h = words_->forward(ids) + types_->forward(torch::zeros_like(ids)) +
                      positions_->forward(positions);
    h = torch::dropout(embedding_norm_->forward(h), o_.hidden_dropout_prob, is_training());
    h = tap("embeddings", h);
    // HF's extended attention mask: (1 - mask) * the dtype's lowest, added to the scores.
    const double lowest = h.scalar_type() == torch::kDouble ? std::numeric_limits<double>::lowest()
                          : h.scalar_type() == torch::kHalf ? -65504.0
                          : h.scalar_type() == torch::kBFloat16
                              ? -3.3895313892515355e38
                              : static_cast<double>(std::numeric_limits<float>::lowest());
    const torch::Tensor bias =
        (1.0 - real.to(h.scalar_type())).mul(lowest).unsqueeze(1).unsqueeze(1);
    for (std::size_t i = 0; i < layers_.size(); ++i)
      h = tap("layer" + std::to_string(i), layers_[i]->forward(h, bias));
    if (o_.pooling == "cls") return h.select(1, 0);
    if (o_.pooling == "mean") {
      const torch::Tensor keep = real.to(h.scalar_type()).unsqueeze(-1);
      return (h * keep).sum(1) / keep.sum(1).clamp_min(1);
    }
    return torch::tanh(pooler_->forward(h.select(1, 0)));
  }
  int64_t feature_dim() const override { return o_.hidden_size; }
  std::vector<tlab::LayerGroup> layer_groups() override {
    std::vector<tlab::LayerGroup> g{{"embeddings", embedding_modules_->parameters()}};
    for (std::size_t i = 0; i < layers_.size(); ++i)
      g.push_back({"layer" + std::to_string(i), layers_[i]->parameters()});
    // The pooler reads the last layer's [CLS]: it trains with it. The masked-LM head (frozen)
    // is listed there too: the groups hold every parameter.
    for (auto& p : pooler_->parameters()) g.back().parameters.push_back(p);
    for (auto& p : mlm_head_) g.back().parameters.push_back(p);
    return g;
  }

 private:
  torch::Tensor token_ids(const torch::Tensor& x) const {
    return tlab::token_ids(x, o_.vocab_size, "bert",
                           "set backbone.vocab_size to the vocabulary's (the lines of vocab.txt)");
  }

  BertOptions o_;
  Embedding words_{nullptr}, positions_{nullptr}, types_{nullptr};
  LayerNorm embedding_norm_{nullptr};
  std::shared_ptr<torch::nn::Module> embedding_modules_;
  std::vector<std::shared_ptr<Layer>> layers_;
  Linear pooler_{nullptr};
  std::vector<torch::Tensor> mlm_head_;
};

}  // namespace

class Bert : public tlab::Backbone {
 public:
  using Options = BertOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("variant", &Options::variant,
               "bert, or roberta (positions counted over the real tokens, pad id 1)")
        .choices({"bert", "roberta"})
        .field("vocab_size", &Options::vocab_size, "the vocabulary's size (config.json)")
        .range(2, 1 << 24)
        .field("hidden_size", &Options::hidden_size, "width of the hidden states (= features)")
        .range(2, 1 << 15)
        .field("num_hidden_layers", &Options::num_hidden_layers, "encoder layers")
        .range(1, 128)
        .field("num_attention_heads", &Options::num_attention_heads,
               "attention heads (divides hidden_size)")
        .range(1, 256)
        .field("intermediate_size", &Options::intermediate_size, "feed-forward width")
        .range(1, 1 << 17)
        .field("max_position_embeddings", &Options::max_position_embeddings,
               "positions (bert 512, roberta 514)")
        .range(1, 1 << 16)
        .field("type_vocab_size", &Options::type_vocab_size, "token types (bert 2, roberta 1)")
        .range(1, 64)
        .field("layer_norm_eps", &Options::layer_norm_eps, "LayerNorm epsilon (config.json)")
        .range(0, 1)
        .field("hidden_dropout_prob", &Options::hidden_dropout_prob, "dropout on hidden states")
        .range(0, 0.95)
        .field("attention_probs_dropout_prob", &Options::attention_probs_dropout_prob,
               "dropout on attention probabilities")
        .range(0, 0.95)
        .field("pad_token_id", &Options::pad_token_id,
               "padding id, masked out of attention (-1: the variant's, bert 0, roberta 1)")
        .range(-1, 1 << 24)
        .field("pooling", &Options::pooling,
               "features: pooler (tanh(dense([CLS])), as BertForSequenceClassification), cls "
               "(the [CLS] hidden state) or mean (over the real tokens)")
        .choices({"pooler", "cls", "mean"})
        .field("mlm_head", &Options::mlm_head,
               "also hold a ...ForMaskedLM checkpoint's head (bert: cls.predictions.*, roberta: "
               "lm_head.*; frozen, not in the features) for masked-LM pre-training to continue "
               "from");
  }
  explicit Bert(Options o) : o_(std::move(o)) {
    if (o_.pad_token_id < 0) o_.pad_token_id = o_.variant == "roberta" ? 1 : 0;
    if (o_.hidden_size % o_.num_attention_heads != 0)
      throw std::invalid_argument(
          "bert: num_attention_heads = " + std::to_string(o_.num_attention_heads) +
          " does not divide hidden_size = " + std::to_string(o_.hidden_size) +
          "; take them from config.json");
    if (o_.pad_token_id >= o_.vocab_size)
      throw std::invalid_argument(
          "bert: pad_token_id = " + std::to_string(o_.pad_token_id) +
          " is outside the vocabulary (vocab_size = " + std::to_string(o_.vocab_size) + ")");
  }
  std::shared_ptr<tlab::BackboneNet> build(const std::vector<int64_t>& shape,
                                           tlab::Context&) override {
    if (shape.size() != 1)
      throw std::invalid_argument("bert needs token sequences, input_shape = {L}, got " +
                                  std::to_string(shape.size()) +
                                  " dimension(s); use the text dataset (tokenize = \"wordpiece\")");
    const int64_t needed = o_.variant == "roberta" ? shape[0] + o_.pad_token_id + 1 : shape[0];
    if (needed > o_.max_position_embeddings)
      throw std::invalid_argument(
          "bert: sequences of " + std::to_string(shape[0]) + " tokens need " +
          std::to_string(needed) + " positions, more than max_position_embeddings = " +
          std::to_string(o_.max_position_embeddings) + "; lower the dataset's max_len");
    return std::make_shared<BertNet>(o_);
  }

 private:
  Options o_;
};

TLAB_PLUGIN(Bert, "bert", "1.1.0",
            "BERT / RoBERTa encoder under Hugging Face's names (loads model.safetensors), "
            "pooler, cls or mean features")
