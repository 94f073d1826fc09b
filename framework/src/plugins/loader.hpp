#pragma once
// Plugin discovery and loading. Libraries are opened with immediate binding and local symbols;
// the ABI stamp is checked before any C++ symbol of the plugin is used; libraries stay loaded
// until the process exits (objects made by a plugin must never outlive its code).

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "tlab/sdk/abi.hpp"
#include "tlab/sdk/plugin.hpp"

namespace tlab {

/// A plugin could not be found, loaded or called. The message names the file or plugin.
class PluginError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A loaded, checked plugin library.
struct LoadedPlugin {
  std::filesystem::path path;    ///< The library file.
  std::string file_hash;         ///< xxh3-64 of the file, hex.
  const Descriptor* descriptor;  ///< Lives as long as the process.
};

/// A file that looked like a plugin but was refused, with the reason.
struct RefusedPlugin {
  std::filesystem::path path;
  std::string reason;
};

/// A plugin hidden by one of the same kind and name in a folder searched earlier.
struct ShadowedPlugin {
  std::filesystem::path path;  ///< The hidden file.
  std::filesystem::path by;    ///< The file that wins.
  std::string kind, name;
};

/// Compares a plugin's stamp with the host's; returns one line per differing field
/// ("SDK ABI version: plugin 2, host 1"), empty when compatible.
std::vector<std::string> abi_differences(const TlabAbiStamp& plugin, const TlabAbiStamp& host);

/// Opens `path` and checks it: file exists, is a shared library, exports a TransferLab stamp
/// that matches the host, and a descriptor whose name equals the file stem. Throws PluginError.
LoadedPlugin load_plugin_file(const std::filesystem::path& path);

/// Finds plugins by kind and name in search folders. Each folder holds
/// `<kind folder>/<name>.so` (e.g. `strategies/finetune.so`) or `<name>.so` directly; earlier
/// folders win.
class PluginLoader {
 public:
  explicit PluginLoader(std::vector<std::filesystem::path> search_dirs);

  /// The default search folders: `--plugin-path` entries, then `TLAB_PLUGIN_PATH` (colon
  /// separated), then `<dir of tlab>/../plugins` and `<dir of tlab>/../lib/tlab/plugins`.
  static std::vector<std::filesystem::path> default_search_dirs(
      const std::vector<std::filesystem::path>& extra);

  /// Loads the plugin `name` of `kind`. Throws PluginError naming the folders searched and the
  /// nearest names ("did you mean ...") when there is none.
  const LoadedPlugin& get(Kind kind, const std::string& name);

  /// Creates an instance with validated `params` (missing keys take their defaults). Errors in
  /// the factory are rethrown as PluginError naming the plugin and its file.
  std::unique_ptr<Plugin> create(Kind kind, const std::string& name, const Params& params);

  /// Typed `create`: `loader.create<Dataset>("digits", {{"domain", std::string("rotated")}})`.
  template <class T>
  std::unique_ptr<T> create(const std::string& name, const Params& params = {}) {
    return std::unique_ptr<T>(static_cast<T*>(create(T::kKind, name, params).release()));
  }

  /// Loads every plugin in the search folders; refused files are returned in `refused`, and
  /// files hidden by one of the same kind and name in an earlier folder in `shadowed`.
  std::vector<const LoadedPlugin*> discover(std::vector<RefusedPlugin>& refused,
                                            std::vector<ShadowedPlugin>* shadowed = nullptr);

  const std::vector<std::filesystem::path>& search_dirs() const { return dirs_; }

 private:
  std::vector<std::filesystem::path> dirs_;
  std::map<std::string, LoadedPlugin> loaded_;  // by canonical path
};

}  // namespace tlab
