// Experiment files: validation with file:line:col, defaults, sweeps, overrides, hostile input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <torch/cuda.h>
#include <nlohmann/json.hpp>

#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"

using ::testing::HasSubstr;
using ::testing::StartsWith;
namespace fs = std::filesystem;

namespace {

const std::string kValid = R"(name = "tiny"
seed = 3
device = "cpu"

[source]
plugin = "gaussians"
domain = "source"

[target]
plugin = "gaussians"
domain = "target"
shots = 5

[backbone]
plugin = "mlp"
hidden = [16]

[[adapters]]
plugin = "linear_head"

[strategy]
plugin = "finetune"
source_epochs = 1

[train]
epochs = 2
lr = 0.01
)";

class Config : public ::testing::Test {
 protected:
  fs::path dir_ = tlab::test::temp_dir("config");
  void TearDown() override { fs::remove_all(dir_); }
  tlab::PluginLoader loader_{{TLAB_TEST_PLUGIN_DIR}};

  fs::path file(const std::string& text, const std::string& name = "exp.toml") {
    return tlab::test::write_file(dir_ / name, text);
  }
  std::vector<tlab::RunSpec> load(const std::string& text, std::vector<std::string> ov = {}) {
    return tlab::load_experiment(file(text), ov, loader_);
  }
  std::string error(const std::string& text, std::vector<std::string> ov = {}) {
    return tlab::test::error_of<tlab::ConfigError>([&] { load(text, ov); });
  }
  std::string at(int line, int col) {
    return (dir_ / "exp.toml").string() + ":" + std::to_string(line) + ":" + std::to_string(col) +
           ": ";
  }
  // kValid with `from` replaced by `to` (which must occur).
  std::string with(const std::string& from, const std::string& to) {
    std::string s = kValid;
    auto pos = s.find(from);
    EXPECT_NE(pos, std::string::npos) << from;
    return s.replace(pos, from.size(), to);
  }
};

TEST_F(Config, ValidFileResolvesWithDefaultsFilledIn) {
  auto runs = load(kValid);
  ASSERT_EQ(runs.size(), 1u);
  const auto& r = runs[0];
  EXPECT_EQ(r.name, "tiny");
  EXPECT_EQ(r.seed, 3);
  EXPECT_EQ(r.target.shots, 5);
  EXPECT_EQ(std::get<std::string>(r.target.params.at("domain")), "target");
  EXPECT_EQ(std::get<std::vector<int64_t>>(r.backbone.params.at("hidden")),
            (std::vector<int64_t>{16}));
  EXPECT_EQ(std::get<double>(r.backbone.params.at("dropout")), 0.0);  // a default
  EXPECT_EQ(r.train.epochs, 2);
  EXPECT_EQ(r.train.optimizer, "adam");  // a default
  EXPECT_THAT(r.config_toml, HasSubstr("optimizer = \"adam\""));
  EXPECT_EQ(r.config_hash.size(), 16u);
  std::map<std::string, std::string> types;
  for (const auto& p : r.params) types[p.key] = p.type;
  EXPECT_EQ(types["train.lr"], "float");
  EXPECT_EQ(types["backbone.hidden"], "list");
  EXPECT_EQ(types["adapters.0.plugin"], "string");
  EXPECT_EQ(types["backbone.batch_norm"], "");  // mlp has no such key
}

TEST_F(Config, MalformedTomlIsReportedWithLineAndColumn) {
  auto msg = error("name = \"x\"\nseed = = 3\n");
  EXPECT_THAT(msg, StartsWith(at(2, 8)));
}

// Issue 27: an experiment name with escape sequences reached the terminal through every table.
TEST_F(Config, ANameWithControlCharactersIsRefused) {
  const std::string first = kValid.substr(0, kValid.find('\n'));
  EXPECT_THAT(error(with(first, "name = \"a\\u001b]0;pwned\\u0007\"")),
              HasSubstr("'name' holds a control character (U+001B at character 2); expected "
                        "printable text"));
  EXPECT_THAT(error(with(first, "name = \"tab\\there\"")), HasSubstr("U+0009 at character 4"));
  EXPECT_EQ(load(with(first, "name = \"caf\u00e9 ± 1\"")).at(0).name, "caf\u00e9 ± 1");
}

TEST_F(Config, UnknownTopLevelKeySuggestsTheNearest) {
  auto msg = error(with("seed = 3", "sede = 3"));
  EXPECT_THAT(msg, StartsWith(at(2, 8)));
  EXPECT_THAT(msg, HasSubstr("unknown key 'sede' in the experiment; did you mean 'seed'?"));
}

TEST_F(Config, UnknownPluginKeySuggestsTheNearest) {
  auto msg = error(with("hidden = [16]", "hiden = [16]"));
  EXPECT_THAT(msg, StartsWith(at(16, 9)));
  EXPECT_THAT(msg, HasSubstr("unknown key 'backbone.hiden' in backbone plugin 'mlp'"));
  EXPECT_THAT(msg, HasSubstr("did you mean 'hidden'?"));
}

TEST_F(Config, UnknownTrainKeySuggestsTheNearest) {
  auto msg = error(with("lr = 0.01", "lrr = 0.01"));
  EXPECT_THAT(msg, StartsWith(at(27, 7)));
  EXPECT_THAT(msg, HasSubstr("unknown key 'train.lrr' in [train]; did you mean 'lr'?"));
}

TEST_F(Config, WrongTypeIsLocated) {
  auto msg = error(with("epochs = 2", "epochs = \"two\""));
  EXPECT_THAT(msg, StartsWith(at(26, 10)));
  EXPECT_THAT(msg, HasSubstr("'train.epochs' must be int, got string \"two\""));
}

TEST_F(Config, OutOfRangeValuesAreLocated) {
  EXPECT_THAT(error(with("epochs = 2", "epochs = -1")),
              HasSubstr("'train.epochs' = -1 is out of range; expected a value in [0, 1000000]"));
  auto nan = error(with("lr = 0.01", "lr = nan"));
  EXPECT_THAT(nan, StartsWith(at(27, 6)));
  EXPECT_THAT(nan, HasSubstr("'train.lr' = nan is not a finite number"));
  EXPECT_THAT(error(with("shots = 5", "shots = -1")),
              HasSubstr("'target.shots' = -1 is out of range"));
  EXPECT_THAT(error(with("[train]", "[train]\noptimizer = \"adamm\"")),
              HasSubstr("'train.optimizer' = \"adamm\" is not a valid choice; did you mean "
                        "'adam' or 'adamw'?"));
}

TEST_F(Config, UnknownPluginIsLocatedWithSuggestion) {
  auto msg = error(with("plugin = \"mlp\"", "plugin = \"mpl\""));
  EXPECT_THAT(msg, StartsWith(at(15, 10)));
  EXPECT_THAT(msg, HasSubstr("no backbone plugin named 'mpl': did you mean 'mlp'?"));
}

TEST_F(Config, MissingTablesAreNamed) {
  EXPECT_THAT(error("name = \"x\"\n"), HasSubstr("the experiment has no [target] table"));
  EXPECT_THAT(error(with("[strategy]\nplugin = \"finetune\"\nsource_epochs = 1\n", "")),
              HasSubstr("no [strategy] table"));
  EXPECT_THAT(error(with("plugin = \"finetune\"", "")),
              HasSubstr("'strategy' has no 'plugin' key"));
}

TEST_F(Config, CudaOnAMachineWithoutOneIsAConfigError) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this machine has CUDA";
  auto msg = error(with("device = \"cpu\"", "device = \"cuda\""));
  EXPECT_THAT(msg, StartsWith(at(3, 10)));
  EXPECT_THAT(msg, HasSubstr("device \"cuda\" requested but this machine has no usable CUDA"));
  EXPECT_THAT(error(with("device = \"cpu\"", "device = \"gpu\"")),
              HasSubstr("device \"gpu\" is not valid"));
  for (std::string bad : {"cuda:", "cuda: 0", "cuda:01", "cuda:+1"})
    EXPECT_THAT(error(with("device = \"cpu\"", "device = \"" + bad + "\"")),
                HasSubstr("device \"" + bad + "\" is not valid; expected \"cuda:N\""));
}

TEST_F(Config, SweepIsACartesianProductInKeyOrder) {
  auto runs = load(kValid + "\n[sweep]\nseed = [1, 2]\n\"train.lr\" = [0.1, 0.01, 0.001]\n");
  ASSERT_EQ(runs.size(), 6u);
  EXPECT_EQ(runs[0].seed, 1);
  EXPECT_DOUBLE_EQ(runs[0].train.lr, 0.1);
  EXPECT_DOUBLE_EQ(runs[1].train.lr, 0.01);
  EXPECT_EQ(runs[3].seed, 2);
  EXPECT_EQ(runs[3].overrides_json, R"({"seed":2,"train.lr":0.1})");
  EXPECT_NE(runs[0].config_hash, runs[1].config_hash);
}

TEST_F(Config, SweepOverWholeTablesChangesPlugins) {
  auto runs =
      load(kValid + "\n[sweep]\nstrategy = [{plugin = \"scratch\"}, {plugin = \"finetune\"}]\n");
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].strategy.plugin, "scratch");
  EXPECT_TRUE(runs[0].strategy.params.empty());
  EXPECT_EQ(runs[1].strategy.plugin, "finetune");
  EXPECT_EQ(std::get<int64_t>(runs[1].strategy.params.at("source_epochs")), 5);  // default
}

TEST_F(Config, OneBadSweepCombinationRejectsTheWholeSweep) {
  auto msg = error(kValid + "\n[sweep]\nseed = [1, 2]\n\"train.epochs\" = [2, -1]\n");
  EXPECT_THAT(msg, StartsWith(at(31, 22)));
  EXPECT_THAT(msg, HasSubstr("'train.epochs' = -1 is out of range"));
  EXPECT_THAT(msg, HasSubstr("in sweep combination 2 of 4: seed=1 train.epochs=-1; the whole "
                             "sweep was rejected, no run started"));
  EXPECT_THAT(error(kValid + "\n[sweep]\nseed = 3\n"),
              HasSubstr("sweep 'seed' must be a list of values"));
  EXPECT_THAT(error(kValid + "\n[sweep]\nseed = []\n"), HasSubstr("sweep 'seed' has no values"));
}

TEST_F(Config, OverridesApplyAndAreValidated) {
  auto runs = load(kValid, {"train.lr=0.5", "backbone.hidden=[4,4]", "target.domain=source"});
  EXPECT_DOUBLE_EQ(runs[0].train.lr, 0.5);
  EXPECT_EQ(std::get<std::vector<int64_t>>(runs[0].backbone.params.at("hidden")),
            (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(std::get<std::string>(runs[0].target.params.at("domain")), "source");
  EXPECT_THAT(error(kValid, {"train.lrr=0.5"}),
              HasSubstr("key 'train.lrr' does not exist in the config; did you mean 'train.lr'?"));
  // Keys the file leaves at their defaults can be set: the plugins' schemas know them.
  auto defaults = load(kValid, {"backbone.dropout=0.25", "train.momentum=0.5",
                                "target.train_size=50", "adapters.0.bias=false"});
  EXPECT_EQ(std::get<double>(defaults[0].backbone.params.at("dropout")), 0.25);
  EXPECT_EQ(defaults[0].train.momentum, 0.5);
  EXPECT_EQ(std::get<bool>(defaults[0].adapters[0].params.at("bias")), false);
  EXPECT_THAT(error(kValid, {"backbone.dropot=0.25"}),
              HasSubstr("did you mean 'backbone.dropout'?"));
  // A changed plugin brings its own parameters.
  EXPECT_EQ(load(kValid, {"strategy.plugin=scratch", "~strategy.source_epochs"})[0].strategy.plugin,
            "scratch");
  EXPECT_THAT(error(kValid, {"nonsense"}),
              HasSubstr("override 'nonsense' at character 9: not of the form key=value"));
  EXPECT_THAT(error(kValid, {"train.lr=0.1\nseed=5"}), HasSubstr("contains a line break"));
  EXPECT_THAT(error(kValid, {"strategy.plugin=\"../x\""}),
              HasSubstr("'../x' is not a valid plugin name"));
}

TEST_F(Config, OverridesWinOverTheSweepAndCanChangeIt) {
  std::string swept = kValid + "\n[sweep]\nseed = [1, 2, 3]\n\"train.lr\" = [0.1, 0.2]\n";
  auto runs = load(swept, {"seed=9"});  // replaces the seed dimension
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].seed, 9);
  EXPECT_EQ(runs[1].seed, 9);
  EXPECT_EQ(load(swept, {"sweep.seed=[4]"}).size(), 2u);
  EXPECT_EQ(load(swept, {"sweep={}"}).size(), 1u);
  // An override inside a swept table applies to every combination and is validated.
  std::string tables = kValid +
                       "\n[sweep]\nstrategy = [{plugin = \"scratch\"}, {plugin = "
                       "\"finetune\"}]\n";
  EXPECT_THAT(error(tables, {"strategy.plugin=finetun"}),
              HasSubstr("no strategy plugin named 'finetun': did you mean 'finetune'?"));
}

TEST_F(Config, OverridesAreLocatedAtTheirCharacter) {
  auto msg = error(kValid, {"train.lr=abc"});
  EXPECT_THAT(msg, StartsWith("override 'train.lr=abc' at character 10: "));
  EXPECT_THAT(msg, HasSubstr("'train.lr' must be float, got string \"abc\""));
  EXPECT_THAT(error(kValid, {"seed=[1,"}), StartsWith("override 'seed=[1,' at character"));
}

TEST_F(Config, InterpolationIsResolvedBeforeValidation) {
  auto runs = load(with("epochs = 2", "epochs = \"${seed}\""));
  EXPECT_EQ(runs[0].train.epochs, 3);
  auto msg = error(with("epochs = 2", "epochs = \"${name}\""));
  EXPECT_THAT(msg, StartsWith(at(26, 10)));
  EXPECT_THAT(msg, HasSubstr("'train.epochs' must be int, got string \"tiny\""));
}

TEST_F(Config, ShippedExperimentsComposeFromTheirGroups) {
  fs::path experiments = fs::path(TLAB_SOURCE_DIR) / "experiments";
  auto quick = tlab::load_experiment(experiments / "quickstart.toml", {}, loader_);
  ASSERT_EQ(quick.size(), 6u);
  EXPECT_EQ(quick[0].strategy.plugin, "scratch");
  EXPECT_EQ(quick[0].overrides, (std::vector<std::string>{"strategy=scratch", "seed=1"}));
  EXPECT_EQ(quick[5].strategy.plugin, "finetune");
  EXPECT_EQ(std::get<int64_t>(quick[5].strategy.params.at("source_epochs")), 3);
  EXPECT_EQ(std::get<std::string>(quick[5].source->params.at("domain")), "clean");
  EXPECT_EQ(std::get<std::string>(quick[5].target.params.at("domain")), "noisy");
  EXPECT_EQ(quick[5].target.shots, 5);
  EXPECT_EQ(quick[5].adapters.at(0).plugin, "linear_head");
  EXPECT_EQ(quick[5].train.epochs, 20);
  auto neg = tlab::load_experiment(experiments / "negative_transfer.toml",
                                   {"dataset@target=digits_rotated", "train=sgd"}, loader_);
  ASSERT_EQ(neg.size(), 9u);
  EXPECT_EQ(neg[8].strategy.plugin, "linear_probe");
  EXPECT_EQ(std::get<std::string>(neg[8].target.params.at("domain")), "rotated");
  EXPECT_EQ(neg[8].train.optimizer, "sgd");
  // The transferability zoo: 8 sources x 3 seeds, every run scoring its starting point.
  auto zoo = tlab::load_experiment(experiments / "transferability_zoo.toml", {}, loader_);
  ASSERT_EQ(zoo.size(), 24u);
  for (const auto& run : zoo) EXPECT_TRUE(run.eval.transferability);
  EXPECT_EQ(zoo[18].source->plugin, "idx");  // fashion_mnist, seeds 1-3
  EXPECT_EQ(std::get<std::string>(zoo[18].source->params.at("train_images")),
            "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
  EXPECT_EQ(std::get<double>(zoo[21].source->params.at("label_noise")), 1.0);
  tlab::LoadOptions multirun;
  multirun.multirun = true;
  // The search benchmark: a 27-point grid, and its random search with ASHA as the file says.
  auto grid = tlab::load_experiment(experiments / "search_l2sp_digits.toml", {}, loader_);
  ASSERT_EQ(grid.size(), 27u);
  EXPECT_EQ(grid[0].strategy.plugin, "l2sp");
  EXPECT_EQ(nlohmann::json::parse(grid[26].search_json)["sweeper"], "grid");
  auto asha = tlab::load_experiment(experiments / "search_l2sp_digits.toml",
                                    {"~sweep", "+sweep.samples=40", "+sweep.asha.min_epochs=3",
                                     "train.lr=tag(log, interval(1e-4, 1e-2))",
                                     "train.weight_decay=tag(log, interval(1e-6, 1e-2))",
                                     "strategy.alpha=tag(log, interval(1e-3, 1e-1))"},
                                    loader_, multirun);
  ASSERT_EQ(asha.size(), 40u);
  const auto search = nlohmann::json::parse(asha[39].search_json);
  EXPECT_EQ(search["trial"], 39);
  EXPECT_EQ(search["pruner"]["min_epochs"], 3);
  EXPECT_EQ(asha[39].overrides.size(), 3u);  // the drawn values; the sweep's own keys are not
  // Real data (issue 23): the domains are the dataset tables' classes and transforms.
  auto rotated = tlab::load_experiment(experiments / "fashion_rotated.toml", {}, loader_);
  ASSERT_EQ(rotated.size(), 12u);
  EXPECT_DOUBLE_EQ(rotated[0].target.shift.rotate, 45);
  EXPECT_FALSE(rotated[0].source->shift.any());
  EXPECT_THAT(rotated[0].config_toml, HasSubstr("[target.transform]\nrotate = 45.0"));
  auto footwear =
      tlab::load_experiment(experiments / "fashion_clothing_to_footwear.toml", {}, loader_);
  ASSERT_EQ(footwear.size(), 9u);
  EXPECT_EQ(footwear[0].source->shift.classes, (std::vector<int64_t>{0, 1, 2, 3, 4, 6}));
  EXPECT_EQ(footwear[0].target.shift.classes, (std::vector<int64_t>{5, 7, 9}));
  // Text transfer (issue 21): a tiny BERT on WordPiece-tokenised generated reviews.
  auto reviews = tlab::load_experiment(experiments / "reviews_bert.toml", {}, loader_);
  ASSERT_EQ(reviews.size(), 12u);
  EXPECT_EQ(reviews[0].backbone.plugin, "bert");
  EXPECT_EQ(std::get<std::string>(reviews[0].target.params.at("tokenize")), "wordpiece");
  EXPECT_EQ(std::get<std::string>(reviews[0].source->params.at("path")),
            "results/datasets/reviews/books.tsv");
  EXPECT_EQ(reviews[0].target.shots, 20);
  auto mlm = tlab::load_experiment(experiments / "reviews_bert_mlm.toml", {}, loader_);
  ASSERT_EQ(mlm.size(), 40u);  // none, supervised, mlm, mlm+supervised x frozen or not x 5 seeds
  EXPECT_EQ(std::get<std::string>(mlm[20].strategy.params.at("pretrain")), "mlm");
  EXPECT_EQ(std::get<std::string>(mlm[20].strategy.params.at("mlm_vocab")),
            "results/datasets/reviews/vocab.txt");  // ${target.vocab_path}
  auto vectors = tlab::load_experiment(experiments / "reviews_vectors.toml", {}, loader_);
  ASSERT_EQ(vectors.size(), 9u);  // random, frozen vectors, tuned vectors x 3 seeds
  EXPECT_EQ(vectors[0].backbone.plugin, "embedding");
  auto real = tlab::load_experiment(experiments / "digits_synthetic_to_real.toml", {}, loader_);
  ASSERT_EQ(real.size(), 12u);
  EXPECT_EQ(std::get<std::string>(real[0].target.params.at("train_images")),
            "results/datasets/uci_digits/train-images-idx3-ubyte.gz");
  auto glob =
      tlab::load_experiment(experiments / "quickstart.toml",
                            {"strategy=glob(*)", "seed=1", "backbone=mlp"}, loader_, multirun);
  // One run per option file of the strategy group, in name order.
  std::vector<std::string> options;
  for (const auto& e : fs::directory_iterator(experiments / "strategy"))
    if (e.path().extension() == ".toml") options.push_back(e.path().stem().string());
  std::sort(options.begin(), options.end());
  ASSERT_EQ(glob.size(), options.size());
  for (std::size_t i = 0; i < glob.size(); ++i) {
    EXPECT_EQ(glob[i].overrides.at(0), "strategy=" + options[i]);
    EXPECT_EQ(glob[i].backbone.plugin, "mlp");
  }
}

TEST_F(Config, RunawaySweepsAreRefusedBeforeExpansion) {
  std::string big = kValid + "\n[sweep]\n";
  std::string values;
  for (int i = 0; i < 100; ++i) values += (i ? ", " : "") + std::to_string(i);
  for (const char* k : {"seed", "\"train.epochs\"", "\"train.batch_size\""})
    big += std::string(k) + " = [" + values + "]\n";
  EXPECT_THAT(error(big), HasSubstr("the sweep has 1000000 combinations, more than the limit"));
}

TEST_F(Config, HostileInputFailsCleanly) {
  EXPECT_THAT(error(""), HasSubstr("has no [target] table"));
  std::string binary("\x00\xff\xfe\x01garbage\x80\x81", 13);
  EXPECT_THAT(error(binary), StartsWith((dir_ / "exp.toml").string() + ":"));
  EXPECT_THAT(error("name = \"\xc3\x28\"\n"), StartsWith(at(1, 9)));  // invalid UTF-8
  std::string deep = "x = " + std::string(5000, '[') + std::string(5000, ']') + "\n";
  EXPECT_THAT(error(deep), StartsWith((dir_ / "exp.toml").string() + ":1:"));
  EXPECT_THAT(tlab::test::error_of<tlab::ConfigError>(
                  [&] { tlab::load_experiment(dir_ / "missing.toml", {}, loader_); }),
              HasSubstr("missing.toml: experiment file does not exist"));
}

}  // namespace
