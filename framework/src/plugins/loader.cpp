#include "plugins/loader.hpp"

#include <elf.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include <fmt/format.h>
#include <boost/dll/shared_library.hpp>

#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab {
namespace {

constexpr const char* kRebuildHint =
    "rebuild the plugin against this TransferLab's SDK and LibTorch (in-tree: cmake --build "
    "<build dir>; out of tree: reconfigure its build against this TransferLab, then rebuild)";

// Keys that experiment tables use for the host; a plugin parameter may not take them.
const std::set<std::string> kReservedKeys = {"plugin", "shots", "class_subset", "transform",
                                             "disjoint_classes"};

std::string fixed_string(const char* data, std::size_t size) {
  return std::string(data, strnlen(data, size));
}

// Checks that `path` is a complete 64-bit ELF shared object before dlopen sees it: dlopen maps
// segments past the end of a truncated file and the process dies of SIGBUS on first touch.
// Returns "" when fine, else why not.
std::string check_elf(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  Elf64_Ehdr eh{};
  in.read(reinterpret_cast<char*>(&eh), sizeof eh);
  if (in.gcount() < 4 || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
    return "is not a shared library (no ELF header)";
  if (in.gcount() != sizeof eh || eh.e_ident[EI_CLASS] != ELFCLASS64)
    return "is not a 64-bit ELF shared library";
  if (eh.e_type != ET_DYN) return "is an ELF file but not a shared library";
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  auto within = [&](uint64_t off, uint64_t len) { return off <= size && len <= size - off; };
  if (!within(eh.e_phoff, uint64_t{eh.e_phnum} * eh.e_phentsize) ||
      eh.e_phentsize != sizeof(Elf64_Phdr) ||
      !within(eh.e_shoff, uint64_t{eh.e_shnum} * eh.e_shentsize))
    return fmt::format("is truncated or corrupt (ELF headers point past its {} bytes)", size);
  in.seekg(static_cast<std::streamoff>(eh.e_phoff));
  for (int i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph{};
    in.read(reinterpret_cast<char*>(&ph), sizeof ph);
    if (!in || (ph.p_type == PT_LOAD && !within(ph.p_offset, ph.p_filesz)))
      return fmt::format("is truncated or corrupt (a segment ends past its {} bytes)", size);
  }
  return "";
}

// Reads the exported `tlab_abi_stamp` straight from the file (dynamic symbol table, then the
// bytes of the section holding it), so that a plugin built for another ABI is refused before
// dlopen runs any of its code (static initialisers included). The stamp is constant data with
// no relocations. Returns false when the file exports no such symbol. `check_elf` ran first.
bool read_file_stamp(const fs::path& path, TlabAbiStamp& out) {
  std::ifstream in(path, std::ios::binary);
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  auto read_at = [&](uint64_t off, void* dst, uint64_t len) {
    if (off > size || len > size - off) return false;
    in.seekg(static_cast<std::streamoff>(off));
    in.read(static_cast<char*>(dst), static_cast<std::streamsize>(len));
    return static_cast<bool>(in);
  };
  Elf64_Ehdr eh{};
  if (!read_at(0, &eh, sizeof eh) || eh.e_shentsize != sizeof(Elf64_Shdr)) return false;
  std::vector<Elf64_Shdr> sections(eh.e_shnum);
  if (!read_at(eh.e_shoff, sections.data(), sections.size() * sizeof(Elf64_Shdr))) return false;
  for (const auto& sh : sections) {
    if (sh.sh_type != SHT_DYNSYM || sh.sh_link >= sections.size()) continue;
    const Elf64_Shdr& strtab = sections[sh.sh_link];
    std::string names(strtab.sh_size, '\0');
    if (!read_at(strtab.sh_offset, names.data(), names.size())) return false;
    std::vector<Elf64_Sym> syms(sh.sh_size / sizeof(Elf64_Sym));
    if (!read_at(sh.sh_offset, syms.data(), syms.size() * sizeof(Elf64_Sym))) return false;
    for (const auto& sym : syms) {
      if (sym.st_name >= names.size() || sym.st_shndx == SHN_UNDEF ||
          sym.st_shndx >= sections.size() ||
          std::strcmp(names.c_str() + sym.st_name, "tlab_abi_stamp") != 0)
        continue;
      const Elf64_Shdr& home = sections[sym.st_shndx];
      if (home.sh_type == SHT_NOBITS || sym.st_value < home.sh_addr ||
          sym.st_size < sizeof(TlabAbiStamp))
        return false;
      return read_at(home.sh_offset + (sym.st_value - home.sh_addr), &out, sizeof out);
    }
  }
  return false;
}

PluginError not_a_plugin(const std::string& file) {
  return PluginError(fmt::format(
      "'{}' is a shared library but not a TransferLab plugin (it exports no 'tlab_abi_stamp'); "
      "plugins are built with tlab_add_plugin() and end with TLAB_PLUGIN()",
      file));
}

void check_stamp(const TlabAbiStamp& stamp, const std::string& file) {
  if (stamp.magic != TLAB_ABI_MAGIC || stamp.size < sizeof(TlabAbiStamp))
    throw PluginError(fmt::format(
        "'{}' exports 'tlab_abi_stamp' but it is not a TransferLab stamp (magic {:#018x}, size "
        "{}; expected magic {:#018x}, size >= {})",
        file, stamp.magic, stamp.size, TLAB_ABI_MAGIC, sizeof(TlabAbiStamp)));
  auto diffs = abi_differences(stamp, kAbiStamp);
  if (!diffs.empty())
    throw PluginError(
        fmt::format("plugin '{}' was built for another ABI and was not loaded:\n  {}\nTo fix: {}",
                    file, join(diffs, "\n  "), kRebuildHint));
}

std::vector<std::string> plugin_stems(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".so") out.push_back(e.path().stem().string());
  return out;
}

}  // namespace

std::vector<std::string> abi_differences(const TlabAbiStamp& plugin, const TlabAbiStamp& host) {
  std::vector<std::string> d;
  if (plugin.sdk_abi != host.sdk_abi)
    d.push_back(fmt::format("SDK ABI version: plugin {}, host {}", plugin.sdk_abi, host.sdk_abi));
  auto pt = fixed_string(plugin.torch_version, sizeof(plugin.torch_version));
  auto ht = fixed_string(host.torch_version, sizeof(host.torch_version));
  if (pt != ht) d.push_back(fmt::format("LibTorch version: plugin \"{}\", host \"{}\"", pt, ht));
  if (plugin.cxx11_abi != host.cxx11_abi)
    d.push_back(fmt::format("C++11 ABI (_GLIBCXX_USE_CXX11_ABI): plugin {}, host {}",
                            plugin.cxx11_abi, host.cxx11_abi));
  auto pc = fixed_string(plugin.compiler, sizeof(plugin.compiler));
  auto hc = fixed_string(host.compiler, sizeof(host.compiler));
  if (pc != hc) d.push_back(fmt::format("compiler: plugin \"{}\", host \"{}\"", pc, hc));
  if (plugin.compiler_major != host.compiler_major)
    d.push_back(fmt::format("compiler major version: plugin {}, host {}", plugin.compiler_major,
                            host.compiler_major));
  return d;
}

LoadedPlugin load_plugin_file(const fs::path& path) {
  const std::string file = path.string();
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw PluginError(fmt::format("plugin file '{}' does not exist", file));
  if (!fs::is_regular_file(path, ec))
    throw PluginError(fmt::format("plugin file '{}' is not a regular file", file));
  if (std::string why = check_elf(path); !why.empty())
    throw PluginError(fmt::format(
        "'{}' {}; plugin folders may only hold plugins built with tlab_add_plugin()", file, why));

  TlabAbiStamp file_stamp{};
  if (!read_file_stamp(path, file_stamp)) throw not_a_plugin(file);
  check_stamp(file_stamp, file);  // before dlopen: a mismatched plugin runs no code at all

  // Immediate binding: a missing symbol fails here, not mid-run. Local: plugins cannot
  // interpose each other's symbols. The library is never unloaded (see DESIGN.md).
  auto* lib = new boost::dll::shared_library();
  try {
    lib->load(path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  } catch (const std::exception& e) {
    delete lib;
    std::string why = e.what();
    std::string hint = why.find("undefined symbol") != std::string::npos
                           ? std::string(
                                 "; it uses a symbol that neither the host nor its "
                                 "libraries provide: ") +
                                 kRebuildHint
                           : std::string("; is it a complete, uncorrupted shared library?");
    throw PluginError(fmt::format("cannot load plugin '{}': {}{}", file, why, hint));
  }
  if (!lib->has("tlab_abi_stamp")) throw not_a_plugin(file);
  check_stamp(lib->get<const TlabAbiStamp>("tlab_abi_stamp"), file);  // the loaded copy
  if (!lib->has("tlab_plugin_descriptor"))
    throw PluginError(fmt::format(
        "plugin '{}' has an ABI stamp but no 'tlab_plugin_descriptor'; end the plugin's source "
        "with TLAB_PLUGIN(Class, \"name\", \"version\", \"summary\")",
        file));

  const Descriptor* d = nullptr;
  try {
    d = lib->get<const Descriptor*()>("tlab_plugin_descriptor")();
  } catch (const std::exception& e) {
    throw PluginError(fmt::format("plugin '{}': describing itself failed: {}", file, e.what()));
  } catch (...) {
    throw PluginError(
        fmt::format("plugin '{}': describing itself threw a non-standard exception", file));
  }
  if (d == nullptr) throw PluginError(fmt::format("plugin '{}' returned no descriptor", file));
  const std::string stem = path.stem().string();
  if (d->name != stem)
    throw PluginError(fmt::format(
        "plugin '{}' calls itself '{}' but its file is named '{}.so'; a plugin's name must equal "
        "its file stem: rename the file or change the name in TLAB_PLUGIN()",
        file, d->name, stem));
  if (d->version.empty())
    throw PluginError(fmt::format("plugin '{}' has an empty version in TLAB_PLUGIN()", file));
  for (const auto& p : d->schema.params)
    if (kReservedKeys.count(p.key))
      throw PluginError(fmt::format(
          "plugin '{}' declares parameter '{}', a key reserved for the host ({}); rename it", file,
          p.key, join({kReservedKeys.begin(), kReservedKeys.end()}, ", ", "'")));
  return LoadedPlugin{path, hash_file(path), d};
}

PluginLoader::PluginLoader(std::vector<fs::path> search_dirs) : dirs_(std::move(search_dirs)) {
  // Absolute: a run records its plugins' paths, which must not depend on the working folder.
  std::error_code ec;
  for (auto& dir : dirs_) {
    fs::path absolute = fs::absolute(dir, ec);
    if (!ec) dir = absolute.lexically_normal();
  }
}

std::vector<fs::path> PluginLoader::default_search_dirs(const std::vector<fs::path>& extra) {
  std::vector<fs::path> dirs = extra;
  if (const char* env = std::getenv("TLAB_PLUGIN_PATH")) {
    std::string s = env;
    std::size_t start = 0;
    while (start <= s.size()) {
      std::size_t end = s.find(':', start);
      if (end == std::string::npos) end = s.size();
      if (end > start) dirs.emplace_back(s.substr(start, end - start));
      start = end + 1;
    }
  }
  fs::path exe = executable_dir();
  dirs.push_back(exe.parent_path() / "plugins");
  dirs.push_back(exe.parent_path() / "lib" / "tlab" / "plugins");
  return dirs;
}

const LoadedPlugin& PluginLoader::get(Kind kind, const std::string& name) {
  // A name is a file stem, never a path: "../x" or "/tmp/x" must not reach the file system.
  bool valid = !name.empty() && name.size() <= 128;
  for (char ch : name) valid = valid && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_');
  if (!valid)
    throw PluginError(fmt::format(
        "'{}' is not a valid plugin name; names use only letters, digits and '_' (a plugin is "
        "chosen by name, not by path: add its folder with --plugin-path)",
        name));
  std::error_code ec;
  std::vector<std::string> other_kinds;  // files of that name that are another kind of plugin
  for (const auto& dir : dirs_) {
    for (const auto& file : {dir / kind_folder(kind) / (name + ".so"), dir / (name + ".so")}) {
      if (!fs::exists(file, ec)) continue;
      std::string key = fs::weakly_canonical(file, ec).string();
      auto it = loaded_.find(key);
      if (it == loaded_.end()) it = loaded_.emplace(key, load_plugin_file(file)).first;
      if (it->second.descriptor->kind == kind) return it->second;
      other_kinds.push_back(
          fmt::format("'{}' is a {}", file.string(), kind_name(it->second.descriptor->kind)));
    }
  }
  std::vector<std::string> known;
  for (const auto& dir : dirs_) {
    for (auto& s : plugin_stems(dir / (kind_folder(kind)))) known.push_back(s);
  }
  std::vector<std::string> searched;
  for (const auto& dir : dirs_) searched.push_back(dir.string());
  std::string hint = did_you_mean(nearest(name, known));
  throw PluginError(fmt::format(
      "no {} plugin named '{}'{}{}; available: {}; searched: {} (add folders with --plugin-path "
      "or TLAB_PLUGIN_PATH){}",
      kind_name(kind), name, hint.empty() ? "" : ": ", hint,
      known.empty() ? "none" : join(known, ", ", "'"), join(searched, ", ", "'"),
      other_kinds.empty() ? "" : "; not of that kind: " + join(other_kinds, ", ")));
}

std::unique_ptr<Plugin> PluginLoader::create(Kind kind, const std::string& name,
                                             const Params& params) {
  const LoadedPlugin& p = get(kind, name);
  // Experiment files are validated with locations before this; this guards direct callers.
  const Schema& schema = p.descriptor->schema;
  for (const auto& [key, value] : params) {
    const ParamSpec* spec = schema.find(key);
    if (!spec) {
      std::vector<std::string> keys;
      for (const auto& s : schema.params) keys.push_back(s.key);
      std::string hint = did_you_mean(nearest(key, keys));
      throw PluginError(fmt::format("{} plugin '{}' has no parameter '{}'{}{}; valid: {}",
                                    kind_name(kind), name, key, hint.empty() ? "" : ": ", hint,
                                    keys.empty() ? "none" : join(keys, ", ", "'")));
    }
    // Value's alternatives are declared in the order of ParamType.
    if (value.index() != static_cast<std::size_t>(spec->type))
      throw PluginError(fmt::format("{} plugin '{}': parameter '{}' must be {}", kind_name(kind),
                                    name, key, type_name(spec->type)));
  }
  std::unique_ptr<Plugin> made;
  try {
    made = p.descriptor->create(params);
  } catch (const std::exception& e) {
    throw PluginError(fmt::format("{} plugin '{}' ('{}') failed to create an instance: {}",
                                  kind_name(kind), name, p.path.string(), e.what()));
  } catch (...) {
    throw PluginError(
        fmt::format("{} plugin '{}' ('{}') failed to create an instance: non-standard exception",
                    kind_name(kind), name, p.path.string()));
  }
  if (!made || made->kind() != kind)
    throw PluginError(fmt::format("{} plugin '{}' ('{}') created no {} instance", kind_name(kind),
                                  name, p.path.string(), kind_name(kind)));
  return made;
}

std::vector<const LoadedPlugin*> PluginLoader::discover(std::vector<RefusedPlugin>& refused,
                                                        std::vector<ShadowedPlugin>* shadowed) {
  std::vector<const LoadedPlugin*> out;
  std::map<std::string, fs::path> seen;  // kind/name -> the file that wins: earlier folders
  std::error_code ec;
  for (const auto& dir : dirs_) {
    std::vector<fs::path> files;
    for (const char* k : {"backbones", "adapters", "strategies", "datasets"})
      for (const auto& s : plugin_stems(dir / k)) files.push_back(dir / k / (s + ".so"));
    for (const auto& s : plugin_stems(dir)) files.push_back(dir / (s + ".so"));
    for (const auto& file : files) {
      std::string key = fs::weakly_canonical(file, ec).string();
      try {
        auto it = loaded_.find(key);
        if (it == loaded_.end()) it = loaded_.emplace(key, load_plugin_file(file)).first;
        const auto* d = it->second.descriptor;
        const auto [first, inserted] =
            seen.emplace(std::string(kind_name(d->kind)) + "/" + d->name, it->second.path);
        if (inserted)
          out.push_back(&it->second);
        else if (shadowed && fs::weakly_canonical(first->second, ec).string() != key)
          shadowed->push_back({file, first->second, kind_name(d->kind), d->name});
      } catch (const PluginError& e) {
        refused.push_back({file, e.what()});
      }
    }
  }
  return out;
}

}  // namespace tlab
