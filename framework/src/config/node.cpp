#include "config/node.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <system_error>

#include <fmt/format.h>
#include <toml++/toml.h>
#include <nlohmann/json.hpp>

#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab::cfg {

// ---------------------------------------------------------------------------------------------
// Origins

Origin Origin::in_file(std::string file, uint32_t line, uint32_t column) {
  Origin o;
  o.file = std::move(file);
  o.line = line;
  o.column = column;
  return o;
}

Origin Origin::in_override(std::string text, std::size_t position) {
  Origin o;
  o.override = std::move(text);
  o.position = position;
  return o;
}

std::string Origin::where() const {
  if (!override.empty()) {
    if (position == 0) return fmt::format("override '{}'", override);
    return fmt::format("override '{}' at character {}", override, position);
  }
  if (file.empty()) return "";
  if (line == 0) return file;
  return fmt::format("{}:{}:{}", file, line, column);
}

std::string located(const Origin& origin, const std::string& message) {
  std::string where = origin.where();
  std::string out = where.empty() ? message : where + ": " + message;
  if (origin.chain)
    for (const auto& step : *origin.chain) out += "\n  " + step;
  return out;
}

void fail(const Origin& origin, const std::string& message) {
  throw ConfigError(located(origin, message));
}

// ---------------------------------------------------------------------------------------------
// Nodes

namespace {
Node make(Origin o) {
  Node n;
  n.origin = std::move(o);
  return n;
}
[[noreturn]] void misuse(const char* what, const Node& n) {
  throw std::logic_error(fmt::format("config node: {} called on {}", what, n.describe()));
}
}  // namespace

Node Node::null(Origin o) {
  Node n = make(std::move(o));
  return n;
}
Node Node::boolean(bool v, Origin o) {
  Node n = make(std::move(o));
  n.type_ = Type::Bool;
  n.b_ = v;
  return n;
}
Node Node::integer(int64_t v, Origin o) {
  Node n = make(std::move(o));
  n.type_ = Type::Int;
  n.i_ = v;
  return n;
}
Node Node::floating(double v, Origin o) {
  Node n = make(std::move(o));
  n.type_ = Type::Float;
  n.f_ = v;
  return n;
}
Node Node::string(std::string v, Origin o) {
  Node n = make(std::move(o));
  n.type_ = Type::String;
  n.s_ = std::move(v);
  return n;
}
Node Node::list(Origin o) {
  Node n = make(std::move(o));
  n.type_ = Type::List;
  return n;
}
Node Node::table(Origin o) {
  Node n = make(std::move(o));
  n.type_ = Type::Table;
  return n;
}

bool Node::as_bool() const {
  if (!is_bool()) misuse("as_bool", *this);
  return b_;
}
int64_t Node::as_int() const {
  if (!is_int()) misuse("as_int", *this);
  return i_;
}
double Node::as_number() const {
  if (is_int()) return static_cast<double>(i_);
  if (!is_float()) misuse("as_number", *this);
  return f_;
}
const std::string& Node::as_string() const {
  if (!is_string()) misuse("as_string", *this);
  return s_;
}

std::vector<Node>& Node::items() {
  if (!is_list()) misuse("items", *this);
  return items_;
}
const std::vector<Node>& Node::items() const {
  if (!is_list()) misuse("items", *this);
  return items_;
}
void Node::push_back(Node v) { items().push_back(std::move(v)); }

std::size_t Node::size() const { return is_list() || is_table() ? items_.size() : 0; }

const std::vector<std::string>& Node::keys() const {
  if (!is_table()) misuse("keys", *this);
  return keys_;
}

Node* Node::get(std::string_view key) {
  if (!is_table()) return nullptr;
  auto it = index_.find(std::string(key));
  return it == index_.end() ? nullptr : &items_[it->second];
}
const Node* Node::get(std::string_view key) const { return const_cast<Node*>(this)->get(key); }

Node& Node::set(const std::string& key, Node value) {
  if (!is_table()) misuse("set", *this);
  auto it = index_.find(key);
  if (it != index_.end()) {
    items_[it->second] = std::move(value);
    return items_[it->second];
  }
  index_.emplace(key, items_.size());
  keys_.push_back(key);
  items_.push_back(std::move(value));
  return items_.back();
}

bool Node::erase(std::string_view key) {
  if (!is_table()) return false;
  auto it = index_.find(std::string(key));
  if (it == index_.end()) return false;
  std::size_t i = it->second;
  items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(i));
  keys_.erase(keys_.begin() + static_cast<std::ptrdiff_t>(i));
  index_.erase(it);
  for (auto& [k, j] : index_)
    if (j > i) --j;
  return true;
}

Node& Node::value_at(std::size_t i) {
  if (!is_table()) misuse("value_at", *this);
  return items_.at(i);
}
const Node& Node::value_at(std::size_t i) const { return const_cast<Node*>(this)->value_at(i); }

Node* Node::find(const std::vector<std::string>& path) {
  Node* cur = this;
  for (const auto& p : path) {
    if (cur->is_table()) {
      cur = cur->get(p);
    } else if (cur->is_list()) {
      if (p.empty() || p.size() > 9 ||
          !std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return nullptr;
      std::size_t i = std::stoul(p);
      if (i >= cur->items_.size()) return nullptr;
      cur = &cur->items_[i];
    } else {
      return nullptr;
    }
    if (!cur) return nullptr;
  }
  return cur;
}
const Node* Node::find(const std::vector<std::string>& path) const {
  return const_cast<Node*>(this)->find(path);
}

bool Node::operator==(const Node& o) const {
  if (type_ != o.type_) return false;
  switch (type_) {
    case Type::Null:
      return true;
    case Type::Bool:
      return b_ == o.b_;
    case Type::Int:
      return i_ == o.i_;
    case Type::Float:
      return f_ == o.f_ || (std::isnan(f_) && std::isnan(o.f_));
    case Type::String:
      return s_ == o.s_;
    case Type::List:
      return items_ == o.items_;
    case Type::Table:
      if (keys_.size() != o.keys_.size()) return false;
      for (std::size_t i = 0; i < keys_.size(); ++i) {
        const Node* other = o.get(keys_[i]);
        if (!other || !(items_[i] == *other)) return false;
      }
      return true;
  }
  return false;
}

std::string Node::scalar_text() const {
  switch (type_) {
    case Type::Bool:
      return b_ ? "true" : "false";
    case Type::Int:
      return std::to_string(i_);
    case Type::Float: {
      if (std::isnan(f_)) return "nan";
      if (std::isinf(f_)) return f_ > 0 ? "inf" : "-inf";
      std::string s = fmt::format("{}", f_);
      if (s.find_first_of(".en") == std::string::npos) s += ".0";
      return s;
    }
    case Type::String:
      return s_;
    case Type::Null:
      return "null";
    default:
      return describe();
  }
}

std::string Node::describe() const {
  switch (type_) {
    case Type::Null:
      return "null";
    case Type::Bool:
      return "bool " + scalar_text();
    case Type::Int:
      return "integer " + scalar_text();
    case Type::Float:
      return "float " + scalar_text();
    case Type::String:
      return "string \"" + s_ + "\"";
    case Type::List:
      return "a list";
    case Type::Table:
      return "a table";
  }
  return "?";
}

std::string Node::type_name() const {
  static const char* names[] = {"null", "bool", "int", "float", "string", "list", "table"};
  return names[static_cast<int>(type_)];
}

// ---------------------------------------------------------------------------------------------
// Paths and merging

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = path.find('.', start);
    parts.emplace_back(path.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts;
}

std::string join_path(const std::vector<std::string>& path, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < path.size() && i < n; ++i) {
    if (i) out += '.';
    out += path[i];
  }
  return out;
}

namespace {
void collect_paths(const Node& n, const std::string& prefix, std::vector<std::string>& out) {
  if (n.is_table()) {
    if (!prefix.empty()) out.push_back(prefix);
    for (std::size_t i = 0; i < n.size(); ++i)
      collect_paths(n.value_at(i), prefix.empty() ? n.keys()[i] : prefix + "." + n.keys()[i], out);
  } else if (n.is_list() && !n.items().empty() && n.items()[0].is_table()) {
    out.push_back(prefix);
    for (std::size_t i = 0; i < n.size(); ++i)
      collect_paths(n.items()[i], prefix + "." + std::to_string(i), out);
  } else {
    out.push_back(prefix);
  }
}
}  // namespace

std::vector<std::string> all_paths(const Node& root) {
  std::vector<std::string> out;
  collect_paths(root, "", out);
  return out;
}

void merge(Node& dst, Node src) {
  if (dst.is_table() && src.is_table()) {
    for (std::size_t i = 0; i < src.size(); ++i) {
      const std::string& k = src.keys()[i];
      Node& v = src.value_at(i);
      if (Node* existing = dst.get(k))
        merge(*existing, std::move(v));
      else
        dst.set(k, std::move(v));
    }
    return;
  }
  dst = std::move(src);
}

// ---------------------------------------------------------------------------------------------
// TOML in and out

namespace {

using Chain = std::shared_ptr<const std::vector<std::string>>;

Origin origin_of(const toml::node& n, const std::string& file, const Chain& chain) {
  Origin o = Origin::in_file(file, n.source().begin.line, n.source().begin.column);
  o.chain = chain;
  return o;
}

Node convert(const toml::node& n, const std::string& file, const Chain& chain, std::size_t depth) {
  Origin o = origin_of(n, file, chain);
  if (depth > kMaxNesting)
    fail(o, fmt::format("values are nested more than {} levels deep; flatten the structure",
                        kMaxNesting));
  switch (n.type()) {
    case toml::node_type::table: {
      Node t = Node::table(o);
      // toml++ keeps keys sorted; restore the order they were written in.
      std::vector<std::pair<std::string, const toml::node*>> entries;
      for (auto&& [k, v] : *n.as_table()) entries.emplace_back(std::string(k.str()), &v);
      std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
        const auto& x = a.second->source().begin;
        const auto& y = b.second->source().begin;
        return std::pair(x.line, x.column) < std::pair(y.line, y.column);
      });
      for (const auto& [k, v] : entries) t.set(k, convert(*v, file, chain, depth + 1));
      return t;
    }
    case toml::node_type::array: {
      Node l = Node::list(o);
      for (const auto& e : *n.as_array()) l.push_back(convert(e, file, chain, depth + 1));
      return l;
    }
    case toml::node_type::string:
      return Node::string(n.as_string()->get(), o);
    case toml::node_type::integer:
      return Node::integer(n.as_integer()->get(), o);
    case toml::node_type::floating_point:
      return Node::floating(n.as_floating_point()->get(), o);
    case toml::node_type::boolean:
      return Node::boolean(n.as_boolean()->get(), o);
    default: {
      std::ostringstream os;
      n.visit([&](const auto& x) { os << x; });
      fail(o, fmt::format("dates and times are not config values (got {}); write it as a "
                          "string in quotes",
                          os.str()));
    }
  }
}

// Position (line, column) of the first byte that is not valid UTF-8, or {0, 0}. Columns count
// characters, as the other positions in config messages do.
std::pair<uint32_t, uint32_t> invalid_utf8(std::string_view s) {
  const std::size_t bad = find_invalid_utf8(s);
  if (bad == std::string_view::npos) return {0, 0};
  const std::size_t line_start = bad == 0 ? std::string_view::npos : s.rfind('\n', bad - 1);
  const std::size_t first = line_start == std::string_view::npos ? 0 : line_start + 1;
  const auto line = static_cast<uint32_t>(1 + std::count(s.begin(), s.begin() + first, '\n'));
  const auto col = static_cast<uint32_t>(1 + utf8_width(s.substr(first, bad - first)));
  return {line, col};
}

}  // namespace

namespace {

// TOML and YAML are written here rather than through toml++: toml++ sorts keys and prints
// 0.1 as 0.10000000000000001; a printed config should keep the order it was written in and
// the shortest form of each number.

bool bare_key(const std::string& k) {
  return !k.empty() && std::all_of(k.begin(), k.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f)
          out += fmt::format("\\u{:04X}", c);
        else
          out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string toml_key(const std::string& k) { return bare_key(k) ? k : quoted(k); }

bool is_table_list(const Node& n) {
  return n.is_list() && !n.empty() &&
         std::all_of(n.items().begin(), n.items().end(),
                     [](const Node& e) { return e.is_table(); });
}

std::string toml_inline(const Node& n) {
  switch (n.type()) {
    case Node::Type::String:
      return quoted(n.as_string());
    case Node::Type::List: {
      std::string out = "[";
      for (std::size_t i = 0; i < n.size(); ++i) {
        if (n.items()[i].is_null()) continue;
        out += (out.size() > 1 ? ", " : "") + toml_inline(n.items()[i]);
      }
      return out + "]";
    }
    case Node::Type::Table: {
      std::string out;
      for (std::size_t i = 0; i < n.size(); ++i) {
        if (n.value_at(i).is_null()) continue;
        out +=
            (out.empty() ? "" : ", ") + toml_key(n.keys()[i]) + " = " + toml_inline(n.value_at(i));
      }
      return out.empty() ? "{}" : "{ " + out + " }";
    }
    default:
      return n.scalar_text();
  }
}

void toml_table(const Node& t, const std::string& path, bool header, std::string& out) {
  if (header) out += (out.empty() ? "" : "\n") + ("[" + path + "]\n");
  for (std::size_t i = 0; i < t.size(); ++i) {
    const Node& v = t.value_at(i);
    if (v.is_null() || v.is_table() || is_table_list(v)) continue;
    out += toml_key(t.keys()[i]) + " = " + toml_inline(v) + "\n";
  }
  for (std::size_t i = 0; i < t.size(); ++i) {
    const Node& v = t.value_at(i);
    std::string sub = (path.empty() ? "" : path + ".") + toml_key(t.keys()[i]);
    if (v.is_table()) {
      toml_table(v, sub, true, out);
    } else if (is_table_list(v)) {
      for (const auto& e : v.items()) {
        out += (out.empty() ? "" : "\n") + ("[[" + sub + "]]\n");
        toml_table(e, sub, false, out);
      }
    }
  }
}

std::string yaml_scalar(const Node& n) {
  switch (n.type()) {
    case Node::Type::String: {
      const std::string& s = n.as_string();
      static const char* reserved[] = {"true", "false", "null", "yes", "no", "on",
                                       "off",  "y",     "n",    "~",   ""};
      std::string lower = s;
      std::transform(lower.begin(), lower.end(), lower.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      bool plain = (std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_') &&
                   std::all_of(s.begin(), s.end(),
                               [](char c) {
                                 return std::isalnum(static_cast<unsigned char>(c)) || c == '_' ||
                                        c == '-' || c == '.' || c == '/';
                               }) &&
                   std::none_of(std::begin(reserved), std::end(reserved),
                                [&](const char* r) { return lower == r; });
      return plain ? s : quoted(s);
    }
    case Node::Type::Float: {
      double f = n.as_number();
      if (std::isnan(f)) return ".nan";
      if (std::isinf(f)) return f > 0 ? ".inf" : "-.inf";
      return n.scalar_text();
    }
    case Node::Type::Null:
      return "null";
    default:
      return n.scalar_text();
  }
}

void yaml_node(const Node& n, int indent, std::string& out);

// `key: value` or `key:` + a nested block.
void yaml_entry(const std::string& prefix, const Node& v, int indent, std::string& out) {
  if ((v.is_table() || v.is_list()) && !v.empty()) {
    out += prefix + "\n";
    yaml_node(v, indent + 2, out);
  } else if (v.is_table()) {
    out += prefix + " {}\n";
  } else if (v.is_list()) {
    out += prefix + " []\n";
  } else {
    out += prefix + " " + yaml_scalar(v) + "\n";
  }
}

void yaml_node(const Node& n, int indent, std::string& out) {
  std::string pad(static_cast<std::size_t>(indent), ' ');
  if (n.is_table()) {
    for (std::size_t i = 0; i < n.size(); ++i) {
      if (n.value_at(i).is_null()) continue;
      const std::string& k = n.keys()[i];
      yaml_entry(pad + (bare_key(k) ? k : quoted(k)) + ":", n.value_at(i), indent, out);
    }
    return;
  }
  for (const auto& e : n.items()) {
    if (e.is_table() && !e.empty()) {
      // "- " then the table's entries, the first on the same line.
      std::string block;
      yaml_node(e, indent + 2, block);
      out += pad + "- " + block.substr(static_cast<std::size_t>(indent) + 2);
    } else if (e.is_list() && !e.empty()) {
      out += pad + "-\n";
      yaml_node(e, indent + 2, out);
    } else {
      out += pad + "- " + (e.is_table() ? "{}" : e.is_list() ? "[]" : yaml_scalar(e)) + "\n";
    }
  }
}

}  // namespace

nlohmann::ordered_json to_json(const Node& n) {
  switch (n.type()) {
    case Node::Type::Null:
      return nullptr;
    case Node::Type::Bool:
      return n.as_bool();
    case Node::Type::Int:
      return n.as_int();
    case Node::Type::Float:
      return n.as_number();
    case Node::Type::String:
      return n.as_string();
    case Node::Type::List: {
      auto j = nlohmann::ordered_json::array();
      for (const auto& e : n.items()) j.push_back(to_json(e));
      return j;
    }
    case Node::Type::Table: {
      auto j = nlohmann::ordered_json::object();
      for (std::size_t i = 0; i < n.size(); ++i) j[n.keys()[i]] = to_json(n.value_at(i));
      return j;
    }
  }
  return nullptr;
}

namespace {

// JSON as nlohmann's dump(2) writes it, except that inf and nan, which JSON has no number for,
// are written Infinity, -Infinity and NaN as Python's json module writes and reads them (they
// were null, losing the value).
void json_tree(const Node& n, int indent, std::string& out) {
  const std::string pad(static_cast<std::size_t>(indent) + 2, ' ');
  if (n.is_float() && !std::isfinite(n.as_number())) {
    const double v = n.as_number();
    out += std::isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity";
  } else if (n.is_list() && n.size() > 0) {
    out += "[\n";
    for (std::size_t i = 0; i < n.size(); ++i) {
      out += pad;
      json_tree(n.items()[i], indent + 2, out);
      out += i + 1 < n.size() ? ",\n" : "\n";
    }
    out += std::string(static_cast<std::size_t>(indent), ' ') + "]";
  } else if (n.is_table() && n.size() > 0) {
    out += "{\n";
    for (std::size_t i = 0; i < n.size(); ++i) {
      out += pad + nlohmann::json(n.keys()[i]).dump() + ": ";
      json_tree(n.value_at(i), indent + 2, out);
      out += i + 1 < n.size() ? ",\n" : "\n";
    }
    out += std::string(static_cast<std::size_t>(indent), ' ') + "}";
  } else {
    out += to_json(n).dump();
  }
}

}  // namespace

std::string format_tree(const Node& table, const std::string& format) {
  if (format == "json") {
    std::string out;
    json_tree(table, 0, out);
    return out + "\n";
  }
  std::string out;
  if (!table.is_table()) return out;
  if (format == "yaml") {
    yaml_node(table, 0, out);
    return out.empty() ? "{}\n" : out;
  }
  toml_table(table, "", false, out);
  return out;
}

Node parse_text(std::string_view text, const std::string& name, const Chain& chain) {
  Origin file = Origin::in_file(name);
  file.chain = chain;
  if (text.size() > kMaxConfigFileBytes)
    fail(file, fmt::format("the file is {} bytes, more than the {} MiB allowed for a config file; "
                           "is it the right file?",
                           text.size(), kMaxConfigFileBytes >> 20));
  if (auto [line, col] = invalid_utf8(text); line != 0) {
    Origin at = Origin::in_file(name, line, col);
    at.chain = chain;
    fail(at, "the file is not valid UTF-8 (a config file is TOML text); is it the right file?");
  }
  toml::table doc;
  try {
    doc = toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    Origin at = Origin::in_file(name, b.line, b.column);
    at.chain = chain;
    fail(at, std::string(e.description()));
  }
  return convert(doc, name, chain, 0);
}

Node parse_file(const std::string& path, const Chain& chain) {
  Origin file = Origin::in_file(path);
  file.chain = chain;
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(file, "config file does not exist");
  if (fs::is_directory(path, ec)) fail(file, "is a folder, expected a TOML config file");
  // A device or FIFO (/dev/zero, a named pipe) never ends or blocks: refused before reading.
  if (!fs::is_regular_file(path, ec))
    fail(file, "is not a regular file (a device, FIFO or socket); expected a TOML config file");
  auto size = fs::file_size(path, ec);
  if (!ec && size > kMaxConfigFileBytes)
    fail(file, fmt::format("the file is {} bytes, more than the {} MiB allowed for a config file; "
                           "is it the right file?",
                           size, kMaxConfigFileBytes >> 20));
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(file, "cannot be read (check its permissions)");
  // Read with the bound too: a file that grows while it is read is cut off, not followed.
  std::string text(static_cast<std::size_t>(ec ? kMaxConfigFileBytes : size) + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > kMaxConfigFileBytes)
    fail(file, fmt::format("the file is more than the {} MiB allowed for a config file; is it "
                           "the right file?",
                           kMaxConfigFileBytes >> 20));
  return parse_text(text, path, chain);
}

}  // namespace tlab::cfg
