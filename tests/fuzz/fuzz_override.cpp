// libFuzzer target for the command-line override grammar (config/override.hpp): the input is
// one override, parsed with parse_override and, on its own, with parse_value.
//
// A ConfigError is the expected answer to bad input; any other exception, a crash, a sanitizer
// report, a leak or a hang is a bug. Checked whenever the input parses:
//  - format_value writes each value (or each value of a choice) so that it reads back as the
//    same value, and writing that again gives the same text;
//  - the override rebuilt from its parts (op, key, package, formatted value) parses to the same
//    override;
//  - every origin points into the text, at a character that exists;
//  - sweep_values on a choice or range returns or throws ConfigError; glob_options returns a
//    sorted subset of the options it was given;
//  - every error message names the override and ends with a caret line;
//  - the input itself, as a string and as a table key, survives format_value and parse_value.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "config/override.hpp"

namespace {

using tlab::ConfigError;
using tlab::cfg::format_value;
using tlab::cfg::Node;
using tlab::cfg::Override;
using tlab::cfg::Sweep;

[[noreturn]] void bug(const std::string& what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_override: %s\n%s\n", what.c_str(), detail.c_str());
  std::fflush(stderr);
  std::abort();
}

void check_error(const ConfigError& e, const std::string& text) {
  std::string_view m = e.what();
  if (m.rfind("override '", 0) != 0 || m.find("\n    ") == std::string_view::npos ||
      m.back() != '^')
    bug("an error message lacks its location or caret line", std::string(m) + "\ninput: " + text);
}

std::size_t characters(std::string_view s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

void check_origin(const tlab::cfg::Origin& o, const std::string& text) {
  if (o.override != text || o.position < 1 || o.position > characters(text) + 1)
    bug("an origin does not point into the override", "origin: " + o.where() + "\ninput: " + text);
}

void check_origins(const Node& v, const std::string& text) {
  check_origin(v.origin, text);
  if (v.is_list())
    for (const auto& e : v.items()) check_origins(e, text);
  if (v.is_table())
    for (std::size_t i = 0; i < v.size(); ++i) check_origins(v.value_at(i), text);
}

// format_value(v) reads back as v, and is a fixed point.
void check_round_trip(const Node& v, const std::string& text) {
  std::string written = format_value(v);
  tlab::cfg::ParsedValue back;
  try {
    back = tlab::cfg::parse_value(written, "formatted");
  } catch (const ConfigError& e) {
    bug("format_value wrote text that does not parse",
        "written: " + written + "\nerror: " + e.what() + "\ninput: " + text);
  }
  if (back.sweep || back.value != v)
    bug("format_value wrote text that reads back as another value",
        "written: " + written + "\ninput: " + text);
  if (format_value(back.value) != written)
    bug("format_value is not a fixed point", "written: " + written + "\ninput: " + text);
}

void check_sweep(const Sweep& s, const std::string& text) {
  check_origin(s.origin, text);
  for (const auto& v : s.values) {
    check_origins(v, text);
    check_round_trip(v, text);
  }
  if (s.fn == Sweep::Fn::Glob) {
    static const std::vector<std::string> options = {"a", "ab",  "b", "digits", "dann",
                                                     "é", "[x]", "1", "*"};
    auto picked = tlab::cfg::glob_options(s, options);
    if (!std::is_sorted(picked.begin(), picked.end())) bug("glob_options is not sorted", text);
    for (const auto& p : picked)
      if (std::find(options.begin(), options.end(), p) == options.end())
        bug("glob_options invented an option", p + "\ninput: " + text);
    return;
  }
  try {
    auto values = tlab::cfg::sweep_values(s);
    if (values.empty()) bug("sweep_values returned no values", text);
    if (s.fn == Sweep::Fn::Range)
      for (const auto& v : values)
        if (!v.is_number()) bug("a range produced a value that is not a number", text);
  } catch (const ConfigError& e) {
    check_error(e, text);
  }
}

// True for text an override may hold: valid UTF-8 (no overlong forms, surrogates or code points
// past U+10FFFF) without control characters other than tab.
bool is_override_text(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if ((c < 0x20 && c != '\t') || c == 0x7F) return false;
      ++i;
      continue;
    }
    std::size_t len = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    uint32_t cp = c & (0x7F >> len);
    for (std::size_t k = 1; k < len; ++k) {
      auto d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 2) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    static const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

std::string rebuilt(const Override& o) {
  static const char* prefixes[] = {"", "+", "++", "~"};
  std::string out = prefixes[static_cast<int>(o.op)] + o.key;
  if (o.has_package) out += "@" + o.package;
  if (o.has_value) out += "=" + format_value(o.value);
  return out;
}

void check_override(const Override& o, const std::string& text) {
  check_origin(o.origin, text);
  check_origin(o.key_origin, text);
  if (o.has_value) check_origin(o.value_origin, text);
  // An empty package (group@=option) is Hydra's global package; an empty key is never valid.
  if (o.key.empty()) bug("an override parsed with an empty key", text);
  if (o.sweep) {
    check_sweep(*o.sweep, text);
    return;
  }
  if (o.has_value) {
    check_origins(o.value, text);
    check_round_trip(o.value, text);
  }
  std::string again_text = rebuilt(o);
  Override again;
  try {
    again = tlab::cfg::parse_override(again_text);
  } catch (const ConfigError& e) {
    bug("the override rebuilt from its parts does not parse",
        again_text + "\nerror: " + e.what() + "\ninput: " + text);
  }
  if (again.op != o.op || again.key != o.key || again.package != o.package ||
      again.has_package != o.has_package || again.has_value != o.has_value ||
      again.sweep.has_value() || again.value != o.value)
    bug("the override rebuilt from its parts parses differently", again_text + "\ninput: " + text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  // The input as a string, and as a table key: format_value must quote whatever would read back
  // as something else ("null", "1e3", "a,b", "it's", ...).
  if (is_override_text(text)) {
    check_round_trip(Node::string(text), text);
    if (!text.empty()) {
      Node table = Node::table();
      table.set(text, Node::integer(1));
      check_round_trip(table, text);
    }
  }
  try {
    check_override(tlab::cfg::parse_override(text), text);
  } catch (const ConfigError& e) {
    check_error(e, text);
  }
  try {
    auto v = tlab::cfg::parse_value(text, text);
    if (v.sweep)
      check_sweep(*v.sweep, text);
    else
      check_round_trip(v.value, text);
  } catch (const ConfigError& e) {
    check_error(e, text);
  }
  return 0;
}
