#include "results_cli.hpp"

#include <filesystem>
#include <iostream>

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
    // No write access (a read-only folder or file) or no room to create the -shm file (a full
    // disk): reading needs neither, so read only.
    const std::string why = e.what();
    const bool full = why.find("is full") != std::string::npos;
    if (why.find("readonly") == std::string::npos && why.find("read-only") == std::string::npos &&
        why.find("unable to open") == std::string::npos && !full)
      throw UsageError(why);
    try {
      Store store(db, /*create=*/false, Store::kBusyTimeout, Store::Journal::kReadOnly);
      if (full)
        std::cerr << fmt::format(
            "warning: the disk holding '{}' is full: reading it read-only; writing needs free "
            "space\n",
            db);
      return store;
    } catch (const StoreError& again) {
      throw UsageError(again.what());
    }
  }
}

void add_db_option(CLI::App& cmd, std::string& db) {
  cmd.add_option("--db", db, "Results database")->capture_default_str();
}

}  // namespace tlab::cli
