#pragma once
/// \file params.hpp
/// Typed parameter schemas bound to plain option structs. A plugin declares its options as a
/// struct with defaults and binds each field to a TOML key once; the host validates experiment
/// files against the schema (type, bounds, choices), prints it (`tlab plugins show NAME`) and
/// fills the struct.
///
/// Each option is documented once, by its schema text (`tlab plugins show` prints it); the struct
/// holds the defaults.
///
/// Example:
/// \code
///   struct MlpOptions {
///     std::vector<int64_t> hidden{256, 128};
///     double dropout = 0.0;
///   };
///   tlab::Schema schema() {
///     return tlab::SchemaFor<MlpOptions>()
///         .field("hidden", &MlpOptions::hidden, "widths of the hidden layers").min(1)
///         .field("dropout", &MlpOptions::dropout, "dropout probability").range(0, 0.99);
///   }
/// \endcode

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace tlab {

/// The type of a parameter, as written in TOML.
enum class ParamType { Bool, Int, Float, String, IntList, FloatList, StringList };

/// A parameter value. Lists are homogeneous. The alternatives follow the order of ParamType.
using Value = std::variant<bool, int64_t, double, std::string, std::vector<int64_t>,
                           std::vector<double>, std::vector<std::string>>;

/// Validated parameter values by key, as handed to a plugin factory.
using Params = std::map<std::string, Value>;

/// Name of a type for messages and docs ("int", "list of float", ...).
inline const char* type_name(ParamType t) {
  switch (t) {
    case ParamType::Bool:
      return "bool";
    case ParamType::Int:
      return "int";
    case ParamType::Float:
      return "float";
    case ParamType::String:
      return "string";
    case ParamType::IntList:
      return "list of int";
    case ParamType::FloatList:
      return "list of float";
    case ParamType::StringList:
      return "list of string";
  }
  return "?";
}

/// One parameter: key, type, default, doc and constraints. Bounds apply to numbers and to each
/// element of numeric lists; for lists, `min_size` bounds the length.
struct ParamSpec {
  std::string key;                                  ///< TOML key.
  ParamType type = ParamType::Int;                  ///< Expected type.
  Value default_value;                              ///< Value when the key is absent.
  std::string doc;                                  ///< One line: meaning and unit.
  std::optional<double> min;                        ///< Inclusive lower bound (numbers).
  std::optional<double> max;                        ///< Inclusive upper bound (numbers).
  std::vector<std::string> choices;                 ///< Allowed values (strings); empty = any.
  std::size_t min_size = 0;                         ///< Minimum list length.
  std::function<void(void*, const Value&)> assign;  ///< Writes a value into the option struct.
  std::function<Value(const void*)> get;            ///< Reads the value from the option struct.
};

/// A list of parameter specs, type-erased from the option struct it binds.
struct Schema {
  std::vector<ParamSpec> params;  ///< In declaration order.

  /// The spec for `key`, or nullptr.
  const ParamSpec* find(const std::string& key) const {
    for (const auto& p : params)
      if (p.key == key) return &p;
    return nullptr;
  }
};

namespace detail {
template <class T>
struct TypeOf;
template <>
struct TypeOf<bool> {
  static constexpr ParamType value = ParamType::Bool;
};
template <>
struct TypeOf<int64_t> {
  static constexpr ParamType value = ParamType::Int;
};
template <>
struct TypeOf<double> {
  static constexpr ParamType value = ParamType::Float;
};
template <>
struct TypeOf<std::string> {
  static constexpr ParamType value = ParamType::String;
};
template <>
struct TypeOf<std::vector<int64_t>> {
  static constexpr ParamType value = ParamType::IntList;
};
template <>
struct TypeOf<std::vector<double>> {
  static constexpr ParamType value = ParamType::FloatList;
};
template <>
struct TypeOf<std::vector<std::string>> {
  static constexpr ParamType value = ParamType::StringList;
};
}  // namespace detail

/// Builds a Schema for option struct `O` (which must be default-constructible; its defaults are
/// the parameters' defaults). Supported field types: bool, int64_t, double, std::string and
/// std::vector of int64_t, double or std::string.
template <class O>
class SchemaFor {
 public:
  /// Binds TOML key `key` to field `member`, with a one-line doc.
  template <class T>
  SchemaFor& field(const std::string& key, T O::*member, const std::string& doc) {
    ParamSpec p;
    p.key = key;
    p.type = detail::TypeOf<T>::value;
    p.default_value = Value(O{}.*member);
    p.doc = doc;
    p.assign = [member](void* opts, const Value& v) {
      static_cast<O*>(opts)->*member = std::get<T>(v);
    };
    p.get = [member](const void* opts) { return Value(static_cast<const O*>(opts)->*member); };
    schema_.params.push_back(std::move(p));
    return *this;
  }
  /// Adds the keys of an options fragment held in field `member` (a struct with a static
  /// `schema()`, e.g. tlab::SourceOptions): the fragment's keys, docs and bounds, with the
  /// defaults `O` gives the field.
  template <class F>
  SchemaFor& include(F O::*member) {
    const O defaults{};
    for (ParamSpec p : Schema(F::schema()).params) {
      auto assign = p.assign;
      auto get = p.get;
      p.default_value = get(&(defaults.*member));
      p.assign = [member, assign](void* opts, const Value& v) {
        assign(&(static_cast<O*>(opts)->*member), v);
      };
      p.get = [member, get](const void* opts) {
        return get(&(static_cast<const O*>(opts)->*member));
      };
      schema_.params.push_back(std::move(p));
    }
    return *this;
  }
  /// Inclusive lower bound on the last field (numbers; for lists, each element).
  SchemaFor& min(double lo) { return last().min = lo, *this; }
  /// Inclusive upper bound on the last field.
  SchemaFor& max(double hi) { return last().max = hi, *this; }
  /// Inclusive range on the last field.
  SchemaFor& range(double lo, double hi) { return min(lo).max(hi); }
  /// Allowed values of the last field (a string).
  SchemaFor& choices(std::vector<std::string> c) { return last().choices = std::move(c), *this; }
  /// Minimum length of the last field (a list).
  SchemaFor& min_size(std::size_t n) { return last().min_size = n, *this; }

  /// The finished schema.
  operator Schema() const { return schema_; }  // NOLINT: implicit by design

 private:
  ParamSpec& last() { return schema_.params.back(); }
  Schema schema_;
};

/// Fills option struct `O` from defaults and validated `values` using `schema`.
template <class O>
O bind_options(const Schema& schema, const Params& values) {
  O opts{};
  for (const auto& [key, value] : values)
    if (const ParamSpec* p = schema.find(key)) p->assign(&opts, value);
  return opts;
}

}  // namespace tlab
