#pragma once
// The config tree: TOML-like values that remember where they came from (file:line:col with the
// chain of includes, or a command-line override and the character in it), so that every error
// found after composition, overrides and interpolation can still point at its source.
//
// Independent of LibTorch and of the plugins: the composition code and its fuzz targets use it
// alone.

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace tlab {

/// A malformed, unknown, mistyped or out-of-range setting. The message starts with the
/// location (`file:line:col:` or `override '...' at character N:`) when one is known, and ends
/// with the chain of includes that led there.
class ConfigError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace cfg {

/// Where a value came from.
struct Origin {
  std::string file;          ///< Config file as given (empty when not from a file).
  uint32_t line = 0;         ///< 1-based; 0 when unknown.
  uint32_t column = 0;       ///< 1-based.
  std::string override;      ///< The command-line override it came from (empty otherwise).
  std::size_t position = 0;  ///< 1-based character in `override`.
  /// How the file was reached, innermost first: "included from a.toml:3:12 (defaults entry
  /// backbone=cnn)". Shared between all nodes of one file.
  std::shared_ptr<const std::vector<std::string>> chain;

  static Origin in_file(std::string file, uint32_t line = 0, uint32_t column = 0);
  static Origin in_override(std::string text, std::size_t position);

  /// "file:line:col", "file", "override 'x=1' at character 3", or "" when nothing is known.
  std::string where() const;
  bool known() const { return !file.empty() || !override.empty(); }
};

/// "<where>: <message>" followed by one "\n  included from ..." line per include.
std::string located(const Origin& origin, const std::string& message);
/// Throws ConfigError(located(origin, message)).
[[noreturn]] void fail(const Origin& origin, const std::string& message);

/// A config value: null, bool, int, float, string, list or table (keys in insertion order).
/// Null exists only transiently (an override's `null`); composed trees never hold it.
class Node {
 public:
  enum class Type { Null, Bool, Int, Float, String, List, Table };

  Node() = default;
  static Node null(Origin o = {});
  static Node boolean(bool v, Origin o = {});
  static Node integer(int64_t v, Origin o = {});
  static Node floating(double v, Origin o = {});
  static Node string(std::string v, Origin o = {});
  static Node list(Origin o = {});
  static Node table(Origin o = {});

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::Null; }
  bool is_bool() const { return type_ == Type::Bool; }
  bool is_int() const { return type_ == Type::Int; }
  bool is_float() const { return type_ == Type::Float; }
  bool is_number() const { return type_ == Type::Int || type_ == Type::Float; }
  bool is_string() const { return type_ == Type::String; }
  bool is_list() const { return type_ == Type::List; }
  bool is_table() const { return type_ == Type::Table; }
  bool is_scalar() const { return !is_list() && !is_table() && !is_null(); }

  // Scalars (calling the wrong one throws std::logic_error: a bug, not a user error).
  bool as_bool() const;
  int64_t as_int() const;
  double as_number() const;  ///< Int or Float as double.
  const std::string& as_string() const;

  // Lists.
  std::vector<Node>& items();
  const std::vector<Node>& items() const;
  void push_back(Node v);

  // Tables.
  std::size_t size() const;  ///< Elements of a list or entries of a table; 0 for scalars.
  bool empty() const { return size() == 0; }
  const std::vector<std::string>& keys() const;
  Node* get(std::string_view key);
  const Node* get(std::string_view key) const;
  /// Inserts or replaces `key` (a replaced key keeps its place in the order).
  Node& set(const std::string& key, Node value);
  bool erase(std::string_view key);
  Node& value_at(std::size_t i);  ///< i-th entry of a table, in key order.
  const Node& value_at(std::size_t i) const;

  /// Follows a dotted path (numbers index lists); nullptr when absent.
  const Node* find(const std::vector<std::string>& path) const;
  Node* find(const std::vector<std::string>& path);

  /// Deep equality of values (origins ignored; 1 == 1.0 is false: types differ).
  bool operator==(const Node& other) const;
  bool operator!=(const Node& other) const { return !(*this == other); }

  /// For messages: "integer 3", "float 0.5", "string \"x\"", "bool true", "a list", "a table",
  /// "null".
  std::string describe() const;
  /// Scalar as text in messages and string interpolation: 3, 0.5, x, true.
  std::string scalar_text() const;
  /// Type name: "null", "bool", "int", "float", "string", "list", "table".
  std::string type_name() const;

  Origin origin;

 private:
  Type type_ = Type::Null;
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::string s_;
  std::vector<Node> items_;  // list elements, or table values (parallel to keys_)
  std::vector<std::string> keys_;
  std::unordered_map<std::string, std::size_t> index_;
};

/// Splits "a.b.0.c" at dots. An empty segment is kept (callers report it).
std::vector<std::string> split_path(std::string_view path);
/// Joins path segments with dots.
std::string join_path(const std::vector<std::string>& path, std::size_t n = std::string::npos);

/// Every leaf path in `root` ("train.lr", "adapters.0.plugin"; a list of scalars is one leaf),
/// and every table path, for "did you mean" hints.
std::vector<std::string> all_paths(const Node& root);

/// Merges `src` into `dst`: tables merge key by key, recursively; anything else replaces.
void merge(Node& dst, Node src);

/// The value as JSON, tables in key order (Null and NaN become null).
nlohmann::ordered_json to_json(const Node& value);

/// Text of a table as TOML, YAML or JSON (format: "toml", "yaml", "json"). Null entries are
/// dropped.
std::string format_tree(const Node& table, const std::string& format);

/// Maximum size of a config file and nesting depth of any value (hostile input is refused with
/// a located error, never a crash).
constexpr std::size_t kMaxConfigFileBytes = 8u << 20;
constexpr std::size_t kMaxNesting = 64;

/// Reads and parses a TOML config file into a Node table. `chain` is attached to every node.
/// Errors (missing, a folder, too big, not UTF-8, TOML syntax, duplicate keys, too deep) are
/// ConfigErrors located in the file and followed by the chain.
Node parse_file(const std::string& path,
                const std::shared_ptr<const std::vector<std::string>>& chain = nullptr);
/// The same for text already in memory; `name` stands for the file in messages.
Node parse_text(std::string_view text, const std::string& name,
                const std::shared_ptr<const std::vector<std::string>>& chain = nullptr);

}  // namespace cfg
}  // namespace tlab
