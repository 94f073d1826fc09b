#include "results_cli.hpp"

#include <filesystem>

#include <fmt/format.h>

namespace tlab::cli {

Store open_results(const std::string& db) {
  if (!std::filesystem::exists(db))
    throw UsageError(
        fmt::format("no results database at '{}'; run an experiment first "
                    "(tlab run experiments/quickstart.toml) or pass --db PATH",
                    db));
  try {
    return Store(db, /*create=*/false);
  } catch (const StoreError& e) {
    // No write access (a read-only folder or file): reading needs none, so read only.
    const std::string why = e.what();
    if (why.find("readonly") == std::string::npos && why.find("read-only") == std::string::npos &&
        why.find("unable to open") == std::string::npos)
      throw UsageError(why);
    try {
      return Store(db, /*create=*/false, Store::kBusyTimeout, Store::Journal::kReadOnly);
    } catch (const StoreError& again) {
      throw UsageError(again.what());
    }
  }
}

void add_db_option(CLI::App& cmd, std::string& db) {
  cmd.add_option("--db", db, "Results database")->capture_default_str();
}

}  // namespace tlab::cli
