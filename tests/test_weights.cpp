// safetensors: round trips of every dtype, files written and read by an independent
// implementation of the format (Python's struct and json, no PyTorch), and every way a file can
// be broken, each refused with a message naming the file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <fstream>

#include <fmt/format.h>

#include "plugins/loader.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"
#include "tlab/sdk/model.hpp"
#include "weights/safetensors.hpp"
#include "weights/state_dict.hpp"

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

using ::testing::HasSubstr;
namespace fs = std::filesystem;
using tlab::weights::NamedTensors;
using tlab::weights::read_safetensors;
using tlab::weights::write_safetensors;

namespace {

class Safetensors : public ::testing::Test {
 protected:
  fs::path dir_ = tlab::test::temp_dir(
      std::string("weights_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  void TearDown() override { fs::remove_all(dir_); }

  // A file with an 8-byte little-endian header length, `header` and `data` bytes.
  fs::path raw(const std::string& header, const std::string& data, const std::string& name = "w") {
    std::string bytes(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i, n >>= 8) bytes[i] = static_cast<char>(n & 0xff);
    const fs::path p = dir_ / (name + ".safetensors");
    std::ofstream(p, std::ios::binary) << bytes << header << data;
    return p;
  }

  std::string error_of(const fs::path& p) {
    try {
      read_safetensors(p);
    } catch (const tlab::weights::WeightsError& e) {
      return e.what();
    }
    return "(no error)";
  }
};

int run_python(const std::string& script) {
  const int status = std::system(("/usr/bin/python3 -c '" + script + "'").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_F(Safetensors, EveryDtypeRoundTripsWithMetadataAndOrder) {
  torch::manual_seed(0);
  const NamedTensors tensors = {
      {"f64", torch::randn({2, 3}, torch::kDouble)},
      {"f32", torch::randn({4}, torch::kFloat)},
      {"f16", torch::randn({3, 1}).to(torch::kHalf)},
      {"bf16", torch::randn({5}).to(torch::kBFloat16)},
      {"i64", torch::arange(-3, 3, torch::kLong)},
      {"i32", torch::arange(0, 7, torch::kInt).reshape({7, 1})},
      {"i16", torch::tensor({-300, 300}, torch::kShort)},
      {"i8", torch::tensor({-5, 5}, torch::kChar)},
      {"u8", torch::tensor({0, 255}, torch::kByte)},
      {"bool", torch::tensor({true, false, true})},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::zeros({0, 4})},
      {"strided", torch::arange(12, torch::kFloat).reshape({3, 4}).t()}};  // not contiguous
  write_safetensors(dir_ / "all.safetensors", tensors, {{"format", "pt"}, {"source", "test"}});
  std::map<std::string, std::string> meta;
  const NamedTensors back = read_safetensors(dir_ / "all.safetensors", &meta);
  EXPECT_EQ(meta, (std::map<std::string, std::string>{{"format", "pt"}, {"source", "test"}}));
  ASSERT_EQ(back.size(), tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(back[i].first, tensors[i].first);
    EXPECT_EQ(back[i].second.scalar_type(), tensors[i].second.scalar_type()) << back[i].first;
    EXPECT_EQ(back[i].second.sizes(), tensors[i].second.sizes()) << back[i].first;
    EXPECT_TRUE(torch::equal(back[i].second, tensors[i].second)) << back[i].first;
  }
  // The data starts 8-byte aligned, as the format recommends.
  std::ifstream in(dir_ / "all.safetensors", std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
}

TEST_F(Safetensors, ReadsAFileWrittenByAnIndependentWriter) {
  // Python's struct and json write the format by hand: F32 [2, 3] = 0..5, I64 [2] = 7, -8.
  const std::string path = (dir_ / "py.safetensors").string();
  ASSERT_EQ(run_python(fmt::format(
                "import json, struct\n"
                "h = json.dumps({{\"__metadata__\": {{\"by\": \"python\"}}, "
                "\"w\": {{\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 24]}}, "
                "\"b\": {{\"dtype\": \"I64\", \"shape\": [2], \"data_offsets\": [24, 40]}}}})"
                ".encode()\n"
                "d = struct.pack(\"<6f\", 0, 1, 2, 3, 4, 5) + struct.pack(\"<2q\", 7, -8)\n"
                "open(\"{}\", \"wb\").write(struct.pack(\"<Q\", len(h)) + h + d)\n",
                path)),
            0);
  std::map<std::string, std::string> meta;
  const NamedTensors t = read_safetensors(path, &meta);
  EXPECT_EQ(meta.at("by"), "python");
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].first, "w");
  EXPECT_TRUE(torch::equal(t[0].second, torch::arange(6, torch::kFloat).reshape({2, 3})));
  EXPECT_EQ(t[1].first, "b");
  EXPECT_TRUE(torch::equal(t[1].second, torch::tensor({7, -8}, torch::kLong)));
}

TEST_F(Safetensors, WritesAFileAnIndependentReaderUnderstands) {
  write_safetensors(dir_ / "cpp.safetensors",
                    {{"w", torch::arange(6, torch::kFloat).reshape({3, 2}) * 0.5},
                     {"n", torch::tensor({-1, 2}, torch::kInt)}});
  // Python parses the header and unpacks the bytes itself; it exits 0 only if all match.
  EXPECT_EQ(run_python(fmt::format(
                "import json, struct\n"
                "b = open(\"{}\", \"rb\").read()\n"
                "n = struct.unpack(\"<Q\", b[:8])[0]\n"
                "h = json.loads(b[8:8 + n])\n"
                "d = b[8 + n:]\n"
                "w, m = h[\"w\"], h[\"n\"]\n"
                "assert w[\"dtype\"] == \"F32\" and w[\"shape\"] == [3, 2], w\n"
                "assert m[\"dtype\"] == \"I32\" and m[\"shape\"] == [2], m\n"
                "x = struct.unpack(\"<6f\", d[w[\"data_offsets\"][0]:w[\"data_offsets\"][1]])\n"
                "assert x == (0, 0.5, 1, 1.5, 2, 2.5), x\n"
                "assert struct.unpack(\"<2i\", d[m[\"data_offsets\"][0]:m[\"data_offsets\"][1]]) "
                "== (-1, 2)\n"
                "assert len(d) == 32\n",
                (dir_ / "cpp.safetensors").string())),
            0);
}

TEST_F(Safetensors, BrokenFilesAreRefusedNamingTheFileAndTheProblem) {
  const std::string ok =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})";
  const std::string data(12, '\x01');
  EXPECT_EQ(error_of(raw(ok, data)), "(no error)");

  fs::path p = raw(ok, data.substr(0, 10), "truncated");
  EXPECT_THAT(error_of(p), HasSubstr("'" + p.string() +
                                     "': tensor 'b' ends at byte 12 of the "
                                     "data, but the file holds 10 bytes of data: the file is "
                                     "truncated"));
  p = dir_ / "short.safetensors";
  std::ofstream(p, std::ios::binary) << "abc";
  EXPECT_THAT(error_of(p), HasSubstr("is 3 bytes: too short for a safetensors file"));
  p = raw(ok, data, "header");  // cut inside the header
  fs::resize_file(p, 20);
  EXPECT_THAT(
      error_of(p),
      HasSubstr(fmt::format("declares a header of {} bytes but only 12 bytes follow", ok.size())));
  p = dir_ / "pickle.safetensors";
  std::ofstream(p, std::ios::binary) << std::string("\x80\x02\x63\x6f\x6c\x6c\x65\x63\x74", 9);
  EXPECT_THAT(error_of(p), HasSubstr("above safetensors' limit"));
  EXPECT_THAT(error_of(raw("{not json", "", "json")), HasSubstr("the header is not a JSON object"));
  EXPECT_THAT(
      error_of(raw(R"({"a":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}})", "xx", "dtype")),
      HasSubstr("tensor 'a' has dtype 'F8'; supported: F64, F32, F16, BF16, I64, I32, I16, "
                "I8, U8, BOOL"));
  EXPECT_THAT(error_of(raw(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                           std::string(8, 'x'), "shape")),
              HasSubstr("tensor 'a' has shape [3] and dtype F32 (12 bytes) but data_offsets [0, "
                        "8] hold 8 bytes: the header is inconsistent"));
  EXPECT_THAT(
      error_of(raw(
          R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
          std::string(6, 'x'), "overlap")),
      HasSubstr("tensors 'a' and 'b' overlap"));
  EXPECT_THAT(error_of(raw(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                           std::string(4, 'x'), "gap")),
              HasSubstr("bytes 0 to 2 of the data belong to no tensor"));
  EXPECT_THAT(error_of(raw(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
                           std::string(5, 'x'), "trailing")),
              HasSubstr("3 bytes after the last tensor belong to no tensor"));
  EXPECT_THAT(
      error_of(raw(R"({"a":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}})", "xx", "negative")),
      HasSubstr("tensor 'a' has a shape with a dimension that is not >= 0"));
  EXPECT_THAT(error_of(dir_ / "missing.safetensors"),
              HasSubstr("cannot read weights file '" + (dir_ / "missing.safetensors").string()));
}

TEST_F(Safetensors, WritingRefusesDuplicateNamesAndUnsupportedDtypes) {
  auto error = [&](const NamedTensors& t) {
    try {
      write_safetensors(dir_ / "x.safetensors", t);
    } catch (const tlab::weights::WeightsError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_THAT(error({{"a", torch::zeros({1})}, {"a", torch::zeros({1})}}),
              HasSubstr("tensor name 'a' is empty, reserved or used twice"));
  EXPECT_THAT(error({{"c", torch::zeros({2}, torch::kComplexFloat)}}),
              HasSubstr("tensor 'c' has dtype ComplexFloat; supported: F64"));
  EXPECT_FALSE(fs::exists(dir_ / "x.safetensors"));
}

}  // namespace

// ---- state dicts -------------------------------------------------------------------------------

namespace {

// conv (weight, bias) -> batch norm (weight, bias, running_mean, running_var, num_batches_tracked)
// -> linear (weight, bias), registered under PyTorch-style names.
struct Tiny : torch::nn::Module {
  Tiny() {
    conv = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 2, 3)));
    bn = register_module("bn1", torch::nn::BatchNorm2d(2));
    fc = register_module("fc", torch::nn::Linear(4, 3));
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  torch::nn::Linear fc{nullptr};
};

NamedTensors renamed(NamedTensors t, const std::string& prefix) {
  for (auto& [k, v] : t) k = prefix + k;
  return t;
}

}  // namespace

TEST(StateDict, NamesAreTheModulesParametersThenBuffers) {
  Tiny m;
  std::vector<std::string> names;
  for (const auto& [k, v] : tlab::weights::state_dict(m)) names.push_back(k);
  EXPECT_EQ(names, (std::vector<std::string>{"conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias",
                                             "fc.weight", "fc.bias", "bn1.running_mean",
                                             "bn1.running_var", "bn1.num_batches_tracked"}));
}

TEST(StateDict, LoadsEveryTensorWithDtypeConversionAndReportsIt) {
  Tiny a, b;
  a.bn->running_mean.fill_(0.25);
  NamedTensors file = tlab::weights::state_dict(a);
  for (auto& [k, v] : file)
    if (v.is_floating_point()) v = v.to(torch::kHalf).to(torch::kFloat).to(torch::kHalf);
  auto report = tlab::weights::load_state_dict(b, file, "a.safetensors");
  EXPECT_TRUE(report.complete());
  EXPECT_EQ(report.matched.size(), 9u);
  EXPECT_EQ(report.summary(), "9 matched, 0 missing, 0 unexpected, 0 shape mismatches");
  EXPECT_TRUE(torch::allclose(b.fc->weight, a.fc->weight, 0, 1e-3));  // via F16
  EXPECT_EQ(b.fc->weight.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(b.bn->running_mean, torch::full({2}, 0.25)));
  EXPECT_TRUE(b.fc->weight.requires_grad());  // loading does not change what trains
}

TEST(StateDict, StrictLoadingRefusesAndLoadsNothingNonStrictLoadsWhatFits) {
  Tiny a, b;
  NamedTensors file = tlab::weights::state_dict(a);
  file.erase(file.begin() + 4, file.begin() + 6);  // fc.weight, fc.bias
  file.emplace_back("extra.weight", torch::zeros({1}));
  file[0].second = torch::zeros({5, 1, 3, 3});  // conv1.weight of another width
  const auto before = b.conv->bias.clone();
  auto msg = tlab::test::error_of<tlab::weights::WeightsError>(
      [&] { tlab::weights::load_state_dict(b, file, "/w/a.safetensors"); });
  EXPECT_THAT(msg, HasSubstr("/w/a.safetensors: the weights do not fit the model: 6 matched, 2 "
                             "missing (fc.weight, fc.bias), 1 unexpected (extra.weight), 1 shape "
                             "mismatches (conv1.weight: file 5x1x3x3, model 2x1x3x3)"));
  EXPECT_THAT(msg, HasSubstr("strict = false"));
  EXPECT_TRUE(torch::equal(b.conv->bias, before));  // nothing copied

  tlab::weights::LoadOptions o;
  o.strict = false;
  auto report = tlab::weights::load_state_dict(b, file, "a", o);
  EXPECT_EQ(report.matched.size(), 6u);
  EXPECT_EQ(report.missing, (std::vector<std::string>{"fc.weight", "fc.bias"}));
  EXPECT_EQ(report.unexpected, std::vector<std::string>{"extra.weight"});
  EXPECT_TRUE(torch::equal(b.conv->bias, a.conv->bias));
}

TEST(StateDict, RemappingRulesAndPrefixFiltersRenameKeys) {
  Tiny a, b;
  tlab::weights::LoadOptions o;
  o.remap = tlab::weights::parse_remap({"module.encoder.=", "module.=skip."});
  auto report = tlab::weights::load_state_dict(
      b, renamed(tlab::weights::state_dict(a), "module.encoder."), "dp", o);
  EXPECT_TRUE(report.complete());
  EXPECT_TRUE(torch::equal(b.fc->weight, a.fc->weight));
  EXPECT_EQ(tlab::weights::remap_key("module.x", o.remap), "skip.x");
  EXPECT_EQ(tlab::weights::remap_key("other.x", o.remap), "other.x");

  // A run's checkpoint: keep backbone.* (stripped), ignore the head.
  Tiny c;
  NamedTensors ckpt = renamed(tlab::weights::state_dict(a), "backbone.");
  ckpt.emplace_back("head.0.weight", torch::zeros({3, 3}));
  tlab::weights::LoadOptions p;
  p.only_prefix = "backbone.";
  auto r2 = tlab::weights::load_state_dict(c, ckpt, "ckpt", p);
  EXPECT_TRUE(r2.complete());
  EXPECT_EQ(r2.ignored, std::vector<std::string>{"head.0.weight"});
  EXPECT_THAT(r2.summary(), HasSubstr("1 ignored"));
}

TEST(StateDict, MistakesAreNamed) {
  Tiny a, b;
  EXPECT_THAT(tlab::test::error_of<tlab::weights::WeightsError>(
                  [] { tlab::weights::parse_remap({"module."}); }),
              HasSubstr("\"module.\" is not of the form \"from=to\""));
  tlab::weights::LoadOptions o;
  o.strict = false;
  EXPECT_THAT(tlab::test::error_of<tlab::weights::WeightsError>([&] {
                tlab::weights::load_state_dict(b, renamed(tlab::weights::state_dict(a), "model."),
                                               "x.safetensors", o);
              }),
              HasSubstr("no tensor of the file fits the model"));
  o.remap = tlab::weights::parse_remap({"a.=", "b.="});
  NamedTensors two{{"a.fc.bias", torch::zeros({3})}, {"b.fc.bias", torch::zeros({3})}};
  EXPECT_THAT(tlab::test::error_of<tlab::weights::WeightsError>(
                  [&] { tlab::weights::load_state_dict(b, two, "x", o); }),
              HasSubstr("tensors \"a.fc.bias\" and \"b.fc.bias\" both map to \"fc.bias\""));
}

// tools/torch2safetensors.py converts a PyTorch checkpoint (here a DataParallel-style state dict
// inside {"state_dict": ...}); the C++ module with the same names then computes what PyTorch did.
TEST(StateDict, APyTorchCheckpointConvertedByTheToolGivesPyTorchsOutputs) {
  if (run_python("import torch") != 0)
    GTEST_SKIP() << "/usr/bin/python3 cannot import torch: install python3-torch "
                    "(tools/setup.sh does)";
  const fs::path dir = tlab::test::temp_dir("torch2safetensors");
  const std::string script = fmt::format(
      R"(import sys, torch
sys.path.insert(0, "{tools}")
from torch2safetensors import save_safetensors
class T(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 2, 3)
        self.bn1 = torch.nn.BatchNorm2d(2)
        self.fc = torch.nn.Linear(4, 3)
    def forward(self, x):
        return self.fc(self.bn1(self.conv1(x)).mean(3).flatten(1))
torch.manual_seed(3)
m = T()
m.bn1.running_mean.uniform_(-1, 1); m.bn1.running_var.uniform_(0.5, 2)
m.eval()
x = torch.randn(5, 1, 4, 4)
torch.save({{"state_dict": {{"module." + k: v for k, v in m.state_dict().items()}}}}, "{dir}/m.pth")
save_safetensors({{"x": x, "y": m(x).detach()}}, "{dir}/io.safetensors")
)",
      fmt::arg("tools", TLAB_SOURCE_DIR + "/tools"), fmt::arg("dir", dir.string()));
  tlab::test::write_file(dir / "make.py", script);
  auto made = tlab::test::shell("/usr/bin/python3 " + (dir / "make.py").string());
  ASSERT_EQ(made.code, 0) << made.out;
  auto conv = tlab::test::shell("/usr/bin/python3 " + TLAB_SOURCE_DIR +
                                "/tools/torch2safetensors.py " + (dir / "m.pth").string() + " " +
                                (dir / "m.safetensors").string() + " --strip module.");
  ASSERT_EQ(conv.code, 0) << conv.out;
  EXPECT_THAT(conv.out, HasSubstr("wrote 9 tensors"));

  Tiny m;
  auto report = tlab::weights::load_state_dict(m, read_safetensors(dir / "m.safetensors"), "m");
  EXPECT_TRUE(report.complete()) << report.summary();
  m.eval();
  auto io = read_safetensors(dir / "io.safetensors");
  torch::NoGradGuard no_grad;
  auto y = m.fc->forward(m.bn->forward(m.conv->forward(io[0].second)).mean(3).flatten(1));
  EXPECT_LE((y - io[1].second).abs().max().item<double>(), 1e-6);
  fs::remove_all(dir);
}

// The Python snippet of docs/models.md ("Bringing weights from PyTorch"), run as written: its
// file loads strictly into the resnet backbone with the classifier kept.
TEST(StateDict, TheDocsSnippetWritesWeightsTheResnetBackboneTakes) {
  if (run_python("import torch, torchvision") != 0)
    GTEST_SKIP() << "/usr/bin/python3 cannot import torch and torchvision: install python3-torch "
                    "python3-torchvision (tools/setup.sh does)";
  const std::string doc = tlab::test::read_file(TLAB_SOURCE_DIR + "/docs/models.md");
  const auto at = doc.find("Or, from your own Python code");
  ASSERT_NE(at, std::string::npos) << "docs/models.md lost its snippet";
  const auto begin = doc.find("```python\n", at) + 10, end = doc.find("```", begin);
  const fs::path dir = tlab::test::temp_dir("docs_snippet");
  tlab::test::write_file(dir / "snippet.py", doc.substr(begin, end - begin));
  auto r = tlab::test::shell("cd " + dir.string() + " && /usr/bin/python3 snippet.py");
  ASSERT_EQ(r.code, 0) << r.out;

  tlab::PluginLoader loader({TLAB_TEST_PLUGIN_DIR});
  tlab::Context ctx;
  auto net =
      loader.create<tlab::Backbone>("resnet", {{"depth", int64_t{18}}, {"classifier", true}})
          ->build({3, 32, 32}, ctx);
  auto report = tlab::weights::load_state_dict(*net, read_safetensors(dir / "resnet18.safetensors"),
                                               "resnet18.safetensors");
  EXPECT_EQ(report.matched.size(), 122u);  // strict: every name and shape matched
  fs::remove_all(dir);
}
