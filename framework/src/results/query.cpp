// One file (~900 lines) because `--where` is one small language: its lexer, parser, the
// translation to SQL (columns, params, summaries) and the error messages with a caret share the
// token and position types; the run listing that uses it follows.
#include "results/query.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <set>
#include <utility>

#include <fmt/format.h>

#include "util.hpp"

namespace tlab {
namespace {

// ---------------------------------------------------------------------------------------------
// Values

struct Value {
  enum class Kind { Null, Bool, Int, Float, String };
  Kind kind = Kind::Null;
  bool b = false;
  int64_t i = 0;
  double d = 0;
  std::string s;

  static Value of_bool(bool v) {
    Value x;
    x.kind = Kind::Bool;
    x.b = v;
    return x;
  }
  static Value of_int(int64_t v) {
    Value x;
    x.kind = Kind::Int;
    x.i = v;
    return x;
  }
  static Value of_float(double v) {
    Value x;
    x.kind = Kind::Float;
    x.d = v;
    return x;
  }
  static Value of_string(std::string v) {
    Value x;
    x.kind = Kind::String;
    x.s = std::move(v);
    return x;
  }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Float; }
  bool is_nan() const { return kind == Kind::Float && std::isnan(d); }
  double number() const { return kind == Kind::Int ? static_cast<double>(i) : d; }
};

std::string number_text(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{}", v);
}

// The text a value has for LIKE: strings as they are, numbers as they print.
std::string value_text(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Null:
      return "";
    case Value::Kind::Bool:
      return v.b ? "true" : "false";
    case Value::Kind::Int:
      return std::to_string(v.i);
    case Value::Kind::Float:
      return number_text(v.d);
    case Value::Kind::String:
      return v.s;
  }
  return "";
}

enum class Op { Eq, Ne, Lt, Le, Gt, Ge };

// Three-way comparison of two values of comparable kinds; false in `comparable` when the kinds
// differ (a string and a number) or a NaN is involved.
int three_way(const Value& a, const Value& b, bool& comparable) {
  comparable = true;
  if (a.kind == Value::Kind::Int && b.kind == Value::Kind::Int)
    return a.i < b.i ? -1 : a.i > b.i ? 1 : 0;
  if (a.is_number() && b.is_number()) {
    const double x = a.number(), y = b.number();
    if (std::isnan(x) || std::isnan(y)) {
      comparable = false;
      return 0;
    }
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.kind == Value::Kind::Bool && b.kind == Value::Kind::Bool) return int(a.b) - int(b.b);
  if (a.kind == Value::Kind::String && b.kind == Value::Kind::String) {
    const int c = a.s.compare(b.s);
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  comparable = false;
  return 0;
}

// `field op literal`. A missing field, or a value of another kind than the literal (a string
// param against a number), is false. NaN equals NaN here, so that `= nan` finds NaN summaries.
bool compare(const Value& field, Op op, const Value& literal) {
  if (field.kind == Value::Kind::Null) return false;
  if (field.is_number() && literal.is_number() && (field.is_nan() || literal.is_nan())) {
    const bool both = field.is_nan() && literal.is_nan();
    if (op == Op::Eq) return both;
    if (op == Op::Ne) return !both;
    return false;
  }
  bool comparable = false;
  const int c = three_way(field, literal, comparable);
  if (!comparable) return false;
  switch (op) {
    case Op::Eq:
      return c == 0;
    case Op::Ne:
      return c != 0;
    case Op::Lt:
      return c < 0;
    case Op::Le:
      return c <= 0;
    case Op::Gt:
      return c > 0;
    case Op::Ge:
      return c >= 0;
  }
  return false;
}

// Decodes UTF-8 into code points (invalid bytes are kept as single units).
std::vector<uint32_t> code_points(const std::string& s) {
  std::vector<uint32_t> out;
  for (std::size_t i = 0; i < s.size();) out.push_back(decode_utf8(s, i));
  return out;
}

// SQL LIKE: '%' matches any sequence (also empty), '_' exactly one character. Case-sensitive.
bool like(const std::string& pattern, const std::string& text) {
  const auto p = code_points(pattern), t = code_points(text);
  std::size_t pi = 0, ti = 0, star = std::string::npos, mark = 0;
  while (ti < t.size()) {
    if (pi < p.size() && p[pi] == '%') {
      star = pi++;
      mark = ti;
    } else if (pi < p.size() && (p[pi] == '_' || p[pi] == t[ti])) {
      ++pi;
      ++ti;
    } else if (star != std::string::npos) {
      pi = star + 1;
      ti = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '%') ++pi;
  return pi == p.size();
}

// ---------------------------------------------------------------------------------------------
// Fields

const std::vector<std::string>& run_columns() {
  static const std::vector<std::string> columns = {
      "id",   "name",    "status",     "reason",     "seed",       "device",  "host",
      "uuid", "run_key", "experiment", "created_at", "started_at", "ended_at"};
  return columns;
}

bool is_run_column(const std::string& field) {
  const auto& c = run_columns();
  return std::find(c.begin(), c.end(), field) != c.end();
}

struct Lookup {
  bool present = false;
  bool run_column = false;
  Value value;
  // Missing, or a run column that is empty (the store reads NULL text columns as "").
  bool is_null() const {
    return !present || (run_column && value.kind == Value::Kind::String && value.s.empty());
  }
};

Value param_value(const ParamValue& v) {
  return std::visit(
      [](const auto& x) -> Value {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>)
          return Value::of_bool(x);
        else if constexpr (std::is_same_v<T, int64_t>)
          return Value::of_int(x);
        else if constexpr (std::is_same_v<T, double>)
          return Value::of_float(x);
        else
          return Value::of_string(x);
      },
      v);
}

// Resolves `field` in `run`: run columns first, then params, then summaries.
Lookup lookup(const RunSummaryRow& run, const std::string& field) {
  Lookup l;
  l.present = true;
  l.run_column = true;
  if (field == "id") {
    l.value = Value::of_int(run.id);
    return l;
  }
  if (field == "seed") {
    l.value = Value::of_int(run.seed);
    return l;
  }
  const std::pair<const char*, const std::string*> text_columns[] = {
      {"name", &run.name},
      {"status", &run.status},
      {"reason", &run.reason},
      {"device", &run.device},
      {"host", &run.host},
      {"uuid", &run.uuid},
      {"run_key", &run.run_key},
      {"experiment", &run.experiment},
      {"created_at", &run.created_at},
      {"started_at", &run.started_at},
      {"ended_at", &run.ended_at}};
  for (const auto& [name, text] : text_columns)
    if (field == name) {
      l.value = Value::of_string(*text);
      return l;
    }
  l.run_column = false;
  if (const ParamEntry* p = run.param(field)) {
    l.value = param_value(p->value);
    return l;
  }
  if (const double* value = run.summary(field)) {
    l.value = Value::of_float(*value);
    return l;
  }
  l.present = false;
  return l;
}

// ---------------------------------------------------------------------------------------------
// Expression tree

struct Node {
  enum class Kind { And, Or, Not, Compare, IsNull, In, Like };
  Kind kind = Kind::Compare;
  std::unique_ptr<Node> left, right;  // And, Or: both; Not: left
  std::string field;
  Op op = Op::Eq;
  Value value;                // Compare
  std::vector<Value> values;  // In
  std::string pattern;        // Like
  bool negated = false;       // IS NOT NULL, NOT IN, NOT LIKE
};

bool evaluate(const Node& node, const RunSummaryRow& run) {
  switch (node.kind) {
    case Node::Kind::And:
      return evaluate(*node.left, run) && evaluate(*node.right, run);
    case Node::Kind::Or:
      return evaluate(*node.left, run) || evaluate(*node.right, run);
    case Node::Kind::Not:
      return !evaluate(*node.left, run);
    case Node::Kind::Compare: {
      const Lookup l = lookup(run, node.field);
      return l.present && compare(l.value, node.op, node.value);
    }
    case Node::Kind::IsNull:
      return lookup(run, node.field).is_null() != node.negated;
    case Node::Kind::In: {
      const Lookup l = lookup(run, node.field);
      if (!l.present) return false;
      const bool any = std::any_of(node.values.begin(), node.values.end(),
                                   [&](const Value& v) { return compare(l.value, Op::Eq, v); });
      return any != node.negated;
    }
    case Node::Kind::Like: {
      const Lookup l = lookup(run, node.field);
      if (!l.present) return false;
      return like(node.pattern, value_text(l.value)) != node.negated;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Parser

bool is_field_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  return std::isalnum(u) || c == '_' || c == '.' || c == '/' || c == '-' || u >= 0x80;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_keyword(const std::string& word) {
  static const std::set<std::string> keywords = {"and", "or",   "not",  "in",   "like",
                                                 "is",  "null", "true", "false"};
  return keywords.count(lower(word)) > 0;
}

// The 1-based character (code point) number of byte `pos` of `text`.
std::size_t character_number(const std::string& text, std::size_t pos) {
  return 1 + utf8_width(std::string_view(text).substr(0, std::min(pos, text.size())));
}

// "  EXPR\n  ^" with the caret under byte `pos` (tabs kept so that the caret lines up).
std::string caret_lines(const std::string& text, std::size_t pos) {
  std::string shown, caret;
  for (const char c : text) shown += c == '\n' || c == '\r' ? ' ' : c;
  // One caret column per character before `pos` (the decoder's characters, as utf8_width).
  for (std::size_t i = 0; i < std::min(pos, text.size());)
    caret += decode_utf8(text, i) == '\t' ? '\t' : ' ';
  return fmt::format("  {}\n  {}^", shown, caret);
}

class Parser {
 public:
  Parser(const std::string& text, std::vector<std::string>& fields)
      : text_(text), fields_(fields) {}

  std::unique_ptr<Node> parse() {
    skip_ws();
    if (at_end()) return nullptr;
    auto node = parse_or();
    skip_ws();
    if (!at_end()) {
      std::string hint;
      if (text_.compare(pos_, 2, "&&") == 0 || text_.compare(pos_, 2, "||") == 0)
        hint = "; write AND and OR instead of && and ||";
      else if (text_[pos_] == ')')
        hint = "; this ')' has no matching '('";
      fail(pos_, fmt::format("expected AND, OR or the end of the expression after {}, found {}{}",
                             last_, found(), hint));
    }
    return node;
  }

 private:
  const std::string& text_;
  std::vector<std::string>& fields_;
  std::size_t pos_ = 0;
  std::string last_;  // the last token read, quoted, for "after ..." in messages
  // Parsing, evaluating and freeing the tree recurse once per level: bounded, so that a hostile
  // expression (20,000 nested parentheses) is an error, not a stack overflow.
  static constexpr int kMaxDepth = 200;
  static constexpr int kMaxComparisons = 1000;
  int depth_ = 0, comparisons_ = 0;

  struct Deeper {
    Parser& p;
    Deeper(Parser& parser, std::size_t at, const char* what) : p(parser) {
      if (++p.depth_ > kMaxDepth)
        p.fail(at, fmt::format("{} nested more than {} levels deep; expected a flatter "
                               "expression",
                               what, kMaxDepth));
    }
    ~Deeper() { --p.depth_; }
  };

  [[noreturn]] void fail(std::size_t at, const std::string& what) const {
    throw QueryError(fmt::format("--where '{}' at character {}: {}\n{}", text_,
                                 character_number(text_, at), what, caret_lines(text_, at)));
  }

  bool at_end() const { return pos_ >= text_.size(); }

  void skip_ws() {
    while (!at_end() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }

  // The bare word at the cursor (may be empty), not consumed.
  std::string peek_word() const {
    std::size_t end = pos_;
    while (end < text_.size() && is_field_char(text_[end])) ++end;
    return text_.substr(pos_, end - pos_);
  }

  // What is at the cursor, for messages: the word, the quoted text, or the character.
  std::string found() const {
    if (at_end()) return "the end of the expression";
    const std::string word = peek_word();
    if (!word.empty())
      return is_keyword(word) ? fmt::format("keyword '{}'", word) : "'" + word + "'";
    const char c = text_[pos_];
    if (c == '\'' || c == '"' || c == '`') {
      const std::size_t close = text_.find(c, pos_ + 1);
      const std::string quoted =
          text_.substr(pos_, close == std::string::npos ? std::string::npos : close - pos_ + 1);
      return c == '\'' ? fmt::format("the string {}", quoted) : quoted;
    }
    // The whole character (one byte when it is not valid UTF-8).
    const std::size_t len = std::max<std::size_t>(utf8_sequence_length(text_, pos_), 1);
    return "'" + text_.substr(pos_, len) + "'";
  }

  std::string after() const { return last_.empty() ? "" : " after " + last_; }

  bool accept_keyword(const char* keyword) {
    skip_ws();
    const std::string word = peek_word();
    if (word.empty() || lower(word) != keyword) return false;
    pos_ += word.size();
    last_ = "'" + word + "'";
    return true;
  }

  bool accept_char(char c) {
    skip_ws();
    if (at_end() || text_[pos_] != c) return false;
    ++pos_;
    last_ = fmt::format("'{}'", c);
    return true;
  }

  std::unique_ptr<Node> binary(Node::Kind kind, std::unique_ptr<Node> l, std::unique_ptr<Node> r) {
    auto node = std::make_unique<Node>();
    node->kind = kind;
    node->left = std::move(l);
    node->right = std::move(r);
    return node;
  }

  std::unique_ptr<Node> parse_or() {
    auto node = parse_and();
    while (accept_keyword("or")) node = binary(Node::Kind::Or, std::move(node), parse_and());
    return node;
  }

  std::unique_ptr<Node> parse_and() {
    auto node = parse_not();
    while (accept_keyword("and")) node = binary(Node::Kind::And, std::move(node), parse_not());
    return node;
  }

  std::unique_ptr<Node> parse_not() {
    skip_ws();
    const std::size_t at = pos_;
    if (accept_keyword("not")) {
      Deeper deeper(*this, at, "NOT");
      auto node = std::make_unique<Node>();
      node->kind = Node::Kind::Not;
      node->left = parse_not();
      return node;
    }
    return parse_primary();
  }

  std::unique_ptr<Node> parse_primary() {
    skip_ws();
    const std::size_t open = pos_;
    if (accept_char('(')) {
      Deeper deeper(*this, open, "parentheses");
      auto node = parse_or();
      if (!accept_char(')'))
        fail(pos_, fmt::format("expected ')' to close the '(' at character {}{}, found {}",
                               character_number(text_, open), after(), found()));
      return node;
    }
    return parse_comparison();
  }

  // A field name: a bare word, `backquoted` or "double-quoted" (a doubled quote inside stands
  // for one).
  std::string parse_field() {
    skip_ws();
    const std::size_t start = pos_;
    if (!at_end() && (text_[pos_] == '`' || text_[pos_] == '"')) {
      const char quote = text_[pos_];
      std::string name;
      std::size_t i = pos_ + 1;
      for (;; ++i) {
        if (i >= text_.size())
          fail(start, fmt::format("unterminated field name: the {} at character {} has no "
                                  "closing {}",
                                  quote, character_number(text_, start), quote));
        if (text_[i] == quote) {
          if (i + 1 < text_.size() && text_[i + 1] == quote) {
            name += quote;
            ++i;
            continue;
          }
          break;
        }
        name += text_[i];
      }
      if (name.empty()) fail(start, "empty field name; put the field's name between the quotes");
      pos_ = i + 1;
      last_ = "field '" + name + "'";
      return name;
    }
    const std::string word = peek_word();
    if (word.empty() || is_keyword(word)) {
      std::string hint;
      if (is_keyword(word))
        hint = fmt::format("; a field named like a keyword needs backquotes: `{}`", word);
      else if (!at_end() && text_[pos_] == '\'')
        hint = "; field names take backquotes or double quotes, strings single quotes";
      fail(pos_, fmt::format("expected a field name (e.g. target/test/acc or strategy.plugin), "
                             "'(' or NOT{}, found {}{}",
                             after(), found(), hint));
    }
    pos_ += word.size();
    last_ = "field '" + word + "'";
    return word;
  }

  void add_field(const std::string& field) {
    if (std::find(fields_.begin(), fields_.end(), field) == fields_.end()) fields_.push_back(field);
  }

  // A single-quoted string starting at the cursor ('' stands for one quote).
  std::string parse_string() {
    const std::size_t start = pos_;
    std::string s;
    std::size_t i = pos_ + 1;
    for (;; ++i) {
      if (i >= text_.size())
        fail(start, fmt::format("unterminated string: the ' at character {} has no closing ' "
                                "(write '' for a quote inside a string)",
                                character_number(text_, start)));
      if (text_[i] == '\'') {
        if (i + 1 < text_.size() && text_[i + 1] == '\'') {
          s += '\'';
          ++i;
          continue;
        }
        break;
      }
      s += text_[i];
    }
    pos_ = i + 1;
    last_ = "'" + s + "'";
    return s;
  }

  // Tries to read a number at the cursor; returns false (consuming nothing) when the text there
  // is not exactly a number followed by a non-field character.
  bool parse_number(Value& out) {
    std::size_t i = pos_;
    const std::size_t n = text_.size();
    bool negative = false;
    if (i < n && (text_[i] == '+' || text_[i] == '-')) negative = text_[i++] == '-';
    // inf, infinity, nan (any case, optionally signed)
    std::size_t end = i;
    while (end < n && is_field_char(text_[end])) ++end;
    const std::string word = lower(text_.substr(i, end - i));
    if (word == "inf" || word == "infinity" || word == "nan") {
      const double inf = std::numeric_limits<double>::infinity();
      out = Value::of_float(word == "nan" ? std::numeric_limits<double>::quiet_NaN()
                            : negative    ? -inf
                                          : inf);
      last_ = "'" + text_.substr(pos_, end - pos_) + "'";
      pos_ = end;
      return true;
    }
    const std::size_t digits_start = i;
    std::size_t digits = 0;
    bool integral = true;
    while (i < n && std::isdigit(static_cast<unsigned char>(text_[i]))) ++i, ++digits;
    if (i < n && text_[i] == '.') {
      integral = false;
      ++i;
      while (i < n && std::isdigit(static_cast<unsigned char>(text_[i]))) ++i, ++digits;
    }
    if (digits == 0) return false;
    if (i < n && (text_[i] == 'e' || text_[i] == 'E')) {
      std::size_t j = i + 1;
      if (j < n && (text_[j] == '+' || text_[j] == '-')) ++j;
      std::size_t exp_digits = 0;
      while (j < n && std::isdigit(static_cast<unsigned char>(text_[j]))) ++j, ++exp_digits;
      if (exp_digits == 0) return false;
      integral = false;
      i = j;
    }
    // "1.2.3", "2024-01-01", "3abc": a word, not a number
    if (i < n && is_field_char(text_[i])) return false;
    const char* first = text_.data() + digits_start;
    const char* last = text_.data() + i;
    if (integral) {
      uint64_t magnitude = 0;
      auto [ptr, ec] = std::from_chars(first, last, magnitude);
      const uint64_t limit = negative ? uint64_t{1} << 63 : (uint64_t{1} << 63) - 1;
      if (ec == std::errc() && ptr == last && magnitude <= limit) {
        out = Value::of_int(negative ? static_cast<int64_t>(0 - magnitude)
                                     : static_cast<int64_t>(magnitude));
        last_ = "'" + text_.substr(pos_, i - pos_) + "'";
        pos_ = i;
        return true;
      }
    }
    double d = 0;
    auto [ptr, ec] = std::from_chars(first, last, d);
    if (ec == std::errc::result_out_of_range) {
      // from_chars leaves d unchanged when out of range: overflow to inf, underflow to 0
      const auto exp_at = text_.find_first_of("eE", digits_start);
      const bool tiny = exp_at < i && text_[exp_at + 1] == '-';
      d = tiny ? 0.0 : std::numeric_limits<double>::infinity();
    } else if (ec != std::errc() || ptr != last) {
      return false;
    }
    out = Value::of_float(negative ? -d : d);
    last_ = "'" + text_.substr(pos_, i - pos_) + "'";
    pos_ = i;
    return true;
  }

  // A literal value after `op_text` (an operator, '(' or ',' of an IN list).
  Value parse_value(const std::string& op_text) {
    skip_ws();
    const std::string expected = fmt::format(
        "expected a value after '{}' (a number, a 'quoted string', true, false or null)", op_text);
    if (at_end()) fail(pos_, expected + ", found the end of the expression");
    const char c = text_[pos_];
    if (c == '\'') return Value::of_string(parse_string());
    Value number;
    if (parse_number(number)) return number;
    const std::string word = peek_word();
    const std::string w = lower(word);
    if (w == "true" || w == "false") {
      pos_ += word.size();
      last_ = "'" + word + "'";
      return Value::of_bool(w == "true");
    }
    if (w == "null") {
      pos_ += word.size();
      last_ = "'" + word + "'";
      return Value();
    }
    if (!word.empty() && !is_keyword(word))
      fail(pos_, fmt::format("{}, found {}; quote text values: '{}'", expected, found(), word));
    if (c == '"' || c == '`') {
      const std::size_t close = text_.find(c, pos_ + 1);
      const std::string inner =
          text_.substr(pos_ + 1, close == std::string::npos ? std::string::npos : close - pos_ - 1);
      fail(pos_, fmt::format("{}, found {}; strings take single quotes: '{}' ({} quotes a field "
                             "name; comparing two fields is not supported)",
                             expected, found(), inner, c));
    }
    fail(pos_, fmt::format("{}, found {}", expected, found()));
  }

  bool accept_operator(Op& op, std::string& text) {
    skip_ws();
    static const std::pair<const char*, Op> ops[] = {{"==", Op::Eq}, {"!=", Op::Ne}, {"<>", Op::Ne},
                                                     {"<=", Op::Le}, {">=", Op::Ge}, {"=", Op::Eq},
                                                     {"<", Op::Lt},  {">", Op::Gt}};
    for (const auto& [t, o] : ops) {
      const std::size_t len = std::char_traits<char>::length(t);
      if (text_.compare(pos_, len, t) == 0) {
        pos_ += len;
        op = o;
        text = t;
        last_ = fmt::format("'{}'", t);
        return true;
      }
    }
    return false;
  }

  std::unique_ptr<Node> parse_comparison() {
    skip_ws();
    if (++comparisons_ > kMaxComparisons)
      fail(pos_, fmt::format("more than {} comparisons; expected a shorter expression (an "
                             "IN (...) list tests many values at once)",
                             kMaxComparisons));
    auto node = std::make_unique<Node>();
    node->field = parse_field();
    add_field(node->field);
    const std::string field_text = last_;
    if (accept_keyword("is")) {
      node->kind = Node::Kind::IsNull;
      node->negated = accept_keyword("not");
      if (!accept_keyword("null"))
        fail(pos_, fmt::format("expected NULL{}{}, found {}", node->negated ? "" : " or NOT NULL",
                               after(), found()));
      return node;
    }
    const std::size_t not_pos = pos_;
    node->negated = accept_keyword("not");
    if (accept_keyword("in")) {
      node->kind = Node::Kind::In;
      if (!accept_char('('))
        fail(pos_, fmt::format("expected '(' and a list of values{}, e.g. IN ('dann', 'mmd'), "
                               "found {}",
                               after(), found()));
      std::string separator = "(";
      for (;;) {
        skip_ws();
        const std::size_t value_pos = pos_;
        Value v = parse_value(separator);
        if (v.kind == Value::Kind::Null)
          fail(value_pos, fmt::format("null cannot be in an IN list; write ({} IN (...) OR {} IS "
                                      "NULL) instead",
                                      node->field, node->field));
        node->values.push_back(std::move(v));
        if (accept_char(',')) {
          separator = ",";
          continue;
        }
        if (accept_char(')')) break;
        fail(pos_, fmt::format("expected ',' or ')' after the value {} in the IN list, found {}",
                               last_, found()));
      }
      return node;
    }
    if (accept_keyword("like")) {
      node->kind = Node::Kind::Like;
      skip_ws();
      if (at_end() || text_[pos_] != '\'')
        fail(pos_, fmt::format("expected a 'quoted pattern' after {} ('%' matches any text, '_' "
                               "one character), found {}",
                               last_, found()));
      node->pattern = parse_string();
      return node;
    }
    if (node->negated) {
      pos_ = not_pos;
      skip_ws();
      fail(pos_, fmt::format("expected IN, LIKE or an operator after {}; NOT goes before the "
                             "comparison: NOT {} = ...",
                             field_text, node->field));
    }
    std::string op_text;
    if (!accept_operator(node->op, op_text)) {
      std::string hint;
      if (!at_end() && peek_word().empty() && text_[pos_] == '!')
        hint = "; for 'not equal' write != or <>";
      fail(pos_, fmt::format("expected an operator (=, ==, !=, <>, <, <=, >, >=, IN, NOT IN, "
                             "LIKE, NOT LIKE, IS NULL or IS NOT NULL) after {}, found {}{}",
                             field_text, found(), hint));
    }
    const std::size_t value_pos = [&] {
      skip_ws();
      return pos_;
    }();
    node->value = parse_value(op_text);
    if (node->value.kind == Value::Kind::Null) {
      if (node->op == Op::Eq || node->op == Op::Ne) {
        // `field = null` reads as `field IS NULL`, `field != null` as `field IS NOT NULL`
        node->kind = Node::Kind::IsNull;
        node->negated = node->op == Op::Ne;
        return node;
      }
      fail(value_pos, fmt::format("null has no order, so '{} null' is never true; use "
                                  "{} IS NULL or {} IS NOT NULL",
                                  op_text, node->field, node->field));
    }
    node->kind = Node::Kind::Compare;
    return node;
  }
};

// ---------------------------------------------------------------------------------------------
// Sorting

struct SortKey {
  std::string field;
  bool descending = false;
};

[[noreturn]] void sort_error(const std::string& spec, const std::string& what) {
  throw QueryError(
      fmt::format("--sort '{}': {}; write a field, optionally followed by asc or desc, e.g. --sort "
                  "\"target/test/acc desc\"",
                  spec, what));
}

// "field", "field desc", "`field` asc"; several may be separated by commas.
std::vector<SortKey> parse_sort(const std::vector<std::string>& specs) {
  std::vector<SortKey> keys;
  for (const auto& spec : specs) {
    std::size_t i = 0;
    const std::size_t n = spec.size();
    auto skip = [&] {
      while (i < n && std::isspace(static_cast<unsigned char>(spec[i]))) ++i;
    };
    skip();
    if (i == n) sort_error(spec, "expected a field, found nothing");
    while (i < n) {
      SortKey key;
      if (spec[i] == '`' || spec[i] == '"') {
        const char quote = spec[i];
        const std::size_t close = spec.find(quote, i + 1);
        if (close == std::string::npos)
          sort_error(spec, fmt::format("the field's opening {} has no closing {}", quote, quote));
        key.field = spec.substr(i + 1, close - i - 1);
        i = close + 1;
      } else {
        const std::size_t start = i;
        while (i < n && is_field_char(spec[i])) ++i;
        key.field = spec.substr(start, i - start);
        if (key.field.empty())
          sort_error(spec, fmt::format("expected a field, found '{}'", spec.substr(start)));
      }
      if (key.field.empty()) sort_error(spec, "empty field name");
      skip();
      const std::size_t word_start = i;
      while (i < n && is_field_char(spec[i])) ++i;
      const std::string word = spec.substr(word_start, i - word_start);
      if (!word.empty()) {
        const std::string w = lower(word);
        if (w != "asc" && w != "desc")
          sort_error(spec, fmt::format("expected asc or desc after the field '{}', found '{}'",
                                       key.field, word));
        key.descending = w == "desc";
      }
      skip();
      keys.push_back(key);
      if (i < n && spec[i] == ',') {
        ++i;
        skip();
        if (i == n) sort_error(spec, "expected a field after ','");
        continue;
      }
      if (i < n)
        sort_error(spec, fmt::format("expected ',' or the end after the field '{}', found '{}'",
                                     key.field, spec.substr(i)));
    }
  }
  return keys;
}

// Present values first, then NaN, then missing values (in either direction).
int sort_category(const Lookup& l) {
  if (l.is_null()) return 2;
  if (l.value.is_nan()) return 1;
  return 0;
}

int kind_rank(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Bool:
      return 0;
    case Value::Kind::Int:
    case Value::Kind::Float:
      return 1;
    default:
      return 2;
  }
}

// -1, 0 or 1: how `a` orders before `b` under `key`.
int compare_for_sort(const RunSummaryRow& a, const RunSummaryRow& b, const SortKey& key) {
  const Lookup la = lookup(a, key.field), lb = lookup(b, key.field);
  const int ca = sort_category(la), cb = sort_category(lb);
  if (ca != cb) return ca < cb ? -1 : 1;
  if (ca != 0) return 0;
  int c = 0;
  const int ra = kind_rank(la.value), rb = kind_rank(lb.value);
  if (ra != rb) {
    c = ra < rb ? -1 : 1;
  } else {
    bool comparable = false;
    c = three_way(la.value, lb.value, comparable);
  }
  return key.descending ? -c : c;
}

// Every field name some run of `runs` has: run columns, params, summaries.
std::vector<std::string> known_fields(const std::vector<RunSummaryRow>& runs) {
  std::set<std::string> names;
  for (const auto& run : runs) {
    for (const auto& p : run.params) names.insert(p.key);
    for (const auto& s : run.summaries) names.insert(s.first);
  }
  std::vector<std::string> all = run_columns();
  for (const auto& name : names)
    if (!is_run_column(name)) all.push_back(name);
  return all;
}

void check_field(const std::string& option, const std::string& field,
                 const std::vector<std::string>& known, const Store& store) {
  if (std::find(known.begin(), known.end(), field) != known.end()) return;
  const std::string hint = did_you_mean(nearest(field, known));
  throw QueryError(fmt::format(
      "{}: no field '{}' in any run of '{}'; {}", option, field, store.path().string(),
      hint.empty() ? fmt::format("fields are the run columns ({}), params such as "
                                 "strategy.plugin and summaries such as target/test/acc "
                                 "(tlab results show ID lists a run's)",
                                 join(run_columns(), ", "))
                   : hint));
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct RunFilter::Impl {
  std::string text;
  std::unique_ptr<Node> root;  // null: matches every run
  std::vector<std::string> fields;
};

RunFilter::RunFilter() : impl_(std::make_unique<Impl>()) {}
RunFilter::~RunFilter() = default;
RunFilter::RunFilter(RunFilter&&) noexcept = default;
RunFilter& RunFilter::operator=(RunFilter&&) noexcept = default;

RunFilter RunFilter::parse(const std::string& where) {
  RunFilter filter;
  filter.impl_->text = where;
  Parser parser(where, filter.impl_->fields);
  filter.impl_->root = parser.parse();
  return filter;
}

bool RunFilter::matches(const RunSummaryRow& run) const {
  return !impl_ || !impl_->root || evaluate(*impl_->root, run);
}

const std::vector<std::string>& RunFilter::fields() const {
  static const std::vector<std::string> none;
  return impl_ ? impl_->fields : none;
}

namespace {

void check_limit(int64_t limit) {
  if (limit < 0)
    throw QueryError(
        fmt::format("--limit {}: expected a number of runs >= 1, or 0 for no limit", limit));
}

}  // namespace

void for_each_selected_run(Store& store, const QueryOptions& options,
                           const std::function<void(const RunSummaryRow&)>& visit) {
  if (!options.sort.empty()) {
    for (const auto& run : select_runs(store, options)) visit(run);
    return;
  }
  check_limit(options.limit);
  const RunFilter filter = RunFilter::parse(options.where);
  const std::vector<std::string>& fields = filter.fields();
  std::vector<bool> seen(fields.size());
  bool any = false;
  int64_t selected = 0;
  store.for_each_run([&](const RunSummaryRow& run) {
    any = true;
    for (std::size_t i = 0; i < fields.size(); ++i)
      if (!seen[i])
        seen[i] = is_run_column(fields[i]) || run.param(fields[i]) || run.summary(fields[i]);
    if (options.limit > 0 && selected >= options.limit) return;
    if (!filter.matches(run)) return;
    ++selected;
    visit(run);
  });
  // A field no run has is an error, as in select_runs (which names the nearest field: that
  // needs every name, so the runs are read again, on this error path only).
  if (!any || std::all_of(seen.begin(), seen.end(), [](bool s) { return s; })) return;
  const std::vector<std::string> known = known_fields(store.list_runs());
  for (const auto& field : fields) check_field("--where", field, known, store);
}

std::vector<RunSummaryRow> select_runs(Store& store, const QueryOptions& options) {
  check_limit(options.limit);
  const RunFilter filter = RunFilter::parse(options.where);
  const std::vector<SortKey> keys = parse_sort(options.sort);
  std::vector<RunSummaryRow> runs = store.list_runs();
  if (runs.empty()) return runs;
  if (!filter.fields().empty() || !keys.empty()) {
    const std::vector<std::string> known = known_fields(runs);
    for (const auto& field : filter.fields()) check_field("--where", field, known, store);
    for (const auto& key : keys) check_field("--sort", key.field, known, store);
  }

  std::vector<RunSummaryRow> selected = std::move(runs);
  selected.erase(std::remove_if(selected.begin(), selected.end(),
                                [&](const RunSummaryRow& run) { return !filter.matches(run); }),
                 selected.end());
  if (!keys.empty())
    std::stable_sort(selected.begin(), selected.end(),
                     [&](const RunSummaryRow& a, const RunSummaryRow& b) {
                       for (const auto& key : keys) {
                         const int c = compare_for_sort(a, b, key);
                         if (c != 0) return c < 0;
                       }
                       return false;
                     });
  if (options.limit > 0 && selected.size() > static_cast<std::size_t>(options.limit))
    selected.resize(static_cast<std::size_t>(options.limit));
  return selected;
}

}  // namespace tlab
