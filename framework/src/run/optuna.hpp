#pragma once
// The Optuna sweeper's bridge (`tlab run --sweeper optuna`): Optuna runs in Debian's Python
// (python3-optuna), in a child process that speaks JSON lines with tlab (the script is
// src/run/optuna_bridge.py, compiled into tlab). tlab asks it for trials, runs them as runs of
// the sweep, and tells it each trial's objective; the study lives in Optuna's own storage.

#include <sys/types.h>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace tlab {

/// The bridge could not start, Optuna is missing, or a request failed; the message says which
/// and how to fix it.
class OptunaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class OptunaBridge {
 public:
  /// Starts `python` (default_python()) on the bridge script and checks that Optuna imports.
  /// Throws OptunaError.
  explicit OptunaBridge(const std::string& python = default_python());
  ~OptunaBridge();
  OptunaBridge(const OptunaBridge&) = delete;
  OptunaBridge& operator=(const OptunaBridge&) = delete;

  /// Sends one request ({"op": ...}) and returns the answer; OptunaError with the bridge's
  /// error text when it answers {"ok": false}, or when it died.
  nlohmann::json request(const nlohmann::json& r);

  /// $TLAB_PYTHON; else /usr/bin/python3 (Debian's, where python3-optuna installs) when it
  /// exists; else python3 on PATH.
  static std::string default_python();

 private:
  std::string read_line();
  std::string python_;
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  std::string buffer_;
};

/// The Optuna storage URL for `storage`: an URL ("sqlite:///...", "postgresql://...") as is, a
/// file path as an SQLite URL of its absolute path.
std::string optuna_storage_url(const std::string& storage);

}  // namespace tlab
