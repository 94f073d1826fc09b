// The in-tree backbones resnet, lenet, torchscript and transformer, loaded through the real plugin
// loader: torchvision's ResNet weights give torchvision's outputs (names mapped one to one), a
// TorchScript module matches Python and trains through shared tensors, PyTorch's
// TransformerEncoderLayer weights give PyTorch's outputs; shapes, padding, layer groups, taps and
// every error message. The comparisons with Python need /usr/bin/python3 with torch (and
// torchvision for ResNet); without them those tests are skipped.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <torch/optim/sgd.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "plugins/loader.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"
#include "tlab/sdk/mlm.hpp"
#include "tlab/sdk/sdk.hpp"
#include "weights/safetensors.hpp"
#include "weights/state_dict.hpp"

using ::testing::ElementsAre;
using ::testing::HasSubstr;
namespace fs = std::filesystem;
using tlab::weights::NamedTensors;

namespace {

tlab::PluginLoader& loader() {
  static tlab::PluginLoader l({TLAB_TEST_PLUGIN_DIR});
  return l;
}

std::shared_ptr<tlab::BackboneNet> build(const std::string& name, const tlab::Params& params,
                                         const std::vector<int64_t>& shape) {
  tlab::Context ctx;
  return loader().create<tlab::Backbone>(name, params)->build(shape, ctx);
}

// The message of the PluginError thrown when creating backbone `name` ("" if none was thrown).
std::string create_error(const std::string& name, const tlab::Params& params) {
  return tlab::test::error_of<tlab::PluginError>(
      [&] { loader().create<tlab::Backbone>(name, params); });
}

// The message of the exception thrown by build() ("" if none was thrown).
std::string build_error(const std::string& name, const tlab::Params& params,
                        const std::vector<int64_t>& shape) {
  return tlab::test::error_of<std::exception>([&] { build(name, params, shape); });
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// Every parameter is in exactly one layer group, and the groups hold nothing else.
void expect_groups_cover_parameters_once(tlab::BackboneNet& net) {
  std::multiset<const void*> in_groups;
  for (const auto& g : net.layer_groups()) {
    EXPECT_FALSE(g.parameters.empty()) << g.name;
    for (const auto& p : g.parameters) in_groups.insert(p.unsafeGetTensorImpl());
  }
  std::multiset<const void*> all;
  for (const auto& p : net.parameters()) all.insert(p.unsafeGetTensorImpl());
  EXPECT_EQ(in_groups, all);
  EXPECT_EQ(std::set<const void*>(all.begin(), all.end()).size(), all.size());
}

std::vector<std::string> group_names(tlab::BackboneNet& net) {
  std::vector<std::string> names;
  for (const auto& g : net.layer_groups()) names.push_back(g.name);
  return names;
}

// Installs a recording tap at each of `points`; returns the points passed, with the shapes seen.
struct TapLog {
  std::vector<std::string> points;
  std::map<std::string, std::vector<int64_t>> shapes;
};
std::shared_ptr<TapLog> record_taps(tlab::BackboneNet& net,
                                    const std::vector<std::string>& points) {
  auto log = std::make_shared<TapLog>();
  for (const auto& p : points)
    net.add_tap(p, [log, p](const torch::Tensor& x) {
      log->points.push_back(p);
      log->shapes[p] = x.sizes().vec();
      return x;
    });
  return log;
}

// Splits a safetensors file into the tensors named in `io` and the rest (the weights).
NamedTensors split(const NamedTensors& file, const std::set<std::string>& io,
                   std::map<std::string, torch::Tensor>& out) {
  NamedTensors weights;
  for (const auto& [name, t] : file)
    if (io.count(name))
      out[name] = t;
    else
      weights.emplace_back(name, t);
  return weights;
}

// A safetensors writer in Python (no safetensors package): header length, JSON header, bytes.
const char* kPythonWriter = R"PY(
import json, struct, sys
import torch

def save(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        data = t.numpy().tobytes()
        header[name] = {"dtype": {torch.float32: "F32", torch.int64: "I64"}[t.dtype],
                        "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

out = sys.argv[1]
torch.manual_seed(0)
g = torch.Generator().manual_seed(1)
)PY";

// Runs `body` (after the writer) with /usr/bin/python3, its output folder as sys.argv[1].
tlab::test::Result python(const fs::path& dir, const std::string& body) {
  const fs::path script = tlab::test::write_file(dir / "make.py", kPythonWriter + body);
  return tlab::test::shell("/usr/bin/python3 " + script.string() + " " + dir.string());
}

bool python_has(const std::string& modules) {
  return tlab::test::shell("/usr/bin/python3 -c 'import " + modules + "'").code == 0;
}

class Backbones : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(0); }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  // tools/reviews.py's generated reviews, vocab.txt and vectors under dir()/results/datasets.
  tlab::test::Result make_reviews() {
    return tlab::test::shell("cd '" + dir().string() + "' && /usr/bin/python3 '" + TLAB_SOURCE_DIR +
                             "/tools/reviews.py'");
  }
  const fs::path& dir() {
    if (dir_.empty())
      dir_ = tlab::test::temp_dir(std::string("backbones_") +
                                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    return dir_;
  }

 private:
  fs::path dir_;
};

#define SKIP_WITHOUT_PYTHON(modules)                                                      \
  if (!python_has(modules))                                                               \
  GTEST_SKIP() << "/usr/bin/python3 cannot import " << modules                            \
               << ": install the Debian packages python3-torch python3-torchvision (and " \
                  "python3-numpy); tools/setup.sh installs them"

// ---------------------------------------------------------------------------------------------
// resnet

// torchvision's model with random weights and random batch-norm statistics (so that buffers
// matter), in eval mode: its state dict, an input and its output logits.
void write_torchvision_resnet(const fs::path& dir, const std::string& arch) {
  const auto r = python(dir, "arch = '" + arch + R"PY('
import torchvision
m = getattr(torchvision.models, arch)()
with torch.no_grad():
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            n = mod.num_features
            mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
            mod.bias.copy_(torch.rand(n, generator=g) - 0.5)
            mod.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            mod.num_batches_tracked.fill_(7)
m.eval()
x = torch.randn(2, 3, 64, 64, generator=g)
with torch.no_grad():
    y = m(x)
t = dict(m.state_dict())
t["input"], t["output"] = x, y
save(out + "/" + arch + ".safetensors", t)
)PY");
  ASSERT_EQ(r.code, 0) << r.out;
}

void expect_torchvision_outputs(const fs::path& file, int64_t depth, double tolerance) {
  std::map<std::string, torch::Tensor> io;
  const NamedTensors weights =
      split(tlab::weights::read_safetensors(file), {"input", "output"}, io);
  auto net = build("resnet", {{"depth", depth}, {"classifier", true}}, {3, 64, 64});
  // Strict: every name and shape of torchvision's state dict matches one of ours and back.
  const auto report = tlab::weights::load_state_dict(*net, weights, file.string());
  EXPECT_TRUE(report.complete()) << report.summary();
  EXPECT_EQ(report.matched.size(), weights.size());
  net->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor y = net->forward(io.at("input"));
  ASSERT_EQ(y.sizes(), io.at("output").sizes());
  const double diff = max_abs_diff(y, io.at("output"));
  std::printf("resnet%lld vs torchvision: max abs diff %.3g (outputs up to %.3g)\n",
              static_cast<long long>(depth), diff, io.at("output").abs().max().item<double>());
  EXPECT_LE(diff, tolerance);
}

TEST_F(Backbones, ResNet18TorchvisionWeightsGiveTorchvisionOutputs) {
  SKIP_WITHOUT_PYTHON("torch, torchvision, numpy");
  write_torchvision_resnet(dir(), "resnet18");
  expect_torchvision_outputs(dir() / "resnet18.safetensors", 18, 1e-5);
}

TEST_F(Backbones, ResNet50TorchvisionWeightsGiveTorchvisionOutputs) {
  SKIP_WITHOUT_PYTHON("torch, torchvision, numpy");
  write_torchvision_resnet(dir(), "resnet50");
  expect_torchvision_outputs(dir() / "resnet50.safetensors", 50, 1e-5);
}

TEST_F(Backbones, ResNetFeaturesGroupsAndTaps) {
  // Without the classifier: pooled channels, groups stem and layer1..4.
  for (int64_t depth : {18, 34, 50}) {
    auto net = build("resnet", {{"depth", depth}}, {3, 32, 32});
    const int64_t width = depth == 50 ? 2048 : 512;
    EXPECT_EQ(net->feature_dim(), width);
    EXPECT_THAT(group_names(*net), ElementsAre("stem", "layer1", "layer2", "layer3", "layer4"));
    expect_groups_cover_parameters_once(*net);
    for (const auto& p : net->named_parameters()) EXPECT_NE(p.key().rfind("fc.", 0), 0u);
    if (depth != 34) {  // a forward of the smallest and the largest block type
      net->eval();
      torch::NoGradGuard no_grad;
      EXPECT_EQ(net->forward(torch::randn({2, 3, 32, 32})).sizes(),
                (std::vector<int64_t>{2, width}));
    }
  }
  // With it: features = fc's outputs, one more group and tap.
  auto net = build("resnet", {{"classifier", true}, {"classes", int64_t{10}}}, {1, 48, 40});
  EXPECT_EQ(net->feature_dim(), 10);
  EXPECT_THAT(group_names(*net), ElementsAre("stem", "layer1", "layer2", "layer3", "layer4", "fc"));
  expect_groups_cover_parameters_once(*net);
  EXPECT_EQ(net->named_parameters()["conv1.weight"].sizes(),
            (std::vector<int64_t>{64, 1, 7, 7}));  // one input channel
  const auto taps =
      record_taps(*net, {"stem", "layer1", "layer2", "layer3", "layer4", "fc", "nowhere"});
  const int64_t calls = net->tap_calls();
  net->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(net->forward(torch::randn({2, 1, 48, 40})).sizes(), (std::vector<int64_t>{2, 10}));
  EXPECT_EQ(net->tap_calls() - calls, 6);
  EXPECT_THAT(taps->points, ElementsAre("stem", "layer1", "layer2", "layer3", "layer4", "fc"));
  EXPECT_EQ(taps->shapes["stem"], (std::vector<int64_t>{2, 64, 12, 10}));
  EXPECT_EQ(taps->shapes["layer4"], (std::vector<int64_t>{2, 512, 2, 2}));
}

TEST_F(Backbones, ResNetSmallInputKeepsCifarResolution) {
  auto net = build("resnet", {{"small_input", true}}, {3, 32, 32});
  EXPECT_EQ(net->named_parameters()["conv1.weight"].sizes(), (std::vector<int64_t>{64, 3, 3, 3}));
  const auto taps = record_taps(*net, {"stem", "layer4"});
  net->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(net->forward(torch::randn({2, 3, 32, 32})).sizes(), (std::vector<int64_t>{2, 512}));
  EXPECT_EQ(taps->shapes["stem"], (std::vector<int64_t>{2, 64, 32, 32}));   // no stride, no pool
  EXPECT_EQ(taps->shapes["layer4"], (std::vector<int64_t>{2, 512, 4, 4}));  // 1x1 without
}

TEST_F(Backbones, ResNetRefusesOtherDepthsAndNonImages) {
  const std::string e = create_error("resnet", {{"depth", int64_t{20}}});
  EXPECT_THAT(e, HasSubstr("depth 20"));
  EXPECT_THAT(e, HasSubstr("allowed depths are 18, 34, 50, 101, 152"));
  EXPECT_THAT(build_error("resnet", {}, {784}),
              HasSubstr("resnet needs image inputs of shape CxHxW, got 1 dimension(s)"));
}

// ---------------------------------------------------------------------------------------------
// lenet

TEST_F(Backbones, LeNetTakesDigitsAndColourImages) {
  for (const auto& shape : {std::vector<int64_t>{1, 28, 28}, std::vector<int64_t>{3, 32, 32}}) {
    for (const std::string act : {"relu", "tanh"}) {
      auto net = build("lenet", {{"activation", act}}, shape);
      EXPECT_EQ(net->feature_dim(), 84);
      EXPECT_THAT(group_names(*net), ElementsAre("conv1", "conv2", "fc1", "fc2"));
      expect_groups_cover_parameters_once(*net);
      EXPECT_EQ(net->named_parameters()["fc1.weight"].sizes(), (std::vector<int64_t>{120, 400}));
      const auto taps = record_taps(*net, {"conv1", "conv2", "fc1", "fc2"});
      std::vector<int64_t> batch{5};
      batch.insert(batch.end(), shape.begin(), shape.end());
      const torch::Tensor f = net->forward(torch::randn(batch));
      EXPECT_EQ(f.sizes(), (std::vector<int64_t>{5, 84}));
      if (act == "tanh") EXPECT_LE(f.abs().max().item<double>(), 1.0);
      EXPECT_THAT(taps->points, ElementsAre("conv1", "conv2", "fc1", "fc2"));
      EXPECT_EQ(taps->shapes["conv1"], (std::vector<int64_t>{5, 6, 14, 14}));
      EXPECT_EQ(taps->shapes["conv2"], (std::vector<int64_t>{5, 16, 5, 5}));
    }
  }
  EXPECT_EQ(build("lenet", {{"pool", std::string("avg")}}, {1, 28, 28})
                ->forward(torch::randn({2, 1, 28, 28}))
                .sizes(),
            (std::vector<int64_t>{2, 84}));
  EXPECT_THAT(build_error("lenet", {}, {1, 8, 8}),
              HasSubstr("lenet needs images of at least 12x12 pixels"));
}

// ---------------------------------------------------------------------------------------------
// transformer

tlab::Params small_transformer(const std::string& pooling = "mean") {
  return {{"vocab_size", int64_t{50}}, {"d_model", int64_t{32}}, {"heads", int64_t{4}},
          {"layers", int64_t{2}},      {"ff", int64_t{64}},      {"pooling", pooling}};
}

TEST_F(Backbones, TransformerShapesGroupsAndTaps) {
  auto net = build("transformer", small_transformer(), {12});
  EXPECT_EQ(net->feature_dim(), 32);
  EXPECT_THAT(group_names(*net), ElementsAre("embedding", "block0", "block1"));
  expect_groups_cover_parameters_once(*net);
  const auto taps = record_taps(*net, {"embedding", "block0", "block1"});
  const torch::Tensor ids = torch::randint(1, 50, {3, 12}, torch::kLong);
  EXPECT_EQ(net->forward(ids).sizes(), (std::vector<int64_t>{3, 32}));
  EXPECT_THAT(taps->points, ElementsAre("embedding", "block0", "block1"));
  EXPECT_EQ(taps->shapes["block1"], (std::vector<int64_t>{3, 12, 32}));
  // Token ids cast to float (as the runner did) are accepted and give the same features.
  net->eval();
  EXPECT_TRUE(torch::allclose(net->forward(ids), net->forward(ids.to(torch::kFloat))));
  // A sequence of padding only gives finite features.
  EXPECT_TRUE(
      torch::isfinite(net->forward(torch::zeros({2, 12}, torch::kLong))).all().item<bool>());
}

TEST_F(Backbones, TransformerIgnoresPaddingTokens) {
  for (const std::string pooling : {"mean", "cls"}) {
    auto net = build("transformer", small_transformer(pooling), {12});
    net->eval();
    torch::NoGradGuard no_grad;
    const torch::Tensor ids = torch::randint(1, 50, {4, 8}, torch::kLong);
    const torch::Tensor padded = torch::cat({ids, torch::zeros({4, 4}, torch::kLong)}, 1);
    const double diff = max_abs_diff(net->forward(ids), net->forward(padded));
    std::printf("transformer (%s pooling): 4 pad tokens appended change features by %.3g\n",
                pooling.c_str(), diff);
    EXPECT_LE(diff, 1e-5);
    // Padding inside a batch: a short sequence padded to a long one's length.
    torch::Tensor batch = torch::zeros({2, 8}, torch::kLong);
    batch[0] = ids[0];
    batch[1].slice(0, 0, 5) = ids[1].slice(0, 0, 5);
    EXPECT_LE(
        max_abs_diff(net->forward(batch)[1], net->forward(ids[1].slice(0, 0, 5).unsqueeze(0))[0]),
        1e-5);
  }
}

TEST_F(Backbones, TransformerRefusesTokensOutsideTheVocabulary) {
  auto net = build("transformer", small_transformer(), {6});
  const auto error = [&](const torch::Tensor& x) {
    return tlab::test::error_of<std::exception>([&] { net->forward(x); });
  };
  EXPECT_THAT(error(torch::tensor({{1, 2, 50, 3}})),
              HasSubstr("token id 50 is outside [0, vocab_size = 50); set backbone.vocab_size "
                        "to the dataset's vocabulary size"));
  EXPECT_THAT(error(torch::tensor({{1, -1}})), HasSubstr("token id -1 is outside"));
  EXPECT_THAT(error(torch::tensor({{1.5f, 2.0f}})), HasSubstr("must be token ids (whole numbers)"));
  EXPECT_THAT(error(torch::ones({2, 513}, torch::kLong)),
              HasSubstr("a sequence of 513 tokens is longer than max_len = 512"));
  EXPECT_THAT(create_error("transformer", {{"d_model", int64_t{30}}, {"heads", int64_t{4}}}),
              HasSubstr("heads = 4 does not divide d_model = 30"));
  EXPECT_THAT(build_error("transformer", {}, {1, 28, 28}),
              HasSubstr("transformer needs token sequences, input_shape = {L}"));
  EXPECT_THAT(build_error("transformer", {}, {600}),
              HasSubstr("sequences of 600 tokens are longer than max_len = 512"));
}

TEST_F(Backbones, TransformerMatchesPyTorchEncoderLayersUnderTheirNames) {
  SKIP_WITHOUT_PYTHON("torch, numpy");
  // PyTorch's modules with the same names, computing the same function (outside no_grad, so that
  // PyTorch takes its reference path rather than the fused inference kernel).
  const auto r = python(dir(), R"PY(
import math
nn = torch.nn
d, V = 32, 50
class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(V, d)
        self.layers = nn.ModuleList([nn.TransformerEncoderLayer(d, 4, 64, 0.1, batch_first=True,
                                                                norm_first=True) for _ in range(2)])
        self.norm = nn.LayerNorm(d)
    def forward(self, ids):
        pos = torch.arange(ids.shape[1], dtype=torch.float64).unsqueeze(1)
        freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float64) * (-math.log(10000.0) / d))
        pe = torch.zeros(ids.shape[1], d, dtype=torch.float64)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
        pad = ids == 0
        h = self.embedding(ids) * math.sqrt(d) + pe.float()
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=pad)
        h = self.norm(h)
        keep = (~pad).float().unsqueeze(-1)
        return (h * keep).sum(1) / keep.sum(1)
m = Encoder().eval()
ids = torch.randint(1, V, (3, 10), generator=g)
ids[1, 6:] = 0
ids[2, 3:] = 0
t = dict(m.state_dict())
t["input"], t["output"] = ids, m(ids)
save(out + "/encoder.safetensors", t)
)PY");
  ASSERT_EQ(r.code, 0) << r.out;
  std::map<std::string, torch::Tensor> io;
  const fs::path file = dir() / "encoder.safetensors";
  const NamedTensors weights =
      split(tlab::weights::read_safetensors(file), {"input", "output"}, io);
  auto net = build("transformer", small_transformer(), {10});
  const auto report = tlab::weights::load_state_dict(*net, weights, file.string());
  EXPECT_TRUE(report.complete()) << report.summary();
  net->eval();
  torch::NoGradGuard no_grad;
  const double diff = max_abs_diff(net->forward(io.at("input")), io.at("output"));
  std::printf("transformer vs PyTorch TransformerEncoderLayer(norm_first): max abs diff %.3g\n",
              diff);
  EXPECT_LE(diff, 1e-5);
}

// ---------------------------------------------------------------------------------------------
// bert

// BertModel / RobertaModel as transformers' modeling_bert.py and modeling_roberta.py compute them,
// rewritten in plain PyTorch under the same module names (Debian has no transformers): random
// weights (LayerNorms and biases too), padded sequences, eval mode; per variant and pooling the
// features. tlab's bert must load the state dict strictly and give the same features.
const char* kBertReference = R"PY(
import math
nn = torch.nn
F = torch.nn.functional
V, H, L, A, I, P = 40, 32, 2, 4, 64, 24
class Emb(nn.Module):
    def __init__(s, roberta, pad):
        super().__init__()
        s.word_embeddings = nn.Embedding(V, H, padding_idx=pad)
        s.position_embeddings = nn.Embedding(P, H, padding_idx=pad if roberta else None)
        s.token_type_embeddings = nn.Embedding(1 if roberta else 2, H)
        s.LayerNorm = nn.LayerNorm(H, eps=1e-12 if not roberta else 1e-5)
        s.roberta, s.pad = roberta, pad
    def forward(s, ids):
        if s.roberta:  # create_position_ids_from_input_ids
            mask = ids.ne(s.pad).int()
            pos = (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + s.pad
        else:
            pos = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
        e = s.word_embeddings(ids) + s.token_type_embeddings(torch.zeros_like(ids))
        e = e + s.position_embeddings(pos)
        return s.LayerNorm(e)
class SelfAttn(nn.Module):
    def __init__(s):
        super().__init__()
        s.query, s.key, s.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
    def forward(s, h, ext):
        n, l, d = h.shape[0], h.shape[1], H // A
        t = lambda x: x.view(n, l, A, d).permute(0, 2, 1, 3)
        q, k, v = t(s.query(h)), t(s.key(h)), t(s.value(h))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d) + ext
        ctx = torch.matmul(F.softmax(scores, dim=-1), v)
        return ctx.permute(0, 2, 1, 3).contiguous().view(n, l, H)
class DenseLN(nn.Module):
    def __init__(s, i, eps):
        super().__init__()
        s.dense, s.LayerNorm = nn.Linear(i, H), nn.LayerNorm(H, eps=eps)
    def forward(s, x, inp):
        return s.LayerNorm(s.dense(x) + inp)
class Attention(nn.Module):
    def __init__(s, eps):
        super().__init__()
        s.self, s.output = SelfAttn(), DenseLN(H, eps)
    def forward(s, h, ext):
        return s.output(s.self(h, ext), h)
class Inter(nn.Module):
    def __init__(s):
        super().__init__()
        s.dense = nn.Linear(H, I)
    def forward(s, x):
        return F.gelu(s.dense(x))
class Layer(nn.Module):
    def __init__(s, eps):
        super().__init__()
        s.attention, s.intermediate, s.output = Attention(eps), Inter(), DenseLN(I, eps)
    def forward(s, h, ext):
        a = s.attention(h, ext)
        return s.output(s.intermediate(a), a)
class Enc(nn.Module):
    def __init__(s, eps):
        super().__init__()
        s.layer = nn.ModuleList([Layer(eps) for _ in range(L)])
class Pool(nn.Module):
    def __init__(s):
        super().__init__()
        s.dense = nn.Linear(H, H)
class Model(nn.Module):
    def __init__(s, roberta):
        super().__init__()
        s.pad = 1 if roberta else 0
        eps = 1e-5 if roberta else 1e-12
        s.embeddings, s.encoder, s.pooler = Emb(roberta, s.pad), Enc(eps), Pool()
    def forward(s, ids):
        mask = ids.ne(s.pad).float()
        ext = (1.0 - mask[:, None, None, :]) * torch.finfo(torch.float32).min
        h = s.embeddings(ids)
        for layer in s.encoder.layer:
            h = layer(h, ext)
        keep = mask.unsqueeze(-1)
        return {"pooler": torch.tanh(s.pooler.dense(h[:, 0])), "cls": h[:, 0],
                "mean": (h * keep).sum(1) / keep.sum(1).clamp(min=1)}
for variant in ("bert", "roberta"):
    m = Model(variant == "roberta")
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if "LayerNorm.weight" not in name else 0.1)
                    + (1.0 if "LayerNorm.weight" in name else 0.0))
    m.eval()
    pad = m.pad
    ids = torch.randint(2, V, (3, 9), generator=g)
    ids[1, 5:] = pad
    ids[2, 2:] = pad
    t = dict(m.state_dict())
    t["input"] = ids
    with torch.no_grad():
        for k, v in m(ids).items():
            t["output_" + k] = v
    save(out + "/" + variant + ".safetensors", t)
)PY";

// The bert options of the references' tiny model (kBertReference: vocabulary 40, width 32, 4
// heads, feed-forward 64, 24 positions) with `layers` layers, `extra` on top.
tlab::Params tiny_bert(int64_t layers, const tlab::Params& extra = {}) {
  tlab::Params p{{"vocab_size", int64_t{40}},        {"hidden_size", int64_t{32}},
                 {"num_hidden_layers", layers},      {"num_attention_heads", int64_t{4}},
                 {"intermediate_size", int64_t{64}}, {"max_position_embeddings", int64_t{24}}};
  for (const auto& [key, value] : extra) p[key] = value;
  return p;
}

TEST_F(Backbones, BertAndRobertaMatchTransformersUnderTheirNames) {
  SKIP_WITHOUT_PYTHON("torch, numpy");
  const auto r = python(dir(), kBertReference);
  ASSERT_EQ(r.code, 0) << r.out;
  for (const std::string variant : {"bert", "roberta"}) {
    const fs::path file = dir() / (variant + ".safetensors");
    std::map<std::string, torch::Tensor> io;
    const NamedTensors weights = split(tlab::weights::read_safetensors(file),
                                       {"input", "output_pooler", "output_cls", "output_mean"}, io);
    for (const std::string pooling : {"pooler", "cls", "mean"}) {
      auto net = build("bert",
                       tiny_bert(2, {{"variant", variant},
                                     {"type_vocab_size", int64_t{variant == "roberta" ? 1 : 2}},
                                     {"layer_norm_eps", variant == "roberta" ? 1e-5 : 1e-12},
                                     {"pooling", pooling}}),
                       {9});
      // Strict: every name and shape of the reference's state dict is one of ours and back.
      const auto report = tlab::weights::load_state_dict(*net, weights, file.string());
      EXPECT_TRUE(report.complete()) << report.summary();
      EXPECT_EQ(report.matched.size(), weights.size());
      net->eval();
      torch::NoGradGuard no_grad;
      const torch::Tensor y = net->forward(io.at("input"));
      EXPECT_GT(y.abs().max().item<double>(), 0.01);  // not a vacuous comparison
      const double diff = max_abs_diff(y, io.at("output_" + pooling));
      std::printf("%s %s vs transformers' algorithm: max abs diff %.3g\n", variant.c_str(),
                  pooling.c_str(), diff);
      EXPECT_LE(diff, 1e-5) << variant << " " << pooling;
    }
  }
  // HF's names, e.g. for LoRA's targets and for checkpoints.
  auto net = build("bert", tiny_bert(1), {9});
  std::set<std::string> names;
  for (const auto& p : net->named_parameters()) names.insert(p.key());
  for (const char* name :
       {"embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
        "encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.self.value.bias",
        "encoder.layer.0.attention.output.dense.weight",
        "encoder.layer.0.attention.output.LayerNorm.bias",
        "encoder.layer.0.intermediate.dense.weight", "encoder.layer.0.output.dense.weight",
        "encoder.layer.0.output.LayerNorm.weight", "pooler.dense.weight"})
    EXPECT_TRUE(names.count(name)) << name;
  EXPECT_EQ(names.size(), 23u);  // 5 embeddings, 16 per layer, 2 pooler
  const auto groups = net->layer_groups();
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].name, "embeddings");
  EXPECT_EQ(groups[1].name, "layer0");
}

// Masked-language-model pre-training as Hugging Face computes it: DataCollatorForLanguageModeling's
// torch_mask_tokens and BertForMaskedLM's head and loss (BertOnlyMLMHead: dense, GELU,
// LayerNorm, decoder tied to the word embeddings plus a bias), rewritten from transformers in
// plain PyTorch after the bert reference above.
const char* kMlmReference = R"PY(
class Transform(nn.Module):
    def __init__(s):
        super().__init__()
        s.dense, s.LayerNorm = nn.Linear(H, H), nn.LayerNorm(H, eps=1e-12)
class Predictions(nn.Module):
    def __init__(s, emb):
        super().__init__()
        s.transform = Transform()
        s.decoder = nn.Linear(H, V, bias=False)
        s.decoder.weight = emb.weight          # tied, as tie_weights() does
        s.bias = nn.Parameter(torch.zeros(V))
    def forward(s, h):
        t = s.transform
        return s.decoder(t.LayerNorm(F.gelu(t.dense(h)))) + s.bias
class Head(nn.Module):
    def __init__(s, emb):
        super().__init__()
        s.predictions = Predictions(emb)
def states(m, ids):
    mask = ids.ne(m.pad).float()
    ext = (1.0 - mask[:, None, None, :]) * torch.finfo(torch.float32).min
    h = m.embeddings(ids)
    for layer in m.encoder.layer:
        h = layer(h, ext)
    return h
def torch_mask_tokens(inputs, special_ids, mask_id, p, gen):
    labels = inputs.clone()
    probability_matrix = torch.full(labels.shape, p)
    special_tokens_mask = torch.isin(inputs, torch.tensor(special_ids))
    probability_matrix.masked_fill_(special_tokens_mask, value=0.0)
    masked_indices = torch.bernoulli(probability_matrix, generator=gen).bool()
    labels[~masked_indices] = -100
    indices_replaced = torch.bernoulli(torch.full(labels.shape, 0.8), generator=gen).bool() & masked_indices
    inputs = inputs.clone()
    inputs[indices_replaced] = mask_id
    indices_random = (torch.bernoulli(torch.full(labels.shape, 0.5), generator=gen).bool()
                      & masked_indices & ~indices_replaced)
    random_words = torch.randint(V, labels.shape, dtype=torch.long, generator=gen)
    inputs[indices_random] = random_words[indices_random]
    return inputs, labels
m = Model(False)
head = Head(m.embeddings.word_embeddings)
with torch.no_grad():
    for name, p in list(m.named_parameters()) + list(head.named_parameters()):
        p.copy_(torch.randn(p.shape, generator=g) * (0.5 if "LayerNorm.weight" not in name else 0.1)
                + (1.0 if "LayerNorm.weight" in name else 0.0))
m.eval()
head.eval()
# [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4: special, never chosen
ids = torch.randint(5, V, (6, 16), generator=g)
ids[:, 0] = 2
ids[1, 9] = 3
ids[1, 10:] = 0
ids[3, 15] = 1
masked, labels = torch_mask_tokens(ids, [0, 1, 2, 3, 4], 4, 0.3, torch.Generator().manual_seed(5))
logits = head.predictions(states(m, masked))
loss = F.cross_entropy(logits.view(-1, V), labels.view(-1))   # ignore_index -100
t = dict(m.state_dict())
for k, v in head.state_dict().items():
    if k != "predictions.decoder.weight":
        t["cls." + k] = v
t.update({"ids": ids, "masked": masked, "labels": labels, "loss": loss.detach().reshape(1)})
save(out + "/mlm.safetensors", t)
)PY";

TEST_F(Backbones, MaskedLanguageModelMatchesTransformersMaskingHeadAndLoss) {
  SKIP_WITHOUT_PYTHON("torch, numpy");
  const auto r = python(dir(), std::string(kBertReference) + kMlmReference);
  ASSERT_EQ(r.code, 0) << r.out;
  const fs::path file = dir() / "mlm.safetensors";
  std::map<std::string, torch::Tensor> io;
  NamedTensors rest =
      split(tlab::weights::read_safetensors(file), {"ids", "masked", "labels", "loss"}, io);
  NamedTensors backbone, cls;
  for (auto& [k, t] : rest) (k.rfind("cls.", 0) == 0 ? cls : backbone).emplace_back(k, t);
  auto net = build("bert", tiny_bert(2), {16});
  ASSERT_TRUE(tlab::weights::load_state_dict(*net, backbone, file.string()).complete());
  torch::Tensor embedding;
  for (const auto& p : net->named_parameters())
    if (p.key() == "embeddings.word_embeddings.weight") embedding = p.value();
  torch::nn::Module
      holder;  // HF's names: cls.predictions.{transform.dense, transform.LayerNorm, bias}
  auto head = holder.register_module("cls", std::make_shared<tlab::MlmHead>(32, embedding));
  const auto report = tlab::weights::load_state_dict(holder, cls, file.string());
  EXPECT_TRUE(report.complete()) << report.summary();
  EXPECT_EQ(report.matched.size(), 5u);  // dense w/b, LayerNorm w/b, bias; the decoder is tied

  // Masking: the same draws from the same seed give the same choices, masks and random words.
  torch::Tensor special = torch::zeros({40}, torch::kBool);
  special.slice(0, 0, 5).fill_(true);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const tlab::MaskedTokens m = tlab::mask_tokens(io.at("ids"), 0.3, 4, special, gen);
  EXPECT_TRUE(torch::equal(m.input, io.at("masked")));
  EXPECT_TRUE(torch::equal(m.labels, io.at("labels")));
  const int64_t chosen = io.at("labels").ne(-100).sum().item<int64_t>();
  EXPECT_GT(chosen, 10);  // 0.3 of ~80 tokens: not a vacuous comparison
  EXPECT_GT(io.at("masked").eq(4).sum().item<int64_t>(), 0);

  // Head and loss on the masked batch (token states from the last layer's tap).
  torch::Tensor h;
  net->add_tap("layer1", [&h](const torch::Tensor& x) {
    h = x;
    return x;
  });
  net->eval();
  head->eval();
  torch::NoGradGuard no_grad;
  net->forward(io.at("masked"));
  ASSERT_EQ(h.sizes(), (std::vector<int64_t>{6, 16, 32}));
  const double loss = head->loss(h, io.at("labels")).item<double>();
  const double expected = io.at("loss")[0].item<double>();
  std::printf("masked-LM loss %.7f, transformers' algorithm %.7f\n", loss, expected);
  EXPECT_NEAR(loss, expected, 1e-5);
  // No position chosen: a zero loss that still has a graph (never NaN).
  torch::Tensor none = torch::full({6, 16}, -100, torch::kLong);
  EXPECT_EQ(head->loss(h, none).item<double>(), 0.0);

  // A BertForMaskedLM checkpoint with its head: bert's mlm_head = true loads every tensor
  // strictly (cls.predictions.* frozen, outside the features), and load_mlm_head gives a fresh
  // head the checkpoint's values: the same loss.
  auto full = build("bert", tiny_bert(2, {{"mlm_head", true}}), {16});
  const auto all = tlab::weights::load_state_dict(*full, rest, file.string());
  EXPECT_TRUE(all.complete()) << all.summary();
  EXPECT_EQ(all.matched.size(), rest.size());
  for (const auto& p : full->named_parameters())
    EXPECT_EQ(p.value().requires_grad(), p.key().rfind("cls.", 0) != 0) << p.key();
  expect_groups_cover_parameters_once(*full);
  torch::Tensor word;
  for (const auto& p : full->named_parameters())
    if (p.key() == "embeddings.word_embeddings.weight") word = p.value();
  tlab::MlmHead fresh(32, word);
  EXPECT_EQ(tlab::load_mlm_head(fresh, *full), "cls.predictions.");
  full->add_tap("layer1", [&h](const torch::Tensor& x) {
    h = x;
    return x;
  });
  full->eval();
  fresh.eval();
  full->forward(io.at("masked"));
  EXPECT_NEAR(fresh.loss(h, io.at("labels")).item<double>(), expected, 1e-5);
  // Without the option the backbone holds no head: nothing to load.
  tlab::MlmHead other(32, embedding);
  EXPECT_EQ(tlab::load_mlm_head(other, *net), "");
  // RoBERTa's names.
  auto roberta =
      build("bert", tiny_bert(1, {{"variant", std::string("roberta")}, {"mlm_head", true}}), {16});
  std::set<std::string> lm;
  for (const auto& p : roberta->named_parameters())
    if (p.key().rfind("lm_head.", 0) == 0) lm.insert(p.key());
  EXPECT_EQ(lm, (std::set<std::string>{"lm_head.bias", "lm_head.dense.bias", "lm_head.dense.weight",
                                       "lm_head.layer_norm.bias", "lm_head.layer_norm.weight"}));
  EXPECT_EQ(tlab::load_mlm_head(other, *roberta), "lm_head.");
}

// Masking's rates over many tokens: 15% of the non-special ones chosen, of those 80% [MASK], 10%
// a random token, 10% unchanged; special tokens never.
TEST(MaskedLanguageModel, MaskingFollowsBertsRates) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  torch::Tensor ids = torch::randint(5, 1000, {400, 250}, gen, torch::kLong);
  ids.select(1, 0).fill_(2);
  ids.slice(1, 200).fill_(0);
  torch::Tensor special = torch::zeros({1000}, torch::kBool);
  special.slice(0, 0, 5).fill_(true);
  const tlab::MaskedTokens m = tlab::mask_tokens(ids, 0.15, 4, special, gen);
  const torch::Tensor chosen = m.labels.ne(-100);
  EXPECT_TRUE(torch::equal(m.labels.masked_select(chosen), ids.masked_select(chosen)));
  EXPECT_TRUE(torch::equal(m.input.masked_select(chosen.logical_not()),
                           ids.masked_select(chosen.logical_not())));
  EXPECT_EQ(chosen.slice(1, 200).sum().item<int64_t>(), 0);  // padding
  EXPECT_EQ(chosen.select(1, 0).sum().item<int64_t>(), 0);   // [CLS]
  const double real = 400.0 * 199, n = chosen.sum().item<double>();
  EXPECT_NEAR(n / real, 0.15, 0.005);
  const double masked = (m.input.eq(4) & chosen).sum().item<double>();
  const double kept = (m.input.eq(ids) & chosen).sum().item<double>();
  EXPECT_NEAR(masked / n, 0.8, 0.01);
  // Unchanged: the 10% kept plus the random draws that hit the original token (1/1000).
  EXPECT_NEAR(kept / n, 0.1, 0.01);
  EXPECT_NEAR((n - masked - kept) / n, 0.1, 0.01);
}

// Whole-word masking: a word is a piece and its "##" continuations; the pieces of a chosen word
// are all chosen, about probability x the non-special tokens per sequence, specials never.
TEST(MaskedLanguageModel, WholeWordMaskingChoosesWholeWords) {
  // ids 0-4 special, 5-49 word starts, 50-99 continuations ("##...").
  torch::Tensor special = torch::zeros({100}, torch::kBool),
                cont = torch::zeros({100}, torch::kBool);
  special.slice(0, 0, 5).fill_(true);
  cont.slice(0, 50).fill_(true);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  torch::Tensor ids = torch::randint(5, 100, {200, 40}, gen, torch::kLong);
  ids.select(1, 0).fill_(2);  // [CLS]
  ids.slice(1, 30).fill_(0);  // padding
  ids.select(1, 1).fill_(7);  // a word start after [CLS]
  const torch::Tensor chosen = tlab::whole_word_choice(ids, 0.15, special, cont, gen);
  int64_t words = 0, split_words = 0;
  for (int64_t r = 0; r < 200; ++r) {
    int64_t count = 0;
    for (int64_t i = 0; i < 40; ++i) {
      const int64_t id = ids[r][i].item<int64_t>();
      const bool c = chosen[r][i].item<bool>();
      count += c;
      if (id < 5) {
        EXPECT_FALSE(c) << "a special token was chosen";
        continue;
      }
      // A continuation shares its word's choice.
      if (id >= 50 && i > 1) {
        const int64_t before = ids[r][i - 1].item<int64_t>();
        if (before >= 5) EXPECT_EQ(c, chosen[r][i - 1].item<bool>()) << "row " << r << " at " << i;
      }
      if (c && (i + 1 == 40 || ids[r][i + 1].item<int64_t>() < 50)) ++words;
      if (id < 50 && i + 1 < 40 && ids[r][i + 1].item<int64_t>() >= 50) ++split_words;
    }
    EXPECT_GE(count, 1);
    EXPECT_LE(count, 4);  // round(0.15 x 29) = 4, never more
  }
  EXPECT_GT(words, 300);         // most rows reach their 4 tokens with whole words
  EXPECT_GT(split_words, 1000);  // the data has multi-piece words to keep together
  // The masks follow BERT's 80/10/10 on the chosen positions; nothing else changes.
  const tlab::MaskedTokens m = tlab::mask_chosen(ids, chosen, 4, 100, gen);
  EXPECT_TRUE(torch::equal(m.labels.ne(-100), chosen));
  EXPECT_TRUE(torch::equal(m.input.masked_select(chosen.logical_not()),
                           ids.masked_select(chosen.logical_not())));
}

// Through tlab: the shipped review experiment on the files tools/reviews.py makes, a BERT
// pre-trained on books and fine-tuned on kitchen reviews (a few epochs).
TEST_F(Backbones, BertTransfersAcrossGeneratedReviewsThroughTlab) {
  const auto tool = make_reviews();
  ASSERT_EQ(tool.code, 0) << tool.out;
  EXPECT_THAT(tool.out, HasSubstr("vocab.txt of 105 tokens"));
  const auto run = tlab::test::shell(
      "cd '" + dir().string() + "' && OMP_NUM_THREADS=1 '" + TLAB_TEST_BIN_DIR +
      "/tlab' --plugin-path '" + TLAB_TEST_PLUGIN_DIR + "' run '" + TLAB_SOURCE_DIR +
      "/experiments/reviews_bert.toml' strategy=finetune seed=1 strategy.source_epochs=1 "
      "train.epochs=2 --db '" +
      (dir() / "r.db").string() + "'");
  ASSERT_EQ(run.code, 0) << run.out;
  const auto log = tlab::test::shell("cat '" + dir().string() + "'/runs/*/output.log");
  EXPECT_THAT(log.out, HasSubstr("WordPiece vocabulary of 105 ids"));
  EXPECT_THAT(log.out, HasSubstr("[source] epoch 1/1"));
  EXPECT_THAT(log.out, HasSubstr("[target] epoch 2/2"));
}

// LoRA on BERT's attention in PEFT's format: a run writes peft/adapter_config.json and
// peft/adapter_model.safetensors (keys base_model.model.<module>.lora_A.weight, r x in, and
// .lora_B.weight, out x r, as PEFT's checkpoint guide lays them out); a later run reads them
// back as adapter_weights.
TEST_F(Backbones, LoraOnBertRoundTripsThroughPeftsFormat) {
  const auto tool = make_reviews();
  ASSERT_EQ(tool.code, 0) << tool.out;
  tlab::test::write_file(dir() / "exp.toml", R"toml(name = "peft"
device = "cpu"
[target]
plugin = "text"
path = "results/datasets/reviews/kitchen.tsv"
tokenize = "wordpiece"
vocab_path = "results/datasets/reviews/vocab.txt"
max_len = 16
val_fraction = 0.2
test_fraction = 0.2
[backbone]
plugin = "bert"
vocab_size = 105
hidden_size = 16
num_hidden_layers = 2
num_attention_heads = 2
intermediate_size = 32
max_position_embeddings = 16
[[adapters]]
plugin = "lora"
targets = ["encoder.layer.*.attention.self.query", "encoder.layer.*.attention.self.value"]
rank = 4
alpha = 8
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
optimizer = "adam"
epochs = 1
)toml");
  auto tlab_run = [&](const std::string& args) {
    return tlab::test::shell("cd '" + dir().string() + "' && OMP_NUM_THREADS=1 '" +
                             TLAB_TEST_BIN_DIR + "/tlab' --plugin-path '" + TLAB_TEST_PLUGIN_DIR +
                             "' run exp.toml --db '" + (dir() / "r.db").string() + "' " + args);
  };
  const auto a = tlab_run("");
  ASSERT_EQ(a.code, 0) << a.out;
  const auto run_dir = [&](int id) {
    return fs::path(tlab::test::shell(fmt::format("sqlite3 '{}' 'SELECT run_dir FROM runs WHERE "
                                                  "id = {}' | tr -d '\\n'",
                                                  (dir() / "r.db").string(), id))
                        .out);
  };
  const fs::path peft = run_dir(1) / "peft";
  const auto config = nlohmann::json::parse(tlab::test::read_file(peft / "adapter_config.json"));
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["r"], 4);
  EXPECT_EQ(config["lora_alpha"], 8);
  EXPECT_EQ(config["target_modules"].size(), 4u);
  EXPECT_EQ(config["target_modules"][0], "encoder.layer.0.attention.self.query");
  const auto file = tlab::weights::read_safetensors(peft / "adapter_model.safetensors");
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [k, t] : file) shapes[k] = t.sizes().vec();
  ASSERT_EQ(shapes.size(), 8u);
  EXPECT_EQ(shapes.at("base_model.model.encoder.layer.0.attention.self.query.lora_A.weight"),
            (std::vector<int64_t>{4, 16}));
  EXPECT_EQ(shapes.at("base_model.model.encoder.layer.1.attention.self.value.lora_B.weight"),
            (std::vector<int64_t>{16, 4}));
  // Read back: no training, the factors are the file's.
  const std::string from =
      "adapter_weights=\"" + (peft / "adapter_model.safetensors").string() + "\" train.epochs=0";
  const auto b = tlab_run("+" + from);
  ASSERT_EQ(b.code, 0) << b.out;
  std::map<std::string, torch::Tensor> trained, loaded;
  for (const auto& [k, t] : tlab::weights::read_safetensors(run_dir(1) / "model.safetensors"))
    if (k.rfind("lora_0.", 0) == 0) trained[k] = t;
  for (const auto& [k, t] : tlab::weights::read_safetensors(run_dir(2) / "model.safetensors"))
    if (k.rfind("lora_0.", 0) == 0) loaded[k] = t;
  ASSERT_EQ(trained.size(), 8u);
  for (const auto& [k, t] : trained) EXPECT_TRUE(torch::equal(t, loaded.at(k))) << k;
  // Another rank: named.
  const auto c = tlab_run("+" + from + " adapters.0.rank=2");
  EXPECT_NE(c.code, 0);
  EXPECT_THAT(c.out, HasSubstr("the file has r = 4, lora_alpha = 8; this run's lora has rank = 2, "
                               "alpha = 8: use the file's values"));
}

TEST_F(Backbones, BertRefusesWhatDoesNotFit) {
  auto error = [&](const tlab::Params& p, std::vector<int64_t> shape = {9}) {
    return tlab::test::error_of<std::exception>([&] { build("bert", p, shape); });
  };
  EXPECT_THAT(error({{"hidden_size", int64_t{30}}, {"num_attention_heads", int64_t{4}}}),
              HasSubstr("num_attention_heads = 4 does not divide hidden_size = 30"));
  EXPECT_THAT(error({{"max_position_embeddings", int64_t{8}}}),
              HasSubstr("sequences of 9 tokens need 9 positions, more than "
                        "max_position_embeddings = 8; lower the dataset's max_len"));
  EXPECT_THAT(
      error({{"variant", std::string("roberta")}, {"max_position_embeddings", int64_t{10}}}),
      HasSubstr("need 11 positions"));
  EXPECT_THAT(error({}, {3, 8, 8}), HasSubstr("bert needs token sequences, input_shape = {L}"));
  auto net = build("bert",
                   {{"vocab_size", int64_t{10}},
                    {"hidden_size", int64_t{8}},
                    {"num_hidden_layers", int64_t{1}},
                    {"num_attention_heads", int64_t{2}},
                    {"intermediate_size", int64_t{16}}},
                   {4});
  EXPECT_THAT(tlab::test::error_of<std::exception>([&] {
                net->forward(torch::tensor({{1, 2, 12, 0}}, torch::kLong));
              }),
              HasSubstr("token id 12 is outside [0, vocab_size = 10)"));
}

// ---------------------------------------------------------------------------------------------
// vit

std::vector<std::string> lines(const std::string& text);  // below

// torchvision's VisionTransformer at small sizes with random weights (class token and position
// embeddings too), eval mode: state dict, input, logits; and vit_b_16's and vit_b_32's
// state-dict names and shapes.
TEST_F(Backbones, VitMatchesTorchvisionUnderItsNames) {
  SKIP_WITHOUT_PYTHON("torch, torchvision, numpy");
  const auto r = python(dir(), R"PY(
import torchvision
from torchvision.models.vision_transformer import VisionTransformer
m = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=16,
                      mlp_dim=32, num_classes=7)
with torch.no_grad():
    for p in m.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.3)
m.eval()
x = torch.randn(2, 3, 32, 32, generator=g)
with torch.no_grad():
    y = m(x)
t = dict(m.state_dict())
t["input"], t["output"] = x, y
save(out + "/vit.safetensors", t)
for arch in ("vit_b_16", "vit_b_32"):  # vit_l_16 (300M parameters) costs 10 s: its sizes only
    sd = getattr(torchvision.models, arch)().state_dict()
    open(out + "/" + arch + ".txt", "w").write(
        "\n".join(k + " " + "x".join(map(str, v.shape)) for k, v in sd.items()) + "\n")
)PY");
  ASSERT_EQ(r.code, 0) << r.out;
  const fs::path file = dir() / "vit.safetensors";
  std::map<std::string, torch::Tensor> io;
  const NamedTensors weights =
      split(tlab::weights::read_safetensors(file), {"input", "output"}, io);
  auto net = build("vit",
                   {{"arch", std::string("custom")},
                    {"image_size", int64_t{32}},
                    {"patch_size", int64_t{8}},
                    {"num_layers", int64_t{2}},
                    {"num_heads", int64_t{4}},
                    {"hidden_dim", int64_t{16}},
                    {"mlp_dim", int64_t{32}},
                    {"classifier", true},
                    {"classes", int64_t{7}}},
                   {3, 32, 32});
  const auto report = tlab::weights::load_state_dict(*net, weights, file.string());
  EXPECT_TRUE(report.complete()) << report.summary();
  EXPECT_EQ(report.matched.size(), weights.size());
  net->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor y = net->forward(io.at("input"));
  EXPECT_GT(y.abs().max().item<double>(), 0.01);
  const double diff = max_abs_diff(y, io.at("output"));
  std::printf("vit vs torchvision VisionTransformer: max abs diff %.3g\n", diff);
  EXPECT_LE(diff, 1e-5);
  // The named architectures: the same names and shapes as torchvision's.
  for (const std::string arch : {"vit_b_16", "vit_b_32"}) {
    auto big = build("vit", {{"arch", arch}, {"classifier", true}}, {3, 224, 224});
    std::string ours;
    for (const auto& p : big->named_parameters())
      ours += p.key() + " " + [&] {
        std::string s;
        for (int64_t d = 0; d < p.value().dim(); ++d)
          s += (d ? "x" : "") + std::to_string(p.value().size(d));
        return s;
      }() + "\n";
    auto sorted = [](const std::string& text) {
      std::vector<std::string> v = lines(text);
      std::sort(v.begin(), v.end());
      return v;
    };
    EXPECT_EQ(sorted(ours), sorted(tlab::test::read_file(dir() / (arch + ".txt")))) << arch;
  }
}

TEST_F(Backbones, VitRefusesImagesOfAnotherSize) {
  auto error = [&](const tlab::Params& p, std::vector<int64_t> shape) {
    return tlab::test::error_of<std::exception>([&] { build("vit", p, shape); });
  };
  EXPECT_THAT(error({}, {3, 32, 32}),
              HasSubstr("vit needs colour images 3 x 224 x 224 (image_size; its position "
                        "embeddings are fixed), but the dataset gives 3 x 32 x 32"));
  EXPECT_THAT(error({{"arch", std::string("custom")},
                     {"image_size", int64_t{30}},
                     {"patch_size", int64_t{8}}},
                    {3, 30, 30}),
              HasSubstr("patch_size = 8 does not divide image_size = 30"));
}

// ---------------------------------------------------------------------------------------------
// embedding (word vectors)

// A logger that keeps what it is told.
class KeptLog : public tlab::Logger {
 public:
  void debug(const std::string& m) override { text += m + "\n"; }
  void info(const std::string& m) override { text += m + "\n"; }
  void warn(const std::string& m) override { text += m + "\n"; }
  std::string text;
};

// The same three vectors in word2vec's binary format, GloVe's text format and fastText's .vec;
// the vocabulary has a word without a vector ("zebra").
TEST_F(Backbones, EmbeddingTakesWord2vecGloveAndFastTextVectorsAlignedToTheVocabulary) {
  const fs::path vocab =
      tlab::test::write_file(dir() / "vocab.txt", "<pad>\n<unk>\ngood\nzebra\nbad\n");
  const std::vector<std::pair<std::string, std::vector<float>>> vectors = {
      {"bad", {-1.5f, 0.25f, 3}}, {"good", {1, 2, -0.5f}}, {"extra", {9, 9, 9}}};
  std::string glove, vec = "3 3\n", bin = "3 3\n";
  for (const auto& [w, v] : vectors) {
    std::string line = w;
    for (float f : v) line += " " + fmt::format("{}", f);
    glove += line + "\n";
    vec += line + "\n";
    bin += w + " ";
    bin.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
    bin += "\n";
  }
  tlab::test::write_file(dir() / "v.glove.txt", glove);
  tlab::test::write_file(dir() / "v.vec", vec);
  tlab::test::write_file(dir() / "v.bin", bin);
  for (const auto& [file, format] :
       {std::pair{"v.glove.txt", "glove"}, {"v.vec", "fasttext"}, {"v.bin", "word2vec"}}) {
    SCOPED_TRACE(file);
    for (const std::string arch : {"bag", "cnn"}) {
      KeptLog log;
      tlab::Context ctx;
      ctx.log = &log;
      auto net = loader()
                     .create<tlab::Backbone>("embedding", {{"vocab_size", int64_t{6}},
                                                           {"dim", int64_t{3}},
                                                           {"arch", arch},
                                                           {"filters", int64_t{2}},
                                                           {"vectors", (dir() / file).string()},
                                                           {"vocab", vocab.string()},
                                                           {"freeze", true}})
                     ->build({4}, ctx);
      const torch::Tensor w = net->named_parameters()["embedding.weight"];
      EXPECT_TRUE(torch::equal(w[2], torch::tensor({1.0f, 2.0f, -0.5f})));   // good
      EXPECT_TRUE(torch::equal(w[4], torch::tensor({-1.5f, 0.25f, 3.0f})));  // bad
      EXPECT_FALSE(w.requires_grad());                                       // frozen
      EXPECT_THAT(log.text, HasSubstr(std::string("2 of 3 words have a vector in '") +
                                      (dir() / file).string() + "' (" + format +
                                      ", 3 dimensions); 1 without one keep random vectors (e.g. "
                                      "zebra); frozen"));
      // Bag: the mean of the real tokens' vectors.
      if (arch == "bag") {
        const torch::Tensor f = net->forward(torch::tensor({{2, 4, 0, 0}}, torch::kLong));
        EXPECT_TRUE(torch::allclose(f[0], torch::tensor({-0.25f, 1.125f, 1.25f})));
      } else {
        EXPECT_EQ(net->forward(torch::tensor({{2, 4, 0, 0}}, torch::kLong)).sizes(),
                  (torch::IntArrayRef{1, 6}));  // 3 widths x 2 filters
      }
    }
  }
}

TEST_F(Backbones, EmbeddingVectorErrorsNameTheFileAndLine) {
  const fs::path vocab = tlab::test::write_file(dir() / "vocab.txt", "<pad>\n<unk>\ngood\n");
  auto error = [&](const std::string& file_text, int64_t dim = 3, const std::string& name = "v") {
    const fs::path f = tlab::test::write_file(dir() / name, file_text);
    return build_error("embedding",
                       {{"vocab_size", int64_t{3}},
                        {"dim", dim},
                        {"vectors", f.string()},
                        {"vocab", vocab.string()}},
                       {4});
  };
  EXPECT_THAT(error("good 1 2 3\nbad 1 2\n"),
              HasSubstr("line 2 ('bad') has 2 values; expected 3 like the first line"));
  EXPECT_THAT(error("2 3\ngood 1 2 3\n"),
              HasSubstr("has 1 vectors; its header announces 2 (the file is truncated)"));
  EXPECT_THAT(error("good 1 2 3\n", 4), HasSubstr("holds vectors of 3 dimensions, and dim = 4; "
                                                  "set backbone.dim = 3"));
  EXPECT_THAT(error("good 1 x 3\n"), HasSubstr("line 1: 'x' is not a number"));
  EXPECT_THAT(error("good 1 2 3\nb\xff"
                    "d 1 2 3\n"),
              HasSubstr("line 2: the word is not UTF-8"));
  std::string bin = "2 3\ngood ";
  const float one[3] = {1, 2, 3};
  bin.append(reinterpret_cast<const char*>(one), sizeof one);
  bin += "\nbad ";
  bin.append(reinterpret_cast<const char*>(one), 5);  // cut inside the second vector
  EXPECT_THAT(error(bin, 3, "v.bin"),
              HasSubstr("ends inside the vector of word 2 ('bad'): expected 3 floats; the file "
                        "is truncated"));
  EXPECT_THAT(
      build_error("embedding",
                  {{"vocab_size", int64_t{3}},
                   {"dim", int64_t{3}},
                   {"vectors", (dir() / "v").string()},
                   {"vocab", tlab::test::write_file(dir() / "words.txt", "good\nbad\n").string()}},
                  {4}),
      HasSubstr("does not start with <pad> and <unk>"));
  EXPECT_THAT(
      build_error(
          "embedding",
          {{"vectors", (dir() / "v").string()}, {"vocab", (dir() / "missing.txt").string()}}, {4}),
      HasSubstr("cannot read the vocabulary"));
}

// ---------------------------------------------------------------------------------------------
// torchscript

// A traced network (trunk: conv, batch norm, ReLU, conv, pool, flatten; fc) and a scripted one
// with an exported method, their inputs and outputs, and the traced one's state dict names and
// parameter count.
void write_torchscript_modules(const fs::path& dir) {
  const auto r = python(dir, R"PY(
nn = torch.nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                                   nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(16, 5)
    def forward(self, x):
        return self.fc(self.trunk(x))
m = Net()
with torch.no_grad():
    bn = m.trunk[1]
    bn.running_mean.copy_(torch.rand(8, generator=g) - 0.5)
    bn.running_var.copy_(torch.rand(8, generator=g) + 0.5)
m.eval()
x = torch.randn(2, 3, 16, 16, generator=g)
torch.jit.trace(m, x).save(out + "/traced.pt")

class Emb(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(12, 6)
        self.head = nn.Linear(6, 2)
        self.drop = nn.Dropout(0.5)
    @torch.jit.export
    def embed(self, x):
        return torch.relu(self.drop(self.body(x.flatten(1))))
    def forward(self, x):
        return self.head(self.embed(x))
e = Emb().eval()
torch.jit.script(e).save(out + "/scripted.pt")
v = torch.randn(4, 3, 4, generator=g)
with torch.no_grad():
    t = {"input": x, "output": m(x), "trunk": m.trunk(x), "v": v, "embed": e.embed(v)}
save(out + "/io.safetensors", t)
save(out + "/weights.safetensors", dict(m.state_dict()))
open(out + "/names.txt", "w").write("\n".join(m.state_dict().keys()))
open(out + "/count.txt", "w").write(str(len(list(m.parameters()))))
)PY");
  ASSERT_EQ(r.code, 0) << r.out;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    const auto end = text.find('\n', start);
    out.push_back(text.substr(start, end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

TEST_F(Backbones, TorchScriptMatchesPythonAndTrainsTheSharedTensors) {
  SKIP_WITHOUT_PYTHON("torch, numpy");
  write_torchscript_modules(dir());
  std::map<std::string, torch::Tensor> io;
  split(tlab::weights::read_safetensors(dir() / "io.safetensors"), {"input", "output", "trunk"},
        io);
  const std::string path = (dir() / "traced.pt").string();
  auto net = build("torchscript", {{"path", path}}, {3, 16, 16});
  EXPECT_EQ(net->feature_dim(), 5);
  net->eval();
  {
    torch::NoGradGuard no_grad;
    const double diff = max_abs_diff(net->forward(io.at("input")), io.at("output"));
    std::printf("torchscript (traced) vs Python: max abs diff %.3g\n", diff);
    EXPECT_LE(diff, 1e-5);
  }
  // Python's parameters and state dict names; its weights load strictly by name.
  EXPECT_EQ(std::to_string(net->parameters().size()), tlab::test::read_file(dir() / "count.txt"));
  std::vector<std::string> names;
  for (const auto& [name, t] : tlab::weights::state_dict(*net)) names.push_back(name);
  auto python_names = lines(tlab::test::read_file(dir() / "names.txt"));
  std::sort(names.begin(), names.end());
  std::sort(python_names.begin(), python_names.end());
  EXPECT_EQ(names, python_names);
  const auto report = tlab::weights::load_state_dict(
      *net, tlab::weights::read_safetensors(dir() / "weights.safetensors"), "weights");
  EXPECT_TRUE(report.complete()) << report.summary();
  EXPECT_THAT(group_names(*net), ElementsAre("trunk", "fc"));
  expect_groups_cover_parameters_once(*net);
  // A training step on the registered parameters changes what the TorchScript module computes.
  const torch::Tensor before = net->forward(io.at("input")).detach();
  net->train();
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1));
  sgd.zero_grad();
  net->forward(io.at("input")).pow(2).sum().backward();
  sgd.step();
  net->eval();
  const torch::Tensor after = net->forward(io.at("input")).detach();
  EXPECT_GT(max_abs_diff(after, before), 1e-3);
  // Device and dtype moves (set_data in place) reach the TorchScript module's tensors: in double
  // precision it computes what it computed in single precision.
  net->to(torch::kDouble);
  const torch::Tensor y = net->forward(io.at("input").to(torch::kDouble)).detach();
  EXPECT_EQ(y.scalar_type(), torch::kDouble);
  EXPECT_LE(max_abs_diff(y, after), 1e-4);
  // The one tap: the features.
  const auto taps = record_taps(*net, {"output"});
  net->forward(io.at("input").to(torch::kDouble));
  EXPECT_THAT(taps->points, ElementsAre("output"));
}

TEST_F(Backbones, TorchScriptFeaturesAreASubmoduleOrAMethod) {
  SKIP_WITHOUT_PYTHON("torch, numpy");
  write_torchscript_modules(dir());
  std::map<std::string, torch::Tensor> io;
  split(tlab::weights::read_safetensors(dir() / "io.safetensors"), {"input", "trunk", "v", "embed"},
        io);
  torch::NoGradGuard no_grad;
  const std::string traced = (dir() / "traced.pt").string();
  auto trunk =
      build("torchscript", {{"path", traced}, {"features", std::string("trunk")}}, {3, 16, 16});
  EXPECT_EQ(trunk->feature_dim(), 16);
  trunk->eval();
  EXPECT_LE(max_abs_diff(trunk->forward(io.at("input")), io.at("trunk")), 1e-5);
  const std::string scripted = (dir() / "scripted.pt").string();
  auto embed =
      build("torchscript", {{"path", scripted}, {"features", std::string("embed")}}, {3, 4});
  EXPECT_EQ(embed->feature_dim(), 6);
  embed->eval();
  EXPECT_LE(max_abs_diff(embed->forward(io.at("v")), io.at("embed")), 1e-5);
  EXPECT_THAT(group_names(*embed), ElementsAre("body", "head"));
  // train() reaches the scripted module: its dropout is active, then off again after eval().
  embed->train();
  EXPECT_GT(max_abs_diff(embed->forward(io.at("v")), io.at("embed")), 1e-3);
  embed->eval();
  EXPECT_LE(max_abs_diff(embed->forward(io.at("v")), io.at("embed")), 1e-5);
  // A name that is neither: the message lists what there is.
  const std::string e = build_error(
      "torchscript", {{"path", traced}, {"features", std::string("avgpool")}}, {3, 16, 16});
  EXPECT_THAT(e, HasSubstr("features = 'avgpool' is neither a method nor a submodule of the "
                           "module in '" +
                           traced + "'"));
  EXPECT_THAT(e, HasSubstr("methods: forward; submodules: trunk, trunk.0"));
  EXPECT_THAT(e, HasSubstr(", fc; set features to one of them"));
  // The wrong input shape.
  EXPECT_THAT(build_error("torchscript", {{"path", traced}}, {5}),
              HasSubstr("fails on a batch of zeros shaped 2x5 (the dataset's input shape)"));
}

TEST_F(Backbones, TorchScriptRefusesMissingAndForeignFiles) {
  EXPECT_THAT(create_error("torchscript", {}), HasSubstr("`path` is required"));
  const std::string missing = (dir() / "missing.pt").string();
  EXPECT_THAT(create_error("torchscript", {{"path", missing}}),
              HasSubstr("path = '" + missing + "' is not a file"));
  const std::string foreign = tlab::test::write_file(dir() / "weights.pt", "not a zip").string();
  EXPECT_THAT(build_error("torchscript", {{"path", foreign}}, {3, 8, 8}),
              HasSubstr("'" + foreign + "' is not a TorchScript file (torch.jit.load: "));
}

}  // namespace
