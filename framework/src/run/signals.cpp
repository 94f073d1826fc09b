#include "run/signals.hpp"

#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "errors.hpp"  // framework/cli: the exit codes
#include "util.hpp"

namespace tlab {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;
volatile std::sig_atomic_t g_second_signal_ends = 1;

void on_stop_signal(int sig) {
  if (g_stop_signal != 0 && g_second_signal_ends) {  // second signal: the user insists
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
  g_stop_signal = sig;
}

}  // namespace

void install_stop_handlers(bool second_signal_ends) {
  g_stop_signal = 0;
  g_second_signal_ends = second_signal_ends;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);  // a closed terminal or ssh session stops runs cleanly too
}

int stop_signal() { return g_stop_signal; }

void throw_if_stopped(const std::string& where) {
  if (int sig = g_stop_signal)
    throw InterruptedError(fmt::format("stopped by signal {} ({}) {}", sig,
                                       sig == SIGINT ? "SIGINT, Ctrl-C" : strsignal(sig), where));
}

namespace {

char oom_line[512];
std::size_t oom_line_size = 0;
char crash_stack[64 * 1024];

void on_crash(int sig) {
  // Async-signal-safe only. Is there 32 MiB of address space left? If not, memory ran out.
  constexpr std::size_t kProbe = std::size_t{32} << 20;
  void* probe =
      ::mmap(nullptr, kProbe, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (probe == MAP_FAILED) {
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, oom_line, oom_line_size);
    ::_exit(cli::kOutOfMemory);
  }
  ::munmap(probe, kProbe);
  std::signal(sig, SIG_DFL);  // a crash as before: the supervisor records the signal
  ::raise(sig);
}

}  // namespace

void install_out_of_memory_crash_handler() {
  rlimit limit{};
  if (getrlimit(RLIMIT_AS, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return;
  const std::string line = fmt::format(
      "error: out of memory: a library crashed when an allocation failed{}\n", memory_limit_hint());
  oom_line_size = std::min(line.size(), sizeof oom_line);
  std::memcpy(oom_line, line.data(), oom_line_size);
  stack_t stack{};
  stack.ss_sp = crash_stack;
  stack.ss_size = sizeof crash_stack;
  ::sigaltstack(&stack, nullptr);  // a crash from a stack overflow still gets a stack
  struct sigaction action {};
  action.sa_handler = on_crash;
  action.sa_flags = SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGSEGV, &action, nullptr);
  ::sigaction(SIGBUS, &action, nullptr);
}

}  // namespace tlab
