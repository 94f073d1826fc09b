// One file (~1,200 lines) because it is one recursive-descent parser: the lexer, the grammar's
// productions, the sweep functions (range, choice, glob, zip, interval) and the error messages
// share the cursor and position helpers; split, each part would need the others' internals.
#include "config/override.hpp"

// A hand-written recursive-descent parser for Hydra's override grammar (no ANTLR runtime to
// ship, and every error can say where it is and what would fix it).
//
// Positions in messages and origins are 1-based characters, counting UTF-8 code points (what a
// user sees in the terminal), not bytes. The parser itself works on bytes; `chars_` maps them.

#include <fnmatch.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "util.hpp"

namespace tlab::cfg {
namespace {

constexpr std::size_t kMaxSweepValues = 100000;
// Each value's Origin holds its own copy of the override text (Origin is shared with config
// files, whose nodes only name the file). A long override holding many values would multiply
// that copy, so the memory one override's values take is capped; real overrides stay far below
// it (a 300-character override still fits a 100000-value range).
constexpr std::size_t kMaxValueBytes = 64u << 20;
constexpr std::size_t kValueOverhead = sizeof(Node);

constexpr const char* kFunctionList =
    "choice, range, interval, glob, zip, sort, shuffle, tag, int, float, str, bool";
const std::vector<std::string> kFunctions = {"choice", "range", "interval", "glob",
                                             "zip",    "sort",  "shuffle",  "tag",
                                             "int",    "float", "str",      "bool"};

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_alnum(char c) { return is_alpha(c) || is_digit(c); }
bool is_ws(char c) { return c == ' ' || c == '\t'; }
bool is_key_char(char c) { return is_alnum(c) || c == '_' || c == '-'; }
bool is_ident_start(char c) { return is_alpha(c) || c == '_'; }
bool is_ident_char(char c) { return is_alnum(c) || c == '_'; }
bool is_unquoted(char c) {
  return static_cast<unsigned char>(c) >= 0x80 || is_alnum(c) ||
         (c != '\0' && std::strchr("_-+/.:\\*?~%^&!<>#@$|", c) != nullptr);
}
// Characters a backslash escapes in an unquoted value (Hydra's ESC token).
bool is_escapable(char c) { return c != '\0' && std::strchr("\\()[]{}:=, \t", c) != nullptr; }
bool is_identifier(std::string_view s) {
  if (s.empty() || !is_ident_start(s[0])) return false;
  return std::all_of(s.begin(), s.end(), is_ident_char);
}
bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// The text with each invalid byte and control character replaced by '?' (one character each,
// so that positions still line up), for messages about exactly those bytes.
std::string printable(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t len = utf8_sequence_length(s, i);
    auto c = static_cast<unsigned char>(s[i]);
    if (len == 0 || c < 0x20 || c == 0x7F) {
      out += '?';
      ++i;
    } else {
      out.append(s.substr(i, len));
      i += len;
    }
  }
  return out;
}

// "\n    TEXT\n    ^" with the caret under character `position` (1-based). Long texts are cut
// to a window around the position.
std::string caret_lines(std::string_view text, std::size_t position) {
  constexpr std::size_t kWidth = 100, kBefore = 60;
  std::vector<std::size_t> starts;  // byte offset of each character
  for (std::size_t i = 0; i < text.size();) {
    starts.push_back(i);
    std::size_t len = utf8_sequence_length(text, i);
    i += len == 0 ? 1 : len;
  }
  std::size_t count = starts.size();
  position = std::max<std::size_t>(1, std::min(position, count + 1));
  std::size_t first = 1, last = count;
  if (count > kWidth) {
    first = position > kBefore ? position - kBefore : 1;
    last = std::min(count, first + kWidth - 1);
  }
  std::string line = first > 1 ? "..." : "";
  std::size_t lead = line.size() + (position - first);
  if (first <= last) {
    std::size_t b = starts[first - 1];
    std::size_t e = last < count ? starts[last] : text.size();
    for (char c : text.substr(b, e - b)) line += c == '\t' ? ' ' : c;
  }
  if (last < count) line += "...";
  return "\n    " + line + "\n    " + std::string(lead, ' ') + "^";
}

[[noreturn]] void throw_at(const std::string& origin_text, std::string_view shown,
                           std::size_t position, const std::string& message) {
  // An Origin with an empty text counts as unknown; an empty override is still an override.
  std::string head = origin_text.empty()
                         ? fmt::format("override '' at character {}: {}", position, message)
                         : located(Origin::in_override(origin_text, position), message);
  throw ConfigError(head + caret_lines(shown, position));
}

// Fails at an origin, with the caret line when it is a place in an override.
[[noreturn]] void fail_at(const Origin& origin, const std::string& message) {
  if (origin.override.empty() || origin.position == 0 || origin.chain) fail(origin, message);
  throw_at(origin.override, origin.override, origin.position, message);
}

// ---------------------------------------------------------------------------------------------
// Numbers: Hydra's INT and FLOAT tokens, with '_' only between two digits (as Python's int()
// and float() accept them).

enum class NumKind { None, Int, Float };

std::size_t scan_digits(std::string_view s, std::size_t i) {
  if (i >= s.size() || !is_digit(s[i])) return i;
  ++i;
  while (i < s.size()) {
    if (is_digit(s[i]))
      ++i;
    else if (s[i] == '_' && i + 1 < s.size() && is_digit(s[i + 1]))
      i += 2;
    else
      break;
  }
  return i;
}

NumKind number_kind(std::string_view s) {
  std::size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  std::string_view body = s.substr(i);
  if (iequals(body, "inf") || iequals(body, "nan")) return NumKind::Float;
  std::size_t int_end = scan_digits(s, i);
  std::size_t j = int_end;
  bool point = false, fraction = false, exponent = false;
  if (j < s.size() && s[j] == '.') {
    point = true;
    std::size_t f = scan_digits(s, j + 1);
    fraction = f > j + 1;
    j = f;
  }
  if (int_end == i && !fraction) return NumKind::None;
  if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
    std::size_t k = j + 1;
    if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
    std::size_t e = scan_digits(s, k);
    if (e == k) return NumKind::None;
    j = e;
    exponent = true;
  }
  if (j != s.size()) return NumKind::None;
  if (point || exponent) return NumKind::Float;
  // As in Hydra (and Python), "007" is not an integer: it stays the string "007".
  if (s[i] == '0' && int_end - i > 1) return NumKind::None;
  return NumKind::Int;
}

// The token without '_' and without a leading '+' (std::from_chars takes neither).
std::string plain_number(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i)
    if (s[i] != '_' && !(i == 0 && s[i] == '+')) out += s[i];
  return out;
}

// False when the integer token does not fit in 64 bits.
bool to_int64(std::string_view token, int64_t& out) {
  std::string t = plain_number(token);
  auto r = std::from_chars(t.data(), t.data() + t.size(), out);
  return r.ec == std::errc() && r.ptr == t.data() + t.size();
}

// False when the number token overflows a double; underflow gives (signed) zero, as in Python.
bool to_double(std::string_view token, double& out) {
  std::string t = plain_number(token);
  bool negative = !t.empty() && t[0] == '-';
  std::string_view body = std::string_view(t).substr(negative ? 1 : 0);
  if (iequals(body, "inf") || iequals(body, "nan")) {
    out = iequals(body, "inf") ? HUGE_VAL : std::nan("");
    if (negative) out = -out;
    return true;
  }
  auto r = std::from_chars(t.data(), t.data() + t.size(), out);
  if (r.ec == std::errc()) return true;
  // Out of range: decide between overflow and underflow from the decimal magnitude.
  std::size_t e = body.find_first_of("eE");
  std::string_view mantissa = body.substr(0, e);
  long long exp10 = 0;
  if (e != std::string_view::npos) {
    std::size_t k = e + 1;
    bool neg_exp = k < body.size() && body[k] == '-';
    if (k < body.size() && (body[k] == '-' || body[k] == '+')) ++k;
    for (; k < body.size(); ++k) exp10 = std::min(exp10 * 10 + (body[k] - '0'), 1LL << 40);
    if (neg_exp) exp10 = -exp10;
  }
  std::size_t point = mantissa.find('.');
  std::size_t int_len = point == std::string_view::npos ? mantissa.size() : point;
  std::size_t nz = mantissa.find_first_not_of("0.");
  long long magnitude = 0;
  if (nz != std::string_view::npos)
    magnitude = nz < int_len ? static_cast<long long>(int_len - nz - 1)
                             : -static_cast<long long>(nz - int_len);
  if (magnitude + exp10 < 0) {
    out = negative ? -0.0 : 0.0;
    return true;
  }
  return false;
}

// Hydra's quoting: inside '...' only backslashes right before a quote (or the closing quote) are
// escapes, so a run of n backslashes there is written 2n times and a quote as \'; any other
// backslash stands for itself.
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (std::size_t i = 0; i < s.size();) {
    if (s[i] == '\\') {
      std::size_t n = 0;
      while (i + n < s.size() && s[i + n] == '\\') ++n;
      const bool before_quote = i + n == s.size() || s[i + n] == '\'';
      out.append(before_quote ? 2 * n : n, '\\');
      i += n;
      continue;
    }
    if (s[i] == '\'') out += '\\';
    out += s[i++];
  }
  return out + "'";
}

// ---------------------------------------------------------------------------------------------
// The parser

// Python's order for sort(): numbers (and booleans, as 0 and 1) among themselves, strings among
// themselves; anything else, or a mix, is refused as Hydra refuses it.
bool sort_before(const Node& a, const Node& b, const Origin& where) {
  auto numeric = [](const Node& v) { return v.is_number() || v.is_bool(); };
  auto number = [](const Node& v) {
    return v.is_bool() ? (v.as_bool() ? 1.0 : 0.0) : v.as_number();
  };
  if (numeric(a) && numeric(b)) {
    if (a.is_int() && b.is_int()) return a.as_int() < b.as_int();
    return number(a) < number(b);
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();
  fail_at(where, fmt::format("sort() cannot order {} and {}: it sorts numbers or strings, not a "
                             "mix of them",
                             a.describe(), b.describe()));
}

void sort_nodes(std::vector<Node>& values, bool reverse, const Origin& where) {
  std::stable_sort(values.begin(), values.end(), [&](const Node& a, const Node& b) {
    return reverse ? sort_before(b, a, where) : sort_before(a, b, where);
  });
}

// The same pseudo-random order for the same override text (std::shuffle's order differs between
// standard libraries, so the permutation is drawn here).
void shuffle_nodes(std::vector<Node>& values, const std::string& seed_text) {
  uint64_t state = std::stoull(hash_string("shuffle " + seed_text).substr(0, 16), nullptr, 16);
  auto next = [&state] {  // splitmix64
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  for (std::size_t i = values.size(); i > 1; --i) std::swap(values[i - 1], values[next() % i]);
}

struct Item {
  Node value;
  std::optional<Sweep> sweep;
  std::size_t at = 0;  // byte offset of its first character
};

struct Arg {
  std::string name;  // "" for a positional argument
  Item item;
  std::size_t at = 0;
};

enum class Cast { Int, Float, Str, Bool };

[[noreturn]] void cannot_cast(const std::string& name, const Node& v, const std::string& why) {
  fail_at(v.origin, fmt::format("{}() cannot convert {}: {}", name, v.describe(), why));
}

class Parser {
 public:
  // `text` is parsed; `origin_text` is what origins and messages name (the override itself, or
  // the caller's `where`).
  Parser(std::string_view text, std::string origin_text)
      : t_(text), origin_text_(std::move(origin_text)) {}

  void check_characters();
  Override parse_override();
  ParsedValue parse_value_from(std::size_t begin, Origin* value_origin);

 private:
  std::size_t pos(std::size_t byte) const { return chars_[std::min(byte, t_.size())]; }
  bool at_end() const { return p_ >= t_.size(); }
  char peek() const { return at_end() ? '\0' : t_[p_]; }
  void skip_ws() {
    while (!at_end() && is_ws(t_[p_])) ++p_;
  }

  [[noreturn]] void error(std::size_t byte, const std::string& message) const {
    throw_at(origin_text_, t_, pos(byte), message);
  }
  Origin origin_at(std::size_t byte) {
    charge(1);
    return Origin::in_override(origin_text_, pos(byte));
  }
  void charge(std::size_t values);
  std::string name_of(std::size_t byte) const;
  // The whole UTF-8 character that starts at `byte`.
  std::string_view char_at(std::size_t byte) const {
    return t_.substr(byte, std::max<std::size_t>(1, utf8_sequence_length(t_, byte)));
  }
  void check_depth(std::size_t depth, std::size_t at) const;
  void check_path(std::size_t begin, std::string_view path, const char* what, bool slash) const;
  void expect_value(const std::string& context, bool after_comma);
  [[noreturn]] void not_allowed(std::size_t byte) const;

  Item parse_element(std::size_t depth);
  Node parse_list(std::size_t depth);
  Node parse_table(std::size_t depth);
  std::string parse_quoted(bool as_value);
  Item parse_primitive(std::size_t depth);
  void skip_interpolation();
  Node typed(std::string_view token, std::size_t at);

  Item parse_call(const std::string& name, std::size_t name_at, std::size_t depth);
  Item make_choice(std::size_t at, std::vector<Arg>& args);
  Item make_range(std::size_t at, std::vector<Arg>& args);
  Item make_glob(std::size_t at, std::vector<Arg>& args);
  Item make_zip(std::size_t at, std::vector<Arg>& args);
  Item make_sort(std::size_t at, std::vector<Arg>& args, bool shuffle);
  Item make_tag(std::size_t at, std::vector<Arg>& args);
  Item make_interval(std::size_t at, std::vector<Arg>& args);
  void check_interval(const Sweep& s, std::size_t at);
  void check_log_interval(const Sweep& s, std::size_t at);
  Item make_cast(Cast kind, const std::string& name, std::size_t at, std::vector<Arg>& args);
  Node cast(Node v, Cast kind, const std::string& name);

  std::string_view t_;
  std::string origin_text_;
  std::vector<std::size_t> chars_;  // byte offset -> 1-based character position
  std::size_t p_ = 0;
  std::size_t values_ = 0;
};

void Parser::check_characters() {
  chars_.assign(t_.size() + 1, 0);
  std::size_t ch = 1;
  for (std::size_t i = 0; i < t_.size();) {
    std::size_t len = utf8_sequence_length(t_, i);
    auto c = static_cast<unsigned char>(t_[i]);
    std::string problem;
    if (len == 0)
      problem = fmt::format(
          "byte 0x{:02X} is not valid UTF-8; overrides are UTF-8 text (check the encoding of "
          "the terminal or script that passed it)",
          c);
    else if (c == '\n' || c == '\r')
      problem =
          "the override contains a line break; an override is a single line (put multi-line "
          "text in a config file)";
    else if ((c < 0x20 && c != '\t') || c == 0x7F)
      problem = fmt::format("control character U+{:04X} is not allowed in an override; remove it",
                            static_cast<unsigned>(c));
    if (!problem.empty()) {
      std::string shown = printable(t_);
      throw_at(origin_text_ == t_ ? shown : origin_text_, shown, ch, problem);
    }
    for (std::size_t k = 0; k < len; ++k) chars_[i + k] = ch;
    i += len;
    ++ch;
  }
  chars_[t_.size()] = ch;
}

void Parser::charge(std::size_t values) {
  values_ += values;
  if (values_ * (origin_text_.size() + kValueOverhead) > kMaxValueBytes)
    error(p_, fmt::format("the override is too large: {} characters holding more than {} values "
                          "(each value keeps a copy of the override for its messages); put "
                          "large values in a config file",
                          pos(t_.size()) - 1, values_ - 1));
}

// "'x'", "a space", ... for messages.
std::string Parser::name_of(std::size_t byte) const {
  if (byte >= t_.size()) return "the end of the override";
  char c = t_[byte];
  if (c == ' ') return "a space";
  if (c == '\t') return "a tab";
  if (c == '\'') return "\"'\"";
  return "'" + std::string(char_at(byte)) + "'";
}

void Parser::check_depth(std::size_t depth, std::size_t at) const {
  if (depth > kMaxNesting)
    error(at, fmt::format("the value is nested too deeply (more than {} levels of lists, tables "
                          "and function calls); flatten it or put it in a config file",
                          kMaxNesting));
}

// Dots (and slashes in group paths) separate non-empty names.
void Parser::check_path(std::size_t begin, std::string_view path, const char* what,
                        bool slash) const {
  auto sep = [&](char c) { return c == '.' || (slash && c == '/'); };
  for (std::size_t j = 0; j < path.size(); ++j) {
    if (!sep(path[j])) continue;
    if (j == 0)
      error(begin, fmt::format("a {} cannot start with '{}' (e.g. train.lr)", what, path[j]));
    if (j + 1 == path.size())
      error(begin + j, fmt::format("a {} cannot end with '{}' (e.g. train.lr)", what, path[j]));
    if (sep(path[j + 1]))
      error(begin + j + 1,
            fmt::format("empty name between '{}' and '{}' in the {} '{}'; remove one of them",
                        path[j], path[j + 1], what, path));
  }
}

// Before an element: refuse the end of the text, a ',' or a closing bracket with a message.
void Parser::expect_value(const std::string& context, bool after_comma) {
  if (!at_end() && !std::strchr(",)]}", t_[p_])) return;
  std::string hint;
  if (after_comma && !at_end() && t_[p_] != ',') hint = "; remove the trailing ','";
  if (after_comma && !at_end() && t_[p_] == ',') hint = "; remove the extra ','";
  if (!after_comma && !at_end() && t_[p_] == ',')
    hint = "; to use ',' in a string, quote the value (e.g. 'a,b')";
  error(p_, fmt::format("expected a value {}, found {}{}", context, name_of(p_), hint));
}

// A character that cannot appear at this place of an unquoted value.
void Parser::not_allowed(std::size_t byte) const {
  char c = t_[byte];
  if (c == '\'' || c == '"')
    error(byte, fmt::format("a quote can only start a value; to use {} inside a string, quote the "
                            "whole value with the other quote (e.g. \"it's\" or 'say \"hi\"')",
                            name_of(byte)));
  if (c == '[' || c == '{')
    error(byte, fmt::format("'{}' can only start a {}; to use it inside a string, quote the "
                            "whole value (e.g. 'a{}b')",
                            c, c == '[' ? "list" : "table", c));
  if (c == '=')
    error(byte,
          "'=' is not allowed here (only the first '=' separates key and value); to use '=' in "
          "a string, quote the value (e.g. key='a=b')");
  if (c == '(')
    error(byte,
          "'(' is not allowed in an unquoted value (functions are written name(...), e.g. "
          "choice(a, b)); to use '(' in a string, quote the value (e.g. key='a(b)')");
  error(byte, fmt::format("character {} is not allowed in an unquoted value; quote the value "
                          "(e.g. key='a{}b')",
                          name_of(byte), char_at(byte)));
}

// ---------------------------------------------------------------------------------------------
// Keys and the top level

Override Parser::parse_override() {
  Override o;
  o.text = std::string(t_);
  o.origin = origin_at(0);
  std::size_t p = 0;
  if (t_.substr(0, 2) == "++") {
    o.op = Override::Op::ForceAdd;
    p = 2;
  } else if (!t_.empty() && t_[0] == '+') {
    o.op = Override::Op::Add;
    p = 1;
  } else if (!t_.empty() && t_[0] == '~') {
    o.op = Override::Op::Delete;
    p = 1;
  }
  const std::size_t key_begin = p;
  const std::size_t eq = t_.find('=', p);
  const std::size_t key_end = eq == std::string_view::npos ? t_.size() : eq;
  std::size_t at = std::string_view::npos;
  for (std::size_t i = key_begin; i < key_end; ++i) {
    char c = t_[i];
    if (c == '@') {
      if (at != std::string_view::npos)
        error(i, "a second '@' in the key; write group@package=option (e.g. dataset@target=noisy)");
      at = i;
      continue;
    }
    // '$' as Hydra's keys allow it ($foo.bar$); '/' only in group paths, before any '@'.
    if (is_key_char(c) || c == '.' || c == '$' || (c == '/' && at == std::string_view::npos))
      continue;
    std::string hint;
    if (c == ':' && eq == std::string_view::npos)
      hint = fmt::format("; did you mean '{}={}'?", t_.substr(0, i), t_.substr(i + 1));
    else if (c == ' ')
      hint = "; did the shell join two arguments, or should the value be quoted after the '='?";
    else if (c == '/')
      hint = " (group paths such as dataset/digits go before the '@')";
    error(i, fmt::format("{} is not allowed in a {}: names are letters, digits, '_' and '-', "
                         "separated by '.'{} (e.g. train.lr or dataset@target){}",
                         name_of(i), at == std::string_view::npos ? "key" : "package",
                         at == std::string_view::npos ? " or '/'" : "", hint));
  }
  const std::size_t key_stop = at == std::string_view::npos ? key_end : at;
  o.key = std::string(t_.substr(key_begin, key_stop - key_begin));
  if (const auto slash = o.key.find('/');
      slash != std::string::npos && o.key.find('$') != std::string::npos)
    error(key_begin + slash,
          "'/' is not allowed in a key with '$': a group path (a/b) is plain names, a key with "
          "'$' is a dotted key");
  if (o.key.empty())
    error(key_begin, fmt::format("the key is empty; write {}key=value (e.g. {}train.lr=0.01)",
                                 t_.substr(0, key_begin), t_.substr(0, key_begin)));
  check_path(key_begin, o.key, "key", true);
  if (at != std::string_view::npos) {
    o.has_package = true;
    // Empty (group@=option): the global package, as Hydra's, like group@_global_=option.
    o.package = std::string(t_.substr(at + 1, key_end - at - 1));
    check_path(at + 1, o.package, "package", false);
  }
  o.key_origin = origin_at(key_begin);
  if (eq == std::string_view::npos) {
    if (o.op == Override::Op::Delete) {
      o.value_origin = o.key_origin;
      return o;
    }
    std::string prefix(t_.substr(0, key_begin));
    error(t_.size(), fmt::format("not of the form {}key=value; add '=' and a value (e.g. {}{}=1, "
                                 "or {}train.lr=0.01)",
                                 prefix, prefix, t_.substr(key_begin), prefix));
  }
  o.has_value = true;
  ParsedValue v = parse_value_from(eq + 1, &o.value_origin);
  if (o.op == Override::Op::Delete && v.sweep)
    error(eq + 1, fmt::format("a delete override ~key=value removes the key when it equals one "
                              "value; it cannot take a sweep (write ~{} to delete it whatever "
                              "its value)",
                              o.key));
  o.value = std::move(v.value);
  o.sweep = std::move(v.sweep);
  return o;
}

ParsedValue Parser::parse_value_from(std::size_t begin, Origin* value_origin) {
  p_ = begin;
  skip_ws();
  Origin start = origin_at(p_);
  if (value_origin) *value_origin = start;
  ParsedValue out;
  if (at_end()) {
    out.value = Node::string("", start);
    return out;
  }
  expect_value(value_origin ? "after '='" : "at the start", false);
  Item first = parse_element(0);
  skip_ws();
  if (at_end()) {
    out.value = std::move(first.value);
    out.sweep = std::move(first.sweep);
    return out;
  }
  if (peek() == ',') {
    Sweep sweep;
    sweep.origin = start;
    auto add = [&](Item& item) {
      if (item.sweep)
        error(item.at,
              "a sweep function cannot be one value of an 'a,b,c' sweep; write all values inside "
              "one choice(...), or use the function alone");
      sweep.values.push_back(std::move(item.value));
    };
    add(first);
    while (peek() == ',') {
      ++p_;
      skip_ws();
      expect_value("after ',' (a sweep is written a,b,c)", true);
      Item item = parse_element(0);
      add(item);
      skip_ws();
    }
    if (at_end()) {
      out.value = Node::null(start);
      out.sweep = std::move(sweep);
      return out;
    }
  }
  char c = peek();
  if (c == ')' || c == ']' || c == '}')
    error(p_, fmt::format("unexpected '{}' with no '{}' before it; remove it, or quote the value "
                          "to use it in a string",
                          c,
                          c == ')'   ? '('
                          : c == ']' ? '['
                                     : '{'));
  error(p_, fmt::format("unexpected {} after the value that starts at character {}; separate "
                        "sweep values with ',' or quote the whole value",
                        name_of(p_), pos(first.at)));
}

// ---------------------------------------------------------------------------------------------
// Elements

Item Parser::parse_element(std::size_t depth) {
  const std::size_t at = p_;
  switch (peek()) {
    case '[':
      return Item{parse_list(depth + 1), std::nullopt, at};
    case '{':
      return Item{parse_table(depth + 1), std::nullopt, at};
    case '\'':
    case '"': {
      std::string s = parse_quoted(true);
      return Item{Node::string(std::move(s), origin_at(at)), std::nullopt, at};
    }
    default:
      return parse_primitive(depth);
  }
}

Node Parser::parse_list(std::size_t depth) {
  const std::size_t open = p_;
  check_depth(depth, open);
  ++p_;
  Node list = Node::list(origin_at(open));
  skip_ws();
  if (peek() == ']') {
    ++p_;
    return list;
  }
  const std::string context = fmt::format("in the list that starts at character {}", pos(open));
  bool after_comma = false;
  while (true) {
    skip_ws();
    expect_value(context, after_comma);
    Item item = parse_element(depth);
    if (item.sweep)
      error(item.at,
            "sweep functions (choice, range, glob, zip) cannot be inside a list; sweep the "
            "whole list instead, e.g. key=[1,2],[3,4]");
    list.push_back(std::move(item.value));
    skip_ws();
    if (at_end())
      error(p_, fmt::format("the list that starts at character {} is not closed; expected ',' "
                            "or ']'",
                            pos(open)));
    if (peek() == ']') {
      ++p_;
      return list;
    }
    if (peek() != ',')
      error(p_, fmt::format("expected ',' or ']' to continue the list that starts at character "
                            "{}, found {}",
                            pos(open), name_of(p_)));
    ++p_;
    after_comma = true;
  }
}

Node Parser::parse_table(std::size_t depth) {
  const std::size_t open = p_;
  check_depth(depth, open);
  ++p_;
  Node table = Node::table(origin_at(open));
  skip_ws();
  if (peek() == '}') {
    ++p_;
    return table;
  }
  std::unordered_map<std::string, std::size_t> seen;  // key -> byte offset
  while (true) {
    skip_ws();
    const std::size_t key_at = p_;
    std::string key;
    if (at_end())
      error(p_, fmt::format("the table that starts at character {} is not closed; expected a "
                            "key or '}}'",
                            pos(open)));
    if (peek() == '\'' || peek() == '"') {
      key = parse_quoted(false);
    } else if ((is_unquoted(peek()) && peek() != ':') ||
               (peek() == '\\' && p_ + 1 < t_.size() && is_escapable(t_[p_ + 1]))) {
      // As Hydra's dictKey: unquoted characters but ':', inner blanks kept, escapes; the key is
      // the text (TOML keys are strings: {1: x} has the key "1").
      std::size_t keep = 0;
      while (!at_end()) {
        const char c = peek();
        if (c == '\\' && p_ + 1 < t_.size() && is_escapable(t_[p_ + 1])) {
          key += t_[p_ + 1];
          p_ += 2;
          keep = key.size();
        } else if (c == '$' && p_ + 1 < t_.size() && t_[p_ + 1] == '{') {
          error(p_, "an interpolation cannot be a table key; write the key itself");
        } else if (is_unquoted(c) && c != ':') {
          key += c;
          ++p_;
          keep = key.size();
        } else if (is_ws(c)) {
          key += c;
          ++p_;
        } else {
          break;
        }
      }
      key.resize(keep);
      if (!at_end() && !is_ws(peek()) && !std::strchr(":=,}", peek()))
        error(p_, fmt::format("{} is not allowed in a bare table key; quote the key (e.g. "
                              "{{{}: ...}})",
                              name_of(p_), quoted(key + std::string(char_at(p_)))));
    } else {
      error(p_,
            fmt::format("expected a key in the table that starts at character {}, found {}; "
                        "keys are letters, digits, '_' and '-', or quoted{}",
                        pos(open), name_of(p_), peek() == '}' ? " (remove the trailing ',')" : ""));
    }
    if (key.empty()) error(key_at, "a table key cannot be empty");
    skip_ws();
    if (peek() != ':' && peek() != '=')
      error(p_, fmt::format("expected ':' or '=' after the key '{}' in the table that starts at "
                            "character {}, found {} (e.g. {{lr: 0.1, momentum: 0.9}})",
                            key, pos(open), name_of(p_)));
    ++p_;
    skip_ws();
    expect_value(fmt::format("for the key '{}'", key), false);
    Item item = parse_element(depth);
    if (item.sweep)
      error(item.at,
            "sweep functions (choice, range, glob, zip) cannot be inside a table; sweep the "
            "key itself instead, e.g. model.width=choice(64,128)");
    if (auto it = seen.find(key); it != seen.end())
      error(key_at, fmt::format("duplicate key '{}' in the table that starts at character {} "
                                "(first at character {}); give each key once",
                                key, pos(open), pos(it->second)));
    seen.emplace(key, key_at);
    table.set(key, std::move(item.value));
    skip_ws();
    if (at_end())
      error(p_, fmt::format("the table that starts at character {} is not closed; expected ',' "
                            "or '}}'",
                            pos(open)));
    if (peek() == '}') {
      ++p_;
      return table;
    }
    if (peek() != ',')
      error(p_, fmt::format("expected ',' or '}}' to continue the table that starts at character "
                            "{}, found {}",
                            pos(open), name_of(p_)));
    ++p_;
  }
}

// '...' or "...", as Hydra reads them: only backslashes right before a quote of the same kind
// are escapes (a run of n gives n/2 backslashes, and the quote itself when n is odd); any other
// backslash is kept, so '\${x}' keeps its backslash for the interpolation.
std::string Parser::parse_quoted(bool as_value) {
  const std::size_t open = p_;
  const char q = t_[p_++];
  std::string out;
  while (!at_end()) {
    char c = t_[p_];
    if (c == '\\') {
      std::size_t n = 0;
      while (p_ + n < t_.size() && t_[p_ + n] == '\\') ++n;
      const bool before_quote = p_ + n < t_.size() && t_[p_ + n] == q;
      out.append(before_quote ? n / 2 : n, '\\');
      p_ += n;
      if (before_quote && n % 2 == 1) {
        out += q;
        ++p_;
      }
      continue;
    }
    ++p_;
    if (c == q) {
      if (as_value && !at_end() && !is_ws(peek()) && !std::strchr(",])}", peek()))
        error(p_, fmt::format("unexpected {} right after the string quoted at character {}; "
                              "quote the whole value, or separate values with ','",
                              name_of(p_), pos(open)));
      return out;
    }
    out += c;
  }
  error(open, fmt::format("the string quoted with {} here is not closed; add the closing quote "
                          "(inside, write \\{} for a quote character)",
                          name_of(open), q));
}

void Parser::skip_interpolation() {
  const std::size_t open = p_;
  p_ += 2;
  std::size_t depth = 1;
  while (!at_end()) {
    char c = t_[p_++];
    if (c == '{') ++depth;
    if (c == '}' && --depth == 0) return;
  }
  error(open, "the interpolation '${' here is not closed; add '}' (e.g. ${train.lr})");
}

// An unquoted value: characters, inner blanks and ${...} interpolations, with Hydra's escapes
// (a backslash before one of \\ ( ) [ ] { } : = , space tab stands for that character, and
// makes the value a string); blanks around it are dropped, escaped ones kept.
Item Parser::parse_primitive(std::size_t depth) {
  const std::size_t start = p_;
  std::string text;
  std::size_t keep = 0;  // text up to its last character that is not an unescaped blank
  bool escaped = false;
  while (!at_end()) {
    const char c = t_[p_];
    if (c == '\\' && p_ + 1 < t_.size() && is_escapable(t_[p_ + 1])) {
      text += t_[p_ + 1];
      p_ += 2;
      escaped = true;
      keep = text.size();
    } else if (c == '$' && p_ + 1 < t_.size() && t_[p_ + 1] == '{') {
      const std::size_t begin = p_;
      skip_interpolation();
      text.append(t_.substr(begin, p_ - begin));
      keep = text.size();
    } else if (is_unquoted(c)) {
      text += c;
      ++p_;
      keep = text.size();
    } else if (is_ws(c)) {
      if (!text.empty()) text += c;
      ++p_;
    } else {
      break;
    }
  }
  text.resize(keep);
  if (!at_end()) {
    if (peek() == '(' && !escaped && is_identifier(text)) return parse_call(text, start, depth + 1);
    if (!std::strchr(",)]}", peek())) not_allowed(p_);
  }
  if (text.empty()) error(p_, fmt::format("expected a value, found {}", name_of(p_)));
  if (escaped) return Item{Node::string(std::move(text), origin_at(start)), std::nullopt, start};
  return Item{typed(text, start), std::nullopt, start};
}

Node Parser::typed(std::string_view token, std::size_t at) {
  Origin o = origin_at(at);
  if (iequals(token, "null")) return Node::null(o);
  if (iequals(token, "true")) return Node::boolean(true, o);
  if (iequals(token, "false")) return Node::boolean(false, o);
  switch (number_kind(token)) {
    case NumKind::Int: {
      int64_t v = 0;
      if (!to_int64(token, v))
        error(at, fmt::format("integer {} is out of range (integers are 64-bit, -2^63 to "
                              "2^63-1); write it as a float (e.g. 1e20) or quote it for a string",
                              token));
      return Node::integer(v, o);
    }
    case NumKind::Float: {
      double v = 0;
      if (!to_double(token, v))
        error(at, fmt::format("float {} is out of range (the largest is about 1.8e308); quote it "
                              "for a string",
                              token));
      return Node::floating(v, o);
    }
    case NumKind::None:
      break;
  }
  return Node::string(std::string(token), o);
}

// ---------------------------------------------------------------------------------------------
// Functions

Item Parser::parse_call(const std::string& name, std::size_t name_at, std::size_t depth) {
  check_depth(depth, name_at);
  if (std::find(kFunctions.begin(), kFunctions.end(), name) == kFunctions.end()) {
    std::string hint = did_you_mean(nearest(name, kFunctions));
    error(name_at, fmt::format("unknown function '{}'; available: {}{}; to use '(' in a string, "
                               "quote the value",
                               name, kFunctionList, hint.empty() ? "" : " (" + hint + ")"));
  }
  const std::size_t open = p_;
  ++p_;
  std::vector<Arg> args;
  skip_ws();
  if (peek() == ')') {
    ++p_;
  } else {
    const std::string context =
        fmt::format("in the arguments of {}() that start at character {}", name, pos(open));
    bool after_comma = false;
    while (true) {
      skip_ws();
      Arg arg;
      arg.at = p_;
      // A named argument is an identifier followed by '='.
      std::size_t q = p_;
      if (!at_end() && is_ident_start(peek())) {
        while (q < t_.size() && is_ident_char(t_[q])) ++q;
        std::size_t name_end = q;
        while (q < t_.size() && is_ws(t_[q])) ++q;
        if (q < t_.size() && t_[q] == '=') {
          arg.name = std::string(t_.substr(p_, name_end - p_));
          p_ = q + 1;
          skip_ws();
        }
      }
      expect_value(arg.name.empty() ? context : "for " + arg.name + "=", after_comma);
      arg.item = parse_element(depth);
      args.push_back(std::move(arg));
      skip_ws();
      if (at_end())
        error(p_, fmt::format("the call {}(...) that starts at character {} is not closed; "
                              "expected ',' or ')'",
                              name, pos(name_at)));
      if (peek() == ')') {
        ++p_;
        break;
      }
      if (peek() != ',')
        error(p_, fmt::format("expected ',' or ')' to continue the arguments of {}() that start "
                              "at character {}, found {}",
                              name, pos(open), name_of(p_)));
      ++p_;
      after_comma = true;
    }
  }
  if (name == "choice") return make_choice(name_at, args);
  if (name == "range") return make_range(name_at, args);
  if (name == "interval") return make_interval(name_at, args);
  if (name == "glob") return make_glob(name_at, args);
  if (name == "zip") return make_zip(name_at, args);
  if (name == "sort" || name == "shuffle") return make_sort(name_at, args, name == "shuffle");
  if (name == "tag") return make_tag(name_at, args);
  Cast kind = name == "int"     ? Cast::Int
              : name == "float" ? Cast::Float
              : name == "str"   ? Cast::Str
                                : Cast::Bool;
  return make_cast(kind, name, name_at, args);
}

Item Parser::make_choice(std::size_t at, std::vector<Arg>& args) {
  if (args.empty()) error(at, "choice() needs at least one value, e.g. choice(a, b)");
  Sweep sweep;
  sweep.origin = origin_at(at);
  for (auto& arg : args) {
    if (!arg.name.empty())
      error(arg.at, fmt::format("choice() takes no named arguments ('{}='); to use '=' in a "
                                "string, quote it",
                                arg.name));
    if (arg.item.sweep)
      error(arg.at, "choice() takes plain values; a sweep function cannot be nested in it");
    sweep.values.push_back(std::move(arg.item.value));
  }
  return Item{Node(), std::move(sweep), at};
}

Item Parser::make_range(std::size_t at, std::vector<Arg>& args) {
  static const std::vector<std::string> names = {"start", "stop", "step"};
  Node slot[3];
  bool given[3] = {false, false, false};
  std::size_t next = 0;
  bool named = false;
  for (auto& arg : args) {
    std::size_t k = 0;
    if (arg.name.empty()) {
      if (named)
        error(arg.at, "a positional argument after a named one; write range(start, stop, step)");
      if (next >= 3) error(arg.at, "range() takes at most 3 values: range(start, stop, step)");
      k = next++;
    } else {
      named = true;
      auto it = std::find(names.begin(), names.end(), arg.name);
      if (it == names.end()) {
        std::string hint = did_you_mean(nearest(arg.name, names));
        error(arg.at, fmt::format("range() has no argument '{}'; it takes start, stop and step{}{}",
                                  arg.name, hint.empty() ? "" : "; ", hint));
      }
      k = static_cast<std::size_t>(it - names.begin());
    }
    if (given[k]) error(arg.at, fmt::format("range() got {} twice", names[k]));
    if (arg.item.sweep) error(arg.at, "range() takes numbers, not a sweep");
    if (!arg.item.value.is_number())
      error(arg.at, fmt::format("range() takes numbers, but its {} is {}", names[k],
                                arg.item.value.describe()));
    slot[k] = std::move(arg.item.value);
    given[k] = true;
  }
  if (given[0] && !given[1]) {  // range(stop), as Python's and Hydra's: from 0
    slot[1] = std::move(slot[0]);
    slot[0] = Node::integer(0, origin_at(at));
    given[1] = true;
  }
  if (!given[0] || !given[1])
    error(at,
          "range() needs a stop (the stop is excluded), e.g. range(5), range(1, 5) or "
          "range(0, 1, 0.1)");
  Sweep sweep;
  sweep.fn = Sweep::Fn::Range;
  sweep.origin = origin_at(at);
  sweep.start = std::move(slot[0]);
  sweep.stop = std::move(slot[1]);
  sweep.step = given[2] ? std::move(slot[2]) : Node::integer(1, origin_at(at));
  return Item{Node(), std::move(sweep), at};
}

Item Parser::make_glob(std::size_t at, std::vector<Arg>& args) {
  Sweep sweep;
  sweep.fn = Sweep::Fn::Glob;
  bool include = false, exclude = false;
  auto pattern = [&](const Node& v, std::size_t where) {
    if (v.is_string()) return v.as_string();
    if (v.is_int()) return v.scalar_text();
    error(where, fmt::format("glob() patterns are option names with '*', '?' and [...] wildcards; "
                             "got {} (quote it to use it as a name)",
                             v.describe()));
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    Arg& arg = args[i];
    std::string name = arg.name.empty() ? (i == 0 ? "include" : "") : arg.name;
    if (name.empty())
      error(arg.at,
            "glob() takes one pattern or a list of patterns, and exclude=; write "
            "glob([a*, b*]) for several patterns");
    if (name != "include" && name != "exclude") {
      std::string hint = did_you_mean(nearest(name, {"include", "exclude"}));
      error(arg.at, fmt::format("glob() has no argument '{}'; it takes include and exclude{}{}",
                                name, hint.empty() ? "" : "; ", hint));
    }
    bool& seen = name == "include" ? include : exclude;
    if (seen) error(arg.at, fmt::format("glob() got {} twice", name));
    seen = true;
    if (arg.item.sweep) error(arg.at, "glob() takes patterns, not a sweep");
    auto& out = name == "include" ? sweep.include : sweep.exclude;
    const Node& v = arg.item.value;
    if (v.is_list()) {
      for (const auto& e : v.items()) out.push_back(pattern(e, arg.at));
    } else {
      out.push_back(pattern(v, arg.at));
    }
  }
  if (sweep.include.empty())
    error(at, "glob() needs a pattern, e.g. glob(*) or glob(*, exclude=test*)");
  sweep.origin = origin_at(at);
  return Item{Node(), std::move(sweep), at};
}

Item Parser::make_zip(std::size_t at, std::vector<Arg>& args) {
  if (args.empty())
    error(at, "zip() needs values or one sweep, e.g. zip(1, 2, 3) or zip(range(1, 4))");
  for (const auto& arg : args) {
    if (!arg.name.empty())
      error(arg.at, fmt::format("zip() takes no named arguments ('{}=')", arg.name));
    if (arg.item.sweep && arg.item.sweep->zip)
      error(arg.at, "zip() inside zip(); write the sweep inside one zip()");
    if (arg.item.sweep && args.size() > 1)
      error(arg.at,
            "zip() takes either plain values or a single sweep function, e.g. "
            "zip(1, 2, 3) or zip(choice(a, b))");
  }
  if (args[0].item.sweep) {
    Sweep sweep = std::move(*args[0].item.sweep);
    if (sweep.fn == Sweep::Fn::Interval)
      error(args[0].at, "zip() pairs the i-th values of lists; interval() has no list of values");
    sweep.zip = true;
    return Item{Node(), std::move(sweep), at};
  }
  Sweep sweep;
  sweep.zip = true;
  sweep.origin = origin_at(at);
  for (auto& arg : args) sweep.values.push_back(std::move(arg.item.value));
  return Item{Node(), std::move(sweep), at};
}

// sort(values... | list=[..] | sweep=<sweep>[, reverse=true]) and shuffle(...), as Hydra's:
// one list gives the list reordered, one sweep the sweep reordered, several values a sweep of
// them reordered, one other value itself (sort) or a list of it (shuffle).
Item Parser::make_sort(std::size_t at, std::vector<Arg>& args, bool shuffle) {
  const char* name = shuffle ? "shuffle" : "sort";
  bool reverse = false;
  std::vector<Arg> inputs;
  for (auto& arg : args) {
    if (arg.name == "reverse" && !shuffle) {
      if (arg.item.sweep || !arg.item.value.is_bool())
        error(arg.at, "sort()'s reverse= takes true or false");
      reverse = arg.item.value.as_bool();
      continue;
    }
    if (!arg.name.empty() && arg.name != "list" && arg.name != "sweep")
      error(arg.at, fmt::format("{}() has no argument '{}'; it takes values, list=, sweep={}", name,
                                arg.name, shuffle ? "" : " and reverse="));
    if (!inputs.empty() && (!arg.name.empty() || !inputs.back().name.empty()))
      error(arg.at, fmt::format("{}() takes one list=, one sweep= or several values", name));
    inputs.push_back(std::move(arg));
  }
  if (inputs.empty()) error(at, fmt::format("{0}() needs values, e.g. {0}(3, 1, 2)", name));
  const Origin where = origin_at(at);
  const std::string seed = origin_text_ + "@" + std::to_string(at);
  Item out;
  out.at = at;
  if (inputs.size() > 1) {
    for (const auto& arg : inputs)
      if (arg.item.sweep)
        error(arg.at, fmt::format("{}() takes one sweep, or several plain values", name));
    out = make_choice(at, inputs);
  } else if (inputs[0].item.sweep) {
    out.sweep = std::move(inputs[0].item.sweep);
  } else if (inputs[0].item.value.is_list()) {
    Node list = std::move(inputs[0].item.value);
    if (shuffle)
      shuffle_nodes(list.items(), seed);
    else
      sort_nodes(list.items(), reverse, where);
    return Item{std::move(list), std::nullopt, at};
  } else if (shuffle) {
    Node list = Node::list(where);
    list.push_back(std::move(inputs[0].item.value));
    return Item{std::move(list), std::nullopt, at};
  } else {
    return Item{std::move(inputs[0].item.value), std::nullopt, at};
  }
  Sweep& sweep = *out.sweep;
  if (sweep.fn == Sweep::Fn::Glob)
    error(at, fmt::format("{}() cannot reorder glob(): its options come sorted by name", name));
  if (sweep.fn == Sweep::Fn::Interval)
    error(at, fmt::format("{}() cannot reorder interval(): it has no list of values, its values "
                          "are drawn",
                          name));
  if (shuffle) {
    sweep.shuffle = true;
    return out;
  }
  if (sweep.fn == Sweep::Fn::Range) {
    sweep.values = sweep_values(sweep);
    charge(sweep.values.size());
    sweep.fn = Sweep::Fn::Choice;
    sweep.start = sweep.stop = sweep.step = Node();
  }
  sweep.shuffle = false;
  sort_nodes(sweep.values, reverse, where);
  return out;
}

// tag(t1, t2, <sweep>) or tag(..., sweep=<sweep>): Hydra's labels for sweeper plugins. A grid
// sweep has no use for them (Hydra's basic sweeper ignores them too): the sweep, as it is.
Item Parser::make_tag(std::size_t at, std::vector<Arg>& args) {
  if (args.empty() || !args.back().item.sweep)
    error(at, "tag() takes labels and then a sweep, e.g. tag(log, choice(1, 10, 100))");
  for (std::size_t i = 0; i + 1 < args.size(); ++i)
    if (!args[i].name.empty() || args[i].item.sweep || !args[i].item.value.is_string())
      error(args[i].at, "tag()'s labels are names, e.g. tag(log, choice(1, 10, 100))");
  if (!args.back().name.empty() && args.back().name != "sweep")
    error(args.back().at,
          fmt::format("tag() has no argument '{}'; it takes labels and sweep=", args.back().name));
  Item out;
  out.at = at;
  out.sweep = std::move(args.back().item.sweep);
  std::vector<std::string> tags;
  for (std::size_t i = 0; i + 1 < args.size(); ++i) tags.push_back(args[i].item.value.as_string());
  out.sweep->tags.insert(out.sweep->tags.begin(), tags.begin(), tags.end());
  check_log_interval(*out.sweep, at);
  return out;
}

// interval(low, high) or interval(start=, end=) (Hydra's names): a distribution, drawn from by a
// sampled sweep. Hydra makes both bounds floats; int(...) makes them integers.
Item Parser::make_interval(std::size_t at, std::vector<Arg>& args) {
  static const std::vector<std::string> names = {"start", "end"};
  Node slot[2];
  bool given[2] = {false, false};
  std::size_t next = 0;
  for (auto& arg : args) {
    std::size_t k = 0;
    if (arg.name.empty()) {
      if (next >= 2) error(arg.at, "interval() takes two bounds: interval(low, high)");
      k = next++;
    } else {
      auto it = std::find(names.begin(), names.end(), arg.name);
      if (it == names.end())
        error(arg.at,
              fmt::format("interval() has no argument '{}'; it takes start and end", arg.name));
      k = static_cast<std::size_t>(it - names.begin());
    }
    if (given[k]) error(arg.at, fmt::format("interval() got {} twice", names[k]));
    if (arg.item.sweep || !arg.item.value.is_number() || !std::isfinite(arg.item.value.as_number()))
      error(arg.at, fmt::format("interval()'s {} must be a finite number", names[k]));
    slot[k] = Node::floating(arg.item.value.as_number(), origin_at(arg.at));
    given[k] = true;
  }
  if (!given[0] || !given[1]) error(at, "interval() needs two bounds: interval(low, high)");
  Sweep sweep;
  sweep.fn = Sweep::Fn::Interval;
  sweep.start = std::move(slot[0]);
  sweep.stop = std::move(slot[1]);
  sweep.origin = origin_at(at);
  check_interval(sweep, at);
  return Item{Node(), std::move(sweep), at};
}

void Parser::check_interval(const Sweep& s, std::size_t at) {
  if (!(s.start.as_number() < s.stop.as_number()))
    error(at, fmt::format("{}: the low bound {} must be below the high bound {}", s.text(),
                          format_value(s.start), format_value(s.stop)));
  check_log_interval(s, at);
}

void Parser::check_log_interval(const Sweep& s, std::size_t at) {
  if (s.fn == Sweep::Fn::Interval && s.log() && !(s.start.as_number() > 0))
    error(at, fmt::format("{}: a log interval is drawn uniformly in log space, so its low bound "
                          "must be above 0, got {}",
                          s.text(), format_value(s.start)));
}

Item Parser::make_cast(Cast kind, const std::string& name, std::size_t at, std::vector<Arg>& args) {
  if (args.empty()) error(at, fmt::format("{0}() takes a value, e.g. {0}(x) or {0}(1, 2)", name));
  if (args.size() > 1) {
    // Several values: a sweep of the cast values, as Hydra's int(1,2,3) (an 'a,b,c' sweep).
    std::vector<Arg> choice;
    for (auto& arg : args) {
      if (!arg.name.empty())
        error(arg.at, fmt::format("{}() has no argument '{}'; it takes values", name, arg.name));
      if (arg.item.sweep)
        error(arg.at, fmt::format("{}() casts one sweep or several values, not both", name));
    }
    Item sweep = make_choice(at, args);
    for (auto& v : sweep.sweep->values) v = cast(std::move(v), kind, name);
    return sweep;
  }
  Arg& arg = args[0];
  if (!arg.name.empty() && arg.name != "value")
    error(arg.at, fmt::format("{}() has no argument '{}'; it takes one value", name, arg.name));
  if (!arg.item.sweep) {
    Node v = cast(std::move(arg.item.value), kind, name);
    v.origin = origin_at(at);
    return Item{std::move(v), std::nullopt, at};
  }
  Sweep sweep = std::move(*arg.item.sweep);
  if (sweep.fn == Sweep::Fn::Glob)
    error(arg.at, fmt::format("{}() cannot cast glob(): it picks option names", name));
  if (sweep.fn == Sweep::Fn::Interval) {
    // Hydra's casts of an interval: its bounds (int() truncates them, as Python's int()).
    if (kind == Cast::Str || kind == Cast::Bool)
      error(arg.at, fmt::format("{}() cannot cast interval(): an interval can only be cast to int "
                                "or float (as in Hydra)",
                                name));
    sweep.start = cast(std::move(sweep.start), kind, name);
    sweep.stop = cast(std::move(sweep.stop), kind, name);
    check_interval(sweep, at);
    return Item{Node(), std::move(sweep), at};
  }
  if (sweep.fn == Sweep::Fn::Range && (kind == Cast::Str || kind == Cast::Bool))
    error(arg.at, fmt::format("{}() cannot cast range(): a range can only be cast to int or float "
                              "(as in Hydra); write choice(...) for other values",
                              name));
  if (sweep.fn == Sweep::Fn::Range) {
    // The cast applies to each value, so the range becomes the list of its values.
    sweep.values = sweep_values(sweep);
    charge(sweep.values.size());
    sweep.fn = Sweep::Fn::Choice;
    sweep.start = sweep.stop = sweep.step = Node();
  }
  for (auto& v : sweep.values) v = cast(std::move(v), kind, name);
  return Item{Node(), std::move(sweep), at};
}

// Python's conversions, as Hydra's casts do them; lists and tables are cast element-wise.
Node Parser::cast(Node v, Cast kind, const std::string& name) {
  if (v.is_null()) return v;
  if (v.is_list()) {
    for (auto& e : v.items()) e = cast(std::move(e), kind, name);
    return v;
  }
  if (v.is_table()) {
    for (std::size_t i = 0; i < v.size(); ++i) v.value_at(i) = cast(v.value_at(i), kind, name);
    return v;
  }
  const Origin o = v.origin;
  switch (kind) {
    case Cast::Int:
      if (v.is_bool()) return Node::integer(v.as_bool() ? 1 : 0, o);
      if (v.is_int()) return v;
      if (v.is_float()) {
        double f = v.as_number();
        if (!std::isfinite(f)) cannot_cast(name, v, "it is not a finite number");
        if (f >= 9223372036854775808.0 || f < -9223372036854775808.0)
          cannot_cast(name, v, "it is outside the 64-bit integer range");
        return Node::integer(static_cast<int64_t>(std::trunc(f)), o);
      }
      if (number_kind(v.as_string()) == NumKind::Int) {
        int64_t i = 0;
        if (!to_int64(v.as_string(), i))
          cannot_cast(name, v, "it is outside the 64-bit integer range");
        return Node::integer(i, o);
      }
      cannot_cast(name, v, "expected an integer such as 3 or -1_000");
    case Cast::Float:
      if (v.is_bool()) return Node::floating(v.as_bool() ? 1.0 : 0.0, o);
      if (v.is_number()) return Node::floating(v.as_number(), o);
      if (number_kind(v.as_string()) != NumKind::None) {
        double f = 0;
        if (!to_double(v.as_string(), f)) cannot_cast(name, v, "it is out of range");
        return Node::floating(f, o);
      }
      cannot_cast(name, v, "expected a number such as 0.5, 1e-3 or inf");
    case Cast::Str:
      return Node::string(v.scalar_text(), o);
    case Cast::Bool:
      if (v.is_bool()) return v;
      if (v.is_number()) return Node::boolean(v.as_number() != 0, o);
      if (iequals(v.as_string(), "true")) return Node::boolean(true, o);
      if (iequals(v.as_string(), "false")) return Node::boolean(false, o);
      cannot_cast(name, v, "expected true or false");
  }
  return v;
}

std::string range_text(const Sweep& s) {
  std::string out = "range(" + format_value(s.start) + ", " + format_value(s.stop);
  if (!(s.step.is_int() && s.step.as_int() == 1)) out += ", " + format_value(s.step);
  return out + ")";
}

}  // namespace

bool Sweep::log() const { return std::find(tags.begin(), tags.end(), "log") != tags.end(); }

std::string Sweep::text() const {
  std::string out;
  switch (fn) {
    case Fn::Range:
      out = range_text(*this);
      break;
    case Fn::Interval:
      out = "interval(" + format_value(start) + ", " + format_value(stop) + ")";
      if (start.is_int()) out = "int(" + out + ")";
      break;
    case Fn::Glob: {
      std::vector<std::string> in, ex;
      for (const auto& p : include) in.push_back(format_value(Node::string(p)));
      for (const auto& p : exclude) ex.push_back(format_value(Node::string(p)));
      out = "glob([" + fmt::format("{}", fmt::join(in, ", ")) + "]";
      if (!ex.empty()) out += ", exclude=[" + fmt::format("{}", fmt::join(ex, ", ")) + "]";
      out += ")";
      break;
    }
    case Fn::Choice: {
      std::vector<std::string> v;
      for (const auto& x : values) v.push_back(format_value(x));
      out = "choice(" + fmt::format("{}", fmt::join(v, ", ")) + ")";
      break;
    }
  }
  if (shuffle) out = "shuffle(" + out + ")";
  if (!tags.empty()) out = "tag(" + fmt::format("{}", fmt::join(tags, ", ")) + ", " + out + ")";
  return out;
}

namespace {

// Rounds x to 15 significant digits of `scale` (the largest magnitude in the range), so that a
// value near zero rounds to 0 like its neighbours rather than keeping 1e-17 of noise.
double round_to_scale(double x, double scale) {
  int exp10 = static_cast<int>(std::floor(std::log10(scale)));
  int decimals = std::clamp(14 - exp10, 0, 400);
  std::string s = fmt::format("{:.{}f}", x, decimals);
  double out = x;
  std::from_chars(s.data(), s.data() + s.size(), out);
  return out == 0 ? 0.0 : out;
}

// Each generated value copies the sweep's origin; the same cap as the parser's applies.
void check_origin_budget(const Sweep& s, std::size_t count) {
  if (count * (s.origin.override.size() + kValueOverhead) > kMaxValueBytes)
    fail_at(s.origin, fmt::format("{} has {} values, too many for an override of {} characters; "
                                  "shorten the override or use a larger step",
                                  range_text(s), count, s.origin.override.size()));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public functions

Override parse_override(std::string_view text) {
  Parser parser(text, std::string(text));
  parser.check_characters();
  return parser.parse_override();
}

ParsedValue parse_value(std::string_view text, const std::string& where) {
  Parser parser(text, where.empty() ? std::string(text) : where);
  parser.check_characters();
  return parser.parse_value_from(0, nullptr);
}

std::vector<Node> sweep_values(const Sweep& s) {
  if (s.shuffle) {
    Sweep plain = s;
    plain.shuffle = false;
    std::vector<Node> values = sweep_values(plain);
    shuffle_nodes(values, s.origin.where());
    return values;
  }
  if (s.fn == Sweep::Fn::Choice) return s.values;
  if (s.fn == Sweep::Fn::Interval)
    fail_at(s.origin, fmt::format("{} is drawn from, not listed: give the number of "
                                  "configurations to draw, [sweep] samples = N (sweep.samples=N "
                                  "on the command line), or use range() or choice() for a grid",
                                  s.text()));
  if (s.fn == Sweep::Fn::Glob)
    fail_at(s.origin,
            "glob() picks among the options of a config group, so it only works on a group key "
            "(e.g. dataset=glob(*)); for other keys use choice()");
  if (!s.start.is_number() || !s.stop.is_number() || !s.step.is_number())
    fail_at(s.origin, "range() needs numbers for start, stop and step");
  const std::string text = range_text(s);
  auto too_many = [&](const std::string& count) {
    fail_at(s.origin, fmt::format("{} has {} values, more than the {} allowed in one sweep; use a "
                                  "larger step",
                                  text, count, kMaxSweepValues));
  };
  auto empty = [&]() {
    fail_at(s.origin, fmt::format("{} is empty: the stop is excluded, so it must be above the "
                                  "start (or below it with a negative step, e.g. range(5, 1, -1))",
                                  text));
  };
  std::vector<Node> out;
  if (s.start.is_int() && s.stop.is_int() && s.step.is_int()) {
    const int64_t a = s.start.as_int(), b = s.stop.as_int(), step = s.step.as_int();
    if (step == 0)
      fail_at(s.origin, fmt::format("{} has a zero step; use a positive step to count "
                                    "up or a negative one to count down",
                                    text));
    const __int128 span = static_cast<__int128>(b) - a, st = step;
    __int128 count = 0;
    if (span > 0 && st > 0) count = (span + st - 1) / st;
    if (span < 0 && st < 0) count = (-span - st - 1) / -st;
    if (count == 0) empty();
    if (count > static_cast<__int128>(kMaxSweepValues))
      too_many(count > static_cast<__int128>(INT64_MAX)
                   ? std::string("more than 2^63")
                   : std::to_string(static_cast<int64_t>(count)));
    check_origin_budget(s, static_cast<std::size_t>(count));
    out.reserve(static_cast<std::size_t>(count));
    for (__int128 i = 0; i < count; ++i)
      out.push_back(Node::integer(static_cast<int64_t>(a + i * st), s.origin));
    return out;
  }
  const double a = s.start.as_number(), b = s.stop.as_number(), step = s.step.as_number();
  if (!std::isfinite(a) || !std::isfinite(b) || !std::isfinite(step))
    fail_at(s.origin, fmt::format("{} needs finite numbers (no inf or nan)", text));
  if (step == 0)
    fail_at(s.origin, fmt::format("{} has a zero step; use a positive step to count up or a "
                                  "negative one to count down",
                                  text));
  if (step > 0 ? !(a < b) : !(a > b)) empty();
  double estimate = (b - a) / step;
  if (!std::isfinite(estimate)) estimate = b / step - a / step;
  if (!(estimate <= static_cast<double>(kMaxSweepValues) + 1))
    too_many(std::isfinite(estimate) ? fmt::format("about {:.0f}", std::ceil(estimate))
                                     : std::string("too many"));
  check_origin_budget(s, static_cast<std::size_t>(estimate) + 1);
  // start + i*step (not repeated addition, which drifts), rounded so that 0.1 steps give
  // 0.3 rather than 0.30000000000000004 and a stop such as 0.3 stays excluded.
  const double scale = std::max({std::fabs(a), std::fabs(b), std::fabs(step)});
  for (std::size_t i = 0;; ++i) {
    double x = round_to_scale(a + static_cast<double>(i) * step, scale);
    if (step > 0 ? !(x < b) : !(x > b)) break;
    if (!out.empty() && x == out.back().as_number())
      fail_at(s.origin, fmt::format("{}: the step is too small next to the start and stop "
                                    "(values are rounded to 15 significant digits)",
                                    text));
    if (out.size() == kMaxSweepValues) too_many(fmt::format("more than {}", kMaxSweepValues));
    out.push_back(Node::floating(x, s.origin));
  }
  if (out.empty()) empty();
  return out;
}

bool glob_match(std::string_view pattern, std::string_view name) {
  // fnmatch(3) reads C strings: a NUL inside would end the pattern early and match too much.
  if (pattern.find('\0') != std::string_view::npos || name.find('\0') != std::string_view::npos)
    return pattern == name;
  return fnmatch(std::string(pattern).c_str(), std::string(name).c_str(), 0) == 0;
}

std::vector<std::string> glob_options(const Sweep& sweep, const std::vector<std::string>& options) {
  std::vector<std::string> out;
  for (const auto& option : options) {
    auto match = [&](const std::string& pattern) { return glob_match(pattern, option); };
    if (std::any_of(sweep.include.begin(), sweep.include.end(), match) &&
        std::none_of(sweep.exclude.begin(), sweep.exclude.end(), match))
      out.push_back(option);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string format_value(const Node& value) {
  switch (value.type()) {
    case Node::Type::Null:
    case Node::Type::Bool:
    case Node::Type::Int:
    case Node::Type::Float:
      return value.scalar_text();
    case Node::Type::String: {
      const std::string& s = value.as_string();
      // Bare, a backslash before \ ( ) [ ] { } : = , or a blank would be an escape, and a
      // final one would escape what follows the value (a ',' in a list): such strings are quoted.
      bool escapes = !s.empty() && s.back() == '\\';
      for (std::size_t i = 0; i + 1 < s.size(); ++i)
        escapes = escapes || (s[i] == '\\' && is_escapable(s[i + 1]));
      bool bare = !s.empty() && std::all_of(s.begin(), s.end(), is_unquoted) && !escapes &&
                  !iequals(s, "null") && !iequals(s, "true") && !iequals(s, "false") &&
                  number_kind(s) == NumKind::None;
      return bare ? s : quoted(s);
    }
    case Node::Type::List: {
      std::string out = "[";
      for (std::size_t i = 0; i < value.size(); ++i) {
        if (i) out += ", ";
        out += format_value(value.items()[i]);
      }
      return out + "]";
    }
    case Node::Type::Table: {
      std::string out = "{";
      for (std::size_t i = 0; i < value.size(); ++i) {
        const std::string& k = value.keys()[i];
        if (i) out += ", ";
        bool bare = !k.empty() && std::all_of(k.begin(), k.end(), is_key_char);
        out += (bare ? k : quoted(k)) + ": " + format_value(value.value_at(i));
      }
      return out + "}";
    }
  }
  return "null";
}

}  // namespace tlab::cfg
