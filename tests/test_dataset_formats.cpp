// The file-reading dataset plugins (idx, cifar, csv, imagefolder, text) and moons, loaded through
// the real plugin loader. Every test writes its own small files in the real format with an
// independent writer (bytes written here, /bin/gzip, Python's PIL for PNG and JPEG) and checks
// shapes, dtypes, exact values, label mapping, determinism and each bad file's message.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <torch/nn/functional/upsampling.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "plugins/loader.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"
#include "tlab/sdk/sdk.hpp"

using ::testing::AllOf;
using ::testing::HasSubstr;
using tlab::test::error_of;
using tlab::test::shell;
using tlab::test::temp_dir;
using tlab::test::write_file;
namespace fs = std::filesystem;

namespace {

tlab::PluginLoader& loader() {
  static tlab::PluginLoader l({TLAB_TEST_PLUGIN_DIR});
  return l;
}

// Keeps what a plugin logs.
struct Log : tlab::Logger {
  std::string text;
  void debug(const std::string& m) override { text += "debug: " + m + "\n"; }
  void info(const std::string& m) override { text += "info: " + m + "\n"; }
  void warn(const std::string& m) override { text += "warn: " + m + "\n"; }
};

tlab::DomainData load(const std::string& name, const tlab::Params& params, Log* log = nullptr,
                      const fs::path& run_dir = {}) {
  Log fallback;
  tlab::Context ctx;
  ctx.log = log ? log : &fallback;
  ctx.run_dir = run_dir;
  return loader().create<tlab::Dataset>(name, params)->load(ctx);
}

// The message of the error thrown when creating or loading (empty if none).
std::string load_error(const std::string& name, const tlab::Params& params,
                       const fs::path& run_dir = {}) {
  return error_of<std::exception>([&] { load(name, params, nullptr, run_dir); });
}

std::string s(const fs::path& p) { return p.string(); }

std::vector<int64_t> to_vector(const torch::Tensor& t) {
  torch::Tensor c = t.contiguous().to(torch::kLong);
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// Big-endian 32-bit integer, as IDX headers store them.
std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

class DatasetFormats : public ::testing::Test {
 protected:
  // The data must not depend on LibTorch's global generator (the run's).
  void SetUp() override { torch::manual_seed(11); }
};

// ---- moons ------------------------------------------------------------------------------------

tlab::Params moons(const std::string& domain, double noise, int64_t seed = 0) {
  return {{"domain", domain},        {"noise", noise},           {"train_size", int64_t{200}},
          {"val_size", int64_t{50}}, {"test_size", int64_t{60}}, {"seed", seed}};
}

// Distance of each point from the half circle of its class (make_moons' geometry).
torch::Tensor off_the_moons(const torch::Tensor& x, const torch::Tensor& y) {
  torch::Tensor px = x.select(1, 0).to(torch::kDouble), py = x.select(1, 1).to(torch::kDouble);
  torch::Tensor inner = y.to(torch::kBool);
  torch::Tensor cx = torch::where(inner, torch::ones_like(px), torch::zeros_like(px));
  torch::Tensor cy = torch::where(inner, torch::full_like(py, 0.5), torch::zeros_like(py));
  torch::Tensor r = ((px - cx).pow(2) + (py - cy).pow(2)).sqrt();
  // Upper half for class 0, lower half for class 1.
  torch::Tensor wrong_side = torch::where(inner, (py - 0.5).clamp_min(0), (-py).clamp_min(0));
  return (r - 1).abs() + wrong_side;
}

TEST_F(DatasetFormats, MoonsHaveShapesBalancedLabelsAndTheMoonsGeometry) {
  tlab::Params p = moons("source", 0.0);
  p["unlabeled_size"] = int64_t{30};
  tlab::DomainData d = load("moons", p);
  EXPECT_EQ(d.name, "source");
  EXPECT_EQ(d.num_classes, 2);
  EXPECT_EQ(d.input_shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(d.train.x.sizes(), torch::IntArrayRef({200, 2}));
  EXPECT_EQ(d.val.size(), 50);
  EXPECT_EQ(d.test.size(), 60);
  EXPECT_EQ(d.train.x.scalar_type(), torch::kFloat);
  EXPECT_EQ(d.train.y.scalar_type(), torch::kLong);
  EXPECT_EQ(d.train.y.sum().item<int64_t>(), 100);  // balanced
  ASSERT_TRUE(d.unlabeled.defined());
  EXPECT_EQ(d.unlabeled.sizes(), torch::IntArrayRef({30, 2}));
  EXPECT_LT(off_the_moons(d.train.x, d.train.y).max().item<double>(), 1e-5);
  // With noise the points leave the curves, by about the noise level.
  tlab::DomainData n = load("moons", moons("source", 0.1));
  const double spread = off_the_moons(n.train.x, n.train.y).mean().item<double>();
  EXPECT_GT(spread, 0.03);
  EXPECT_LT(spread, 0.2);
}

TEST_F(DatasetFormats, MoonsTargetIsTheSourceRotatedAboutTheCentre) {
  tlab::Params p = moons("target", 0.0);
  p["angle"] = 50.0;
  tlab::DomainData t = load("moons", p);
  EXPECT_EQ(t.name, "target");
  // Not on the source's moons, but on them once rotated back by -50 degrees about (0.5, 0.25).
  EXPECT_GT(off_the_moons(t.train.x, t.train.y).max().item<double>(), 0.1);
  const double a = -50.0 * 3.14159265358979323846 / 180.0;
  torch::Tensor dx = t.train.x.select(1, 0).to(torch::kDouble) - 0.5;
  torch::Tensor dy = t.train.x.select(1, 1).to(torch::kDouble) - 0.25;
  torch::Tensor back = torch::stack(
      {0.5 + std::cos(a) * dx - std::sin(a) * dy, 0.25 + std::sin(a) * dx + std::cos(a) * dy}, 1);
  EXPECT_LT(off_the_moons(back, t.train.y).max().item<double>(), 1e-5);
}

TEST_F(DatasetFormats, MoonsAreDeterministicAndSeedsDiffer) {
  tlab::DomainData a = load("moons", moons("target", 0.1, 3));
  torch::manual_seed(99);
  tlab::DomainData b = load("moons", moons("target", 0.1, 3));
  tlab::DomainData c = load("moons", moons("target", 0.1, 4));
  EXPECT_TRUE(torch::equal(a.train.x, b.train.x));
  EXPECT_TRUE(torch::equal(a.test.y, b.test.y));
  EXPECT_FALSE(torch::equal(a.train.x, c.train.x));
  EXPECT_THAT(load_error("moons", {{"domain", std::string("sideways")}}),
              HasSubstr("unknown domain 'sideways'; expected one of: source, target"));
}

// ---- idx --------------------------------------------------------------------------------------

// n images of 2 x 3 pixels (pixel k of image i = 7i + k) and their labels (i % 10).
struct IdxFiles {
  fs::path images, labels;
};

IdxFiles write_idx(const fs::path& dir, const std::string& stem, uint32_t n) {
  std::string im = be32(0x00000803) + be32(n) + be32(2) + be32(3);
  for (uint32_t i = 0; i < n; ++i)
    for (uint32_t k = 0; k < 6; ++k) im += static_cast<char>((7 * i + k) % 256);
  std::string lb = be32(0x00000801) + be32(n);
  for (uint32_t i = 0; i < n; ++i) lb += static_cast<char>(i % 10);
  return {write_file(dir / (stem + "-images-idx3-ubyte"), im),
          write_file(dir / (stem + "-labels-idx1-ubyte"), lb)};
}

tlab::Params idx_params(const IdxFiles& train, double val_fraction = 0.0, int64_t seed = 0) {
  return {{"train_images", s(train.images)},
          {"train_labels", s(train.labels)},
          {"val_fraction", val_fraction},
          {"seed", seed}};
}

TEST_F(DatasetFormats, IdxReadsPixelsAndLabelsPlainAndGzipped) {
  const fs::path dir = temp_dir("fmt_idx");
  const IdxFiles train = write_idx(dir, "train", 20), test = write_idx(dir, "t10k", 5);
  tlab::Params p = idx_params(train);
  p["test_images"] = s(test.images);
  p["test_labels"] = s(test.labels);
  tlab::DomainData d = load("idx", p);
  EXPECT_EQ(d.num_classes, 10);
  EXPECT_EQ(d.input_shape, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(d.train.x.sizes(), torch::IntArrayRef({20, 1, 2, 3}));
  EXPECT_EQ(d.train.x.scalar_type(), torch::kFloat);
  EXPECT_EQ(d.val.size(), 0);
  EXPECT_EQ(d.test.size(), 5);
  // Image 4, row 1, column 2 is pixel k = 5: byte 7*4 + 5 = 33.
  EXPECT_FLOAT_EQ(d.train.x[4][0][1][2].item<float>(), 33.0f / 255.0f);
  EXPECT_EQ(d.train.y[13].item<int64_t>(), 3);
  EXPECT_FLOAT_EQ(d.test.x[2][0][0][1].item<float>(), 15.0f / 255.0f);

  // The same files gzip-compressed (by /bin/gzip) read the same.
  ASSERT_EQ(shell("gzip -k -n '" + s(train.images) + "' '" + s(train.labels) + "'").code, 0);
  tlab::DomainData g = load("idx", idx_params({s(train.images) + ".gz", s(train.labels) + ".gz"}));
  EXPECT_TRUE(torch::equal(g.train.x, d.train.x));
  EXPECT_TRUE(torch::equal(g.train.y, d.train.y));
  fs::remove_all(dir);
}

TEST_F(DatasetFormats, IdxHoldsOutASeededValidationSplitAndCapsTrain) {
  const fs::path dir = temp_dir("fmt_idx_split");
  const IdxFiles train = write_idx(dir, "train", 40);
  tlab::DomainData a = load("idx", idx_params(train, 0.25, 1));
  tlab::DomainData b = load("idx", idx_params(train, 0.25, 1));
  tlab::DomainData c = load("idx", idx_params(train, 0.25, 2));
  EXPECT_EQ(a.train.size(), 30);
  EXPECT_EQ(a.val.size(), 10);
  EXPECT_TRUE(torch::equal(a.val.x, b.val.x));
  EXPECT_TRUE(torch::equal(a.train.x, b.train.x));
  EXPECT_FALSE(torch::equal(a.val.x, c.val.x));
  // Train and val together are every image, once: pixel 0 of image i is 7i mod 256.
  torch::Tensor first = torch::cat({a.train.x, a.val.x}).flatten(1).select(1, 0) * 255;
  auto ids = to_vector(first.round());
  std::sort(ids.begin(), ids.end());
  std::vector<int64_t> all;
  for (int64_t i = 0; i < 40; ++i) all.push_back((7 * i) % 256);
  std::sort(all.begin(), all.end());
  EXPECT_EQ(ids, all);
  // max_train keeps the same validation split.
  tlab::Params p = idx_params(train, 0.25, 1);
  p["max_train"] = int64_t{8};
  tlab::DomainData m = load("idx", p);
  EXPECT_EQ(m.train.size(), 8);
  EXPECT_TRUE(torch::equal(m.val.x, a.val.x));
  fs::remove_all(dir);
}

TEST_F(DatasetFormats, IdxBadFilesNameTheFileAndWhatIsWrong) {
  const fs::path dir = temp_dir("fmt_idx_bad");
  const IdxFiles good = write_idx(dir, "train", 10);
  const std::string im = tlab::test::read_file(good.images);
  const std::string lb = tlab::test::read_file(good.labels);

  EXPECT_THAT(
      load_error("idx", idx_params({dir / "nope-idx3", good.labels})),
      AllOf(HasSubstr("train_images file"), HasSubstr("nope-idx3"), HasSubstr("does not exist")));
  // Labels given as images: the magic says so.
  EXPECT_THAT(load_error("idx", idx_params({good.labels, good.labels})),
              AllOf(HasSubstr("train-labels-idx1-ubyte"), HasSubstr("magic number 0x00000801"),
                    HasSubstr("expected 0x00000803")));
  const fs::path cut = write_file(dir / "cut-idx3", im.substr(0, im.size() - 1));
  EXPECT_THAT(load_error("idx", idx_params({cut, good.labels})),
              AllOf(HasSubstr("cut-idx3"), HasSubstr("truncated"),
                    HasSubstr("expected 10*2*3 = 60 bytes after the 16-byte header, got 59")));
  const fs::path short_labels =
      write_file(dir / "nine-idx1", be32(0x00000801) + be32(9) + lb.substr(8, 9));
  EXPECT_THAT(
      load_error("idx", idx_params({good.images, short_labels})),
      AllOf(HasSubstr("holds 10 images"), HasSubstr("nine-idx1"), HasSubstr("holds 9 labels")));
  std::string bad_label = lb;
  bad_label[8 + 3] = 12;
  const fs::path big = write_file(dir / "big-idx1", bad_label);
  EXPECT_THAT(load_error("idx", idx_params({good.images, big})),
              AllOf(HasSubstr("big-idx1"), HasSubstr("label 12 at index 3"),
                    HasSubstr("num_classes = 10")));
  // A damaged gzip stream: the compressed file cut short.
  ASSERT_EQ(shell("gzip -k -n '" + s(good.images) + "'").code, 0);
  const std::string gz = tlab::test::read_file(s(good.images) + ".gz");
  const fs::path cut_gz = write_file(dir / "cut-idx3.gz", gz.substr(0, gz.size() - 12));
  EXPECT_THAT(load_error("idx", idx_params({cut_gz, good.labels})),
              AllOf(HasSubstr("cut-idx3.gz' is a damaged or truncated gzip file"),
                    HasSubstr("unexpected end of file")));
  fs::remove_all(dir);
}

// ---- cifar ------------------------------------------------------------------------------------

// Record r: label byte(s), then pixel k = (31r + k) mod 251.
std::string cifar_records(int r0, int n, bool hundred) {
  std::string b;
  for (int r = r0; r < r0 + n; ++r) {
    if (hundred) {
      b += static_cast<char>(r % 20);
      b += static_cast<char>((7 * r) % 100);
    } else {
      b += static_cast<char>(r % 10);
    }
    for (int k = 0; k < 3072; ++k) b += static_cast<char>((31 * r + k) % 251);
  }
  return b;
}

fs::path write_cifar10(const std::string& name) {
  const fs::path dir = temp_dir(name);
  for (int i = 1; i <= 5; ++i)
    write_file(dir / ("data_batch_" + std::to_string(i) + ".bin"),
               cifar_records(2 * (i - 1), 2, false));
  write_file(dir / "test_batch.bin", cifar_records(100, 3, false));
  return dir;
}

TEST_F(DatasetFormats, CifarTenReadsTheStandardFilesAndNormalises) {
  const fs::path dir = write_cifar10("fmt_cifar10");
  tlab::Params p{{"dir", s(dir)}, {"val_fraction", 0.0}, {"normalize", false}};
  tlab::DomainData d = load("cifar", p);
  EXPECT_EQ(d.num_classes, 10);
  EXPECT_EQ(d.input_shape, (std::vector<int64_t>{3, 32, 32}));
  EXPECT_EQ(d.train.x.sizes(), torch::IntArrayRef({10, 3, 32, 32}));
  EXPECT_EQ(d.test.size(), 3);
  EXPECT_EQ(to_vector(d.train.y), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  // Record 7, green (channel 1), row 2, column 5: k = 1024 + 2*32 + 5.
  const int k = 1024 + 69;
  EXPECT_FLOAT_EQ(d.train.x[7][1][2][5].item<float>(), ((31 * 7 + k) % 251) / 255.0f);
  EXPECT_FLOAT_EQ(d.test.x[1][0][0][0].item<float>(), ((31 * 101) % 251) / 255.0f);

  p["normalize"] = true;
  tlab::DomainData n = load("cifar", p);
  EXPECT_NEAR(n.train.x[7][1][2][5].item<float>(), (((31 * 7 + k) % 251) / 255.0 - 0.4822) / 0.2435,
              1e-5);
  p["mean"] = std::vector<double>{0.5, 0.5, 0.5};
  p["std"] = std::vector<double>{0.25, 0.5, 1.0};
  tlab::DomainData m = load("cifar", p);
  EXPECT_NEAR(m.train.x[7][1][2][5].item<float>(), (((31 * 7 + k) % 251) / 255.0 - 0.5) / 0.5,
              1e-5);

  tlab::Params v{{"dir", s(dir)}, {"val_fraction", 0.2}, {"seed", int64_t{1}}};
  tlab::DomainData v1 = load("cifar", v);
  v["seed"] = int64_t{2};
  tlab::DomainData v2 = load("cifar", v);
  EXPECT_EQ(v1.val.size(), 2);
  EXPECT_EQ(v1.train.size(), 8);
  EXPECT_FALSE(torch::equal(v1.val.y, v2.val.y));
  fs::remove_all(dir);
}

TEST_F(DatasetFormats, CifarHundredHasFineAndCoarseLabels) {
  const fs::path dir = temp_dir("fmt_cifar100");
  write_file(dir / "mine.bin", cifar_records(0, 6, true));
  write_file(dir / "check.bin", cifar_records(30, 2, true));
  tlab::Params p{{"variant", std::string("cifar100")},
                 {"dir", s(dir)},
                 {"train_files", std::vector<std::string>{"mine.bin"}},
                 {"test_file", std::string("check.bin")},
                 {"val_fraction", 0.0},
                 {"normalize", false}};
  tlab::DomainData fine = load("cifar", p);
  EXPECT_EQ(fine.num_classes, 100);
  EXPECT_EQ(to_vector(fine.train.y), (std::vector<int64_t>{0, 7, 14, 21, 28, 35}));
  EXPECT_EQ(to_vector(fine.test.y), (std::vector<int64_t>{10, 17}));
  EXPECT_FLOAT_EQ(fine.train.x[5][2][31][31].item<float>(), ((31 * 5 + 3071) % 251) / 255.0f);
  p["labels"] = std::string("coarse");
  tlab::DomainData coarse = load("cifar", p);
  EXPECT_EQ(coarse.num_classes, 20);
  EXPECT_EQ(to_vector(coarse.train.y), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_TRUE(torch::equal(coarse.train.x, fine.train.x));
  fs::remove_all(dir);
}

TEST_F(DatasetFormats, CifarBadFilesNameTheFileAndWhatIsWrong) {
  const fs::path dir = write_cifar10("fmt_cifar_bad");
  tlab::Params p{{"dir", s(dir)}};
  fs::remove(dir / "data_batch_3.bin");
  EXPECT_THAT(load_error("cifar", p),
              AllOf(HasSubstr("data_batch_3.bin"), HasSubstr("does not exist")));
  write_file(dir / "data_batch_3.bin", cifar_records(4, 2, false).substr(0, 3073 + 100));
  EXPECT_THAT(load_error("cifar", p),
              AllOf(HasSubstr("data_batch_3.bin"), HasSubstr("has 3173 bytes"),
                    HasSubstr("not a multiple of the 3073-byte CIFAR-10 record"),
                    HasSubstr("truncated after 1 records")));
  std::string bad = cifar_records(4, 2, false);
  bad[3073] = 12;  // the label of record 1
  write_file(dir / "data_batch_3.bin", bad);
  EXPECT_THAT(load_error("cifar", p), AllOf(HasSubstr("data_batch_3.bin"), HasSubstr("record 1"),
                                            HasSubstr("label 12 is out of range; expected < 10"),
                                            HasSubstr("variant = \"cifar100\"")));
  fs::remove_all(dir);
}

// ---- csv --------------------------------------------------------------------------------------

// 20 rows: a = i, b = i^2 / 10, c = 3 - i/2, label = i % 3.
std::string csv_rows(int from, int to) {
  std::string t = "a,b,label,c\n";
  for (int i = from; i < to; ++i)
    t += std::to_string(i) + "," + std::to_string(i * i / 10.0) + "," + std::to_string(i % 3) +
         "," + std::to_string(3 - i / 2.0) + "\n";
  return t;
}

TEST_F(DatasetFormats, CsvStandardisesWithTheTrainSplitOnly) {
  const fs::path dir = temp_dir("fmt_csv");
  const fs::path train = write_file(dir / "train.csv", csv_rows(0, 20));
  const fs::path test = write_file(dir / "test.csv", csv_rows(20, 25));
  tlab::Params p{{"path", s(train)}, {"test_path", s(test)}, {"val_fraction", 0.25}};
  Log log;
  tlab::DomainData d = load("csv", p, &log);
  EXPECT_EQ(d.name, "train");
  EXPECT_EQ(d.num_classes, 3);
  EXPECT_EQ(d.input_shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(d.train.size(), 15);
  EXPECT_EQ(d.val.size(), 5);
  EXPECT_EQ(d.test.size(), 5);
  EXPECT_EQ(d.train.x.scalar_type(), torch::kFloat);
  EXPECT_LT(d.train.x.mean(0).abs().max().item<float>(), 1e-5);
  EXPECT_LT((d.train.x.std(0, false) - 1).abs().max().item<float>(), 1e-5);
  EXPECT_GT(d.val.x.mean(0).abs().max().item<float>(), 1e-3);  // not fitted on val
  // The train split's statistics, recomputed from the raw values, scale the test file.
  tlab::Params raw = p;
  raw["standardize"] = false;
  tlab::DomainData r = load("csv", raw);
  torch::Tensor mean = r.train.x.to(torch::kDouble).mean(0);
  torch::Tensor sd = r.train.x.to(torch::kDouble).std(0, false);
  EXPECT_TRUE(torch::allclose(d.test.x.to(torch::kDouble), (r.test.x - mean) / sd, 1e-5, 1e-5));
  EXPECT_FLOAT_EQ(r.test.x[0][0].item<float>(), 20.0f);  // a of row 20
  EXPECT_EQ(to_vector(r.test.y), (std::vector<int64_t>{2, 0, 1, 2, 0}));
  EXPECT_THAT(log.text, HasSubstr("integer labels, 3 classes"));
  // Seeds choose the validation rows; equal options give equal tensors.
  tlab::DomainData again = load("csv", p);
  EXPECT_TRUE(torch::equal(again.train.x, d.train.x));
  p["seed"] = int64_t{5};
  EXPECT_FALSE(torch::equal(load("csv", p).val.x, d.val.x));
  fs::remove_all(dir);
}

TEST_F(DatasetFormats, CsvMapsStringLabelsInSortedOrderAndSelectsColumns) {
  const fs::path dir = temp_dir("fmt_csv_str");
  const fs::path f = write_file(dir / "animals.csv",
                                "weight;kind;legs;\"ears; count\"\n"
                                "4.5;dog;4;2\n"
                                "\n"
                                "0.1;\"big \"\"bird\"\"\";2;0\r\n"
                                "3;cat;4;2\n"
                                "0.2;\"big \"\"bird\"\"\";2;0\n");
  tlab::Params p{{"path", s(f)},
                 {"label", std::string("kind")},
                 {"delimiter", std::string(";")},
                 {"columns", std::vector<std::string>{"ears; count", "weight"}},
                 {"standardize", false},
                 {"val_fraction", 0.0}};
  Log log;
  tlab::DomainData d = load("csv", p, &log);
  EXPECT_EQ(d.num_classes, 3);
  EXPECT_EQ(d.input_shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(to_vector(d.train.y), (std::vector<int64_t>{2, 0, 1, 0}));  // big "bird", cat, dog
  EXPECT_FLOAT_EQ(d.train.x[0][0].item<float>(), 2.0f);
  EXPECT_FLOAT_EQ(d.train.x[0][1].item<float>(), 4.5f);
  EXPECT_FLOAT_EQ(d.train.x[1][1].item<float>(), 0.1f);
  EXPECT_THAT(log.text, HasSubstr("0='big \"bird\"' 1='cat' 2='dog'"));
  // Explicit classes fix the ids, e.g. to match another domain.
  p["classes"] = std::vector<std::string>{"dog", "cat", "big \"bird\"", "fish"};
  tlab::DomainData c = load("csv", p);
  EXPECT_EQ(c.num_classes, 4);
  EXPECT_EQ(to_vector(c.train.y), (std::vector<int64_t>{0, 2, 1, 2}));
  fs::remove_all(dir);
}

TEST_F(DatasetFormats, CsvBadFilesNameTheFileLineAndColumn) {
  const fs::path dir = temp_dir("fmt_csv_bad");
  auto error = [&](const std::string& name, const std::string& text, tlab::Params extra = {}) {
    tlab::Params p{{"path", s(write_file(dir / name, text))}};
    for (auto& [k, v] : extra) p[k] = v;
    return load_error("csv", p);
  };
  EXPECT_THAT(error("nan.csv", "a,b,label\n1,2,0\n3,x,1\n"),
              AllOf(HasSubstr("nan.csv"), HasSubstr("line 3, column 'b'"),
                    HasSubstr("'x' is not a number")));
  EXPECT_THAT(error("fields.csv", "a,b,label\n1,2,0\n\n3,1\n"),
              AllOf(HasSubstr("fields.csv"), HasSubstr("line 4"),
                    HasSubstr("2 fields; expected 3 as in the header")));
  EXPECT_THAT(error("nolabel.csv", "a,b,y\n1,2,0\n"),
              AllOf(HasSubstr("nolabel.csv"), HasSubstr("no label column 'label'"),
                    HasSubstr("'a', 'b', 'y'")));
  EXPECT_THAT(error("empty.csv", "\n  \n"),
              AllOf(HasSubstr("empty.csv"), HasSubstr("is empty"), HasSubstr("header")));
  EXPECT_THAT(error("header.csv", "a,label\n"),
              AllOf(HasSubstr("header.csv"), HasSubstr("no data rows")));
  EXPECT_THAT(error("range.csv", "a,label\n1,0\n2,1\n3,2\n", {{"num_classes", int64_t{2}}}),
              AllOf(HasSubstr("range.csv"), HasSubstr("line 4"),
                    HasSubstr("label '2' is out of range"), HasSubstr("num_classes = 2")));
  EXPECT_THAT(error("huge.csv", "a,label\n1,0\n2,5000000\n"),
              AllOf(HasSubstr("huge.csv"), HasSubstr("line 3"), HasSubstr("over 1048575"),
                    HasSubstr("set num_classes")));
  EXPECT_THAT(
      error("quote.csv", "a,label\n\"1,0\n"),
      AllOf(HasSubstr("quote.csv"), HasSubstr("line 2"), HasSubstr("quoted field is not closed")));
  EXPECT_THAT(load_error("csv", {{"path", s(dir / "missing.csv")}}),
              AllOf(HasSubstr("missing.csv"), HasSubstr("does not exist")));
  fs::remove_all(dir);
}

// ---- text -------------------------------------------------------------------------------------

const char* const kReviews =
    "pos\tGood movie, great fun!\n"
    "neg\tBad movie.\n"
    "pos\tGreat acting; good plot\n"
    "neg\tboring, BAD and long\n";

// Ids of the vocabulary built from kReviews: <pad> <unk>, then by frequency, ties in byte order.
// , bad good great movie (2 each), then ! . ; acting and boring fun long plot.
TEST_F(DatasetFormats, TextBuildsAVocabularyAndPadsTokenIds) {
  const fs::path dir = temp_dir("fmt_text");
  const fs::path train = write_file(dir / "reviews.tsv", kReviews);
  const fs::path test = write_file(dir / "more.tsv", "pos\tGood stuff\n");
  tlab::Params p{
      {"path", s(train)}, {"test_path", s(test)}, {"max_len", int64_t{8}}, {"val_fraction", 0.0}};
  Log log;
  tlab::DomainData d = load("text", p, &log);
  EXPECT_EQ(d.name, "reviews");
  EXPECT_EQ(d.num_classes, 2);
  EXPECT_EQ(d.input_shape, (std::vector<int64_t>{8}));
  EXPECT_EQ(d.train.x.scalar_type(), torch::kLong);  // token ids, not floats
  EXPECT_EQ(d.train.x.sizes(), torch::IntArrayRef({4, 8}));
  EXPECT_EQ(to_vector(d.train.y), (std::vector<int64_t>{1, 0, 1, 0}));  // neg = 0, pos = 1
  EXPECT_EQ(to_vector(d.train.x[0]), (std::vector<int64_t>{4, 6, 2, 5, 13, 7, 0, 0}));
  EXPECT_EQ(to_vector(d.train.x[3]), (std::vector<int64_t>{12, 2, 3, 11, 14, 0, 0, 0}));
  EXPECT_EQ(to_vector(d.test.x[0]), (std::vector<int64_t>{4, 1, 0, 0, 0, 0, 0, 0}));
  EXPECT_THAT(log.text, HasSubstr("built a vocabulary of 16 ids"));

  p["max_len"] = int64_t{3};
  p["min_freq"] = int64_t{2};
  tlab::DomainData cut = load("text", p);
  EXPECT_EQ(to_vector(cut.train.x[0]), (std::vector<int64_t>{4, 6, 2}));
  EXPECT_EQ(to_vector(cut.train.x[2]), (std::vector<int64_t>{5, 1, 1}));  // acting, ; are rare
  p["max_vocab"] = int64_t{4};
  EXPECT_EQ(to_vector(load("text", p).train.x[0]), (std::vector<int64_t>{1, 1, 2}));

  // Characters: "Bad " and "Grea" (max_len 4) share the id of 'a'; a space is a token.
  tlab::Params cp{{"path", s(train)},
                  {"tokenize", std::string("char")},
                  {"max_len", int64_t{4}},
                  {"val_fraction", 0.0},
                  {"lowercase", false}};
  tlab::DomainData chars = load("text", cp);
  const auto bad = to_vector(chars.train.x[1]), great = to_vector(chars.train.x[2]);
  EXPECT_EQ(std::set<int64_t>(bad.begin(), bad.end()).size(), 4u);
  EXPECT_EQ(bad[1], great[3]);
  EXPECT_NE(bad[0], to_vector(chars.train.x[3])[0]);  // 'B' and the 'b' of "boring"
  cp["lowercase"] = true;
  tlab::DomainData lower = load("text", cp);
  EXPECT_EQ(to_vector(lower.train.x[1])[0], to_vector(lower.train.x[3])[0]);
  fs::remove_all(dir);
}

// tokenize = "wordpiece": BERT's tokenizer (tlab/sdk/wordpiece.hpp) with a vocab.txt; ids are
// the file's lines, [CLS] pieces [SEP] padded with [PAD] = 0.
TEST_F(DatasetFormats, TextWordPieceEncodesAsBert) {
  const fs::path dir = temp_dir("fmt_wordpiece");
  const fs::path vocab = write_file(
      dir / "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nun\n##aff\n##able\nheroes\n!\ngood\n");
  const fs::path train = write_file(
      dir / "t.tsv", "pos\tUnaffable heroes!\nneg\tGood zebra\npos\tgood good good good\n");
  tlab::Params p{{"path", s(train)},
                 {"tokenize", std::string("wordpiece")},
                 {"vocab_path", s(vocab)},
                 {"max_len", int64_t{8}},
                 {"val_fraction", 0.0}};
  Log log;
  tlab::DomainData d = load("text", p, &log);
  EXPECT_EQ(to_vector(d.train.x[0]), (std::vector<int64_t>{2, 4, 5, 6, 7, 8, 3, 0}));
  EXPECT_EQ(to_vector(d.train.x[1]), (std::vector<int64_t>{2, 9, 1, 3, 0, 0, 0, 0}));
  p["max_len"] = int64_t{4};  // cut: [SEP] stays
  Log cut_log;
  EXPECT_EQ(to_vector(load("text", p, &cut_log).train.x[2]), (std::vector<int64_t>{2, 9, 9, 3}));
  EXPECT_THAT(cut_log.text, HasSubstr("train: 3 examples, 2 cut to max_len"));
  EXPECT_THAT(log.text, HasSubstr("WordPiece vocabulary of 10 ids"));
  EXPECT_THAT(log.text, HasSubstr("(uncased)"));
  // Bad input, named.
  tlab::Params no_vocab{{"path", s(train)}, {"tokenize", std::string("wordpiece")}};
  EXPECT_THAT(load_error("text", no_vocab),
              HasSubstr("tokenize = \"wordpiece\" needs the model's vocabulary; set vocab_path"));
  p["vocab_path"] = s(write_file(dir / "pad1.txt", "[UNK]\n[PAD]\n[CLS]\n[SEP]\n"));
  EXPECT_THAT(load_error("text", p),
              HasSubstr("has [PAD] at id 1; tokenize = \"wordpiece\" pads with id 0"));
  p["vocab_path"] = s(vocab);
  p["path"] = s(write_file(dir / "latin1.tsv", "pos\tok\nneg\tcaf\xe9\n"));
  EXPECT_THAT(load_error("text", p),
              HasSubstr("latin1.tsv' line 2: wordpiece: the text is not valid UTF-8"));
  fs::remove_all(dir);
}

// tokenize = "bpe": RoBERTa's byte-level BPE (tlab/sdk/bpe.hpp, checked against GPT-2's encoder
// in tests/sdk/test_bpe.cpp) with the small model tests/fixtures/bpe_reference.py trains: the
// dataset's rows are the reference's ids, padded with <pad> = 1, cut keeping </s>.
TEST_F(DatasetFormats, TextBpeEncodesAsRoberta) {
  if (tlab::test::shell("/usr/bin/python3 -c 'import regex'").code != 0)
    GTEST_SKIP() << "/usr/bin/python3 cannot import regex (python3-regex; tools/setup.sh "
                    "installs it)";
  const fs::path dir = temp_dir("fmt_bpe");
  const std::vector<std::string> texts = {"The writing is sharp!", "I'm sure they'll say it's fine",
                                          "caf\u00e9 \U0001F642 2024"};
  write_file(dir / "texts.json", nlohmann::json(texts).dump());
  const auto ref = tlab::test::shell("/usr/bin/python3 '" + std::string(TLAB_SOURCE_DIR) +
                                     "/tests/fixtures/bpe_reference.py' '" + dir.string() + "' '" +
                                     (dir / "texts.json").string() + "'");
  ASSERT_EQ(ref.code, 0) << ref.out;
  std::vector<std::vector<int64_t>> want;
  std::istringstream lines(ref.out);
  for (std::string line; std::getline(lines, line);)
    want.push_back(nlohmann::json::parse(line)["ids"].get<std::vector<int64_t>>());
  ASSERT_EQ(want.size(), 3u);
  std::string tsv;
  for (const auto& t : texts) tsv += "pos\t" + t + "\n";
  const fs::path train = write_file(dir / "t.tsv", tsv);
  tlab::Params p{{"path", s(train)},
                 {"tokenize", std::string("bpe")},
                 {"vocab_path", s(dir / "vocab.json")},
                 {"merges_path", s(dir / "merges.txt")},
                 {"max_len", int64_t{24}},
                 {"val_fraction", 0.0}};
  Log log;
  tlab::DomainData d = load("text", p, &log);
  for (int64_t r = 0; r < 3; ++r) {
    std::vector<int64_t> row = want[r];
    ASSERT_LE(row.size(), 24u);
    row.resize(24, 1);  // <pad>
    EXPECT_EQ(to_vector(d.train.x[r]), row) << texts[r];
  }
  EXPECT_THAT(log.text, HasSubstr("byte-level BPE vocabulary of 381 ids"));
  EXPECT_THAT(log.text, HasSubstr("(<pad> = 1)"));
  p["max_len"] = int64_t{4};  // cut: </s> stays
  EXPECT_EQ(to_vector(load("text", p).train.x[0]),
            (std::vector<int64_t>{0, want[0][1], want[0][2], 2}));
  // Bad input, named.
  tlab::Params no_merges{
      {"path", s(train)}, {"tokenize", std::string("bpe")}, {"vocab_path", s(dir / "vocab.json")}};
  EXPECT_THAT(load_error("text", no_merges),
              HasSubstr("tokenize = \"bpe\" needs the model's merges; set merges_path to its "
                        "merges.txt"));
  tlab::Params no_vocab{
      {"path", s(train)}, {"tokenize", std::string("bpe")}, {"merges_path", s(dir / "merges.txt")}};
  EXPECT_THAT(load_error("text", no_vocab),
              HasSubstr("tokenize = \"bpe\" needs the model's vocabulary; set vocab_path"));
  tlab::Params stray{{"path", s(train)}, {"merges_path", s(dir / "merges.txt")}};
  EXPECT_THAT(load_error("text", stray),
              HasSubstr("merges_path is set but tokenize = \"whitespace\""));
  p["vocab_path"] = s(write_file(dir / "gpt2.json", "{\"a\": 0, \"<|endoftext|>\": 1}"));
  EXPECT_THAT(load_error("text", p),
              HasSubstr("gpt2.json' has no <s>; tokenize = \"bpe\" encodes as RoBERTa"));
  p["vocab_path"] = s(dir / "vocab.json");
  p["path"] = s(write_file(dir / "latin1.tsv", "pos\tok\nneg\tcaf\xe9\n"));
  EXPECT_THAT(load_error("text", p),
              HasSubstr("latin1.tsv' line 2: bpe: the text is not valid UTF-8"));
  fs::remove_all(dir);
}

// tokenize = "sentencepiece": the ids of a SentencePiece model, as Python's sentencepiece (the
// same library, Debian's python3-sentencepiece) encodes the texts; the model is trained here.
// In this process LibTorch has loaded its protobuf: the model loads all the same.
TEST_F(DatasetFormats, TextSentencePieceEncodesAsTheModel) {
  if (tlab::test::shell("/usr/bin/python3 -c 'import sentencepiece'").code != 0)
    GTEST_SKIP() << "/usr/bin/python3 cannot import sentencepiece (python3-sentencepiece; "
                    "tools/setup.sh installs it)";
  const fs::path dir = temp_dir("fmt_spm");
  std::string corpus, tsv;
  const char* texts[] = {"the kettle leaks and the handle broke", "a sturdy pan, great value",
                         "never buy this flimsy blender", "sharp knife, works well",
                         "the motor is noisy but reliable"};
  for (int r = 0; r < 20; ++r)
    for (const char* t : texts) corpus += std::string(t) + "\n";
  for (int i = 0; i < 5; ++i) tsv += std::string(i % 2 ? "pos" : "neg") + "\t" + texts[i] + "\n";
  write_file(dir / "corpus.txt", corpus);
  const fs::path train = write_file(dir / "t.tsv", tsv);
  write_file(dir / "make.py",
             "import sentencepiece as spm\n"
             "spm.SentencePieceTrainer.train(input='corpus.txt', model_prefix='m', vocab_size=40,\n"
             "    pad_id=0, unk_id=1, bos_id=2, eos_id=3, control_symbols=['[CLS]', '[SEP]'],\n"
             "    minloglevel=2)\n"
             "spm.SentencePieceTrainer.train(input='corpus.txt', model_prefix='nopad',\n"
             "    vocab_size=40, minloglevel=2)\n"
             "p = spm.SentencePieceProcessor(model_file='m.model')\n"
             "for line in open('t.tsv'):\n"
             "    print(' '.join(map(str, p.encode(line.rstrip().split(chr(9))[1]))))\n"
             "for line in open('t.tsv'):\n"  // with BOS and EOS, as add_bos/add_eos give them
             "    print(' '.join(map(str, p.encode(line.rstrip().split(chr(9))[1],\n"
             "                                     add_bos=True, add_eos=True))))\n"
             "print(p.piece_to_id('[CLS]'), p.piece_to_id('[SEP]'))\n");
  const auto r = tlab::test::shell("cd '" + dir.string() + "' && /usr/bin/python3 make.py");
  ASSERT_EQ(r.code, 0) << r.out;
  tlab::Params p{{"path", s(train)},
                 {"tokenize", std::string("sentencepiece")},
                 {"spm_model", s(dir / "m.model")},
                 {"max_len", int64_t{24}},
                 {"val_fraction", 0.0}};
  Log log;
  tlab::DomainData d = load("text", p, &log);
  EXPECT_THAT(log.text, HasSubstr("SentencePiece model of 40 pieces"));
  std::istringstream lines(r.out);
  std::vector<std::vector<int64_t>> rows;
  for (std::string line; std::getline(lines, line);) {
    rows.emplace_back();
    std::istringstream ids(line);
    for (int64_t id; ids >> id;) rows.back().push_back(id);
    ASSERT_FALSE(rows.back().empty());
  }
  ASSERT_EQ(rows.size(), 11u);
  for (int64_t i = 0; i < 5; ++i) {
    std::vector<int64_t> want = rows[i];
    want.resize(24, 0);  // padded with id 0
    EXPECT_EQ(to_vector(d.train.x[i]), want) << texts[i];
  }
  // BOS and EOS pieces: Python's add_bos/add_eos; ALBERT's [CLS] ... [SEP] (control symbols).
  p["bos_token"] = std::string("<s>");
  p["eos_token"] = std::string("</s>");
  d = load("text", p);
  for (int64_t i = 0; i < 5; ++i) {
    std::vector<int64_t> want = rows[5 + i];
    if (want.size() > 24) {  // cut to 24: the EOS stays last
      const int64_t eos = want.back();
      want.resize(23);
      want.push_back(eos);
    }
    want.resize(24, 0);
    EXPECT_EQ(to_vector(d.train.x[i]), want) << texts[i];
  }
  const int64_t cls = rows[10][0], sep = rows[10][1];
  p["bos_token"] = std::string("[CLS]");
  p["eos_token"] = std::string("[SEP]");
  p["max_len"] = int64_t{4};  // cut: [SEP] stays
  EXPECT_EQ(to_vector(load("text", p).train.x[0]),
            (std::vector<int64_t>{cls, rows[0][0], rows[0][1], sep}));
  p["bos_token"] = std::string("[BOS]");
  EXPECT_THAT(load_error("text", p),
              HasSubstr("bos_token = '[BOS]' is not a piece of the SentencePiece model"));
  p["max_len"] = int64_t{2};
  EXPECT_THAT(load_error("text", p),
              HasSubstr("max_len 2 leaves no room for a piece beside bos_token and eos_token"));
  p.erase("bos_token");
  p.erase("eos_token");
  p["max_len"] = int64_t{24};
  tlab::Params wordpiece_eos{{"path", s(train)},
                             {"tokenize", std::string("wordpiece")},
                             {"vocab_path", s(train)},
                             {"eos_token", std::string("[SEP]")}};
  EXPECT_THAT(load_error("text", wordpiece_eos),
              HasSubstr("bos_token / eos_token add a SentencePiece model's pieces, but tokenize "
                        "= \"wordpiece\"; wordpiece adds [CLS] and [SEP] itself"));
  p["spm_model"] = s(dir / "nopad.model");
  EXPECT_THAT(load_error("text", p),
              HasSubstr("has pad id -1 (-1: none); the text dataset pads with id 0"));
  p["spm_model"] = s(write_file(dir / "bad.model", "not a model"));
  EXPECT_THAT(load_error("text", p), HasSubstr("cannot load the SentencePiece model"));
  tlab::Params missing{{"path", s(train)}, {"tokenize", std::string("sentencepiece")}};
  EXPECT_THAT(load_error("text", missing),
              HasSubstr("tokenize = \"sentencepiece\" needs the model; set spm_model"));
  fs::remove_all(dir);
}

TEST_F(DatasetFormats, TextDomainsShareTheVocabularyOfOneFile) {
  const fs::path dir = temp_dir("fmt_text_vocab");
  const fs::path run = dir / "run";
  fs::create_directories(run);
  const fs::path source = write_file(dir / "source.tsv", kReviews);
  const fs::path target = write_file(dir / "target.tsv", "neg\tFun? Not good.\npos\tplot!\n");
  // Both tables name the source's file: the same ids, whichever domain is loaded first. The
  // vocabulary takes every text of that file, whatever the source's own hold-out.
  tlab::Params tp{{"path", s(target)},
                  {"val_fraction", 0.0},
                  {"max_len", int64_t{5}},
                  {"vocab_from", s(source)}};
  tlab::DomainData t = load("text", tp);
  // fun ? not good . -> 13 <unk> <unk> 4 8: the source's ids, not ones built on the target.
  EXPECT_EQ(to_vector(t.train.x[0]), (std::vector<int64_t>{13, 1, 1, 4, 8}));
  EXPECT_EQ(to_vector(t.train.x[1]), (std::vector<int64_t>{15, 7, 0, 0, 0}));
  tlab::Params sp{{"path", s(source)},
                  {"val_fraction", 0.5},
                  {"vocab_from", s(source)},
                  {"vocab_out", std::string("v.txt")}};
  Log log;
  tlab::DomainData src = load("text", sp, &log, run);
  EXPECT_EQ(src.train.size(), 2);
  EXPECT_THAT(log.text, HasSubstr("built a vocabulary of 16 ids from the 4 texts of vocab_from"));
  // vocab_out saves it in the run folder, one token per line; vocab_path reads it back.
  const std::string written = tlab::test::read_file(run / "v.txt");
  EXPECT_EQ(written.substr(0, 29), "<pad>\n<unk>\n,\nbad\ngood\ngreat\n");
  tp.erase("vocab_from");
  tp["vocab_path"] = s(run / "v.txt");
  EXPECT_TRUE(torch::equal(load("text", tp).train.x, t.train.x));
  // A plain token list (no <pad>/<unk> lines) gives its tokens ids from 2.
  tp["vocab_path"] = s(write_file(dir / "list.txt", "good\nnot\n"));
  EXPECT_EQ(to_vector(load("text", tp).train.x[0]), (std::vector<int64_t>{1, 1, 3, 2, 1}));
  EXPECT_THAT(load_error("text", {{"path", s(source)}, {"vocab_out", std::string("../x.txt")}}),
              HasSubstr("leaves the run folder"));
  tp["vocab_from"] = s(source);
  EXPECT_THAT(load_error("text", tp), HasSubstr("both choose the vocabulary"));
  fs::remove_all(dir);
}

TEST_F(DatasetFormats, TextBadFilesNameTheFileAndLine) {
  const fs::path dir = temp_dir("fmt_text_bad");
  auto error = [&](const std::string& name, const std::string& text, tlab::Params extra = {}) {
    tlab::Params p{{"path", s(write_file(dir / name, text))}};
    for (auto& [k, v] : extra) p[k] = v;
    return load_error("text", p);
  };
  EXPECT_THAT(error("notab.tsv", "1\tfine\n0 no tab here\n"),
              AllOf(HasSubstr("notab.tsv"), HasSubstr("line 2"), HasSubstr("no tab"),
                    HasSubstr("label<TAB>text")));
  EXPECT_THAT(error("empty.tsv", "1\tfine\n\n0\t   \n"),
              AllOf(HasSubstr("empty.tsv"), HasSubstr("line 3"), HasSubstr("empty text")));
  EXPECT_THAT(
      error("range.tsv", "1\tfine\n5\tbad\n", {{"num_classes", int64_t{2}}}),
      AllOf(HasSubstr("range.tsv"), HasSubstr("line 2"), HasSubstr("label '5' is out of range")));
  const fs::path dup = write_file(dir / "dup.txt", "a\nb\na\n");
  EXPECT_THAT(error("ok.tsv", "1\tfine\n", {{"vocab_path", s(dup)}}),
              AllOf(HasSubstr("dup.txt"), HasSubstr("line 3"), HasSubstr("repeats")));
  fs::remove_all(dir);
}

// ---- imagefolder ------------------------------------------------------------------------------

// A folder removed when the test process ends.
struct TempTree {
  fs::path dir;
  ~TempTree() {
    std::error_code ec;
    if (!dir.empty()) fs::remove_all(dir, ec);
  }
};

// Writes the image trees once per process with Python's PIL (an encoder independent of the
// plugin's libpng/libjpeg decoding); empty when PIL is missing.
const fs::path& images() {
  static const TempTree tree{[] {
    if (shell("/usr/bin/python3 -c 'import PIL'").code != 0) return fs::path();
    const fs::path dir = temp_dir("fmt_images");
    const std::string script = R"PY(
import os, random, sys
from PIL import Image
root = sys.argv[1]
def folder(*parts):
    p = os.path.join(root, *parts); os.makedirs(p, exist_ok=True); return p
cat, dog = folder("train", "cat"), folder("train", "dog")
folder("train", "empty")
im = Image.new("RGB", (4, 3))
for y in range(3):
    for x in range(4):
        im.putpixel((x, y), (x * 60, y * 100, 255 - 10 * x - y))
im.putpixel((1, 2), (10, 200, 255))
im.save(os.path.join(cat, "a.png"))
Image.new("RGB", (4, 3), (50, 100, 150)).save(os.path.join(cat, "b.jpg"), quality=95)
g = Image.new("L", (4, 3))
for y in range(3):
    for x in range(4):
        g.putpixel((x, y), 20 * x + 70 * y)
g.save(os.path.join(dog, "c.png"))
Image.new("RGBA", (4, 3), (30, 60, 90, 0)).save(os.path.join(dog, "d.PNG"))
p = Image.new("P", (4, 3))
p.putpalette([0, 0, 0, 255, 128, 7] + [0] * 762)
p.putpixel((2, 1), 1)
p.save(os.path.join(dog, "e.png"))
open(os.path.join(dog, "notes.txt"), "w").write("not an image")
open(os.path.join(cat, "._a.png"), "wb").write(b"macOS resource fork, not an image")
open(os.path.join(root, "train", "README"), "w").write("not a class")
Image.new("RGB", (4, 3), (1, 2, 3)).save(os.path.join(folder("test", "cat"), "t.png"))
random.seed(1)
for k in range(3):
    d = folder("many", "c%d" % k)
    for i in range(8):
        w, h = random.randint(5, 20), random.randint(5, 20)
        m = Image.new("RGB", (w, h))
        m.putdata([tuple(random.randrange(256) for _ in range(3)) for _ in range(w * h)])
        m.save(os.path.join(d, "%d.%s" % (i, "png" if i % 2 else "jpg")))
open(os.path.join(folder("bad", "x"), "broken.png"), "wb").write(b"not an image at all")
data = open(os.path.join(cat, "a.png"), "rb").read()
open(os.path.join(folder("cut", "x"), "cut.png"), "wb").write(data[:45])
jpeg = open(os.path.join(cat, "b.jpg"), "rb").read()
open(os.path.join(folder("cutjpeg", "x"), "cut.jpg"), "wb").write(jpeg[:len(jpeg) // 2])
open(os.path.join(folder("none"), "lonely.png"), "wb").write(data)
)PY";
    write_file(dir / "make.py", script);
    const auto r = shell("/usr/bin/python3 '" + s(dir / "make.py") + "' '" + s(dir) + "'");
    if (r.code != 0) {
      ADD_FAILURE() << "writing the test images failed: " << r.out;
      return fs::path();
    }
    return dir;
  }()};
  return tree.dir;
}

#define REQUIRE_IMAGES()                                                                        \
  if (images().empty())                                                                         \
  GTEST_SKIP() << "/usr/bin/python3 cannot import PIL (Debian: python3-pil), which writes the " \
                  "test images"

tlab::Params folder(const std::string& sub, tlab::Params extra = {}) {
  tlab::Params p{{"path", s(images() / sub)}, {"val_fraction", 0.0}};
  for (auto& [k, v] : extra) p[k] = v;
  return p;
}

TEST_F(DatasetFormats, ImagefolderDecodesPngAndJpegToExactPixels) {
  REQUIRE_IMAGES();
  Log log;
  tlab::Params p = folder("train", {{"test_path", s(images() / "test")}});
  tlab::DomainData d = load("imagefolder", p, &log);
  EXPECT_EQ(d.name, "train");
  EXPECT_EQ(d.num_classes, 3);  // cat, dog, and the empty folder
  EXPECT_EQ(d.input_shape, (std::vector<int64_t>{3, 3, 4}));
  EXPECT_EQ(d.train.x.scalar_type(), torch::kFloat);
  // a.png, b.jpg (cat), c.png, d.PNG, e.png (dog); notes.txt, README and ._a.png are skipped.
  EXPECT_EQ(to_vector(d.train.y), (std::vector<int64_t>{0, 0, 1, 1, 1}));
  EXPECT_THAT(log.text, HasSubstr("skipped 3 file(s)"));
  EXPECT_THAT(log.text, HasSubstr("0='cat', 1='dog', 2='empty'"));
  const torch::Tensor& x = d.train.x;
  auto px = [&](int i, int c, int y, int xx) { return x[i][c][y][xx].item<float>(); };
  // RGB PNG: exact.
  EXPECT_FLOAT_EQ(px(0, 0, 2, 1), 10 / 255.0f);
  EXPECT_FLOAT_EQ(px(0, 1, 2, 1), 200 / 255.0f);
  EXPECT_FLOAT_EQ(px(0, 2, 2, 1), 255 / 255.0f);
  EXPECT_FLOAT_EQ(px(0, 0, 1, 3), 180 / 255.0f);
  // JPEG: lossy, close to the solid colour.
  EXPECT_NEAR(px(1, 0, 1, 1), 50 / 255.0f, 3 / 255.0f);
  EXPECT_NEAR(px(1, 2, 0, 3), 150 / 255.0f, 3 / 255.0f);
  // Grey PNG: the same value in the three channels.
  for (int c = 0; c < 3; ++c) EXPECT_FLOAT_EQ(px(2, c, 2, 3), (60 + 140) / 255.0f);
  // RGBA (fully transparent): the colour, alpha dropped.
  EXPECT_FLOAT_EQ(px(3, 1, 0, 0), 60 / 255.0f);
  // Palette PNG: the palette's colour.
  EXPECT_FLOAT_EQ(px(4, 1, 1, 2), 128 / 255.0f);
  EXPECT_FLOAT_EQ(px(4, 2, 1, 2), 7 / 255.0f);
  EXPECT_FLOAT_EQ(px(4, 0, 0, 0), 0.0f);
  ASSERT_EQ(d.test.size(), 1);
  EXPECT_EQ(d.test.y[0].item<int64_t>(), 0);
  EXPECT_FLOAT_EQ(d.test.x[0][2][1][1].item<float>(), 3 / 255.0f);

  // One channel: grey files as they are, colour by BT.601 luma.
  tlab::DomainData g = load("imagefolder", folder("train", {{"channels", int64_t{1}}}));
  EXPECT_EQ(g.input_shape, (std::vector<int64_t>{1, 3, 4}));
  EXPECT_NEAR(g.train.x[0][0][2][1].item<float>(), (0.299 * 10 + 0.587 * 200 + 0.114 * 255) / 255,
              1e-6);
  EXPECT_FLOAT_EQ(g.train.x[2][0][1][2].item<float>(), 110 / 255.0f);

  // mean/std normalise each channel.
  tlab::DomainData n =
      load("imagefolder", folder("train", {{"mean", std::vector<double>{0.5, 0.5, 0.5}},
                                           {"std", std::vector<double>{0.5, 0.25, 1}}}));
  EXPECT_NEAR(n.train.x[0][1][2][1].item<float>(), (200 / 255.0 - 0.5) / 0.25, 1e-5);
}

TEST_F(DatasetFormats, ImagefolderResizesAsBilinearInterpolate) {
  REQUIRE_IMAGES();
  namespace F = torch::nn::functional;
  const torch::Tensor orig = load("imagefolder", folder("train")).train.x;
  for (int64_t size : {6, 2, 3}) {
    SCOPED_TRACE(size);
    tlab::DomainData d = load("imagefolder", folder("train", {{"size", size}}));
    EXPECT_EQ(d.input_shape, (std::vector<int64_t>{3, size, size}));
    torch::Tensor ref = F::interpolate(orig, F::InterpolateFuncOptions()
                                                 .size(std::vector<int64_t>{size, size})
                                                 .mode(torch::kBilinear)
                                                 .align_corners(false));
    EXPECT_TRUE(torch::allclose(d.train.x, ref, 1e-5, 1e-6));
  }
}

TEST_F(DatasetFormats, ImagefolderIsTheSameWhateverTheWorkersAndAugmentsDeterministically) {
  REQUIRE_IMAGES();
  tlab::Params p = folder("many", {{"size", int64_t{8}}, {"val_fraction", 0.25}});
  p["workers"] = int64_t{1};
  tlab::DomainData one = load("imagefolder", p);
  p["workers"] = int64_t{4};
  tlab::DomainData four = load("imagefolder", p);
  EXPECT_EQ(one.train.size(), 18);
  EXPECT_EQ(one.val.size(), 6);
  EXPECT_TRUE(torch::equal(one.train.x, four.train.x));
  EXPECT_TRUE(torch::equal(one.val.x, four.val.x));
  EXPECT_TRUE(torch::equal(one.train.y, four.train.y));
  p["seed"] = int64_t{3};
  EXPECT_FALSE(torch::equal(load("imagefolder", p).val.x, one.val.x));
  p["seed"] = int64_t{0};

  // Without padding an augmented copy is the image or its mirror; val is never augmented.
  p["augment"] = true;
  p["augment_padding"] = int64_t{0};
  tlab::DomainData a = load("imagefolder", p);
  ASSERT_EQ(a.train.size(), 36);
  EXPECT_TRUE(torch::equal(a.train.x.slice(0, 0, 18), one.train.x));
  EXPECT_TRUE(torch::equal(a.train.y.slice(0, 18), one.train.y));
  EXPECT_TRUE(torch::equal(a.val.x, one.val.x));
  int flipped = 0;
  for (int64_t i = 0; i < 18; ++i) {
    const torch::Tensor copy = a.train.x[18 + i], img = one.train.x[i];
    const bool same = torch::equal(copy, img), mirror = torch::equal(copy, img.flip({2}));
    EXPECT_TRUE(same || mirror) << i;
    flipped += mirror && !same;
  }
  EXPECT_GT(flipped, 2);
  EXPECT_LT(flipped, 16);
  // With padding: shifted copies with zero borders, the same for equal options.
  p["augment_padding"] = int64_t{2};
  p["augment_copies"] = int64_t{2};
  tlab::DomainData b = load("imagefolder", p), c = load("imagefolder", p);
  EXPECT_EQ(b.train.size(), 54);
  EXPECT_TRUE(torch::equal(b.train.x, c.train.x));
  EXPECT_FALSE(torch::equal(b.train.x.slice(0, 18, 36), b.train.x.slice(0, 36, 54)));
}

TEST_F(DatasetFormats, ImagefolderBadFoldersAndFilesAreNamed) {
  REQUIRE_IMAGES();
  EXPECT_THAT(load_error("imagefolder", folder("none")),
              AllOf(HasSubstr("none"), HasSubstr("has no class folders")));
  EXPECT_THAT(load_error("imagefolder", folder("bad")),
              AllOf(HasSubstr("broken.png"), HasSubstr("cannot decode"),
                    HasSubstr("neither a PNG nor a JPEG")));
  EXPECT_THAT(load_error("imagefolder", folder("cut")),
              AllOf(HasSubstr("cut.png"), HasSubstr("cannot decode"), HasSubstr("libpng")));
  EXPECT_THAT(load_error("imagefolder", folder("cutjpeg")),
              AllOf(HasSubstr("cut.jpg"), HasSubstr("cannot decode"),
                    HasSubstr("libjpeg: Premature end of JPEG file")));
  EXPECT_THAT(load_error("imagefolder", folder("many")),
              AllOf(HasSubstr("pixels but"), HasSubstr("expected images of one size")));
  EXPECT_THAT(load_error("imagefolder", folder("missing")), HasSubstr("does not exist"));
  EXPECT_THAT(load_error("imagefolder", folder("train", {{"test_path", s(images() / "many")}})),
              AllOf(HasSubstr("class folder 'c0'"), HasSubstr("the training folder lacks")));
  EXPECT_THAT(load_error("imagefolder", folder("train", {{"mean", std::vector<double>{0.5}},
                                                         {"std", std::vector<double>{0.5}}})),
              HasSubstr("expected 3, one per channel"));
}

// ---- schemas ----------------------------------------------------------------------------------

TEST_F(DatasetFormats, EveryPluginDescribesItsOptions) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> keys{
      {"moons", {"domain", "angle", "noise", "unlabeled_size", "seed"}},
      {"idx", {"train_images", "test_labels", "val_fraction", "max_train", "num_classes"}},
      {"cifar", {"variant", "dir", "train_files", "labels", "normalize", "mean", "std"}},
      {"csv", {"path", "label", "columns", "delimiter", "standardize", "classes"}},
      {"imagefolder", {"path", "size", "channels", "augment", "workers", "mean", "std"}},
      {"text", {"path", "tokenize", "max_len", "max_vocab", "min_freq", "vocab_path"}}};
  for (const auto& [name, ks] : keys) {
    const tlab::Schema& schema = loader().get(tlab::Kind::Dataset, name).descriptor->schema;
    for (const auto& k : ks) EXPECT_NE(schema.find(k), nullptr) << name << "." << k;
  }
  const tlab::Schema& moons = loader().get(tlab::Kind::Dataset, "moons").descriptor->schema;
  EXPECT_EQ(std::get<double>(moons.find("angle")->default_value), 30.0);
  const tlab::Schema& text = loader().get(tlab::Kind::Dataset, "text").descriptor->schema;
  EXPECT_EQ(text.find("tokenize")->choices,
            (std::vector<std::string>{"whitespace", "char", "wordpiece", "sentencepiece", "bpe"}));
}

}  // namespace

// ---- unlabeled_path: inputs without labels, preprocessed as the training data -----------------

// Each file format's unlabelled inputs equal the same examples read as a labelled test file
// (so tlab predict --input gives what the model would give them as test data).
TEST_F(DatasetFormats, UnlabelledInputsArePreprocessedAsTheTestSplit) {
  const fs::path dir = temp_dir("fmt_unlabeled");
  // csv: feature columns only (a label column would be ignored), standardised.
  {
    const fs::path train = write_file(dir / "train.csv", csv_rows(0, 20));
    const fs::path test = write_file(dir / "test.csv", csv_rows(20, 25));
    std::string rows = "c,b,a\n";  // other column order: columns are found by name
    for (int i = 20; i < 25; ++i)
      rows += std::to_string(3 - i / 2.0) + "," + std::to_string(i * i / 10.0) + "," +
              std::to_string(i) + "\n";
    const fs::path unlabeled = write_file(dir / "rows.csv", rows);
    tlab::DomainData d =
        load("csv", {{"path", s(train)}, {"test_path", s(test)}, {"unlabeled_path", s(unlabeled)}});
    ASSERT_TRUE(d.unlabeled.defined());
    EXPECT_TRUE(torch::allclose(d.unlabeled, d.test.x));
    tlab::DomainData again = load("csv", {{"path", s(train)}, {"unlabeled_path", s(test)}});
    EXPECT_TRUE(torch::allclose(again.unlabeled, d.test.x));  // a label column is ignored
    EXPECT_THAT(load_error("csv", {{"path", s(train)}, {"unlabeled_path", s(dir / "no.csv")}}),
                HasSubstr("no.csv"));
  }
  // idx: an image file alone.
  {
    const IdxFiles train = write_idx(dir, "train", 20), test = write_idx(dir, "t10k", 5);
    tlab::Params p = idx_params(train);
    p["test_images"] = s(test.images);
    p["test_labels"] = s(test.labels);
    p["unlabeled_path"] = s(test.images);
    tlab::DomainData d = load("idx", p);
    ASSERT_TRUE(d.unlabeled.defined());
    EXPECT_TRUE(torch::equal(d.unlabeled, d.test.x));
    p["unlabeled_path"] = s(test.labels);
    EXPECT_THAT(load_error("idx", p), HasSubstr("unlabeled_path file"));
  }
  // text: one text per line, encoded with the training vocabulary.
  {
    const fs::path train = write_file(dir / "reviews.tsv", kReviews);
    const fs::path test = write_file(dir / "more.tsv", "pos\tGood stuff\nneg\tbad, BAD\n");
    const fs::path lines = write_file(dir / "lines.txt", "Good stuff\nbad, BAD\n");
    tlab::DomainData d = load("text", {{"path", s(train)},
                                       {"test_path", s(test)},
                                       {"unlabeled_path", s(lines)},
                                       {"val_fraction", 0.0}});
    ASSERT_TRUE(d.unlabeled.defined());
    EXPECT_EQ(d.unlabeled.scalar_type(), torch::kLong);
    EXPECT_TRUE(torch::equal(d.unlabeled, d.test.x));
  }
  fs::remove_all(dir);
  // imagefolder: every image under a folder, in sorted path order, normalised.
  if (images().empty()) return;
  tlab::Params p = folder("train", {{"test_path", s(images() / "test")},
                                    {"unlabeled_path", s(images() / "test")},
                                    {"mean", std::vector<double>{0.5, 0.5, 0.5}},
                                    {"std", std::vector<double>{0.25, 0.25, 0.25}}});
  tlab::DomainData d = load("imagefolder", p);
  ASSERT_TRUE(d.unlabeled.defined());
  EXPECT_TRUE(torch::allclose(d.unlabeled, d.test.x));
  p["unlabeled_path"] = s(images() / "many");  // other sizes, no `size`: refused, naming the file
  EXPECT_THAT(load_error("imagefolder", p), HasSubstr("expected 3 x 4 as the training images"));
}

// ---- hostile paths (issue 27) ------------------------------------------------------------------

// Devices, FIFOs and huge sparse files were read without bound (4 GB in 23 s from /dev/zero) or
// hung (a FIFO): each is refused at once, naming the file and what it is.
TEST_F(DatasetFormats, DevicesFifosAndHugeSparseFilesAreRefusedAtOnce) {
  const fs::path dir = temp_dir("fmt_hostile");
  EXPECT_THAT(load_error("csv", {{"path", std::string("/dev/zero")}}),
              HasSubstr("csv: file '/dev/zero' is a character device; expected a regular file"));
  const IdxFiles good = write_idx(dir, "good", 4);
  EXPECT_THAT(load_error("idx", idx_params({"/dev/urandom", good.labels})),
              HasSubstr("'/dev/urandom' is a character device"));
  const fs::path fifo = dir / "fifo";
  ASSERT_EQ(shell("mkfifo '" + s(fifo) + "'").code, 0);
  EXPECT_THAT(load_error("text", {{"path", s(fifo)}}), HasSubstr("is a FIFO (named pipe)"));
  // 16 GiB of holes: refused after 1 MiB (csv) or 64 bytes (idx); reading it all would take
  // minutes and 16 GB.
  const fs::path sparse = dir / "sparse";
  { std::ofstream(sparse, std::ios::binary); }
  fs::resize_file(sparse, std::uintmax_t{16} << 30);
  EXPECT_THAT(load_error("csv", {{"path", s(sparse)}}),
              HasSubstr("is not a text file: byte 0 is NUL; expected text"));
  EXPECT_THAT(load_error("idx", idx_params({s(sparse), good.labels})),
              HasSubstr("has magic number 0x00000000; expected 0x00000803"));
  fs::remove_all(dir);
}
