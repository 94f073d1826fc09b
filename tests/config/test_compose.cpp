// Composition (defaults lists, search path, packages, group overrides), value overrides,
// interpolation and sweep expansion, on the fixture config tree tests/fixtures/configs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "config/compose.hpp"
#include "test_helpers.hpp"
#include "util.hpp"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using tlab::ConfigError;
using tlab::cfg::Composition;
using tlab::cfg::Node;

namespace {

class Compose : public ::testing::Test {
 public:
  fs::path dir_ = tlab::test::temp_dir("compose");
  void TearDown() override { fs::remove_all(dir_); }

  fs::path exp(const std::string& text) { return tlab::test::write_file(dir_ / "exp.toml", text); }

  Composition run(const std::string& text, std::vector<std::string> ov = {},
                  bool multirun = false) {
    tlab::cfg::ComposeOptions o;
    o.config_dirs = {TLAB_CONFIG_FIXTURES};
    o.multirun = multirun;
    return tlab::cfg::compose(exp(text), ov, o);
  }
  std::string error(const std::string& text, std::vector<std::string> ov = {},
                    bool multirun = false) {
    return tlab::test::error_of<ConfigError>([&] { run(text, ov, multirun); });
  }
  // The composed (single-run) config as JSON, for compact comparisons.
  std::string json(const std::string& text, std::vector<std::string> ov = {}) {
    auto c = run(text, ov);
    EXPECT_EQ(c.jobs.size(), 1u);
    std::string j = tlab::cfg::format_tree(c.jobs.at(0).config, "json");
    j.erase(std::remove_if(j.begin(), j.end(), [](char ch) { return ch == ' ' || ch == '\n'; }),
            j.end());
    return j;
  }
  std::string at(int line, int col) {
    return (dir_ / "exp.toml").string() + ":" + std::to_string(line) + ":" + std::to_string(col) +
           ": ";
  }
  static std::string fixture(const std::string& rel) {
    return (fs::path(TLAB_CONFIG_FIXTURES) / rel).string();
  }
};

// --- Defaults lists ---------------------------------------------------------------------------

TEST_F(Compose, WithoutDefaultsTheFileIsTheConfig) {
  EXPECT_EQ(json("a = 1\n[t]\nb = \"x\"\n"), R"({"a":1,"t":{"b":"x"}})");
}

TEST_F(Compose, DefaultsPickGroupOptionsAndSelfComesLastByDefault) {
  EXPECT_EQ(json("defaults = [{ db = \"mysql\" }]\n[db]\nport = 1\n"),
            R"({"db":{"driver":"mysql","port":1,"user":"root","pool":{"size":4,"timeout":1.5}}})");
}

TEST_F(Compose, SelfFirstLetsTheDefaultsOverrideTheFile) {
  EXPECT_EQ(json("defaults = [\"_self_\", { db = \"sqlite\" }]\n[db]\ndriver = \"mine\"\n"),
            R"({"db":{"driver":"sqlite","path":"data.db"}})");
}

TEST_F(Compose, LaterEntriesOverrideEarlierOnesAndTablesMergeDeeply) {
  auto c = run("defaults = [{ db = \"mysql\" }, { \"db@db\" = \"postgres\" }]\n");
  // postgres brings auth (nested defaults), overrides driver/port and merges pool.size only.
  EXPECT_EQ(tlab::cfg::format_tree(c.config, "json").find("\"timeout\": 1.5") != std::string::npos,
            true);
  const Node* db = c.config.get("db");
  ASSERT_TRUE(db);
  EXPECT_EQ(db->get("driver")->as_string(), "postgres");
  EXPECT_EQ(db->get("user")->as_string(), "root");  // kept from mysql
  EXPECT_EQ(db->find({"pool", "size"})->as_int(), 8);
  EXPECT_EQ(c.config.find({"auth", "kind"})->as_string(), "token");
}

TEST_F(Compose, OneGroupAtTwoPackages) {
  auto c = run("defaults = [{ \"db@source\" = \"mysql\" }, { \"db@target\" = \"sqlite\" }]\n");
  EXPECT_EQ(c.config.find({"source", "driver"})->as_string(), "mysql");
  EXPECT_EQ(c.config.find({"target", "driver"})->as_string(), "sqlite");
  EXPECT_FALSE(c.config.get("db"));
  ASSERT_EQ(c.choices.size(), 2u);
  EXPECT_EQ(c.choices[0], std::make_pair(std::string("db@source"), std::string("mysql")));
}

TEST_F(Compose, PackagesCanIndexListsAndNestedGroupsUseDots) {
  auto c =
      run("defaults = [{ \"model@layers.0\" = \"small\" }, { \"model@layers.1\" = "
          "\"large\" }, { \"site/server\" = \"local\" }]\n");
  ASSERT_TRUE(c.config.get("layers")->is_list());
  EXPECT_EQ(c.config.find({"layers", "1", "width"})->as_int(), 512);
  EXPECT_EQ(c.config.find({"site", "server", "port"})->as_int(), 8080);
  auto g = run("defaults = [{ \"db@_global_\" = \"sqlite\" }]\n");
  EXPECT_EQ(g.config.get("driver")->as_string(), "sqlite");
}

TEST_F(Compose, TheExperimentFolderIsSearchedFirst) {
  fs::create_directories(dir_ / "db");
  tlab::test::write_file(dir_ / "db" / "mysql.toml", "driver = \"local-mysql\"\n");
  auto c = run("defaults = [{ db = \"mysql\" }]\n");
  EXPECT_EQ(c.config.find({"db", "driver"})->as_string(), "local-mysql");
  EXPECT_FALSE(c.config.find({"db", "port"}));
  auto groups = c.search.groups();
  EXPECT_EQ(groups["db"], (std::vector<std::string>{"mysql", "postgres", "sqlite"}));
  EXPECT_THAT(tlab::cfg::describe_groups(c.search), HasSubstr("db: mysql, postgres, sqlite"));
}

TEST_F(Compose, DefaultsErrorsAreLocated) {
  EXPECT_THAT(error("defaults = [{ db = \"mysq\" }]\n"),
              AllOf(StartsWith(at(1, 20)),
                    HasSubstr("config group 'db' has no option 'mysq'; did you mean 'mysql'? "
                              "options: mysql, postgres, sqlite")));
  EXPECT_THAT(error("defaults = [{ dbb = \"mysql\" }]\n"),
              AllOf(StartsWith(at(1, 13)), HasSubstr("there is no config group 'dbb'"),
                    HasSubstr("did you mean 'db'?")));
  EXPECT_THAT(error("defaults = \"db\"\n"), HasSubstr("'defaults' must be a list"));
  EXPECT_THAT(error("defaults = [\"mysql\"]\n"),
              HasSubstr("defaults entry \"mysql\" is not valid; an entry is \"_self_\""));
  EXPECT_THAT(error("defaults = [{ db = \"mysql\", auth = \"token\" }]\n"),
              HasSubstr("a table with 2 keys"));
  EXPECT_THAT(error("defaults = [{ db = 3 }]\n"),
              HasSubstr("defaults entry 'db' must name an option as a string, got integer 3"));
  EXPECT_THAT(error("defaults = [\"_self_\", \"_self_\"]\n"), HasSubstr("appears twice"));
}

TEST_F(Compose, ErrorsInsideAnOptionShowTheIncludeChain) {
  auto msg = error("x = 1\ndefaults = [{ bad = \"broken\" }]\n");
  EXPECT_THAT(msg, StartsWith(fixture("bad/broken.toml") + ":1:5: "));
  EXPECT_THAT(msg, HasSubstr("\n  included from " + at(2, 21).substr(0, at(2, 21).size() - 2) +
                             " (defaults entry bad=broken)"));
  auto nested = error("defaults = [{ bad = \"unknown_group\" }]\n");
  EXPECT_THAT(nested, StartsWith(fixture("bad/unknown_group.toml") + ":1:13: "));
  EXPECT_THAT(nested, HasSubstr("included from"));
}

TEST_F(Compose, IncludeCyclesAreLocatedErrors) {
  auto msg = error("defaults = [{ cycle = \"a\" }]\n");
  EXPECT_THAT(msg, HasSubstr("include cycle: "));
  EXPECT_THAT(msg, HasSubstr("cycle/a.toml -> "));
  EXPECT_THAT(msg, HasSubstr("cycle/b.toml -> "));
  EXPECT_THAT(msg, StartsWith(fixture("cycle/b.toml") + ":1:23: "));
}

TEST_F(Compose, EmptyOptionFilesAreEmptyTables) {
  auto c = run("defaults = [{ bad = \"empty\" }]\n");
  EXPECT_TRUE(c.config.get("bad") == nullptr || c.config.get("bad")->empty());
}

// --- Group overrides --------------------------------------------------------------------------

TEST_F(Compose, GroupOverridesChooseOptions) {
  const std::string base = "defaults = [{ db = \"mysql\" }]\n";
  EXPECT_EQ(run(base, {"db=sqlite"}).config.find({"db", "driver"})->as_string(), "sqlite");
  EXPECT_EQ(run(base, {"+model=small"}).config.find({"model", "layers"})->as_int(), 2);
  EXPECT_FALSE(run(base, {"~db"}).config.get("db"));
  EXPECT_FALSE(run(base, {"db=null"}).config.get("db"));
  EXPECT_FALSE(run(base, {"~db=mysql"}).config.get("db"));
  EXPECT_EQ(run(base, {"++db=sqlite"}).config.find({"db", "driver"})->as_string(), "sqlite");
  EXPECT_EQ(run(base, {"++model=large"}).config.find({"model", "layers"})->as_int(), 8);
  // Options chosen inside an option file can be overridden too.
  EXPECT_EQ(run("defaults = [{ db = \"postgres\" }]\n", {"auth=password"})
                .config.find({"auth", "kind"})
                ->as_string(),
            "password");
  auto two = "defaults = [{ \"db@source\" = \"mysql\" }, { \"db@target\" = \"mysql\" }]\n";
  EXPECT_EQ(run(two, {"db@target=sqlite"}).config.find({"target", "driver"})->as_string(),
            "sqlite");
}

// Issue 25: the global package from the command line, as Hydra's: group@_global_=option and the
// empty package group@=option put the option's keys at the top (they landed in a literal
// `_global_` table, or were refused), and change or remove a choice made at @_global_ in the
// defaults list.
TEST_F(Compose, TheGlobalPackageFromTheCommandLine) {
  EXPECT_EQ(json("x = 1\n", {"+db@_global_=sqlite"}),
            R"({"x":1,"driver":"sqlite","path":"data.db"})");
  EXPECT_EQ(json("x = 1\n", {"+db@=sqlite"}), R"({"x":1,"driver":"sqlite","path":"data.db"})");
  const std::string global = "defaults = [{ \"db@_global_\" = \"sqlite\" }]\n";
  EXPECT_EQ(run(global, {"db@_global_=mysql"}).config.get("driver")->as_string(), "mysql");
  EXPECT_EQ(run(global, {"db@=mysql"}).config.get("driver")->as_string(), "mysql");
  EXPECT_FALSE(run(global, {"~db@_global_"}).config.get("driver"));
}

// Issue 25: +group=option on an experiment without a defaults list was ignored (exit 0). As in
// Hydra, no defaults list is [_self_], and the choice is appended to it.
TEST_F(Compose, AddingAGroupWorksWithoutADefaultsList) {
  auto c = run("x = 1\n", {"+db=sqlite"});
  EXPECT_EQ(c.config.find({"db", "driver"})->as_string(), "sqlite");
  EXPECT_EQ(c.config.get("x")->as_int(), 1);
  EXPECT_EQ(run("x = 1\n", {"++db=sqlite"}).config.find({"db", "driver"})->as_string(), "sqlite");
  EXPECT_THAT(error("x = 1\n", {"db=sqlite"}),
              HasSubstr("the defaults list does not choose from config group 'db'; to add it, "
                        "write +db=sqlite"));
}

TEST_F(Compose, GroupOverrideErrors) {
  const std::string base = "defaults = [{ db = \"mysql\" }]\n";
  EXPECT_THAT(error(base, {"db=mysq"}),
              AllOf(StartsWith("override 'db=mysq' at character 4: "),
                    HasSubstr("config group 'db' has no option 'mysq'; did you mean 'mysql'?")));
  EXPECT_THAT(error(base, {"model=small"}),
              HasSubstr("the defaults list does not choose from config group 'model'; to add "
                        "it, write +model=small"));
  EXPECT_THAT(error(base, {"+db=sqlite"}),
              HasSubstr("cannot add config group 'db': the defaults list already chooses "
                        "'mysql'"));
  EXPECT_THAT(error(base, {"~db=sqlite"}),
              HasSubstr("config group 'db' is 'mysql', not 'sqlite'; nothing deleted"));
  auto two = "defaults = [{ \"db@source\" = \"mysql\" }, { \"db@target\" = \"mysql\" }]\n";
  EXPECT_THAT(error(two, {"db=sqlite"}),
              HasSubstr("config group 'db' is placed at 'source' and 'target' in this "
                        "experiment, not at 'db'; say which: db@source=sqlite or "
                        "db@target=sqlite"));
  EXPECT_THAT(error("x = 1\n", {"nogroup@pkg=x"}),
              HasSubstr("'@package' applies to config groups, and there is no config group "
                        "'nogroup'"));
}

// --- Value overrides --------------------------------------------------------------------------

TEST_F(Compose, ValueOverridesSetAddAndDelete) {
  const std::string base = "[train]\nlr = 0.1\nepochs = 3\n[model]\nlayers = [1, 2]\n";
  EXPECT_EQ(json(base, {"train.lr=0.5", "model.layers=[4]", "+train.momentum=0.9",
                        "++train.epochs=7", "++extra.deep.key='s'", "~model"}),
            R"({"train":{"lr":0.5,"epochs":7,"momentum":0.9},"extra":{"deep":{"key":"s"}}})");
  EXPECT_EQ(json(base, {"train.lr=null"}), R"({"train":{"epochs":3},"model":{"layers":[1,2]}})");
  EXPECT_EQ(json(base, {"~train.lr=0.1"}), R"({"train":{"epochs":3},"model":{"layers":[1,2]}})");
  EXPECT_EQ(json(base, {"model.layers.1=5"}),
            R"({"train":{"lr":0.1,"epochs":3},"model":{"layers":[1,5]}})");
  EXPECT_EQ(json(base, {"train={a: 1}"}), R"({"train":{"a":1},"model":{"layers":[1,2]}})");
}

TEST_F(Compose, ValueOverrideErrorsNameTheNearestKeyAndNeverAdvisePlus) {
  const std::string base = "[train]\nlr = 0.1\nepochs = 3\n";
  auto msg = error(base, {"train.lrr=0.5"});
  EXPECT_THAT(msg, StartsWith("override 'train.lrr=0.5' at character 1: "));
  EXPECT_THAT(msg, HasSubstr("key 'train.lrr' does not exist in the config; did you mean "
                             "'train.lr'?"));
  EXPECT_THAT(msg, ::testing::Not(HasSubstr("+")));
  EXPECT_THAT(error(base, {"+train.lr=0.5"}),
              HasSubstr("cannot add 'train.lr': it already exists (float 0.1, from " +
                        at(2, 6).substr(0, at(2, 6).size() - 2) +
                        "); to change it write train.lr=... or ++train.lr=..."));
  EXPECT_THAT(error(base, {"~train.lr=0.2"}),
              HasSubstr("'train.lr' is float 0.1, not float 0.2; nothing deleted"));
  EXPECT_THAT(error(base, {"~train.momentum"}),
              HasSubstr("cannot delete: key 'train.momentum' does not exist"));
  EXPECT_THAT(error(base, {"train.lr.x=1"}), HasSubstr("key 'train.lr.x' does not exist"));
  EXPECT_THAT(error(base, {"++train.lr.x=1"}),
              HasSubstr("'train.lr.x': 'train.lr' is float 0.1, not a table"));
  EXPECT_THAT(error(base, {"train.lr=1,2"}),
              HasSubstr("is a sweep; to run one job per value add -m (--multirun)"));
}

TEST_F(Compose, SchemaKeysAllowSettingKeysLeftAtTheirDefaults) {
  tlab::cfg::ComposeOptions o;
  o.schema_keys = [](const Node&, const std::vector<std::string>& path) {
    return path == std::vector<std::string>{"train"} ? std::vector<std::string>{"lr", "momentum"}
                                                     : std::vector<std::string>{};
  };
  auto c = tlab::cfg::compose(exp("[train]\nlr = 0.1\n"), {"train.momentum=0.9"}, o);
  EXPECT_EQ(c.jobs[0].config.find({"train", "momentum"})->as_number(), 0.9);
  auto msg = tlab::test::error_of<ConfigError>(
      [&] { tlab::cfg::compose(exp("[train]\nlr = 0.1\n"), {"train.momentun=0.9"}, o); });
  EXPECT_THAT(msg, HasSubstr("did you mean 'train.momentum'?"));
}

// --- Interpolation ----------------------------------------------------------------------------

Node resolved(const std::string& text, Compose& t) {
  return tlab::cfg::resolve(t.run(text).jobs.at(0).config);
}

TEST_F(Compose, InterpolationKeepsTypesAndBuildsStrings) {
  auto c = resolved(
      "lr = 0.5\nname = \"run\"\ncopy = \"${a.b}\"\n[a]\nx = \"${lr}\"\ny = \"${name}-${lr}\"\n"
      "z = \"${.x}\"\n[a.b]\nup = \"${..x}\"\nlit = '\\${lr}'\n",
      *this);
  EXPECT_TRUE(c.find({"a", "x"})->is_float());
  EXPECT_EQ(c.find({"a", "y"})->as_string(), "run-0.5");
  EXPECT_EQ(c.find({"a", "z"})->as_number(), 0.5);
  EXPECT_EQ(c.find({"a", "b", "up"})->as_number(), 0.5);
  EXPECT_EQ(c.find({"a", "b", "lit"})->as_string(), "${lr}");
  EXPECT_EQ(c.find({"copy", "up"})->as_number(), 0.5);  // a whole table, resolved
  // A value that refers to a table holding it is a cycle.
  EXPECT_THAT(tlab::test::error_of<ConfigError>([&] { resolved("[a]\nb = \"${a}\"\n", *this); }),
              HasSubstr("interpolation cycle: a -> a.b -> a"));
}

TEST_F(Compose, InterpolationSeesGroupOptionsAndOverrides) {
  auto c = tlab::cfg::resolve(run("defaults = [{ model = \"large\" }, { db = \"mysql\" }, { auth = "
                                  "\"password\" }]\n",
                                  {"model.layers=3"})
                                  .jobs[0]
                                  .config);
  EXPECT_EQ(c.find({"model", "name"})->as_string(), "large-3");
  EXPECT_EQ(c.find({"auth", "user"})->as_string(), "root");
}

TEST_F(Compose, EnvironmentInterpolation) {
  setenv("TLAB_TEST_LR", "0.25", 1);
  setenv("TLAB_TEST_NAME", "abc", 1);
  unsetenv("TLAB_TEST_UNSET");
  auto c = resolved(
      "a = \"${env:TLAB_TEST_LR}\"\nb = \"${env:TLAB_TEST_NAME}\"\nc = "
      "\"${env:TLAB_TEST_UNSET,7}\"\n"
      "d = \"x-${env:TLAB_TEST_UNSET, def}\"\n",
      *this);
  EXPECT_EQ(c.get("a")->as_number(), 0.25);
  EXPECT_EQ(c.get("b")->as_string(), "abc");
  EXPECT_EQ(c.get("c")->as_int(), 7);
  EXPECT_EQ(c.get("d")->as_string(), "x-def");
  auto msg = tlab::test::error_of<ConfigError>(
      [&] { resolved("\n\nx = \"${env:TLAB_TEST_UNSET}\"\n", *this); });
  EXPECT_THAT(msg, StartsWith(at(3, 5)));
  EXPECT_THAT(msg, HasSubstr("environment variable TLAB_TEST_UNSET is not set"));
}

TEST_F(Compose, InterpolationErrorsAreLocated) {
  auto err = [&](const std::string& text) {
    return tlab::test::error_of<ConfigError>([&] { resolved(text, *this); });
  };
  EXPECT_THAT(err("[train]\nlr = 1\n[x]\ny = \"${train.lrr}\"\n"),
              AllOf(StartsWith(at(4, 5)),
                    HasSubstr("interpolation '${train.lrr}' refers to 'train.lrr', which does "
                              "not exist; did you mean 'train.lr'?")));
  auto cycle = err("a = \"${b}\"\nb = \"${c}\"\nc = \"${a}\"\n");
  EXPECT_THAT(cycle, HasSubstr("interpolation cycle: a -> b -> c -> a"));
  EXPECT_THAT(cycle, StartsWith(at(1, 5)));
  EXPECT_THAT(err("a = \"${a}\"\n"), HasSubstr("interpolation cycle: a -> a"));
  EXPECT_THAT(err("a = \"${b\"\n"), HasSubstr("has no closing '}'"));
  EXPECT_THAT(err("a = \"${x.${y}}\"\n"), HasSubstr("nested interpolations are not supported"));
  EXPECT_THAT(err("a = \"${oc.select:x}\"\n"), HasSubstr("unknown resolver 'oc.select'"));
  EXPECT_THAT(err("a = \"${...x}\"\n"), HasSubstr("above the top of the config"));
  EXPECT_THAT(err("[t]\na = [1]\nb = \"n${t.a}\"\n"),
              HasSubstr("inside a string refers to a list"));
}

// --- Sweeps -----------------------------------------------------------------------------------

std::vector<std::string> runs_of(const Composition& c) {
  std::vector<std::string> out;
  for (const auto& j : c.jobs) out.push_back(tlab::join(j.overrides, " "));
  return out;
}

TEST_F(Compose, SweepTableIsAProductInFileOrderLastFastest) {
  auto c = run("seed = 0\nlr = 0.1\n[sweep]\nseed = [1, 2]\nlr = [0.1, 0.01, 0.001]\n");
  EXPECT_EQ(runs_of(c),
            (std::vector<std::string>{"seed=1 lr=0.1", "seed=1 lr=0.01", "seed=1 lr=0.001",
                                      "seed=2 lr=0.1", "seed=2 lr=0.01", "seed=2 lr=0.001"}));
  EXPECT_EQ(c.jobs[4].config.get("lr")->as_number(), 0.01);
  EXPECT_FALSE(c.jobs[0].config.get("sweep"));
  EXPECT_TRUE(c.config.get("sweep"));  // `tlab config` shows the sweep table
}

TEST_F(Compose, SweepTableStringsAreSweepExpressions) {
  auto c = run("seed = 0\n[t]\nx = 0\n[sweep]\nseed = \"range(1, 4)\"\n[sweep.t]\nx = [5]\n");
  EXPECT_EQ(runs_of(c), (std::vector<std::string>{"seed=1 t.x=5", "seed=2 t.x=5", "seed=3 t.x=5"}));
  EXPECT_THAT(error("seed = 0\n[sweep]\nseed = \"3\"\n"), HasSubstr("is a single value"));
  EXPECT_THAT(error("seed = 0\n[sweep]\nseed = 3\n"),
              HasSubstr("sweep 'seed' must be a list of values"));
  EXPECT_THAT(error("seed = 0\n[sweep]\nseed = []\n"), HasSubstr("sweep 'seed' has no values"));
}

// Hydra's tests/test_basic_sweeper.py (test_split): a product of the command-line sweeps in
// their order, the last varying fastest; a list value is one value. (max_batch_size, how many
// jobs Hydra launches at once, is tlab's -j.)
TEST_F(Compose, HydrasBasicSweeperCases) {
  const std::string base = "x = 0\na = 0\nb = 0\n";
  EXPECT_EQ(runs_of(run(base, {"x=10"}, true)), (std::vector<std::string>{"x=10"}));
  EXPECT_EQ(runs_of(run(base, {"x=10,20"}, true)), (std::vector<std::string>{"x=10", "x=20"}));
  EXPECT_EQ(runs_of(run(base, {"x=[10,20]"}, true)), (std::vector<std::string>{"x=[10,20]"}));
  EXPECT_EQ(runs_of(run(base, {"x=[a,b,c],[d,e,f]"}, true)),
            (std::vector<std::string>{"x=[a, b, c]", "x=[d, e, f]"}));
  EXPECT_EQ(runs_of(run(base, {"a=1,2", "b=10,11"}, true)),
            (std::vector<std::string>{"a=1 b=10", "a=1 b=11", "a=2 b=10", "a=2 b=11"}));
  EXPECT_EQ(runs_of(run(base, {"a=range(0,3)"}, true)),
            (std::vector<std::string>{"a=0", "a=1", "a=2"}));
  EXPECT_EQ(runs_of(run(base, {"a=range(3)"}, true)),
            (std::vector<std::string>{"a=0", "a=1", "a=2"}));
}

TEST_F(Compose, CommandLineSweepsNeedMultirunAndComeAfterTheTable) {
  const std::string base = "seed = 0\nlr = 0.1\n[sweep]\nseed = [1, 2]\n";
  EXPECT_THAT(error(base, {"lr=0.1,0.2"}), HasSubstr("add -m"));
  auto c = run(base, {"lr=0.1,0.2"}, true);
  EXPECT_EQ(runs_of(c), (std::vector<std::string>{"seed=1 lr=0.1", "seed=1 lr=0.2", "seed=2 lr=0.1",
                                                  "seed=2 lr=0.2"}));
  // A command-line value or sweep of a swept key replaces that dimension.
  EXPECT_EQ(runs_of(run(base, {"seed=7"})), (std::vector<std::string>{"seed=7"}));
  EXPECT_EQ(runs_of(run(base, {"seed=range(3,5)"}, true)),
            (std::vector<std::string>{"seed=3", "seed=4"}));
  EXPECT_EQ(run(base, {"sweep.seed=[4,5,6]"}).jobs.size(), 3u);
  EXPECT_EQ(run(base, {"~sweep"}).jobs.size(), 1u);
}

TEST_F(Compose, ZippedDimensionsVaryTogether) {
  const std::string base =
      "seed = 0\nlr = 0.1\nbs = 1\n[sweep]\nseed = [1, 2]\n[[sweep.zip]]\nlr = [0.1, 0.01]\n"
      "bs = [32, 64]\n";
  EXPECT_EQ(runs_of(run(base)),
            (std::vector<std::string>{"seed=1 lr=0.1 bs=32", "seed=1 lr=0.01 bs=64",
                                      "seed=2 lr=0.1 bs=32", "seed=2 lr=0.01 bs=64"}));
  auto cli = run("seed = 0\nlr = 0.1\nbs = 1\n",
                 {"seed=1,2", "lr=zip(0.1,0.01,0.001)", "bs=zip(range(1,4))"}, true);
  ASSERT_EQ(cli.jobs.size(), 6u);
  EXPECT_EQ(runs_of(cli)[2], "seed=1 lr=0.001 bs=3");
  EXPECT_EQ(runs_of(cli)[3], "seed=2 lr=0.1 bs=1");
  EXPECT_THAT(error("lr = 0.1\nbs = 1\n[[sweep.zip]]\nlr = [0.1, 0.01]\nbs = [1, 2, 3]\n"),
              HasSubstr("zipped sweeps must have the same length: 'bs' has 3 values but 'lr' (" +
                        at(4, 6).substr(0, at(4, 6).size() - 2) + ") has 2"));
}

TEST_F(Compose, GroupSweepsRecompose) {
  const std::string base =
      "defaults = [{ db = \"mysql\" }]\n[sweep]\ndb = [\"mysql\", \"sqlite\"]\n";
  auto c = run(base);
  ASSERT_EQ(c.jobs.size(), 2u);
  EXPECT_EQ(c.jobs[1].config.find({"db", "driver"})->as_string(), "sqlite");
  EXPECT_FALSE(c.jobs[1].config.find({"db", "port"}));  // not merged over mysql
  auto g = run("defaults = [{ db = \"mysql\" }]\n", {"db=glob(*sql*)"}, true);
  EXPECT_EQ(runs_of(g), (std::vector<std::string>{"db=mysql", "db=sqlite"}));
  auto ex =
      run("defaults = [{ db = \"mysql\" }]\n", {"db=glob(*,exclude=p*)", "db.driver=x"}, true);
  EXPECT_EQ(runs_of(ex),
            (std::vector<std::string>{"db=mysql db.driver=x", "db=sqlite db.driver=x"}));
  EXPECT_EQ(ex.jobs[1].config.find({"db", "driver"})->as_string(), "x");
  EXPECT_THAT(error("x = 1\n", {"x=glob(*)"}, true),
              HasSubstr("glob() chooses config group options, and 'x' is not a config group"));
  EXPECT_THAT(error("defaults = [{ db = \"mysql\" }]\n", {"db=glob(zz*)"}, true),
              HasSubstr("glob matches no option of config group 'db'"));
}

TEST_F(Compose, RunawaySweepsAreRefusedBeforeExpansion) {
  std::string values;
  for (int i = 0; i < 100; ++i) values += (i ? ", " : "") + std::to_string(i);
  std::string big = "a = 0\nb = 0\nc = 0\n[sweep]\n";
  for (const char* k : {"a", "b", "c"}) big += std::string(k) + " = [" + values + "]\n";
  EXPECT_THAT(error(big), HasSubstr("the sweep has 1000000 combinations, more than the limit"));
}

// --- Sampled sweeps ([sweep] samples = N) -----------------------------------------------------

// DomainBed's random search in one table: N draws of the swept keys, each crossed with the run
// seeds; the draws are the same for the same search_seed, differ for another, and a key's draws
// do not change when another key is swept too.
TEST_F(Compose, SampledSweepsDrawNConfigurationsCrossedWithTheSeeds) {
  const std::string base =
      "seed = 0\nlr = 0.1\nwd = 0.0\nwidth = 8\nmethod = \"a\"\n[sweep]\nsamples = 6\n"
      "seed = [1, 2, 3]\nlr = \"tag(log, interval(1e-4, 1e-1))\"\nwd = \"interval(0, 0.01)\"\n"
      "width = \"int(interval(4, 64))\"\nmethod = [\"dann\", \"coral\", \"mmd\"]\n";
  auto c = run(base);
  EXPECT_EQ(c.search_spec.sweeper, "random");
  EXPECT_EQ(c.search_spec.samples, 6);
  EXPECT_EQ(c.search_spec.search_seed, 0);
  ASSERT_EQ(c.jobs.size(), 18u);
  std::set<std::string> draws;
  bool low_decade = false, high_decade = false;
  for (std::size_t i = 0; i < c.jobs.size(); ++i) {
    const auto& job = c.jobs[i];
    EXPECT_EQ(job.trial, static_cast<int64_t>(i / 3)) << i;
    EXPECT_EQ(job.config.get("seed")->as_int(), static_cast<int64_t>(i % 3 + 1));
    const double lr = job.config.get("lr")->as_number(), wd = job.config.get("wd")->as_number();
    EXPECT_TRUE(job.config.get("lr")->is_float());
    EXPECT_GE(lr, 1e-4);
    EXPECT_LE(lr, 1e-1);
    low_decade |= lr < 1e-3;
    high_decade |= lr > 1e-2;
    EXPECT_GE(wd, 0.0);
    EXPECT_LE(wd, 0.01);
    ASSERT_TRUE(job.config.get("width")->is_int());
    EXPECT_GE(job.config.get("width")->as_int(), 4);
    EXPECT_LE(job.config.get("width")->as_int(), 64);
    EXPECT_THAT(job.config.get("method")->as_string(), ::testing::AnyOf("dann", "coral", "mmd"));
    // The runs of one draw differ only in the seed.
    std::string runs = runs_of(c)[i];
    draws.insert(runs.substr(runs.find(' ')));
    EXPECT_THAT(runs, StartsWith("seed=" + std::to_string(i % 3 + 1) + " lr="));
    ASSERT_EQ(job.distributions.size(), 5u);
    EXPECT_EQ(job.distributions[0],
              (std::pair<std::string, std::string>{"seed", "choice(1, 2, 3)"}));
    EXPECT_EQ(job.distributions[1],
              (std::pair<std::string, std::string>{"lr", "tag(log, interval(0.0001, 0.1))"}));
    EXPECT_EQ(job.distributions[3].second, "int(interval(4, 64))");
    EXPECT_EQ(job.distributions[4].second, "choice(dann, coral, mmd)");
  }
  EXPECT_EQ(draws.size(), 6u);  // six distinct draws
  EXPECT_TRUE(low_decade && high_decade) << "log-uniform over three decades";
  // Reproducible; another search_seed gives other draws; a key's draws stay when another key
  // joins the search.
  EXPECT_EQ(runs_of(run(base)), runs_of(c));
  auto other = run(base, {"+sweep.search_seed=1"});
  EXPECT_EQ(other.search_spec.search_seed, 1);
  EXPECT_NE(runs_of(other), runs_of(c));
  auto fewer =
      run("seed = 0\nlr = 0.1\n[sweep]\nsamples = 6\nseed = [1, 2, 3]\n"
          "lr = \"tag(log, interval(1e-4, 1e-1))\"\n");
  for (std::size_t i = 0; i < c.jobs.size(); ++i)
    EXPECT_EQ(fewer.jobs[i].config.get("lr")->as_number(), c.jobs[i].config.get("lr")->as_number());
  // From the command line, as Hydra's Optuna sweeper writes distributions.
  auto cli =
      run("seed = 0\nlr = 0.1\nk = 1\n",
          {"lr=tag(log, interval(0.001, 1))", "k=int(interval(1, 3))", "sweep.samples=3", "seed=5"},
          true);
  ASSERT_EQ(cli.jobs.size(), 3u);
  EXPECT_EQ(cli.jobs[2].trial, 2);
  EXPECT_EQ(cli.jobs[0].config.get("seed")->as_int(), 5);
  EXPECT_EQ(cli.jobs[0].distributions[1].second, "int(interval(1, 3))");
  // Every value of a 3-value space is drawn once with samples = 3.
  std::set<int64_t> ks;
  for (const auto& j : run("k = 1\n", {"k=int(interval(1, 3))", "sweep.samples=3"}, true).jobs)
    ks.insert(j.config.get("k")->as_int());
  EXPECT_EQ(ks.size(), 3u);
  // A zip group is drawn as one: its keys keep their pairing.
  auto zipped =
      run("lr = 0.1\nbs = 1\nwd = 0.0\n[sweep]\nsamples = 2\nwd = \"interval(0, 1)\"\n"
          "[[sweep.zip]]\nlr = [0.1, 0.01, 0.001]\nbs = [1, 2, 3]\n");
  for (const auto& j : zipped.jobs) {
    const double lr = j.config.get("lr")->as_number();
    EXPECT_EQ(j.config.get("bs")->as_int(), lr == 0.1 ? 1 : lr == 0.01 ? 2 : 3);
  }
  // A grid sweep records where its values come from, with no trial.
  auto grid = run("seed = 0\n[sweep]\nseed = \"range(1, 3)\"\n");
  EXPECT_EQ(grid.search_spec.sweeper, "grid");
  EXPECT_EQ(grid.jobs[1].trial, -1);
  EXPECT_EQ(grid.jobs[1].distributions[0].second, "range(1, 3)");
}

// Config-group choices (what runs: strategy=dann,coral) and the keys sweep.crossed names are
// crossed with every draw, as seeds are: each method gets the same draws.
TEST_F(Compose, GroupChoicesAndCrossedKeysAreCrossedWithTheDraws) {
  auto c =
      run("defaults = [{ db = \"mysql\" }]\nlr = 0.1\ndomain = \"a\"\n[sweep]\nsamples = 2\n"
          "db = [\"mysql\", \"sqlite\"]\ndomain = [\"a\", \"b\", \"c\"]\n"
          "crossed = [\"domain\"]\nlr = \"interval(0, 1)\"\n");
  ASSERT_EQ(c.jobs.size(), 12u);  // 2 draws x 2 options x 3 domains
  std::map<int64_t, std::set<double>> lrs;
  std::set<std::string> seen;
  for (const auto& j : c.jobs) {
    lrs[j.trial].insert(j.config.get("lr")->as_number());
    seen.insert(j.config.find({"db", "driver"})->as_string() + j.config.get("domain")->as_string());
  }
  EXPECT_EQ(seen.size(), 6u);
  ASSERT_EQ(lrs.size(), 2u);
  for (const auto& [trial, values] : lrs) EXPECT_EQ(values.size(), 1u) << trial;
  EXPECT_THAT(error("a = 0\nb = 0\n[sweep]\nsamples = 2\ncrossed = [\"c\"]\na = [1, 2]\n"),
              HasSubstr("sweep.crossed names 'c', which is not swept"));
  EXPECT_THAT(error("a = 0\n[sweep]\nsamples = 2\ncrossed = [\"a\"]\na = \"interval(0, 1)\"\n"),
              HasSubstr("sweep.crossed names 'a', but interval(0.0, 1.0) is drawn from"));
  EXPECT_THAT(error("a = 0\n[sweep]\ncrossed = [\"a\"]\na = [1, 2]\n"),
              HasSubstr("sweep.crossed names keys a sampled sweep crosses with its draws; add "
                        "sweep.samples"));
  EXPECT_THAT(error("a = 0\n[sweep]\nsamples = 2\ncrossed = \"a\"\na = [1, 2]\n"),
              HasSubstr("'sweep.crossed' is"));
}

// [sweep.asha]: parsed into the search; each run's bracket is the values of its config-group
// choices and crossed keys, the same across its seeds and draws.
TEST_F(Compose, AshaSettingsAndBrackets) {
  auto c =
      run("defaults = [{ db = \"mysql\" }]\nlr = 0.1\nseed = 0\n[sweep]\nsamples = 2\n"
          "seed = [1, 2]\ndb = [\"mysql\", \"sqlite\"]\nlr = \"interval(0, 1)\"\n"
          "[sweep.asha]\nmin_epochs = 2\nreduction = 4\n");
  EXPECT_TRUE(c.search_spec.asha);
  EXPECT_EQ(c.search_spec.asha_min_epochs, 2);
  EXPECT_EQ(c.search_spec.asha_reduction, 4);
  ASSERT_EQ(c.jobs.size(), 8u);
  std::map<std::string, std::set<std::string>> brackets;  // driver -> brackets
  for (const auto& j : c.jobs)
    brackets[j.config.find({"db", "driver"})->as_string()].insert(j.bracket);
  EXPECT_EQ(brackets["mysql"], (std::set<std::string>{"db=mysql"}));
  EXPECT_EQ(brackets["sqlite"], (std::set<std::string>{"db=sqlite"}));
  EXPECT_TRUE(run("a = 0\n[sweep]\na = [1, 2]\n[sweep.asha]\n").search_spec.asha);  // a grid
  EXPECT_THAT(error("a = 0\n[sweep]\na = [1, 2]\n[sweep.asha]\nreduction = 1\n"),
              HasSubstr("sweep.asha: reduction is integer 1, expected an integer >= 2"));
  EXPECT_THAT(error("a = 0\n[sweep]\na = [1, 2]\n[sweep.asha]\nrungs = 3\n"),
              HasSubstr("sweep.asha: unknown key 'rungs' (it has min_epochs and reduction)"));
  EXPECT_THAT(error("a = 0\n[sweep]\nasha = 3\n"), HasSubstr("sweep.asha: expected a table"));
  EXPECT_THAT(error("a = 0\n[sweep.asha]\nmin_epochs = 1\n"),
              HasSubstr("sweep.asha stops the weaker runs of a sweep, but nothing is swept"));
}

// Bad searches fail before anything runs, located, saying what to write instead.
TEST_F(Compose, SampledSweepErrorsAreLocated) {
  EXPECT_THAT(error("lr = 0.1\n[sweep]\nlr = \"interval(0.1, 1)\"\n"),
              ::testing::AllOf(HasSubstr(at(3, 6)),
                               HasSubstr("interval(0.1, 1.0) is drawn from, not listed: give the "
                                         "number of configurations to draw, [sweep] samples = N")));
  EXPECT_THAT(error("lr = 0.1\n", {"lr=interval(0.1,1)"}, true),
              HasSubstr("is drawn from, not listed"));
  EXPECT_THAT(
      error("seed = 0\n[sweep]\nsamples = 4\nseed = [1, 2]\n"),
      ::testing::AllOf(HasSubstr(at(3, 11)),
                       HasSubstr("sweep.samples = 4 draws configurations of the swept "
                                 "keys, but nothing other than seed, config-group choices and "
                                 "sweep.crossed is swept")));
  EXPECT_THAT(
      error("a = 0\n[sweep]\nsamples = 0\na = [1, 2]\n"),
      HasSubstr("'sweep.samples' is integer 0: the number of configurations to draw, an integer "
                ">= 1"));
  EXPECT_THAT(error("a = 0\n[sweep]\nsamples = \"many\"\na = [1, 2]\n"),
              HasSubstr("'sweep.samples' is"));
  EXPECT_THAT(error("a = 0\n[sweep]\nsearch_seed = 3\na = [1, 2]\n"),
              HasSubstr("sweep.search_seed seeds the draws of a sampled sweep; add sweep.samples"));
  EXPECT_THAT(
      error("a = 0\nb = 0\n[sweep]\nsamples = 7\na = [1, 2]\nb = \"int(interval(1, 3))\"\n"),
      HasSubstr("sweep.samples = 7 distinct configurations, but the swept keys have only "
                "6 (a=choice(1, 2) b=int(interval(1, 3)))"));
  EXPECT_THAT(error("a = 0\n[sweep]\nsamples = 50\na = \"interval(1, 1.00001)\"\n"),
              HasSubstr("distinct configurations; widen the intervals or lower samples"));
  EXPECT_THAT(error("lr = 0.1\nbs = 1\n[sweep]\nsamples = 2\n[[sweep.zip]]\n"
                    "lr = \"interval(0, 1)\"\nbs = [1, 2]\n"),
              HasSubstr("sweep 'lr': interval(0.0, 1.0) cannot be zipped"));
}

// --- Optuna searches ([sweep] sweeper = "optuna") -----------------------------------------------

// Without draws an Optuna search composes no job, only its space: each drawn dimension with its
// kind, bounds and choices (config-group choices are searched, not crossed); the draws an outside
// sweeper gives expand crossed with the seeds, its trial numbers kept.
TEST_F(Compose, OptunaSearchesGiveTheirSpaceAndExpandTheGivenDraws) {
  const std::string base =
      "defaults = [{ db = \"mysql\" }]\nseed = 0\nlr = 0.1\nwidth = 8\nbs = 1\nopt = \"x\"\n"
      "[sweep]\nsweeper = \"optuna\"\nsamples = 5\nseed = [1, 2]\n"
      "lr = \"tag(log, interval(1e-4, 1e-1))\"\nwidth = \"int(interval(4, 64))\"\n"
      "db = [\"mysql\", \"sqlite\"]\n[[sweep.zip]]\nbs = [8, 16]\nopt = [\"a\", \"b\"]\n";
  auto c = run(base);
  EXPECT_EQ(c.search_spec.sweeper, "optuna");
  EXPECT_EQ(c.search_spec.samples, 5);
  EXPECT_EQ(c.search_spec.sampler, "tpe");
  EXPECT_EQ(c.search_spec.startup_trials, 10);
  EXPECT_TRUE(c.jobs.empty());
  using Kind = tlab::cfg::SearchDim::Kind;
  const auto& space = c.search_spec.space;
  ASSERT_EQ(space.size(), 4u);
  EXPECT_EQ(space[0].name, "lr");
  EXPECT_EQ(space[0].kind, Kind::Float);
  EXPECT_DOUBLE_EQ(space[0].low, 1e-4);
  EXPECT_DOUBLE_EQ(space[0].high, 0.1);
  EXPECT_TRUE(space[0].log);
  EXPECT_EQ(space[1].name, "width");
  EXPECT_EQ(space[1].kind, Kind::Int);
  EXPECT_FALSE(space[1].log);
  EXPECT_EQ(space[2].name, "db");  // a config group: searched
  EXPECT_EQ(space[2].choices, (std::vector<std::string>{"mysql", "sqlite"}));
  EXPECT_EQ(space[3].name, "bs,opt");  // a zip group: one choice
  EXPECT_EQ(space[3].choices, (std::vector<std::string>{"8, a", "16, b"}));

  std::vector<tlab::cfg::GivenDraw> draws{
      {7, {{"lr", 0.00123}, {"width", 40}, {"db", 1}, {"bs,opt", 1}}},
      {9, {{"lr", 0.05}, {"width", 4}, {"db", 0}, {"bs,opt", 0}}}};
  tlab::cfg::ComposeOptions o;
  o.config_dirs = {TLAB_CONFIG_FIXTURES};
  o.draws = &draws;
  auto e = tlab::cfg::compose(exp(base), {}, o);
  ASSERT_EQ(e.jobs.size(), 4u);  // 2 trials x 2 seeds
  EXPECT_EQ(e.jobs[0].trial, 7);
  EXPECT_EQ(e.jobs[3].trial, 9);
  EXPECT_EQ(e.jobs[0].overrides, (std::vector<std::string>{"seed=1", "lr=0.00123", "width=40",
                                                           "db=sqlite", "bs=16", "opt=b"}));
  EXPECT_EQ(e.jobs[1].config.find({"seed"})->as_int(), 2);
  EXPECT_DOUBLE_EQ(e.jobs[1].config.find({"lr"})->as_number(), 0.00123);
  EXPECT_EQ(e.jobs[1].config.find({"width"})->as_int(), 40);
  EXPECT_EQ(e.jobs[1].config.find({"db", "driver"})->as_string(), "sqlite");
  EXPECT_EQ(e.jobs[2].config.find({"opt"})->as_string(), "a");
  EXPECT_EQ(e.jobs[0].bracket, "");  // every trial of a study competes under ASHA
  EXPECT_EQ(e.jobs[0].distributions.at(1).second, "tag(log, interval(0.0001, 0.1))");

  // A draw outside the space (a study made for another one) or without a dimension: located.
  draws = {{3, {{"lr", 0.5}, {"width", 40}, {"db", 1}, {"bs,opt", 1}}}};
  EXPECT_THAT(tlab::test::error_of<ConfigError>([&] { tlab::cfg::compose(exp(base), {}, o); }),
              ::testing::AllOf(HasSubstr(at(11, 6)),
                               HasSubstr("the sweeper's trial 3 gives 'lr' the value 0.5, outside "
                                         "tag(log, interval(0.0001, 0.1))")));
  draws = {{4, {{"lr", 0.01}, {"width", 40}, {"bs,opt", 2}}}};
  EXPECT_THAT(tlab::test::error_of<ConfigError>([&] { tlab::cfg::compose(exp(base), {}, o); }),
              HasSubstr("the sweeper's trial 4 has no value for 'db'"));

  // The study's identity: the trial count and the study's name do not change it; the space does.
  const auto more = run(base, {"sweep.samples=50", "sweep.optuna.study=mine"});
  EXPECT_EQ(more.search_spec.fingerprint, c.search_spec.fingerprint);
  EXPECT_EQ(more.search_spec.study, "mine");
  EXPECT_NE(run(base, {"sweep.lr='tag(log, interval(1e-5, 1e-1))'"}).search_spec.fingerprint,
            c.search_spec.fingerprint);
  // --sweeper/--trials are overrides that need no '+', as sweep.samples.
  auto flags = run("lr = 0.1\n",
                   {"lr=interval(0.01, 0.1)", "sweep.sweeper=optuna", "sweep.samples=3",
                    "sweep.optuna.direction=minimize", "sweep.optuna.metric=target/val/loss"},
                   true);
  EXPECT_EQ(flags.search_spec.sweeper, "optuna");
  EXPECT_EQ(flags.search_spec.direction, "minimize");
  EXPECT_EQ(flags.search_spec.metric, "target/val/loss");
}

TEST_F(Compose, OptunaSearchErrorsAreLocated) {
  const std::string space = "lr = 0.1\n[sweep]\nlr = \"interval(0.01, 0.1)\"\n";
  EXPECT_THAT(error("lr = 0.1\n[sweep]\nsweeper = \"hyperopt\"\nsamples = 2\nlr = [1, 2]\n"),
              ::testing::AllOf(HasSubstr(at(3, 11)),
                               HasSubstr("'sweep.sweeper' is \"hyperopt\": not a sweeper; expected "
                                         "\"grid\" (every combination), \"random\"")));
  EXPECT_THAT(error(space, {"sweep.sweeper=optuna"}),
              HasSubstr("sweep.sweeper = \"optuna\" needs the number of trials: add sweep.samples "
                        "= N (on the command line: sweep.samples=N, or --trials N)"));
  EXPECT_THAT(error(space, {"sweep.sweeper=grid", "sweep.samples=3"}),
              HasSubstr("sweep.samples = 3 asks for draws, but sweep.sweeper = \"grid\" runs "
                        "every combination"));
  EXPECT_THAT(error(space, {"sweep.samples=3", "sweep.optuna.metric=target/val/acc"}),
              HasSubstr("[sweep.optuna] configures the Optuna sweeper, but this sweep's sweeper "
                        "is \"random\""));
  const std::vector<std::string> optuna{"sweep.sweeper=optuna", "sweep.samples=3"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> ov = optuna;
    ov.insert(ov.end(), extra.begin(), extra.end());
    return error(space, ov);
  };
  EXPECT_THAT(with({"sweep.optuna.direction=up"}),
              HasSubstr("sweep.optuna: direction is \"up\", expected \"maximize\" or "
                        "\"minimize\""));
  EXPECT_THAT(with({"sweep.optuna.sampler=cmaes"}),
              HasSubstr("sweep.optuna: sampler is \"cmaes\", expected \"tpe\""));
  EXPECT_THAT(with({"sweep.optuna.metric=acc"}),
              HasSubstr("metric is \"acc\", expected a run's metric as <domain>/<split>/<name>"));
  EXPECT_THAT(with({"sweep.optuna.startup_trials=-1"}),
              HasSubstr("startup_trials is integer -1, expected an integer >= 0"));
  EXPECT_THAT(with({"sweep.optuna.pruner=asha"}),
              HasSubstr("sweep.optuna: unknown key 'pruner'; it has metric, direction, sampler"));
  EXPECT_THAT(with({"sweep.optuna.study=a b"}),
              HasSubstr("study is \"a b\", expected letters, digits"));
  EXPECT_THAT(error("seed = 0\na = 0\n[sweep]\nsweeper = \"optuna\"\nsamples = 2\n"
                    "crossed = [\"a\"]\na = [1, 2]\nlr = \"interval(0, 1)\"\n"),
              HasSubstr("sweep.crossed applies to random search: an Optuna trial is one "
                        "configuration, crossed with the seeds only"));
  EXPECT_THAT(error("seed = 0\n[sweep]\nsweeper = \"optuna\"\nsamples = 2\nseed = [1, 2]\n"),
              HasSubstr("nothing other than seed is swept"));
}

}  // namespace

namespace {

// --- Hostile input: always a located ConfigError, never a crash or a hang ----------------------

TEST_F(Compose, HostileFilesFailWithLocatedErrors) {
  EXPECT_EQ(json(""), "{}");  // an empty experiment is an empty config (validation names what
                              // is missing)
  std::string binary("\x00\xff\xfe\x01garbage\x80\x81", 13);
  EXPECT_THAT(error(binary), StartsWith((dir_ / "exp.toml").string() + ":1:"));
  EXPECT_THAT(error("a = 1\nname = \"\xc3\x28\"\n"),
              AllOf(StartsWith(at(2, 9)), HasSubstr("not valid UTF-8")));
  std::string deep = "x = " + std::string(5000, '[') + std::string(5000, ']') + "\n";
  EXPECT_THAT(error(deep), StartsWith((dir_ / "exp.toml").string() + ":1:"));
  std::string nested = "x = " + std::string(70, '[') + std::string(70, ']') + "\n";
  EXPECT_THAT(error(nested), HasSubstr("nested more than 64 levels deep"));
  EXPECT_THAT(error("a = 1\nb = 2\na = 3\n"), StartsWith(at(3, 5)));  // duplicated key
  EXPECT_THAT(error("[t]\nx = 1\n[t]\ny = 2\n"), StartsWith(at(3, 1)));
  EXPECT_THAT(error("when = 1979-05-27\n"), HasSubstr("dates and times are not config values"));
  // 50 MB: refused from its size, before it is read.
  {
    std::ofstream big(dir_ / "big.toml", std::ios::binary);
    std::string line = "# " + std::string(1021, 'x') + "\n";
    for (int i = 0; i < 50 * 1024; ++i) big << line;
  }
  auto msg = tlab::test::error_of<ConfigError>(
      [&] { tlab::cfg::compose(dir_ / "big.toml", {}, tlab::cfg::ComposeOptions{}); });
  EXPECT_THAT(msg, AllOf(StartsWith((dir_ / "big.toml").string() + ": "),
                         HasSubstr("the file is 52428800 bytes, more than the 8 MiB allowed")));
  EXPECT_THAT(tlab::test::error_of<ConfigError>([&] {
                tlab::cfg::compose(dir_ / "missing.toml", {}, tlab::cfg::ComposeOptions{});
              }),
              HasSubstr("missing.toml: config file does not exist"));
  EXPECT_THAT(tlab::test::error_of<ConfigError>(
                  [&] { tlab::cfg::compose(dir_, {}, tlab::cfg::ComposeOptions{}); }),
              HasSubstr("is a folder, expected a TOML config file"));
}

TEST_F(Compose, ConfigDirsMustExist) {
  tlab::cfg::ComposeOptions o;
  o.config_dirs = {dir_ / "nope"};
  EXPECT_THAT(tlab::test::error_of<ConfigError>([&] { tlab::cfg::compose(exp("a = 1\n"), {}, o); }),
              HasSubstr("--config-dir '" + (dir_ / "nope").string() + "' is not a folder"));
}

TEST_F(Compose, OutputFormatsKeepOrderAndShortestNumbers) {
  auto c =
      run("b = 0.1\na = \"x\\\"y\"\n[t]\nlist = [1, 2]\n[[arr]]\nk = true\n[[arr]]\nk = false\n");
  EXPECT_EQ(tlab::cfg::format_tree(c.config, "toml"),
            "b = 0.1\na = \"x\\\"y\"\n\n[t]\nlist = [1, 2]\n\n[[arr]]\nk = true\n\n[[arr]]\n"
            "k = false\n");
  EXPECT_EQ(
      tlab::cfg::format_tree(c.config, "yaml"),
      "b: 0.1\na: \"x\\\"y\"\nt:\n  list:\n    - 1\n    - 2\narr:\n  - k: true\n  - k: false\n");
  // What is printed parses back to the same config.
  auto again = tlab::cfg::parse_text(tlab::cfg::format_tree(c.config, "toml"), "again.toml");
  EXPECT_EQ(again, c.config);
  // JSON as nlohmann writes it; inf and nan as Python's json module does (they were null).
  EXPECT_EQ(tlab::cfg::format_tree(run("a = [1, 0.5]\n[t]\n").config, "json"),
            "{\n  \"a\": [\n    1,\n    0.5\n  ],\n  \"t\": {}\n}\n");
  EXPECT_EQ(tlab::cfg::format_tree(run("x = inf\ny = -inf\nz = nan\nl = [inf]\n").config, "json"),
            "{\n  \"x\": Infinity,\n  \"y\": -Infinity,\n  \"z\": NaN,\n  \"l\": [\n    "
            "Infinity\n  ]\n}\n");
}

}  // namespace

namespace {

TEST_F(Compose, InterpolationThatDoublesAtEachStepIsStopped) {
  std::string text;
  for (int i = 0; i < 40; ++i)
    text += "k" + std::to_string(i) + " = \"${k" + std::to_string(i + 1) + "}${k" +
            std::to_string(i + 1) + "}\"\n";
  text += "k40 = \"laugh\"\n";
  auto msg = tlab::test::error_of<ConfigError>([&] { resolved(text, *this); });
  EXPECT_THAT(msg, HasSubstr("interpolations produce more than 64 MiB of values"));
  std::string tables = "[t0]\nv = 1\n";
  for (int i = 1; i < 40; ++i)
    tables += "[t" + std::to_string(i) + "]\na = \"${t" + std::to_string(i - 1) + "}\"\nb = \"${t" +
              std::to_string(i - 1) + "}\"\n";
  EXPECT_THAT(tlab::test::error_of<ConfigError>([&] { resolved(tables, *this); }),
              HasSubstr("interpolations produce more than 64 MiB of values"));
}

}  // namespace

// Issue 27: `tlab config /dev/zero` grew to 1.7 GB in 9 s, a FIFO hung: refused before reading.
TEST(ConfigFiles, DevicesAndFifosAreRefusedBeforeReading) {
  auto error = [](const std::string& path) {
    try {
      tlab::cfg::parse_file(path, {});
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(error("/dev/zero")
                .find("/dev/zero: is not a regular file (a device, FIFO or socket); "
                      "expected a TOML config file"),
            std::string::npos)
      << error("/dev/zero");
  const auto fifo = std::filesystem::temp_directory_path() /
                    ("tlab_fifo_" + std::to_string(::getpid()) + ".toml");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_NE(error(fifo.string()).find("is not a regular file"), std::string::npos);
  std::filesystem::remove(fifo);
}
