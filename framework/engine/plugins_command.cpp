// `tlab plugins [show NAME]` and `tlab config EXPERIMENT` in the training engine: both open the
// plugins (their schemas validate a composed config). The front parses the command line.

#include <algorithm>
#include <iostream>

#include <fmt/format.h>

#include "commands.hpp"
#include "config/experiment.hpp"
#include "errors.hpp"
#include "plugins/loader.hpp"
#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab::engine {
namespace {

std::string value_toml(const Value& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>)
          return x ? "true" : "false";
        else if constexpr (std::is_same_v<T, int64_t>)
          return std::to_string(x);
        else if constexpr (std::is_same_v<T, double>) {
          std::string s = fmt::format("{}", x);
          return s.find_first_of(".e") == std::string::npos ? s + ".0" : s;
        } else if constexpr (std::is_same_v<T, std::string>)
          return "\"" + x + "\"";
        else {
          std::vector<std::string> items;
          for (const auto& e : x) items.push_back(value_toml(Value(e)));
          return "[" + join(items, ", ") + "]";
        }
      },
      v);
}

std::string constraints(const ParamSpec& p) {
  std::vector<std::string> c;
  if (p.min && p.max)
    c.push_back(fmt::format("in [{}, {}]", *p.min, *p.max));
  else if (p.min)
    c.push_back(fmt::format(">= {}", *p.min));
  else if (p.max)
    c.push_back(fmt::format("<= {}", *p.max));
  if (!p.choices.empty()) c.push_back("one of " + join(p.choices, ", "));
  if (p.min_size) c.push_back(fmt::format("at least {} item(s)", p.min_size));
  return join(c, "; ");
}

int cmd_plugins_list(PluginLoader& loader) {
  std::vector<RefusedPlugin> refused;
  std::vector<ShadowedPlugin> shadowed;
  auto found = loader.discover(refused, &shadowed);
  std::stable_sort(found.begin(), found.end(), [](const LoadedPlugin* a, const LoadedPlugin* b) {
    return std::pair(a->descriptor->kind, a->descriptor->name) <
           std::pair(b->descriptor->kind, b->descriptor->name);
  });
  std::size_t name_w = 4, version_w = 7, summary_w = 7;
  for (const auto* p : found) {
    name_w = std::max(name_w, p->descriptor->name.size());
    version_w = std::max(version_w, p->descriptor->version.size());
    summary_w = std::max(summary_w, p->descriptor->summary.size());
  }
  auto row = [&](const std::string& kind, const std::string& name, const std::string& version,
                 const std::string& summary, const std::string& path) {
    std::cout << fmt::format("{:<9} {:<{}} {:<{}} {:<{}} {}\n", kind, name, name_w, version,
                             version_w, summary, summary_w, path);
  };
  row("kind", "name", "version", "summary", "path");
  for (const auto* p : found)
    row(kind_name(p->descriptor->kind), p->descriptor->name, p->descriptor->version,
        p->descriptor->summary, p->path.string());
  if (!shadowed.empty()) {
    std::cout << "\nshadowed:\n";
    for (const auto& s : shadowed)
      std::cout << fmt::format(
          "  {} {}: {} is shadowed by {} (the first folder in the search path wins: "
          "--plugin-path folders in order, then TLAB_PLUGIN_PATH, then tlab's own)\n",
          s.kind, s.name, s.path.string(), s.by.string());
  }
  if (!refused.empty()) {
    std::cout << "\nrefused:\n";
    for (const auto& r : refused) std::cout << "  " << r.path.string() << ": " << r.reason << "\n";
  }
  if (found.empty())
    std::cout << "\nno plugins found; searched: "
              << join(
                     [&] {
                       std::vector<std::string> d;
                       for (const auto& s : loader.search_dirs()) d.push_back(s.string());
                       return d;
                     }(),
                     ", ", "'")
              << "\n";
  return 0;
}

int cmd_plugins_show(PluginLoader& loader, const std::string& name) {
  std::vector<const LoadedPlugin*> matches;
  for (Kind k : {Kind::Dataset, Kind::Backbone, Kind::Adapter, Kind::Strategy}) {
    try {
      matches.push_back(&loader.get(k, name));
    } catch (const PluginError& e) {
      if (std::string(e.what()).rfind("no ", 0) != 0) throw;  // found but refused
    }
  }
  if (matches.empty()) {
    std::vector<RefusedPlugin> refused;
    std::vector<std::string> names;
    for (const auto* p : loader.discover(refused)) names.push_back(p->descriptor->name);
    std::string hint = did_you_mean(nearest(name, names));
    throw PluginError(fmt::format("no plugin named '{}'{}{}; list them with: tlab plugins", name,
                                  hint.empty() ? "" : ": ", hint));
  }
  for (const auto* p : matches) {
    const Descriptor& d = *p->descriptor;
    std::cout << fmt::format("{} {} {} — {}\nfile: {}\nhash: {}\n\n", kind_name(d.kind), d.name,
                             d.version, d.summary, p->path.string(), p->file_hash);
    std::cout << fmt::format("{:<16} {:<14} {:<16} {:<28} {}\n", "parameter", "type", "default",
                             "constraints", "meaning");
    for (const auto& s : d.schema.params)
      std::cout << fmt::format("{:<16} {:<14} {:<16} {:<28} {}\n", s.key, type_name(s.type),
                               value_toml(s.default_value), constraints(s), s.doc);
    std::string table = d.kind == Kind::Dataset    ? "[target]"
                        : d.kind == Kind::Backbone ? "[backbone]"
                        : d.kind == Kind::Adapter  ? "[[adapters]]"
                                                   : "[strategy]";
    std::cout << "\nSample TOML (defaults):\n" << table << "\nplugin = \"" << d.name << "\"\n";
    if (d.kind == Kind::Dataset)
      std::cout << "shots = 0  # labelled examples per class (0 = all)\n";
    for (const auto& s : d.schema.params)
      std::cout << s.key << " = " << value_toml(s.default_value) << "  # " << s.doc << "\n";
    if (d.kind == Kind::Dataset)  // the host's domain keys, for any image dataset
      std::cout << "# class_subset = [5, 7, 9]  # keep these labels, numbered 0, 1, ...\n"
                   "# [target.transform]        # rotate (an angle, or a list: one domain each), "
                   "hflip,\n"
                   "#                           # vflip, elastic, blur, contrast, invert, jpeg, "
                   "noise, color,\n"
                   "#                           # corruption + severity (docs/models.md)\n";
    std::cout << "\n";
  }
  return 0;
}

}  // namespace

int plugins(const Globals& g, const PluginsArgs& a) {
  PluginLoader loader(plugin_search_dirs(g));
  return a.show.empty() ? cmd_plugins_list(loader) : cmd_plugins_show(loader, a.show);
}

int config(const Globals& g, const ConfigArgs& a) {
  if (a.experiment.empty())
    throw cli::UsageError("tlab config needs an experiment file (or --groups)");
  PluginLoader loader(plugin_search_dirs(g));
  LoadOptions load_options;
  load_options.config_dirs.assign(a.config_dirs.begin(), a.config_dirs.end());
  load_options.multirun = a.multirun;
  auto composition = compose_experiment(a.experiment, a.overrides, loader, load_options);
  cfg::Node shown = a.resolve ? cfg::resolve(composition.config) : composition.config;
  std::cout << cfg::format_tree(shown, a.format);
  return 0;
}

}  // namespace tlab::engine
