#pragma once
/// \file plugin.hpp
/// The plugin contract: a base class, a descriptor, and the one export macro. Each plugin
/// library exports exactly two C symbols: `tlab_abi_stamp` (checked before anything else) and
/// `tlab_plugin_descriptor` (kind, name, version, summary, schema, factory).
///
/// Example (the last line of a plugin's .cpp):
/// \code
///   TLAB_PLUGIN(LinearHead, "linear_head", "1.0.0", "Linear classifier on the features")
/// \endcode
/// where `LinearHead` derives from one of Backbone, Adapter, Strategy or Dataset and either has a
/// nested `Options` struct, a static `schema()` and a constructor taking `Options`, or has no
/// options at all (no `Options`: an empty schema and the default constructor).

#include <memory>
#include <string>
#include <type_traits>

#include "tlab/sdk/abi.hpp"
#include "tlab/sdk/params.hpp"

namespace tlab {

/// The four kinds of plugin. A plugin's file is `<kind folder>/<name>.so` (see kind_folder).
enum class Kind { Backbone, Adapter, Strategy, Dataset };

/// "backbone", "adapter", "strategy" or "dataset".
inline const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Backbone:
      return "backbone";
    case Kind::Adapter:
      return "adapter";
    case Kind::Strategy:
      return "strategy";
    case Kind::Dataset:
      return "dataset";
  }
  return "?";
}

/// Folder of a kind's plugins: "backbones", "adapters", "strategies" or "datasets".
inline const char* kind_folder(Kind k) {
  switch (k) {
    case Kind::Backbone:
      return "backbones";
    case Kind::Adapter:
      return "adapters";
    case Kind::Strategy:
      return "strategies";
    case Kind::Dataset:
      return "datasets";
  }
  return "?";
}

/// Base of every plugin instance.
class Plugin {
 public:
  virtual ~Plugin() = default;
  /// The kind this instance implements.
  virtual Kind kind() const = 0;
};

/// What a plugin library describes about itself.
struct Descriptor {
  Kind kind;            ///< Which interface `create` returns.
  std::string name;     ///< Must equal the library's file stem.
  std::string version;  ///< The plugin's own version, recorded with every run.
  std::string summary;  ///< One line for `tlab plugins`.
  Schema schema;        ///< Parameters accepted by `create`.
  /// Builds an instance from validated parameters; may throw on invalid combinations.
  std::unique_ptr<Plugin> (*create)(const Params& params);
};

namespace detail {
template <class C, class = void>
struct HasOptions : std::false_type {};
template <class C>
struct HasOptions<C, std::void_t<typename C::Options>> : std::true_type {};

/// The schema of plugin class `C`: C::schema(), or empty for a class without Options.
template <class C>
Schema schema_of() {
  if constexpr (HasOptions<C>::value)
    return C::schema();
  else
    return {};
}

/// A new `C` from validated parameters.
template <class C>
std::unique_ptr<Plugin> create(const Params& params) {
  if constexpr (HasOptions<C>::value)
    return std::make_unique<C>(bind_options<typename C::Options>(C::schema(), params));
  else
    return std::make_unique<C>();
}
}  // namespace detail

}  // namespace tlab

/// Exports plugin class `CLASS` under `NAME`. Produces exactly two C-linkage symbols.
#define TLAB_PLUGIN(CLASS, NAME, VERSION, SUMMARY)                                      \
  extern "C" __attribute__((visibility("default"))) const TlabAbiStamp tlab_abi_stamp = \
      tlab::kAbiStamp;                                                                  \
  extern "C" __attribute__((visibility("default"))) const tlab::Descriptor*             \
  tlab_plugin_descriptor() {                                                            \
    static const tlab::Descriptor d{CLASS::kKind,                                       \
                                    NAME,                                               \
                                    VERSION,                                            \
                                    SUMMARY,                                            \
                                    tlab::detail::schema_of<CLASS>(),                   \
                                    &tlab::detail::create<CLASS>};                      \
    return &d;                                                                          \
  }
