#pragma once
// Command-line overrides: the grammar Hydra users know, parsed into typed values and sweeps.
//
//   key=value        change an existing key        (Hydra: key=value)
//   +key=value       add a key that must not exist (Hydra: +key=value)
//   ++key=value      add or change                 (Hydra: ++key=value)
//   ~key, ~key=value delete (the second only if the current value equals value)
//   group=option     choose a config group option; group@package=option places it elsewhere
//
// Values: null, true/false, integers (1_000), floats (1e-3, .5, inf, nan), quoted strings
// ('a b', "x"; backslashes escape only a quote), unquoted strings (may hold spaces inside,
// ${...} interpolations and Hydra's escapes a\,b), lists [1, 2], tables {a: 1, b = 2}. Sweeps
// (multirun only): a,b,c, choice(a,b), range([start,] stop[, step]), glob(pattern[,
// exclude=pattern]), zip(<sweep>); distributions for sampled sweeps ([sweep] samples = N):
// interval(low, high), tag(log, interval(...)), int(interval(...)); sort(...[, reverse=true]) and
// shuffle(...) on values, lists and sweeps; casts int(), float(), str(), bool() of a value, a
// sweep, or several values. See docs/configuration.md for the full grammar next to Hydra's.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/node.hpp"

namespace tlab::cfg {

/// A sweep over several values of one key, or a distribution to draw them from.
struct Sweep {
  enum class Fn { Choice, Range, Glob, Interval };
  Fn fn = Fn::Choice;
  std::vector<Node> values;  ///< Choice: the values (Null allowed).
  /// Range: numbers; step Int 1 when not given. Interval: the bounds, low < high (floats, or
  /// ints after int(), both included).
  Node start, stop, step;
  std::vector<std::string> include, exclude;  ///< Glob: patterns over group option names.
  bool zip = false;  ///< Inside zip(...): varies together with the other zipped keys.
  /// shuffle(...): the values in a pseudo-random order seeded by the override's text (the same
  /// order every time, so a resumed sweep sees it again; Hydra draws a new one each time).
  bool shuffle = false;
  /// tag(...)'s labels, in order (Hydra's sweeper labels). "log" on an interval draws it
  /// log-uniformly; grid sweeps ignore them.
  std::vector<std::string> tags;
  Origin origin;  ///< Where the sweep expression starts.

  /// An interval drawn log-uniformly (tagged "log").
  bool log() const;
  /// The sweep written back in override syntax: "tag(log, interval(0.0001, 0.1))",
  /// "int(interval(1, 8))", "choice(a, b)", "range(1, 5)". What the database records as a
  /// sampled value's distribution.
  std::string text() const;
};

struct Override {
  enum class Op { Set, Add, ForceAdd, Delete };
  Op op = Op::Set;
  std::string key;      ///< Dotted key or group path, e.g. "train.lr", "dataset".
  std::string package;  ///< After '@' in "group@package=option"; "" when absent, or empty (Hydra's
                        ///< global package, as _global_).
  bool has_package = false;
  bool has_value = false;  ///< False only for "~key".
  Node value;              ///< The value when has_value and not a sweep (Null for `null`).
  std::optional<Sweep> sweep;
  std::string text;     ///< The whole argument as given.
  Origin origin;        ///< The override, at character 1.
  Origin key_origin;    ///< The key's first character.
  Origin value_origin;  ///< The value's first character.
};

/// Parses one command-line override. Throws ConfigError located in the text: "override
/// 'train.lr=[1,2' at character 14: expected ',' or ']'" followed by the text and a caret line.
/// A sweep (`a,b`, choice, range, glob, zip) is accepted here; the caller refuses it outside
/// multirun.
Override parse_override(std::string_view text);

/// Parses a value on its own (the right-hand side of an override), e.g. for sweep-table strings
/// and typed environment variables. `where` is used as the override text in messages.
/// Returns either a single value or a sweep.
struct ParsedValue {
  Node value;
  std::optional<Sweep> sweep;
};
ParsedValue parse_value(std::string_view text, const std::string& where);

/// The values of a Choice or Range sweep, in order, shuffled when `shuffle` (Glob needs the
/// group's options: use glob_options; an Interval is drawn from, not listed: an error saying
/// to give [sweep] samples). Range: ints when start, stop and step are all ints, else
/// floats computed as start + i*step and rounded to 15 significant digits; empty ranges, a zero
/// step and more than 100000 values are errors located at the sweep.
std::vector<Node> sweep_values(const Sweep& sweep);

/// Options (sorted) matching a Glob sweep's include patterns and none of its exclude patterns.
std::vector<std::string> glob_options(const Sweep& sweep, const std::vector<std::string>& options);

/// Shell-style match of `*`, `?`, `[...]` and `\` escapes: fnmatch(3) without flags, so byte by
/// byte (tlab runs in the C locale): `?` and `[...]` match one byte of a non-ASCII name.
bool glob_match(std::string_view pattern, std::string_view name);

/// A value written back in override syntax, parseable by parse_override to an equal Node
/// (strings quoted only when they would otherwise parse as something else).
std::string format_value(const Node& value);

}  // namespace tlab::cfg
