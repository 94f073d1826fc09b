// libtlab_engine.so: the part of tlab that loads LibTorch and the plugins (api.hpp). Its one
// exported symbol, tlab_engine_api, hands the front the table of commands below; each command's
// exceptions become the error message and exit code here, inside the engine, so that no
// exception crosses into the front.

#include <iostream>
#include <new>

#include <fmt/format.h>

#include "commands.hpp"
#include "config/experiment.hpp"
#include "errors.hpp"
#include "plugins/loader.hpp"
#include "run/signals.hpp"
#include "run/slurm.hpp"
#include "store/store.hpp"
#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab::engine {
namespace {

/// Runs `body`; an exception becomes "error: ..." on stderr and the exit code: 2 for what the
/// user must fix (nothing ran), 3 out of memory, 128 + signal when stopped by one, 1 otherwise.
template <class F>
int guarded(F&& body) {
  try {
    return body();
  } catch (const ConfigError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return cli::kUsageError;
  } catch (const PluginError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return cli::kUsageError;
  } catch (const cli::UsageError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return cli::kUsageError;
  } catch (const std::bad_alloc&) {
    std::cerr << "error: out of memory" << memory_limit_hint() << "\n";
    return cli::kOutOfMemory;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return stop_signal() ? 128 + stop_signal() : cli::kRunFailed;  // stopped by Ctrl-C: 130
  }
}

int retry(const Globals& g, const RetryArgs& a) {
  PluginLoader loader(plugin_search_dirs(g));
  Store store(a.db, /*create=*/false);
  int code = 0;
  for (std::size_t i = 0; i < a.sweeps.size(); ++i) {
    const SweepResult r = slurm::retry_failed(a.sweeps[i], store, loader);
    if (r.submitted)
      std::cout << fmt::format("  resubmitted {} task(s) as job {} (sweep {})\n", r.submitted,
                               r.job, fs::path(a.sweeps[i]).filename().string());
    else if (i < a.unfinished.size() && a.unfinished[i])
      code = cli::kRunFailed;  // did not finish, and nothing to try again
  }
  return code;
}

const Api kApi = {
    [](const Globals& g, const RunArgs& a) {
      return guarded([&] { return run_experiment(g, a); });
    },
    [](const Globals& g, const ChildArgs& a) { return guarded([&] { return run_queued(g, a); }); },
    [](const Globals& g, const ConfigArgs& a) { return guarded([&] { return config(g, a); }); },
    [](const Globals& g, const PluginsArgs& a) { return guarded([&] { return plugins(g, a); }); },
    [](const Globals& g, const RetryArgs& a) { return guarded([&] { return retry(g, a); }); },
    [](const Globals& g, const EvalArgs& a) { return guarded([&] { return evaluate(g, a); }); },
    [](const Globals& g, const ExportArgs& a) {
      return guarded([&] { return export_model(g, a); });
    },
    [](const Globals& g, const PredictArgs& a) { return guarded([&] { return predict(g, a); }); },
    [](const Globals& g, const TransferabilityArgs& a) {
      return guarded([&] { return transferability(g, a); });
    },
};

}  // namespace

std::vector<fs::path> plugin_search_dirs(const Globals& g) {
  std::vector<fs::path> extra(g.plugin_paths.begin(), g.plugin_paths.end());
  return PluginLoader::default_search_dirs(extra);
}

}  // namespace tlab::engine

extern "C" __attribute__((visibility("default"))) const tlab::engine::Api* tlab_engine_api(
    int api_version, std::size_t layout, const char** why) {
  using namespace tlab::engine;
  static std::string reason;
  if (api_version != kApiVersion || layout != kLayoutStamp) {
    reason = fmt::format("it has engine API {} (layout {}), this tlab expects API {} (layout {})",
                         kApiVersion, kLayoutStamp, api_version, layout);
    if (why) *why = reason.c_str();
    return nullptr;
  }
  return &kApi;
}
