#include "run/optuna.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include "run/optuna_bridge_script.hpp"  // generated: kOptunaBridgeScript
#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab {
namespace {

constexpr const char* kInstallHint =
    "install it with `apt-get install python3-optuna` (tools/setup.sh does), or point "
    "TLAB_PYTHON at a Python that has Optuna";

}  // namespace

std::string OptunaBridge::default_python() {
  if (const char* p = std::getenv("TLAB_PYTHON"); p && *p) return p;
  std::error_code ec;
  if (fs::exists("/usr/bin/python3", ec)) return "/usr/bin/python3";
  return "python3";
}

OptunaBridge::OptunaBridge(const std::string& python) : python_(python) {
  // A bridge that died must fail a request with a message, not kill tlab by SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0)
    throw OptunaError(
        fmt::format("cannot start the Optuna sweeper: pipe: {}", system_error_text(errno)));
  if (::pipe2(out, O_CLOEXEC) != 0) {
    ::close(in[0]);
    ::close(in[1]);
    throw OptunaError(
        fmt::format("cannot start the Optuna sweeper: pipe: {}", system_error_text(errno)));
  }
  std::vector<std::string> args{python_, "-c", kOptunaBridgeScript};
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) {
    for (int fd : {in[0], in[1], out[0], out[1]}) ::close(fd);
    throw OptunaError(
        fmt::format("cannot start the Optuna sweeper: fork: {}", system_error_text(errno)));
  }
  if (pid_ == 0) {
    ::setpgid(0, 0);  // Ctrl-C stops tlab's sweep; tlab then closes the study cleanly
    ::dup2(in[0], STDIN_FILENO);
    ::dup2(out[1], STDOUT_FILENO);
    ::execvp(cargs[0], cargs.data());
    const std::string failed = fmt::format("exec {}: {}\n", python_, std::strerror(errno));
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, failed.data(), failed.size());
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  to_ = in[1];
  from_ = out[0];
  // The first answer says whether Optuna imports: {"ok": true} to a no-op, or the import error.
  try {
    request({{"op", "ping"}});
  } catch (const OptunaError& e) {
    const std::string what = e.what();
    if (what.find("unknown request 'ping'") == std::string::npos) throw;
  }
}

OptunaBridge::~OptunaBridge() {
  if (to_ >= 0) {
    const std::string close = "{\"op\": \"close\"}\n";
    [[maybe_unused]] auto n = ::write(to_, close.data(), close.size());
    ::close(to_);
  }
  if (from_ >= 0) {  // read its answer to the end, so that it never writes to a closed pipe
    char buf[256];
    for (;;) {
      const ssize_t n = ::read(from_, buf, sizeof buf);
      if (n > 0 || (n < 0 && errno == EINTR)) continue;
      break;
    }
    ::close(from_);
  }
  if (pid_ > 0) {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

std::string OptunaBridge::read_line() {
  while (true) {
    const auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    char buf[4096];
    const ssize_t n = ::read(from_, buf, sizeof buf);
    if (n > 0) {
      buffer_.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // Ended: how, for the message.
    int status = 0;
    std::string how = "ended";
    if (pid_ > 0 && ::waitpid(pid_, &status, 0) == pid_) {
      pid_ = -1;
      if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        throw OptunaError(fmt::format(
            "cannot start the Optuna sweeper: '{}' could not be executed (see the line above); "
            "the sweeper runs Optuna in Python: install Debian's python3 and python3-optuna, or "
            "set TLAB_PYTHON to a Python that has Optuna",
            python_));
      how = WIFEXITED(status) ? fmt::format("exited with code {}", WEXITSTATUS(status))
                              : fmt::format("was killed by signal {}", WTERMSIG(status));
    }
    throw OptunaError(
        fmt::format("the Optuna sweeper ({} running tlab's bridge) {} without an "
                    "answer; its error, if any, is printed above",
                    python_, how));
  }
}

nlohmann::json OptunaBridge::request(const nlohmann::json& r) {
  const std::string line = r.dump() + "\n";
  std::size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(to_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the bridge is gone: read_line says how
    done += static_cast<std::size_t>(n);
  }
  const std::string text = read_line();
  nlohmann::json answer = nlohmann::json::parse(text, nullptr, false);
  if (!answer.is_object())
    throw OptunaError(fmt::format("the Optuna sweeper answered '{}', not a JSON object", text));
  if (!answer.value("ok", false)) {
    const std::string error = answer.value("error", std::string("no error text"));
    if (answer.value("missing", false))
      throw OptunaError(
          fmt::format("the Optuna sweeper needs Optuna, and {}: {}", error, kInstallHint));
    throw OptunaError(fmt::format("the Optuna sweeper failed to {}: {}",
                                  r.value("op", std::string("answer")), error));
  }
  return answer;
}

std::string optuna_storage_url(const std::string& storage) {
  if (storage.find("://") != std::string::npos) return storage;
  return "sqlite:///" + fs::absolute(storage).lexically_normal().string();
}

}  // namespace tlab
