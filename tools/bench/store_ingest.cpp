// Metric ingest through Store::write_metrics: rows per second for realistic batches, one
// process or several writing to one database at once (each its own run, as parallel runs do).
//
//   build/bin/bench_store_ingest [--rows N] [--batch B,...] [--processes P,...] [--dir DIR]
//
// Every configuration writes N rows in all (split evenly between the processes) into a fresh
// database in DIR (default: a temporary folder, removed afterwards), in batches of B rows, one
// transaction each. Metric names rotate over four, as a training loop logs them. Time is wall
// time from the moment every process may start until the last has committed its last batch;
// CPU time is the writers' user + system time (what the rate would be on an idle machine, as
// long as the disk keeps up). The row count is checked afterwards.

#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "store/store.hpp"

namespace fs = std::filesystem;
using tlab::MetricRow;
using tlab::NewRun;
using tlab::Store;

namespace {

std::vector<int64_t> parse_list(const std::string& text, const char* option) {
  std::vector<int64_t> values;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    char* end = nullptr;
    const long long value = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || value <= 0) {
      throw std::invalid_argument(fmt::format(
          "{} takes positive whole numbers separated by commas, got '{}'", option, text));
    }
    values.push_back(value);
  }
  return values;
}

/// Writes `rows` rows to `run` in batches of `batch`.
void ingest(const fs::path& db, int64_t run, int64_t rows, int64_t batch) {
  static const char* kNames[] = {"target/train/loss", "target/train/acc", "target/train/lr",
                                 "target/train/grad_norm"};
  Store store(db, /*create=*/false);
  std::vector<MetricRow> buffer;
  buffer.reserve(static_cast<size_t>(batch));
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t step = i / 4;
    buffer.push_back({kNames[i % 4], step, step / 1000, 1.0 / (1.0 + static_cast<double>(i)),
                      static_cast<double>(step) * 0.01});
    if (static_cast<int64_t>(buffer.size()) == batch || i + 1 == rows) {
      store.write_metrics(run, buffer);
      buffer.clear();
    }
  }
}

struct Result {
  int64_t processes, batch, rows;
  double seconds;      ///< wall time
  double cpu_seconds;  ///< user + system time of the writer processes
};

/// User + system seconds of the children waited for so far.
double children_cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_CHILDREN, &usage);
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

Result measure(const fs::path& dir, int64_t processes, int64_t batch, int64_t rows) {
  const fs::path db = dir / fmt::format("ingest_p{}_b{}.db", processes, batch);
  for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(db.string() + suffix);
  std::vector<int64_t> runs;
  {
    Store store(db);
    for (int64_t p = 0; p < processes; ++p) {
      NewRun run;
      run.experiment = "bench.toml";
      run.name = "bench";
      runs.push_back(store.create_run(run));
    }
  }
  int start[2];
  if (pipe(start) != 0) throw std::runtime_error("pipe() failed");
  std::fflush(nullptr);
  std::vector<pid_t> children;
  for (int64_t p = 0; p < processes; ++p) {
    const int64_t share = rows / processes + (p < rows % processes ? 1 : 0);
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("fork() failed");
    if (pid == 0) {
      close(start[1]);
      char byte;
      while (read(start[0], &byte, 1) < 0) {
      }
      int code = 0;
      try {
        ingest(db, runs[static_cast<size_t>(p)], share, batch);
      } catch (const std::exception& e) {
        std::cerr << "process " << p << ": " << e.what() << "\n";
        code = 1;
      }
      std::fflush(nullptr);
      _exit(code);
    }
    children.push_back(pid);
  }
  close(start[0]);
  const double cpu_before = children_cpu_seconds();
  const auto begin = std::chrono::steady_clock::now();
  close(start[1]);  // every child starts now
  bool failed = false;
  for (const pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  const double cpu_seconds = children_cpu_seconds() - cpu_before;
  if (failed) throw std::runtime_error("a writer process failed (see above)");

  // Check the count with a plain connection.
  sqlite3* raw = nullptr;
  sqlite3_open_v2(db.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* count = nullptr;
  sqlite3_prepare_v2(raw, "SELECT count(*) FROM metrics", -1, &count, nullptr);
  const int64_t found = sqlite3_step(count) == SQLITE_ROW ? sqlite3_column_int64(count, 0) : -1;
  sqlite3_finalize(count);
  sqlite3_close_v2(raw);
  if (found != rows) {
    throw std::runtime_error(
        fmt::format("'{}' holds {} metric rows; {} were written", db.string(), found, rows));
  }
  for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(db.string() + suffix);
  return {processes, batch, rows, seconds, cpu_seconds};
}

}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 1000000;
  std::vector<int64_t> batches = {1000}, processes = {1, 4};
  fs::path dir;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
        return argv[++i];
      };
      if (arg == "--rows") {
        rows = parse_list(value(), "--rows").at(0);
      } else if (arg == "--batch") {
        batches = parse_list(value(), "--batch");
      } else if (arg == "--processes") {
        processes = parse_list(value(), "--processes");
      } else if (arg == "--dir") {
        dir = value();
      } else if (arg == "-h" || arg == "--help") {
        std::cout << "usage: bench_store_ingest [--rows N] [--batch B,...] [--processes P,...] "
                     "[--dir DIR]\n";
        return 0;
      } else {
        throw std::invalid_argument(fmt::format(
            "unknown argument '{}'; expected --rows, --batch, --processes or --dir", arg));
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
  const bool temporary = dir.empty();
  if (temporary) dir = fs::temp_directory_path() / fmt::format("tlab_bench_ingest_{}", getpid());
  fs::create_directories(dir);

  std::cout << fmt::format(
      "metric ingest via Store::write_metrics: {} rows per configuration, "
      "SQLite {}, {} hardware threads, database in '{}'\n\n",
      rows, sqlite3_libversion(), std::thread::hardware_concurrency(), dir.string());
  std::cout << "| processes | rows per batch | rows | wall s | rows/s (wall) | CPU s | rows per "
               "CPU s |\n";
  std::cout << "|---:|---:|---:|---:|---:|---:|---:|\n";
  int code = 0;
  for (const int64_t p : processes) {
    for (const int64_t batch : batches) {
      try {
        const Result r = measure(dir, p, batch, rows);
        std::cout << fmt::format("| {} | {} | {} | {:.2f} | {:.0f} | {:.2f} | {:.0f} |\n",
                                 r.processes, r.batch, r.rows, r.seconds,
                                 static_cast<double>(r.rows) / r.seconds, r.cpu_seconds,
                                 static_cast<double>(r.rows) / r.cpu_seconds)
                  << std::flush;
      } catch (const std::exception& e) {
        std::cerr << fmt::format("error: {} processes, batches of {}: {}\n", p, batch, e.what());
        code = 1;
      }
    }
  }
  if (temporary) fs::remove_all(dir);
  return code;
}
