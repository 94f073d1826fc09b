// The plugin loader: real plugins load; every kind of bad file is refused with a clear message.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cstdio>
#include <fstream>

#include "plugins/loader.hpp"
#include "test_paths.hpp"
#include "tlab/sdk/sdk.hpp"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

const fs::path kPlugins = TLAB_TEST_PLUGIN_DIR;
const fs::path kFixtures = TLAB_TEST_FIXTURE_DIR;

// The message of the PluginError thrown by `f` ("" if none was thrown).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const tlab::PluginError& e) {
    return e.what();
  }
  return "";
}

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("tlab_loader_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(Loader, LoadsAnInTreePluginWithItsDescriptorAndHash) {
  auto p = tlab::load_plugin_file(kPlugins / "backbones" / "cnn.so");
  EXPECT_EQ(p.descriptor->name, "cnn");
  EXPECT_EQ(p.descriptor->kind, tlab::Kind::Backbone);
  EXPECT_FALSE(p.descriptor->version.empty());
  EXPECT_NE(p.descriptor->schema.find("channels"), nullptr);
  EXPECT_EQ(p.file_hash.size(), 16u);
}

TEST(Loader, PluginsExportExactlyTheTwoCSymbols) {
  FILE* pipe = popen(("nm -D --defined-only " + (kPlugins / "backbones" / "cnn.so").string() +
                      " | awk '{print $3}' | grep -v '^_\\(_bss_start\\|edata\\|end\\)$'")
                         .c_str(),
                     "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[256];
  while (fgets(buf, sizeof buf, pipe)) out += buf;
  pclose(pipe);
  EXPECT_EQ(out, "tlab_abi_stamp\ntlab_plugin_descriptor\n");
}

TEST(Loader, RefusesAMissingFile) {
  auto msg = error_of([] { tlab::load_plugin_file("/nonexistent/dir/ghost.so"); });
  EXPECT_THAT(msg, HasSubstr("plugin file '/nonexistent/dir/ghost.so' does not exist"));
}

TEST(Loader, RefusesATextFile) {
  fs::path f = temp_dir("text") / "notes.so";
  std::ofstream(f) << "this is not a library\n";
  auto msg = error_of([&] { tlab::load_plugin_file(f); });
  EXPECT_THAT(msg, HasSubstr("'" + f.string() + "' is not a shared library (no ELF header)"));
}

TEST(Loader, RefusesATruncatedLibrary) {
  fs::path f = temp_dir("trunc") / "cnn.so";
  std::ifstream in(kPlugins / "backbones" / "cnn.so", std::ios::binary);
  std::string head(2000, '\0');
  in.read(head.data(), head.size());
  std::ofstream(f, std::ios::binary) << head;
  auto msg = error_of([&] { tlab::load_plugin_file(f); });
  EXPECT_THAT(msg, HasSubstr("'" + f.string() + "' is truncated or corrupt"));
}

TEST(Loader, RefusesALibraryThatIsNotAPlugin) {
  auto f = kFixtures / "bad" / "not_a_plugin.so";
  auto msg = error_of([&] { tlab::load_plugin_file(f); });
  EXPECT_THAT(msg, HasSubstr("'" + f.string() +
                             "' is a shared library but not a TransferLab "
                             "plugin (it exports no 'tlab_abi_stamp')"));
}

TEST(Loader, RefusesAnAbiMismatchNamingEveryFieldBeforeRunningPluginCode) {
  // The fixture aborts in a static initialiser and in its descriptor: if the loader ran any of
  // its code (dlopen included) before refusing it, this test would die.
  auto f = kFixtures / "bad" / "bad_abi.so";
  auto msg = error_of([&] { tlab::load_plugin_file(f); });
  EXPECT_THAT(msg, HasSubstr("plugin '" + f.string() + "' was built for another ABI"));
  EXPECT_THAT(
      msg, HasSubstr("SDK ABI version: plugin 999, host " + std::to_string(TLAB_SDK_ABI_VERSION)));
  EXPECT_THAT(msg, HasSubstr("LibTorch version: plugin \"0.0.1\", host \"" TORCH_VERSION "\""));
  EXPECT_THAT(msg, HasSubstr("C++11 ABI (_GLIBCXX_USE_CXX11_ABI): plugin 0, host 1"));
  EXPECT_THAT(msg, HasSubstr("compiler: plugin \"msvc\", host \"" TLAB_COMPILER_ID "\""));
  EXPECT_THAT(msg, HasSubstr("compiler major version: plugin 3, host " +
                             std::to_string(TLAB_COMPILER_MAJOR)));
  EXPECT_THAT(msg, HasSubstr("To fix: rebuild the plugin"));
}

TEST(Loader, RefusesAPluginBuiltWithAnotherSdkAbiVersionNamingOnlyThat) {
  auto f = kFixtures / "bad" / "old_sdk.so";
  auto msg = error_of([&] { tlab::load_plugin_file(f); });
  EXPECT_THAT(msg, HasSubstr("plugin '" + f.string() + "' was built for another ABI"));
  EXPECT_THAT(msg, HasSubstr(fmt::format("SDK ABI version: plugin {}, host {}",
                                         TLAB_SDK_ABI_VERSION + 1, TLAB_SDK_ABI_VERSION)));
  EXPECT_THAT(msg, Not(HasSubstr("LibTorch version")));
  EXPECT_THAT(msg, HasSubstr("To fix: rebuild the plugin"));
}

TEST(Loader, RefusesAPluginBuiltAgainstSdk3BeforeAnyOfItsCodeRuns) {
  // sdk3.so aborts in a static initialiser: the refusal must come from its stamp alone.
  static_assert(TLAB_SDK_ABI_VERSION == 4, "update this test and its fixture for the new version");
  auto f = kFixtures / "bad" / "sdk3.so";
  auto msg = error_of([&] { tlab::load_plugin_file(f); });
  EXPECT_THAT(msg, HasSubstr("plugin '" + f.string() + "' was built for another ABI"));
  EXPECT_THAT(msg, HasSubstr("SDK ABI version: plugin 3, host 4"));
  EXPECT_THAT(msg, Not(HasSubstr("LibTorch version")));
  EXPECT_THAT(msg, HasSubstr("To fix: rebuild the plugin"));
}

TEST(Loader, RefusesAPluginClaimingAnotherLibTorchNamingOnlyThat) {
  auto f = kFixtures / "bad" / "other_torch.so";
  auto msg = error_of([&] { tlab::load_plugin_file(f); });
  EXPECT_THAT(msg, HasSubstr("plugin '" + f.string() + "' was built for another ABI"));
  EXPECT_THAT(msg,
              HasSubstr("LibTorch version: plugin \"0.0.0-other\", host \"" TORCH_VERSION "\""));
  EXPECT_THAT(msg, Not(HasSubstr("SDK ABI version")));
  EXPECT_THAT(msg, HasSubstr("To fix: rebuild the plugin"));
}

TEST(Loader, AbiDifferencesIsEmptyForTheHostsOwnStamp) {
  EXPECT_TRUE(tlab::abi_differences(tlab::kAbiStamp, tlab::kAbiStamp).empty());
  TlabAbiStamp other = tlab::kAbiStamp;
  other.cxx11_abi = 0;
  EXPECT_EQ(tlab::abi_differences(other, tlab::kAbiStamp).size(), 1u);
}

TEST(Loader, RefusesAPluginWhoseNameDiffersFromItsFile) {
  auto f = kFixtures / "bad" / "misnamed.so";
  auto msg = error_of([&] { tlab::load_plugin_file(f); });
  EXPECT_THAT(msg, HasSubstr("plugin '" + f.string() +
                             "' calls itself 'something_else' but its file is named "
                             "'misnamed.so'"));
}

TEST(Loader, RefusesAnUnresolvedSymbolAtLoadTime) {
  auto f = kFixtures / "bad" / "unresolved.so";
  auto msg = error_of([&] { tlab::load_plugin_file(f); });
  EXPECT_THAT(msg, HasSubstr("cannot load plugin '" + f.string() + "'"));
  EXPECT_THAT(msg, HasSubstr("undefined symbol: tlab_symbol_that_does_not_exist"));
  EXPECT_THAT(msg, HasSubstr("rebuild the plugin"));
}

TEST(Loader, UnknownNameSuggestsTheNearestAndListsFoldersSearched) {
  tlab::PluginLoader loader({kPlugins, kFixtures});
  auto msg = error_of([&] { loader.get(tlab::Kind::Backbone, "cnnn"); });
  EXPECT_THAT(msg, HasSubstr("no backbone plugin named 'cnnn': did you mean 'cnn'?"));
  EXPECT_THAT(msg, HasSubstr("searched: '" + kPlugins.string() + "', '" + kFixtures.string()));
}

TEST(Loader, AFileOfAnotherKindIsSkippedAndNamed) {
  // A strategy found directly in a search folder, asked for as a backbone.
  fs::path d = temp_dir("kind");
  fs::copy_file(kPlugins / "strategies" / "scratch.so", d / "scratch.so");
  tlab::PluginLoader flat({d});
  auto msg = error_of([&] { flat.get(tlab::Kind::Backbone, "scratch"); });
  EXPECT_THAT(msg, HasSubstr("no backbone plugin named 'scratch'"));
  EXPECT_THAT(msg,
              HasSubstr("not of that kind: '" + (d / "scratch.so").string() + "' is a strategy"));
  EXPECT_EQ(flat.get(tlab::Kind::Strategy, "scratch").descriptor->name, "scratch");
}

TEST(Loader, NamesArePluginNamesNotPaths) {
  tlab::PluginLoader loader({kPlugins});
  for (std::string bad : {"../backbones/cnn", "/tmp/evil/scratch", "", "a.b"})
    EXPECT_THAT(error_of([&] { loader.get(tlab::Kind::Dataset, bad); }),
                HasSubstr("'" + bad + "' is not a valid plugin name"))
        << bad;
}

TEST(Loader, FactoryErrorsNameThePluginAndItsFile) {
  tlab::PluginLoader loader({kFixtures});
  auto msg = error_of([&] {
    loader.create<tlab::Strategy>("faulty", {{"fail_in", std::string("factory")}});
  });
  EXPECT_THAT(msg, HasSubstr("strategy plugin 'faulty' ('" +
                             (kFixtures / "strategies" / "faulty.so").string() +
                             "') failed to create an instance: faulty: asked to fail in factory"));
}

TEST(Loader, CreateChecksParameterNamesAndTypes) {
  tlab::PluginLoader loader({kPlugins});
  EXPECT_THAT(error_of([&] {
                loader.create<tlab::Backbone>("mlp", {{"hiden", int64_t{3}}});
              }),
              HasSubstr("backbone plugin 'mlp' has no parameter 'hiden': did you mean 'hidden'?"));
  EXPECT_THAT(error_of([&] {
                loader.create<tlab::Backbone>("mlp", {{"dropout", int64_t{1}}});
              }),
              HasSubstr("backbone plugin 'mlp': parameter 'dropout' must be float"));
}

TEST(Loader, CreatesTypedInstances) {
  tlab::PluginLoader loader({kPlugins});
  auto b = loader.create<tlab::Backbone>("mlp", {{"hidden", std::vector<int64_t>{8, 4}}});
  tlab::Context ctx;
  auto net = b->build({3, 2}, ctx);
  EXPECT_EQ(net->feature_dim(), 4);
  EXPECT_EQ(net->forward(torch::zeros({5, 3, 2})).sizes(), (std::vector<int64_t>{5, 4}));
  EXPECT_EQ(net->layer_groups().size(), 2u);
}

TEST(Loader, DiscoverListsPluginsAndRefusedFilesWithReasons) {
  tlab::PluginLoader loader({kPlugins, kFixtures / "bad"});
  std::vector<tlab::RefusedPlugin> refused;
  auto found = loader.discover(refused);
  std::vector<std::string> names;
  for (auto* p : found) names.push_back(p->descriptor->name);
  EXPECT_THAT(names, ::testing::IsSupersetOf({"cnn", "mlp", "linear_head", "scratch", "finetune"}));
  ASSERT_EQ(refused.size(), 7u);
  std::string all;
  for (const auto& r : refused) all += r.path.filename().string() + ": " + r.reason + "\n";
  EXPECT_THAT(all, HasSubstr("bad_abi.so: plugin"));
  EXPECT_THAT(all, HasSubstr("misnamed.so: plugin"));
  EXPECT_THAT(all, HasSubstr("not_a_plugin.so: '"));
  EXPECT_THAT(all, HasSubstr("unresolved.so: cannot load"));
  EXPECT_THAT(all, HasSubstr("old_sdk.so: plugin"));
  EXPECT_THAT(all, HasSubstr("sdk3.so: plugin"));
  EXPECT_THAT(all, HasSubstr("other_torch.so: plugin"));
}

}  // namespace
