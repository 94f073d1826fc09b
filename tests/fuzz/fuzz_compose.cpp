// libFuzzer target for composition: an experiment's TOML text, then (after a line "---") up to
// 8 command-line overrides, one per line, composed in multirun mode against the fixture config
// groups (tests/fixtures/configs), each job resolved and printed as TOML, YAML and JSON.
//
// A ConfigError is the expected answer to bad input; any other exception, a crash, a sanitizer
// report, a leak or a hang is a bug. Checked on every job: the TOML printed for a resolved
// config reads back as the same tree (what `tlab config` prints must be a valid experiment),
// unless it is larger than a config file may be.
//
// Composition searches ./experiments when it exists: run the fuzzer from a folder without one
// (tools/fuzz.sh and the ctest replays do) so that only the fixture groups take part.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "config/compose.hpp"
#include "config/node.hpp"

#ifndef TLAB_CONFIG_FIXTURES
#error "TLAB_CONFIG_FIXTURES must name tests/fixtures/configs"
#endif

namespace {

constexpr std::size_t kMaxOverrides = 8;
/// Jobs are checked until their printed configs add up to this much: an input that makes 64
/// large jobs stays fast enough to be fuzzed.
constexpr std::size_t kMaxPrintedBytes = 16u << 20;

/// Splits the input at its first line "---": (experiment text, override lines).
std::pair<std::string, std::vector<std::string>> split_input(std::string_view in) {
  std::string_view text = in, rest;
  bool found = false;
  for (std::size_t start = 0; start <= in.size();) {
    std::size_t end = in.find('\n', start);
    std::string_view line =
        in.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (line == "---" || line == "---\r") {
      text = in.substr(0, start);
      rest = end == std::string_view::npos ? std::string_view() : in.substr(end + 1);
      found = true;
      break;
    }
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  std::vector<std::string> overrides;
  if (!found) return {std::string(text), overrides};
  for (std::size_t start = 0; start < rest.size() && overrides.size() < kMaxOverrides;) {
    std::size_t end = rest.find('\n', start);
    if (end == std::string_view::npos) end = rest.size();
    std::string_view line = rest.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) overrides.emplace_back(line);
    start = end + 1;
  }
  return {std::string(text), overrides};
}

[[noreturn]] void bug(const std::string& what, const std::string& detail) {
  constexpr std::size_t kShown = 8000;  // a printed config may be megabytes long
  std::string shown = detail.size() > kShown ? detail.substr(0, kShown) + "\n[...]" : detail;
  std::fprintf(stderr, "fuzz_compose: %s\n%s\n", what.c_str(), shown.c_str());
  std::fflush(stderr);
  std::abort();
}

/// Resolves and prints one job's config; returns the size of its TOML text.
std::size_t check_job(const tlab::cfg::Node& config) {
  using tlab::cfg::Node;
  Node resolved;
  try {
    resolved = tlab::cfg::resolve(config);
  } catch (const tlab::ConfigError&) {
    return 0;
  }
  std::string toml = tlab::cfg::format_tree(resolved, "toml");
  // Interpolation may legitimately produce more than a config file may hold. Such a config is
  // not printed again as YAML and JSON: under the sanitizers, printing megabytes three times
  // took 8 s of libFuzzer's 10 s per input (corpus regress_interp_doubling_string, 16 MB), and
  // more on a loaded machine; the printers meet the same strings in smaller configs.
  if (toml.size() > tlab::cfg::kMaxConfigFileBytes) return toml.size();
  (void)tlab::cfg::format_tree(resolved, "yaml");
  (void)tlab::cfg::format_tree(resolved, "json");
  Node again;
  try {
    again = tlab::cfg::parse_text(toml, "printed.toml");
  } catch (const tlab::ConfigError& e) {
    bug("the TOML printed for a resolved config does not parse", e.what() + ("\n" + toml));
  }
  if (again != resolved)
    bug("the TOML printed for a resolved config reads back as a different tree",
        toml + "\nread back as\n" + tlab::cfg::format_tree(again, "json") + "\nexpected\n" +
            tlab::cfg::format_tree(resolved, "json"));
  return toml.size();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  auto [text, overrides] = split_input(std::string_view(reinterpret_cast<const char*>(data), size));
  tlab::cfg::ComposeOptions opts;
  opts.primary_text = std::move(text);
  opts.multirun = true;
  opts.max_runs = 64;
  opts.config_dirs = {TLAB_CONFIG_FIXTURES};
  tlab::cfg::Composition c;
  try {
    c = tlab::cfg::compose("/nonexistent/fuzz/exp.toml", overrides, opts);
  } catch (const tlab::ConfigError&) {
    return 0;
  }
  (void)tlab::cfg::format_tree(c.config, "toml");
  std::size_t printed = 0;
  for (const auto& job : c.jobs)
    if ((printed += check_job(job.config)) > kMaxPrintedBytes) break;
  return 0;
}
