// Streamed splits: the prefetch queue (order, bound, errors, early stop) and an image folder too
// large to keep resident, trained through the real runner exactly as its resident twin.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "run/data_prep.hpp"
#include "run/prefetch.hpp"
#include "run/runner.hpp"
#include "store/store.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"

using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

// Example i is the scalar i (shape {1}); get() sleeps a little, varying, and counts calls.
class Counting : public tlab::ExampleSource {
 public:
  explicit Counting(int64_t fail_at = -1) : fail_at_(fail_at) {}
  torch::Tensor get(int64_t index, uint64_t seed) const override {
    ++calls;
    std::this_thread::sleep_for(std::chrono::microseconds(200 * ((index * 7) % 5)));
    if (index == fail_at_) throw std::runtime_error(fmt::format("cannot read example {}", index));
    return torch::full({1}, static_cast<float>(index + 1000 * static_cast<int64_t>(seed)));
  }
  int workers() const override { return 4; }
  mutable std::atomic<int64_t> calls{0};

 private:
  int64_t fail_at_;
};

std::vector<std::vector<int64_t>> batches_of(int64_t n, int64_t bs) {
  return tlab::index_batches(torch::arange(n, torch::kLong), bs);
}

}  // namespace

TEST(Prefetch, BatchesComeInOrderWhateverTheWorkers) {
  auto order = torch::randperm(50, torch::kLong);
  auto expected = tlab::index_batches(order, 8);
  ASSERT_EQ(expected.size(), 7u);  // 6 x 8 + 2
  for (int workers : {1, 3, 8}) {
    auto src = std::make_shared<Counting>();
    tlab::Prefetcher p(src, expected, 2, workers, 3);
    for (const auto& want : expected) {
      auto x = p.next();
      ASSERT_EQ(x.size(0), static_cast<int64_t>(want.size()));
      for (std::size_t i = 0; i < want.size(); ++i)
        EXPECT_EQ(x[i].item<float>(), static_cast<float>(want[i] + 2000)) << workers;
    }
    EXPECT_FALSE(p.next().defined());  // past the end
    EXPECT_EQ(src->calls, 50);
  }
}

TEST(Prefetch, WorkersStayAtMostCapacityBatchesAhead) {
  auto src = std::make_shared<Counting>();
  tlab::Prefetcher p(src, batches_of(100, 5), 0, 4, 3);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(src->calls, 15);  // 3 batches of 5, then the workers wait
  p.next();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(src->calls, 20);  // one taken, one more made
}

TEST(Prefetch, AWorkersErrorReachesTheConsumerAndStopsTheQueue) {
  auto src = std::make_shared<Counting>(/*fail_at=*/12);
  tlab::Prefetcher p(src, batches_of(40, 4), 0, 2, 2);
  auto msg = tlab::test::error_of<std::runtime_error>([&] {
    for (int i = 0; i < 10; ++i) p.next();
  });
  EXPECT_EQ(msg, "cannot read example 12");
  EXPECT_LT(src->calls, 40);
}

TEST(Prefetch, StoppingEarlyJoinsTheWorkers) {
  auto src = std::make_shared<Counting>();
  const auto t0 = std::chrono::steady_clock::now();
  {
    tlab::Prefetcher p(src, batches_of(10000, 10), 0, 4, 4);
    p.next();
  }  // destroyed with 999 batches left: returns at once
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
  EXPECT_LT(src->calls, 100);
}

TEST(Prefetch, TakeShotsKeepsAStreamedSplitsChosenExamplesResident) {
  tlab::Split s;
  s.y = torch::tensor({0, 1, 0, 1, 0, 1}, torch::kLong);
  s.stream = std::make_shared<Counting>();
  auto k = tlab::take_shots(s, 2, 2, 5);
  ASSERT_FALSE(k.streamed());
  ASSERT_EQ(k.size(), 4);
  for (int64_t i = 0; i < 4; ++i)  // example i is i: its label is i % 2
    EXPECT_EQ(static_cast<int64_t>(k.x[i].item<float>()) % 2, k.y[i].item<int64_t>());
}

// train.device_data_mb: what fits moves to the device (unlabelled inputs first, then train,
// val, test); a split beyond the budget stays in host memory as a stream over its own rows, and
// the prefetch queue gives the batches index_select gives. On the CPU the budget is not used
// unless asked (apply_budget), which is how this runs without a GPU.
TEST(Prefetch, SplitsBeyondTheDeviceBudgetStayOnTheHostAsStreams) {
  auto split = [](int64_t n, int64_t offset) {
    return tlab::Split{torch::arange(offset, offset + n * 16, torch::kDouble).reshape({n, 1, 4, 4}),
                       torch::arange(n, torch::kLong) % 3};
  };
  tlab::DomainData d;
  d.num_classes = 3;
  d.input_shape = {1, 4, 4};
  d.train = split(64, 0);
  d.val = split(16, 5000);
  d.test = split(32, 9000);
  d.unlabeled = torch::ones({8, 1, 4, 4});
  // float inputs: 64 bytes an example, 8 bytes a label.
  const int64_t unlabeled = 8 * 64, train = 64 * 72, val = 16 * 72;
  tlab::DeviceBudget budget{unlabeled + train + val + 10};  // test (32 x 72) does not fit
  std::vector<std::string> on_host;
  auto placed = tlab::to_device(d, torch::kCPU, budget, &on_host, /*apply_budget=*/true);
  EXPECT_THAT(on_host, ::testing::ElementsAre("test"));
  EXPECT_EQ(budget.bytes_left, 10);
  ASSERT_FALSE(placed.train.streamed());
  EXPECT_EQ(placed.train.x.scalar_type(), torch::kFloat);
  ASSERT_FALSE(placed.val.streamed());
  ASSERT_TRUE(placed.test.streamed());
  EXPECT_FALSE(placed.test.x.defined());
  EXPECT_EQ(placed.test.size(), 32);
  EXPECT_TRUE(placed.test.y.equal(d.test.y));
  // The stream's batches, in an epoch's order, are the rows index_select takes.
  auto order = torch::randperm(32, torch::kLong);
  tlab::Prefetcher pf(placed.test.stream, tlab::index_batches(order, 10), 0, 2, 2);
  for (int64_t b = 0; b < 4; ++b) {
    auto idx = order.slice(0, b * 10, std::min<int64_t>(32, (b + 1) * 10));
    auto want = d.test.x.index_select(0, idx).to(torch::kFloat);
    auto got = pf.next();
    ASSERT_EQ(got.scalar_type(), torch::kFloat);
    EXPECT_TRUE(got.equal(want)) << "batch " << b;
  }
  EXPECT_FALSE(pf.next().defined());

  // Nothing fits: every labelled split streams; the unlabelled inputs still move.
  tlab::DeviceBudget none{0};
  on_host.clear();
  auto host = tlab::to_device(d, torch::kCPU, none, &on_host, true);
  EXPECT_THAT(on_host, ::testing::ElementsAre("train", "val", "test"));
  EXPECT_TRUE(host.unlabeled.defined());
  EXPECT_EQ(none.bytes_left, -unlabeled);
  // Token ids stay integers on the host too.
  tlab::DomainData tokens;
  tokens.train = {torch::randint(0, 50, {6, 5}, torch::kLong), torch::zeros({6}, torch::kLong)};
  on_host.clear();
  auto t = tlab::to_device(tokens, torch::kCPU, none, &on_host, true);
  ASSERT_TRUE(t.train.streamed());
  EXPECT_EQ(t.train.stream->get(2, 0).scalar_type(), torch::kLong);
  EXPECT_TRUE(t.train.stream->get(2, 0).equal(tokens.train.x[2]));
  // Without apply_budget, a CPU run keeps everything resident whatever the budget.
  tlab::DeviceBudget zero{0};
  on_host.clear();
  auto cpu = tlab::to_device(d, torch::kCPU, zero, &on_host);
  EXPECT_TRUE(on_host.empty());
  EXPECT_FALSE(cpu.test.streamed());
  EXPECT_EQ(zero.bytes_left, 0);
}

// ---- an image folder streamed through the runner ----------------------------------------------

class Streaming : public ::testing::Test {
 protected:
  void SetUp() override {
    if (tlab::test::shell("/usr/bin/python3 -c 'import PIL'").code != 0)
      GTEST_SKIP() << "/usr/bin/python3 cannot import PIL (Debian: python3-pil, installed with "
                      "python3-torchvision by tools/setup.sh), which writes the test images";
    // Two classes of 10x10 grey images: bright squares (1) and dark ones (0), with noise.
    const std::string script = fmt::format(R"(import os, random
from PIL import Image
random.seed(4)
for c in (0, 1):
    os.makedirs("{dir}/imgs/%d" % c, exist_ok=True)
    for i in range(30):
        im = Image.new("L", (10, 10))
        im.putdata([min(255, max(0, (170 if c else 80) + random.randint(-60, 60))) for _ in range(100)])
        im.save("{dir}/imgs/%d/%02d.png" % (c, i))
)",
                                           fmt::arg("dir", dir_.string()));
    tlab::test::write_file(dir_ / "make.py", script);
    auto r = tlab::test::shell("/usr/bin/python3 " + (dir_ / "make.py").string());
    ASSERT_EQ(r.code, 0) << r.out;
  }
  void TearDown() override { fs::remove_all(dir_); }

  tlab::RunOutcome run(tlab::Store& store, const std::string& extra) {
    const std::string exp = fmt::format(R"(name = "stream"
seed = 2
device = "cpu"
[target]
plugin = "imagefolder"
path = "{dir}/imgs"
channels = 1
val_fraction = 0.2
test_fraction = 0.2
workers = 3
{extra}
[backbone]
plugin = "cnn"
channels = [4]
feature_dim = 8
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = 3
batch_size = 8
)",
                                        fmt::arg("dir", dir_.string()), fmt::arg("extra", extra));
    auto spec = tlab::load_experiment(tlab::test::write_file(dir_ / "e.toml", exp), {}, loader_)[0];
    tlab::RunOptions o;
    o.results_dir = dir_;
    return tlab::execute_run(spec, loader_, store, o);
  }

  fs::path dir_ = tlab::test::temp_dir("streaming");
  tlab::PluginLoader loader_{{TLAB_TEST_PLUGIN_DIR}};
};

TEST_F(Streaming, AStreamedFolderTrainsExactlyLikeTheResidentOne) {
  tlab::Store store(dir_ / "results.db");
  auto resident = run(store, "");
  auto streamed = run(store, "resident_max_mb = 0");
  ASSERT_EQ(resident.status, tlab::RunStatus::kFinished) << resident.reason;
  ASSERT_EQ(streamed.status, tlab::RunStatus::kFinished) << streamed.reason;
  EXPECT_EQ(resident.summary.count("target/train/data_wait_seconds"), 0u);
  EXPECT_GE(streamed.summary.at("target/train/data_wait_seconds"), 0.0);
  // Same examples in the same order: the same losses, step for step, and the same accuracy.
  auto a = store.metrics(resident.id, "target/train/loss"),
       b = store.metrics(streamed.id, "target/train/loss");
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i].value, b[i].value, 1e-6) << i;
  EXPECT_EQ(resident.summary.at("target/test/acc"), streamed.summary.at("target/test/acc"));
  EXPECT_EQ(resident.summary.at("target/val/acc"), streamed.summary.at("target/val/acc"));
}

TEST_F(Streaming, StreamedAugmentationIsFreshEachEpochAndDeterministic) {
  tlab::Context ctx;
  tlab::Params p{{"path", (dir_ / "imgs").string()},
                 {"channels", int64_t{1}},
                 {"augment", true},
                 {"augment_padding", int64_t{3}},
                 {"resident_max_mb", int64_t{0}}};
  auto d = loader_.create<tlab::Dataset>("imagefolder", p)->load(ctx);
  ASSERT_TRUE(d.train.streamed());
  ASSERT_TRUE(d.val.streamed());
  EXPECT_EQ(d.input_shape, (std::vector<int64_t>{1, 10, 10}));
  auto& s = *d.train.stream;
  EXPECT_TRUE(torch::equal(s.get(3, 11), s.get(3, 11)));
  int differ = 0;
  for (int64_t i = 0; i < 10; ++i) differ += !torch::equal(s.get(i, 11), s.get(i, 12));
  EXPECT_GE(differ, 8);  // a new crop and flip per epoch seed (rarely the same by chance)
  // Seed 0 (evaluation) is the plain image; validation never augments.
  p["resident_max_mb"] = int64_t{1024};
  p["augment"] = false;
  auto r = loader_.create<tlab::Dataset>("imagefolder", p)->load(ctx);
  ASSERT_FALSE(r.train.streamed());
  EXPECT_TRUE(torch::equal(s.get(0, 0), r.train.x[0]));
  EXPECT_TRUE(torch::equal(d.val.stream->get(0, 5), r.val.x[0]));
  EXPECT_TRUE(torch::equal(d.train.y, r.train.y));
}

TEST_F(Streaming, ABrokenImageFailsTheRunNamingTheFile) {
  tlab::test::write_file(dir_ / "imgs" / "1" / "99.png", "not a png");
  tlab::Store store(dir_ / "results.db");
  auto out = run(store, "resident_max_mb = 0");  // in train, val or test: each is decoded
  EXPECT_EQ(out.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(out.reason, HasSubstr("99.png"));
  EXPECT_THAT(out.reason, HasSubstr("neither a PNG nor a JPEG"));
}
