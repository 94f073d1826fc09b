// Evaluation beyond accuracy (issue 20): the counts the engine accumulates on the device equal
// per-example counting and scikit-learn's top-k; a run records the [eval] metrics as summaries
// and the counts in the evaluations table; [train] checkpoint = "best" keeps the best
// validation epoch and patience stops early; bad settings fail with messages that say what fits.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "results/classification.hpp"
#include "run/evaluation.hpp"
#include "run/export.hpp"
#include "run/model_io.hpp"
#include "run/runner.hpp"
#include "run/session.hpp"
#include "store/store.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"

using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

// Scores looked up by example: x holds each example's row number.
struct Table : torch::nn::Module {};

tlab::SplitEvaluation evaluate_table(const torch::Tensor& scores, const torch::Tensor& labels,
                                     const std::vector<int64_t>& top_k, int64_t bins) {
  Table module;
  tlab::Split split;
  split.x = torch::arange(scores.size(0), torch::kLong).to(torch::kFloat).unsqueeze(1);
  split.y = labels;
  auto forward = [&](const torch::Tensor& x) {
    return scores.index_select(0, x.squeeze(1).to(torch::kLong));
  };
  return tlab::evaluate_split(module, forward, split, torch::kCPU, scores.size(1), top_k, bins);
}

}  // namespace

// Integer scores give many ties: the device counts equal counting example by example with the
// same rules (argmax takes the first highest score; top-k ranks equal scores of a higher class
// first, as scikit-learn's stable sort reversed does).
TEST(Evaluation, DeviceCountsEqualPerExampleCounting) {
  torch::manual_seed(3);
  const int64_t n = 700, classes = 6;  // three batches of 256
  const auto scores = torch::randint(0, 4, {n, classes}, torch::kLong).to(torch::kFloat);
  const auto labels = torch::randint(0, classes, {n}, torch::kLong);
  const auto e = evaluate_table(scores, labels, {2, 3}, 10);

  tlab::ClassificationCounts expected(classes, {2, 3}, 10);
  const auto s = scores.to(torch::kDouble);
  const auto probs = torch::softmax(s, 1);
  double loss = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = labels[i].item<int64_t>();
    const int64_t predicted = s[i].argmax().item<int64_t>();
    const double label_score = s[i][y].item<double>();
    int64_t rank = 0;
    for (int64_t c = 0; c < classes; ++c) {
      const double v = s[i][c].item<double>();
      rank += v > label_score || (v == label_score && c > y);
    }
    expected.add(y, predicted, probs[i][predicted].item<double>(), rank);
    loss -= std::log(probs[i][y].item<double>());
  }
  EXPECT_EQ(e.counts.confusion, expected.confusion);
  EXPECT_EQ(e.counts.top_k_correct, expected.top_k_correct);
  EXPECT_EQ(e.counts.bin_count, expected.bin_count);
  EXPECT_EQ(e.counts.bin_correct, expected.bin_correct);
  for (std::size_t b = 0; b < expected.bin_confidence.size(); ++b)
    EXPECT_NEAR(e.counts.bin_confidence[b], expected.bin_confidence[b], 1e-9) << "bin " << b;
  EXPECT_NEAR(e.loss, loss / n, 1e-12);
}

// The same scores and labels through scikit-learn: top_k_accuracy_score (ties included),
// accuracy, balanced accuracy and macro F1 of the argmax predictions.
TEST(Evaluation, TopKAndMetricsEqualScikitLearnOnTheSameScores) {
  if (tlab::test::shell("/usr/bin/python3 -c 'import sklearn, numpy'").code != 0)
    GTEST_SKIP() << "/usr/bin/python3 cannot import sklearn: apt install python3-sklearn";
  torch::manual_seed(5);
  const int64_t n = 300, classes = 5;
  auto scores = torch::randint(0, 3, {n, classes}, torch::kLong).to(torch::kFloat);
  scores.slice(0, 0, 100) = torch::randn({100, classes});  // and some without ties
  // Class 4 never occurs in the labels: it still counts where it is predicted.
  const auto labels = torch::randint(0, classes - 1, {n}, torch::kLong);
  const auto e = evaluate_table(scores, labels, {2, 3}, 15);
  const auto report = tlab::summarize(e.counts);

  const auto dir = tlab::test::temp_dir("eval_sklearn");
  std::string text;
  for (int64_t i = 0; i < n; ++i) {
    text += std::to_string(labels[i].item<int64_t>());
    for (int64_t c = 0; c < classes; ++c)
      text += fmt::format(" {:.9g}", scores[i][c].item<float>());
    text += "\n";
  }
  tlab::test::write_file(dir / "scores.txt", text);
  tlab::test::write_file(dir / "check.py", R"(import sys, warnings, numpy as np
warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true": on purpose
from sklearn.metrics import top_k_accuracy_score, accuracy_score, balanced_accuracy_score, f1_score
d = np.loadtxt(sys.argv[1]); y = d[:, 0].astype(int); s = d[:, 1:]
labels = list(range(s.shape[1])); p = s.argmax(1)
print(repr(top_k_accuracy_score(y, s, k=2, labels=labels)),
      repr(top_k_accuracy_score(y, s, k=3, labels=labels)), repr(accuracy_score(y, p)),
      repr(balanced_accuracy_score(y, p)), repr(f1_score(y, p, average="macro", zero_division=0)))
)");
  const auto r = tlab::test::shell("/usr/bin/python3 " + (dir / "check.py").string() + " " +
                                   (dir / "scores.txt").string());
  ASSERT_EQ(r.code, 0) << r.out;
  double top2 = 0, top3 = 0, acc = 0, balanced = 0, f1 = 0;
  ASSERT_EQ(std::sscanf(r.out.c_str(), "%lf %lf %lf %lf %lf", &top2, &top3, &acc, &balanced, &f1),
            5)
      << r.out;
  EXPECT_NEAR(report.top_k.at(2), top2, 1e-12);
  EXPECT_NEAR(report.top_k.at(3), top3, 1e-12);
  EXPECT_NEAR(report.accuracy, acc, 1e-12);
  EXPECT_NEAR(report.balanced_accuracy, balanced, 1e-12);
  EXPECT_NEAR(report.f1_macro, f1, 1e-12);
  fs::remove_all(dir);
}

TEST(Evaluation, ScoresOfAnotherWidthAreRefusedNamingBoth) {
  Table module;
  tlab::Split split;
  split.x = torch::zeros({4, 1});
  split.y = torch::zeros({4}, torch::kLong);
  auto forward = [](const torch::Tensor& x) { return torch::zeros({x.size(0), 3}); };
  EXPECT_THAT(tlab::test::error_of<std::invalid_argument>(
                  [&] { tlab::evaluate_split(module, forward, split, torch::kCPU, 5, {}, 15); }),
              HasSubstr("the model gives 3 class scores per example but the data has 5 classes"));
}

// ---------------------------------------------------------------------------------------------
// Through the runner

namespace {

const std::string kExperiment = R"(name = "evaluation"
seed = 3
device = "cpu"

[target]
plugin = "gaussians"
domain = "target"
train_size = 120
val_size = 60
test_size = 90

[backbone]
plugin = "mlp"
hidden = [8]

[[adapters]]
plugin = "linear_head"

[strategy]
plugin = "scratch"

[train]
epochs = 6
batch_size = 16
lr = 0.05
)";

class RunEvaluation : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tlab::test::temp_dir(std::string("evaluation_") +
                                ::testing::UnitTest::GetInstance()->current_test_info()->name());
    store_ = std::make_unique<tlab::Store>(dir_ / "results.db");
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  tlab::RunSpec spec(const std::vector<std::string>& overrides, const std::string& extra = "") {
    auto path = tlab::test::write_file(dir_ / "e.toml", kExperiment + extra);
    return tlab::load_experiment(path, overrides, loader_).at(0);
  }
  tlab::RunOutcome run(const std::vector<std::string>& overrides, const std::string& extra = "") {
    tlab::RunOptions o;
    o.results_dir = dir_;
    return tlab::execute_run(spec(overrides, extra), loader_, *store_, o);
  }
  std::vector<double> metric(const tlab::RunOutcome& r, const std::string& name) {
    std::vector<double> v;
    for (const auto& row : store_->metrics(r.id, name)) v.push_back(row.value);
    return v;
  }
  std::string config_error(const std::vector<std::string>& overrides,
                           const std::string& extra = "") {
    return tlab::test::error_of<tlab::ConfigError>([&] { spec(overrides, extra); });
  }
  fs::path dir_;
  std::unique_ptr<tlab::Store> store_;
  tlab::PluginLoader loader_{{TLAB_TEST_PLUGIN_DIR, TLAB_TEST_FIXTURE_DIR}};
};

}  // namespace

TEST_F(RunEvaluation, DefaultMetricsAreSummariesAndCountsAreStored) {
  const auto r = run({});
  ASSERT_EQ(r.status, tlab::RunStatus::kFinished) << r.reason;
  for (const char* split : {"val", "test"})
    for (const auto& m : tlab::default_metrics())
      EXPECT_TRUE(r.summary.count(fmt::format("target/{}/{}", split, m))) << split << " " << m;
  const auto evaluations = store_->evaluations(r.id);
  ASSERT_EQ(evaluations.size(), 2u);
  EXPECT_EQ(evaluations[0].name, "target/test");
  EXPECT_EQ(evaluations[1].name, "target/val");
  const auto counts = tlab::ClassificationCounts::from_json(evaluations[0].counts);
  EXPECT_EQ(counts.total(), 90);
  const auto report = tlab::summarize(counts);
  EXPECT_DOUBLE_EQ(report.f1_macro, r.summary.at("target/test/f1_macro"));
  EXPECT_DOUBLE_EQ(report.accuracy, r.summary.at("target/test/acc"));
  EXPECT_DOUBLE_EQ(evaluations[0].loss, r.summary.at("target/test/loss"));
  // The run's resolved config does not mention [eval] or the selection keys it did not set, so
  // that the run keys of existing experiments stay what they were.
  const auto config = store_->run(r.id).config_toml;
  EXPECT_THAT(config, ::testing::Not(HasSubstr("[eval]")));
  EXPECT_THAT(config, ::testing::Not(HasSubstr("checkpoint")));
}

TEST_F(RunEvaluation, EvalTableChoosesTheMetrics) {
  const auto r =
      run({}, "\n[eval]\nmetrics = [\"top2_acc\", \"per_class\", \"ece\"]\ncalibration_bins = 5\n");
  ASSERT_EQ(r.status, tlab::RunStatus::kFinished) << r.reason;
  EXPECT_TRUE(r.summary.count("target/test/acc"));  // always
  EXPECT_TRUE(r.summary.count("target/test/loss"));
  EXPECT_TRUE(r.summary.count("target/test/top2_acc"));
  EXPECT_TRUE(r.summary.count("target/test/ece"));
  EXPECT_TRUE(r.summary.count("target/test/per_class/0/f1"));
  EXPECT_TRUE(r.summary.count("target/test/per_class/3/recall"));
  EXPECT_FALSE(r.summary.count("target/test/f1_macro"));
  const auto counts = tlab::ClassificationCounts::from_json(store_->evaluations(r.id)[0].counts);
  EXPECT_EQ(counts.bin_count.size(), 5u);
  EXPECT_EQ(counts.top_k, std::vector<int64_t>{2});
  EXPECT_THAT(store_->run(r.id).config_toml, HasSubstr("calibration_bins = 5"));
}

// The final summaries come from the kept epoch: its validation accuracy is the best of the
// epochs' (the first best on ties), and the model evaluated and saved is that epoch's.
TEST_F(RunEvaluation, BestCheckpointKeepsTheBestValidationEpoch) {
  const auto r = run({"train.checkpoint=best", "train.epochs=8", "train.lr=0.3"});
  ASSERT_EQ(r.status, tlab::RunStatus::kFinished) << r.reason;
  const auto val = metric(r, "target/val/acc");
  ASSERT_EQ(val.size(), 8u);
  const auto best = std::max_element(val.begin(), val.end()) - val.begin();
  EXPECT_EQ(r.summary.at("target/train/selected_epoch"), static_cast<double>(best + 1));
  EXPECT_EQ(r.summary.at("target/train/epochs_run"), 8.0);
  EXPECT_DOUBLE_EQ(r.summary.at("target/val/acc"), val[static_cast<std::size_t>(best)]);
  EXPECT_DOUBLE_EQ(r.summary.at("target/test/acc"),
                   metric(r, "target/test/acc")[static_cast<std::size_t>(best)]);

  // Monitoring the loss keeps the epoch with the lowest validation loss.
  const auto l =
      run({"train.checkpoint=best", "train.monitor=loss", "train.epochs=8", "train.lr=0.3"});
  ASSERT_EQ(l.status, tlab::RunStatus::kFinished) << l.reason;
  const auto losses = metric(l, "target/val/loss");
  const auto lowest = std::min_element(losses.begin(), losses.end()) - losses.begin();
  EXPECT_EQ(l.summary.at("target/train/selected_epoch"), static_cast<double>(lowest + 1));
  EXPECT_NEAR(l.summary.at("target/val/loss"), losses[static_cast<std::size_t>(lowest)], 1e-12);

  // checkpoint "last" (the default) keeps the last epoch.
  const auto last = run({"train.epochs=8", "train.lr=0.3"});
  EXPECT_DOUBLE_EQ(last.summary.at("target/val/acc"), metric(last, "target/val/acc").back());
  EXPECT_FALSE(last.summary.count("target/train/selected_epoch"));
}

// A learning rate too small to move anything: the validation metric never improves after the
// first epoch, so patience 2 stops after epoch 3.
TEST_F(RunEvaluation, PatienceStopsWhenValidationStopsImproving) {
  const auto r =
      run({"train.patience=2", "train.epochs=10", "train.lr=1e-12", "train.monitor=f1_macro"});
  ASSERT_EQ(r.status, tlab::RunStatus::kFinished) << r.reason;
  EXPECT_EQ(metric(r, "target/train/loss").size(), 3u);
  EXPECT_EQ(metric(r, "target/val/f1_macro").size(), 3u);
  EXPECT_EQ(r.summary.at("target/train/epochs_run"), 3.0);
  EXPECT_EQ(r.summary.at("target/train/selected_epoch"), 3.0);  // checkpoint "last"
}

TEST_F(RunEvaluation, BadSettingsSayWhatFits) {
  EXPECT_THAT(config_error({}, "\n[eval]\nmetrics = [\"f1\"]\n"),
              HasSubstr("eval.metrics: unknown metric \"f1\"; expected one of acc, loss, "
                        "balanced_acc, precision_macro, recall_macro, f1_macro, ece, "
                        "top<k>_acc (e.g. top5_acc) or per_class"));
  EXPECT_THAT(config_error({}, "\n[eval]\nmetrics = [\"top1_acc\"]\n"),
              HasSubstr("top-1 accuracy is \"acc\""));
  EXPECT_THAT(config_error({}, "\n[eval]\nmetrics = []\n"), HasSubstr("'eval.metrics' is empty"));
  EXPECT_THAT(config_error({}, "\n[eval]\nmetrics = [\"ece\", \"ece\"]\n"),
              HasSubstr("lists \"ece\" twice"));
  EXPECT_THAT(config_error({}, "\n[eval]\nbins = 3\n"), HasSubstr("bins"));
  EXPECT_THAT(config_error({"train.checkpoint=first"}), HasSubstr("train.checkpoint"));
  EXPECT_THAT(config_error({"train.monitor=accuracy"}),
              HasSubstr("train.monitor: unknown metric \"accuracy\""));
  EXPECT_THAT(config_error({"train.monitor=per_class"}), HasSubstr("has one value per class"));
  EXPECT_THAT(config_error({"train.patience=-1"}), HasSubstr("train.patience"));
  // Selection needs a validation split: the run fails before training, saying so.
  const auto r = run({"train.checkpoint=best", "target.val_size=0"});
  EXPECT_EQ(r.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(r.reason, HasSubstr("selects epochs on the target's validation split, but the "
                                  "target dataset has none"));
}

// ---------------------------------------------------------------------------------------------
// tlab eval

// The run's own target again gives the run's own numbers; the source domain is another
// column; every failure says which input and what would fit, and writes nothing.
TEST_F(RunEvaluation, EvalCommandEvaluatesAFinishedRunOnOtherDomains) {
  const auto r = run({});
  ASSERT_EQ(r.status, tlab::RunStatus::kFinished) << r.reason;
  const std::string tlab = TLAB_TEST_BIN_DIR + "/tlab --plugin-path " + TLAB_TEST_PLUGIN_DIR +
                           " eval --db " + (dir_ / "results.db").string() + " ";
  auto out = tlab::test::shell(tlab + std::to_string(r.id) +
                               " -m target.domain=source,target --split val,test");
  ASSERT_EQ(out.code, 0) << out.out;
  EXPECT_THAT(out.out, HasSubstr("eval/source/test"));
  EXPECT_THAT(out.out, HasSubstr("eval/target/val"));
  const auto rows = store_->list_runs({r.id}).at(0);
  EXPECT_DOUBLE_EQ(*rows.summary("eval/target/test/acc"), r.summary.at("target/test/acc"));
  EXPECT_DOUBLE_EQ(*rows.summary("eval/target/val/f1_macro"), r.summary.at("target/val/f1_macro"));
  ASSERT_NE(rows.summary("eval/source/test/ece"), nullptr);
  const auto evaluations = store_->evaluations(r.id);
  ASSERT_EQ(evaluations.size(), 6u);  // target/{val,test} and eval/{source,target}/{val,test}
  EXPECT_EQ(evaluations[0].name, "eval/source/test");
  EXPECT_THAT(evaluations[0].dataset, HasSubstr("domain = \"source\""));

  // results show prints each evaluation's confusion matrix.
  const auto shown =
      tlab::test::shell(TLAB_TEST_BIN_DIR + "/tlab results show " + std::to_string(r.id) +
                        " --db " + (dir_ / "results.db").string());
  ASSERT_EQ(shown.code, 0) << shown.out;
  EXPECT_THAT(shown.out, HasSubstr("Evaluation eval/source/test (90 examples"));
  EXPECT_THAT(shown.out, HasSubstr("true \\ predicted"));

  // A second run, evaluated with the first by a range of ids: the cross-domain matrix has one
  // row per strategy and one column per evaluated domain, mean ± s.e. over the two runs.
  const auto second = run({"seed=4"});
  ASSERT_EQ(second.status, tlab::RunStatus::kFinished) << second.reason;
  out = tlab::test::shell(tlab + fmt::format("{}-{}", r.id, second.id) +
                          " -m target.domain=source,target");
  ASSERT_EQ(out.code, 0) << out.out;
  EXPECT_THAT(out.out, HasSubstr("2 runs evaluated"));
  const std::string db = " --db " + (dir_ / "results.db").string();
  const auto matrix =
      tlab::test::shell(TLAB_TEST_BIN_DIR + "/tlab results compare --cross-domain" + db);
  ASSERT_EQ(matrix.code, 0) << matrix.out;
  EXPECT_THAT(matrix.out, HasSubstr("eval/*/test/acc"));
  EXPECT_THAT(matrix.out, HasSubstr("columns = the domains evaluated with tlab eval"));
  EXPECT_THAT(matrix.out, HasSubstr("strategy.plugin  source"));
  EXPECT_THAT(matrix.out, HasSubstr(" ± "));  // two seeds per cell
  const auto f1 = tlab::test::shell(TLAB_TEST_BIN_DIR +
                                    "/tlab results compare --cross-domain --metric val/f1_macro" +
                                    db + " --format csv");
  ASSERT_EQ(f1.code, 0) << f1.out;
  EXPECT_THAT(f1.out, HasSubstr("source mean,source se,source n"));
  const auto wrong = tlab::test::shell(
      TLAB_TEST_BIN_DIR + "/tlab results compare --cross-domain --metric test/top9_acc" + db);
  EXPECT_EQ(wrong.code, 2);
  EXPECT_THAT(wrong.out, HasSubstr("no evaluation in"));
  EXPECT_THAT(wrong.out, HasSubstr("has the metric 'test/top9_acc'"));
  // The HTML report: the same matrix for test accuracy, and the confusion heat maps.
  const auto report = tlab::test::shell(TLAB_TEST_BIN_DIR + "/tlab results report" + db +
                                        " --output " + (dir_ / "report.html").string());
  ASSERT_EQ(report.code, 0) << report.out;
  const std::string html = tlab::test::read_file(dir_ / "report.html");
  EXPECT_THAT(html, HasSubstr("Cross-domain evaluation: test accuracy"));
  EXPECT_THAT(html, HasSubstr("<th>source</th><th>target</th>"));
  EXPECT_THAT(html, HasSubstr("Confusion matrices: target test"));
  EXPECT_THAT(html, HasSubstr("<table class=\"confusion\">"));

  // Bad input: nothing is written.
  auto fails = [&](const std::string& args, const std::string& message) {
    const auto res = tlab::test::shell(tlab + args);
    EXPECT_EQ(res.code, 2) << args << "\n" << res.out;
    EXPECT_THAT(res.out, HasSubstr(message)) << args;
  };
  fails("9999999999", "no run '9999999999'");  // not a uuid's start either
  fails(std::to_string(r.id) + " train.lr=0.1", "changes 'train.lr'");
  fails(std::to_string(r.id) + " target.num_classes=3",
        fmt::format("run {}'s model predicts 4 classes but dataset 'gaussians' (domain 'target') "
                    "has 3",
                    r.id));
  fails(std::to_string(r.id) + " target.dim=5",
        fmt::format("run {}'s model takes examples of shape 16 but dataset 'gaussians' (domain "
                    "'target') gives 5",
                    r.id));
  fails(std::to_string(r.id) + " 'eval.metrics=[f2]'", "unknown metric \"f2\"");
  fails(std::to_string(r.id) + " --split dev", "--split 'dev' is not a split");
  fails(std::to_string(r.id) + " target.val_size=0 --split val", "has no val split");
  const auto failed = run({"train.checkpoint=best", "target.val_size=0"});
  ASSERT_EQ(failed.status, tlab::RunStatus::kFailed);
  fails(std::to_string(failed.id),
        fmt::format("run {} is failed (train.checkpoint = \"best\"", failed.id));
  EXPECT_EQ(store_->evaluations(r.id).size(), 6u);
  EXPECT_TRUE(store_->evaluations(failed.id).empty());
  // A list with an unfinished run evaluates none of them.
  fails(fmt::format("{},{} -m target.domain=source", second.id, failed.id),
        fmt::format("run {} is failed", failed.id));
  EXPECT_EQ(store_->evaluations(second.id).size(), 4u);
}

// ---------------------------------------------------------------------------------------------
// tlab export and tlab predict

namespace {

void write_raw(const fs::path& file, const torch::Tensor& t) {
  auto c = t.to(torch::kFloat).contiguous();
  std::ofstream(file, std::ios::binary)
      .write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
}

}  // namespace

// The exported module gives the run's outputs in Debian's Python PyTorch (torch.jit.load), on a
// batch size it was not traced with; LoRA's factors are merged into the weights it holds.
TEST_F(RunEvaluation, ExportedTorchScriptGivesTheRunsOutputsInPython) {
  const bool python = tlab::test::shell("/usr/bin/python3 -c 'import torch'").code == 0;
  const std::string lora = "\n[[adapters]]\nplugin = \"lora\"\ntargets = [\"layer*\"]\nrank = 2\n";
  // LoRA attaches before the head: the experiment's adapters are replaced.
  std::string text = kExperiment;
  text.replace(text.find("[[adapters]]"), std::string("[[adapters]]").size(),
               lora + "\n[[adapters]]");
  for (const auto& [name, experiment] :
       std::vector<std::pair<std::string, std::string>>{{"plain", kExperiment}, {"lora", text}}) {
    auto path = tlab::test::write_file(dir_ / (name + ".toml"), experiment);
    tlab::RunOptions o;
    o.results_dir = dir_;
    const auto r =
        tlab::execute_run(tlab::load_experiment(path, {}, loader_).at(0), loader_, *store_, o);
    ASSERT_EQ(r.status, tlab::RunStatus::kFinished) << name << ": " << r.reason;
    const fs::path module = dir_ / (name + ".pt");
    const auto out =
        tlab::test::shell(TLAB_TEST_BIN_DIR + "/tlab --plugin-path " + TLAB_TEST_PLUGIN_DIR +
                          " export " + std::to_string(r.id) + " --db " +
                          (dir_ / "results.db").string() + " --output " + module.string());
    ASSERT_EQ(out.code, 0) << name << ": " << out.out;
    EXPECT_THAT(out.out, HasSubstr("checked on 64 examples"));
    const std::string meta = tlab::test::read_file(dir_ / (name + ".json"));
    EXPECT_THAT(meta, HasSubstr("\"format\": \"tlab-torchscript\""));
    EXPECT_THAT(meta, HasSubstr("\"num_classes\": 4"));
    EXPECT_THAT(meta, HasSubstr("\"input_dtype\": \"float32\""));
    if (!python) continue;
    // The run's own model on 5 new inputs, as the reference.
    tlab::Context ctx;
    tlab::PrefixLogger log("test");
    ctx.log = &log;
    auto model = tlab::load_run_model(store_->run(r.id).run_dir, "run", loader_, ctx, {16});
    torch::manual_seed(11);
    const auto x = torch::randn({5, 16});
    torch::Tensor expected;
    {
      torch::NoGradGuard no_grad;
      expected = model->forward(x);
    }
    write_raw(dir_ / "x.raw", x);
    write_raw(dir_ / "y.raw", expected);
    tlab::test::write_file(dir_ / "check.py", R"(import sys, numpy as np, torch
m = torch.jit.load(sys.argv[1])
x = torch.from_numpy(np.fromfile(sys.argv[2], dtype=np.float32).reshape(5, 16))
y = torch.from_numpy(np.fromfile(sys.argv[3], dtype=np.float32).reshape(5, 4))
print("diff", float((m(x) - y).abs().max()))
print("keys", " ".join(sorted(m.state_dict().keys())))
)");
    const auto py = tlab::test::shell("/usr/bin/python3 " + (dir_ / "check.py").string() + " " +
                                      module.string() + " " + (dir_ / "x.raw").string() + " " +
                                      (dir_ / "y.raw").string());
    ASSERT_EQ(py.code, 0) << py.out;
    double diff = 1;
    ASSERT_EQ(std::sscanf(py.out.c_str(), "diff %lf", &diff), 1) << py.out;
    EXPECT_LE(diff, 1e-5) << name;
    EXPECT_THAT(py.out, HasSubstr("backbone.layer0.weight"));
    EXPECT_THAT(py.out, HasSubstr("head.0.weight"));
    EXPECT_THAT(py.out, ::testing::Not(HasSubstr("lora"))) << "LoRA is merged into the weights";
  }
  if (!python) GTEST_SKIP() << "/usr/bin/python3 cannot import torch: install python3-torch";
}

// What tracing cannot keep is refused with the reason, never exported wrong: a forward pass that
// reads the batch size as a number (fixed to the example's by the tracer), and one that fails.
TEST(Export, ModelsTracingCannotCaptureAreRefusedSayingWhy) {
  struct FixedBatch : torch::nn::Module {
    torch::nn::Linear fc{nullptr};
    FixedBatch() { fc = register_module("fc", torch::nn::Linear(12, 3)); }
    torch::Tensor forward(const torch::Tensor& x) { return fc(x.reshape({x.size(0), -1})); }
  };
  auto model = std::make_shared<FixedBatch>();
  auto forward = [&](const torch::Tensor& x) { return model->forward(x); };
  const auto example = torch::randn({2, 3, 4}), check = torch::randn({5, 3, 4});
  tlab::ExportCheck ok;
  // Reshape with a size read in C++ is fine while the check batch has that size...
  tlab::trace_module(*model, forward, example, torch::randn({2, 3, 4}), "the model", &ok);
  EXPECT_LE(ok.max_abs_diff, 1e-6);
  // ...and refused on another: the tracer fixed the batch size to 2.
  EXPECT_THAT(tlab::test::error_of<tlab::ExportError>(
                  [&] { tlab::trace_module(*model, forward, example, check, "the model"); }),
              HasSubstr("the model: the traced module fails on a batch of 5 examples (traced with "
                        "2)"));
  auto failing = [](const torch::Tensor& x) -> torch::Tensor {
    throw std::runtime_error("no forward for shape " + std::to_string(x.dim()));
  };
  EXPECT_THAT(tlab::test::error_of<tlab::ExportError>(
                  [&] { tlab::trace_module(*model, failing, example, check, "run 3's model"); }),
              HasSubstr("run 3's model cannot be exported: its forward pass fails on the example "
                        "batch of 2: no forward for shape 3"));
}

// Predictions on a split carry the labels (their accuracy is the run's); on a file without
// labels (--input, read by the csv plugin with the training file's standardisation) they equal
// the predictions on the same rows given as a labelled test file.
TEST_F(RunEvaluation, PredictWritesProbabilitiesForASplitOrAnUnlabelledFile) {
  const auto r = run({});
  ASSERT_EQ(r.status, tlab::RunStatus::kFinished) << r.reason;
  const std::string tlab = TLAB_TEST_BIN_DIR + "/tlab --plugin-path " + TLAB_TEST_PLUGIN_DIR +
                           " predict --db " + (dir_ / "results.db").string() + " ";
  auto out = tlab::test::shell(tlab + std::to_string(r.id) + " -o " + (dir_ / "p.csv").string());
  ASSERT_EQ(out.code, 0) << out.out;
  const std::string csv = tlab::test::read_file(dir_ / "p.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "index,predicted,class,label,correct,p_0,p_1,p_2,p_3");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 91);
  EXPECT_THAT(out.out,
              HasSubstr(fmt::format("(accuracy {:.4f})", r.summary.at("target/test/acc"))));
  const auto no_files =
      tlab::test::shell(tlab + std::to_string(r.id) + " --input " + (dir_ / "p.csv").string());
  EXPECT_EQ(no_files.code, 2);
  EXPECT_THAT(no_files.out, HasSubstr("dataset plugin 'gaussians', which reads no input files"));

  // A CSV dataset: 3 classes along the first feature.
  std::string train = "a,b,label\n", rows = "a,b\n", labelled = "a,b,label\n";
  for (int i = 0; i < 60; ++i)
    train += fmt::format("{},{},{}\n", (i % 3) * 2.0 + 0.01 * i, 0.5 * (i % 7), i % 3);
  for (int i = 0; i < 5; ++i) {
    rows += fmt::format("{},{}\n", 1.7 * i - 0.3, 0.25 * i);
    labelled += fmt::format("{},{},{}\n", 1.7 * i - 0.3, 0.25 * i, i % 3);
  }
  tlab::test::write_file(dir_ / "train.csv", train);
  tlab::test::write_file(dir_ / "rows.csv", rows);
  tlab::test::write_file(dir_ / "labelled.csv", labelled);
  auto path = tlab::test::write_file(dir_ / "csv.toml", R"(name = "csv"
seed = 1
device = "cpu"
[target]
plugin = "csv"
path = ")" + (dir_ / "train.csv").string() + R"("
val_fraction = 0.2
[backbone]
plugin = "mlp"
hidden = [8]
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = 3
)");
  tlab::RunOptions o;
  o.results_dir = dir_;
  const auto c =
      tlab::execute_run(tlab::load_experiment(path, {}, loader_).at(0), loader_, *store_, o);
  ASSERT_EQ(c.status, tlab::RunStatus::kFinished) << c.reason;
  out = tlab::test::shell(tlab + std::to_string(c.id) + " --input " + (dir_ / "rows.csv").string() +
                          " -o " + (dir_ / "u.csv").string());
  ASSERT_EQ(out.code, 0) << out.out;
  out = tlab::test::shell(tlab + std::to_string(c.id) + " target.test_path=" +
                          (dir_ / "labelled.csv").string() + " -o " + (dir_ / "l.csv").string());
  ASSERT_EQ(out.code, 0) << out.out;
  // Same probabilities, row by row (the labelled file adds label and correct columns).
  auto probabilities = [](const std::string& text, std::size_t skip) {
    std::vector<std::string> rows;
    std::istringstream in(text);
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      std::size_t at = 0;
      for (std::size_t k = 0; k < skip; ++k) at = line.find(',', at) + 1;
      rows.push_back(line.substr(0, line.find(',', line.find(',') + 1)) + "|" + line.substr(at));
    }
    return rows;
  };
  const auto u = probabilities(tlab::test::read_file(dir_ / "u.csv"), 3);
  const auto l = probabilities(tlab::test::read_file(dir_ / "l.csv"), 5);
  ASSERT_EQ(u.size(), 5u);
  EXPECT_EQ(u, l);
  EXPECT_THAT(tlab::test::read_file(dir_ / "u.csv"),
              HasSubstr("index,predicted,class,p_0,p_1,p_2"));
}
