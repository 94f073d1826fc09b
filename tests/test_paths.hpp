#pragma once
// The folders of this build, for the test files. Only test_paths.cpp is compiled with them, so
// that no other test file's compilation depends on where the checkout and the build are: ccache
// hits them in a clone in another folder (docs/benchmarks.md, "Build speed").
#include <string>

namespace tlab::test::paths {
extern const char* const kPluginDir;   ///< <build>/plugins: the in-tree plugins
extern const char* const kFixtureDir;  ///< <build>/tests/fixtures: the fixture plugins
extern const char* const kBinDir;      ///< <build>/bin: tlab and the test binaries
extern const char* const kSourceDir;   ///< the checkout
}  // namespace tlab::test::paths

#define TLAB_TEST_PLUGIN_DIR (std::string(::tlab::test::paths::kPluginDir))
#define TLAB_TEST_FIXTURE_DIR (std::string(::tlab::test::paths::kFixtureDir))
#define TLAB_TEST_BIN_DIR (std::string(::tlab::test::paths::kBinDir))
#define TLAB_SOURCE_DIR (std::string(::tlab::test::paths::kSourceDir))
