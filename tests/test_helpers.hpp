#pragma once
// Shared by the test files: temporary folders, files and error capture.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace tlab::test {

/// What a shell command did: its exit code (-1 if a signal ended it) and stdout + stderr.
struct Result {
  int code = -1;
  std::string out;
};

/// Runs `cmd` with /bin/sh, stderr merged into stdout.
inline Result shell(const std::string& cmd) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  Result r;
  if (!p) return r;
  char buf[4096];
  while (std::size_t n = fread(buf, 1, sizeof buf, p)) r.out.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

/// A fresh, empty folder under the system temp dir, unique to this process and `name`.
inline std::filesystem::path temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() /
           ("tlab_test_" + name + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

/// Writes `text` to `path` and returns the path.
inline std::filesystem::path write_file(const std::filesystem::path& path,
                                        const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

/// The bytes of the file at `path` ("" if it cannot be read).
inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// The message of the `E` thrown by `f` ("" if none was thrown).
template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

/// An Optuna study as Optuna itself reads it (Debian's Python with python3-optuna), as JSON:
/// {"direction", "attrs", "trials": [{"number", "state", "value", "params", "attrs"}]}; the
/// output of Python (an error) otherwise.
inline std::string optuna_study(const std::string& storage, const std::string& study) {
  const std::string script =
      "import json, sys, optuna\n"
      "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
      "s = optuna.load_study(study_name=sys.argv[2], storage=sys.argv[1])\n"
      "print(json.dumps({'direction': s.direction.name, 'attrs': s.user_attrs, 'trials': "
      "[{'number': t.number, 'state': t.state.name, 'value': t.value, 'params': t.params, "
      "'attrs': t.user_attrs} for t in s.trials]}))\n";
  const auto dir = temp_dir("optuna_study");
  write_file(dir / "read.py", script);
  const Result r = shell("/usr/bin/python3 '" + (dir / "read.py").string() + "' '" + storage +
                         "' '" + study + "'");
  std::filesystem::remove_all(dir);
  return r.out;
}

}  // namespace tlab::test
