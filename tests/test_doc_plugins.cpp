// The plugins of docs/writing-plugins.md load: tests/doc_plugins/CMakeLists.txt builds every
// ```cpp block of the guide that contains TLAB_PLUGIN( into <build>/tests/doc_plugins/<kind
// folder>/<name>.so, and each must load through the real tlab with the kind, name and version
// its block gives. The blocks are read from the guide here as well, so a block the build did not
// compile (or a build older than the guide) fails instead of passing unnoticed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "test_helpers.hpp"
#include "test_paths.hpp"

using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

const fs::path kGuide = fs::path(TLAB_SOURCE_DIR) / "docs" / "writing-plugins.md";
const fs::path kDocPlugins = fs::path(TLAB_TEST_BIN_DIR).parent_path() / "tests" / "doc_plugins";
const std::string kTlab = std::string(TLAB_TEST_BIN_DIR) + "/tlab";

struct DocPlugin {
  int line = 0;  // of the guide, where the block starts
  std::string kind, folder, name, version;
};

// The plugin blocks of the guide, by the build's rule: a line "```cpp" opens a block, the next
// line "```" closes it, and a block with TLAB_PLUGIN( is a plugin. Kind, name and version come
// from `class C : public tlab::Kind` and `TLAB_PLUGIN(C, "name", "version", ...)`.
std::vector<DocPlugin> doc_plugins(std::string& problems) {
  std::ifstream in(kGuide);
  std::vector<DocPlugin> out;
  std::string line, block;
  int number = 0, start = 0;
  bool inside = false;
  const std::regex macro(R"re(\nTLAB_PLUGIN\((\w+),\s*"(\w+)",\s*"([^"]*)")re");
  while (std::getline(in, line)) {
    ++number;
    if (!inside) {
      inside = line == "```cpp";
      start = number + 1;
      block.clear();
      continue;
    }
    if (line != "```") {
      block += "\n" + line;
      continue;
    }
    inside = false;
    if (block.find("TLAB_PLUGIN(") == std::string::npos) continue;  // a fragment
    std::smatch m;
    if (!std::regex_search(block, m, macro)) {
      problems +=
          fmt::format("line {}: no `TLAB_PLUGIN(Class, \"name\", \"version\", ...)`\n", start);
      continue;
    }
    DocPlugin p{start, "", "", m[2], m[3]};
    const std::regex base("class " + m[1].str() +
                          R"([^{;]*public tlab::(Dataset|Backbone|Adapter|Strategy)\b)");
    if (!std::regex_search(block, m, base)) {
      problems += fmt::format("line {}: plugin '{}' has no class deriving from a tlab kind\n",
                              start, p.name);
      continue;
    }
    p.kind = m[1];
    p.kind[0] = static_cast<char>(std::tolower(p.kind[0]));
    p.folder = p.kind == "strategy" ? "strategies" : p.kind + "s";
    out.push_back(p);
  }
  return out;
}

TEST(DocPlugins, EveryPluginOfTheWritingPluginsGuideBuildsAndLoads) {
  ASSERT_TRUE(fs::exists(kGuide)) << kGuide;
  std::string problems;
  const auto plugins = doc_plugins(problems);
  EXPECT_EQ(problems, "") << "in " << kGuide;
  ASSERT_FALSE(plugins.empty())
      << kGuide
      << " has no plugin example (a ```cpp block with TLAB_PLUGIN(...)); the guide's worked "
         "examples are what tests/doc_plugins/CMakeLists.txt compiles and this test loads: "
         "keep them as complete ```cpp blocks";
  for (const auto& p : plugins) {
    SCOPED_TRACE(fmt::format("{}:{}: {} '{}'", kGuide.string(), p.line, p.kind, p.name));
    const fs::path so = kDocPlugins / p.folder / (p.name + ".so");
    if (!fs::exists(so)) {
      ADD_FAILURE() << so << " was not built: reconfigure and build (cmake --build build), which "
                    << "compiles every plugin block of the guide";
      continue;
    }
    const auto r = tlab::test::shell(fmt::format("'{}' --plugin-path '{}' plugins show {}", kTlab,
                                                 kDocPlugins.string(), p.name));
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_THAT(r.out, HasSubstr(fmt::format("{} {} {} — ", p.kind, p.name, p.version)));
    // The guide's build, not an in-tree plugin of the same name (scratch).
    EXPECT_THAT(r.out, HasSubstr("file: " + so.string() + "\n"));
  }
}

}  // namespace
