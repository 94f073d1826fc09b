// tlab new plugin KIND NAME [--dir DIR]: writes a complete out-of-tree plugin project (source with
// one real parameter, CMakeLists.txt with find_package(tlab), GoogleTest tests through the real
// tlab, a short experiment, a README). The templates follow the worked examples of
// docs/writing-plugins.md; tests/test_scaffold.cpp builds all four kinds and runs them.
#include <cctype>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>

#include <fmt/format.h>

#include "results_cli.hpp"
#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab::cli {
namespace {

const char* kCMakeLists =
    R"TLAB(# @NAME@: a TransferLab @KIND@ plugin, built outside the TransferLab tree (written by
# `tlab new plugin @KIND@ @NAME@`).
#   cmake -S . -B build -Dtlab_DIR=@TLAB_DIR@
#   cmake --build build && ctest --test-dir build
# (tlab_DIR: a TransferLab build folder, or <prefix>/lib/cmake/tlab of an installed one.)
cmake_minimum_required(VERSION 3.25)
project(@NAME@ LANGUAGES CXX)
if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE Release CACHE STRING "Build type" FORCE)
endif()

# tlab::sdk (headers, LibTorch and its flags), tlab_add_plugin(), TLAB_EXECUTABLE. Fails here if
# the LibTorch found is not the one TransferLab was built with.
find_package(tlab 0.1 REQUIRED)

# -> build/plugins/@KIND_DIR@/@NAME@.so; use it with: tlab --plugin-path build/plugins ...
tlab_add_plugin(NAME @NAME@ KIND @KIND@ SOURCES @NAME@.cpp)

# Tests: through the real tlab executable, so its loader checks the plugin as a run would.
find_package(GTest)
if(NOT GTest_FOUND)
  message(STATUS "GoogleTest not found (Debian: libgtest-dev): the tests of @NAME@ are not built")
  return()
endif()
enable_testing()
add_executable(test_@NAME@ test_@NAME@.cpp)
target_link_libraries(test_@NAME@ PRIVATE GTest::gtest_main)
target_compile_features(test_@NAME@ PRIVATE cxx_std_17)
target_compile_definitions(test_@NAME@ PRIVATE
  TLAB_EXECUTABLE="${TLAB_EXECUTABLE}"
  PLUGIN_DIR="${TLAB_PLUGIN_OUTPUT_DIR}"
  EXPERIMENT="${CMAKE_CURRENT_SOURCE_DIR}/@NAME@.toml"
  TEST_DIR="${CMAKE_CURRENT_BINARY_DIR}/test-results")
add_dependencies(test_@NAME@ tlab_plugin_@KIND@_@NAME@)
include(GoogleTest)
gtest_discover_tests(test_@NAME@)
)TLAB";
const char* kTest =
    R"TLAB(// Tests of the @KIND@ plugin @NAME@, through the real tlab (TLAB_EXECUTABLE): its loader must
// accept the library, the schema must hold the parameters, and a short experiment must finish.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace {

struct Result {
  int code = -1;
  std::string out;
};

// Runs `tlab --plugin-path PLUGIN_DIR ARGS` and returns its exit code and output.
Result tlab(const std::string& args) {
  const std::string cmd = std::string("'") + TLAB_EXECUTABLE + "' --plugin-path '" + PLUGIN_DIR +
                          "' " + args + " 2>&1";
  Result r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  while (std::size_t n = fread(buf, 1, sizeof buf, p)) r.out.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(@CLASS@, LoadsAndShowsItsParameters) {
  const Result r = tlab("plugins show @NAME@");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "@KIND@ @NAME@ 0.1.0")) << r.out;
  EXPECT_TRUE(has(r.out, "@PARAM@")) << r.out;
}

TEST(@CLASS@, RefusesAnOutOfRangeParameter) {
  const Result r = tlab(std::string("run '") + EXPERIMENT + "' --dry-run @BAD@");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(has(r.out, "is out of range")) << r.out;
}

TEST(@CLASS@, AShortExperimentFinishes) {
  // In the build folder: the run's folder goes next to its database.
  const std::string db = std::string(TEST_DIR) + "/test.db";
  std::remove(db.c_str());
  const Result r = tlab(std::string("run '") + EXPERIMENT + "' --db '" + db + "'");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "1 run(s) finished")) << r.out;
}

}  // namespace
)TLAB";
const char* kExperiment =
    R"TLAB(# A short experiment that uses the @KIND@ plugin @NAME@ (the other tables use in-tree plugins):
#   tlab --plugin-path build/plugins run @NAME@.toml
name = "@NAME@"
seed = 1
device = "cpu"

[target]
@TARGET@

[backbone]
@BACKBONE@

[[adapters]]
@ADAPTER@

[strategy]
@STRATEGY@

[train]
epochs = 2
batch_size = 32
)TLAB";
const char* kReadme = R"TLAB(# @NAME@: a TransferLab @KIND@ plugin

Written by `tlab new plugin @KIND@ @NAME@`. The source (`@NAME@.cpp`) is a complete, working
@KIND@ with one parameter (`@PARAM@`); change it into yours.

| file | what it is |
| --- | --- |
| `@NAME@.cpp` | the plugin: options, schema, class, and `TLAB_PLUGIN(...)` as the last line |
| `CMakeLists.txt` | `find_package(tlab)` and `tlab_add_plugin()`, plus the tests |
| `test_@NAME@.cpp` | GoogleTest tests that run the real `tlab` on the plugin |
| `@NAME@.toml` | a short experiment that uses it |

## Build and test

```sh
cmake -S . -B build -Dtlab_DIR=@TLAB_DIR@
cmake --build build
ctest --test-dir build --output-on-failure
```

`tlab_DIR` is a TransferLab build folder (it holds `tlabConfig.cmake`) or, for an installed
TransferLab, `<prefix>/lib/cmake/tlab` (or put `<prefix>` on `CMAKE_PREFIX_PATH`). Configuring
fails at once if the LibTorch CMake finds is not the version TransferLab was built with: the
loader would refuse the plugin. The library is written to `build/plugins/@KIND_DIR@/@NAME@.so`.

## Use it

```sh
tlab --plugin-path build/plugins plugins show @NAME@     # its parameters and a sample table
tlab --plugin-path build/plugins run @NAME@.toml         # or in any experiment, by name
export TLAB_PLUGIN_PATH=$PWD/build/plugins               # instead of --plugin-path
```

A plugin found in several folders: the first folder wins (`--plugin-path` folders in order,
then `TLAB_PLUGIN_PATH`, then tlab's own), and `tlab plugins` lists the others as shadowed.

Rebuild the plugin when TransferLab's SDK ABI version or its LibTorch changes (the loader says
so, naming the difference). The SDK reference, the hooks and when they run, and how to debug a
plugin (gdb, sanitizers) are in TransferLab's `docs/writing-plugins.md`.
)TLAB";

struct KindTemplate {
  const char* source;
  const char* folder;  // kind folder under plugins/
  const char* param;   // the parameter the test looks for
  const char* bad;     // an override with an out-of-range value
};

const std::map<std::string, KindTemplate>& kinds() {
  static const std::map<std::string, KindTemplate> k = {
      {"dataset",
       {R"TLAB(// @NAME@: a dataset plugin (written by `tlab new plugin dataset @NAME@`). One Gaussian blob per
// class around a circle in the plane; `angle` rotates the whole picture, so two tables with
// different angles make a source domain and a shifted target. Replace `make` with your loader.
#include <ATen/CPUGeneratorImpl.h>  // the generator of make(); data.hpp brings the tensors

#include "tlab/sdk/data.hpp"

// The options: one field per parameter, with its default. The schema below names, documents
// (once: the fields need no comments) and bounds them; `tlab plugins show @NAME@` prints it,
// and experiments are checked against it.
struct @CLASS@Options {
  double angle = 0.0;
  int64_t seed = 0;
};

class @CLASS@ : public tlab::Dataset {
 public:
  using Options = @CLASS@Options;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("angle", &Options::angle, "rotation of the picture, in degrees")
        .range(-180, 180)
        .field("seed", &Options::seed, "data seed, independent of the run seed")
        .min(0);
  }
  explicit @CLASS@(Options o) : o_(o) {}

  // Called once per run (per domain table): the splits as tensors. x: float inputs of
  // `input_shape` per example; y: int64 labels in [0, num_classes).
  tlab::DomainData load(tlab::Context& /*ctx*/) override {
    tlab::DomainData d;
    d.name = "@NAME@";
    d.num_classes = kClasses;
    d.input_shape = {2};
    d.train = make(600, 1);
    d.val = make(200, 2);
    d.test = make(500, 3);
    return d;
  }

 private:
  static constexpr int64_t kClasses = 3;

  // Each split has its own generator seeded from the data seed alone: the same options give the
  // same tensors in every run, whatever the run seed.
  tlab::Split make(int64_t n, uint64_t split) const {
    constexpr double kPi = 3.14159265358979323846;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(o_.seed) * 4 + split);
    torch::Tensor y = torch::randint(kClasses, {n}, gen, torch::kLong);
    torch::Tensor a = y.to(torch::kDouble) * (2 * kPi / kClasses) + o_.angle * kPi / 180;
    torch::Tensor x =
        2.0 * torch::stack({a.cos(), a.sin()}, 1) + 0.5 * torch::randn({n, 2}, gen, torch::kDouble);
    return {x.to(torch::kFloat), y};
  }

  Options o_;
};

// Exports the plugin: class, name (must equal the file name), version, one-line summary.
TLAB_PLUGIN(@CLASS@, "@NAME@", "0.1.0", "Gaussian blobs in the plane, rotated by `angle`")
)TLAB",
        "datasets", "angle", "target.angle=500"}},
      {"backbone",
       {R"TLAB(// @NAME@: a backbone plugin (written by `tlab new plugin backbone @NAME@`). One hidden layer of
// ReLU units on flattened inputs; the hidden layer is the feature vector. Replace the network.
// model.hpp brings LibTorch's common layers (tlab/sdk/torch.hpp): Linear, Conv2d, BatchNorm, ...
#include "tlab/sdk/model.hpp"

// The options: one field per parameter, with its default, documented once by the schema below.
struct @CLASS@Options {
  int64_t width = 64;
};

// The network. forward() maps a batch of inputs to features of feature_dim(); layer_groups()
// orders the parameters from input to output (strategies freeze or re-weight them by group).
class @CLASS@Net : public tlab::BackboneNet {
 public:
  @CLASS@Net(int64_t in, int64_t width)
      : fc_(register_module("fc", torch::nn::Linear(in, width))), width_(width) {}
  torch::Tensor forward(torch::Tensor x) override {
    return torch::relu(fc_->forward(x.flatten(1)));
  }
  int64_t feature_dim() const override { return width_; }
  std::vector<tlab::LayerGroup> layer_groups() override { return {{"fc", fc_->parameters()}}; }

 private:
  torch::nn::Linear fc_;
  int64_t width_;
};

class @CLASS@ : public tlab::Backbone {
 public:
  using Options = @CLASS@Options;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("width", &Options::width, "hidden units (= feature width)")
        .range(1, 1 << 16);
  }
  explicit @CLASS@(Options o) : o_(o) {}
  // Called once per run with the dataset's input shape (without the batch dimension).
  std::shared_ptr<tlab::BackboneNet> build(const std::vector<int64_t>& shape,
                                           tlab::Context& /*ctx*/) override {
    int64_t in = 1;
    for (int64_t d : shape) in *= d;
    return std::make_shared<@CLASS@Net>(in, o_.width);
  }

 private:
  Options o_;
};

// Exports the plugin: class, name (must equal the file name), version, one-line summary.
TLAB_PLUGIN(@CLASS@, "@NAME@", "0.1.0", "One hidden ReLU layer on flattened inputs")
)TLAB",
        "backbones", "width", "backbone.width=0"}},
      {"adapter",
       {R"TLAB(// @NAME@: an adapter plugin (written by `tlab new plugin adapter @NAME@`). A two-layer classifier
// (Linear, ReLU, Linear) from the model's current output to the target's classes. model.hpp
// brings LibTorch's common layers (tlab/sdk/torch.hpp).
#include "tlab/sdk/model.hpp"

// The options: one field per parameter, with its default, documented once by the schema below.
struct @CLASS@Options {
  int64_t hidden = 128;
};

class @CLASS@ : public tlab::Adapter {
 public:
  using Options = @CLASS@Options;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("hidden", &Options::hidden, "width of the hidden layer")
        .range(1, 1 << 16);
  }
  explicit @CLASS@(Options o) : o_(o) {}
  // Called once per run, in [[adapters]] order: add modules to the model's head (or wrap
  // backbone layers). model.out_dim() is the width the model produces so far; add_head records
  // the width of what it appends. New modules go on ctx.device.
  void attach(tlab::Model& model, const tlab::TaskInfo& task, tlab::Context& ctx) override {
    torch::nn::Linear fc1(model.out_dim(), o_.hidden), fc2(o_.hidden, task.num_classes);
    fc1->to(ctx.device);
    fc2->to(ctx.device);
    model.add_head(fc1, o_.hidden);
    model.add_head(torch::nn::ReLU(), o_.hidden);
    model.add_head(fc2, task.num_classes);  // the runner checks the head ends at the class count
  }

 private:
  Options o_;
};

// Exports the plugin: class, name (must equal the file name), version, one-line summary.
TLAB_PLUGIN(@CLASS@, "@NAME@", "0.1.0", "Two-layer classifier on the features")
)TLAB",
        "adapters", "hidden", "adapters.0.hidden=0"}},
      {"strategy",
       {R"TLAB(// @NAME@: a strategy plugin (written by `tlab new plugin strategy @NAME@`). Trains on the
// target's labels with label smoothing (Szegedy et al. 2016): the loss is
// (1 - smoothing) * cross-entropy + smoothing * the cross-entropy against uniform labels.
//
// The hooks, in the order they run: prepare (before adapters: e.g. tlab::pretrain_on_source),
// setup (after adapters: freezing, or stages of your own with session.fit), then the target
// stage. A strategy is the target stage's tlab::StageHooks: each epoch on_epoch_start, loss for
// every batch, on_epoch_end, then evaluation. What lives from one call to the next is a member.
// strategy.hpp brings LibTorch's common layers (tlab/sdk/torch.hpp); tlab/sdk/source.hpp and
// sampler.hpp help with a source domain and unlabelled target inputs.
#include <algorithm>

#include "tlab/sdk/strategy.hpp"

// The options: one field per parameter, with its default, documented once by the schema below.
struct @CLASS@Options {
  double smoothing = 0.1;
};

class @CLASS@ : public tlab::Strategy {
 public:
  using Options = @CLASS@Options;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("smoothing", &Options::smoothing, "weight of the uniform target")
        .range(0, 0.99);
  }
  explicit @CLASS@(Options o) : o_(o) {}

  // Each target epoch starts here: reset what the epoch accumulates (on the device).
  void on_epoch_start(tlab::Session& session, int64_t /*epoch*/) override {
    nll_sum_ = torch::zeros({}, torch::TensorOptions(session.context().device));
    seen_ = 0;
  }

  // The loss of one target training step (the runner does the backward pass and the step).
  torch::Tensor loss(tlab::Session& session, const tlab::Batch& batch) override {
    torch::Tensor logp = torch::log_softmax(session.model().forward(batch.x), 1);
    torch::Tensor nll = -logp.gather(1, batch.y.unsqueeze(1)).squeeze(1);
    torch::Tensor uniform = -logp.mean(1);
    nll_sum_ += nll.detach().sum();  // no .item() here: that would wait for the device each step
    seen_ += batch.y.size(0);
    return ((1 - o_.smoothing) * nll + o_.smoothing * uniform).mean();
  }

  // After the epoch's last step, before evaluation: the cross-entropy without smoothing.
  void on_epoch_end(tlab::Session& session, int64_t epoch) override {
    session.context().metrics->log("target/train/nll",
                                   nll_sum_.item<double>() / std::max<int64_t>(seen_, 1),
                                   session.step(), epoch);
  }

 private:
  Options o_;
  torch::Tensor nll_sum_;  // this epoch's cross-entropy without smoothing, summed (device)
  int64_t seen_ = 0;       // examples in this epoch so far
};

// Exports the plugin: class, name (must equal the file name), version, one-line summary.
TLAB_PLUGIN(@CLASS@, "@NAME@", "0.1.0", "Cross-entropy with label smoothing on the target")
)TLAB",
        "strategies", "smoothing", "strategy.smoothing=2.0"}},
  };
  return k;
}

std::string replace_all(std::string text, const std::map<std::string, std::string>& values) {
  for (const auto& [key, value] : values) {
    const std::string token = "@" + key + "@";
    for (std::size_t at = text.find(token); at != std::string::npos;
         at = text.find(token, at + value.size()))
      text.replace(at, token.size(), value);
  }
  return text;
}

/// my_method -> MyMethod
std::string class_name(const std::string& name) {
  std::string out;
  bool upper = true;
  for (char c : name) {
    if (c == '_') {
      upper = true;
      continue;
    }
    out += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
    upper = false;
  }
  return out;
}

/// The folder to pass as tlab_DIR: this tlab's build folder, or its installed package.
std::string package_dir() {
  const fs::path exe_dir = executable_dir();
  std::error_code ec;
  if (fs::exists(exe_dir.parent_path() / "tlabConfig.cmake", ec))
    return exe_dir.parent_path().string();
  for (const char* lib : {TLAB_INSTALL_LIBDIR, "lib", "lib64"}) {
    const fs::path p = exe_dir.parent_path() / lib / "cmake" / "tlab";
    if (fs::exists(p / "tlabConfig.cmake", ec)) return p.string();
  }
  return "/path/to/TransferLab/build";  // not found next to this tlab: the user fills it in
}

}  // namespace

void add_new_commands(CLI::App& app, std::vector<Command>& out) {
  struct Options {
    std::string kind, name, dir = ".";
  };
  auto o = std::make_shared<Options>();
  auto* create = app.add_subcommand("new", "Create a new project: tlab new plugin KIND NAME");
  create->require_subcommand(1);
  auto* plugin = create->add_subcommand(
      "plugin",
      "Write an out-of-tree plugin project: source with one parameter, CMakeLists.txt "
      "(find_package(tlab)), GoogleTest tests, an experiment and a README");
  plugin->add_option("kind", o->kind, "dataset, backbone, adapter or strategy")->required();
  plugin->add_option("name", o->name, "Plugin name: lower case letters, digits and '_'")
      ->required();
  plugin->add_option("--dir", o->dir, "The project goes to DIR/NAME")->capture_default_str();
  out.push_back(
      {plugin, [o] {
         const auto found = kinds().find(o->kind);
         if (found == kinds().end())
           throw UsageError(
               fmt::format("'{}' is not a plugin kind; expected dataset, backbone, adapter or "
                           "strategy",
                           o->kind));
         const std::string& name = o->name;
         if (name.size() > 64)
           throw UsageError(fmt::format("plugin name '{}' has {} characters; use at most 64", name,
                                        name.size()));
         bool valid = !name.empty() && std::islower(static_cast<unsigned char>(name[0]));
         for (char c : name)
           valid = valid && (std::islower(static_cast<unsigned char>(c)) ||
                             std::isdigit(static_cast<unsigned char>(c)) || c == '_');
         if (!valid)
           throw UsageError(
               fmt::format("'{}' is not a valid plugin name; use lower case letters, digits and "
                           "'_', starting with a letter (e.g. my_method): it names the file, the "
                           "CMake target and the experiment tables",
                           name));
         const fs::path dir = fs::path(o->dir) / name;
         std::error_code ec;
         if (fs::exists(dir, ec)) {
           const bool empty = fs::is_empty(dir, ec);
           if (ec)
             throw UsageError(fmt::format("cannot read '{}': {} (nothing was written)",
                                          dir.string(), ec.message()));
           if (!empty)
             throw UsageError(
                 fmt::format("'{}' exists and is not empty; choose another name or --dir, or "
                             "move it away (nothing was written)",
                             dir.string()));
         }
         const KindTemplate& k = found->second;
         const std::string kind = found->first;
         auto table = [&](const char* own_kind, const std::string& mine,
                          const std::string& theirs) { return kind == own_kind ? mine : theirs; };
         const std::map<std::string, std::string> values = {
             {"NAME", name},
             {"CLASS", class_name(name)},
             {"KIND", kind},
             {"KIND_DIR", k.folder},
             {"PARAM", k.param},
             {"BAD", k.bad},
             {"TLAB_DIR", package_dir()},
             {"TARGET", table("dataset", "plugin = \"" + name + "\"",
                              "plugin = \"gaussians\"\ndomain = \"target\"\n"
                              "train_size = 128\nval_size = 32\ntest_size = 64")},
             {"BACKBONE", table("backbone", "plugin = \"" + name + "\"\nwidth = 16",
                                "plugin = \"mlp\"\nhidden = [16]")},
             {"ADAPTER", table("adapter", "plugin = \"" + name + "\"\nhidden = 16",
                               "plugin = \"linear_head\"")},
             {"STRATEGY", table("strategy", "plugin = \"" + name + "\"", "plugin = \"scratch\"")},
         };
         fs::create_directories(dir, ec);
         if (ec)
           throw UsageError(
               fmt::format("cannot create '{}': {}; choose a writable --dir (nothing was written)",
                           dir.string(), ec.message()));
         const std::vector<std::pair<std::string, const char*>> files = {
             {name + ".cpp", k.source},
             {"CMakeLists.txt", kCMakeLists},
             {"test_" + name + ".cpp", kTest},
             {name + ".toml", kExperiment},
             {"README.md", kReadme}};
         for (const auto& [file, text] : files) {
           std::ofstream f(dir / file);
           f << replace_all(text, values);
           if (!f.flush())
             throw std::runtime_error(fmt::format("cannot write '{}'", (dir / file).string()));
         }
         std::cout << fmt::format(
             "wrote the {} plugin '{}' to {}/: {}.cpp, CMakeLists.txt, test_{}.cpp, "
             "{}.toml, README.md\n\nnext:\n  cmake -S {} -B {}/build -Dtlab_DIR={}\n"
             "  cmake --build {}/build && ctest --test-dir {}/build\n"
             "  tlab --plugin-path {}/build/plugins run {}/{}.toml\n",
             kind, name, dir.string(), name, name, name, dir.string(), dir.string(), package_dir(),
             dir.string(), dir.string(), dir.string(), dir.string(), name);
         return 0;
       }});
}

}  // namespace tlab::cli
