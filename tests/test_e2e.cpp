// End to end: experiments through the real loader, runner and store, and through the CLI.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "run/executor.hpp"
#include "run/runner.hpp"
#include "store/store.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"
#include "weights/state_dict.hpp"

using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

namespace {

const std::string kTiny = R"(name = "tiny"
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
test_size = 100
shots = 5

[backbone]
plugin = "mlp"
hidden = [16]

[[adapters]]
plugin = "linear_head"

[strategy]
plugin = "finetune"
source_epochs = 2

[train]
epochs = 3
batch_size = 16
)";

struct CommandResult {
  int code;
  std::string out;
};

// Runs a shell command, capturing stdout and stderr together.
CommandResult sh(const std::string& cmd) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  while (std::size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// Count of rows a query returns on a plain sqlite3 connection (as any client would see it).
int64_t count(const fs::path& db, const std::string& sql) {
  sqlite3* c = nullptr;
  sqlite3_open_v2(db.c_str(), &c, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(c, sql.c_str(), -1, &st, nullptr);
  int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
  sqlite3_finalize(st);
  sqlite3_close(c);
  return n;
}

class EndToEnd : public ::testing::Test {
 protected:
  fs::path dir_ = tlab::test::temp_dir("e2e");
  void TearDown() override { fs::remove_all(dir_); }
  tlab::PluginLoader loader_{{TLAB_TEST_PLUGIN_DIR, TLAB_TEST_FIXTURE_DIR}};

  std::vector<tlab::RunSpec> specs(const std::string& text, std::vector<std::string> ov = {}) {
    return tlab::load_experiment(tlab::test::write_file(dir_ / "tiny.toml", text), ov, loader_);
  }
  tlab::RunOutcome run(tlab::Store& store, const tlab::RunSpec& spec) {
    tlab::RunOptions o;
    o.results_dir = dir_;
    return tlab::execute_run(spec, loader_, store, o);
  }
  /// The front, `tlab`, after a tiny run into `db` by it.
  std::string front_with_a_run(const fs::path& db) {
    const std::string tlab = std::string(TLAB_TEST_BIN_DIR) + "/tlab";
    const fs::path exp = tlab::test::write_file(dir_ / "front.toml", kTiny);
    auto r = sh(tlab + " run " + exp.string() + " --db " + db.string());
    EXPECT_EQ(r.code, 0) << r.out;
    return tlab;
  }
  /// A folder whose `library` is damaged ("not a library"), to put first on LD_LIBRARY_PATH.
  fs::path damaged(const std::string& library) {
    const fs::path hidden = dir_ / ("damaged_" + library);
    fs::create_directories(hidden);
    tlab::test::write_file(hidden / library, "not a library");
    return hidden;
  }
};

TEST_F(EndToEnd, ARunRecordsEverythingInTheDatabase) {
  fs::path db = dir_ / "results.db";
  tlab::Store store(db);
  auto spec = specs(kTiny, {"train.epochs=3"})[0];
  auto out = run(store, spec);
  ASSERT_EQ(out.status, tlab::RunStatus::kFinished) << out.reason;
  EXPECT_GE(out.summary.at("target/test/acc"), 0.0);
  EXPECT_LE(out.summary.at("target/test/acc"), 1.0);

  auto rows = store.list_runs();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].status, "finished");
  EXPECT_EQ(rows[0].seed, 7);
  EXPECT_EQ(rows[0].device, "cpu");
  // Per-epoch metrics: 2 source epochs (train loss, lr, val acc/loss), 3 target epochs (also test).
  auto m = store.metrics(out.id, "target/val/acc");
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[2].epoch, 2);
  // source/val/acc: 2 source epochs, then each of the 3 target epochs (for model selection).
  EXPECT_EQ(store.metrics(out.id, "source/val/acc").size(), 5u);
  EXPECT_EQ(store.metrics(out.id, "target/test/acc").size(), 3u);
  EXPECT_EQ(store.metrics(out.id, "target/train/loss").size(), 3u);
  // Steps count on across stages: source 200 examples / 16 = 13 steps x 2 epochs, then target
  // 5 labelled examples per class x 4 classes = 20 / 16 = 2 steps x 3 epochs.
  EXPECT_EQ(store.metrics(out.id, "target/train/loss")[2].step, 13 * 2 + 2 * 3);
  EXPECT_EQ(out.summary.at("target/train/examples"), 20);

  auto plugins = store.plugins(out.id);
  ASSERT_EQ(plugins.size(), 5u);
  for (const auto& p : plugins) {
    EXPECT_EQ(p.file_hash.size(), 16u) << p.name;
    EXPECT_FALSE(p.version.empty());
  }
  // Visible to any SQLite client.
  EXPECT_EQ(count(db, "SELECT count(*) FROM params WHERE run_id = 1 AND key = 'train.lr'"), 1);
  EXPECT_EQ(count(db, "SELECT count(*) FROM summaries WHERE name = 'target/test/acc'"), 1);
  EXPECT_EQ(count(db, "SELECT count(*) FROM runs WHERE config_toml LIKE '%plugin = \"mlp\"%'"), 1);
  // The run folder holds the resolved config, its overrides (also in Hydra's layout) and the
  // final checkpoint.
  std::map<std::string, std::string> files;
  fs::path run_dir = fs::directory_iterator(dir_ / "runs")->path();
  for (const auto& e : fs::recursive_directory_iterator(run_dir))
    if (e.is_regular_file())
      files[fs::relative(e.path(), run_dir).string()] = tlab::test::read_file(e.path());
  EXPECT_EQ(files.count("model.safetensors"), 1u);
  EXPECT_EQ(files.count("adapter.safetensors"), 1u);
  EXPECT_EQ(files.count("adapter.json"), 1u);
  EXPECT_EQ(files["config.toml"], spec.config_toml);
  EXPECT_THAT(files["config.toml"], HasSubstr("plugin = \"mlp\""));
  EXPECT_EQ(files["overrides.txt"], "train.epochs=3\n");
  EXPECT_THAT(files[".hydra/config.yaml"], HasSubstr("plugin: mlp"));
  EXPECT_THAT(files[".hydra/config.yaml"], HasSubstr("epochs: 3"));
  EXPECT_EQ(files[".hydra/overrides.yaml"], "- \"train.epochs=3\"\n");
  EXPECT_EQ(store.integrity_check(), "ok");
}

TEST_F(EndToEnd, SameConfigAndSeedGiveIdenticalMetrics) {
  tlab::Store store(dir_ / "results.db");
  auto spec = specs(kTiny)[0];
  auto a = run(store, spec), b = run(store, spec);
  auto ma = store.metrics(a.id), mb = store.metrics(b.id);
  ASSERT_EQ(ma.size(), mb.size());
  for (std::size_t i = 0; i < ma.size(); ++i) {
    EXPECT_EQ(ma[i].name, mb[i].name);
    EXPECT_EQ(ma[i].value, mb[i].value) << ma[i].name << " step " << ma[i].step;
  }
}

TEST_F(EndToEnd, PluginFailuresBecomeTheRunsStatusWithTheHookNamed) {
  tlab::Store store(dir_ / "results.db");
  auto failed = run(store, specs(kTiny, {"strategy={plugin=\"faulty\",fail_in=\"loss\"}"})[0]);
  EXPECT_EQ(failed.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(
      failed.reason,
      HasSubstr("strategy plugin 'faulty' failed in loss (stage 'target'): faulty: asked to "
                "fail in loss"));
  auto setup = run(store, specs(kTiny, {"strategy={plugin=\"faulty\",fail_in=\"setup\"}"})[0]);
  EXPECT_THAT(setup.reason, HasSubstr("strategy plugin 'faulty' failed in setup"));
  auto nan =
      run(store, specs(kTiny, {"strategy={plugin=\"faulty\",fail_in=\"nan\",fail_epoch=1}"})[0]);
  EXPECT_EQ(nan.status, tlab::RunStatus::kDiverged);
  EXPECT_THAT(nan.reason, HasSubstr("target loss became nan in epoch 1"));
  // Metrics up to the divergence are kept.
  EXPECT_EQ(store.metrics(nan.id, "target/val/acc").size(), 1u);
  auto rows = store.list_runs();
  EXPECT_EQ(rows[0].status, "failed");
  EXPECT_EQ(rows[2].status, "diverged");
  EXPECT_EQ(store.integrity_check(), "ok");
}

TEST_F(EndToEnd, FinetuneWithoutSourceFailsWithAClearReason) {
  tlab::Store store(dir_ / "results.db");
  std::string text = kTiny;
  text.erase(text.find("[source]"), text.find("[target]") - text.find("[source]"));
  auto out = run(store, specs(text)[0]);
  EXPECT_EQ(out.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(out.reason, HasSubstr("strategy plugin 'finetune' failed in prepare: finetune "
                                    "trains on a labelled source domain: add a [source] table"));
}

TEST_F(EndToEnd, AHelperThatNeedsTheSourceSaysWhichPluginAndHookUsedIt) {
  tlab::Store store(dir_ / "results.db");
  std::string text = kTiny;
  text.erase(text.find("[source]"), text.find("[target]") - text.find("[source]"));
  auto out = run(store, specs(text, {"strategy={plugin=\"faulty\",fail_in=\"source\"}"})[0]);
  EXPECT_EQ(out.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(out.reason, HasSubstr("strategy plugin 'faulty' failed in prepare: faulty trains on "
                                    "a labelled source domain: add a [source] table"));
}

TEST_F(EndToEnd, HooksRegisteredForTwoRunningStagesAreRefusedNamingPluginAndHook) {
  tlab::Store store(dir_ / "results.db");
  auto out = run(store, specs(kTiny, {"strategy={plugin=\"faulty\",fail_in=\"reenter\"}"})[0]);
  EXPECT_EQ(out.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(out.reason,
              HasSubstr("strategy plugin 'faulty' failed in on_epoch_start (stage 'target'): "
                        "stage 'target' was given the hooks object that drives the running stage "
                        "'target'"));
  EXPECT_THAT(out.reason, HasSubstr("give the inner stage an object of its own"));
}

TEST_F(EndToEnd, MissingHeadIsExplained) {
  tlab::Store store(dir_ / "results.db");
  std::string text = kTiny;
  text.erase(text.find("[[adapters]]"), text.find("[strategy]") - text.find("[[adapters]]"));
  auto out = run(store, specs(text)[0]);
  EXPECT_EQ(out.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(out.reason, HasSubstr("the model outputs 16 values per example but the target has "
                                    "4 classes; add a head"));
}

TEST_F(EndToEnd, OptimisersAndSchedulesFollowTheirFormulas) {
  tlab::Store store(dir_ / "results.db");
  struct Case {
    std::vector<std::string> overrides;
    std::vector<double> lrs;  // expected lr of target epochs 0..3
  };
  const double pi = std::acos(-1.0);
  std::vector<Case> cases = {
      {{"train.optimizer=\"sgd\"", "train.schedule=\"cosine\"", "train.lr=0.1"},
       {0.1, 0.05 * (1 + std::cos(pi / 4)), 0.05, 0.05 * (1 + std::cos(3 * pi / 4))}},
      {{"train.optimizer=\"adamw\"", "train.schedule=\"step\"", "train.lr=0.1",
        "train.step_epochs=2", "train.gamma=0.5", "train.weight_decay=0.01"},
       {0.1, 0.1, 0.05, 0.05}},
  };
  for (const auto& c : cases) {
    auto ov = c.overrides;
    ov.push_back("train.epochs=4");
    auto out = run(store, specs(kTiny, ov)[0]);
    ASSERT_EQ(out.status, tlab::RunStatus::kFinished) << out.reason;
    auto lr = store.metrics(out.id, "target/train/lr");
    ASSERT_EQ(lr.size(), 4u);
    for (std::size_t e = 0; e < 4; ++e) EXPECT_NEAR(lr[e].value, c.lrs[e], 1e-12) << e;
  }
}

TEST_F(EndToEnd, TheCheckpointLoadsIntoAFreshModel) {
  tlab::Store store(dir_ / "results.db");
  auto spec = specs(kTiny)[0];
  auto out = run(store, spec);
  ASSERT_EQ(out.status, tlab::RunStatus::kFinished) << out.reason;
  fs::path ckpt;
  for (const auto& e : fs::recursive_directory_iterator(dir_ / "runs"))
    if (e.path().filename() == "model.safetensors") ckpt = e.path();
  ASSERT_FALSE(ckpt.empty());
  // Two fresh models from different random inits give the same outputs once loaded, and
  // reproduce the run's final target test accuracy.
  auto make_loaded = [&](uint64_t seed) {
    torch::manual_seed(seed);
    tlab::Context ctx;
    auto net = loader_.create<tlab::Backbone>("mlp", spec.backbone.params)->build({16}, ctx);
    auto model = std::make_shared<tlab::Model>(net);
    loader_.create<tlab::Adapter>("linear_head")->attach(*model, {4, {16}}, ctx);
    auto report = tlab::weights::load_state_dict(*model, tlab::weights::read_safetensors(ckpt),
                                                 ckpt.string());
    EXPECT_TRUE(report.complete()) << report.summary();
    model->eval();
    return model;
  };
  auto a = make_loaded(1), b = make_loaded(2);
  auto target = loader_.create<tlab::Dataset>("gaussians", spec.target.params);
  tlab::Context ctx;
  auto test = target->load(ctx).test;
  torch::NoGradGuard no_grad;
  auto ya = a->forward(test.x), yb = b->forward(test.x);
  EXPECT_TRUE(torch::allclose(ya, yb));
  double acc = ya.argmax(1).eq(test.y).to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(acc, out.summary.at("target/test/acc"), 1e-9);
}

TEST_F(EndToEnd, RunFoldersStayInsideRunsWhateverTheName) {
  tlab::Store store(dir_ / "results.db");
  auto out = run(store, specs(kTiny, {"name=\"../../escape/me\""})[0]);
  ASSERT_EQ(out.status, tlab::RunStatus::kFinished) << out.reason;
  EXPECT_EQ(store.list_runs()[0].name, "../../escape/me");  // recorded as given
  int dirs = 0;
  for (const auto& e : fs::directory_iterator(dir_ / "runs")) {
    EXPECT_EQ(e.path().filename().string().rfind("______escape_me-", 0), 0u) << e.path();
    ++dirs;
  }
  EXPECT_EQ(dirs, 1);
  EXPECT_FALSE(fs::exists(dir_.parent_path().parent_path() / "escape"));  // = /escape
  EXPECT_FALSE(fs::exists(dir_.parent_path() / "escape"));                // = /tmp/escape
  EXPECT_FALSE(fs::exists(dir_ / "escape"));
}

TEST_F(EndToEnd, LinearProbeKeepsTheBackboneFrozenIncludingBatchNorm) {
  // finetune with freeze_backbone: the target stage must not change the backbone at all.
  // Pre-training runs with 0 target epochs is not allowed, so compare two runs that differ only
  // in target epochs (1 vs 3): their backbones must be identical, their heads must differ.
  tlab::Store store(dir_ / "results.db");
  auto state = [&](int64_t epochs) {
    auto spec = specs(kTiny, {"backbone={plugin=\"cnn\"}", "strategy.freeze_backbone=true",
                              "source={plugin=\"digits\",train_size=100,val_size=20,test_size=20}",
                              "target={plugin=\"digits\",domain=\"thick\",shots=2,val_size=20,"
                              "test_size=20,train_size=100}",
                              "train.epochs=" + std::to_string(epochs)})[0];
    auto out = run(store, spec);
    EXPECT_EQ(out.status, tlab::RunStatus::kFinished) << out.reason;
    fs::path ckpt;
    for (const auto& e : fs::recursive_directory_iterator(dir_ / "runs"))
      if (e.path().filename() == "model.safetensors") ckpt = e.path();
    tlab::Context ctx;
    auto net = loader_.create<tlab::Backbone>("cnn")->build({1, 28, 28}, ctx);
    tlab::Model model(net);
    loader_.create<tlab::Adapter>("linear_head")->attach(model, {10, {1, 28, 28}}, ctx);
    tlab::weights::load_state_dict(model, tlab::weights::read_safetensors(ckpt), ckpt.string());
    fs::remove_all(dir_ / "runs");
    std::map<std::string, torch::Tensor> tensors;
    for (const auto& p : model.named_parameters()) tensors[p.key()] = p.value().clone();
    for (const auto& b : model.named_buffers()) tensors[b.key()] = b.value().clone();
    return tensors;
  };
  auto one = state(1), three = state(3);
  int backbone = 0;
  for (const auto& [key, t] : one) {
    if (key.rfind("backbone.", 0) == 0) {
      ++backbone;
      EXPECT_TRUE(torch::equal(t, three.at(key))) << key;  // weights and running stats alike
    }
  }
  EXPECT_GT(backbone, 4);
  EXPECT_FALSE(torch::equal(one.at("head.0.weight"), three.at("head.0.weight")));
}

// ---- weights: backbone.weights, adapter_weights, the checkpoint, parameter counts --------------

std::map<std::string, torch::Tensor> checkpoint_of(tlab::Store& store, int64_t run) {
  std::map<std::string, torch::Tensor> out;
  for (auto& [k, t] :
       tlab::weights::read_safetensors(fs::path(store.run(run).run_dir) / "model.safetensors"))
    out[k] = t;
  return out;
}

TEST_F(EndToEnd, AnEarlierRunsBackboneAndAdaptersReproduceItsModel) {
  tlab::Store store(dir_ / "results.db");
  auto a = run(store, specs(kTiny)[0]);
  ASSERT_EQ(a.status, tlab::RunStatus::kFinished) << a.reason;
  // Parameter counts: mlp 16->16 (272) + linear head 16->4 (68).
  EXPECT_EQ(a.summary.at("model/params/total"), 272 + 68);
  EXPECT_EQ(a.summary.at("model/params/trainable"), 272 + 68);
  EXPECT_EQ(a.summary.at("adapters/0.linear_head/params_added"), 68);

  // Same backbone and adapters from run A, trained with a learning rate too small to move them:
  // the model is A's, so are its predictions.
  const std::string id = std::to_string(a.id);
  auto c = run(store, specs(kTiny, {"backbone.weights=\"run:" + id + "\"",
                                    "adapter_weights=\"run:" + id + "\"",
                                    "strategy={plugin=\"scratch\"}", "train.lr=1e-12"})[0]);
  ASSERT_EQ(c.status, tlab::RunStatus::kFinished) << c.reason;
  EXPECT_EQ(c.summary.at("weights/backbone/matched"), 2);  // layer0.weight, layer0.bias
  EXPECT_EQ(c.summary.at("weights/backbone/missing"), 0);
  EXPECT_EQ(c.summary.at("weights/adapters/matched"), 4);  // what trained in A: all of it
  EXPECT_EQ(c.summary.at("target/test/acc"), a.summary.at("target/test/acc"));
  auto wa = checkpoint_of(store, a.id), wc = checkpoint_of(store, c.id);
  ASSERT_EQ(wa.size(), wc.size());
  for (const auto& [k, t] : wa) EXPECT_TRUE(torch::allclose(t, wc.at(k), 0, 1e-8)) << k;
  // Without the adapter weights the head starts afresh: the test that the one above can fail.
  auto d = run(store, specs(kTiny, {"backbone.weights=\"run:" + id + "\"",
                                    "strategy={plugin=\"scratch\"}", "train.lr=1e-12"})[0]);
  ASSERT_EQ(d.status, tlab::RunStatus::kFinished) << d.reason;
  EXPECT_FALSE(
      torch::allclose(wa.at("head.0.weight"), checkpoint_of(store, d.id).at("head.0.weight")));

  // Both weight files are recorded with their hashes, like plugins.
  int found = 0;
  for (const auto& p : store.plugins(c.id))
    if (p.kind == "weights") {
      ++found;
      EXPECT_EQ(p.version, "run:" + id);
      EXPECT_EQ(p.file_hash.size(), 16u);
      EXPECT_TRUE(fs::exists(p.path)) << p.path;
    }
  EXPECT_EQ(found, 2);
}

// A weights file is part of what a run is: rewriting it makes a new run key (the sweep does not
// skip the run as done), rewriting it with the same bytes does not.
TEST_F(EndToEnd, TheRunKeyFollowsTheWeightsFilesContent) {
  tlab::Store store(dir_ / "results.db");
  auto a = run(store, specs(kTiny)[0]);
  ASSERT_EQ(a.status, tlab::RunStatus::kFinished) << a.reason;
  const fs::path w = dir_ / "w.safetensors";
  fs::copy_file(fs::path(store.run(a.id).run_dir) / "model.safetensors", w);
  auto spec = [&] {
    return specs(kTiny,
                 {"backbone.weights=\"" + w.string() + "\"",
                  "+backbone.weights_remap=[\"backbone.=\"]", "+backbone.weights_strict=false"})[0];
  };
  const std::string k1 = tlab::run_key(spec(), loader_);
  EXPECT_NE(k1, tlab::run_key(specs(kTiny)[0], loader_));
  const std::string bytes = tlab::test::read_file(w);
  fs::remove(w);
  tlab::test::write_file(w, bytes);  // same content, new file
  EXPECT_EQ(tlab::run_key(spec(), loader_), k1);
  tlab::weights::NamedTensors t = tlab::weights::read_safetensors(w);
  t[0].second = t[0].second + 1;
  tlab::weights::write_safetensors(w, t);
  EXPECT_NE(tlab::run_key(spec(), loader_), k1);
  auto b = run(store, spec());
  ASSERT_EQ(b.status, tlab::RunStatus::kFinished) << b.reason;
  EXPECT_EQ(b.summary.at("weights/backbone/matched"), 2);
  EXPECT_EQ(b.summary.at("weights/backbone/unexpected"), 2);  // head.0.*
}

TEST_F(EndToEnd, WeightsThatDoNotFitFailTheRunWithTheReport) {
  tlab::Store store(dir_ / "results.db");
  auto a = run(store, specs(kTiny)[0]);
  ASSERT_EQ(a.status, tlab::RunStatus::kFinished) << a.reason;
  const std::string w = "backbone.weights=\"run:" + std::to_string(a.id) + "\"";
  // Another width: strict loading refuses, naming the tensor and both shapes.
  auto b = run(store, specs(kTiny, {w, "backbone.hidden=[8]"})[0]);
  EXPECT_EQ(b.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(b.reason, HasSubstr("layer0.weight: file 16x16, model 8x16"));
  EXPECT_THAT(b.reason, HasSubstr("set weights_strict = false"));
  // Non-strict: the run goes on and reports what did not load.
  auto c =
      run(store, specs(kTiny, {w, "backbone.hidden=[8,16]", "+backbone.weights_strict=false"})[0]);
  ASSERT_EQ(c.status, tlab::RunStatus::kFinished) << c.reason;
  EXPECT_EQ(c.summary.at("weights/backbone/mismatched"), 2);  // layer0 weight and bias
  EXPECT_EQ(c.summary.at("weights/backbone/missing"), 2);     // layer1
  // Adapter weights for other adapters are refused, naming the difference.
  auto d = run(store, specs(kTiny, {"adapter_weights=\"run:" + std::to_string(a.id) + "\"",
                                    "adapters.0.dropout=0.5"})[0]);
  EXPECT_EQ(d.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(d.reason, HasSubstr("the adapters were trained with"));
  EXPECT_THAT(d.reason, HasSubstr("\"dropout\":0.5"));
  // Unknown and unfinished runs, missing files, other formats.
  auto e = run(store, specs(kTiny, {"backbone.weights=\"run:999\""})[0]);
  EXPECT_THAT(e.reason, HasSubstr("there is no run 999"));
  auto f =
      run(store,
          specs(kTiny, {"backbone.weights=\"" + (dir_ / "none.safetensors").string() + "\""})[0]);
  EXPECT_THAT(f.reason, HasSubstr("none.safetensors\": no such file"));
  tlab::test::write_file(dir_ / "w.pt", "x");
  auto g = run(store, specs(kTiny, {"backbone.weights=\"" + (dir_ / "w.pt").string() + "\""})[0]);
  EXPECT_THAT(g.reason, HasSubstr("expected a .safetensors file"));
  // A run that did not finish; adapter files without their description, or with another one.
  auto h = run(store, specs(kTiny, {"backbone.weights=\"run:" + std::to_string(b.id) + "\""})[0]);
  EXPECT_THAT(h.reason, HasSubstr("is failed, not finished"));
  fs::create_directories(dir_ / "lone");
  fs::copy_file(fs::path(store.run(a.id).run_dir) / "adapter.safetensors",
                dir_ / "lone" / "adapter.safetensors");
  const std::string lone =
      "adapter_weights=\"" + (dir_ / "lone" / "adapter.safetensors").string() + "\"";
  EXPECT_THAT(run(store, specs(kTiny, {lone})[0]).reason, HasSubstr("adapter.json' is missing"));
  tlab::test::write_file(dir_ / "lone" / "adapter.json", "{}");
  EXPECT_THAT(run(store, specs(kTiny, {lone})[0]).reason,
              HasSubstr("is not a tlab adapter description"));
  // Config-time checks.
  EXPECT_THAT(
      tlab::test::error_of<std::exception>([&] { specs(kTiny, {"backbone.weights=\"run:x\""}); }),
      HasSubstr("names no run"));
  EXPECT_THAT(tlab::test::error_of<std::exception>([&] {
                specs(kTiny, {"+backbone.weights_remap=[\"module.\"]", w});
              }),
              HasSubstr("is not of the form \"from=to\""));
  EXPECT_THAT(tlab::test::error_of<std::exception>(
                  [&] { specs(kTiny, {"+backbone.weights_strict=false"}); }),
              HasSubstr("set backbone.weights or remove them"));
  EXPECT_THAT(tlab::test::error_of<std::exception>([&] {
                specs(kTiny, {w, "+backbone.weights_strict=3"});
              }),
              HasSubstr("'backbone.weights_strict' must be a boolean"));
  EXPECT_THAT(tlab::test::error_of<std::exception>([&] {
                specs(kTiny, {"~adapters", "adapter_weights=\"x.safetensors\""});
              }),
              HasSubstr("the experiment has no adapters to load them into"));
}

// Text transfer end to end: reviews of books (source) and of kitchen things (target) share the
// words of sentiment; the target domain reuses the source's vocabulary (vocab_from), a
// transformer pre-trained on the source is fine-tuned on 10 labelled target reviews per class.
TEST_F(EndToEnd, TextTransferRunsEndToEndWithTokenIds) {
  auto reviews = [](const std::vector<std::string>& topic, int n, uint32_t seed) {
    const std::vector<std::string> good{"great", "excellent", "love", "wonderful", "superb"},
        bad{"awful", "terrible", "hate", "boring", "broken"},
        filler{"the", "a", "this", "it", "was", "and", "my"};
    uint32_t state = seed;
    auto next = [&](std::size_t k) {
      state = state * 1664525u + 1013904223u;
      return (state >> 8) % k;
    };
    std::string out;
    for (int i = 0; i < n; ++i) {
      const int label = i % 2;
      const auto& mood = label ? good : bad;
      out += std::to_string(label) + "\t" + filler[next(filler.size())] + " " +
             topic[next(topic.size())] + " " + mood[next(mood.size())] + " " +
             filler[next(filler.size())] + " " + topic[next(topic.size())] + " " +
             mood[next(mood.size())] + "\n";
    }
    return out;
  };
  const std::vector<std::string> books{"novel", "author", "chapter", "plot", "book"},
      kitchen{"blender", "knife", "pan", "kettle", "toaster"};
  tlab::test::write_file(dir_ / "books.tsv", reviews(books, 300, 1));
  tlab::test::write_file(dir_ / "kitchen.tsv", reviews(kitchen, 200, 2));
  // Relative paths, read from the test folder: the config (which seeds the run after its
  // pre-training) is the same in every process, so the outcome is too.
  const std::string exp = R"(name = "text"
seed = 3
device = "cpu"
[source]
plugin = "text"
path = "books.tsv"
vocab_from = "books.tsv"
max_len = 8
[target]
plugin = "text"
path = "kitchen.tsv"
vocab_from = "${source.vocab_from}"
max_len = 8
test_fraction = 0.4
shots = 10
[backbone]
plugin = "transformer"
vocab_size = 64
d_model = 16
heads = 2
layers = 1
ff = 32
dropout = 0.0
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "finetune"
source_epochs = 5
[train]
epochs = 10
batch_size = 16
lr = 0.003
)";
  struct Cwd {
    fs::path saved = fs::current_path();
    ~Cwd() { fs::current_path(saved); }
  } restore;
  fs::current_path(dir_);
  tlab::Store store(dir_ / "results.db");
  // Five seeds: with 10 labelled reviews per class one seed can land badly; the median cannot.
  std::vector<double> accs;
  for (int seed = 1; seed <= 5; ++seed) {
    auto spec = tlab::load_experiment(tlab::test::write_file(dir_ / "text.toml", exp),
                                      {"seed=" + std::to_string(seed)}, loader_)[0];
    auto out = run(store, spec);
    ASSERT_EQ(out.status, tlab::RunStatus::kFinished) << out.reason;
    EXPECT_EQ(out.summary.at("target/train/examples"), 20);
    EXPECT_GE(out.summary.at("target/data/load_seconds"), 0);
    // Pre-training learnt the source (its last source epoch).
    auto source_val = store.metrics(out.id, "source/val/acc");
    ASSERT_GE(source_val.size(), 5u);
    EXPECT_GE(source_val[4].value, 0.9) << "seed " << seed;
    accs.push_back(out.summary.at("target/test/acc"));
  }
  // The sentiment words carry over to the kitchen reviews.
  std::sort(accs.begin(), accs.end());
  EXPECT_GE(accs[2], 0.8) << "median target test accuracy over 5 seeds";
}

TEST_F(EndToEnd, TheExamplesNotKeptAsShotsAreTheUnlabelledPool) {
  auto y = torch::tensor({0, 1, 2, 0, 1, 2, 0, 1, 2, 0}, torch::kLong);
  tlab::Split s{torch::arange(10).to(torch::kFloat).unsqueeze(1), y};
  torch::Tensor rest;
  auto k = tlab::take_shots(s, 2, 3, 1, &rest);
  ASSERT_EQ(k.size(), 6);
  ASSERT_EQ(rest.size(0), 4);
  std::set<float> all;
  for (int64_t i = 0; i < 6; ++i) all.insert(k.x[i][0].item<float>());
  for (int64_t i = 0; i < 4; ++i) all.insert(rest[i][0].item<float>());
  EXPECT_EQ(all.size(), 10u);  // every example once: kept or pooled
}

// Where the time goes: training seconds and throughput always; with profiling, per phase.
TEST_F(EndToEnd, ProfilingRecordsTimePerPhaseAndThroughput) {
  tlab::Store store(dir_ / "results.db");
  tlab::RunOptions o;
  o.results_dir = dir_;
  o.profile = true;
  auto out = tlab::execute_run(specs(kTiny)[0], loader_, store, o);
  ASSERT_EQ(out.status, tlab::RunStatus::kFinished) << out.reason;
  double phases = 0;
  for (const char* p : {"data", "forward", "backward", "optimizer", "evaluation", "logging"}) {
    const std::string name = fmt::format("profile/target/{}_seconds", p);
    ASSERT_EQ(out.summary.count(name), 1u) << name;
    EXPECT_GE(out.summary.at(name), 0.0) << name;
    phases += out.summary.at(name);
  }
  EXPECT_GT(out.summary.at("profile/target/forward_seconds"), 0.0);
  EXPECT_EQ(out.summary.count("profile/source/forward_seconds"), 1u);  // the pre-training too
  // Training seconds: the target stage's loops (20 examples x 3 epochs), evaluation excluded.
  const double secs = out.summary.at("target/train/seconds");
  EXPECT_GT(secs, 0.0);
  EXPECT_LT(secs, phases);
  EXPECT_NEAR(out.summary.at("target/train/samples_per_second"), 20 * 3 / secs, 1e-6 * 60 / secs);
  EXPECT_GT(out.summary.at("run/first_step_seconds"), 0.0);
  // Without profiling: no per-phase summaries, the same throughput summaries.
  o.profile = false;
  auto plain = tlab::execute_run(specs(kTiny, {"seed=8"})[0], loader_, store, o);
  EXPECT_EQ(plain.summary.count("profile/target/forward_seconds"), 0u);
  EXPECT_EQ(plain.summary.count("target/train/samples_per_second"), 1u);
  // The command line: --profile reaches the run's own process and prints a line per stage.
  auto r =
      sh(fmt::format("cd '{}' && '{}/tlab' --plugin-path '{}' run tiny.toml --db r.db --profile",
                     dir_.string(), TLAB_TEST_BIN_DIR, TLAB_TEST_PLUGIN_DIR));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("[profile] target: setup"));
  EXPECT_THAT(r.out, HasSubstr("backward"));
  // 7 phases of the target stage (setup included); the pre-training was reused from the cache.
  EXPECT_EQ(
      count(dir_ / "r.db", "SELECT count(*) FROM summaries WHERE name LIKE 'profile/target/%'"), 7);
}

// [run] threads: the intra-op threads of every run of the sweep, unless --threads says otherwise;
// not part of the run (the same run key whatever the threads).
TEST_F(EndToEnd, RunThreadsSetTheThreadsUnlessTheCommandLineDoes) {
  tlab::test::write_file(dir_ / "t.toml", kTiny + "\n[run]\nthreads = 1\n");
  auto tlab = [&](const std::string& args) {
    return sh(fmt::format("cd '{}' && '{}/tlab' --plugin-path '{}' run t.toml --db r.db {}",
                          dir_.string(), TLAB_TEST_BIN_DIR, TLAB_TEST_PLUGIN_DIR, args));
  };
  auto r = tlab("");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("1 run(s), 1 at once, 1 thread(s) each"));
  r = tlab("--threads 2 --rerun");
  EXPECT_THAT(r.out, HasSubstr("1 at once, 2 thread(s) each"));
  r = tlab("run.threads=2");  // another thread count is the same run: skipped as done
  EXPECT_THAT(r.out, HasSubstr("skipped"));
  r = tlab("-m run.threads=1,2 --rerun");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr("set different run.threads (1 and 2)"));
  r = tlab("run.threads=-1");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr("'run.threads' = -1 is out of range"));
}

// A plugin rebuilt without a change (another file hash) makes a new pre-training cache entry but
// the same results: the random state after pre-training does not depend on the builds' hashes.
TEST_F(EndToEnd, ARebuiltPluginGivesTheSameResults) {
  const fs::path copy = dir_ / "plugins";
  fs::create_directories(copy / "strategies");
  fs::copy_file(fs::path(TLAB_TEST_PLUGIN_DIR) / "strategies" / "finetune.so",
                copy / "strategies" / "finetune.so");
  std::ofstream(copy / "strategies" / "finetune.so", std::ios::app) << "rebuilt";
  tlab::PluginLoader rebuilt({copy.string(), TLAB_TEST_PLUGIN_DIR});
  ASSERT_NE(rebuilt.get(tlab::Kind::Strategy, "finetune").file_hash,
            loader_.get(tlab::Kind::Strategy, "finetune").file_hash);
  tlab::Store store(dir_ / "results.db");
  auto a = run(store, specs(kTiny)[0]);
  tlab::RunOptions o;
  o.results_dir = dir_;
  auto b = tlab::execute_run(tlab::load_experiment(dir_ / "tiny.toml", {}, rebuilt)[0], rebuilt,
                             store, o);
  ASSERT_EQ(a.status, tlab::RunStatus::kFinished) << a.reason;
  ASSERT_EQ(b.status, tlab::RunStatus::kFinished) << b.reason;
  EXPECT_EQ(b.summary.at("source/pretrain_reused"), 0);  // a new cache entry: trained again
  EXPECT_EQ(a.summary.at("target/test/acc"), b.summary.at("target/test/acc"));
  EXPECT_EQ(a.summary.at("target/test/loss"), b.summary.at("target/test/loss"));
}

TEST_F(EndToEnd, TakeShotsKeepsKPerClass) {
  auto y = torch::tensor({0, 1, 2, 0, 1, 2, 0, 1, 2, 0}, torch::kLong);
  tlab::Split s{torch::arange(10).to(torch::kFloat).unsqueeze(1), y};
  auto k = tlab::take_shots(s, 2, 3, 1);
  EXPECT_EQ(k.size(), 6);
  EXPECT_TRUE(torch::equal(torch::bincount(k.y), torch::tensor({2, 2, 2}, torch::kLong)));
  EXPECT_EQ(tlab::take_shots(s, 0, 3, 1).size(), 10);
}

TEST_F(EndToEnd, CommandLineRunListAndExitCodes) {
  const std::string tlab = std::string(TLAB_TEST_BIN_DIR) + "/tlab";
  fs::path exp = tlab::test::write_file(dir_ / "cli.toml", kTiny + "\n[sweep]\nseed = [1, 2]\n");
  fs::path db = dir_ / "cli" / "results.db";
  auto r = sh(tlab + " run " + exp.string() + " --db " + db.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("target/test/acc (mean ± s.e.)"));
  EXPECT_THAT(r.out, HasSubstr("2 run(s) finished"));

  auto list = sh(tlab + " results list --format json --db " + db.string());
  ASSERT_EQ(list.code, 0) << list.out;
  auto j = nlohmann::json::parse(list.out);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["id"], 1);
  EXPECT_EQ(j[0]["status"], "finished");
  EXPECT_EQ(j[1]["params"]["seed"], 2);
  EXPECT_EQ(j[0]["params"]["backbone.plugin"], "mlp");
  EXPECT_TRUE(j[0]["summary"]["target/test/acc"].is_number());

  auto typo = sh(tlab + " results compare --by strategy.plugn --db " + db.string());
  EXPECT_EQ(typo.code, 2);
  EXPECT_THAT(typo.out, HasSubstr("has a param 'strategy.plugn'; did you mean 'strategy.plugin'?"));
  EXPECT_THAT(typo.out, HasSubstr("did you mean 'strategy.plugin'?"));
  auto metric = sh(tlab + " results compare --metric target/tst/acc --db " + db.string());
  EXPECT_EQ(metric.code, 2);
  EXPECT_THAT(metric.out, HasSubstr("did you mean 'target/test/acc'"));

  auto csv = sh(tlab + " results list --format csv --db " + db.string());
  EXPECT_THAT(csv.out, HasSubstr("id,status,name,"));
  auto table = sh(tlab + " results list --db " + db.string());
  EXPECT_THAT(table.out, HasSubstr("target/test/acc"));

  // Config errors: exit 2, located message, nothing run.
  fs::path bad = tlab::test::write_file(dir_ / "bad.toml", kTiny + "\n[sweep]\nseed = [1, -2]\n");
  auto e = sh(tlab + " run " + bad.string() + " --db " + (dir_ / "bad.db").string());
  EXPECT_EQ(e.code, 2);
  EXPECT_THAT(e.out, HasSubstr(bad.string() + ":"));
  EXPECT_THAT(e.out, HasSubstr("'seed' must be an integer >= 0"));
  EXPECT_FALSE(fs::exists(dir_ / "bad.db"));

  // A failing run: exit 1, the others still run, the failure is summarised.
  fs::path mixed = tlab::test::write_file(dir_ / "mixed.toml",
                                          kTiny +
                                              "\n[sweep]\nstrategy = [{plugin=\"faulty\", "
                                              "fail_in=\"prepare\"}, {plugin=\"scratch\"}]\n");
  auto f = sh(tlab + " --plugin-path " + TLAB_TEST_FIXTURE_DIR + " run " + mixed.string() +
              " --db " + (dir_ / "mixed.db").string());
  EXPECT_EQ(f.code, 1) << f.out;
  EXPECT_THAT(f.out, HasSubstr("1 of 2 runs failed"));
  EXPECT_THAT(f.out, HasSubstr("run 1 failed: strategy plugin 'faulty' failed in prepare"));
  EXPECT_EQ(count(dir_ / "mixed.db", "SELECT count(*) FROM runs WHERE status = 'finished'"), 1);

  // A --db that is not a database: refused before anything runs.
  fs::path text = tlab::test::write_file(dir_ / "notes.db", "not a database, just notes\n");
  auto notdb = sh(tlab + " run " + exp.string() + " --db " + text.string());
  EXPECT_EQ(notdb.code, 2);
  EXPECT_THAT(notdb.out, HasSubstr("is not an SQLite database"));
  EXPECT_THAT(notdb.out, Not(HasSubstr("run 1 started")));

  auto missing = sh(tlab + " results list --db " + (dir_ / "none.db").string());
  EXPECT_EQ(missing.code, 2);
  EXPECT_THAT(missing.out, HasSubstr("no results database at"));
}

// Starts `tlab run` on a long sweep, waits until its first run has written metrics, sends
// `sig`, and returns the exit status.
int interrupt_run(const fs::path& exp, const fs::path& db, int sig) {
  const std::string tlab = std::string(TLAB_TEST_BIN_DIR) + "/tlab";
  pid_t pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execl(tlab.c_str(), tlab.c_str(), "run", exp.c_str(), "--db", db.c_str(), nullptr);
    _exit(127);
  }
  for (int i = 0; i < 600; ++i) {  // up to 60 s
    usleep(100000);
    if (fs::exists(db) && count(db, "SELECT count(*) FROM metrics") > 0) break;
  }
  kill(pid, sig);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
}

// The front `tlab` does not link LibTorch: the commands that do not train work where it cannot
// be loaded at all, and those that need the training engine say which file failed and why.
TEST_F(EndToEnd, CommandsThatDoNotTrainWorkWhereLibTorchCannotBeLoaded) {
  const fs::path db = dir_ / "front" / "results.db";
  const std::string tlab = front_with_a_run(db);
  const fs::path exp = dir_ / "front.toml";

  // Hide LibTorch: a damaged libtorch_cpu first on the library search path.
  const fs::path hidden = damaged("libtorch_cpu.so.1.13");
  const std::string without = "LD_LIBRARY_PATH=" + hidden.string() + " " + tlab;
  auto list = sh(without + " results list --db " + db.string());
  EXPECT_EQ(list.code, 0) << list.out;
  EXPECT_THAT(list.out, HasSubstr("finished"));
  auto version = sh(without + " --version");
  EXPECT_EQ(version.code, 0) << version.out;
  EXPECT_THAT(version.out, HasSubstr("tlab "));
  auto help = sh(without + " run --help " + exp.string());
  EXPECT_EQ(help.code, 0) << help.out;
  EXPECT_THAT(help.out, HasSubstr("--dry-run"));
  auto groups = sh(without + " config --groups " + exp.string());
  EXPECT_EQ(groups.code, 0) << groups.out;

  const std::string engine =
      (fs::path(TLAB_TEST_BIN_DIR).parent_path() / "lib" / "tlab" / "libtlab_engine.so").string();
  auto run = sh(without + " run " + exp.string() + " --db " + db.string());
  EXPECT_EQ(run.code, 2);
  EXPECT_THAT(run.out, HasSubstr("tlab run needs its training engine, '" + engine + "'"));
  // dlerror() names the library: "<hidden>/libtorch_cpu.so.1.13: file too short".
  EXPECT_THAT(run.out,
              HasSubstr("could not be loaded: " + (hidden / "libtorch_cpu.so.1.13").string()));
  EXPECT_THAT(run.out, HasSubstr("tlab results, tlab sweep (without --retry-failed), tlab new"));

  // An engine that is not there, or a library that is not an engine.
  const fs::path nowhere = dir_ / "nowhere" / "libtlab_engine.so";
  auto missing = sh("TLAB_ENGINE=" + nowhere.string() + " " + tlab + " plugins");
  EXPECT_EQ(missing.code, 2);
  EXPECT_THAT(missing.out,
              HasSubstr("tlab plugins needs its training engine, '" + nowhere.string() +
                        "' (LibTorch and the plugins), which does not exist (set by TLAB_ENGINE)"));
  const fs::path foreign =
      fs::path(TLAB_TEST_BIN_DIR).parent_path() / "plugins" / "adapters" / "bitfit.so";
  auto other = sh("TLAB_ENGINE=" + foreign.string() + " " + tlab + " config " + exp.string());
  EXPECT_EQ(other.code, 2);
  EXPECT_THAT(other.out, HasSubstr("is not a tlab engine: it has no tlab_engine_api"));

  // Nothing was written by the refused commands.
  tlab::Store store(db, false);
  EXPECT_EQ(store.list_runs().size(), 1u);
}

TEST_F(EndToEnd, OnlyTheCommandsThatDrawLoadCairo) {
  const fs::path db = dir_ / "draw" / "results.db";
  const std::string tlab = front_with_a_run(db);

  // A damaged libcairo.so.2 first on the search path: a tlab that linked cairo would not start.
  const fs::path hidden = damaged("libcairo.so.2");
  const std::string without = "LD_LIBRARY_PATH=" + hidden.string() + " " + tlab;
  auto version = sh(without + " --version");
  EXPECT_EQ(version.code, 0) << version.out;
  auto list = sh(without + " results list --db " + db.string());
  EXPECT_EQ(list.code, 0) << list.out;
  EXPECT_THAT(list.out, HasSubstr("finished"));

  const std::string plot = " results plot curves --metric target/train/loss --db " + db.string();
  auto refused = sh(without + plot + " -o " + (dir_ / "refused.png").string());
  EXPECT_NE(refused.code, 0);
  EXPECT_THAT(refused.out, HasSubstr("cannot draw: cairo (libcairo.so.2) could not be loaded: " +
                                     (hidden / "libcairo.so.2").string()));
  EXPECT_THAT(refused.out, HasSubstr("install it (apt install libcairo2"));
  EXPECT_FALSE(fs::exists(dir_ / "refused.png"));

  auto drawn = sh(tlab + plot + " -o " + (dir_ / "drawn.png").string());
  EXPECT_EQ(drawn.code, 0) << drawn.out;
  EXPECT_GT(fs::file_size(dir_ / "drawn.png"), 1000u);
}

TEST_F(EndToEnd, SignalsStopTheRunAsKilledWithItsMetricsAndNoFurtherRuns) {
  fs::path exp = tlab::test::write_file(
      dir_ / "long.toml", kTiny +
                              "\n[sweep]\nseed = [1, 2]\n\"train.epochs\" = [100000]\n"
                              "strategy = [{plugin = \"scratch\"}]\n");
  for (int sig : {SIGINT, SIGTERM}) {
    fs::path db = dir_ / ("sig" + std::to_string(sig)) / "results.db";
    EXPECT_EQ(interrupt_run(exp, db, sig), 128 + sig);
    tlab::Store store(db, false);
    auto rows = store.list_runs();
    ASSERT_EQ(rows.size(), 2u);  // both were queued; the second one never started
    EXPECT_EQ(rows[1].status, "killed");
    EXPECT_THAT(rows[1].reason, HasSubstr("not started: the sweep was stopped by signal"));
    EXPECT_EQ(store.metrics(rows[1].id).size(), 0u);
    EXPECT_EQ(rows[0].status, "killed");
    EXPECT_THAT(rows[0].reason, HasSubstr("stopped by signal " + std::to_string(sig)));
    EXPECT_THAT(rows[0].reason, HasSubstr("in target epoch"));
    EXPECT_GT(store.metrics(rows[0].id, "target/val/acc").size(), 0u);
    EXPECT_EQ(store.integrity_check(), "ok");
  }
}

TEST_F(EndToEnd, PluginsCommandListsAndShows) {
  const std::string tlab = std::string(TLAB_TEST_BIN_DIR) + "/tlab";
  auto l = sh(tlab + " --plugin-path " + TLAB_TEST_FIXTURE_DIR + "/bad plugins");
  EXPECT_EQ(l.code, 0);
  EXPECT_THAT(l.out, HasSubstr("backbone  cnn"));
  EXPECT_THAT(l.out, HasSubstr("refused:"));
  EXPECT_THAT(l.out, HasSubstr("bad_abi.so: plugin"));
  auto env = sh("TLAB_PLUGIN_PATH=/nonexistent:" + std::string(TLAB_TEST_FIXTURE_DIR) + " " + tlab +
                " plugins");
  EXPECT_THAT(env.out, HasSubstr("strategy  faulty"));
  auto s = sh(tlab + " plugins show finetune");
  EXPECT_EQ(s.code, 0);
  EXPECT_THAT(s.out, HasSubstr("[strategy]\nplugin = \"finetune\"\npretrain = \"supervised\"  # "));
  EXPECT_THAT(s.out, HasSubstr("\nsource_epochs = 5  # "));
  auto u = sh(tlab + " plugins show finetun");
  EXPECT_EQ(u.code, 2);
  EXPECT_THAT(u.out, HasSubstr("no plugin named 'finetun': did you mean 'finetune'?"));
  // Issue 27: a --plugin-path that names no folder was accepted silently (and a symlink loop
  // reported as "does not exist"); each is a usage error that says what it is.
  auto missing = sh(tlab + " --plugin-path /nonexistent/plugins plugins");
  EXPECT_EQ(missing.code, 2);
  EXPECT_THAT(missing.out,
              HasSubstr("--plugin-path '/nonexistent/plugins': no such folder; expected a folder "
                        "of plugin libraries"));
  const fs::path loop = fs::temp_directory_path() / ("tlab_loop_" + std::to_string(getpid()));
  fs::remove(loop);
  fs::create_symlink(loop, loop);
  auto looped = sh(tlab + " --plugin-path '" + loop.string() + "' plugins");
  EXPECT_EQ(looped.code, 2);
  EXPECT_THAT(looped.out, HasSubstr("is a loop of symbolic links"));
  fs::remove(loop);
  auto file = sh(tlab + " plugins --plugin-path " + TLAB_TEST_BIN_DIR + "/tlab");
  EXPECT_EQ(file.code, 2);
  EXPECT_THAT(file.out, HasSubstr("is not a folder"));
}

}  // namespace

TEST_F(EndToEnd, ParameterGroupsThatCannotBeTrainedAreRefused) {
  tlab::Store store(dir_ / "results.db");
  auto dup = run(store, specs(kTiny, {"strategy={plugin=\"faulty\",groups=\"duplicate\"}"})[0]);
  EXPECT_EQ(dup.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(dup.reason, HasSubstr("stage 'target': a parameter (4x16) is in two parameter "
                                    "groups (second: 'head'); list each tensor once"));
  auto neg = run(store, specs(kTiny, {"strategy={plugin=\"faulty\",groups=\"negative\"}"})[0]);
  EXPECT_EQ(neg.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(neg.reason, HasSubstr("stage 'target': parameter group 'backbone' has lr_scale "
                                    "-0.5; expected a finite number >= 0"));
}

TEST_F(EndToEnd, ZeroTargetEpochsOnlyEvaluateTheTarget) {
  tlab::Store store(dir_ / "results.db");
  auto out = run(store, specs(kTiny, {"train.epochs=0"})[0]);
  ASSERT_EQ(out.status, tlab::RunStatus::kFinished) << out.reason;
  EXPECT_TRUE(out.summary.count("target/test/acc"));
  EXPECT_TRUE(out.summary.count("source/test/acc"));                // pre-training ran
  EXPECT_TRUE(store.metrics(out.id, "target/train/loss").empty());  // the target stage did not
  EXPECT_FALSE(store.metrics(out.id, "source/train/loss").empty());
}

TEST_F(EndToEnd, LoadModelRebuildsAnEarlierRunsModel) {
  tlab::Store store(dir_ / "results.db");
  auto teacher = run(store, specs(kTiny)[0]);
  ASSERT_EQ(teacher.status, tlab::RunStatus::kFinished) << teacher.reason;
  auto with = [&](const std::string& ref) {
    return run(store, specs(kTiny, {"strategy={plugin=\"faulty\",load_model=\"" + ref + "\"}",
                                    "train.epochs=1"})[0]);
  };
  for (const std::string ref :
       {"run:" + std::to_string(teacher.id), store.run(teacher.id).run_dir}) {
    auto out = with(ref);
    ASSERT_EQ(out.status, tlab::RunStatus::kFinished) << out.reason;
    // The same weights on the same test split: the same accuracy, in eval mode, frozen.
    EXPECT_EQ(out.summary.at("fixture/loaded/test_acc"), teacher.summary.at("target/test/acc"))
        << ref;
    EXPECT_EQ(out.summary.at("fixture/loaded/training"), 0);
    EXPECT_EQ(out.summary.at("fixture/loaded/trainable"), 0);
  }
  EXPECT_THAT(with("run:999").reason, HasSubstr("there is no run 999 in this results database"));
  EXPECT_THAT(with("run:x").reason, HasSubstr("model \"run:x\": expected \"run:<id>\" with a run "
                                              "number (tlab results list) or the path of a run "
                                              "folder"));
  EXPECT_THAT(with("no/such/dir").reason, HasSubstr("model \"no/such/dir\": no such run folder"));
  fs::create_directories(dir_ / "empty_run");
  EXPECT_THAT(with((dir_ / "empty_run").string()).reason,
              HasSubstr("adapter.json' is missing; every finished run writes model.safetensors "
                        "and adapter.json"));
  // A run folder whose adapter.json was edited: each defect named.
  const fs::path edited = dir_ / "edited_run";
  fs::create_directories(edited);
  fs::copy_file(fs::path(store.run(teacher.id).run_dir) / "model.safetensors",
                edited / "model.safetensors");
  const std::string json =
      tlab::test::read_file(fs::path(store.run(teacher.id).run_dir) / "adapter.json");
  auto with_json = [&](const std::string& text) {
    tlab::test::write_file(edited / "adapter.json", text);
    return with(edited.string()).reason;
  };
  EXPECT_THAT(with_json("{}"), HasSubstr("adapter.json' is not a tlab run description (format "
                                         "\"tlab-adapter\" with backbone, adapters, "
                                         "num_classes, input_shape)"));
  std::string renamed = json;
  renamed.replace(renamed.find("\"hidden\""), 8, "\"hiddn\"");
  EXPECT_THAT(with_json(renamed),
              HasSubstr("backbone plugin 'mlp' has no parameter 'hiddn' any more (the run was "
                        "made with another version of it)"));
  std::string retyped = json;
  const auto at = retyped.find("\"hidden\"");
  retyped.replace(at, retyped.find(']', at) + 1 - at, "\"hidden\": \"x\"");
  EXPECT_THAT(with_json(retyped), HasSubstr("mlp.hidden: saved value \"x\" is not a"));
  // Another input shape: refused with both shapes named.
  std::string wide = kTiny;
  wide.replace(wide.find("[target]"), 8, "[target]\ndim = 3");
  auto other = run(store, tlab::load_experiment(tlab::test::write_file(dir_ / "wide.toml", wide),
                                                {"strategy={plugin=\"faulty\",load_model=\"run:" +
                                                 std::to_string(teacher.id) + "\"}"},
                                                loader_)[0]);
  EXPECT_THAT(other.reason, HasSubstr("takes examples of shape 16 but this run's are 3"));
}

TEST_F(EndToEnd, FrozenGroupsStayFrozenWhetherPretrainingRanHereOrCameFromTheCache) {
  // Gradual unfreezing with Adam and weight decay: a group still frozen must not move, and the
  // run must give the same numbers when its pre-training ran in this process (leaving gradients
  // behind) as when it came from the cache.
  tlab::Store store(dir_ / "results.db");
  const std::vector<std::string> ov = {"++strategy.unfreeze_every=2", "train.optimizer=\"adam\"",
                                       "++train.weight_decay=0.1", "train.epochs=3"};
  auto trained = run(store, specs(kTiny, ov)[0]);
  ASSERT_EQ(trained.status, tlab::RunStatus::kFinished) << trained.reason;
  auto reused = run(store, specs(kTiny, ov)[0]);
  ASSERT_EQ(reused.status, tlab::RunStatus::kFinished) << reused.reason;
  auto a = store.metrics(trained.id, "target/train/loss"),
       b = store.metrics(reused.id, "target/train/loss");
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].value, b[i].value) << "epoch " << i;
  EXPECT_EQ(trained.summary.at("target/test/acc"), reused.summary.at("target/test/acc"));
}

TEST_F(EndToEnd, AdaptedModelsWithoutTargetEpochsSaveWhatSetupTrained) {
  // source_only trains the whole model (head included) in setup; with [train] epochs = 0 its
  // adapter weights must still reproduce the model it was judged as.
  tlab::Store store(dir_ / "results.db");
  auto a =
      run(store,
          specs(kTiny, {"strategy={plugin=\"source_only\",source_epochs=2}", "train.epochs=0"})[0]);
  ASSERT_EQ(a.status, tlab::RunStatus::kFinished) << a.reason;
  const std::string id = std::to_string(a.id);
  auto b = run(store, specs(kTiny, {"backbone.weights=\"run:" + id + "\"",
                                    "adapter_weights=\"run:" + id + "\"",
                                    "strategy={plugin=\"scratch\"}", "train.epochs=0"})[0]);
  ASSERT_EQ(b.status, tlab::RunStatus::kFinished) << b.reason;
  EXPECT_EQ(b.summary.at("weights/adapters/matched"), 4);  // all of it: setup trained it all
  EXPECT_EQ(b.summary.at("target/test/acc"), a.summary.at("target/test/acc"));
}
