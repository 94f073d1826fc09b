// Domains from any dataset (run/domain_shift.hpp): classes and image transforms, checked against
// torchvision (rotation) and against what each transform's definition says; the config keys,
// located errors, the resolved config and run keys; a run on a transformed domain.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include <fmt/format.h>

#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "run/domain_shift.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"

namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace {

torch::Tensor images(int64_t n, int64_t c, int64_t h, int64_t w, uint64_t seed = 1) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::rand({n, c, h, w}, g, torch::kFloat);
}

torch::Tensor indices(int64_t n) { return torch::arange(n, torch::kLong); }

torch::Tensor shifted(const torch::Tensor& x, tlab::DomainShift s, int64_t k = 10,
                      torch::Tensor y = {}) {
  if (!y.defined()) y = torch::zeros({x.size(0)}, torch::kLong);
  return tlab::transform_images(x, y, indices(x.size(0)), s, 1, k);
}

// torchvision's rotate (bilinear, fill 0) of `x`, through Debian's Python.
torch::Tensor torchvision_rotate(const torch::Tensor& x, double angle) {
  const fs::path dir = tlab::test::temp_dir("rotate_ref");
  {
    std::ofstream out(dir / "x.bin", std::ios::binary);
    out.write(reinterpret_cast<const char*>(x.data_ptr<float>()), x.numel() * 4);
  }
  tlab::test::write_file(
      dir / "ref.py", fmt::format(R"py(import numpy, torch
import torchvision.transforms.functional as F
from torchvision.transforms import InterpolationMode
x = torch.from_numpy(numpy.fromfile("{0}/x.bin", dtype=numpy.float32).reshape({1}, {2}, {3}, {4}))
y = F.rotate(x, {5}, interpolation=InterpolationMode.BILINEAR, fill=[0.0])
y.numpy().astype(numpy.float32).tofile("{0}/y.bin")
)py",
                                  dir.string(), x.size(0), x.size(1), x.size(2), x.size(3), angle));
  const auto r = tlab::test::shell("/usr/bin/python3 '" + (dir / "ref.py").string() + "'");
  EXPECT_EQ(r.code, 0) << r.out;
  auto y = torch::empty_like(x);
  std::ifstream in(dir / "y.bin", std::ios::binary);
  in.read(reinterpret_cast<char*>(y.data_ptr<float>()), y.numel() * 4);
  fs::remove_all(dir);
  return y;
}

TEST(DomainShift, RotationIsTorchvisionsRotate) {
  const auto x = images(3, 1, 28, 28);
  for (double angle : {30.0, 90.0, -45.0, 75.0}) {
    tlab::DomainShift s;
    s.rotate = angle;
    const auto mine = shifted(x, s);
    const auto ref = torchvision_rotate(x, angle);
    EXPECT_LT((mine - ref).abs().max().item<double>(), 1e-5) << angle;
  }
  // Counter-clockwise: 90 degrees is torch.rot90 of the (H, W) plane, rows towards columns'
  // start.
  tlab::DomainShift s;
  s.rotate = 90;
  EXPECT_LT((shifted(x, s) - torch::rot90(x, 1, {2, 3})).abs().max().item<double>(), 1e-5);
}

TEST(DomainShift, EachTransformDoesWhatItsNameSays) {
  const auto x = images(4, 1, 16, 16) * 0.5 + 0.25;  // in [0.25, 0.75]: no clipping
  tlab::DomainShift s;
  s.hflip = true;
  EXPECT_TRUE(shifted(x, s).equal(x.flip({3})));
  s = {};
  s.vflip = true;
  EXPECT_TRUE(shifted(x, s).equal(x.flip({2})));
  s = {};
  s.invert = true;
  EXPECT_TRUE(shifted(x, s).allclose(1 - x));
  // Contrast (ImageNet-C): each image's mean stays, its deviations scale by c.
  s = {};
  s.contrast = 0.5;
  auto y = shifted(x, s);
  EXPECT_TRUE(y.mean({2, 3}).allclose(x.mean({2, 3}), 1e-5, 1e-6));
  EXPECT_TRUE(y.std({2, 3}).allclose(x.std({2, 3}) * 0.5, 1e-4, 1e-6));
  // Blur keeps a constant image and smooths noise.
  s = {};
  s.blur = 1.5;
  EXPECT_TRUE(
      shifted(torch::full({1, 1, 16, 16}, 0.3), s).allclose(torch::full({1, 1, 16, 16}, 0.3)));
  EXPECT_LT(shifted(x, s).std().item<double>(), 0.5 * x.std().item<double>());
  // JPEG-like: quality 100 nearly lossless, lower quality loses more; flat blocks survive.
  auto jpeg_error = [&](int64_t q) {
    tlab::DomainShift j;
    j.jpeg = q;
    return (shifted(x, j) - x).abs().mean().item<double>();
  };
  EXPECT_LT(jpeg_error(100), 2.0 / 255);
  EXPECT_LT(jpeg_error(90), jpeg_error(25));
  EXPECT_LT(jpeg_error(25), jpeg_error(7));
  s = {};
  s.jpeg = 10;
  // A flat image stays flat; only its level moves, by at most half a DC quantisation step (80
  // at quality 10, i.e. 80 / 8 / 2 grey levels).
  const auto flat = torch::full({1, 1, 16, 16}, 100.0 / 255);
  const auto j = shifted(flat, s);
  EXPECT_LT(j.std().item<double>(), 1e-6);
  EXPECT_LE(std::abs(j.mean().item<double>() - 100.0 / 255), 5.0 / 255 + 1e-6);
  // Noise: its standard deviation, the same for the same example, different across examples.
  s = {};
  s.noise = 0.05;
  const auto grey = torch::full({2, 1, 64, 64}, 0.5);
  auto a = shifted(grey, s);
  EXPECT_NEAR((a - grey).std().item<double>(), 0.05, 0.003);
  EXPECT_TRUE(a.equal(shifted(grey, s)));
  EXPECT_FALSE(a[0].equal(a[1]));
  s.seed = 7;
  EXPECT_FALSE(a.equal(shifted(grey, s)));
  // Elastic: moves pixels (a constant image's interior stays), deterministic.
  s = {};
  s.elastic = 8;
  auto e = shifted(x, s);
  EXPECT_GT((e - x).abs().mean().item<double>(), 0.01);
  EXPECT_TRUE(e.equal(shifted(x, s)));
  // Corruptions set their family's key at ImageNet-C's levels.
  s = {};
  s.corruption = "gaussian_noise";
  s.severity = 3;
  EXPECT_DOUBLE_EQ(tlab::effective(s).noise, 0.18);
  s.corruption = "jpeg_compression";
  s.severity = 5;
  EXPECT_EQ(tlab::effective(s).jpeg, 7);
  s.corruption = "contrast";
  s.severity = 1;
  EXPECT_DOUBLE_EQ(tlab::effective(s).contrast, 0.4);
}

// ColoredMNIST, for k classes: with p = 1 each image has its label's hue, with p = 0 never.
TEST(DomainShift, ColourFollowsTheLabelWithProbabilityP) {
  const int64_t n = 200, k = 4;
  const auto x = torch::ones({n, 1, 4, 4});
  const auto y = torch::arange(n, torch::kLong) % k;
  auto colour_of = [&](const torch::Tensor& out) {
    // The palette's hues for 4 classes: red, yellow-green... identify by the pixel's RGB.
    return out.select(3, 0).select(2, 0);  // (n, 3)
  };
  tlab::DomainShift s;
  s.color = 1;
  const auto on = colour_of(shifted(x, s, k, y));
  s.color = 0;
  const auto off = colour_of(shifted(x, s, k, y));
  for (int64_t i = 0; i < n; ++i) {
    // Examples with the same label share the colour under p = 1.
    EXPECT_TRUE(on[i].equal(on[i % k])) << i;
    EXPECT_FALSE(off[i].equal(on[i % k])) << i;
  }
  s.color = 0.75;
  int same = 0;
  const auto mixed = colour_of(shifted(x, s, k, y));
  for (int64_t i = 0; i < n; ++i) same += mixed[i].equal(on[i % k]);
  EXPECT_NEAR(same / static_cast<double>(n), 0.75, 0.1);
  EXPECT_EQ(shifted(x, s, k, y).size(1), 3);
}

tlab::DomainData ten_classes() {
  tlab::DomainData d;
  d.name = "d";
  d.num_classes = 10;
  d.input_shape = {1, 4, 4};
  d.train.y = torch::arange(40, torch::kLong) % 10;
  d.train.x = torch::arange(40, torch::kFloat).view({40, 1, 1, 1}).expand({40, 1, 4, 4}) / 40;
  d.test.y = torch::arange(20, torch::kLong) % 10;
  d.test.x = torch::rand({20, 1, 4, 4});
  return d;
}

TEST(DomainShift, ClassesKeepTheirExamplesRelabelled) {
  tlab::DomainShift s;
  s.classes = {9, 5, 7};
  const auto d = tlab::apply_shift(ten_classes(), s, "target");
  EXPECT_EQ(d.num_classes, 3);
  ASSERT_EQ(d.train.size(), 12);
  for (int64_t i = 0; i < 12; ++i) {
    const int64_t original =
        static_cast<int64_t>(std::lround(d.train.x[i][0][0][0].item<double>() * 40)) % 10;
    const int64_t expected = original == 9 ? 0 : original == 5 ? 1 : 2;
    EXPECT_EQ(d.train.y[i].item<int64_t>(), expected) << i;
  }
  EXPECT_EQ(d.test.size(), 6);

  s.classes = {3, 12};
  EXPECT_THAT(
      tlab::test::error_of<std::invalid_argument>(
          [&] { tlab::apply_shift(ten_classes(), s, "target"); }),
      HasSubstr("target.class_subset = [3, 12] names label 12, but the dataset's labels are 0 "
                "to 9"));
  auto few = ten_classes();
  few.test.y = torch::zeros({20}, torch::kLong);
  s.classes = {5, 7};
  EXPECT_THAT(
      tlab::test::error_of<std::invalid_argument>([&] { tlab::apply_shift(few, s, "source"); }),
      HasSubstr("source.class_subset = [5, 7] leaves the test split empty: none of its 20 "
                "examples has one of these labels"));
}

// rotate = [a, b]: the domain once per angle, pooled (several source domains).
TEST(DomainShift, RotationListsPoolOneDomainPerAngle) {
  tlab::DomainShift s;
  s.rotations = {0, 90};
  s.classes = {1, 2};
  const auto base = ten_classes();
  std::vector<std::pair<std::string, int64_t>> val_domains;
  auto with_val = base;
  with_val.val.y = torch::arange(30, torch::kLong) % 10;
  with_val.val.x = torch::rand({30, 1, 4, 4});
  tlab::apply_shift(with_val, s, "source", &val_domains);
  EXPECT_EQ(val_domains,
            (std::vector<std::pair<std::string, int64_t>>{{"rotate_0", 6}, {"rotate_90", 6}}));
  const auto d = tlab::apply_shift(base, s, "source");
  EXPECT_EQ(d.num_classes, 2);
  ASSERT_EQ(d.train.size(), 16);  // 8 examples of labels 1 and 2, once per angle
  EXPECT_EQ(d.test.size(), 8);
  tlab::DomainShift only;
  only.classes = {1, 2};
  const auto upright = tlab::apply_shift(base, only, "source");
  EXPECT_TRUE(d.train.x.slice(0, 0, 8).equal(upright.train.x));
  EXPECT_TRUE(
      d.train.x.slice(0, 8, 16).allclose(torch::rot90(upright.train.x, 1, {2, 3}), 0, 1e-5));
  EXPECT_TRUE(d.train.y.slice(0, 8, 16).equal(upright.train.y));
  EXPECT_EQ(d.name, "d rotated 0/90");
}

TEST(DomainShift, TransformsOnTheWrongDataAreNamed) {
  tlab::DomainShift s;
  s.rotate = 15;
  auto rows = ten_classes();
  rows.input_shape = {16};
  rows.train.x = torch::rand({40, 16});
  rows.test = {};
  EXPECT_THAT(
      tlab::test::error_of<std::invalid_argument>([&] { tlab::apply_shift(rows, s, "target"); }),
      HasSubstr("target.transform.rotate applies to images (C x H x W inputs), but the "
                "dataset gives examples of shape [16]; remove [target.transform]"));
  auto scaled = ten_classes();
  scaled.train.x = scaled.train.x * 255;
  EXPECT_THAT(
      tlab::test::error_of<std::invalid_argument>([&] { tlab::apply_shift(scaled, s, "target"); }),
      HasSubstr("target.transform.rotate expects pixel values in [0, 1], but the "
                "training inputs range over [0, 248.625]; use the dataset without normalisation"));
  s = {};
  s.color = 0.9;
  auto rgb = ten_classes();
  rgb.input_shape = {3, 4, 4};
  rgb.train.x = torch::rand({40, 3, 4, 4});
  rgb.test = {};
  EXPECT_THAT(
      tlab::test::error_of<std::invalid_argument>([&] { tlab::apply_shift(rgb, s, "source"); }),
      HasSubstr("source.transform.color colours grey images (1 channel -> 3), but the "
                "examples have 3 channels"));
  // A grey domain becomes a colour one.
  const auto coloured = tlab::apply_shift(ten_classes(), s, "source");
  EXPECT_EQ(coloured.input_shape, (std::vector<int64_t>{3, 4, 4}));
  EXPECT_EQ(coloured.train.x.size(1), 3);
}

// The dataset table's keys: validated and located, in the resolved config only when they change
// something (other runs keep their run keys).
class ShiftConfig : public ::testing::Test {
 protected:
  fs::path dir_ = tlab::test::temp_dir("shift_config");
  void TearDown() override { fs::remove_all(dir_); }
  tlab::PluginLoader loader_{{TLAB_TEST_PLUGIN_DIR}};
  const std::string base_ = R"toml(name = "shift"
device = "cpu"
[target]
plugin = "digits"
train_size = 40
val_size = 20
test_size = 20
[backbone]
plugin = "mlp"
hidden = [8]
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = 1
)toml";
  std::vector<tlab::RunSpec> load(const std::string& extra, std::vector<std::string> ov = {}) {
    return tlab::load_experiment(tlab::test::write_file(dir_ / "exp.toml", base_ + extra), ov,
                                 loader_);
  }
  std::string error(const std::string& extra, std::vector<std::string> ov = {}) {
    return tlab::test::error_of<tlab::ConfigError>([&] { load(extra, ov); });
  }
};

TEST_F(ShiftConfig, KeysAreValidatedAndRecorded) {
  const auto plain = load("").at(0);
  EXPECT_EQ(plain.config_toml.find("transform"), std::string::npos);
  EXPECT_EQ(plain.config_toml.find("class_subset"), std::string::npos);
  const auto noop = load("[target.transform]\nrotate = 0\nseed = 3\n").at(0);
  EXPECT_EQ(noop.config_toml, plain.config_toml);  // nothing changes: the same run
  const auto r = load(
                     "[target.transform]\nrotate = 30\ncorruption = \"gaussian_noise\"\n"
                     "severity = 2\n",
                     {"target.class_subset=[1, 2, 3]"})
                     .at(0);
  EXPECT_DOUBLE_EQ(r.target.shift.rotate, 30);
  EXPECT_EQ(r.target.shift.classes, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_THAT(r.config_toml, HasSubstr("class_subset = [1, 2, 3]"));
  EXPECT_THAT(
      r.config_toml,
      HasSubstr(
          "[target.transform]\nrotate = 30.0\ncorruption = \"gaussian_noise\"\nseverity = 2"));
  EXPECT_THAT(r.config_toml, HasSubstr("rotate = 30.0"));
  // Overrides reach the keys without '+', and sweep them (-m): one domain per angle.
  tlab::LoadOptions multirun;
  multirun.multirun = true;
  const auto swept = tlab::load_experiment(tlab::test::write_file(dir_ / "exp.toml", base_),
                                           {"target.transform.rotate=0,15,45"}, loader_, multirun);
  ASSERT_EQ(swept.size(), 3u);
  EXPECT_EQ(swept[0].config_toml, plain.config_toml);
  EXPECT_NE(swept[1].config_toml, swept[2].config_toml);
  // Leave one domain out in one line: each target angle with the others pooled as the source.
  const auto loo = tlab::load_experiment(
      tlab::test::write_file(dir_ / "exp.toml",
                             base_ + "[source]\nplugin = \"digits\"\n[source.transform]\n"
                                     "rotate = [15, 30]\n"),
      {"target.transform.rotate=zip(0, 15, 30)",
       "source.transform.rotate=zip([15, 30], [0, 30], [0, 15])"},
      loader_, multirun);
  ASSERT_EQ(loo.size(), 3u);
  EXPECT_EQ(loo[1].source->shift.rotations, (std::vector<double>{0, 30}));
  EXPECT_DOUBLE_EQ(loo[1].target.shift.rotate, 15);
  EXPECT_THAT(loo[1].config_toml, HasSubstr("rotate = [0.0, 30.0]"));
}

// Task transfer to new classes: `[target] disjoint_classes = true` makes a shared label an error.
TEST_F(ShiftConfig, DisjointClassesAreChecked) {
  const std::string source = "[source]\nplugin = \"digits\"\nclass_subset = [0, 1, 2]\n";
  const std::vector<std::string> disjoint = {"+target.disjoint_classes=true"};
  auto with = [&](std::vector<std::string> ov, const std::string& more) {
    ov.push_back(more);
    return ov;
  };
  const auto ok = load(source, with(disjoint, "+target.class_subset=[3, 4]")).at(0);
  EXPECT_TRUE(ok.target.disjoint_classes);
  // A check, not a setting: the same run as without it.
  EXPECT_EQ(ok.config_toml.find("disjoint"), std::string::npos);
  EXPECT_EQ(ok.config_toml, load(source, {"+target.class_subset=[3, 4]"}).at(0).config_toml);
  EXPECT_THAT(error(source, with(disjoint, "+target.class_subset=[2, 5, 1]")),
              HasSubstr("'target.class_subset' = [2, 5, 1] shares labels 2, 1 with "
                        "'source.class_subset' = [0, 1, 2], and target.disjoint_classes = true "
                        "says the target's classes are new; remove them from one of the lists"));
  EXPECT_THAT(error(source, with(disjoint, "+target.class_subset=[2]")),
              HasSubstr("shares label 2 with"));
  EXPECT_THAT(error(source, disjoint),
              HasSubstr("'target.disjoint_classes = true' needs the labels of both domains, but "
                        "[target] has no class_subset (it keeps every class of its dataset); give "
                        "it one, e.g. target.class_subset = [0, 1, 2, 3, 4]"));
  EXPECT_THAT(error("", disjoint),
              HasSubstr("'target.disjoint_classes = true' compares the target's classes with the "
                        "source's, but the experiment has no [source]"));
  EXPECT_THAT(error(source + "disjoint_classes = true\n"),
              HasSubstr("'source.disjoint_classes' belongs in [target]"));
  EXPECT_THAT(error(source, {"+target.disjoint_classes=3"}), HasSubstr("target.disjoint_classes"));
}

TEST_F(ShiftConfig, BadKeysAreLocatedWithTheFix) {
  EXPECT_THAT(error("[target.transform]\nrotat = 30\n"),
              HasSubstr("unknown key 'target.transform.rotat' in 'target.transform'; did you "
                        "mean 'rotate'?"));
  EXPECT_THAT(error("[target.transform]\nrotate = 400\n"),
              HasSubstr("'target.transform.rotate' = 400 is out of range; expected a value in "
                        "[-360, 360]"));
  EXPECT_THAT(error("[target.transform]\nseverity = 3\n"),
              HasSubstr("'target.transform.severity' grades a corruption; add corruption"));
  EXPECT_THAT(error("[target.transform]\ncorruption = \"gaussian_noise\"\n"),
              HasSubstr("needs its severity, 1 (mild) to 5"));
  EXPECT_THAT(error("[target.transform]\ncorruption = \"fog\"\nseverity = 1\n"),
              HasSubstr("gaussian_noise"));
  EXPECT_THAT(error("[target.transform]\ncorruption = \"contrast\"\nseverity = 1\n"
                    "contrast = 0.5\n"),
              HasSubstr("'target.transform.contrast' and corruption = \"contrast\" set the same "
                        "thing; give one"));
  EXPECT_THAT(error("", {"target.class_subset=[]"}),
              HasSubstr("'target.class_subset' must be a non-empty list of the labels to keep"));
  EXPECT_THAT(error("", {"target.class_subset=[1, 1]"}),
              HasSubstr("'target.class_subset' names label 1 twice"));
  EXPECT_THAT(error("[target.transform]\nrotate = []\n"),
              HasSubstr("'target.transform.rotate' is an empty list, which yields no domain"));
  EXPECT_THAT(error("[target.transform]\nrotate = [0, 15, 0]\n"),
              HasSubstr("'target.transform.rotate' lists 0 twice"));
  EXPECT_THAT(error("", {"target.class_subset=[-1]"}), HasSubstr("expected labels, integers >= 0"));
}

// Through tlab: a run on a domain made by classes and transforms (coloured digits of three
// classes); and the UCI digits tool, whose files the idx plugin reads.
TEST(DomainShiftRun, ARunTrainsOnTheDomainItsTableDeclares) {
  const fs::path dir = tlab::test::temp_dir("shift_run");
  const auto tool = tlab::test::shell(fmt::format(
      "/usr/bin/python3 '{}/tools/uci_digits.py' '{}/uci'", TLAB_SOURCE_DIR, dir.string()));
  ASSERT_EQ(tool.code, 0) << tool.out;
  EXPECT_THAT(tool.out, HasSubstr("1297 training and 500 test images, 28x28"));
  tlab::test::write_file(dir / "exp.toml", fmt::format(R"toml(name = "shifted"
device = "cpu"
[source]
plugin = "idx"
train_images = "{0}/uci/train-images-idx3-ubyte.gz"
train_labels = "{0}/uci/train-labels-idx1-ubyte.gz"
test_images = "{0}/uci/t10k-images-idx3-ubyte.gz"
test_labels = "{0}/uci/t10k-labels-idx1-ubyte.gz"
val_fraction = 0.2
class_subset = [1, 2, 3]
[source.transform]
color = 0.9
rotate = [0, 90]
[target]
plugin = "digits"
train_size = 60
val_size = 30
test_size = 30
class_subset = [1, 2, 3]
[target.transform]
color = 0.1
rotate = 30
[backbone]
plugin = "cnn"
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "finetune"
source_epochs = 1
[train]
epochs = 1
)toml",
                                                       dir.string()));
  const auto r = tlab::test::shell(
      fmt::format("cd '{0}' && '{1}/tlab' --plugin-path '{2}' run exp.toml --db '{0}/r.db'",
                  dir.string(), TLAB_TEST_BIN_DIR, TLAB_TEST_PLUGIN_DIR));
  ASSERT_EQ(r.code, 0) << r.out;
  const auto examples = tlab::test::shell(
      fmt::format("sqlite3 '{}/r.db' \"SELECT name, value FROM summaries WHERE name IN "
                  "('target/train/examples', 'source/data/load_seconds') ORDER BY name\"",
                  dir.string()));
  // 60 rendered digits of 10 classes: the 3 kept classes hold 18.
  EXPECT_THAT(examples.out, HasSubstr("target/train/examples|18"));
  const auto shape = tlab::test::shell(fmt::format(
      "cd '{0}' && '{1}/tlab' results show 1 --db '{0}/r.db'", dir.string(), TLAB_TEST_BIN_DIR));
  EXPECT_THAT(shape.out, HasSubstr("color = 0.1"));
  // The two pooled source domains are validated one by one after every source epoch; equal
  // sizes: their mean is the pooled accuracy.
  const auto per_domain = tlab::test::shell(fmt::format(
      "sqlite3 '{}/r.db' \"SELECT a.value, b.value, c.value, d.value FROM metrics a JOIN "
      "metrics b ON a.epoch = b.epoch JOIN metrics c ON c.epoch = a.epoch JOIN metrics d ON "
      "d.epoch = a.epoch WHERE a.name = 'source/val/rotate_0/acc' AND b.name = "
      "'source/val/rotate_90/acc' AND c.name = 'source/val/acc' AND c.step = a.step AND "
      "d.name = 'source/val/worst/acc' AND d.step = a.step\"",
      dir.string()));
  ASSERT_EQ(per_domain.code, 0) << per_domain.out;
  ASSERT_FALSE(per_domain.out.empty()) << "no per-domain validation logged";
  double a = 0, b = 0, pooled = 0, worst = 0;
  ASSERT_EQ(std::sscanf(per_domain.out.c_str(), "%lf|%lf|%lf|%lf", &a, &b, &pooled, &worst), 4)
      << per_domain.out;
  EXPECT_NEAR((a + b) / 2, pooled, 1e-6);
  EXPECT_EQ(worst, std::min(a, b));  // for --select-config source-val-worst
  fs::remove_all(dir);
}

}  // namespace
