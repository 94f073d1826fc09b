// One file (~1,100 lines) because composition is one algorithm over one tree: the defaults list,
// config groups and packages, overrides, merging and ${...} interpolation call each other
// (a group choice can come from an override, an interpolation from a group) and share the
// origin-tracking helpers; the sections below follow that order.
#include "config/compose.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <set>
#include <system_error>

#include <fmt/format.h>

#include "tlab/sdk/random.hpp"
#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab::cfg {
namespace {

using Chain = std::shared_ptr<const std::vector<std::string>>;

constexpr std::size_t kMaxIncludeDepth = 32;
/// Interpolations may copy each other (a = "${b}${b}", b = "${c}${c}", ...) or form long chains
/// (a = "${b}", b = "${c}", ...): both are capped so that a small file can neither take all
/// memory nor overflow the stack.
constexpr std::size_t kMaxInterpolatedBytes = 64u << 20;
constexpr std::size_t kMaxInterpolationDepth = 1000;

bool is_key_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
}

/// "backbone" for "backbone", "dataset.digits" for "dataset/digits": where a group's option
/// goes by default (Hydra's _group_ package).
std::string default_package(const std::string& group) {
  std::string p = group;
  std::replace(p.begin(), p.end(), '/', '.');
  return p;
}

std::string choice_key(const std::string& group, const std::string& package) {
  return package == default_package(group) ? group : group + "@" + package;
}

// ---------------------------------------------------------------------------------------------
// Placing and editing values by path

[[noreturn]] void path_error(const Origin& at, const std::string& key, const std::string& msg) {
  fail(at, fmt::format("'{}': {}", key, msg));
}

bool is_index(const std::string& s) {
  return !s.empty() && s.size() <= 9 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

void check_segments(const std::vector<std::string>& path, const std::string& key,
                    const Origin& at) {
  for (const auto& p : path)
    if (p.empty())
      path_error(at, key,
                 "has an empty key segment (two dots, or a leading/trailing "
                 "dot)");
  if (path.size() > kMaxNesting)
    path_error(at, key,
               fmt::format("has {} segments; config values nest at most {} levels deep",
                           path.size(), kMaxNesting));
}

/// Refuses a value placed `levels` deep (the top table's keys are 1 deep) that would nest
/// deeper than a config file may, or that holds a null in a list or table: composed trees hold
/// no null, and the printed config must read back as the same tree.
void check_placed(const Node& v, std::size_t levels, const std::string& key, const Origin& at) {
  if (levels > kMaxNesting)
    path_error(at, key, fmt::format("nests values more than {} levels deep", kMaxNesting));
  if (!v.is_list() && !v.is_table()) return;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const Node& c = v.is_list() ? v.items()[i] : v.value_at(i);
    if (c.is_null())
      path_error(at, key, "null cannot be an element of a list or table; leave the element out");
    check_placed(c, levels + 1, key, at);
  }
}

/// The node at `path`, creating tables on the way (and list elements at index == size when
/// `extend`); fails where a segment crosses a value that is not a table or list.
Node& make_path(Node& root, const std::vector<std::string>& path, const std::string& key,
                const Origin& at, bool extend = true) {
  Node* cur = &root;
  for (std::size_t i = 0; i < path.size(); ++i) {
    const std::string& p = path[i];
    if (cur->is_table()) {
      Node* next = cur->get(p);
      // A missing step is created as a table, or as a list when the next step is an index
      // ("adapter@adapters.0" places an option as the first element of `adapters`).
      bool list = i + 1 < path.size() && is_index(path[i + 1]);
      if (!next) next = &cur->set(p, list ? Node::list(at) : Node::table(at));
      cur = next;
    } else if (cur->is_list()) {
      if (!is_index(p))
        path_error(at, key,
                   fmt::format("'{}' is a list; '{}' must be an index (0, 1, ...)",
                               join_path(path, i), p));
      std::size_t idx = std::stoul(p);
      auto& items = cur->items();
      if (idx > items.size() || (idx == items.size() && !extend))
        path_error(at, key,
                   fmt::format("index {} is past the end of '{}', a list of {}", idx,
                               join_path(path, i), items.size()));
      if (idx == items.size()) items.push_back(Node::table(at));
      cur = &items[idx];
    } else {
      path_error(at, key,
                 fmt::format("'{}' is {}, not a table; it cannot hold '{}'", join_path(path, i),
                             cur->describe(), p));
    }
  }
  return *cur;
}

/// `paths` without the ancestors of `key` ("train" is no useful hint for "train.lrr").
std::vector<std::string> not_ancestors(const std::string& key, std::vector<std::string> paths) {
  paths.erase(std::remove_if(paths.begin(), paths.end(),
                             [&](const std::string& p) { return key.rfind(p + ".", 0) == 0; }),
              paths.end());
  return paths;
}

/// Hint for a key that does not exist: the nearest existing keys.
std::string missing_key_message(const Node& root, const std::string& key,
                                const std::vector<std::string>& extra) {
  std::vector<std::string> known = all_paths(root);
  known.insert(known.end(), extra.begin(), extra.end());
  std::string hint = did_you_mean(nearest(key, not_ancestors(key, known)));
  return fmt::format("key '{}' does not exist in the config; {}", key,
                     hint.empty() ? "print the config's keys with: tlab config EXPERIMENT" : hint);
}

/// Applies one value assignment (not a group choice) to `root`.
void apply_value(Node& root, Override::Op op, const std::string& key, const Node* value,
                 const Origin& at, const SchemaKeys& schema_keys) {
  auto path = split_path(key);
  check_segments(path, key, at);
  if (value) check_placed(*value, path.size(), key, at);
  Node* existing = root.find(path);
  std::vector<std::string> parent(path.begin(), path.end() - 1);
  auto schema_has = [&]() -> std::vector<std::string> {
    if (!schema_keys) return {};
    return schema_keys(root, parent);
  };
  switch (op) {
    case Override::Op::Set: {
      if (!existing) {
        auto valid = schema_has();
        bool known = std::find(valid.begin(), valid.end(), path.back()) != valid.end();
        if (!known) {
          std::vector<std::string> extra;
          std::string prefix = parent.empty() ? "" : join_path(parent) + ".";
          for (const auto& k : valid) extra.push_back(prefix + k);
          fail(at, missing_key_message(root, key, extra));
        }
        if (value->is_null()) return;  // nothing to remove: the default applies already
      }
      if (value->is_null()) {
        Node* p = root.find(parent);
        if (p && p->is_table()) p->erase(path.back());
        if (p && p->is_list()) p->items().erase(p->items().begin() + std::stol(path.back()));
        return;
      }
      make_path(root, path, key, at) = *value;
      return;
    }
    case Override::Op::Add:
      if (existing)
        fail(at, fmt::format("cannot add '{}': it already exists ({}{}); to change it write {}=... "
                             "or ++{}=...",
                             key, existing->describe(),
                             existing->origin.known() ? ", from " + existing->origin.where() : "",
                             key, key));
      [[fallthrough]];
    case Override::Op::ForceAdd:
      if (value->is_null()) {
        if (existing) apply_value(root, Override::Op::Set, key, value, at, schema_keys);
        return;
      }
      make_path(root, path, key, at) = *value;
      return;
    case Override::Op::Delete: {
      if (!existing) fail(at, "cannot delete: " + missing_key_message(root, key, {}));
      if (value && !value->is_null() && *value != *existing)
        fail(at, fmt::format("'{}' is {}, not {}; nothing deleted (write ~{} to delete it "
                             "whatever its value)",
                             key, existing->describe(), value->describe(), key));
      Node* p = root.find(parent);
      if (p->is_table())
        p->erase(path.back());
      else
        p->items().erase(p->items().begin() + std::stol(path.back()));
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Defaults lists

/// The global package, written `_global_` or left empty (`group@=option`, as Hydra's empty
/// package), is "" inside: the option's keys land at the top of the config.
std::string global_as_empty(const std::string& package) {
  return package == "_global_" ? std::string() : package;
}

/// A group choice that changes the defaults list: from the command line or a sweep value.
struct GroupChoice {
  Override::Op op = Override::Op::Set;
  std::string group, package;
  bool has_package = false;
  std::optional<std::string> option;   // nullopt: deselect (null, or ~group)
  std::optional<std::string> only_if;  // ~group=option: the option that must be chosen
  Origin origin;
  std::string text;
  int used = 0;
};

struct Entry {
  bool self = false;
  std::string group, package, option;
  Origin origin;
  int appended = -1;  // index of the +group=option choice that added this entry
};

class Composer {
 public:
  explicit Composer(const SearchPath& search) : search_(search) {}

  // Groups are looked up by name, never by scanning the roots: an experiment may sit in a
  // folder with a large tree below it.
  bool is_group(const std::string& g) { return !options(g).empty(); }
  const std::vector<std::string>& options(const std::string& g) {
    auto it = options_.find(g);
    if (it == options_.end()) it = options_.emplace(g, search_.options(g)).first;
    return it->second;
  }

  /// Composes the primary config (text or file) with `choices` applied to its defaults.
  Node compose(const std::string& file, const std::optional<std::string>& text,
               std::vector<GroupChoice>& choices,
               std::vector<std::pair<std::string, std::string>>* chosen) {
    choices_ = &choices;
    chosen_ = chosen;
    stack_.clear();
    Node primary = text ? parse_text(*text, file) : load(file, nullptr);
    Node out = Node::table(Origin::in_file(file));
    expand(primary, file, "", nullptr, out, /*primary=*/true);
    for (auto& c : choices) {
      if (c.used || c.op == Override::Op::Add || c.op == Override::Op::ForceAdd) continue;
      unmatched(c);
    }
    return out;
  }

 private:
  Node load(const std::string& path, const Chain& chain) {
    auto it = cache_.find(path);
    if (it == cache_.end()) it = cache_.emplace(path, parse_file(path, chain)).first;
    Node copy = it->second;
    return copy;
  }

  [[noreturn]] void unmatched(const GroupChoice& c) {
    // Where is this group used, if anywhere?
    std::vector<std::string> packages;
    for (const auto& [key, option] : seen_)
      if (key.first == c.group) packages.push_back(key.second);
    if (!c.has_package && !packages.empty())
      fail(c.origin,
           fmt::format("config group '{}' is placed at {} in this experiment, not at '{}'; say "
                       "which: {}",
                       c.group, join(packages, " and ", "'"), default_package(c.group),
                       join(
                           [&] {
                             std::vector<std::string> v;
                             for (const auto& p : packages)
                               v.push_back(c.group + "@" + p + "=" + c.option.value_or("..."));
                             return v;
                           }(),
                           " or ")));
    if (c.op == Override::Op::Delete)
      fail(c.origin, fmt::format("cannot delete: the defaults list does not choose from config "
                                 "group '{}'",
                                 choice_key(c.group, c.package)));
    fail(c.origin,
         fmt::format("the defaults list does not choose from config group '{}'; to add it, "
                     "write +{}={}",
                     choice_key(c.group, c.package), choice_key(c.group, c.package),
                     c.option.value_or("OPTION")));
  }

  std::vector<Entry> entries(Node& node, const std::string& file, bool primary) {
    std::vector<Entry> out;
    Node* d = node.get("defaults");
    if (!d) {
      // Hydra: no defaults list is [_self_]; +group=option still appends to it.
      out.push_back({true, "", "", "", node.origin});
      if (primary) append_added_choices(out);
      return out;
    }
    if (!d->is_list())
      fail(d->origin, fmt::format("'defaults' must be a list, e.g. defaults = [\"_self_\", "
                                  "{{ backbone = \"cnn\" }}], got {}",
                                  d->describe()));
    bool self = false;
    for (const auto& e : d->items()) {
      if (e.is_string()) {
        if (e.as_string() != "_self_")
          fail(e.origin, fmt::format("defaults entry \"{}\" is not valid; an entry is \"_self_\" "
                                     "or {{ group = \"option\" }} (or {{ \"group@package\" = "
                                     "\"option\" }})",
                                     e.as_string()));
        if (self) fail(e.origin, "\"_self_\" appears twice in the defaults list");
        self = true;
        out.push_back({true, "", "", "", e.origin});
        continue;
      }
      if (!e.is_table() || e.size() != 1)
        fail(e.origin, fmt::format("defaults entries are \"_self_\" or a table with one key, "
                                   "{{ group = \"option\" }}; got {}",
                                   e.is_table() ? fmt::format("a table with {} keys", e.size())
                                                : e.describe()));
      const std::string& k = e.keys()[0];
      const Node& v = e.value_at(0);
      Entry entry;
      entry.origin = v.origin;
      auto at = k.find('@');
      entry.group = k.substr(0, at);
      entry.package = at == std::string::npos ? default_package(entry.group)
                                              : global_as_empty(k.substr(at + 1));
      if (!is_group(entry.group)) {
        std::vector<std::string> names;
        for (const auto& [g, opts] : search_.groups()) names.push_back(g);
        std::string hint = did_you_mean(nearest(entry.group, names));
        fail(e.origin,
             fmt::format("defaults entry '{}': there is no config group '{}' (a folder of .toml "
                         "files) in {}; {}{}",
                         k, entry.group, search_text(), hint.empty() ? "" : hint + " ",
                         names.empty() ? "no groups exist" : "groups: " + join(names, ", ")));
      }
      if (!v.is_string())
        fail(v.origin, fmt::format("defaults entry '{}' must name an option as a string, got {}", k,
                                   v.describe()));
      entry.option = v.as_string();
      out.push_back(entry);
    }
    (void)file;
    // Hydra: without _self_, the file's own values come last (they override its defaults).
    if (!self) out.push_back({true, "", "", "", d->origin});
    node.erase("defaults");
    if (primary) append_added_choices(out);
    return out;
  }

  // +group=option (and ++group=option not already chosen) from the command line: appended to
  // the primary config's defaults list, as Hydra appends them.
  void append_added_choices(std::vector<Entry>& out) {
    for (std::size_t ci = 0; ci < choices_->size(); ++ci) {
      GroupChoice& c = (*choices_)[ci];
      if (c.op != Override::Op::Add && c.op != Override::Op::ForceAdd) continue;
      if (c.op == Override::Op::ForceAdd && matches_any(c, out)) continue;
      if (!c.option) continue;
      Entry entry;
      entry.appended = static_cast<int>(ci);
      entry.group = c.group;
      entry.package = c.has_package ? c.package : default_package(c.group);
      entry.option = c.option.value_or("");
      entry.origin = c.origin;
      out.push_back(entry);
    }
  }

  static bool matches(const GroupChoice& c, const Entry& e) {
    if (e.self || c.group != e.group) return false;
    return c.has_package ? c.package == e.package : e.package == default_package(e.group);
  }
  bool matches_any(const GroupChoice& c, const std::vector<Entry>& es) const {
    return std::any_of(es.begin(), es.end(), [&](const Entry& e) { return matches(c, e); });
  }

  std::string search_text() const {
    std::vector<std::string> r;
    for (const auto& p : search_.roots) r.push_back(p.string());
    return r.empty() ? "(no config folders)" : join(r, ", ", "'");
  }

  void expand(Node& node, const std::string& file, const std::string& package, const Chain& chain,
              Node& out, bool primary) {
    auto list = entries(node, file, primary);
    for (auto& e : list) {
      if (e.self) {
        if (package.empty()) {
          merge(out, std::move(node));
        } else {
          auto path = split_path(package);
          check_segments(path, package, e.origin);
          check_placed(node, path.size(), package, e.origin);
          Node& at = make_path(out, path, package, e.origin);
          merge(at, std::move(node));
        }
        node = Node::table();
        continue;
      }
      // A choice from the command line or a sweep replaces the entry's option.
      std::optional<std::string> option = e.option;
      const Origin* chosen_at = &e.origin;
      for (std::size_t ci = 0; ci < choices_->size(); ++ci) {
        GroupChoice& c = (*choices_)[ci];
        if (!matches(c, e)) continue;
        if (c.op == Override::Op::Add) {
          if (e.appended == static_cast<int>(ci)) continue;  // the entry this choice added
          fail(c.origin, fmt::format("cannot add config group '{}': the defaults list already "
                                     "chooses '{}' ({}); to change it write {}={}",
                                     choice_key(c.group, c.package), e.option, e.origin.where(),
                                     choice_key(c.group, c.package), c.option.value_or("...")));
        }
        ++c.used;
        if (c.op == Override::Op::Delete) {
          if (c.only_if && *c.only_if != e.option)
            fail(c.origin, fmt::format("config group '{}' is '{}', not '{}'; nothing deleted",
                                       choice_key(e.group, e.package), e.option, *c.only_if));
          option.reset();
        } else {
          option = c.option;
        }
        chosen_at = &c.origin;
      }
      seen_[{e.group, e.package}] = option.value_or("null");
      if (!option) continue;
      auto file_of = search_.find(e.group, *option);
      if (!file_of) {
        const auto& opts = options(e.group);
        std::string hint = did_you_mean(nearest(*option, opts));
        fail(*chosen_at, fmt::format("config group '{}' has no option '{}'; {}options: {}", e.group,
                                     *option, hint.empty() ? "" : hint + " ", join(opts, ", ")));
      }
      std::string path = file_of->string();
      std::error_code ec;
      std::string canonical = fs::weakly_canonical(*file_of, ec).string();
      if (std::find(stack_.begin(), stack_.end(), canonical) != stack_.end()) {
        std::vector<std::string> cycle = stack_;
        cycle.push_back(canonical);
        fail(*chosen_at, fmt::format("include cycle: {}", join(cycle, " -> ")));
      }
      if (stack_.size() >= kMaxIncludeDepth)
        fail(*chosen_at,
             fmt::format("defaults lists nest more than {} levels deep", kMaxIncludeDepth));
      auto steps = std::make_shared<std::vector<std::string>>();
      steps->push_back(fmt::format("included from {} (defaults entry {}={})", chosen_at->where(),
                                   choice_key(e.group, e.package), *option));
      if (chain) steps->insert(steps->end(), chain->begin(), chain->end());
      if (chosen_at->chain && !chosen_at->override.empty())
        steps->insert(steps->end(), chosen_at->chain->begin(), chosen_at->chain->end());
      if (chosen_) chosen_->emplace_back(choice_key(e.group, e.package), *option);
      stack_.push_back(canonical);
      Node sub = load(path, steps);
      expand(sub, path, e.package, steps, out, false);
      stack_.pop_back();
    }
  }

  const SearchPath& search_;
  std::map<std::string, std::vector<std::string>> options_;
  std::map<std::string, Node> cache_;
  std::vector<GroupChoice>* choices_ = nullptr;
  std::vector<std::pair<std::string, std::string>>* chosen_ = nullptr;
  std::map<std::pair<std::string, std::string>, std::string> seen_;
  std::vector<std::string> stack_;
};

// ---------------------------------------------------------------------------------------------
// Sweeps

/// One swept key: a value assignment or a group choice, with its values.
struct Axis {
  std::string key;  // as written (group keys may carry @package)
  Override::Op op = Override::Op::Set;
  bool group = false;
  std::string group_name, package;
  bool has_package = false;
  std::vector<Node> values;
  std::optional<Sweep> interval;  // values drawn from it (sampled sweeps only)
  std::string distribution;       // what the values come from, in override syntax
  Origin origin;
  int zip = -1;  // zip group (-1: its own dimension)
  bool from_cli = false;
  std::size_t cli_index = 0;
};

std::string op_prefix(Override::Op op) {
  switch (op) {
    case Override::Op::Add:
      return "+";
    case Override::Op::ForceAdd:
      return "++";
    case Override::Op::Delete:
      return "~";
    default:
      return "";
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Search path

SearchPath SearchPath::for_experiment(const fs::path& experiment,
                                      const std::vector<fs::path>& config_dirs) {
  SearchPath s;
  std::set<std::string> seen;
  auto add = [&](const fs::path& p) {
    std::error_code ec;
    if (p.empty() || !fs::is_directory(p, ec)) return;
    std::string key = fs::weakly_canonical(p, ec).string();
    if (seen.insert(key).second) s.roots.push_back(p);
  };
  if (!experiment.empty()) {
    fs::path dir = experiment.parent_path();
    add(dir.empty() ? fs::path(".") : dir);
  }
  for (const auto& d : config_dirs) add(d);
  add("experiments");
  return s;
}

std::map<std::string, std::vector<std::string>> SearchPath::groups() const {
  std::map<std::string, std::set<std::string>> found;
  for (const auto& root : roots) {
    std::error_code ec;
    fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec);
    for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      const auto& p = it->path();
      if (it.depth() >= 3 || p.filename().string().rfind('.', 0) == 0)
        it.disable_recursion_pending();
      if (p.extension() != ".toml" || !it->is_regular_file(ec)) continue;
      fs::path rel = p.parent_path().lexically_relative(root);
      if (rel.empty() || rel == ".") continue;  // files at a root are experiments, not options
      std::string group = rel.generic_string();
      if (!std::all_of(group.begin(), group.end(),
                       [](char c) { return is_key_char(c) || c == '/'; }))
        continue;
      found[group].insert(p.stem().string());
    }
  }
  std::map<std::string, std::vector<std::string>> out;
  for (auto& [g, opts] : found) out[g] = {opts.begin(), opts.end()};
  return out;
}

std::vector<std::string> SearchPath::options(const std::string& group) const {
  std::set<std::string> found;
  if (group.empty() || group.find("..") != std::string::npos || group[0] == '/' ||
      !std::all_of(group.begin(), group.end(), [](char c) { return is_key_char(c) || c == '/'; }))
    return {};
  for (const auto& root : roots) {
    std::error_code ec;
    fs::directory_iterator it(root / group, ec);
    for (; !ec && it != fs::directory_iterator(); it.increment(ec))
      if (it->path().extension() == ".toml" && it->is_regular_file(ec))
        found.insert(it->path().stem().string());
  }
  return {found.begin(), found.end()};
}

std::optional<fs::path> SearchPath::find(const std::string& group,
                                         const std::string& option) const {
  if (option.empty() || option.find('/') != std::string::npos || option == "." || option == "..")
    return std::nullopt;
  for (const auto& root : roots) {
    fs::path p = root / group / (option + ".toml");
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p;
  }
  return std::nullopt;
}

std::string describe_groups(const SearchPath& search) {
  std::string out =
      "Config groups (choose with GROUP=OPTION, sweep with -m GROUP=A,B or "
      "GROUP=glob(*)):\n";
  auto groups = search.groups();
  if (groups.empty()) out += "  (none)\n";
  for (const auto& [g, opts] : groups) out += fmt::format("  {}: {}\n", g, join(opts, ", "));
  std::vector<std::string> roots;
  for (const auto& r : search.roots) roots.push_back(r.string());
  out += "Searched, first match wins: " + (roots.empty() ? "(nothing)" : join(roots, ", ")) + "\n";
  return out;
}

// ---------------------------------------------------------------------------------------------
// Composition

// ---------------------------------------------------------------------------------------------
// Sampled sweeps

// A uniform number in [0, 1) for (search seed, key, attempt): SplitMix64 over the three, so a
// key's draws do not depend on which other keys are swept, and are the same on every machine.
double unit_draw(int64_t seed, const std::string& key, uint64_t attempt) {
  auto mix = [](uint64_t z) { return SplitMix64(z).next(); };  // tlab/sdk/random.hpp
  uint64_t h = 0xCBF29CE484222325ull;                          // FNV-1a of the key
  for (unsigned char c : key) h = (h ^ c) * 0x100000001B3ull;
  const uint64_t z = mix(mix(mix(static_cast<uint64_t>(seed)) ^ h) ^ attempt);
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

// A value of `interval` for u in [0, 1): uniform, or uniform in log space (tag log); integers
// over [low, high] both included (a log one as Optuna draws it: over [low-0.5, high+0.5],
// rounded); floats rounded to 6 significant digits, so run names and overrides stay readable.
Node interval_value(const Sweep& interval, double u) {
  const double lo = interval.start.as_number(), hi = interval.stop.as_number();
  if (interval.start.is_int()) {
    double x = 0;
    if (interval.log()) {
      const double a = std::log(lo - 0.5), b = std::log(hi + 0.5);
      x = std::round(std::exp(a + u * (b - a)));
    } else {
      x = std::floor(lo + u * (hi - lo + 1));
    }
    return Node::integer(static_cast<int64_t>(std::clamp(x, lo, hi)), interval.origin);
  }
  double x = interval.log() ? std::exp(std::log(lo) + u * (std::log(hi) - std::log(lo)))
                            : lo + u * (hi - lo);
  x = std::clamp(std::stod(fmt::format("{:.6g}", x)), lo, hi);
  return Node::floating(x, interval.origin);
}

// `search.samples` distinct draws of `dims` (each: one value per interval axis, one index per
// categorical dimension, shared by a zip group's axes). A draw equal to an earlier one is drawn
// again; a space with fewer configurations than samples is refused.
std::vector<std::vector<std::pair<std::size_t, Node>>> draw_configurations(
    const std::vector<Axis>& axes, const std::vector<std::vector<std::size_t>>& dims,
    const SearchSpec& search) {
  double space = 1;  // configurations there are (inf with a float interval)
  for (const auto& d : dims) {
    const Axis& a = axes[d[0]];
    if (!a.interval)
      space *= static_cast<double>(a.values.size());
    else if (a.interval->start.is_int())
      space *= a.interval->stop.as_number() - a.interval->start.as_number() + 1;
    else
      space = std::numeric_limits<double>::infinity();
  }
  if (space < static_cast<double>(search.samples)) {
    std::vector<std::string> what;
    for (const auto& d : dims) what.push_back(axes[d[0]].key + "=" + axes[d[0]].distribution);
    fail(axes[dims[0][0]].origin,
         fmt::format("sweep.samples = {} distinct configurations, but the swept keys have only "
                     "{:.0f} ({}); lower samples, add values, or remove samples to run the grid",
                     search.samples, space, join(what, " ")));
  }
  std::vector<std::vector<std::pair<std::size_t, Node>>> draws;
  std::set<std::string> seen;
  const uint64_t attempts = 100 * static_cast<uint64_t>(search.samples) + 1000;
  for (uint64_t attempt = 0; static_cast<int64_t>(draws.size()) < search.samples; ++attempt) {
    if (attempt == attempts)  // e.g. a float interval narrower than its 6 significant digits
      fail(axes[dims[0][0]].origin,
           fmt::format("sweep.samples = {}: {} draws gave only {} distinct configurations; "
                       "widen the intervals or lower samples",
                       search.samples, attempts, draws.size()));
    std::vector<std::pair<std::size_t, Node>> draw;
    std::string key;
    for (const auto& d : dims) {
      const Axis& first = axes[d[0]];
      const double u = unit_draw(search.search_seed, first.key, attempt);
      if (first.interval) {
        draw.emplace_back(d[0], interval_value(*first.interval, u));
      } else {
        const auto n = first.values.size();
        const auto i = std::min(n - 1, static_cast<std::size_t>(u * static_cast<double>(n)));
        for (std::size_t ai : d) draw.emplace_back(ai, axes[ai].values[i]);
      }
    }
    for (const auto& [ai, v] : draw) key += format_value(v) + "\n";
    if (seen.insert(key).second) draws.push_back(std::move(draw));
  }
  return draws;
}

Composition compose(const fs::path& experiment, const std::vector<std::string>& override_texts,
                    const ComposeOptions& options) {
  Composition result;
  result.search = SearchPath::for_experiment(experiment, options.config_dirs);
  for (const auto& d : options.config_dirs) {
    std::error_code ec;
    if (!fs::is_directory(d, ec))
      throw ConfigError(fmt::format("--config-dir '{}' is not a folder", d.string()));
  }
  Composer composer(result.search);
  const std::string file = experiment.string();

  // Parse and sort the overrides: group choices, value assignments, and sweeps of either.
  std::vector<Override> parsed;
  for (const auto& t : override_texts) parsed.push_back(parse_override(t));
  // The groups the defaults list chooses before any override. A key that names a group but is
  // not chosen there, and holds a value in the config, is treated as that value (`~model`
  // deletes a [model] table written in the file).
  std::set<std::string> chosen_groups;
  std::optional<Node> plain;
  try {
    std::vector<GroupChoice> none;
    std::vector<std::pair<std::string, std::string>> chosen;
    plain = composer.compose(file, options.primary_text, none, &chosen);
    for (const auto& [key, option] : chosen) chosen_groups.insert(key.substr(0, key.find('@')));
  } catch (const ConfigError&) {
    // Reported below, with the overrides applied (they may fix it).
  }
  std::vector<GroupChoice> choices;
  std::vector<const Override*> values;  // single value assignments, in order
  std::vector<Axis> cli_axes;
  auto group_value = [](const Node& v) { return v.is_string() || v.is_null(); };
  for (std::size_t i = 0; i < parsed.size(); ++i) {
    const Override& o = parsed[i];
    if (o.sweep && !options.multirun)
      fail(o.value_origin,
           fmt::format("'{}' is a sweep; to run one job per value add -m (--multirun). For a "
                       "list value write {}=[...]; for a string with commas, quote it: {}='...'",
                       o.text.substr(o.text.find('=') + 1), o.key, o.key));
    bool group_key = composer.is_group(o.key);
    if (group_key && plain && !chosen_groups.count(o.key) && !o.has_package &&
        o.op != Override::Op::Add && o.op != Override::Op::ForceAdd &&
        plain->find(split_path(o.key)))
      group_key = false;
    if (o.has_package && !group_key)
      fail(o.key_origin, fmt::format("'{}@{}': '@package' applies to config groups, and there is "
                                     "no config group '{}'",
                                     o.key, o.package, o.key));
    bool is_group =
        group_key &&
        (o.has_package || o.op == Override::Op::Delete ||
         (o.sweep &&
          (o.sweep->fn == Sweep::Fn::Glob ||
           (o.sweep->fn != Sweep::Fn::Interval &&
            std::all_of(o.sweep->values.begin(), o.sweep->values.end(), group_value)))) ||
         (!o.sweep && o.has_value && group_value(o.value)));
    if (o.sweep && o.sweep->fn == Sweep::Fn::Glob && !is_group)
      fail(o.value_origin, fmt::format("glob() chooses config group options, and '{}' is not a "
                                       "config group; use a,b,c or range() for values",
                                       o.key));
    if (o.sweep) {
      Axis a;
      a.key = o.has_package ? o.key + "@" + o.package : o.key;
      a.op = o.op;
      a.group = is_group;
      a.group_name = o.key;
      a.package = o.has_package ? global_as_empty(o.package) : default_package(o.key);
      a.has_package = o.has_package;
      a.origin = o.value_origin;
      a.distribution = o.sweep->text();
      if (o.sweep->fn == Sweep::Fn::Interval)
        a.interval = o.sweep;
      else if (o.sweep->fn != Sweep::Fn::Glob)
        a.values = sweep_values(*o.sweep);
      if (o.sweep->fn == Sweep::Fn::Glob) {
        for (const auto& name : glob_options(*o.sweep, composer.options(o.key)))
          a.values.push_back(Node::string(name, o.value_origin));
        if (a.values.empty())
          fail(o.value_origin, fmt::format("glob matches no option of config group '{}' "
                                           "(options: {})",
                                           o.key, join(composer.options(o.key), ", ")));
      }
      a.zip = o.sweep->zip ? 0 : -1;
      a.from_cli = true;
      a.cli_index = i;
      cli_axes.push_back(std::move(a));
      continue;
    }
    if (is_group) {
      GroupChoice c;
      c.op = o.op;
      c.group = o.key;
      c.package = o.has_package ? global_as_empty(o.package) : default_package(o.key);
      c.has_package = o.has_package;
      if (o.op == Override::Op::Delete) {
        if (o.has_value && o.value.is_string()) c.only_if = o.value.as_string();
      } else if (o.value.is_string()) {
        c.option = o.value.as_string();
      }
      c.origin = o.value_origin;
      if (o.op == Override::Op::Delete) c.origin = o.key_origin;
      c.text = o.text;
      choices.push_back(std::move(c));
      continue;
    }
    values.push_back(&o);
  }

  auto apply_override = [&](Node& root, const Override& o) {
    apply_value(root, o.op, o.key, o.has_value ? &o.value : nullptr, o.key_origin,
                options.schema_keys);
  };

  // The base composition: what `tlab config` prints, and where the [sweep] table comes from.
  std::vector<GroupChoice> base_choices = choices;
  result.config = composer.compose(file, options.primary_text, base_choices, &result.choices);
  for (const Override* o : values) {
    auto path = split_path(o->key);
    if (path[0] != "sweep") continue;
    // sweep.samples=N, sweep.search_seed=S, sweep.sweeper=NAME and sweep.optuna.KEY=V need no
    // '+' when the experiment has none: they say how to search, not what a run computes.
    if (o->op == Override::Op::Set &&
        ((path.size() == 2 &&
          (path[1] == "samples" || path[1] == "search_seed" || path[1] == "sweeper")) ||
         (path.size() == 3 && path[1] == "optuna"))) {
      Override add = *o;
      add.op = Override::Op::ForceAdd;
      apply_override(result.config, add);
      continue;
    }
    apply_override(result.config, *o);
  }
  for (const Override* o : values)
    if (split_path(o->key)[0] != "sweep") apply_override(result.config, *o);

  // Sweep dimensions from the [sweep] table, in the order written.
  std::vector<Axis> axes;
  int zip_groups = 0;
  const Node* samples_node = nullptr;
  const Node* search_seed_node = nullptr;
  const Node* crossed_node = nullptr;
  const Node* asha_node = nullptr;
  const Node* sweeper_node = nullptr;
  const Node* optuna_node = nullptr;
  if (const Node* sweep = result.config.get("sweep")) {
    if (!sweep->is_table())
      fail(sweep->origin,
           fmt::format("'sweep' must be a table of key = [values], got {}", sweep->describe()));
    std::function<void(const Node&, const std::string&, int)> collect =
        [&](const Node& t, const std::string& prefix, int zip) {
          for (std::size_t i = 0; i < t.size(); ++i) {
            const std::string& k = t.keys()[i];
            const Node& v = t.value_at(i);
            std::string key = prefix.empty() ? k : prefix + "." + k;
            if (prefix.empty() && zip < 0 && k == "asha") {
              asha_node = &v;
              continue;
            }
            if (prefix.empty() && zip < 0 && k == "optuna") {
              optuna_node = &v;
              continue;
            }
            if (prefix.empty() && zip < 0 && k == "sweeper") {
              if (!v.is_string() || (v.as_string() != "grid" && v.as_string() != "random" &&
                                     v.as_string() != "optuna"))
                fail(v.origin,
                     fmt::format("'sweep.sweeper' is {}: not a sweeper; expected \"grid\" (every "
                                 "combination), \"random\" (sweep.samples draws) or \"optuna\" "
                                 "(sweep.samples trials of Optuna's TPE)",
                                 v.is_string() ? "\"" + v.as_string() + "\"" : v.describe()));
              sweeper_node = &v;
              continue;
            }
            if (prefix.empty() && zip < 0 && k == "crossed") {
              bool ok = v.is_list();
              if (ok)
                for (const auto& x : v.items()) ok = ok && x.is_string();
              if (!ok)
                fail(v.origin, fmt::format("'sweep.crossed' is {}: the swept keys a sampled sweep "
                                           "crosses with every draw instead of drawing them, a "
                                           "list of names (e.g. crossed = [\"target.domain\"])",
                                           v.describe()));
              crossed_node = &v;
              continue;
            }
            if (prefix.empty() && zip < 0 && (k == "samples" || k == "search_seed")) {
              const bool samples = k == "samples";
              if (!v.is_int() || v.as_int() < (samples ? 1 : 0))
                fail(v.origin,
                     fmt::format("'sweep.{}' is {}: {}", k, v.describe(),
                                 samples ? "the number of configurations to draw, an integer "
                                           ">= 1 (e.g. samples = 20)"
                                         : "the seed of the draws, an integer >= 0"));
              (samples ? samples_node : search_seed_node) = &v;
              continue;
            }
            if (prefix.empty() && k == "zip" && zip < 0) {
              auto zip_table = [&](const Node& z) {
                if (!z.is_table())
                  fail(z.origin,
                       "'sweep.zip' holds tables of keys that vary together: "
                       "[[sweep.zip]] a = [1, 2] b = [3, 4]");
                collect(z, "", zip_groups++);
              };
              if (v.is_list())
                for (const auto& z : v.items()) zip_table(z);
              else
                zip_table(v);
              continue;
            }
            if (v.is_table()) {
              collect(v, key, zip);
              continue;
            }
            Axis a;
            a.key = key;
            auto at = key.find('@');
            a.group_name = key.substr(0, at);
            a.has_package = at != std::string::npos;
            a.package =
                a.has_package ? global_as_empty(key.substr(at + 1)) : default_package(a.group_name);
            a.origin = v.origin;
            a.zip = zip;
            if (v.is_string()) {
              ParsedValue pv = parse_value(v.as_string(), v.as_string());
              if (!pv.sweep)
                fail(v.origin, fmt::format("sweep '{}' = \"{}\" is a single value; give a list "
                                           "[a, b] or a sweep such as \"range(1, 4)\" or "
                                           "\"glob(*)\"",
                                           key, v.as_string()));
              a.distribution = pv.sweep->text();
              if (pv.sweep->fn == Sweep::Fn::Interval) {
                if (zip >= 0)
                  fail(v.origin, fmt::format("sweep '{}': {} cannot be zipped; zip pairs the i-th "
                                             "values of lists",
                                             key, a.distribution));
                a.interval = pv.sweep;
                a.interval->origin = v.origin;
              } else if (pv.sweep->fn == Sweep::Fn::Glob) {
                if (!composer.is_group(a.group_name))
                  fail(v.origin, fmt::format("glob() chooses config group options, and '{}' is "
                                             "not a config group",
                                             a.group_name));
                for (const auto& name : glob_options(*pv.sweep, composer.options(a.group_name)))
                  a.values.push_back(Node::string(name, v.origin));
                if (a.values.empty())
                  fail(v.origin,
                       fmt::format("glob matches no option of config group '{}'", a.group_name));
              } else {
                for (auto& x : sweep_values(*pv.sweep)) {
                  x.origin = v.origin;
                  a.values.push_back(std::move(x));
                }
              }
            } else if (v.is_list()) {
              a.values = v.items();
              std::vector<std::string> texts;
              for (const auto& x : a.values) texts.push_back(format_value(x));
              a.distribution = "choice(" + join(texts, ", ") + ")";
            } else {
              fail(v.origin, fmt::format("sweep '{}' must be a list of values, e.g. {} = [1, 2], "
                                         "got {}",
                                         key, key, v.describe()));
            }
            if (a.values.empty() && !a.interval)
              fail(v.origin, fmt::format("sweep '{}' has no values; give a non-empty list", key));
            a.group = !a.interval && composer.is_group(a.group_name) &&
                      std::all_of(a.values.begin(), a.values.end(),
                                  [](const Node& x) { return x.is_string(); });
            if (a.has_package && !a.group)
              fail(v.origin, fmt::format("sweep '{}': '@package' applies to config groups and "
                                         "their option names",
                                         key));
            axes.push_back(std::move(a));
          }
        };
    collect(*sweep, "", -1);
  }
  // A command-line override of a swept key replaces that dimension.
  auto replaced = [&](const Axis& a) {
    for (const auto& o : parsed) {
      std::string k = o.has_package ? o.key + "@" + o.package : o.key;
      if (a.key == k || a.key.rfind(k + ".", 0) == 0) return true;
    }
    return false;
  };
  axes.erase(std::remove_if(axes.begin(), axes.end(), replaced), axes.end());
  for (auto& a : cli_axes) {
    if (a.zip >= 0) a.zip = zip_groups;
    axes.push_back(std::move(a));
  }

  // Dimensions: each non-zipped axis alone; each zip group together at its first member.
  std::vector<std::vector<std::size_t>> dims;
  std::map<int, std::size_t> zip_dim;
  for (std::size_t i = 0; i < axes.size(); ++i) {
    if (axes[i].zip < 0) {
      dims.push_back({i});
      continue;
    }
    auto it = zip_dim.find(axes[i].zip);
    if (it == zip_dim.end()) {
      zip_dim[axes[i].zip] = dims.size();
      dims.push_back({i});
    } else {
      const Axis& first = axes[dims[it->second][0]];
      if (axes[i].values.size() != first.values.size())
        fail(axes[i].origin,
             fmt::format("zipped sweeps must have the same length: '{}' has {} values but '{}' "
                         "({}) has {}",
                         axes[i].key, axes[i].values.size(), first.key, first.origin.where(),
                         first.values.size()));
      dims[it->second].push_back(i);
    }
  }
  // A sampled sweep ([sweep] samples = N): N draws of the dimensions other than `seed`'s, each
  // crossed with the seeds (DomainBed's random search: draws x trials), or N trials of an
  // Optuna study (sweeper = "optuna"). Otherwise a grid.
  SearchSpec& search = result.search_spec;
  std::vector<std::vector<std::size_t>> drawn_dims;
  const std::string sweeper = sweeper_node   ? sweeper_node->as_string()
                              : samples_node ? "random"
                                             : "grid";
  if (sweeper_node && sweeper == "grid" && samples_node)
    fail(samples_node->origin,
         fmt::format("sweep.samples = {} asks for draws, but sweep.sweeper = \"grid\" runs every "
                     "combination; remove samples, or choose sweeper \"random\" or \"optuna\"",
                     samples_node->as_int()));
  if (sweeper != "grid" && !samples_node)
    fail(sweeper_node->origin,
         fmt::format("sweep.sweeper = \"{}\" needs the number of {}: add sweep.samples = N "
                     "(on the command line: sweep.samples=N, or --trials N)",
                     sweeper, sweeper == "optuna" ? "trials" : "draws"));
  if (optuna_node && sweeper != "optuna")
    fail(optuna_node->origin,
         fmt::format("[sweep.optuna] configures the Optuna sweeper, but this sweep's sweeper is "
                     "\"{}\"; add sweep.sweeper = \"optuna\" (--sweeper optuna) or remove it",
                     sweeper));
  if (samples_node) {
    search.sweeper = sweeper;
    search.samples = samples_node->as_int();
    if (search_seed_node) search.search_seed = search_seed_node->as_int();
    if (crossed_node && sweeper == "optuna")
      fail(crossed_node->origin,
           "sweep.crossed applies to random search: an Optuna trial is one configuration, "
           "crossed with the seeds only; run one study per value instead (e.g. "
           "strategy=dann, then strategy=coral: each is its own study)");
    // Crossed: seed, config-group choices (what runs, e.g. strategy=dann,coral: each gets
    // the same draws) and the keys sweep.crossed names; drawn: the rest. Optuna searches
    // config-group choices too (as Hydra's Optuna sweeper does): only the seeds are crossed.
    std::set<std::string> named;
    if (crossed_node)
      for (const auto& x : crossed_node->items()) {
        if (std::none_of(axes.begin(), axes.end(),
                         [&](const Axis& a) { return a.key == x.as_string(); }))
          fail(x.origin,
               fmt::format("sweep.crossed names '{}', which is not swept", x.as_string()));
        named.insert(x.as_string());
      }
    std::vector<std::vector<std::size_t>> crossed;
    for (auto& d : dims) {
      const bool cross = std::any_of(d.begin(), d.end(), [&](std::size_t a) {
        return axes[a].key == "seed" ||
               (sweeper == "random" && (axes[a].group || named.count(axes[a].key)));
      });
      if (cross)
        for (std::size_t a : d)
          if (axes[a].interval)
            fail(axes[a].origin, fmt::format("sweep.crossed names '{}', but {} is drawn from; "
                                             "cross a list of values",
                                             axes[a].key, axes[a].distribution));
      (cross ? crossed : drawn_dims).push_back(std::move(d));
    }
    dims = std::move(crossed);
    if (drawn_dims.empty())
      fail(samples_node->origin,
           fmt::format("sweep.samples = {} draws configurations of the swept keys, but nothing "
                       "other than seed{} is swept; add a "
                       "distribution (e.g. sweep.train.lr = "
                       "\"tag(log, interval(1e-4, 1e-1))\") or remove samples",
                       search.samples,
                       sweeper == "random" ? ", config-group choices and sweep.crossed" : ""));
    for (const auto& d : drawn_dims) {
      const Axis& first = axes[d[0]];
      SearchDim dim;
      std::vector<std::string> keys;
      for (std::size_t a : d) keys.push_back(axes[a].key);
      dim.name = join(keys, ",");
      dim.distribution = first.distribution;
      if (first.interval) {
        dim.kind = first.interval->start.is_int() ? SearchDim::Kind::Int : SearchDim::Kind::Float;
        dim.low = first.interval->start.as_number();
        dim.high = first.interval->stop.as_number();
        dim.log = first.interval->log();
      } else {
        for (std::size_t i = 0; i < first.values.size(); ++i) {
          std::vector<std::string> texts;
          for (std::size_t a : d) texts.push_back(format_value(axes[a].values[i]));
          dim.choices.push_back(join(texts, ", "));
        }
      }
      search.space.push_back(std::move(dim));
    }
  } else {
    if (crossed_node)
      fail(crossed_node->origin,
           "sweep.crossed names keys a sampled sweep crosses with its draws; add sweep.samples "
           "= N, or remove it");
    if (search_seed_node)
      fail(search_seed_node->origin,
           "sweep.search_seed seeds the draws of a sampled sweep; add sweep.samples = N, or "
           "remove it");
    for (const auto& a : axes)
      if (a.interval) sweep_values(*a.interval);  // the error: give samples
  }
  if (optuna_node) {
    auto bad = [&](const Node& at, const std::string& what) {
      fail(at.origin, fmt::format("sweep.optuna: {}", what));
    };
    if (!optuna_node->is_table())
      bad(*optuna_node,
          "expected a table (metric, direction, sampler, startup_trials, study, "
          "storage), got " +
              optuna_node->describe());
    for (std::size_t i = 0; i < optuna_node->size(); ++i) {
      const std::string& k = optuna_node->keys()[i];
      const Node& v = optuna_node->value_at(i);
      if (k == "startup_trials") {
        if (!v.is_int() || v.as_int() < 0)
          bad(v, fmt::format("startup_trials is {}, expected an integer >= 0 (TPE's random "
                             "trials before it models the results; Optuna's default 10)",
                             v.describe()));
        search.startup_trials = v.as_int();
        continue;
      }
      static const std::vector<std::string> text_keys{"metric", "direction", "sampler", "study",
                                                      "storage"};
      if (std::find(text_keys.begin(), text_keys.end(), k) == text_keys.end())
        bad(v, fmt::format("unknown key '{}'; it has metric, direction, sampler, startup_trials, "
                           "study and storage",
                           k));
      if (!v.is_string() || v.as_string().empty())
        bad(v, fmt::format("{} is {}, expected a non-empty string", k, v.describe()));
      const std::string& text = v.as_string();
      if (k == "direction" && text != "maximize" && text != "minimize")
        bad(v, fmt::format("direction is \"{}\", expected \"maximize\" or \"minimize\"", text));
      if (k == "sampler" && text != "tpe" && text != "random")
        bad(v, fmt::format("sampler is \"{}\", expected \"tpe\" (Optuna's TPESampler) or "
                           "\"random\" (its RandomSampler)",
                           text));
      if (k == "metric" && std::count(text.begin(), text.end(), '/') < 2)
        bad(v, fmt::format("metric is \"{}\", expected a run's metric as "
                           "<domain>/<split>/<name>, e.g. \"target/val/acc\"",
                           text));
      if (k == "study" && text.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRS"
                                                 "TUVWXYZ0123456789_.-") != std::string::npos)
        bad(v, fmt::format("study is \"{}\", expected letters, digits, '_', '.' and '-'", text));
      (k == "metric"      ? search.metric
       : k == "direction" ? search.direction
       : k == "sampler"   ? search.sampler
       : k == "study"     ? search.study
                          : search.storage) = text;
    }
  }
  if (search.sweeper != "grid") {
    // The study's identity: the experiment as composed, without what only sizes or names it.
    Node identity = result.config;
    if (Node* sw = identity.get("sweep")) {
      sw->erase("samples");
      if (Node* op = sw->get("optuna")) {
        op->erase("study");
        op->erase("storage");
        if (op->is_table() && op->size() == 0) sw->erase("optuna");
      }
    }
    search.fingerprint = to_json(identity).dump();
  }
  if (asha_node) {
    auto bad = [&](const Node& at, const std::string& what) {
      fail(at.origin, fmt::format("sweep.asha: {}; write [sweep.asha] min_epochs = 1 and "
                                  "reduction = 3 (or leave them out for those values)",
                                  what));
    };
    if (!asha_node->is_table()) bad(*asha_node, "expected a table, got " + asha_node->describe());
    for (std::size_t i = 0; i < asha_node->size(); ++i) {
      const std::string& k = asha_node->keys()[i];
      const Node& v = asha_node->value_at(i);
      if (k != "min_epochs" && k != "reduction")
        bad(v, fmt::format("unknown key '{}' (it has min_epochs and reduction)", k));
      const int64_t low = k == "min_epochs" ? 1 : 2;
      if (!v.is_int() || v.as_int() < low)
        bad(v, fmt::format("{} is {}, expected an integer >= {}", k, v.describe(), low));
      (k == "min_epochs" ? search.asha_min_epochs : search.asha_reduction) = v.as_int();
    }
    if (axes.empty())
      fail(asha_node->origin,
           "sweep.asha stops the weaker runs of a sweep, but nothing is swept; "
           "sweep some keys (e.g. [sweep] samples = 20 with distributions)");
    search.asha = true;
  }
  // The keys whose values make a run's bracket: what is compared with what.
  std::set<std::string> bracket_keys;
  {
    std::set<std::string> named;
    if (crossed_node)
      for (const auto& x : crossed_node->items()) named.insert(x.as_string());
    for (const auto& a : axes)
      if (a.key != "seed" && ((a.group && search.sweeper != "optuna") || named.count(a.key)))
        bracket_keys.insert(a.key);  // Optuna searches config-group choices: one bracket
  }
  double total = search.sweeper != "grid" ? static_cast<double>(search.samples) : 1.0;
  for (const auto& d : dims) total *= static_cast<double>(axes[d[0]].values.size());
  if (total > static_cast<double>(options.max_runs))
    fail(Origin::in_file(file),
         fmt::format("the sweep has {:.0f} combinations, more than the limit of {}; split it "
                     "into several experiments",
                     total, options.max_runs));

  // The draws: for each, (axis, value) of every drawn dimension.
  using Picks = std::vector<std::pair<std::size_t, Node>>;
  std::vector<Picks> draws(1);
  std::vector<int64_t> trials{-1};
  if (search.sweeper == "random") {
    draws = draw_configurations(axes, drawn_dims, search);
    trials.resize(draws.size());
    for (std::size_t i = 0; i < trials.size(); ++i) trials[i] = static_cast<int64_t>(i);
  } else if (search.sweeper == "optuna") {
    draws.clear();
    trials.clear();
    for (const GivenDraw& given : options.draws ? *options.draws : std::vector<GivenDraw>{}) {
      Picks picks;
      for (std::size_t j = 0; j < drawn_dims.size(); ++j) {
        const SearchDim& dim = search.space[j];
        const Axis& first = axes[drawn_dims[j][0]];
        auto it = std::find_if(given.values.begin(), given.values.end(),
                               [&](const auto& v) { return v.first == dim.name; });
        if (it == given.values.end())
          fail(first.origin,
               fmt::format("the sweeper's trial {} has no value for '{}'", given.trial, dim.name));
        const double x = it->second;
        const bool in_range =
            dim.kind == SearchDim::Kind::Categorical
                ? x >= 0 && x < static_cast<double>(dim.choices.size()) && x == std::floor(x)
                : x >= dim.low && x <= dim.high;
        if (!in_range)
          fail(first.origin,
               fmt::format("the sweeper's trial {} gives '{}' the value {}, outside {} (a study "
                           "made for another search space? name another sweep.optuna.study)",
                           given.trial, dim.name, x, dim.distribution));
        if (dim.kind == SearchDim::Kind::Float)
          picks.emplace_back(drawn_dims[j][0], Node::floating(x, first.origin));
        else if (dim.kind == SearchDim::Kind::Int)
          picks.emplace_back(drawn_dims[j][0],
                             Node::integer(static_cast<int64_t>(std::llround(x)), first.origin));
        else
          for (std::size_t ai : drawn_dims[j])
            picks.emplace_back(ai, axes[ai].values[static_cast<std::size_t>(x)]);
      }
      draws.push_back(std::move(picks));
      trials.push_back(given.trial);
    }
  }

  // Expand: draw by draw; within a draw the last crossed dimension varies fastest.
  for (std::size_t trial = 0; trial < draws.size(); ++trial) {
    std::vector<std::size_t> index(dims.size(), 0);
    while (true) {
      Job job;
      job.trial = trials[trial];
      std::vector<GroupChoice> job_choices = choices;
      std::vector<std::pair<std::size_t, std::string>> cli_texts;  // (cli index, text)
      Picks chosen = draws[trial];
      for (std::size_t d = 0; d < dims.size(); ++d)
        for (std::size_t ai : dims[d]) chosen.emplace_back(ai, axes[ai].values[index[d]]);
      std::stable_sort(chosen.begin(), chosen.end(),
                       [](const auto& x, const auto& y) { return x.first < y.first; });
      std::vector<std::pair<const Axis*, const Node*>> picks;
      for (const auto& [ai, v] : chosen) picks.emplace_back(&axes[ai], &v);
      for (const auto& [a, v] : picks) {
        job.distributions.emplace_back(a->key, a->distribution);
        if (bracket_keys.count(a->key))
          job.bracket += (job.bracket.empty() ? "" : " ") + a->key + "=" + format_value(*v);
      }
      for (const auto& [a, v] : picks) {
        std::string text = op_prefix(a->op) + a->key + "=" + format_value(*v);
        job.swept.emplace_back(a->key, *v);
        if (a->from_cli)
          cli_texts.emplace_back(a->cli_index, text);
        else
          job.overrides.push_back(text);
        if (!a->group) continue;
        GroupChoice c;
        c.op = a->op;
        c.group = a->group_name;
        c.package = a->package;
        c.has_package = a->has_package;
        if (v->is_string()) c.option = v->as_string();
        c.origin = v->origin;
        c.text = text;
        job_choices.push_back(std::move(c));
      }
      // The command line's overrides, but not those of the [sweep] table: they say how to
      // sweep, not what a run computes (Hydra's task overrides leave its sweeper's out too).
      for (std::size_t i = 0; i < parsed.size(); ++i)
        if (!parsed[i].sweep && split_path(parsed[i].key)[0] != "sweep")
          cli_texts.emplace_back(i, parsed[i].text);
      std::sort(cli_texts.begin(), cli_texts.end());
      for (auto& [i, t] : cli_texts) job.overrides.push_back(t);

      job.config = composer.compose(file, options.primary_text, job_choices, nullptr);
      job.config.erase("sweep");
      for (const auto& [a, v] : picks)
        if (!a->group) apply_value(job.config, a->op, a->key, v, v->origin, options.schema_keys);
      for (const Override* o : values)
        if (split_path(o->key)[0] != "sweep") apply_override(job.config, *o);
      result.jobs.push_back(std::move(job));

      bool more = false;
      for (std::size_t d = dims.size(); d-- > 0 && !more;) {
        more = ++index[d] < axes[dims[d][0]].values.size();
        if (!more) index[d] = 0;
      }
      if (!more) break;
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Interpolation

namespace {

class Resolver {
 public:
  explicit Resolver(Node& root) : root_(root) {}

  void resolve_at(const std::vector<std::string>& path) {
    // Paths, not their dotted text, identify values: a key may hold dots ("a.b" = 1).
    std::string key = join_path(path);
    if (done_.count(path)) return;
    auto it = std::find(stack_.begin(), stack_.end(), path);
    if (it != stack_.end()) {
      std::vector<std::string> cycle;
      for (auto step = it; step != stack_.end(); ++step) cycle.push_back(join_path(*step));
      cycle.push_back(key);
      Node* start = root_.find(*it);
      fail(start ? start->origin : Origin{},
           fmt::format("interpolation cycle: {}", join(cycle, " -> ")));
    }
    Node* n = root_.find(path);
    if (!n) return;
    if (stack_.size() >= kMaxInterpolationDepth)
      fail(n->origin, fmt::format("interpolations refer through more than {} values (a = "
                                  "\"${{b}}\", b = \"${{c}}\", ...); shorten the chain",
                                  kMaxInterpolationDepth));
    stack_.push_back(path);
    if (n->is_table()) {
      std::vector<std::string> keys = n->keys();
      for (const auto& k : keys) {
        auto child = path;
        child.push_back(k);
        resolve_at(child);
      }
    } else if (n->is_list()) {
      for (std::size_t i = 0; i < n->size(); ++i) {
        auto child = path;
        child.push_back(std::to_string(i));
        resolve_at(child);
      }
    } else if (n->is_string() && n->as_string().find("${") != std::string::npos) {
      Node value = evaluate(*n, path);
      check_placed(value, path.size(), key, value.origin);
      *root_.find(path) = std::move(value);
    }
    stack_.pop_back();
    done_.insert(path);
  }

 private:
  // Follows `target`, resolving interpolated strings on the way (they may hold tables).
  const Node* lookup(const std::vector<std::string>& target) {
    for (std::size_t i = 1; i <= target.size(); ++i) {
      std::vector<std::string> prefix(target.begin(), target.begin() + i);
      Node* n = root_.find(prefix);
      if (!n) return nullptr;
      if (n->is_string() && n->as_string().find("${") != std::string::npos) resolve_at(prefix);
    }
    resolve_at(target);
    return root_.find(target);
  }

  Node evaluate(const Node& n, const std::vector<std::string>& path) {
    const std::string& s = n.as_string();
    struct Piece {
      std::string literal;
      bool ref = false;
    };
    std::vector<Piece> pieces;
    std::string literal;
    for (std::size_t i = 0; i < s.size();) {
      if (s.compare(i, 3, "\\${") == 0) {
        literal += "${";
        i += 3;
        continue;
      }
      if (s.compare(i, 2, "${") != 0) {
        literal += s[i++];
        continue;
      }
      std::size_t close = s.find('}', i + 2);
      std::size_t nested = s.find("${", i + 2);
      if (close == std::string::npos)
        fail(n.origin, fmt::format("interpolation '{}' has no closing '}}'", s.substr(i)));
      if (nested != std::string::npos && nested < close)
        fail(n.origin, fmt::format("interpolation '{}': nested interpolations are not supported",
                                   s.substr(i, close - i + 1)));
      if (!literal.empty()) pieces.push_back({literal, false});
      literal.clear();
      pieces.push_back({s.substr(i + 2, close - i - 2), true});
      i = close + 1;
    }
    if (!literal.empty()) pieces.push_back({literal, false});

    auto value_of = [&](const std::string& body) -> Node {
      std::string expr = body;
      auto trim = [](std::string x) {
        auto b = x.find_first_not_of(" \t");
        auto e = x.find_last_not_of(" \t");
        return b == std::string::npos ? std::string() : x.substr(b, e - b + 1);
      };
      expr = trim(expr);
      const std::string ref = "${" + body + "}";
      if (expr.rfind("env:", 0) == 0) {
        std::string rest = expr.substr(4);
        auto comma = rest.find(',');
        std::string name = trim(rest.substr(0, comma));
        if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) {
              return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
            }))
          fail(n.origin, fmt::format("interpolation '{}': '{}' is not an environment variable "
                                     "name",
                                     ref, name));
        const char* v = std::getenv(name.c_str());
        std::string text;
        if (v)
          text = v;
        else if (comma != std::string::npos)
          text = trim(rest.substr(comma + 1));
        else
          fail(n.origin, fmt::format("interpolation '{}': environment variable {} is not set; "
                                     "set it, or give a default: ${{env:{},DEFAULT}}",
                                     ref, name, name));
        try {
          ParsedValue pv = parse_value(text, text);
          if (!pv.sweep && !pv.value.is_null()) {
            pv.value.origin = n.origin;
            return pv.value;
          }
        } catch (const ConfigError&) {
        }
        return Node::string(text, n.origin);
      }
      if (expr.find(':') != std::string::npos)
        fail(n.origin, fmt::format("interpolation '{}': unknown resolver '{}'; tlab knows env: "
                                   "(${{env:NAME}} or ${{env:NAME,default}})",
                                   ref, expr.substr(0, expr.find(':'))));
      std::vector<std::string> target;
      std::size_t dots = 0;
      while (dots < expr.size() && expr[dots] == '.') ++dots;
      if (dots > 0) {
        // Relative: one dot is the table holding this value, each further dot one level up.
        if (dots > path.size())
          fail(n.origin, fmt::format("interpolation '{}' goes up {} levels from '{}', above the "
                                     "top of the config",
                                     ref, dots - 1, join_path(path)));
        target.assign(path.begin(), path.end() - static_cast<std::ptrdiff_t>(dots));
      }
      std::string rest = expr.substr(dots);
      if (rest.empty())
        fail(n.origin, fmt::format("interpolation '{}' names no key; write ${{path.to.key}}", ref));
      for (const auto& seg : split_path(rest)) {
        if (seg.empty() || !std::all_of(seg.begin(), seg.end(), is_key_char))
          fail(n.origin, fmt::format("interpolation '{}': '{}' is not a key path (letters, "
                                     "digits, '_' and '-' separated by dots)",
                                     ref, rest));
        target.push_back(seg);
      }
      const Node* v = lookup(target);
      if (!v) {
        std::string hint = did_you_mean(
            nearest(join_path(target), not_ancestors(join_path(target), all_paths(root_))));
        fail(n.origin, fmt::format("interpolation '{}' refers to '{}', which does not exist{}", ref,
                                   join_path(target), hint.empty() ? "" : "; " + hint));
      }
      Node copy = *v;
      return copy;
    };

    if (pieces.size() == 1 && pieces[0].ref) {
      Node v = value_of(pieces[0].literal);
      v.origin = n.origin;
      charge(footprint(v), n.origin);
      return v;
    }
    std::string out;
    for (const auto& p : pieces) {
      if (!p.ref) {
        out += p.literal;
        continue;
      }
      Node v = value_of(p.literal);
      if (!v.is_scalar())
        fail(n.origin, fmt::format("interpolation '${{{}}}' inside a string refers to {}; only "
                                   "single values can be embedded in text",
                                   p.literal, v.describe()));
      std::string text = v.scalar_text();
      charge(text.size(), n.origin);
      out += text;
    }
    return Node::string(out, n.origin);
  }

  /// Approximate memory held by a value.
  static std::size_t footprint(const Node& v) {
    std::size_t bytes = sizeof(Node) + (v.is_string() ? v.as_string().size() : 0);
    for (std::size_t i = 0; i < v.size(); ++i)
      bytes +=
          v.is_list() ? footprint(v.items()[i]) : v.keys()[i].size() + footprint(v.value_at(i));
    return bytes;
  }

  /// Counts what interpolations produce, and refuses more than kMaxInterpolatedBytes in all.
  void charge(std::size_t bytes, const Origin& at) {
    produced_ += bytes;
    if (produced_ > kMaxInterpolatedBytes)
      fail(at, fmt::format("interpolations produce more than {} MiB of values; does a value refer "
                           "to another many times over (a = \"${{b}}${{b}}\", b = "
                           "\"${{c}}${{c}}\", ...)?",
                           kMaxInterpolatedBytes >> 20));
  }

  Node& root_;
  std::set<std::vector<std::string>> done_;
  std::vector<std::vector<std::string>> stack_;
  std::size_t produced_ = 0;
};

}  // namespace

Node resolve(const Node& config) {
  Node out = config;
  Resolver r(out);
  r.resolve_at({});
  return out;
}

}  // namespace tlab::cfg
