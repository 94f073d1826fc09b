// Plugin authors' path, end to end: `tlab new plugin` writes a project of each kind, the four build
// against this build tree with find_package(tlab), their own tests pass, an experiment using all
// four finishes and is in the database; the same against an installed TransferLab; a LibTorch of
// another version is refused at configure time; same-name plugins in two folders are reported.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <fmt/format.h>

#include "store/store.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"
#include "tlab/sdk/abi.hpp"

using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

namespace {

using tlab::test::Result;
using tlab::test::shell;

const std::string kTlab = std::string(TLAB_TEST_BIN_DIR) + "/tlab";
const fs::path kBuildDir = fs::path(TLAB_TEST_BIN_DIR).parent_path();

class Scaffold : public ::testing::Test {
 protected:
  fs::path dir_ = tlab::test::temp_dir(
      std::string("scaffold_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  void TearDown() override { fs::remove_all(dir_); }

  Result tlab(const std::string& args) {
    return shell(fmt::format("cd '{}' && '{}' {}", dir_.string(), kTlab, args));
  }
};

TEST_F(Scaffold, EveryKindBuildsOutOfTreeAndRunsInOneExperiment) {
  const std::vector<std::pair<std::string, std::string>> plugins = {{"dataset", "my_data"},
                                                                    {"backbone", "my_net"},
                                                                    {"adapter", "my_head"},
                                                                    {"strategy", "my_method"}};
  for (const auto& [kind, name] : plugins) {
    const Result r = tlab(fmt::format("new plugin {} {} --dir projects", kind, name));
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_THAT(r.out, HasSubstr(fmt::format("wrote the {} plugin '{}'", kind, name)));
    EXPECT_THAT(r.out, HasSubstr("-Dtlab_DIR=" + kBuildDir.string()));
    for (const char* file : {"CMakeLists.txt", "README.md"})
      EXPECT_TRUE(fs::exists(dir_ / "projects" / name / file)) << file;
    EXPECT_TRUE(fs::exists(dir_ / "projects" / name / (name + ".cpp")));
    EXPECT_TRUE(fs::exists(dir_ / "projects" / name / ("test_" + name + ".cpp")));
  }
  // The four projects as they were written (no edits), in one CMake build: one configure.
  tlab::test::write_file(dir_ / "projects" / "CMakeLists.txt",
                         "cmake_minimum_required(VERSION 3.25)\nproject(all LANGUAGES CXX)\n"
                         "enable_testing()\nforeach(p my_data my_net my_head my_method)\n"
                         "  add_subdirectory(${p})\nendforeach()\n");
  Result r = shell(fmt::format(
      "cd '{}/projects' && cmake -S . -B build -G Ninja -Dtlab_DIR='{}' && cmake --build build "
      "-j 2 && ctest --test-dir build --output-on-failure",
      dir_.string(), kBuildDir.string()));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("100% tests passed, 0 tests failed out of 12"));
  for (const char* so : {"datasets/my_data.so", "backbones/my_net.so", "adapters/my_head.so",
                         "strategies/my_method.so"})
    EXPECT_TRUE(fs::exists(dir_ / "projects" / "build" / "plugins" / so)) << so;

  tlab::test::write_file(dir_ / "all.toml", R"(name = "all_four"
seed = 1
device = "cpu"
[target]
plugin = "my_data"
angle = 30.0
[backbone]
plugin = "my_net"
width = 32
[[adapters]]
plugin = "my_head"
hidden = 16
[strategy]
plugin = "my_method"
smoothing = 0.2
[train]
epochs = 2
batch_size = 32
)");
  r = tlab("--plugin-path projects/build/plugins run all.toml -m seed=1,2 --db results.db");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("2 run(s) finished"));
  tlab::Store store(dir_ / "results.db", false);
  const auto runs = store.list_runs();
  ASSERT_EQ(runs.size(), 2u);
  for (const auto& run : runs) {
    EXPECT_EQ(run.status, "finished");
    std::vector<std::string> names;
    for (const auto& p : store.plugins(run.id)) {
      names.push_back(p.name);
      EXPECT_THAT(p.path, HasSubstr((dir_ / "projects" / "build" / "plugins").string()));
    }
    EXPECT_THAT(names,
                ::testing::UnorderedElementsAre("my_data", "my_net", "my_head", "my_method"));
  }
}

TEST_F(Scaffold, BuildsAgainstAnInstalledTransferLab) {
  Result r = shell(
      fmt::format("cmake --install '{}' --prefix '{}/prefix'", kBuildDir.string(), dir_.string()));
  ASSERT_EQ(r.code, 0) << r.out;
  const fs::path installed_tlab = dir_ / "prefix" / "bin" / "tlab";
  ASSERT_TRUE(fs::exists(installed_tlab));
  // The installed tlab finds its installed plugins and scaffolds against its installed package.
  r = shell(fmt::format("cd '{}' && '{}' plugins", dir_.string(), installed_tlab.string()));
  EXPECT_THAT(r.out, HasSubstr((dir_ / "prefix" / "lib" / "tlab" / "plugins").string()));
  r = shell(fmt::format("cd '{}' && '{}' new plugin strategy smooth", dir_.string(),
                        installed_tlab.string()));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("-Dtlab_DIR=" + dir_.string() + "/prefix/lib"));
  // No tlab_DIR: the install prefix on CMAKE_PREFIX_PATH is enough.
  r = shell(fmt::format(
      "cd '{0}/smooth' && cmake -S . -B build -G Ninja -DCMAKE_PREFIX_PATH='{0}/prefix' && "
      "cmake --build build && ctest --test-dir build --output-on-failure",
      dir_.string()));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("100% tests passed, 0 tests failed out of 3"));
  // It was configured with the installed package, whose tlab is the installed one.
  const std::string cache = tlab::test::read_file(dir_ / "smooth" / "build" / "CMakeCache.txt");
  EXPECT_THAT(cache, HasSubstr("tlab_DIR:PATH=" + (dir_ / "prefix").string()));
  EXPECT_THAT(
      tlab::test::read_file(dir_ / "prefix" / "lib" / "cmake" / "tlab" / "tlabConfig.cmake"),
      Not(HasSubstr(kBuildDir.string())));
}

TEST_F(Scaffold, LibTorchsCommonLayersNeedNoIncludeBeyondTheKindHeader) {
  // Out of tree there is no precompiled header: what compiles here is what the SDK header brings.
  ASSERT_EQ(tlab("new plugin strategy my_layers").code, 0);
  const fs::path src = dir_ / "my_layers" / "my_layers.cpp";
  std::string text = tlab::test::read_file(src);
  const std::string anchor = "class MyLayers : public tlab::Strategy {\n public:\n";
  ASSERT_NE(text.find(anchor), std::string::npos) << text;
  text.replace(text.find(anchor), anchor.size(),
               anchor +
                   "  torch::nn::Linear fc_{nullptr};\n  torch::nn::Conv2d conv_{nullptr};\n"
                   "  torch::nn::BatchNorm2d bn_{nullptr};\n  torch::nn::Dropout drop_{nullptr};\n"
                   "  torch::Tensor gelu(const torch::Tensor& x) {\n"
                   "    return torch::nn::functional::gelu(x);\n  }\n");
  tlab::test::write_file(src, text);
  const Result r = shell(fmt::format(
      "cd '{0}/my_layers' && cmake -S . -B build -G Ninja -Dtlab_DIR='{1}' && cmake --build build "
      "--target tlab_plugin_strategy_my_layers",
      dir_.string(), kBuildDir.string()));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(dir_ / "my_layers" / "build" / "plugins" / "strategies" / "my_layers.so"));
}

TEST_F(Scaffold, AnotherLibTorchVersionIsRefusedAtConfigureTime) {
  ASSERT_EQ(tlab("new plugin adapter my_head").code, 0);
  // A LibTorch package that claims another version.
  fs::create_directories(dir_ / "torch");
  tlab::test::write_file(dir_ / "torch" / "TorchConfigVersion.cmake",
                         "set(PACKAGE_VERSION \"9.9.0\")\nset(PACKAGE_VERSION_COMPATIBLE TRUE)\n");
  tlab::test::write_file(dir_ / "torch" / "TorchConfig.cmake",
                         "set(TORCH_FOUND TRUE)\nset(TORCH_LIBRARIES \"\")\n");
  const Result r = shell(fmt::format(
      "cd '{0}/my_head' && cmake -S . -B build -Dtlab_DIR='{1}' -DTorch_DIR='{0}/torch'",
      dir_.string(), kBuildDir.string()));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("LibTorch 9.9.0 was found"));
  EXPECT_THAT(r.out, HasSubstr("but tlab 0.1.0 was built with LibTorch"));
  EXPECT_THAT(r.out, HasSubstr("Point Torch_DIR to"));
}

TEST_F(Scaffold, AnotherCompilerIsRefusedAtConfigureTime) {
  const std::string other = std::string(TLAB_COMPILER_ID) == "gcc" ? "clang++" : "g++";
  if (shell("command -v " + other).code != 0) GTEST_SKIP() << other << " is not installed";
  ASSERT_EQ(tlab("new plugin adapter my_head").code, 0);
  const Result r = shell(fmt::format(
      "cd '{0}/my_head' && cmake -S . -B build -Dtlab_DIR='{1}' -DCMAKE_CXX_COMPILER={2}",
      dir_.string(), kBuildDir.string(), other));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("this project compiles with"));  // CMake wraps the rest
  EXPECT_THAT(r.out, HasSubstr("tlab refuses a plugin built with another compiler"));
}

TEST_F(Scaffold, BadKindNameOrFolderIsRefusedAndNothingWritten) {
  Result r = tlab("new plugin optimizer adamw");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr("'optimizer' is not a plugin kind; expected dataset, backbone, "
                               "adapter or strategy"));
  r = tlab("new plugin strategy My-Method");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr("'My-Method' is not a valid plugin name; use lower case letters"));
  fs::create_directories(dir_ / "taken");
  tlab::test::write_file(dir_ / "taken" / "notes.txt", "mine");
  r = tlab("new plugin strategy taken");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr("exists and is not empty"));
  EXPECT_EQ(tlab::test::read_file(dir_ / "taken" / "notes.txt"), "mine");
  EXPECT_FALSE(fs::exists(dir_ / "adamw"));
}

TEST_F(Scaffold, SameNameInTwoFoldersTheFirstWinsAndTheOtherIsReported) {
  // The in-tree `scratch` strategy copied into a folder searched first.
  fs::create_directories(dir_ / "mine" / "strategies");
  fs::copy_file(kBuildDir / "plugins" / "strategies" / "scratch.so",
                dir_ / "mine" / "strategies" / "scratch.so");
  const Result r = tlab("--plugin-path mine plugins");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr((dir_ / "mine" / "strategies" / "scratch.so").string()));
  EXPECT_THAT(r.out, HasSubstr("shadowed:"));
  EXPECT_THAT(r.out,
              HasSubstr(fmt::format("strategy scratch: {} is shadowed by {} (the first "
                                    "folder in the search path wins",
                                    (kBuildDir / "plugins" / "strategies" / "scratch.so").string(),
                                    (dir_ / "mine" / "strategies" / "scratch.so").string())));
}

TEST_F(Scaffold, InProcessRunsEveryRunInTheSupervisorForDebuggers) {
  tlab::test::write_file(dir_ / "exp.toml", R"(name = "inproc"
seed = 1
device = "cpu"
[target]
plugin = "gaussians"
domain = "target"
train_size = 64
val_size = 16
test_size = 32
[backbone]
plugin = "mlp"
hidden = [8]
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = 1
batch_size = 16
)");
  Result r = tlab("run exp.toml -m seed=1,2 --in-process --db results.db");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("in this process (1 of 2): seed=1"));
  EXPECT_THAT(r.out, HasSubstr("2 run(s) finished"));
  tlab::Store store(dir_ / "results.db", false);
  const auto runs = store.list_runs();
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(store.run(runs[0].id).pid, store.run(runs[1].id).pid);  // no child processes
  r = tlab("run exp.toml --in-process -j 2 --db results.db");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.out, HasSubstr("--in-process runs one run at a time in this process: leave out "
                               "--jobs"));
}

}  // namespace
