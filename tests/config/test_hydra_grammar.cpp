// Hydra's own override-parser tests as the specification of tlab's override grammar (issue 25).
//
// hydra/hydra_cases.inc holds every input of Hydra's tests/test_overrides_parser.py that parses
// a value, element, primitive, list, dict, function call, key or whole override, with Hydra's
// result as hydra/generate.py computed it by running Hydra itself. Each case must give Hydra's
// result in tlab, or be listed in kDifferences with tlab's result and the reason, which
// docs/configuration.md ("Differences from Hydra") gives too.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "config/override.hpp"

using tlab::ConfigError;
using tlab::cfg::format_value;
using tlab::cfg::Node;
using tlab::cfg::Override;
using tlab::cfg::parse_override;
using tlab::cfg::Sweep;
using tlab::cfg::sweep_values;

namespace {

struct HydraCase {
  const char* test;   // the Hydra test function it comes from
  const char* text;   // the override
  const char* hydra;  // what Hydra makes of it
};

const HydraCase kCases[] = {
#include "hydra/hydra_cases.inc"
};

struct Difference {
  const char* tlab;    // tlab's result
  const char* reason;  // why it differs on purpose
};

// Deliberate differences, by override text.
const std::map<std::string, Difference> kDifferences = {
#include "hydra/differences.inc"
};

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) out += (i ? ", " : "") + parts[i];
  return out;
}

// The override in generate.py's notation.
std::string describe(const std::string& text) {
  Override o;
  try {
    o = parse_override(text);
  } catch (const ConfigError&) {
    return "error";
  }
  static const char* prefixes[] = {"", "+", "++", "~"};
  std::string out = prefixes[static_cast<int>(o.op)] + o.key;
  if (o.has_package) out += "@" + o.package;
  if (!o.has_value) return out;
  if (!o.sweep) return out + "=" + format_value(o.value) + " (" + o.value.type_name() + ")";
  if (o.sweep->fn == Sweep::Fn::Glob) return out + "=Glob";
  if (o.sweep->fn == Sweep::Fn::Interval) return out + "=IntervalSweep";
  std::vector<std::string> values;
  try {
    for (const Node& v : sweep_values(*o.sweep)) values.push_back(format_value(v));
  } catch (const ConfigError&) {
    return "error";
  }
  if (o.sweep->shuffle) {
    std::sort(values.begin(), values.end());
    return out + "=shuffled(" + join(values) + ")";
  }
  return out + "=sweep(" + join(values) + ")";
}

TEST(HydraGrammar, EveryCaseGivesHydrasResultOrAListedDifference) {
  std::size_t same = 0, different = 0;
  for (const HydraCase& c : kCases) {
    const std::string ours = describe(c.text);
    const auto d = kDifferences.find(c.text);
    if (d == kDifferences.end()) {
      EXPECT_EQ(ours, c.hydra) << c.test << ": " << c.text;
      if (ours != c.hydra && std::getenv("TLAB_HYDRA_DIFF"))
        std::printf("DIFF\t%s\t%s\t%s\n", c.text, ours.c_str(), c.hydra);
      ++same;
    } else {
      EXPECT_NE(std::string(d->second.tlab), c.hydra) << c.text << ": no longer differs";
      EXPECT_EQ(ours, d->second.tlab)
          << c.test << ": " << c.text << " (" << d->second.reason << ")";
      ++different;
    }
  }
  // Every listed difference is a case of the table.
  for (const auto& [text, d] : kDifferences)
    EXPECT_TRUE(std::any_of(std::begin(kCases), std::end(kCases), [&](const HydraCase& c) {
      return text == c.text;
    })) << text;
  EXPECT_GE(sizeof kCases / sizeof kCases[0], 400u);
  RecordProperty("same", static_cast<int>(same));
  RecordProperty("different", static_cast<int>(different));
  std::printf("Hydra's cases: %zu give Hydra's result, %zu differ on purpose\n", same, different);
}

}  // namespace
