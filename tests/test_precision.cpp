// How a run computes (run/precision.hpp, `[train] precision`, `channels_last`, `cuda_graphs`):
// bfloat16 autocast on the CPU trains like fp32 with fp32 parameters; channels-last layouts give
// the same outputs; float16 and CUDA graphs are refused without CUDA before anything runs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <ATen/record_function.h>
#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "run/precision.hpp"
#include "run/runner.hpp"
#include "store/store.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"
#include "weights/safetensors.hpp"

using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

const char* kCnn = R"(name = "precision"
seed = 3
device = "cpu"
[target]
plugin = "digits"
domain = "noisy"
train_size = 256
val_size = 32
test_size = 64
[backbone]
plugin = "cnn"
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = 4
batch_size = 32
lr = 0.003
)";

class Precision : public ::testing::Test {
 protected:
  fs::path dir_ = tlab::test::temp_dir("precision");
  void TearDown() override { fs::remove_all(dir_); }
  tlab::PluginLoader loader_{{TLAB_TEST_PLUGIN_DIR}};

  // The run's target/train/loss per epoch, and its model file.
  struct Trained {
    std::vector<double> losses;
    fs::path model;
    tlab::RunStatus status;
    std::string reason;
  };
  Trained train(const std::vector<std::string>& overrides) {
    const auto specs =
        tlab::load_experiment(tlab::test::write_file(dir_ / "exp.toml", kCnn), overrides, loader_);
    tlab::Store store(dir_ / "results.db");
    tlab::RunOptions o;
    o.results_dir = dir_;
    const tlab::RunOutcome out = tlab::execute_run(specs.at(0), loader_, store, o);
    Trained t;
    t.status = out.status;
    t.reason = out.reason;
    for (const auto& m : store.metrics(out.id, "target/train/loss")) t.losses.push_back(m.value);
    t.model = fs::path(store.run(out.id).run_dir) / "model.safetensors";
    return t;
  }
};

// bf16 autocast: every step's forward and loss in bfloat16 (so the losses differ from fp32's),
// within 5% of the fp32 run's per epoch; the parameters stay fp32.
TEST_F(Precision, Bf16TrainsLikeFp32WithFp32Parameters) {
  const Trained fp32 = train({});
  const Trained bf16 = train({"+train.precision=bf16"});
  ASSERT_EQ(bf16.status, tlab::RunStatus::kFinished) << bf16.reason;
  ASSERT_EQ(fp32.losses.size(), 4u);
  ASSERT_EQ(bf16.losses.size(), 4u);
  bool differ = false;
  for (std::size_t e = 0; e < fp32.losses.size(); ++e) {
    EXPECT_NEAR(bf16.losses[e], fp32.losses[e], 0.05 * fp32.losses[e] + 0.01) << "epoch " << e;
    differ = differ || bf16.losses[e] != fp32.losses[e];
  }
  EXPECT_TRUE(differ) << "bf16 gave fp32's losses exactly: autocast did nothing";
  EXPECT_LT(bf16.losses.back(), bf16.losses.front());  // it learns
  for (const auto& [name, t] : tlab::weights::read_safetensors(bf16.model))
    if (t.is_floating_point()) EXPECT_EQ(t.scalar_type(), torch::kFloat) << name;
}

// Channels-last: the cnn and resnet backbones give the same features for the same weights and
// inputs in either layout (<= 1e-5), and a run with it trains like the run without.
TEST_F(Precision, ChannelsLastGivesTheSameOutputs) {
  torch::manual_seed(1);
  for (const auto& [plugin, shape] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"cnn", {1, 28, 28}}, {"resnet", {3, 32, 32}}}) {
    SCOPED_TRACE(plugin);
    tlab::Context ctx;
    auto net = loader_.create<tlab::Backbone>(plugin, {})->build(shape, ctx);
    net->eval();
    std::vector<int64_t> dims = {8};
    dims.insert(dims.end(), shape.begin(), shape.end());
    const torch::Tensor x = torch::randn(dims);
    torch::NoGradGuard no_grad;
    const torch::Tensor plain = net->forward(x);
    tlab::to_channels_last(*net);
    bool converted = false;
    for (const auto& p : net->parameters())
      if (p.dim() == 4) converted = p.is_contiguous(at::MemoryFormat::ChannelsLast);
    EXPECT_TRUE(converted);
    const torch::Tensor last = net->forward(tlab::channels_last_input(x));
    EXPECT_LE((last - plain).abs().max().item<double>(), 1e-5);
  }
  const Trained plain = train({});
  const Trained last = train({"+train.channels_last=true"});
  ASSERT_EQ(last.status, tlab::RunStatus::kFinished) << last.reason;
  ASSERT_EQ(last.losses.size(), plain.losses.size());
  for (std::size_t e = 0; e < plain.losses.size(); ++e)
    EXPECT_NEAR(last.losses[e], plain.losses[e], 1e-3 * plain.losses[e]) << "epoch " << e;
}

// Without CUDA, fp16 and CUDA graphs are refused by `tlab run` before any run starts (exit 2,
// nothing recorded); the keys enter the resolved config only when set; a bad value is located.
TEST_F(Precision, Fp16AndCudaGraphsAreRefusedWithoutCuda) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this machine has CUDA";
  const fs::path exp = tlab::test::write_file(dir_ / "exp.toml", kCnn);
  const std::string tlab = TLAB_TEST_BIN_DIR + "/tlab --plugin-path " + TLAB_TEST_PLUGIN_DIR +
                           " run " + exp.string() + " --db " + (dir_ / "cli.db").string() + " ";
  const auto fp16 = tlab::test::shell(tlab + "+train.precision=fp16");
  EXPECT_EQ(fp16.code, 2);
  EXPECT_THAT(fp16.out, HasSubstr("train.precision = \"fp16\" trains in float16 with dynamic loss "
                                  "scaling, which needs a CUDA device; this run's device is cpu "
                                  "(this LibTorch has no CUDA): on the CPU use precision = "
                                  "\"bf16\""));
  const auto graphs = tlab::test::shell(tlab + "+train.cuda_graphs=true");
  EXPECT_EQ(graphs.code, 2);
  EXPECT_THAT(graphs.out, HasSubstr("train.cuda_graphs = true captures the training step as a "
                                    "CUDA graph, which needs a CUDA device"));
  EXPECT_FALSE(
      fs::exists(dir_ / "cli.db") &&
      tlab::test::shell("sqlite3 " + (dir_ / "cli.db").string() + " 'SELECT COUNT(*) FROM runs'")
              .out != "0\n");
  const auto bad = tlab::test::shell(tlab + "+train.precision=fp8");
  EXPECT_EQ(bad.code, 2);
  EXPECT_THAT(bad.out, HasSubstr("train.precision"));
  EXPECT_THAT(bad.out, HasSubstr("fp8"));
  EXPECT_THAT(tlab::test::error_of<tlab::ConfigError>(
                  [&] { tlab::load_experiment(exp, {"+train.device_data_mb=-1"}, loader_); }),
              ::testing::AllOf(HasSubstr("train.device_data_mb"), HasSubstr("-1")));
  const auto plain = tlab::load_experiment(exp, {}, loader_).at(0);
  EXPECT_EQ(plain.config_toml.find("precision = "), std::string::npos);
  EXPECT_EQ(plain.config_toml.find("device_data_mb"), std::string::npos);
  EXPECT_EQ(plain.compute.device_data_mb, 2048);
  EXPECT_EQ(
      tlab::load_experiment(exp, {"+train.device_data_mb=0"}, loader_).at(0).compute.device_data_mb,
      0);
  const auto bf16 = tlab::load_experiment(exp, {"+train.precision=bf16"}, loader_).at(0);
  EXPECT_THAT(bf16.config_toml, HasSubstr("precision = \"bf16\""));
}

// Reads of a tensor's value on the host (item(), what synchronises with a GPU: LibTorch's
// aten::_local_scalar_dense), counted by a global RecordFunction observer during a run.
std::atomic<int64_t> g_host_reads{0};
std::unique_ptr<at::ObserverContext> count_host_read(const at::RecordFunction& fn) {
  if (std::string(fn.name()) == "aten::_local_scalar_dense") ++g_host_reads;
  return nullptr;
}

// No host synchronisation inside the step loop: a run with 32 steps per epoch reads values on
// the host exactly as often as one with 2 steps per epoch (the loss is summed on the device and
// read once per epoch; evaluations read their counts once per split), in fp32 and bf16.
TEST_F(Precision, TheStepLoopNeverReadsTheHost) {
  for (const char* precision : {"fp32", "bf16"}) {
    SCOPED_TRACE(precision);
    std::vector<int64_t> reads;
    for (const char* batch : {"train.batch_size=128", "train.batch_size=8"}) {  // 2 or 32 steps
      g_host_reads = 0;
      const auto handle = at::addGlobalCallback(at::RecordFunctionCallback(&count_host_read)
                                                    .needsInputs(false)
                                                    .scopes({at::RecordScope::FUNCTION}));
      const Trained t =
          train({batch, "train.epochs=2", fmt::format("+train.precision={}", precision)});
      at::removeCallback(handle);
      ASSERT_EQ(t.status, tlab::RunStatus::kFinished) << t.reason;
      reads.push_back(g_host_reads.load());
    }
    EXPECT_GT(reads[0], 0) << "the observer saw no read at all";
    EXPECT_EQ(reads[1], reads[0]) << "host reads grow with the steps: a step synchronises";
  }
}

// On a GPU: float16 with dynamic loss scaling trains, parameters fp32; bf16 likewise.
TEST_F(Precision, Fp16AndBf16TrainOnTheGpu_CUDA) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const char* precision : {"fp16", "bf16"}) {
    SCOPED_TRACE(precision);
    const Trained t = train({"device=cuda", fmt::format("+train.precision={}", precision),
                             "+train.channels_last=true"});
    ASSERT_EQ(t.status, tlab::RunStatus::kFinished) << t.reason;
    ASSERT_EQ(t.losses.size(), 4u);
    EXPECT_LT(t.losses.back(), t.losses.front());
    for (const auto& [name, tensor] : tlab::weights::read_safetensors(t.model))
      if (tensor.is_floating_point()) EXPECT_EQ(tensor.scalar_type(), torch::kFloat) << name;
  }
}

// train.device_data_mb = 0 on a GPU: every labelled split stays in pinned host memory and is
// copied batch by batch without blocking; the run trains as the resident one does (the same
// batches; cuDNN may pick other algorithms, hence the tolerance).
TEST_F(Precision, DataBeyondTheDeviceBudgetStreamsFromPinnedMemory_CUDA) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const Trained resident = train({"device=cuda"});
  const Trained host = train({"device=cuda", "+train.device_data_mb=0"});
  ASSERT_EQ(host.status, tlab::RunStatus::kFinished) << host.reason;
  ASSERT_EQ(resident.losses.size(), host.losses.size());
  for (std::size_t e = 0; e < host.losses.size(); ++e)
    EXPECT_NEAR(host.losses[e], resident.losses[e], 1e-4 * std::abs(resident.losses[e]))
        << "epoch " << e;
}

}  // namespace
