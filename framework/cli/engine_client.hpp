#pragma once
// Opening the training engine (libtlab_engine.so, framework/engine/api.hpp) on first need: the
// front `tlab` does not link LibTorch, so that results, sweep, new, --help and --version start
// in milliseconds.

#include <filesystem>
#include <string>

#include "../engine/api.hpp"

namespace tlab::cli {

/// Where the engine is looked for: $TLAB_ENGINE when set (a file), else
/// <folder of tlab>/../lib/tlab/libtlab_engine.so (the build tree and an installed tlab alike).
std::filesystem::path engine_path();

/// The engine's table, opened once. UsageError naming the file looked for and why it could not
/// be used (missing, LibTorch cannot be loaded, from another tlab build), and what still works.
const engine::Api& open_engine(const std::string& command);

}  // namespace tlab::cli
