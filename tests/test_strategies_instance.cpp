// Instance-based and semi-supervised strategies: importance_weighting, tradaboost, pseudo_label.
// Their formulas on hand-made tensors (plugins/strategies/common/instance.hpp), then the plugins
// through the real loader and runner on synthetic shifts whose answer is known.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "../plugins/strategies/common/instance.hpp"
#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "run/runner.hpp"
#include "store/store.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"

using ::testing::HasSubstr;
namespace fs = std::filesystem;
namespace ts = tlab_strategy;

namespace {

class InstanceStrategies : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(0); }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_ = tlab::test::temp_dir("instance");
  tlab::PluginLoader loader_{{TLAB_TEST_PLUGIN_DIR}};

  // Runs the experiment `text` (one run) from inside dir_ (relative paths: the run's seed
  // depends on the config text).
  tlab::RunOutcome run(const std::string& text, std::vector<std::string> overrides = {}) {
    const auto cwd = fs::current_path();
    fs::current_path(dir_);
    auto specs =
        tlab::load_experiment(tlab::test::write_file("exp.toml", text), overrides, loader_);
    tlab::Store store("results.db");
    tlab::RunOptions o;
    o.results_dir = ".";
    auto out = tlab::execute_run(specs.at(0), loader_, store, o);
    fs::current_path(cwd);
    return out;
  }
  // The message of the config error `text` raises.
  std::string config_error(const std::string& text) {
    return tlab::test::error_of<std::exception>([&] {
      tlab::load_experiment(tlab::test::write_file(dir_ / "bad.toml", text), {}, loader_);
    });
  }
  // The weights file a run wrote (domain -> weights by row).
  std::map<std::string, std::vector<double>> weights(const std::string& name) {
    std::map<std::string, std::vector<double>> out;
    for (const auto& e : fs::recursive_directory_iterator(dir_))
      if (e.path().filename() == name) {
        std::ifstream in(e.path());
        std::string line;
        std::getline(in, line);
        EXPECT_EQ(line, "domain,row,weight");
        while (std::getline(in, line)) {
          std::stringstream ss(line);
          std::string domain, row, w;
          std::getline(ss, domain, ',');
          std::getline(ss, row, ',');
          std::getline(ss, w);
          EXPECT_EQ(std::stoul(row), out[domain].size());
          out[domain].push_back(std::stod(w));
        }
      }
    return out;
  }
};

double correlation(const torch::Tensor& a, const torch::Tensor& b) {
  auto x = a.to(torch::kDouble) - a.to(torch::kDouble).mean();
  auto y = b.to(torch::kDouble) - b.to(torch::kDouble).mean();
  return ((x * y).sum() / (x.norm() * y.norm())).item<double>();
}

// A CSV of `x` rows (columns x0, x1, ...) with labels `y`.
std::string csv(const torch::Tensor& x, const torch::Tensor& y) {
  std::ostringstream out;
  out.precision(9);
  for (int64_t j = 0; j < x.size(1); ++j) out << "x" << j << ",";
  out << "label\n";
  for (int64_t i = 0; i < x.size(0); ++i) {
    for (int64_t j = 0; j < x.size(1); ++j) out << x[i][j].item<double>() << ",";
    out << y[i].item<int64_t>() << "\n";
  }
  return out.str();
}

// An experiment on the CSV files source.csv and target.csv of the run folder.
std::string experiment(const std::string& strategy_table, int64_t shots = 10,
                       bool with_source = true) {
  std::string s = "name = \"instance\"\nseed = 3\ndevice = \"cpu\"\n";
  if (with_source)
    s += "[source]\nplugin = \"csv\"\npath = \"source.csv\"\nstandardize = false\n"
         "val_fraction = 0.0\n";
  s += "[target]\nplugin = \"csv\"\npath = \"target.csv\"\nstandardize = false\n"
       "val_fraction = 0.0\ntest_fraction = 0.5\nshots = " +
       std::to_string(shots) +
       "\n[backbone]\nplugin = \"mlp\"\nhidden = [16]\n[[adapters]]\nplugin = \"linear_head\"\n"
       "[train]\nepochs = 0\nbatch_size = 32\nlr = 0.01\n[strategy]\n" +
       strategy_table;
  return s;
}

// ---------------------------------------------------------------------------------------------
// importance_weighting

TEST_F(InstanceStrategies, ImportanceWeightsAreClippedAndNormalised) {
  // Raw ratios exp(logit) * n_s/n_t = 200, 2, 1 (n_s/n_t = 2); clipped at 10: 10, 2, 1.
  auto logits = torch::tensor({std::log(100.0), 0.0, std::log(0.5)}, torch::kDouble);
  auto w = ts::importance_weights(logits, 200, 100, 10.0).to(torch::kDouble);
  const double mean = 13.0 / 3.0;
  EXPECT_NEAR(w[0].item<double>(), 10 / mean, 1e-6);
  EXPECT_NEAR(w[1].item<double>(), 2 / mean, 1e-6);
  EXPECT_NEAR(w[2].item<double>(), 1 / mean, 1e-6);
  EXPECT_NEAR(w.mean().item<double>(), 1.0, 1e-6);
  // Shimodaira's flattening: lambda = 0 gives equal weights, 1/2 the square roots.
  EXPECT_TRUE(ts::importance_weights(logits, 200, 100, 10.0, 0.0).allclose(torch::ones({3})));
  auto half = ts::importance_weights(logits, 200, 100, 10.0, 0.5).to(torch::kDouble);
  const double hmean = (10 + std::sqrt(2.0) + 1) / 3.0;  // sqrt(200) = 14.1 is clipped to 10
  EXPECT_NEAR(half[1].item<double>(), std::sqrt(2.0) / hmean, 1e-6);
  EXPECT_NEAR(half[0].item<double>(), 10 / hmean, 1e-6);
  EXPECT_NEAR(ts::effective_sample_size(torch::ones({8})), 8.0, 1e-9);
  EXPECT_NEAR(ts::effective_sample_size(torch::tensor({3.0, 1.0})), 16.0 / 10.0, 1e-9);
}

// 1-D covariate shift with a known density ratio: source N(0, 1), target N(1, 1), so
// p_t(x)/p_s(x) = exp(x - 1/2); a logistic domain classifier is of exactly that family.
TEST_F(InstanceStrategies, DomainClassifierWeightsFollowTheDensityRatio) {
  auto xs = torch::randn({2000, 1}), xt = torch::randn({1000, 1}) + 1.0;
  ts::DomainClassifierOptions o;
  o.kind = "logistic";
  o.epochs = 20;
  o.lr = 0.01;
  auto fit = ts::fit_domain_classifier(xs, xt, o);
  auto w = ts::importance_weights(fit.source_logits, 2000, 1000, 10.0);
  auto truth = torch::exp(xs.squeeze(1) - 0.5).clamp_max(10.0);
  EXPECT_GT(correlation(w, truth), 0.97);
  EXPECT_NEAR(w.to(torch::kDouble).mean().item<double>(), 1.0, 1e-5);
  // The fitted log-ratio's slope and intercept (truth: 1 and -1/2) through the prior correction.
  auto lw = torch::log(ts::importance_weights(fit.source_logits, 2000, 1000, 1e9));
  EXPECT_NEAR(correlation(lw, xs.squeeze(1)), 1.0, 1e-4);
  // Untrained (0 epochs), the classifier's logits are 0: equal weights, the source risk.
  o.epochs = 0;
  auto untrained = ts::fit_domain_classifier(xs, xt, o);
  EXPECT_TRUE(ts::importance_weights(untrained.source_logits, 2000, 1000, 10.0)
                  .allclose(torch::ones({2000})));
  EXPECT_GT(fit.accuracy, 0.6);  // Bayes accuracy between N(0,1) and N(1,1) (1:2 prior): ~0.7
  EXPECT_LT(fit.accuracy, 0.8);
}

// The plugin through the runner: source N(0, 1) and target N(1.5, 1) in a CSV, labels by the
// same rule (covariate shift); the weights file holds one weight per source row.
TEST_F(InstanceStrategies, ImportanceWeightingWeightsSourceExamplesNearTheTarget) {
  auto xs = torch::randn({600, 2}), xt = torch::randn({600, 2}) + 1.5;
  auto rule = [](const torch::Tensor& x) { return x.sum(1).gt(1.5).to(torch::kLong); };
  tlab::test::write_file(dir_ / "source.csv", csv(xs, rule(xs)));
  tlab::test::write_file(dir_ / "target.csv", csv(xt, rule(xt)));
  auto out =
      run(experiment("plugin = \"importance_weighting\"\nsource_epochs = 2\ndomain_epochs = 10\n"
                     "domain_lr = 0.01\nclip = 20\n"));
  ASSERT_EQ(out.status, tlab::RunStatus::kFinished) << out.reason;
  auto w = torch::tensor(weights("importance_weights.csv").at("source"), torch::kDouble);
  ASSERT_EQ(w.size(0), 600);
  EXPECT_NEAR(w.mean().item<double>(), 1.0, 1e-5);
  auto truth = torch::exp(1.5 * xs.sum(1) - 2.25).to(torch::kDouble);  // p_t/p_s
  EXPECT_GT(correlation(w.log(), truth.log()), 0.8);
  // The half of the source nearer the target weighs much more.
  auto near = xs.sum(1).gt(xs.sum(1).median());
  EXPECT_GT(w.masked_select(near).mean().item<double>(),
            2.5 * w.masked_select(near.logical_not()).mean().item<double>());
  EXPECT_LE(out.summary.at("importance/weight_max"), 20.0 / w.min().item<double>());
  EXPECT_LT(out.summary.at("importance/ess"), 600.0);
  EXPECT_GT(out.summary.at("importance/domain_acc"), 0.75);
}

// The same shift with the domain classifier on the backbone's features (here the random mlp's
// at setup, a ReLU projection of the inputs): the nearer half still weighs more.
TEST_F(InstanceStrategies, ImportanceWeightingOnFeatures) {
  auto xs = torch::randn({600, 2}), xt = torch::randn({600, 2}) + 1.5;
  auto rule = [](const torch::Tensor& x) { return x.sum(1).gt(1.5).to(torch::kLong); };
  tlab::test::write_file(dir_ / "source.csv", csv(xs, rule(xs)));
  tlab::test::write_file(dir_ / "target.csv", csv(xt, rule(xt)));
  auto out =
      run(experiment("plugin = \"importance_weighting\"\non = \"features\"\n"
                     "classifier = \"logistic\"\nsource_epochs = 1\ndomain_epochs = 10\n"
                     "domain_lr = 0.01\n"));
  ASSERT_EQ(out.status, tlab::RunStatus::kFinished) << out.reason;
  auto w = torch::tensor(weights("importance_weights.csv").at("source"), torch::kDouble);
  auto near = xs.sum(1).gt(xs.sum(1).median());
  EXPECT_GT(w.masked_select(near).mean().item<double>(),
            1.5 * w.masked_select(near.logical_not()).mean().item<double>());
  EXPECT_NEAR(w.mean().item<double>(), 1.0, 1e-5);
}

TEST_F(InstanceStrategies, ImportanceWeightingErrorsSayWhatIsMissing) {
  auto x = torch::randn({100, 2}), y = x.select(1, 0).gt(0).to(torch::kLong);
  tlab::test::write_file(dir_ / "source.csv", csv(x, y));
  tlab::test::write_file(dir_ / "target.csv", csv(x, y));
  const std::string iw = "plugin = \"importance_weighting\"\n";
  auto no_source = run(experiment(iw, 10, false));
  EXPECT_EQ(no_source.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(no_source.reason, HasSubstr("importance_weighting trains on a labelled source "
                                          "domain: add a [source] table"));
  auto no_pool = run(experiment(iw, 0));
  EXPECT_THAT(no_pool.reason,
              HasSubstr("importance_weighting adapts to unlabelled target inputs, but the target "
                        "has none: keep a few labels per class with [target] shots = K"));
  auto y3 = x.select(1, 0).gt(-0.5).to(torch::kLong) + x.select(1, 0).gt(0.5).to(torch::kLong);
  tlab::test::write_file(dir_ / "source.csv", csv(x, y3));
  auto classes = run(experiment(iw));
  EXPECT_THAT(classes.reason, HasSubstr("the source has 3 classes and the target 2"));
  EXPECT_THAT(config_error(experiment("plugin = \"importance_weighting\"\nclassifier = \"svm\"\n")),
              HasSubstr("svm"));
  EXPECT_THAT(config_error(experiment("plugin = \"importance_weighting\"\nclip = 0.5\n")),
              HasSubstr("clip"));
}

// ---------------------------------------------------------------------------------------------
// tradaboost

// One round by hand: 4 source rows, 2 target rows with weights 1 and 3, N = 10 rounds.
TEST_F(InstanceStrategies, TradaboostUpdateFollowsThePaper) {
  auto w = torch::tensor({1.0, 1.0, 2.0, 1.0, 1.0, 3.0}, torch::kDouble);
  auto wrong = torch::tensor({true, false, true, false, true, false});
  auto r = ts::tradaboost_update(w, wrong, 4, 10);
  EXPECT_NEAR(r.error, 0.25, 1e-12);  // target: weight 1 wrong of 4
  EXPECT_NEAR(r.beta_t, 0.25 / 0.75, 1e-12);
  const double beta = 1.0 / (1.0 + std::sqrt(2.0 * std::log(4.0) / 10.0));
  EXPECT_NEAR(r.beta, beta, 1e-12);
  const std::vector<double> expect{beta, 1.0, 2.0 * beta, 1.0, 3.0, 3.0};
  for (int64_t i = 0; i < 6; ++i) EXPECT_NEAR(w[i].item<double>(), expect[i], 1e-12) << i;
  // eps_t = 0 (the shots fitted) and eps_t >= 1/2 are clamped into (0, 1/2).
  auto w2 = torch::ones({3}, torch::kDouble);
  auto r0 = ts::tradaboost_update(w2, torch::tensor({true, false, false}), 1, 4);
  EXPECT_EQ(r0.error, ts::kMinError);
  auto w3 = torch::ones({3}, torch::kDouble);
  auto r1 = ts::tradaboost_update(w3, torch::tensor({false, true, true}), 1, 4);
  EXPECT_EQ(r1.error, ts::kMaxError);
  EXPECT_NEAR(w3[1].item<double>(), 1.0 / (0.499 / 0.501), 1e-12);
}

// A source whose labels are flipped on a random half of its rows relative to the target's rule
// y = [x0 > 0]: after the rounds the contradicting source rows weigh much less.
TEST_F(InstanceStrategies, TradaboostDownWeightsSourceThatContradictsTheTarget) {
  auto xs = torch::rand({400, 2}) * 2 - 1, xt = torch::rand({400, 2}) * 2 - 1;
  auto flipped = torch::rand({400}).lt(0.5);
  auto ys = xs.select(1, 0).gt(0).logical_xor(flipped).to(torch::kLong);
  tlab::test::write_file(dir_ / "source.csv", csv(xs, ys));
  tlab::test::write_file(dir_ / "target.csv", csv(xt, xt.select(1, 0).gt(0).to(torch::kLong)));
  auto out = run(experiment("plugin = \"tradaboost\"\nrounds = 10\nround_epochs = 3\n", 10));
  ASSERT_EQ(out.status, tlab::RunStatus::kFinished) << out.reason;
  auto w = weights("tradaboost_weights.csv");
  ASSERT_EQ(w.at("source").size(), 400u);
  ASSERT_EQ(w.at("target").size(), 20u);
  auto ws = torch::tensor(w.at("source"), torch::kDouble);
  const double bad = ws.masked_select(flipped).mean().item<double>();
  const double good = ws.masked_select(flipped.logical_not()).mean().item<double>();
  EXPECT_LT(bad, 0.2 * good) << "contradicting " << bad << ", agreeing " << good;
  EXPECT_NEAR(out.summary.at("tradaboost/beta"),
              1.0 / (1.0 + std::sqrt(2.0 * std::log(400.0) / 10.0)), 1e-12);
  EXPECT_GT(out.summary.at("target/test/acc"), 0.85);
}

TEST_F(InstanceStrategies, TradaboostErrorsSayWhatIsMissing) {
  auto x = torch::randn({100, 2}), y = x.select(1, 0).gt(0).to(torch::kLong);
  tlab::test::write_file(dir_ / "target.csv", csv(x, y));
  tlab::test::write_file(dir_ / "source.csv", csv(torch::randn({100, 3}), y));
  const std::string tb = "plugin = \"tradaboost\"\nrounds = 2\n";
  auto no_source = run(experiment(tb, 10, false));
  EXPECT_THAT(no_source.reason, HasSubstr("tradaboost trains on a labelled source domain"));
  EXPECT_THAT(config_error(experiment("plugin = \"tradaboost\"\nrounds = 0\n")),
              HasSubstr("rounds"));
}

// ---------------------------------------------------------------------------------------------
// pseudo_label

TEST_F(InstanceStrategies, PseudoLabelRampFollowsLee2013) {
  const double a[] = {0, 0, 0, 0.75, 1.5, 2.25, 3, 3, 3};
  for (int64_t t = 0; t < 9; ++t) EXPECT_DOUBLE_EQ(ts::pseudo_label_alpha(t, 2, 6, 3.0), a[t]);
  EXPECT_DOUBLE_EQ(ts::pseudo_label_alpha(3, 4, 4, 2.0), 0.0);  // t1 = t2: a step
  EXPECT_DOUBLE_EQ(ts::pseudo_label_alpha(4, 4, 4, 2.0), 2.0);
}

TEST_F(InstanceStrategies, PseudoLabelsOnlyAboveTheThreshold) {
  // Top probabilities: row 0 ~0.98 (class 1), row 1 ~0.6 (class 0), row 2 ~0.999 (class 2).
  auto scores = torch::tensor({{0.0, 4.0, 0.0}, {1.0, 0.6, 0.0}, {0.0, 0.0, 8.0}}).requires_grad_();
  torch::Tensor mask;
  auto loss = ts::pseudo_label_loss(scores, 0.95, &mask);
  EXPECT_TRUE(mask.equal(torch::tensor({true, false, true})));
  auto ls = torch::log_softmax(scores.detach(), 1);
  const double expect = -(ls[0][1] + ls[2][2]).item<double>() / 3.0;  // mean over all 3 rows
  EXPECT_NEAR(loss.item<double>(), expect, 1e-6);
  loss.backward();
  EXPECT_EQ(scores.grad()[1].abs().sum().item<double>(), 0.0);  // below the threshold: no gradient
  torch::Tensor none;
  EXPECT_EQ(ts::pseudo_label_loss(scores, 1.0, &none).item<double>(), 0.0);
  EXPECT_EQ(none.sum().item<int64_t>(), 0);
}

// Gaussian classes rotated and translated (gaussians shift = 1): the source model gets ~84% of
// the target; confident pseudo-labels on the unlabelled target move it further, same seed.
TEST_F(InstanceStrategies, PseudoLabelsHelpOnAShift) {
  const std::string text = R"(name = "pseudo"
seed = 2
device = "cpu"
[source]
plugin = "gaussians"
domain = "source"
val_size = 100
[target]
plugin = "gaussians"
domain = "target"
val_size = 100
shots = 5
[backbone]
plugin = "mlp"
hidden = [32, 32]
[[adapters]]
plugin = "linear_head"
[train]
epochs = 0
batch_size = 32
[strategy]
plugin = "pseudo_label"
)";
  auto with = run(text);
  auto without = run(text, {"strategy.alpha_f=0"});
  ASSERT_EQ(with.status, tlab::RunStatus::kFinished) << with.reason;
  ASSERT_EQ(without.status, tlab::RunStatus::kFinished) << without.reason;
  EXPECT_GT(with.summary.at("target/test/acc"), without.summary.at("target/test/acc") + 0.01);
  EXPECT_GT(with.summary.at("pseudo_label/confident_fraction"), 0.5);
  EXPECT_LT(with.summary.at("pseudo_label/confident_fraction"), 1.0);
}

TEST_F(InstanceStrategies, PseudoLabelErrorsSayWhatIsWrong) {
  auto x = torch::randn({100, 2}), y = x.select(1, 0).gt(0).to(torch::kLong);
  tlab::test::write_file(dir_ / "target.csv", csv(x, y));
  tlab::test::write_file(dir_ / "source.csv", csv(torch::randn({100, 3}), y));
  auto no_pool = run(experiment("plugin = \"pseudo_label\"\n", 0, false));
  EXPECT_THAT(no_pool.reason, HasSubstr("pseudo_label adapts to unlabelled target inputs, but the "
                                        "target has none"));
  EXPECT_THAT(run(experiment("plugin = \"pseudo_label\"\nt1 = 5\nt2 = 3\n")).reason,
              HasSubstr("pseudo_label: t2 = 3 is before t1 = 5; the ramp-up needs t1 <= t2"));
  EXPECT_THAT(config_error(experiment("plugin = \"pseudo_label\"\nthreshold = 1.5\n")),
              HasSubstr("threshold"));
}

}  // namespace
