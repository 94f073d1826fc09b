#include "test_paths.hpp"

namespace tlab::test::paths {
const char* const kPluginDir = TLAB_PATHS_PLUGIN_DIR;
const char* const kFixtureDir = TLAB_PATHS_FIXTURE_DIR;
const char* const kBinDir = TLAB_PATHS_BIN_DIR;
const char* const kSourceDir = TLAB_PATHS_SOURCE_DIR;
}  // namespace tlab::test::paths
