// The in-tree adapter plugins (mlp_head, lora, bottleneck, bitfit, freeze) on tiny mlp and cnn
// backbones built through the real plugin loader: shapes, what trains, equality with the base
// model at attach time, LoRA merging, and every error message.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "plugins/loader.hpp"
#include "test_paths.hpp"
#include "tlab/sdk/sdk.hpp"

using ::testing::HasSubstr;
using ::testing::Not;

namespace {

using Strings = std::vector<std::string>;
using Ints = std::vector<int64_t>;

tlab::PluginLoader& loader() {
  static tlab::PluginLoader l({TLAB_TEST_PLUGIN_DIR});
  return l;
}

class RecordingLogger : public tlab::Logger {
 public:
  void debug(const std::string& m) override { lines.push_back(m); }
  void info(const std::string& m) override { lines.push_back(m); }
  void warn(const std::string& m) override { lines.push_back("warn: " + m); }
  std::string all() const {
    std::string s;
    for (const auto& l : lines) s += l + "\n";
    return s;
  }
  std::vector<std::string> lines;
};

// A backbone with a grouped convolution and no taps (the in-tree ones have neither).
class GroupedNet : public tlab::BackboneNet {
 public:
  GroupedNet() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(4, 4, 3).groups(2)));
    fc = register_module("fc", torch::nn::Linear(4, 3));
  }
  torch::Tensor forward(torch::Tensor x) override {
    return fc->forward(conv->forward(x).mean({2, 3}));
  }
  int64_t feature_dim() const override { return 3; }
  std::vector<tlab::LayerGroup> layer_groups() override {
    return {{"conv", conv->parameters()}, {"fc", fc->parameters()}};
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::Linear fc{nullptr};
};

// A sequence backbone (N x L x D activations, as in transformers) with one tap.
class SeqNet : public tlab::BackboneNet {
 public:
  SeqNet() { proj = register_module("proj", torch::nn::Linear(6, 8)); }
  torch::Tensor forward(torch::Tensor x) override {
    return tap("proj", torch::relu(proj->forward(x))).mean(1);
  }
  int64_t feature_dim() const override { return 8; }
  std::vector<tlab::LayerGroup> layer_groups() override { return {{"proj", proj->parameters()}}; }
  torch::nn::Linear proj{nullptr};
};

std::map<std::string, torch::Tensor> snapshot(torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> s;
  for (const auto& p : m.named_parameters()) s[p.key()] = p.value().detach().clone();
  for (const auto& b : m.named_buffers()) s[b.key()] = b.value().detach().clone();
  return s;
}

std::set<std::string> trainable(tlab::Model& m) {
  std::set<std::string> s;
  for (const auto& p : m.named_parameters())
    if (p.value().requires_grad()) s.insert(p.key());
  return s;
}

int64_t trainable_count(tlab::Model& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters())
    if (p.requires_grad()) n += p.numel();
  return n;
}

class Adapters : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(11);
    ctx_.log = &log_;
  }

  std::shared_ptr<tlab::Model> mlp(Ints hidden = {8, 6}, Ints shape = {5}) {
    auto net = loader()
                   .create<tlab::Backbone>("mlp", {{"hidden", hidden}})
                   ->build(std::vector<int64_t>(shape), ctx_);
    return std::make_shared<tlab::Model>(net);
  }
  std::shared_ptr<tlab::Model> cnn(bool batch_norm = true) {
    auto net = loader()
                   .create<tlab::Backbone>("cnn", {{"channels", Ints{4, 6}},
                                                   {"feature_dim", int64_t{10}},
                                                   {"batch_norm", batch_norm}})
                   ->build({1, 8, 8}, ctx_);
    return std::make_shared<tlab::Model>(net);
  }
  void attach(tlab::Model& m, const std::string& name, const tlab::Params& p = {}, Ints shape = {5},
              int64_t classes = 3) {
    loader().create<tlab::Adapter>(name, p)->attach(m, {classes, shape}, ctx_);
  }
  std::string attach_error(tlab::Model& m, const std::string& name, const tlab::Params& p,
                           Ints shape = {5}) {
    try {
      attach(m, name, p, shape);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  }
  std::string create_error(const std::string& name, const tlab::Params& p) {
    try {
      loader().create<tlab::Adapter>(name, p);
    } catch (const tlab::PluginError& e) {
      return e.what();
    }
    return "";
  }
  // `n` SGD steps on the model's trainable parameters, in train mode.
  void train(tlab::Model& m, const torch::Tensor& x, const torch::Tensor& y, int n = 3) {
    std::vector<torch::Tensor> params;
    for (const auto& p : m.parameters())
      if (p.requires_grad()) params.push_back(p);
    ASSERT_FALSE(params.empty());
    torch::optim::SGD opt(params, torch::optim::SGDOptions(0.5));
    m.train();
    for (int i = 0; i < n; ++i) {
      opt.zero_grad();
      torch::nn::functional::cross_entropy(m.forward(x), y).backward();
      opt.step();
    }
  }
  static torch::Tensor eval_forward(tlab::Model& m, const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    m.eval();
    return m.forward(x);
  }

  RecordingLogger log_;
  tlab::Context ctx_;
  torch::Tensor x_ = torch::randn({12, 5});
  torch::Tensor y_ = torch::arange(12) % 3;
  torch::Tensor img_ = torch::rand({12, 1, 8, 8});
};

// ---- mlp_head ---------------------------------------------------------------------------------

TEST_F(Adapters, MlpHeadHasHiddenLayersActivationDropoutAndClassifier) {
  auto m = mlp();
  attach(*m, "mlp_head",
         {{"hidden", Ints{7, 4}}, {"activation", std::string("gelu")}, {"dropout", 0.25}}, {5}, 3);
  EXPECT_EQ(m->out_dim(), 3);
  ASSERT_EQ(m->head->size(), 7u);  // (Linear, GELU, Dropout) x 2, Linear
  EXPECT_EQ(m->head[0]->as<torch::nn::Linear>()->options.in_features(), 6);
  EXPECT_EQ(m->head[0]->as<torch::nn::Linear>()->options.out_features(), 7);
  EXPECT_THAT(m->head[1]->name(), HasSubstr("GELU"));
  EXPECT_THAT(m->head[2]->name(), HasSubstr("Dropout"));
  EXPECT_EQ(m->head[3]->as<torch::nn::Linear>()->options.out_features(), 4);
  EXPECT_EQ(m->head[6]->as<torch::nn::Linear>()->options.out_features(), 3);
  EXPECT_EQ(eval_forward(*m, x_).sizes(), (torch::IntArrayRef{12, 3}));
  EXPECT_THAT(log_.all(), HasSubstr("trainable"));

  auto plain = mlp();
  attach(*plain, "mlp_head", {}, {5}, 4);  // default: [256], relu, no dropout
  ASSERT_EQ(plain->head->size(), 3u);
  EXPECT_EQ(plain->head[0]->as<torch::nn::Linear>()->options.out_features(), 256);
  EXPECT_THAT(plain->head[1]->name(), HasSubstr("ReLU"));
  EXPECT_EQ(eval_forward(*plain, x_).sizes(), (torch::IntArrayRef{12, 4}));
  EXPECT_THAT(create_error("mlp_head", {{"hidden", Ints{}}}), HasSubstr("'hidden' is empty"));
}

// ---- lora -------------------------------------------------------------------------------------

TEST_F(Adapters, LoraStartsEqualToTheBaseExactly) {
  auto m = mlp();
  attach(*m, "linear_head");
  auto before = eval_forward(*m, x_);
  attach(*m, "lora", {{"targets", Strings{"layer*"}}, {"rank", int64_t{2}}});
  EXPECT_TRUE(torch::equal(eval_forward(*m, x_), before));

  auto c = cnn();
  attach(*c, "linear_head", {}, {1, 8, 8});
  auto cbefore = eval_forward(*c, img_);
  attach(*c, "lora", {{"targets", Strings{"*"}}, {"rank", int64_t{3}}}, {1, 8, 8});
  EXPECT_TRUE(torch::equal(eval_forward(*c, img_), cbefore));
}

TEST_F(Adapters, LoraTrainsOnlyAAndBAndTheHeadAndKeepsW0BitForBit) {
  auto m = mlp();
  auto w0 = m->backbone->named_parameters()["layer0.weight"];
  attach(*m, "lora", {{"targets", Strings{"layer0", "layer1"}}, {"rank", int64_t{2}}});
  attach(*m, "linear_head");
  EXPECT_EQ(trainable(*m),
            (std::set<std::string>{"lora_0.layer0.A", "lora_0.layer0.B", "lora_0.layer1.A",
                                   "lora_0.layer1.B", "head.0.weight", "head.0.bias"}));
  auto before = snapshot(*m);
  auto out0 = eval_forward(*m, x_);
  train(*m, x_, y_);
  auto after = snapshot(*m);
  for (const auto& [name, t] : before) {
    const bool trains = name.rfind("lora_0.", 0) == 0 || name.rfind("head.", 0) == 0;
    EXPECT_EQ(torch::equal(t, after.at(name)), !trains) << name;
  }
  // The registered parameter is still W0 (the same tensor); the member the layer reads is not.
  auto layer0 = m->backbone->named_modules()["layer0"];
  auto registered = layer0->named_parameters(false)["weight"];
  EXPECT_TRUE(registered.is_same(w0));
  EXPECT_TRUE(torch::equal(registered, before.at("backbone.layer0.weight")));
  eval_forward(*m, x_);
  EXPECT_FALSE(layer0->as<torch::nn::Linear>()->weight.is_same(w0));
  EXPECT_FALSE(torch::equal(eval_forward(*m, x_), out0));
  // The state dict holds W0 and the factors separately.
  auto names = m->named_parameters();
  EXPECT_TRUE(names.contains("backbone.layer0.weight"));
  EXPECT_TRUE(names.contains("lora_0.layer0.A"));
}

TEST_F(Adapters, LoraTrainableCountIsRankTimesInPlusOutPerLayerPlusHead) {
  auto m = mlp({8, 6}, {5});
  attach(*m, "lora", {{"targets", Strings{"*"}}, {"rank", int64_t{2}}, {"alpha", 4.0}});
  attach(*m, "linear_head");
  EXPECT_EQ(trainable_count(*m), 2 * (5 + 8) + 2 * (8 + 6) + (6 * 3 + 3));
  EXPECT_THAT(log_.all(), HasSubstr("added 54 parameters"));
  EXPECT_THAT(log_.all(), HasSubstr("trainable 54 of"));

  auto c = cnn();  // conv1 1->4 3x3, conv2 4->6 3x3; only the convs are adapted
  attach(*c, "lora", {{"targets", Strings{"conv?"}}, {"rank", int64_t{2}}, {"freeze_base", false}},
         {1, 8, 8});
  int64_t factors = 0;
  for (const auto& p : c->named_parameters())
    if (p.key().rfind("lora_0.", 0) == 0) factors += p.value().numel();
  EXPECT_EQ(factors, 2 * (1 * 9 + 4) + 2 * (4 * 9 + 6));
  for (const auto& p : c->backbone->named_parameters())
    EXPECT_EQ(p.value().requires_grad(), p.key().rfind("conv", 0) != 0) << p.key();
}

// A merged model, W0 + alpha/r * B A written into a fresh copy of the backbone, gives the same
// outputs as the LoRA model after training.
TEST_F(Adapters, LoraMergedWeightsGiveTheSameOutputsForLinearAndConv2d) {
  struct Case {
    bool conv;
    Strings targets, layers;
    Ints shape;
  };
  for (const Case& k : {Case{false, {"layer*"}, {"layer0", "layer1"}, {5}},
                        Case{true, {"conv1", "fc"}, {"conv1", "fc"}, {1, 8, 8}}}) {
    SCOPED_TRACE(k.conv ? "cnn" : "mlp");
    auto m = k.conv ? cnn() : mlp();
    attach(*m, "linear_head", {}, k.shape);
    attach(*m, "lora", {{"targets", k.targets}, {"rank", int64_t{3}}, {"alpha", 6.0}}, k.shape);
    const auto& x = k.conv ? img_ : x_;
    train(*m, x, y_);
    auto want = eval_forward(*m, x);

    // A fresh model with plain layers, holding the LoRA model's state (W0, biases, batch-norm
    // statistics, head).
    auto merged = k.conv ? cnn() : mlp();
    attach(*merged, "linear_head", {}, k.shape);
    auto state = snapshot(*m);
    torch::NoGradGuard no_grad;
    for (auto& p : merged->named_parameters()) p.value().copy_(state.at(p.key()));
    for (auto& b : merged->named_buffers()) b.value().copy_(state.at(b.key()));
    EXPECT_GT((eval_forward(*merged, x) - want).abs().max().item<float>(), 1e-4f);  // W0 alone
    for (const auto& l : k.layers) {
      auto w = merged->backbone->named_parameters()[l + ".weight"];
      auto delta = torch::mm(state.at("lora_0." + l + ".B"), state.at("lora_0." + l + ".A"));
      w.add_(delta.mul(6.0 / 3).view(w.sizes()));  // W0 + alpha / r * B A
    }
    EXPECT_LE((eval_forward(*merged, x) - want).abs().max().item<float>(), 1e-5f);
  }
}

// The fused query/key/value projection of nn.MultiheadAttention (vit's self_attention,
// transformer's self_attn): LoRA updates in_proj_weight (3E x E); trained, the model equals plain
// layers holding W0 + alpha / r * B A there.
TEST_F(Adapters, LoraAdaptsTheFusedAttentionProjectionOfVitAndTransformer) {
  struct Case {
    std::string backbone, target, module;
    tlab::Params params;
    Ints shape;
  };
  const Case cases[] = {{"vit",
                         "encoder.layers.*.self_attention",
                         "encoder.layers.encoder_layer_1.self_attention",
                         {{"arch", std::string("custom")},
                          {"image_size", int64_t{8}},
                          {"patch_size", int64_t{4}},
                          {"num_layers", int64_t{2}},
                          {"num_heads", int64_t{2}},
                          {"hidden_dim", int64_t{8}},
                          {"mlp_dim", int64_t{16}}},
                         {3, 8, 8}},
                        {"transformer",
                         "layers.*.self_attn",
                         "layers.1.self_attn",
                         {{"vocab_size", int64_t{20}},
                          {"d_model", int64_t{8}},
                          {"heads", int64_t{2}},
                          {"layers", int64_t{2}},
                          {"ff", int64_t{16}},
                          {"dropout", 0.0}},
                         {6}}};
  for (const Case& k : cases) {
    SCOPED_TRACE(k.backbone);
    auto make = [&] {
      return std::make_shared<tlab::Model>(
          loader().create<tlab::Backbone>(k.backbone, k.params)->build(k.shape, ctx_));
    };
    const torch::Tensor x = k.backbone == "vit" ? torch::rand({12, 3, 8, 8})
                                                : torch::randint(1, 20, {12, 6}, torch::kLong);
    auto m = make();
    attach(*m, "linear_head", {}, k.shape);
    auto base = eval_forward(*m, x);
    attach(*m, "lora", {{"targets", Strings{k.target}}, {"rank", int64_t{2}}, {"alpha", 4.0}},
           k.shape);
    EXPECT_THAT(log_.all(), HasSubstr("MultiheadAttention in_proj 8->3x8"));
    EXPECT_LE((eval_forward(*m, x) - base).abs().max().item<float>(), 0);  // B = 0
    EXPECT_EQ(trainable_count(*m), 2 * 2 * (8 + 24) + (8 * 3 + 3));  // A, B per layer; the head
    train(*m, x, y_);
    auto want = eval_forward(*m, x);
    auto state = snapshot(*m);
    const std::string factors = "lora_0." + [&] {
      std::string c;
      for (char ch : k.module) c += ch == '.' ? '_' : ch;
      return c;
    }();
    EXPECT_GT(state.at(factors + ".B").abs().max().item<float>(), 0);  // it trained
    auto merged = make();
    attach(*merged, "linear_head", {}, k.shape);
    torch::NoGradGuard no_grad;
    for (auto& p : merged->named_parameters()) p.value().copy_(state.at(p.key()));
    for (const std::string layer : {"0", "1"}) {
      std::string module = k.module;
      module.replace(
          module.size() -
              std::string(k.backbone == "vit" ? "1.self_attention" : "1.self_attn").size(),
          1, layer);
      std::string child;
      for (char ch : module) child += ch == '.' ? '_' : ch;
      auto w = merged->backbone->named_parameters()[module + ".in_proj_weight"];
      w.add_(torch::mm(state.at("lora_0." + child + ".B"), state.at("lora_0." + child + ".A"))
                 .mul(4.0 / 2));
    }
    EXPECT_LE((eval_forward(*merged, x) - want).abs().max().item<float>(), 1e-5f);
  }
}

// Bottleneck adapters after a ViT's blocks (its taps block<i>, activations N x tokens x D): the
// model starts equal to the base (zero-initialised up-projection) and trains only them.
TEST_F(Adapters, BottleneckAdaptersGoAfterVitBlocks) {
  auto m = std::make_shared<tlab::Model>(
      loader()
          .create<tlab::Backbone>("vit", {{"arch", std::string("custom")},
                                          {"image_size", int64_t{8}},
                                          {"patch_size", int64_t{4}},
                                          {"num_layers", int64_t{2}},
                                          {"num_heads", int64_t{2}},
                                          {"hidden_dim", int64_t{8}},
                                          {"mlp_dim", int64_t{16}}})
          ->build({3, 8, 8}, ctx_));
  attach(*m, "linear_head", {}, {3, 8, 8});
  const torch::Tensor x = torch::rand({12, 3, 8, 8});
  const auto base = eval_forward(*m, x);
  attach(*m, "bottleneck", {{"after", Strings{"block0", "block1"}}, {"reduction", int64_t{2}}},
         {3, 8, 8});
  EXPECT_LE((eval_forward(*m, x) - base).abs().max().item<float>(), 1e-6f);
  auto params = m->named_parameters();
  EXPECT_FALSE(params["backbone.conv_proj.weight"].requires_grad());  // freeze_base
  EXPECT_FALSE(params["backbone.encoder.layers.encoder_layer_0.self_attention.in_proj_weight"]
                   .requires_grad());
  EXPECT_TRUE(params["backbone.encoder.layers.encoder_layer_0.ln_1.weight"].requires_grad());
  bool adapters_train = false;
  for (const auto& p : params)
    adapters_train |= p.key().rfind("bottleneck_0.", 0) == 0 && p.value().requires_grad();
  EXPECT_TRUE(adapters_train);
  train(*m, x, y_);
  EXPECT_GT((eval_forward(*m, x) - base).abs().max().item<float>(), 1e-4f);  // they trained
}

TEST_F(Adapters, LoraPatternMatchingNothingListsTheLinearAndConvModules) {
  auto m = mlp();
  auto err = attach_error(*m, "lora", {{"targets", Strings{"fc*"}}});
  EXPECT_THAT(
      err,
      HasSubstr("target pattern 'fc*' matches no Linear, Conv2d or MultiheadAttention module"));
  EXPECT_THAT(err, HasSubstr("layer0 (Linear 5->8), layer1 (Linear 8->6)"));

  auto c = cnn();
  err = attach_error(*c, "lora", {{"targets", Strings{"bn*"}}}, {1, 8, 8});
  EXPECT_THAT(err, HasSubstr("(it matches bn1, bn2, of other types)"));
  EXPECT_THAT(err, HasSubstr("conv1 (Conv2d 1->4 3x3), conv2 (Conv2d 4->6 3x3), fc (Linear"));
  EXPECT_THAT(err, Not(HasSubstr("bn1 (")));
  // Nothing changed: every parameter still trains and no module was registered.
  EXPECT_EQ(trainable_count(*c), [&] {
    int64_t n = 0;
    for (const auto& p : c->parameters()) n += p.numel();
    return n;
  }());
  EXPECT_FALSE(c->named_children().contains("lora_0"));
}

TEST_F(Adapters, LoraRegexTargetsAndSyntaxErrors) {
  auto m = mlp({8, 6, 4});
  attach(*m, "lora", {{"targets", Strings{"re:layer[02]"}}, {"rank", int64_t{1}}});
  auto lora = m->named_children()["lora_0"]->named_children();
  EXPECT_EQ(lora.keys(), (Strings{"layer0", "layer2"}));
  EXPECT_THAT(create_error("lora", {{"targets", Strings{"re:(oops"}}}),
              HasSubstr("pattern 're:(oops' is not a valid regular expression"));
}

TEST_F(Adapters, LoraRefusesGroupedConvolutionsDropoutAndAdaptingALayerTwice) {
  tlab::Model g(std::make_shared<GroupedNet>());
  auto err = attach_error(g, "lora", {{"targets", Strings{"conv"}}}, {4, 6, 6});
  EXPECT_THAT(err, HasSubstr("cannot adapt 'conv': it is a grouped convolution (groups = 2)"));
  EXPECT_THAT(err, HasSubstr("conv (Conv2d 4->4 3x3 groups 2), fc (Linear 4->3)"));
  attach(g, "lora", {{"targets", Strings{"fc"}}, {"rank", int64_t{1}}}, {4, 6, 6});  // fine

  EXPECT_THAT(create_error("lora", {{"dropout", 0.1}}),
              HasSubstr("dropout = 0.100000 is not supported"));

  auto m = mlp();
  attach(*m, "lora", {{"targets", Strings{"layer0"}}, {"rank", int64_t{1}}});
  err = attach_error(*m, "lora", {{"targets", Strings{"layer*"}}, {"rank", int64_t{1}}});
  EXPECT_THAT(err, HasSubstr("'layer0' is already adapted by an earlier lora adapter"));
  attach(*m, "lora", {{"targets", Strings{"layer1"}}, {"rank", int64_t{1}}});
  EXPECT_TRUE(m->named_children().contains("lora_1"));
}

// ---- bottleneck -------------------------------------------------------------------------------

TEST_F(Adapters, BottleneckOnMlpStartsEqualThenTrainsAdaptersOnly) {
  auto m = mlp({16, 8});
  attach(*m, "linear_head");
  auto before = eval_forward(*m, x_);
  m->train();
  attach(*m, "bottleneck", {{"reduction", int64_t{4}}});
  for (const auto& mod : m->modules()) EXPECT_TRUE(mod->is_training()) << mod->name();
  auto params = m->named_parameters();
  EXPECT_EQ(params["bottleneck_0.layer0.down.weight"].sizes(), (torch::IntArrayRef{4, 16}));
  EXPECT_EQ(params["bottleneck_0.layer1.down.weight"].sizes(), (torch::IntArrayRef{2, 8}));
  EXPECT_EQ(params["bottleneck_0.layer1.up.weight"].sizes(), (torch::IntArrayRef{8, 2}));
  EXPECT_TRUE(torch::equal(eval_forward(*m, x_), before));
  // freeze_base (default): only the adapters and the head train.
  for (const auto& name : trainable(*m))
    EXPECT_TRUE(name.rfind("bottleneck_0.", 0) == 0 || name.rfind("head.", 0) == 0) << name;
  auto backbone = snapshot(*m->backbone);
  train(*m, x_, y_);
  EXPECT_FALSE(torch::equal(eval_forward(*m, x_), before));
  for (const auto& [name, t] : snapshot(*m->backbone))
    EXPECT_TRUE(torch::equal(t, backbone.at(name))) << name;
  EXPECT_THAT(log_.all(), HasSubstr("linear 16->4->16"));
}

TEST_F(Adapters, BottleneckOnCnnUsesOneByOneConvolutionsAndTrainsNorms) {
  auto c = cnn();
  attach(*c, "linear_head", {}, {1, 8, 8});
  auto before = eval_forward(*c, img_);
  c->eval();
  attach(*c, "bottleneck", {{"after", Strings{"conv2", "fc"}}, {"reduction", int64_t{2}}},
         {1, 8, 8});
  EXPECT_FALSE(c->is_training());  // the probe restores the mode it found
  auto params = c->named_parameters();
  EXPECT_EQ(params["bottleneck_0.conv2.down.weight"].sizes(), (torch::IntArrayRef{3, 6, 1, 1}));
  EXPECT_EQ(params["bottleneck_0.fc.down.weight"].sizes(), (torch::IntArrayRef{5, 10}));
  EXPECT_FALSE(params.contains("bottleneck_0.conv1.down.weight"));
  EXPECT_TRUE(torch::equal(eval_forward(*c, img_), before));
  auto names = trainable(*c);
  EXPECT_TRUE(names.count("backbone.bn1.weight"));  // train_norm (default)
  EXPECT_TRUE(names.count("backbone.bn2.bias"));
  EXPECT_FALSE(names.count("backbone.conv1.weight"));
  EXPECT_FALSE(names.count("backbone.fc.weight"));
  train(*c, img_, y_);
  EXPECT_FALSE(torch::equal(eval_forward(*c, img_), before));
}

TEST_F(Adapters, BottleneckOnSequenceActivationsUsesTheLastDimension) {
  tlab::Model m(std::make_shared<SeqNet>());
  auto x = torch::randn({12, 7, 6});
  attach(m, "linear_head", {}, {7, 6});
  auto before = eval_forward(m, x);
  attach(m, "bottleneck", {{"reduction", int64_t{4}}, {"freeze_base", false}}, {7, 6});
  EXPECT_EQ(m.named_parameters()["bottleneck_0.proj.down.weight"].sizes(),
            (torch::IntArrayRef{2, 8}));
  EXPECT_TRUE(m.backbone->named_parameters()["proj.weight"].requires_grad());
  EXPECT_TRUE(torch::equal(eval_forward(m, x), before));
  train(m, x, y_);
  EXPECT_FALSE(torch::equal(eval_forward(m, x), before));
}

TEST_F(Adapters, BottleneckRefusesPointsTheBackboneNeverTaps) {
  auto c = cnn();
  auto err = attach_error(*c, "bottleneck", {{"after", Strings{"conv9"}}}, {1, 8, 8});
  EXPECT_THAT(err, HasSubstr("the backbone never taps 'conv9'"));
  EXPECT_THAT(err, HasSubstr("its layer groups are: conv1, conv2, fc"));
  tlab::Model g(std::make_shared<GroupedNet>());
  EXPECT_THAT(attach_error(g, "bottleneck", {}, {4, 6, 6}),
              HasSubstr("the backbone never calls tap()"));
}

// ---- bitfit -----------------------------------------------------------------------------------

TEST_F(Adapters, BitFitTrainsExactlyTheBiasesAndTheHead) {
  auto c = cnn();
  attach(*c, "linear_head", {}, {1, 8, 8});
  attach(*c, "bitfit", {}, {1, 8, 8});
  EXPECT_EQ(trainable(*c),
            (std::set<std::string>{"backbone.conv1.bias", "backbone.bn1.bias",
                                   "backbone.conv2.bias", "backbone.bn2.bias", "backbone.fc.bias",
                                   "head.0.weight", "head.0.bias"}));
  const int64_t biases = 4 + 4 + 6 + 6 + 10;
  EXPECT_THAT(log_.all(), HasSubstr("5 bias tensor(s) train (" + std::to_string(biases)));
  EXPECT_THAT(log_.all(), HasSubstr("trainable " + std::to_string(biases + 33) + " of"));
}

// ---- freeze -----------------------------------------------------------------------------------

TEST_F(Adapters, FreezeUpToAGroupAndKeepsItsBatchNormInEvalMode) {
  auto c = cnn();
  attach(*c, "linear_head", {}, {1, 8, 8});
  attach(*c, "freeze", {{"up_to", std::string("conv1")}}, {1, 8, 8});
  for (const auto& p : c->named_parameters())
    EXPECT_EQ(p.value().requires_grad(),
              p.key().rfind("backbone.conv1.", 0) != 0 && p.key().rfind("backbone.bn1.", 0) != 0)
        << p.key();
  auto before = snapshot(*c);
  train(*c, img_, y_);
  auto bn = c->backbone->named_modules();
  EXPECT_FALSE(bn["bn1"]->is_training());  // set by the before_forward hook
  EXPECT_TRUE(bn["bn2"]->is_training());
  auto after = snapshot(*c);
  EXPECT_TRUE(
      torch::equal(before.at("backbone.bn1.running_mean"), after.at("backbone.bn1.running_mean")));
  EXPECT_TRUE(torch::equal(before.at("backbone.conv1.weight"), after.at("backbone.conv1.weight")));
  EXPECT_FALSE(
      torch::equal(before.at("backbone.bn2.running_mean"), after.at("backbone.bn2.running_mean")));

  auto d = cnn();
  attach(*d, "freeze", {{"up_to", std::string("conv1")}, {"eval_bn", false}}, {1, 8, 8});
  d->train();
  d->features(img_);
  EXPECT_TRUE(d->backbone->named_modules()["bn1"]->is_training());
}

TEST_F(Adapters, FreezeByPatternsOrEverythingAndLeavesAnEarlierHeadAlone) {
  auto c = cnn();
  attach(*c, "linear_head", {}, {1, 8, 8});  // a head first: freeze must leave it training
  attach(*c, "freeze", {{"patterns", Strings{"fc", "*.bias"}}}, {1, 8, 8});
  EXPECT_EQ(trainable(*c), (std::set<std::string>{"backbone.conv1.weight", "backbone.bn1.weight",
                                                  "backbone.conv2.weight", "backbone.bn2.weight",
                                                  "head.0.weight", "head.0.bias"}));
  auto m = mlp();
  attach(*m, "linear_head");
  attach(*m, "freeze");
  EXPECT_EQ(trainable(*m), (std::set<std::string>{"head.0.weight", "head.0.bias"}));
  EXPECT_THAT(log_.all(), HasSubstr("(the whole backbone)"));
  train(*m, x_, y_);
}

TEST_F(Adapters, FreezeErrorsNameTheGroupsAndParameters) {
  auto c = cnn();
  EXPECT_THAT(attach_error(*c, "freeze", {{"up_to", std::string("block3")}}, {1, 8, 8}),
              HasSubstr("up_to = 'block3' is not a layer group of the backbone; its groups are "
                        "(input side first): conv1, conv2, fc"));
  auto err = attach_error(*c, "freeze", {{"patterns", Strings{"conv1", "layer*"}}}, {1, 8, 8});
  EXPECT_THAT(err, HasSubstr("pattern 'layer*' matches no backbone parameter"));
  EXPECT_THAT(err, HasSubstr("conv1.weight, conv1.bias, bn1.weight"));
  EXPECT_EQ(trainable_count(*c), [&] {
    int64_t n = 0;
    for (const auto& p : c->parameters()) n += p.numel();
    return n;
  }());
}

// ---- stacking ---------------------------------------------------------------------------------

// Without gradients the merged weight W0 + s B A is computed once and reused until A, B or W0
// change; with gradients it is rebuilt every pass.
TEST_F(Adapters, LoraMergesOnceForInferenceAndAgainAfterTraining) {
  auto m = mlp();
  attach(*m, "lora", {{"targets", Strings{"layer0"}}, {"rank", int64_t{2}}});
  attach(*m, "linear_head");
  auto layer0 = m->backbone->named_modules()["layer0"];
  auto weight = [&] { return layer0->as<torch::nn::Linear>()->weight; };
  auto first = eval_forward(*m, x_);
  auto merged = weight();
  EXPECT_TRUE(torch::equal(eval_forward(*m, x_), first));
  EXPECT_TRUE(weight().is_same(merged));  // not recomputed
  train(*m, x_, y_);                      // A and B change
  auto after = eval_forward(*m, x_);
  EXPECT_FALSE(weight().is_same(merged));
  EXPECT_FALSE(torch::equal(after, first));
  auto w0 = layer0->named_parameters(false)["weight"];
  auto f = m->named_children()["lora_0"]->named_children()["layer0"]->named_parameters();
  // Optimisers write through .data(), which leaves version counters alone: still noticed.
  auto cached = weight();
  {
    torch::NoGradGuard no_grad;
    f["B"].data().add_(0.5);
  }
  EXPECT_FALSE(torch::equal(eval_forward(*m, x_), after));
  EXPECT_FALSE(weight().is_same(cached));
  // alpha 8 / rank 2 = scale 4
  EXPECT_TRUE(torch::allclose(weight(), w0 + 4 * torch::mm(f["B"], f["A"]), 1e-6, 1e-6));
  // Loading new base weights (copy_) is noticed too.
  {
    torch::NoGradGuard no_grad;
    w0.copy_(torch::zeros_like(w0));
  }
  eval_forward(*m, x_);
  EXPECT_TRUE(torch::allclose(weight(), 4 * torch::mm(f["B"], f["A"]), 1e-6, 1e-6));
}

TEST_F(Adapters, LoraFreezesTheWholeBaseUnlessToldOtherwise) {
  auto m = mlp();
  attach(*m, "lora", {{"targets", Strings{"layer0"}}, {"rank", int64_t{2}}});
  EXPECT_EQ(trainable(*m), (std::set<std::string>{"lora_0.layer0.A", "lora_0.layer0.B"}));
  auto n = mlp();
  attach(*n, "lora",
         {{"targets", Strings{"layer0"}}, {"rank", int64_t{2}}, {"freeze_base", false}});
  EXPECT_EQ(trainable(*n),
            (std::set<std::string>{"lora_0.layer0.A", "lora_0.layer0.B", "backbone.layer1.weight",
                                   "backbone.layer1.bias"}));
}

TEST_F(Adapters, LoraBitFitAndLinearHeadStack) {
  auto m = mlp();
  attach(*m, "lora",
         {{"targets", Strings{"layer0"}}, {"rank", int64_t{2}}, {"freeze_base", false}});
  attach(*m, "bitfit");
  attach(*m, "linear_head");
  // layer0's bias was frozen by lora; bitfit keeps flags of biases as they are.
  EXPECT_EQ(trainable(*m),
            (std::set<std::string>{"lora_0.layer0.A", "lora_0.layer0.B", "backbone.layer1.bias",
                                   "head.0.weight", "head.0.bias"}));
  auto before = snapshot(*m);
  auto out0 = eval_forward(*m, x_);
  train(*m, x_, y_);
  auto after = snapshot(*m);
  for (const char* n : {"lora_0.layer0.B", "backbone.layer1.bias", "head.0.weight"})
    EXPECT_FALSE(torch::equal(before.at(n), after.at(n))) << n;
  for (const char* n : {"backbone.layer0.weight", "backbone.layer0.bias", "backbone.layer1.weight"})
    EXPECT_TRUE(torch::equal(before.at(n), after.at(n))) << n;
  EXPECT_FALSE(torch::equal(eval_forward(*m, x_), out0));
}

// ---- checkpoints ------------------------------------------------------------------------------

// A model with LoRA and bottleneck adapters saves W0, the factors and the adapters, and a fresh
// model with the same adapters loads them and gives the same outputs.
TEST_F(Adapters, LoraAndBottleneckRoundTripThroughACheckpoint) {
  auto make = [&] {
    auto c = cnn();
    attach(*c, "lora", {{"targets", Strings{"conv2", "fc"}}, {"rank", int64_t{2}}}, {1, 8, 8});
    attach(*c, "bottleneck", {{"reduction", int64_t{2}}}, {1, 8, 8});
    attach(*c, "linear_head", {}, {1, 8, 8});
    return c;
  };
  auto c = make();
  train(*c, img_, y_);
  auto want = eval_forward(*c, img_);
  torch::serialize::OutputArchive out;
  c->save(out);
  std::ostringstream bytes;
  out.save_to(bytes);

  torch::manual_seed(123);
  auto fresh = make();
  EXPECT_FALSE(torch::equal(eval_forward(*fresh, img_), want));
  std::istringstream in_bytes(bytes.str());
  torch::serialize::InputArchive in;
  in.load_from(in_bytes);
  fresh->load(in);
  EXPECT_TRUE(torch::equal(eval_forward(*fresh, img_), want));
  auto keys = fresh->named_parameters().keys();
  for (const char* k : {"backbone.conv2.weight", "lora_0.conv2.A", "lora_0.fc.B",
                        "bottleneck_0.conv1.down.weight", "bottleneck_0.fc.up.bias"})
    EXPECT_NE(std::find(keys.begin(), keys.end(), k), keys.end()) << k;
}

}  // namespace
