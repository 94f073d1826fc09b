// The feature-level domain adaptation strategies source_only, dan, coral and dann: multi-kernel
// MMD (three estimators, fixed and batch bandwidths) and Deep CORAL against independent
// PyTorch implementations written from the papers' formulas, the gradient reversal layer and
// DANN's schedules, each method's effect on a known shift (moons, the target rotated by 35
// degrees): CORAL and DAN shrink the distance they optimise compared with source_only at the
// same seed, DANN's domain classifier is nearer chance than the same classifier on features that
// ignore it; and every error message. The comparisons with Python need /usr/bin/python3 with
// torch; without it those tests are skipped.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "../plugins/strategies/common/feature_da.hpp"
#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "run/runner.hpp"
#include "store/store.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"
#include "weights/safetensors.hpp"

using ::testing::HasSubstr;
namespace fs = std::filesystem;
namespace da = tlab_strategy::da;

namespace {

tlab::PluginLoader& loader() {
  static tlab::PluginLoader l({TLAB_TEST_PLUGIN_DIR});
  return l;
}

bool python_has_torch() {
  return tlab::test::shell("/usr/bin/python3 -c 'import torch, numpy'").code == 0;
}

#define SKIP_WITHOUT_PYTHON()                                                           \
  if (!python_has_torch())                                                              \
  GTEST_SKIP() << "/usr/bin/python3 cannot import torch and numpy: install the Debian " \
                  "packages python3-torch and python3-numpy (tools/setup.sh installs them)"

// A safetensors writer (F64) and the references, written from the papers' formulas: pairwise
// differences (no matrix expansion), the reference implementations' bandwidth heuristic on the
// full distance matrix, the linear-time statistic as an explicit loop over quads, torch.cov.
const char* kPython = R"PY(
import json, struct, sys, math
import torch
torch.set_default_dtype(torch.float64)

def save(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().to(torch.float64)
        data = t.numpy().tobytes()
        header[name] = {"dtype": "F64", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

def gammas(s, t, mul, num, fixed):
    if fixed:
        return fixed
    z = torch.cat([s, t])
    n = z.shape[0]
    l2 = ((z[None, :, :] - z[:, None, :]) ** 2).sum(2)
    base = l2.sum().item() / (n * n - n)
    return [base * mul ** (u - num // 2) for u in range(num)]

def k(a, b, gs):  # one pair of vectors
    d = ((a - b) ** 2).sum()
    return sum(math.exp(-d.item() / g) for g in gs)

def mmd(s, t, est, mul=2.0, num=5, fixed=None):
    gs = gammas(s, t, mul, num, fixed)
    ns, nt = s.shape[0], t.shape[0]
    if est == "linear":
        m = min(ns, nt) // 2 * 2
        total = 0.0
        for i in range(m // 2):
            a, b, c, d = s[2 * i], s[2 * i + 1], t[2 * i], t[2 * i + 1]
            total += k(a, b, gs) + k(c, d, gs) - k(a, d, gs) - k(b, c, gs)
        return total * 2 / m
    ss = sum(k(s[i], s[j], gs) for i in range(ns) for j in range(ns) if est == "biased" or i != j)
    tt = sum(k(t[i], t[j], gs) for i in range(nt) for j in range(nt) if est == "biased" or i != j)
    st = sum(k(s[i], t[j], gs) for i in range(ns) for j in range(nt))
    if est == "biased":
        return ss / ns ** 2 + tt / nt ** 2 - 2 * st / (ns * nt)
    return ss / (ns * (ns - 1)) + tt / (nt * (nt - 1)) - 2 * st / (ns * nt)

def coral(s, t):
    d = s.shape[1]
    return ((torch.cov(s.T) - torch.cov(t.T)) ** 2).sum().item() / (4 * d * d)

g = torch.Generator().manual_seed(3)
s = torch.randn(16, 5, generator=g)
t = 1.5 * torch.randn(13, 5, generator=g) + 0.7
a = torch.randn(20, 6, generator=g) @ torch.randn(6, 6, generator=g)
b = torch.randn(15, 6, generator=g) * 2.0 - 1.0
out = {"s": s, "t": t, "a": a, "b": b}
for est in ["biased", "unbiased", "linear"]:
    out["mmd_" + est] = torch.tensor([mmd(s, t, est)])
    out["mmd3_" + est] = torch.tensor([mmd(s, t, est, 1.5, 3)])
    out["mmdfix_" + est] = torch.tensor([mmd(s, t, est, fixed=[0.5, 2.0, 8.0])])
out["coral_ab"] = torch.tensor([coral(a, b)])
out["coral_st"] = torch.tensor([coral(s, t)])
save(sys.argv[1] + "/ref.safetensors", out)
)PY";

double rel_diff(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }

TEST(AdaptationLosses, MmdAndCoralMatchIndependentPyTorch) {
  SKIP_WITHOUT_PYTHON();
  const fs::path dir = tlab::test::temp_dir("adaptation_losses");
  const fs::path script = tlab::test::write_file(dir / "ref.py", kPython);
  const auto r = tlab::test::shell("/usr/bin/python3 " + script.string() + " " + dir.string());
  ASSERT_EQ(r.code, 0) << r.out;
  std::map<std::string, torch::Tensor> t;
  for (auto& [name, v] : tlab::weights::read_safetensors(dir / "ref.safetensors")) t[name] = v;
  const auto &s = t.at("s"), &tt = t.at("t");
  for (const std::string est : {"biased", "unbiased", "linear"}) {
    da::KernelFamily k;
    k.estimator = est;
    const double ours = da::mk_mmd(s, tt, k).item<double>();
    EXPECT_LE(rel_diff(ours, t.at("mmd_" + est).item<double>()), 1e-5) << est << " " << ours;
    k.kernel_mul = 1.5;
    k.kernel_num = 3;
    EXPECT_LE(rel_diff(da::mk_mmd(s, tt, k).item<double>(), t.at("mmd3_" + est).item<double>()),
              1e-5)
        << est;
    k.bandwidths = {0.5, 2.0, 8.0};
    EXPECT_LE(rel_diff(da::mk_mmd(s, tt, k).item<double>(), t.at("mmdfix_" + est).item<double>()),
              1e-5)
        << est;
    std::printf("MMD^2 %s: ours %.10g, PyTorch %.10g\n", est.c_str(), ours,
                t.at("mmd_" + est).item<double>());
  }
  // The estimators differ (the test would pass a wrong estimator name otherwise).
  EXPECT_GT(rel_diff(t.at("mmd_biased").item<double>(), t.at("mmd_unbiased").item<double>()), 1e-3);
  EXPECT_LE(
      rel_diff(da::coral(t.at("a"), t.at("b")).item<double>(), t.at("coral_ab").item<double>()),
      1e-5);
  EXPECT_LE(rel_diff(da::coral(s, tt).item<double>(), t.at("coral_st").item<double>()), 1e-5);
  // Same distributions: MMD near 0 for large samples, CORAL 0 for one sample against itself.
  EXPECT_EQ(da::coral(s, s).item<double>(), 0.0);
  fs::remove_all(dir);
}

TEST(AdaptationLosses, LossErrorsNameTheProblem) {
  auto x = torch::randn({4, 3}), y = torch::randn({4, 2});
  EXPECT_THAT(tlab::test::error_of<std::invalid_argument>([&] { da::coral(x, y); }),
              HasSubstr("coral: expected two matrices with the same number of columns"));
  EXPECT_THAT(tlab::test::error_of<std::invalid_argument>([&] { da::coral(x.slice(0, 0, 1), x); }),
              HasSubstr("covariances need at least 2 rows per domain"));
  da::KernelFamily k;
  k.estimator = "linear";
  EXPECT_THAT(
      tlab::test::error_of<std::invalid_argument>([&] { da::mk_mmd(x.slice(0, 0, 1), x, k); }),
      HasSubstr("the linear estimator needs at least 2 rows per domain"));
  k.estimator = "cubic";
  EXPECT_THAT(tlab::test::error_of<std::invalid_argument>([&] { da::mk_mmd(x, x, k); }),
              HasSubstr("unknown estimator 'cubic'; expected biased, unbiased or linear"));
}

TEST(AdaptationLosses, GradientReversalIsIdentityForwardAndMinusLambdaBackward) {
  auto x = torch::randn({5, 4}, torch::kDouble).requires_grad_(true);
  auto y = da::grad_reverse(x, 0.3);
  EXPECT_TRUE(torch::equal(y, x));
  auto up = torch::randn({5, 4}, torch::kDouble);
  y.backward(up);
  EXPECT_TRUE(torch::equal(x.grad(), up * -0.3));
  // Through a further op: the chain rule holds (gradient of sum(2 R(x)) = -2 lambda).
  auto x2 = torch::randn({3}).requires_grad_(true);
  (2 * da::grad_reverse(x2, 1.5)).sum().backward();
  EXPECT_TRUE(torch::allclose(x2.grad(), torch::full({3}, -3.0f)));
  // The schedules of Ganin et al. 2016: lambda_p = 2 / (1 + exp(-10 p)) - 1, mu_p factor.
  EXPECT_DOUBLE_EQ(da::grl_lambda(0.0, 10.0), 0.0);
  EXPECT_NEAR(da::grl_lambda(0.5, 10.0), 0.9866142981514303, 1e-15);
  EXPECT_NEAR(da::grl_lambda(1.0, 10.0), 0.9999092042625951, 1e-15);
  EXPECT_DOUBLE_EQ(da::annealed_lr_factor(0.0, 10, 0.75), 1.0);
  EXPECT_NEAR(da::annealed_lr_factor(1.0, 10, 0.75), std::pow(11.0, -0.75), 1e-15);
}

// A known shift: moons, the target rotated by 35 degrees; an MLP; pure unsupervised adaptation
// ([train] epochs = 0) with 5 target labels per class kept out of the unlabelled pool.
const std::string kMoons = R"(name = "moons_da"
seed = 3
device = "cpu"

[source]
plugin = "moons"
domain = "source"
train_size = 400
val_size = 200
test_size = 100

[target]
plugin = "moons"
domain = "target"
angle = 35.0
seed = 2
train_size = 400
val_size = 50
test_size = 400
shots = 5

[backbone]
plugin = "mlp"
hidden = [32, 32]

[[adapters]]
plugin = "linear_head"

[strategy]
plugin = "source_only"
source_epochs = 8

[train]
epochs = 0
batch_size = 32
lr = 0.003
)";

class Adaptation : public ::testing::Test {
 protected:
  fs::path dir_ = tlab::test::temp_dir("adaptation");
  void TearDown() override { fs::remove_all(dir_); }

  // The run of `text` with `overrides`; the message of an error thrown while loading it (bad
  // options) is returned as the reason of a run with status failed.
  tlab::RunOutcome run(tlab::Store& store, const std::string& text,
                       const std::vector<std::string>& overrides) {
    try {
      auto specs = tlab::load_experiment(tlab::test::write_file(dir_ / "da.toml", text), overrides,
                                         loader());
      tlab::RunOptions o;
      o.results_dir = dir_;
      return tlab::execute_run(specs.at(0), loader(), store, o);
    } catch (const std::exception& e) {
      tlab::RunOutcome out;
      out.status = tlab::RunStatus::kFailed;
      out.reason = e.what();
      return out;
    }
  }
  static std::vector<double> values(tlab::Store& store, int64_t id, const std::string& name) {
    std::vector<double> v;
    for (const auto& m : store.metrics(id, name)) v.push_back(m.value);
    return v;
  }
};

TEST_F(Adaptation, EachMethodShrinksTheDomainGapItTargets) {
  tlab::Store store(dir_ / "results.db");
  auto base = run(store, kMoons, {});
  ASSERT_EQ(base.status, tlab::RunStatus::kFinished) << base.reason;
  auto coral = run(store, kMoons, {"strategy.plugin=coral", "strategy.weight=1.0"});
  ASSERT_EQ(coral.status, tlab::RunStatus::kFinished) << coral.reason;
  auto dan = run(store, kMoons, {"strategy.plugin=dan", "strategy.weight=1.0"});
  ASSERT_EQ(dan.status, tlab::RunStatus::kFinished) << dan.reason;
  auto lin = run(store, kMoons,
                 {"strategy.plugin=dan", "strategy.estimator=linear", "strategy.weight=1.0"});
  ASSERT_EQ(lin.status, tlab::RunStatus::kFinished) << lin.reason;
  const auto& b = base.summary;
  std::printf("source_only: coral_logits %.4g mmd_features %.4g target acc %.3f\n",
              b.at("source/final/coral_logits"), b.at("source/final/mmd_features"),
              b.at("target/test/acc"));
  std::printf("coral: coral_logits %.4g target acc %.3f\n",
              coral.summary.at("source/final/coral_logits"), coral.summary.at("target/test/acc"));
  std::printf("dan: mmd_features %.4g (linear estimator %.4g) target acc %.3f\n",
              dan.summary.at("source/final/mmd_features"),
              lin.summary.at("source/final/mmd_features"), dan.summary.at("target/test/acc"));
  // Measured on held-out inputs (source val, target test) with the same function for all.
  EXPECT_LT(coral.summary.at("source/final/coral_logits"), 0.3 * b.at("source/final/coral_logits"));
  EXPECT_LT(dan.summary.at("source/final/mmd_features"), 0.5 * b.at("source/final/mmd_features"));
  EXPECT_LT(lin.summary.at("source/final/mmd_features"), 0.7 * b.at("source/final/mmd_features"));
  // The term each one optimises is logged per epoch (source_epochs = 8).
  EXPECT_EQ(values(store, coral.id, "source/train/coral").size(), 8u);
  EXPECT_EQ(values(store, dan.id, "source/train/mmd").size(), 8u);
  // source_only logs no adaptation term; everyone logs the final distances.
  EXPECT_TRUE(values(store, base.id, "source/train/coral").empty());
  EXPECT_EQ(b.count("source/final/mmd_logits"), 1u);
}

TEST_F(Adaptation, DannDomainClassifierMovesTowardChance) {
  tlab::Store store(dir_ / "results.db");
  // The same domain classifier on features that ignore it (lambda_max = 0: no reversal) tells
  // the domains apart; with the reversal the features fool it. A wider rotation (60 degrees)
  // than the other tests', so that the domains are clearly separable without adaptation.
  // The paper's trade-off (weight 1) without dropout: the reversal at full strength.
  const std::vector<std::string> shift{"target.angle=60", "strategy.source_epochs=8",
                                       "strategy.weight=1", "strategy.dropout=0"};
  auto with = [&](std::vector<std::string> o) {
    o.insert(o.end(), shift.begin(), shift.end());
    return o;
  };
  auto plain = run(store, kMoons, with({"strategy.plugin=dann", "strategy.lambda_max=0"}));
  ASSERT_EQ(plain.status, tlab::RunStatus::kFinished) << plain.reason;
  auto dann = run(store, kMoons, with({"strategy.plugin=dann"}));
  ASSERT_EQ(dann.status, tlab::RunStatus::kFinished) << dann.reason;
  auto p = values(store, plain.id, "source/train/domain_acc");
  auto d = values(store, dann.id, "source/train/domain_acc");
  ASSERT_EQ(d.size(), 8u);
  ASSERT_EQ(p.size(), 8u);
  std::printf(
      "domain_acc without reversal %.3f, dann %.3f (first epoch %.3f); target acc %.3f "
      "vs %.3f\n",
      p.back(), d.back(), d.front(), plain.summary.at("target/test/acc"),
      dann.summary.at("target/test/acc"));
  EXPECT_GT(p.back(), 0.7);
  EXPECT_LT(std::abs(d.back() - 0.5), std::abs(p.back() - 0.5) - 0.1);
  // lambda follows the schedule; the value logged at the end of epoch e is the one of its last
  // step, whose progress is p = (steps taken before it) / (all steps of the stage).
  auto l = values(store, dann.id, "source/train/grl_lambda");
  ASSERT_EQ(l.size(), 8u);
  const double steps = 13;  // 400 / 32 rounded up
  for (int e : {0, 3, 7})
    EXPECT_NEAR(l[e], da::grl_lambda(((e + 1) * steps - 1) / (8 * steps), 10.0), 1e-12) << e;
  // The domain classifier is not part of the model: not in the checkpoint.
  int checkpoints = 0;
  for (const auto& run_dir : fs::directory_iterator(dir_ / "runs")) {
    const fs::path file = run_dir.path() / "model.safetensors";
    if (!fs::exists(file)) continue;
    ++checkpoints;
    for (const auto& [name, t] : tlab::weights::read_safetensors(file))
      EXPECT_TRUE(name.rfind("backbone.", 0) == 0 || name.rfind("head.", 0) == 0) << name;
  }
  EXPECT_EQ(checkpoints, 2);
}

TEST_F(Adaptation, ErrorsSayWhatIsMissingAndHowToFixIt) {
  tlab::Store store(dir_ / "results.db");
  std::string no_source = kMoons;
  no_source.erase(no_source.find("[source]"),
                  no_source.find("[target]") - no_source.find("[source]"));
  EXPECT_THAT(run(store, no_source, {"strategy.plugin=dan"}).reason,
              HasSubstr("dan trains on a labelled source domain: add a [source] table"));
  EXPECT_THAT(run(store, no_source, {}).reason,
              HasSubstr("source_only trains on a labelled source domain"));
  EXPECT_THAT(run(store, kMoons, {"strategy.plugin=coral", "target.shots=0"}).reason,
              HasSubstr("coral adapts to unlabelled target inputs, but the target has none"));
  EXPECT_THAT(run(store, kMoons, {"strategy.plugin=dann", "target.shots=0"}).reason,
              HasSubstr("dann adapts to unlabelled target inputs"));
  std::string gauss = kMoons;
  for (const char* d : {"source", "target"}) {
    auto at = gauss.find(std::string("plugin = \"moons\"\ndomain = \"") + d);
    gauss.replace(at, 16, "plugin = \"gaussians\"");
  }
  gauss.replace(gauss.find("angle = 35.0"), 12, "num_classes = 3");
  EXPECT_THAT(run(store, gauss, {"strategy.plugin=dan"}).reason,
              HasSubstr("the source has 4 classes and the target 3"));
  // Options.
  EXPECT_THAT(run(store, kMoons, {"strategy.plugin=dan", "strategy.layers=[\"fc7\"]"}).reason,
              HasSubstr("dan: layers has 'fc7'; expected \"features\""));
  EXPECT_THAT(
      run(store, kMoons, {"strategy.plugin=dan", "strategy.layers=[\"logits\",\"logits\"]"}).reason,
      HasSubstr("dan: layers lists 'logits' twice"));
  EXPECT_THAT(run(store, kMoons, {"strategy.plugin=dan", "strategy.estimator=cubic"}).reason,
              HasSubstr("cubic"));
  EXPECT_THAT(run(store, kMoons, {"strategy.plugin=coral", "strategy.layer=fc8"}).reason,
              HasSubstr("fc8"));
  EXPECT_THAT(run(store, kMoons, {"strategy.plugin=dann", "strategy.anneal_lr=true"}).reason,
              HasSubstr("dann: anneal_lr scales the loss by mu_p / mu_0, which adam cancels"));
  EXPECT_THAT(run(store, kMoons, {"strategy.plugin=dann", "strategy.hidden=[]"}).reason,
              HasSubstr("hidden"));
  EXPECT_THAT(run(store, kMoons, {"strategy.plugin=coral", "strategy.weight=-1"}).reason,
              HasSubstr("weight"));
  // With SGD the annealed rate runs.
  EXPECT_EQ(run(store, kMoons,
                {"strategy.plugin=dann", "strategy.anneal_lr=true", "train.optimizer=sgd",
                 "strategy.source_epochs=1"})
                .status,
            tlab::RunStatus::kFinished);
}

}  // namespace
