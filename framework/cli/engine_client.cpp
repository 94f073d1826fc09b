#include "engine_client.hpp"

#include <dlfcn.h>

#include <cstdlib>

#include <fmt/format.h>

#include "errors.hpp"
#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab::cli {

fs::path engine_path() {
  if (const char* env = std::getenv("TLAB_ENGINE"); env && *env) return env;
  return executable_dir().parent_path() / "lib" / "tlab" / "libtlab_engine.so";
}

const engine::Api& open_engine(const std::string& command) {
  static const engine::Api* api = nullptr;
  if (api) return *api;
  const fs::path path = engine_path();
  const std::string what =
      fmt::format("tlab {} needs its training engine, '{}' (LibTorch and the plugins), which",
                  command, path.string());
  const std::string still =
      "tlab results, tlab sweep (without --retry-failed), tlab new, --help and --version work "
      "without it";
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw UsageError(fmt::format(
        "{} does not exist{}; build it (cmake --build build) or install tlab again (cmake "
        "--install build), or point TLAB_ENGINE at the file; {}",
        what, std::getenv("TLAB_ENGINE") ? " (set by TLAB_ENGINE)" : "", still));
  // RTLD_GLOBAL: LibTorch and OpenBLAS join the global scope as when tlab linked them (the
  // runner finds openblas_set_num_threads there); the engine itself exports one function.
  //
  // OpenBLAS starts worker threads as it loads unless told not to. tlab never uses them (each
  // run sets OpenBLAS to one thread: configure_threads; LibTorch parallelises itself), and under
  // a memory limit a worker stuck allocating its buffer blocks fork() (OpenBLAS's pre-fork
  // handler joins its workers) and the process's exit, for ever. So none start, here and in
  // every run's process (they inherit the environment).
  ::setenv("OPENBLAS_NUM_THREADS", "1", 1);
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!handle) {
    const std::string error = ::dlerror();
    const std::string limit = memory_limit_hint();
    if (!limit.empty() && (error.find("failed to map segment") != std::string::npos ||
                           error.find("annot allocate memory") != std::string::npos))
      throw OutOfMemory(fmt::format(
          "{} could not be loaded: {}: out of memory (LibTorch needs about 700 MiB of address "
          "space to load){}; {}",
          what, error, limit, still));
    throw UsageError(fmt::format(
        "{} could not be loaded: {}; a library it needs (LibTorch: apt-get install libtorch-dev, "
        "or tools/setup.sh) is missing or damaged; {}",
        what, error, still));
  }
  using Entry = const engine::Api* (*)(int, std::size_t, const char**);
  auto entry = reinterpret_cast<Entry>(::dlsym(handle, "tlab_engine_api"));
  if (!entry)
    throw UsageError(fmt::format(
        "{} is not a tlab engine: it has no tlab_engine_api ({}); build or install tlab again",
        what, ::dlerror()));
  const char* why = nullptr;
  api = entry(engine::kApiVersion, engine::kLayoutStamp, &why);
  if (!api)
    throw UsageError(fmt::format(
        "{} is from another tlab build: {}; build or install tlab again so that tlab and its "
        "engine match",
        what, why ? why : "unknown difference"));
  return *api;
}

}  // namespace tlab::cli
