// Fine-tuning strategies: finetune's partial fine-tuning, discriminative rates and gradual
// unfreezing (ULMFiT), linear_probe's feature cache and l2sp's penalty (checked against Debian's
// Python PyTorch), through the real loader and runner on tiny MLPs and Gaussian blobs; finetune's
// masked-language-model pre-training on a tiny BERT / RoBERTa over generated reviews.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <torch/cuda.h>

#include <cmath>
#include <fstream>
#include <map>

#include <fmt/format.h>

#include "../plugins/strategies/common/finetuning.hpp"
#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "run/runner.hpp"
#include "store/store.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"
#include "weights/state_dict.hpp"

using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

// Three backbone layer groups (layer0..layer2), a linear head, 4 classes x 10 shots = 40
// labelled target examples.
const std::string kBase = R"(name = "ft"
seed = 7
device = "cpu"

[source]
plugin = "gaussians"
domain = "source"
train_size = 200
val_size = 50
test_size = 100

[target]
plugin = "gaussians"
domain = "target"
train_size = 200
val_size = 50
test_size = 200
shots = 10

[backbone]
plugin = "mlp"
hidden = [16, 16, 16]

[[adapters]]
plugin = "linear_head"

[strategy]
plugin = "finetune"
source_epochs = 2

[train]
epochs = 3
batch_size = 16
)";

using Weights = std::map<std::string, torch::Tensor>;

class FinetuningStrategies : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tlab::test::temp_dir(std::string("ftstrat_") +
                                ::testing::UnitTest::GetInstance()->current_test_info()->name());
    store_ = std::make_unique<tlab::Store>(dir_ / "results.db");
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  tlab::RunOutcome run(const std::vector<std::string>& overrides, const std::string& text = kBase) {
    auto path = tlab::test::write_file(dir_ / "ft.toml", text);
    auto spec = tlab::load_experiment(path, overrides, loader_).at(0);
    tlab::RunOptions o;
    o.results_dir = dir_;
    return tlab::execute_run(spec, loader_, *store_, o);
  }
  // A run that must finish.
  tlab::RunOutcome ok(const std::vector<std::string>& overrides, const std::string& text = kBase) {
    auto r = run(overrides, text);
    EXPECT_EQ(r.status, tlab::RunStatus::kFinished) << r.reason;
    return r;
  }
  Weights weights(const tlab::RunOutcome& r) {
    Weights out;
    for (auto& [k, t] :
         tlab::weights::read_safetensors(fs::path(store_->run(r.id).run_dir) / "model.safetensors"))
      out[k] = t;
    return out;
  }
  std::vector<double> metric(const tlab::RunOutcome& r, const std::string& name) {
    std::vector<double> v;
    for (const auto& row : store_->metrics(r.id, name)) v.push_back(row.value);
    return v;
  }
  fs::path dir_;
  std::unique_ptr<tlab::Store> store_;
  tlab::PluginLoader loader_{{TLAB_TEST_PLUGIN_DIR, TLAB_TEST_FIXTURE_DIR}};
};

// The backbone's layer `i` (weight and bias) is bit-for-bit the same in both checkpoints.
bool same_layer(Weights& a, Weights& b, int i) {
  const std::string p = fmt::format("backbone.layer{}.", i);
  return torch::equal(a.at(p + "weight"), b.at(p + "weight")) &&
         torch::equal(a.at(p + "bias"), b.at(p + "bias"));
}

// Squared distance of the backbone's parameters between two checkpoints.
double backbone_distance(Weights& a, Weights& b) {
  double d = 0;
  for (auto& [k, t] : a)
    if (k.rfind("backbone.", 0) == 0) d += (t - b.at(k)).pow(2).sum().item<double>();
  return d;
}

bool python_has_torch() {
  return tlab::test::shell("/usr/bin/python3 -c 'import torch, numpy'").code == 0;
}

void write_raw(const fs::path& file, const torch::Tensor& t) {
  auto c = t.to(torch::kFloat).contiguous();
  std::ofstream(file, std::ios::binary)
      .write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// L2-SP

// The penalty alpha/2 ||w - w0||^2 + beta/2 ||w_head||^2 against an independent computation in
// Python's torch (float64) on the same float32 tensors, written as raw little-endian files.
TEST_F(FinetuningStrategies, L2spPenaltyMatchesPython) {
  if (!python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 cannot import torch and numpy";
  torch::manual_seed(3);
  std::vector<torch::Tensor> shared = {torch::randn({5, 4}), torch::randn({5}),
                                       torch::randn({3, 5})};
  std::vector<torch::Tensor> start;
  for (auto& t : shared) start.push_back(t + 0.3 * torch::randn(t.sizes()));
  std::vector<torch::Tensor> fresh = {torch::randn({2, 3}), torch::randn({2})};
  const double alpha = 0.37, beta = 0.011;
  auto terms = tlab_strategy::l2sp_terms(shared, start, fresh, alpha, beta);
  std::string shapes;
  auto put = [&](const std::string& name, const torch::Tensor& t) {
    write_raw(dir_ / (name + ".f32"), t);
    shapes += fmt::format("'{}': ({},), ", name, fmt::join(t.sizes(), ","));
  };
  for (std::size_t i = 0; i < shared.size(); ++i) {
    put(fmt::format("w{}", i), shared[i]);
    put(fmt::format("s{}", i), start[i]);
  }
  for (std::size_t i = 0; i < fresh.size(); ++i) put(fmt::format("h{}", i), fresh[i]);
  const std::string script = fmt::format(R"PY(
import sys, numpy, torch
d = sys.argv[1]
shapes = {{{}}}
def t(n):
    a = numpy.fromfile(d + '/' + n + '.f32', dtype='<f4').reshape(shapes[n])
    return torch.from_numpy(a).double()
alpha, beta = {:.17g}, {:.17g}
dist = sum(((t('w%d' % i) - t('s%d' % i)) ** 2).sum() for i in range(3))
head = sum((t('h%d' % i) ** 2).sum() for i in range(2))
print('%.17g %.17g %.17g' % (dist, head, alpha / 2 * dist + beta / 2 * head))
)PY",
                                         shapes, alpha, beta);
  tlab::test::write_file(dir_ / "l2sp.py", script);
  auto r =
      tlab::test::shell("/usr/bin/python3 " + (dir_ / "l2sp.py").string() + " " + dir_.string());
  ASSERT_EQ(r.code, 0) << r.out;
  double dist = 0, head = 0, penalty = 0;
  ASSERT_EQ(std::sscanf(r.out.c_str(), "%lf %lf %lf", &dist, &head, &penalty), 3) << r.out;
  auto rel = [](double a, double b) { return std::abs(a - b) / std::abs(b); };
  EXPECT_LE(rel(terms.distance.item<double>(), dist), 1e-5);
  EXPECT_LE(rel(terms.head.item<double>(), head), 1e-5);
  EXPECT_LE(rel(terms.penalty.item<double>(), penalty), 1e-5);
  EXPECT_GT(penalty, 0.1);  // not a trivially small number
  // Its gradient with respect to the pre-trained parameters is alpha (w - w0).
  for (auto& w : shared) w.requires_grad_(true);
  tlab_strategy::l2sp_terms(shared, start, fresh, alpha, beta).penalty.backward();
  EXPECT_TRUE(
      torch::allclose(shared[0].grad(), alpha * (shared[0] - start[0]).detach(), 1e-5, 1e-6));
}

// With a strong pull, fine-tuning ends closer to the pre-trained weights than plain finetune on
// the same seed; the logged distance is the one the checkpoints show.
TEST_F(FinetuningStrategies, L2spStaysCloserToThePretrainedWeights) {
  // The pre-trained backbone, untouched (pre-training uses [train]: the same settings).
  auto start = ok({"train.epochs=0", "train.lr=0.03"});
  std::vector<std::string> common = {"train.epochs=6", "train.lr=0.03"};
  auto plain = ok(common);
  auto c2 = common;
  c2.insert(c2.end(), {"strategy.plugin=l2sp", "+strategy.alpha=5.0", "+strategy.beta=0.01"});
  auto sp = ok(c2);
  auto w0 = weights(start), wf = weights(plain), ws = weights(sp);
  const double df = backbone_distance(wf, w0), ds = backbone_distance(ws, w0);
  EXPECT_GT(df, 0);
  EXPECT_LT(ds, 0.5 * df) << "finetune " << df << " l2sp " << ds;
  // The strategy's own per-epoch distance: one row per epoch, the last one matching the
  // checkpoints (l2sp's pre-training is finetune's: the same w0).
  auto rows = metric(sp, "target/train/sp_distance");
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_NEAR(rows.back(), ds, 1e-4 * ds + 1e-9);
  EXPECT_NEAR(sp.summary.at("target/l2sp/sp_distance"), ds, 1e-4 * ds + 1e-9);
  EXPECT_EQ(metric(sp, "target/train/penalty").size(), 6u);
}

// ---------------------------------------------------------------------------------------------
// finetune: gradual unfreezing, discriminative rates, partial fine-tuning

// unfreeze_every = 2 over 5 epochs: 0, 0, 1, 1, 2 backbone groups train; layer0 never does and
// is bit-for-bit the pre-trained one, and after 2 epochs the whole backbone still is.
TEST_F(FinetuningStrategies, GradualUnfreezingFollowsItsSchedule) {
  auto start = ok({"train.epochs=0"});
  auto five = ok({"train.epochs=5", "strategy.unfreeze_every=2"});
  auto two = ok({"train.epochs=2", "strategy.unfreeze_every=2"});
  EXPECT_EQ(metric(five, "target/train/unfrozen_groups"), (std::vector<double>{0, 0, 1, 1, 2}));
  EXPECT_EQ(metric(two, "target/train/unfrozen_groups"), (std::vector<double>{0, 0}));
  auto w0 = weights(start), w5 = weights(five), w2 = weights(two);
  EXPECT_TRUE(same_layer(w5, w0, 0));
  EXPECT_FALSE(same_layer(w5, w0, 1));
  EXPECT_FALSE(same_layer(w5, w0, 2));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(same_layer(w2, w0, i)) << "layer" << i;
  // Every group is with the optimiser from the start: all count as trainable.
  EXPECT_EQ(five.summary.at("model/params/trainable"), five.summary.at("model/params/total"));
}

// Discriminative rates, seen through plain SGD (no momentum, one step: the whole target is one
// batch): the same first gradient, so each group's move scales with its learning-rate scale.
TEST_F(FinetuningStrategies, DiscriminativeRatesScaleEachGroupsStep) {
  std::vector<std::string> sgd = {"train.epochs=1",   "train.batch_size=64",
                                  "train.lr=0.1",     "train.optimizer=sgd",
                                  "train.momentum=0", "strategy.train_groups=-1"};
  auto start_overrides = sgd;
  start_overrides.push_back("train.epochs=0");  // the same pre-training: train.* is its key
  auto start = ok(start_overrides);
  auto one = ok(sgd);  // every group at scale 1 (the 1.0.0 path)
  auto with = [&](std::vector<std::string> extra) {
    auto o = sgd;
    o.insert(o.end(), extra.begin(), extra.end());
    return ok(o);
  };
  auto decay = with({"strategy.lr_decay=2"});
  auto explicit_ = with({"strategy.group_lr_scales=[1.0, 0.0, 3.0]"});
  EXPECT_EQ(decay.summary.at("target/lr_scale/layer2"), 0.5);
  EXPECT_EQ(decay.summary.at("target/lr_scale/layer1"), 0.25);
  EXPECT_EQ(decay.summary.at("target/lr_scale/layer0"), 0.125);
  EXPECT_EQ(decay.summary.at("target/lr_scale/head"), 1.0);
  EXPECT_EQ(explicit_.summary.at("target/lr_scale/layer2"), 3.0);
  auto w0 = weights(start), w1 = weights(one), wd = weights(decay), we = weights(explicit_);
  auto check = [&](Weights& w, const std::string& name, double scale) {
    auto base = w1.at(name) - w0.at(name);
    auto moved = w.at(name) - w0.at(name);
    ASSERT_GT(base.abs().max().item<double>(), 1e-4) << name << " did not move at scale 1";
    EXPECT_TRUE(torch::allclose(moved, scale * base, 1e-3, 1e-6))
        << name << ": moved " << moved.norm().item<double>() << ", expected "
        << scale * base.norm().item<double>();
  };
  for (const char* part : {"weight", "bias"}) {
    check(wd, fmt::format("backbone.layer2.{}", part), 0.5);
    check(wd, fmt::format("backbone.layer1.{}", part), 0.25);
    check(wd, fmt::format("backbone.layer0.{}", part), 0.125);
    check(we, fmt::format("backbone.layer0.{}", part), 1.0);
    check(we, fmt::format("backbone.layer1.{}", part), 0.0);
    check(we, fmt::format("backbone.layer2.{}", part), 3.0);
  }
  // The head trains at the base rate: the same step as with one rate (heads start alike).
  EXPECT_TRUE(torch::allclose(wd.at("head.0.weight"), w1.at("head.0.weight"), 1e-5, 1e-7));
}

// train_groups = 1: only the top group and the head train; the lower groups stay the
// pre-trained ones, and only the top group and the head count as trainable.
TEST_F(FinetuningStrategies, TrainGroupsKeepsLowerGroupsUnchanged) {
  auto start = ok({"train.epochs=0"});
  auto top = ok({"strategy.train_groups=1"});
  auto w0 = weights(start), wt = weights(top);
  EXPECT_TRUE(same_layer(wt, w0, 0));
  EXPECT_TRUE(same_layer(wt, w0, 1));
  EXPECT_FALSE(same_layer(wt, w0, 2));
  EXPECT_EQ(top.summary.at("model/params/trainable"), (16 * 16 + 16) + (16 * 4 + 4));
  EXPECT_EQ(metric(top, "target/train/unfrozen_groups"), (std::vector<double>{1, 1, 1}));
  // train_groups = 0 is freeze_backbone = true: the same model.
  auto head = ok({"strategy.train_groups=0"});
  auto frozen = ok({"strategy.freeze_backbone=true"});
  auto wh = weights(head), wf = weights(frozen);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(same_layer(wh, w0, i));
  EXPECT_TRUE(torch::equal(wh.at("head.0.weight"), wf.at("head.0.weight")));
}

TEST_F(FinetuningStrategies, FinetuneOptionErrorsSayWhatToDo) {
  auto r = run({"strategy.train_groups=5"});
  EXPECT_EQ(r.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(r.reason, HasSubstr("train_groups = 5 but the backbone has 3 layer groups "
                                  "(layer0, layer1, layer2); use 0..3, or -1 for all"));
  r = run({"strategy.group_lr_scales=[1.0, 0.5]"});
  EXPECT_THAT(r.reason, HasSubstr("group_lr_scales has 2 values but the backbone has 3 layer "
                                  "groups (layer0, layer1, layer2); give one scale per group"));
  r = run({"strategy.group_lr_scales=[1.0, 0.5, 0.2]", "strategy.lr_decay=2.6"});
  EXPECT_THAT(r.reason, HasSubstr("both lr_decay (2.600000) and group_lr_scales are set"));
  r = run({"strategy.freeze_backbone=true", "strategy.train_groups=2"});
  EXPECT_THAT(r.reason, HasSubstr("freeze_backbone = true freezes every backbone group but "
                                  "train_groups = 2"));
  r = run({"strategy.train_groups=0", "strategy.unfreeze_every=1"});
  EXPECT_THAT(r.reason, HasSubstr("unfreeze_every = 1 but no backbone group may train"));
  EXPECT_THAT(
      tlab::test::error_of<std::exception>([&] { run({"strategy.lr_decay=0"}); }),
      HasSubstr("'strategy.lr_decay' = 0 is out of range; expected a value in [0.01, 100]"));
}

// ---------------------------------------------------------------------------------------------
// linear_probe

// The features are computed once; the probe reaches finetune freeze_backbone's accuracy; with
// cache = "disk" a second run reuses them (no backbone pass) and gives the same results.
TEST_F(FinetuningStrategies, LinearProbeCachesFeaturesAndMatchesAFrozenFinetune) {
  std::vector<std::string> common = {"train.epochs=40", "train.lr=0.01"};
  auto frozen = common;
  frozen.push_back("strategy.freeze_backbone=true");
  auto ft = ok(frozen);
  auto probe = common;
  probe.push_back("strategy.plugin=linear_probe");
  auto mem = ok(probe);
  EXPECT_EQ(mem.summary.at("target/probe/feature_passes"), 1);
  EXPECT_EQ(mem.summary.at("target/probe/cache_hit"), 0);
  EXPECT_EQ(mem.summary.at("model/params/trainable"), 16 * 4 + 4);  // the head only
  EXPECT_EQ(metric(mem, "target/train/loss").size(), 40u);
  // Logistic regression on the same fixed features is convex: trained to convergence, both
  // reach the same optimum up to their head's start and batch order.
  EXPECT_NEAR(mem.summary.at("target/test/acc"), ft.summary.at("target/test/acc"), 0.03);
  EXPECT_GT(mem.summary.at("target/test/acc"), 0.5);  // 4 classes: well above chance
  auto w0 = weights(ft), wp = weights(mem);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(same_layer(wp, w0, i)) << "layer" << i;
  probe.push_back("+strategy.cache=disk");
  auto first = ok(probe);
  auto second = ok(probe);
  EXPECT_EQ(first.summary.at("target/probe/cache_hit"), 0);
  EXPECT_EQ(second.summary.at("target/probe/cache_hit"), 1);
  EXPECT_EQ(second.summary.at("target/probe/feature_passes"), 0);
  EXPECT_EQ(first.summary.at("target/test/acc"), mem.summary.at("target/test/acc"));
  EXPECT_EQ(second.summary.at("target/test/acc"), mem.summary.at("target/test/acc"));
  EXPECT_EQ(second.summary.at("target/test/loss"), first.summary.at("target/test/loss"));
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir_ / "cache" / "features"))
    entries += e.path().extension() == ".pt";
  EXPECT_EQ(entries, 1);
}

TEST_F(FinetuningStrategies, LinearProbeRefusesAdaptersInsideTheBackbone) {
  std::string text = kBase;
  text.replace(text.find("[[adapters]]"), 0, "[[adapters]]\nplugin = \"bottleneck\"\n\n");
  auto r = run({"strategy.plugin=linear_probe", "train.epochs=1"}, text);
  EXPECT_EQ(r.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(r.reason, HasSubstr("an adapter added trainable parameters outside the head"));
}

TEST_F(FinetuningStrategies, StrategiesThatPretrainNeedASource) {
  std::string text = kBase;
  const auto from = text.find("[source]"), to = text.find("[target]");
  text.erase(from, to - from);
  for (const char* name : {"linear_probe", "l2sp"}) {
    auto r = run({fmt::format("strategy.plugin={}", name)}, text);
    EXPECT_EQ(r.status, tlab::RunStatus::kFailed);
    EXPECT_THAT(r.reason,
                HasSubstr(fmt::format("{} trains on a labelled source domain: add a [source] table",
                                      name)));
  }
}

// A streamed target training split cannot be cached: the error says what to do instead.
TEST_F(FinetuningStrategies, LinearProbeRefusesAStreamedTrainingSplit) {
  if (tlab::test::shell("/usr/bin/python3 -c 'import PIL'").code != 0)
    GTEST_SKIP() << "/usr/bin/python3 cannot import PIL (python3-pil), which writes the images";
  const std::string script = fmt::format(R"(import os
from PIL import Image
for c in (0, 1):
    os.makedirs("{dir}/imgs/%d" % c, exist_ok=True)
    for i in range(10):
        im = Image.new("L", (8, 8), 60 + 120 * c + i)
        im.save("{dir}/imgs/%d/%02d.png" % (c, i))
)",
                                         fmt::arg("dir", dir_.string()));
  tlab::test::write_file(dir_ / "make.py", script);
  auto made = tlab::test::shell("/usr/bin/python3 " + (dir_ / "make.py").string());
  ASSERT_EQ(made.code, 0) << made.out;
  const std::string text = fmt::format(R"(name = "stream"
seed = 2
device = "cpu"
[source]
plugin = "imagefolder"
path = "{dir}/imgs"
channels = 1
[target]
plugin = "imagefolder"
path = "{dir}/imgs"
channels = 1
resident_max_mb = 0
[backbone]
plugin = "mlp"
hidden = [8]
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "linear_probe"
source_epochs = 1
[train]
epochs = 1
batch_size = 8
)",
                                       fmt::arg("dir", dir_.string()));
  auto r = run({}, text);
  EXPECT_EQ(r.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(r.reason, HasSubstr("linear_probe caches the features of a resident target "
                                  "training split; this one is streamed"));
}

// ---------------------------------------------------------------------------------------------
// finetune pretrain = "mlm": masked-language-model pre-training (tlab/sdk/mlm.hpp) of a tiny
// BERT on tools/reviews.py's generated reviews (books -> kitchen, WordPiece).

// The reviews under `dir`/reviews and an experiment on them.
std::string reviews_experiment(const fs::path& dir) {
  const auto made = tlab::test::shell("/usr/bin/python3 '" + std::string(TLAB_SOURCE_DIR) +
                                      "/tools/reviews.py' '" + (dir / "reviews").string() + "'");
  EXPECT_EQ(made.code, 0) << made.out;
  const std::string d = (dir / "reviews").string();
  auto domain = [&](const std::string& name) {
    return fmt::format(
        "plugin = \"text\"\npath = \"{0}/{1}.tsv\"\ntest_path = \"{0}/{1}_test.tsv\"\n"
        "tokenize = \"wordpiece\"\nvocab_path = \"{0}/vocab.txt\"\nmax_len = 24\n"
        "val_fraction = 0.1\nclasses = [\"neg\", \"pos\"]\n",
        d, name);
  };
  return fmt::format(R"(name = "mlm"
seed = 3
device = "cpu"

[source]
{}
[target]
{}shots = 10

[backbone]
plugin = "bert"
vocab_size = 105
hidden_size = 16
num_hidden_layers = 1
num_attention_heads = 2
intermediate_size = 32
max_position_embeddings = 32
pooling = "mean"

[[adapters]]
plugin = "linear_head"

[strategy]
plugin = "finetune"
pretrain = "mlm"
mlm_vocab = "{}/vocab.txt"
mlm_epochs = 3
mlm_lr = 0.005
source_epochs = 1

[train]
epochs = 1
batch_size = 64
)",
                     domain("books"), domain("kitchen"), d);
}

// MLM trains (its held-out loss falls below a uniform guess over the vocabulary), logs its
// metrics, is shared with a run that differs only on the target side, and a supervised stage
// after it never restores the entry of a supervised stage that started elsewhere.
TEST_F(FinetuningStrategies, MlmPretrainingLearnsTheTextAndIsSharedByItsStartingPoint) {
  const std::string text = reviews_experiment(dir_);
  auto mlm = ok({}, text);
  const auto train_loss = metric(mlm, "mlm/train/loss"), val_loss = metric(mlm, "mlm/val/loss"),
             val_acc = metric(mlm, "mlm/val/acc");
  ASSERT_EQ(train_loss.size(), 3u);
  ASSERT_EQ(val_loss.size(), 3u);
  ASSERT_EQ(val_acc.size(), 3u);
  EXPECT_LT(train_loss.back(), train_loss.front());
  EXPECT_LT(val_loss.back(), val_loss.front());
  EXPECT_LT(val_loss.back(), std::log(105.0) - 0.15);  // better than a uniform guess
  EXPECT_GT(val_acc.back(), 2.0 / 105);
  EXPECT_EQ(mlm.summary.at("mlm/pretrain_reused"), 0);
  EXPECT_TRUE(metric(mlm, "source/train/loss").empty());  // no supervised stage
  // The same MLM, another target stage (a linear probe): restored, with its metrics.
  auto again = ok({"strategy.freeze_backbone=true"}, text);
  EXPECT_EQ(again.summary.at("mlm/pretrain_reused"), 1);
  EXPECT_EQ(metric(again, "mlm/val/loss"), val_loss);
  // Supervised alone, then MLM + supervised: the second's supervised stage starts from the
  // MLM's weights, so it trains (before the start state was in the key it restored the first's).
  auto supervised = ok({"strategy.pretrain=supervised"}, text);
  EXPECT_EQ(supervised.summary.at("source/pretrain_reused"), 0);
  auto both = ok({"strategy.pretrain=mlm+supervised"}, text);
  EXPECT_EQ(both.summary.at("mlm/pretrain_reused"), 1);  // the MLM itself was restored
  EXPECT_EQ(both.summary.at("source/pretrain_reused"), 0);
  EXPECT_EQ(metric(both, "mlm/val/loss"), val_loss);
  EXPECT_EQ(metric(both, "source/train/loss").size(), 1u);
  EXPECT_NE(metric(both, "source/train/loss"), metric(supervised, "source/train/loss"));
  // The target's text (mlm_text = "target" or "both") is part of MLM's key: other shots, other
  // unlabelled pool, another entry.
  auto other = ok({"target.shots=20"}, text);
  EXPECT_EQ(other.summary.at("mlm/pretrain_reused"), 0);
  EXPECT_NE(metric(other, "mlm/val/loss"), val_loss);
  // On the source's text alone, the target does not matter.
  EXPECT_EQ(
      ok({"strategy.mlm_text=source", "target.shots=20"}, text).summary.at("mlm/pretrain_reused"),
      0);
  EXPECT_EQ(
      ok({"strategy.mlm_text=source", "target.shots=5"}, text).summary.at("mlm/pretrain_reused"),
      1);
}

TEST_F(FinetuningStrategies, MlmErrorsSayWhatToDo) {
  auto r = run({"strategy.pretrain=mlm", "strategy.mlm_mask_id=4"});  // Gaussian blobs
  EXPECT_EQ(r.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(r.reason, HasSubstr("finetune: masked-language-model training needs token ids "
                                  "(int64, N x L) from a text dataset"));
  const std::string text = reviews_experiment(dir_);
  r = run({"backbone.vocab_size=106"}, text);
  EXPECT_THAT(r.reason, HasSubstr("vocab.txt' has 105 tokens but the backbone's "
                                  "embeddings.word_embeddings.weight has 106 rows; use the "
                                  "model's own vocab.txt"));
  r = run({"~strategy.mlm_vocab"}, text);
  EXPECT_THAT(r.reason, HasSubstr("masked-language-model training needs the mask token's id; "
                                  "set mlm_vocab to the model's vocab.txt, or mlm_mask_id"));
  r = run({"~strategy.mlm_vocab", "strategy.mlm_mask_id=4"}, text);
  EXPECT_THAT(r.reason, HasSubstr("mlm_mask_id = 4 is set but mlm_special_ids is empty, so "
                                  "padding would be masked and predicted; list the padding id"));
  r = run({"strategy.mlm_vocab=" + (dir_ / "none.txt").string()}, text);
  EXPECT_THAT(r.reason, HasSubstr("finetune: mlm_vocab = '" + (dir_ / "none.txt").string() +
                                  "': wordpiece: cannot read the vocabulary"));
  r = run({"~strategy.mlm_vocab", "strategy.mlm_mask_id=105", "strategy.mlm_special_ids=[0]"},
          text);
  EXPECT_THAT(r.reason, HasSubstr("mlm_mask_id = 105 is outside the vocabulary of 105 tokens"));
  r = run({"strategy.mlm_embedding=embeddings.word_embeddings"}, text);
  EXPECT_THAT(r.reason, HasSubstr("mlm_embedding = 'embeddings.word_embeddings' is not a matrix "
                                  "of the backbone; its matrices are "
                                  "embeddings.word_embeddings.weight, "));
  r = run({"strategy.mlm_tap=layer1"}, text);
  EXPECT_THAT(r.reason, HasSubstr("mlm_tap = 'layer1' is not a tap of the backbone's forward "
                                  "pass; its taps are its layer groups: embeddings, layer0"));
  std::string no_source = text;
  no_source.erase(no_source.find("[source]"),
                  no_source.find("[target]") - no_source.find("[source]"));
  r = run({"strategy.mlm_text=source"}, no_source);
  EXPECT_THAT(r.reason, HasSubstr("mlm_text = \"source\" reads the source's text, but the "
                                  "experiment has no [source] table"));
  r = run({"strategy.mlm_whole_word=true", "~strategy.mlm_vocab", "strategy.mlm_mask_id=4",
           "strategy.mlm_special_ids=[0, 1, 2, 3]"},
          text);
  EXPECT_THAT(r.reason, HasSubstr("mlm_whole_word = true finds words by BERT's \"##\" pieces, "
                                  "so it needs mlm_vocab = the model's WordPiece vocab.txt"));
  // Whole-word masking on the reviews (their vocab.txt splits "unpredictable" into un ##predict
  // ##able): it trains, into its own cache entry.
  auto wwm = ok({"strategy.mlm_whole_word=true"}, text);
  const auto wwm_loss = metric(wwm, "mlm/val/loss");
  ASSERT_EQ(wwm_loss.size(), 3u);
  EXPECT_LT(wwm_loss.back(), wwm_loss.front());
  EXPECT_EQ(wwm.summary.at("mlm/pretrain_reused"), 0);
  // Without a source, on the target's own text: task-adaptive pre-training runs.
  auto tapt = ok({"strategy.mlm_text=target", "strategy.mlm_epochs=1"}, no_source);
  EXPECT_EQ(metric(tapt, "mlm/train/loss").size(), 1u);
}

// RoBERTa's pipeline: byte-level BPE ids (tokenize = "bpe", a model trained by
// tests/fixtures/bpe_reference.py; <pad> = 1), the bert backbone's roberta variant (pad id 1,
// positions from 2), masked-LM pre-training with the special tokens and <mask> read from the
// same vocab.json.
TEST_F(FinetuningStrategies, RobertaOnBpeTokensPretrainsWithMlmFromItsVocabJson) {
  if (tlab::test::shell("/usr/bin/python3 -c 'import regex'").code != 0)
    GTEST_SKIP() << "/usr/bin/python3 cannot import regex (python3-regex; tools/setup.sh)";
  std::string text = reviews_experiment(dir_);
  const auto made =
      tlab::test::shell("/usr/bin/python3 '" + std::string(TLAB_SOURCE_DIR) +
                        "/tests/fixtures/bpe_reference.py' '" + (dir_ / "bpe").string() + "'");
  ASSERT_EQ(made.code, 0) << made.out;
  const std::string vocab = (dir_ / "bpe" / "vocab.json").string(),
                    merges = (dir_ / "bpe" / "merges.txt").string();
  auto swap = [&](const std::string& from, const std::string& to) {
    for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at))
      text.replace(at, from.size(), to), at += to.size();
  };
  swap("tokenize = \"wordpiece\"\nvocab_path = \"" + (dir_ / "reviews").string() + "/vocab.txt\"",
       "tokenize = \"bpe\"\nvocab_path = \"" + vocab + "\"\nmerges_path = \"" + merges + "\"");
  swap("max_len = 24", "max_len = 40");
  swap("plugin = \"bert\"\nvocab_size = 105",
       "plugin = \"bert\"\nvariant = \"roberta\"\n"
       "vocab_size = 381\ntype_vocab_size = 1");
  swap("max_position_embeddings = 32", "max_position_embeddings = 48");
  swap("mlm_vocab = \"" + (dir_ / "reviews").string() + "/vocab.txt\"",
       "mlm_vocab = \"" + vocab + "\"");
  ASSERT_NE(text.find("merges_path"), std::string::npos);
  ASSERT_NE(text.find("variant = \"roberta\""), std::string::npos);
  auto r = ok({}, text);
  const auto val_loss = metric(r, "mlm/val/loss");
  ASSERT_EQ(val_loss.size(), 3u);
  EXPECT_LT(val_loss.back(), val_loss.front());
  EXPECT_GT(r.summary.at("target/test/acc"), 0.0);
  // The backbone holding RobertaForMaskedLM's head (lm_head.*): MLM starts from it.
  auto with_head = ok({"backbone.mlm_head=true"}, text);
  const auto head_loss = metric(with_head, "mlm/val/loss");
  ASSERT_EQ(head_loss.size(), 3u);
  EXPECT_LT(head_loss.back(), head_loss.front());
  EXPECT_EQ(with_head.summary.at("mlm/pretrain_reused"), 0);  // another start: its own entry
  // <mask> is id 380 in that vocab.json: an explicit id that disagrees is refused.
  auto bad = run({"strategy.mlm_mask_id=4"}, text);
  EXPECT_THAT(bad.reason,
              HasSubstr("mlm_mask_id = 4 but mlm_vocab's <mask> is 380; set only one of them"));
}

// On a GPU: masking draws on the device, the head decodes there, the MLM learns as on the CPU.
TEST_F(FinetuningStrategies, MlmPretrainsOnTheGpu_CUDA) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const std::string text = reviews_experiment(dir_);
  for (const char* precision : {"fp32", "bf16"}) {
    SCOPED_TRACE(precision);
    auto r = ok({"device=cuda", fmt::format("+train.precision={}", precision)}, text);
    const auto val_loss = metric(r, "mlm/val/loss");
    ASSERT_EQ(val_loss.size(), 3u);
    EXPECT_LT(val_loss.back(), val_loss.front());
    EXPECT_LT(val_loss.back(), std::log(105.0) - 0.15);
  }
}
