#include "run/signals.hpp"

#include <csignal>
#include <cstring>

#include <fmt/format.h>

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

}  // namespace tlab
