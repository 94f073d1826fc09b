#include "config/experiment.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>
#include <torch/cuda.h>
#include <nlohmann/json.hpp>

#include "plugins/loader.hpp"
#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab {
namespace {

// ---------------------------------------------------------------------------------------------
// Locations and errors

std::string location(const toml::node& n, const std::string& fallback) {
  const auto& src = n.source();
  if (src.begin.line == 0) return fallback + ": ";
  std::string file = src.path ? *src.path : fallback;
  return fmt::format("{}:{}:{}: ", file, src.begin.line, src.begin.column);
}

std::string describe(const toml::node& n) {
  std::ostringstream os;
  switch (n.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "a list";
    case toml::node_type::string:
      os << "string \"" << n.as_string()->get() << "\"";
      break;
    case toml::node_type::integer:
      os << "integer " << n.as_integer()->get();
      break;
    case toml::node_type::floating_point:
      os << "float " << n.as_floating_point()->get();
      break;
    case toml::node_type::boolean:
      os << "bool " << (n.as_boolean()->get() ? "true" : "false");
      break;
    default:
      os << "a date/time";
      break;
  }
  return os.str();
}

// Validation state: the experiment file (for nodes without a source) and the loader.
struct Checker {
  std::string file;
  PluginLoader* loader;

  [[noreturn]] void fail(const toml::node& n, const std::string& msg) const {
    throw ConfigError(location(n, file) + msg);
  }

  void check_keys(const toml::table& t, const std::string& prefix,
                  const std::vector<std::string>& valid, const std::string& what) const {
    for (auto&& [k, v] : t) {
      std::string key(k.str());
      if (std::find(valid.begin(), valid.end(), key) != valid.end()) continue;
      std::string hint = did_you_mean(nearest(key, valid));
      fail(v, fmt::format("unknown key '{}{}' in {}; {}valid keys: {}", prefix, key, what,
                          hint.empty() ? "" : hint + " ", join(valid, ", ", "'")));
    }
  }

  // Converts `n` to the parameter's type and checks its constraints.
  Value convert(const toml::node& n, const ParamSpec& spec, const std::string& path) const {
    auto want = [&]() -> std::string {
      return fmt::format("'{}' must be {}, got {}", path, type_name(spec.type), describe(n));
    };
    auto check_number = [&](double x) {
      if (!std::isfinite(x))
        fail(n, fmt::format("'{}' = {} is not a finite number; expected {}", path, x,
                            spec.min || spec.max ? bounds_text(spec) : "a finite number"));
      if ((spec.min && x < *spec.min) || (spec.max && x > *spec.max))
        fail(n, fmt::format("'{}' = {} is out of range; expected {}", path, x, bounds_text(spec)));
    };
    auto as_int = [&](const toml::node& e) -> int64_t {
      if (!e.is_integer()) fail(e, want());
      int64_t v = e.as_integer()->get();
      check_number(static_cast<double>(v));
      return v;
    };
    auto as_float = [&](const toml::node& e) -> double {
      double v;
      if (e.is_floating_point())
        v = e.as_floating_point()->get();
      else if (e.is_integer())
        v = static_cast<double>(e.as_integer()->get());
      else
        fail(e, want());
      check_number(v);
      return v;
    };
    auto as_string = [&](const toml::node& e) -> std::string {
      if (!e.is_string()) fail(e, want());
      std::string s = e.as_string()->get();
      if (!spec.choices.empty() &&
          std::find(spec.choices.begin(), spec.choices.end(), s) == spec.choices.end()) {
        std::string hint = did_you_mean(nearest(s, spec.choices));
        fail(e, fmt::format("'{}' = \"{}\" is not a valid choice; {}expected one of: {}", path, s,
                            hint.empty() ? "" : hint + " ", join(spec.choices, ", ", "\"")));
      }
      return s;
    };
    auto as_list = [&](auto&& element) {
      const toml::array* a = n.as_array();
      if (!a) fail(n, want());
      if (a->size() < spec.min_size)
        fail(n, fmt::format("'{}' needs at least {} element(s), got {}", path, spec.min_size,
                            a->size()));
      std::vector<std::decay_t<decltype(element(n))>> out;
      for (const auto& e : *a) out.push_back(element(e));
      return out;
    };
    switch (spec.type) {
      case ParamType::Bool:
        if (!n.is_boolean()) fail(n, want());
        return n.as_boolean()->get();
      case ParamType::Int:
        return as_int(n);
      case ParamType::Float:
        return as_float(n);
      case ParamType::String:
        return as_string(n);
      case ParamType::IntList:
        return as_list(as_int);
      case ParamType::FloatList:
        return as_list(as_float);
      case ParamType::StringList:
        return as_list(as_string);
    }
    fail(n, want());
  }

  static std::string bounds_text(const ParamSpec& s) {
    if (s.min && s.max) return fmt::format("a value in [{}, {}]", *s.min, *s.max);
    if (s.min) return fmt::format("a value >= {}", *s.min);
    if (s.max) return fmt::format("a value <= {}", *s.max);
    return "a finite number";
  }

  // A table choosing a plugin of `kind`: `plugin = "name"` plus the plugin's parameters.
  // `host_keys` are extra keys the host reads itself (e.g. `shots`).
  PluginSpec plugin_table(const toml::node& node, Kind kind, const std::string& path,
                          const std::vector<std::string>& host_keys = {}) const {
    const toml::table* t = node.as_table();
    if (!t)
      fail(node,
           fmt::format("'{}' must be a table with a 'plugin' key, got {}", path, describe(node)));
    const toml::node* name = t->get("plugin");
    if (!name)
      fail(node, fmt::format("'{}' has no 'plugin' key; name the {} plugin to use, e.g. "
                             "plugin = \"...\" (list them with: tlab plugins)",
                             path, kind_name(kind)));
    if (!name->is_string())
      fail(*name, fmt::format("'{}.plugin' must be a string, got {}", path, describe(*name)));
    PluginSpec spec;
    spec.plugin = name->as_string()->get();
    const LoadedPlugin* lp = nullptr;
    try {
      lp = &loader->get(kind, spec.plugin);
    } catch (const PluginError& e) {
      fail(*name, e.what());
    }
    const Schema& schema = lp->descriptor->schema;
    std::vector<std::string> valid = {"plugin"};
    valid.insert(valid.end(), host_keys.begin(), host_keys.end());
    for (const auto& p : schema.params) valid.push_back(p.key);
    check_keys(*t, path + ".", valid,
               fmt::format("{} plugin '{}' (see: tlab plugins show {})", kind_name(kind),
                           spec.plugin, spec.plugin));
    for (const auto& p : schema.params) {
      const toml::node* v = t->get(p.key);
      spec.params[p.key] = v ? convert(*v, p, path + "." + p.key) : p.default_value;
    }
    return spec;
  }
};

// ---------------------------------------------------------------------------------------------
// Values <-> TOML / JSON

void insert_value(toml::table& t, const std::string& key, const Value& v) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, int64_t> ||
                      std::is_same_v<T, double> || std::is_same_v<T, std::string>) {
          t.insert_or_assign(key, x);
        } else {
          toml::array a;
          for (const auto& e : x) a.push_back(e);
          t.insert_or_assign(key, std::move(a));
        }
      },
      v);
}

toml::table plugin_to_toml(const PluginSpec& p) {
  toml::table t;
  t.insert_or_assign("plugin", p.plugin);
  for (const auto& [k, v] : p.params) insert_value(t, k, v);
  return t;
}

nlohmann::json to_json(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table: {
      nlohmann::json j = nlohmann::json::object();
      for (auto&& [k, v] : *n.as_table()) j[std::string(k.str())] = to_json(v);
      return j;
    }
    case toml::node_type::array: {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& e : *n.as_array()) j.push_back(to_json(e));
      return j;
    }
    case toml::node_type::string:
      return n.as_string()->get();
    case toml::node_type::integer:
      return n.as_integer()->get();
    case toml::node_type::floating_point:
      return n.as_floating_point()->get();
    case toml::node_type::boolean:
      return n.as_boolean()->get();
    default: {
      std::ostringstream os;
      n.visit([&](const auto& x) { os << x; });
      return os.str();
    }
  }
}

std::string toml_text(const toml::node& n) {
  std::ostringstream os;
  n.visit([&](const auto& x) { os << toml::toml_formatter(x, toml::format_flags::none); });
  return os.str();
}

void flatten(const toml::node& n, const std::string& prefix, std::vector<ParamEntry>& out) {
  if (const toml::table* t = n.as_table()) {
    for (auto&& [k, v] : *t)
      flatten(v, prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str()), out);
    return;
  }
  if (const toml::array* a = n.as_array()) {
    if (a->is_array_of_tables()) {
      for (std::size_t i = 0; i < a->size(); ++i)
        flatten(*a->get(i), prefix + "." + std::to_string(i), out);
      return;
    }
    out.push_back({prefix, toml_text(*a), "list"});
    return;
  }
  if (n.is_boolean())
    out.push_back({prefix, n.as_boolean()->get(), "bool"});
  else if (n.is_integer())
    out.push_back({prefix, n.as_integer()->get(), "int"});
  else if (n.is_floating_point())
    out.push_back({prefix, n.as_floating_point()->get(), "float"});
  else if (n.is_string())
    out.push_back({prefix, n.as_string()->get(), "string"});
  else
    out.push_back({prefix, toml_text(n), "string"});
}

// ---------------------------------------------------------------------------------------------
// Paths and sweeps

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = path.find('.', start);
    parts.push_back(path.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

// Sets `path` (dotted; numbers index arrays) in `root` to `value`, creating tables. The value is
// moved, not copied: toml++ keeps a node's source position on move but drops it on copy, and
// every later error about this value should point at it.
void set_path(toml::table& root, const std::string& path, toml::node& value,
              const std::function<void(const std::string&)>& fail) {
  auto parts = split_path(path);
  toml::node* cur = &root;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p.empty()) fail(fmt::format("'{}' has an empty key segment", path));
    if (toml::table* t = cur->as_table()) {
      if (!t->get(p)) t->insert_or_assign(p, toml::table{});
      cur = t->get(p);
    } else if (toml::array* a = cur->as_array()) {
      std::size_t idx = 0;
      try {
        idx = std::stoul(p);
      } catch (...) {
        fail(fmt::format("'{}': '{}' indexes a list and must be a number", path, p));
      }
      if (idx >= a->size())
        fail(fmt::format("'{}': index {} is past the end of a list of {}", path, idx, a->size()));
      cur = a->get(idx);
    } else {
      fail(fmt::format("'{}': '{}' is not a table", path, p));
    }
  }
  const std::string& last = parts.back();
  if (last.empty()) fail(fmt::format("'{}' has an empty key segment", path));
  if (toml::table* t = cur->as_table()) {
    value.visit([&](auto& v) { t->insert_or_assign(last, std::move(v)); });
  } else {
    fail(fmt::format("'{}': the parent of '{}' is not a table", path, last));
  }
}

struct SweepAxis {
  std::string key;
  toml::array* values;
};

void collect_sweep(toml::table& t, const std::string& prefix, const Checker& c,
                   std::vector<SweepAxis>& axes) {
  for (auto&& [k, v] : t) {
    std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (toml::table* sub = v.as_table()) {
      collect_sweep(*sub, key, c, axes);
    } else if (toml::array* a = v.as_array()) {
      if (a->empty())
        c.fail(v, fmt::format("sweep '{}' has no values; give a non-empty list", key));
      axes.push_back({key, a});
    } else {
      c.fail(v, fmt::format("sweep '{}' must be a list of values, e.g. {} = [1, 2], got {}", key,
                            key, describe(v)));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The host's own settings

const std::vector<std::string> kTopKeys = {"name",     "seed",     "device",   "source", "target",
                                           "backbone", "adapters", "strategy", "train",  "sweep"};

TrainConfig train_table(const toml::node* node, const Checker& c) {
  TrainConfig cfg;
  if (!node) return cfg;
  const toml::table* t = node->as_table();
  if (!t) c.fail(*node, fmt::format("'train' must be a table, got {}", describe(*node)));
  // The [train] keys, checked with the same machinery as plugin parameters.
  struct Field {
    ParamSpec spec;
    std::function<void(const Value&)> set;
  };
  auto num = [](const char* key, ParamType type, double lo, double hi) {
    ParamSpec s;
    s.key = key;
    s.type = type;
    s.min = lo;
    s.max = hi;
    return s;
  };
  auto str = [](const char* key, std::vector<std::string> choices) {
    ParamSpec s;
    s.key = key;
    s.type = ParamType::String;
    s.choices = std::move(choices);
    return s;
  };
  std::vector<Field> fields = {
      {num("epochs", ParamType::Int, 1, 1e6),
       [&](const Value& v) { cfg.epochs = std::get<int64_t>(v); }},
      {num("batch_size", ParamType::Int, 1, 1 << 24),
       [&](const Value& v) { cfg.batch_size = std::get<int64_t>(v); }},
      {str("optimizer", {"sgd", "adam", "adamw"}),
       [&](const Value& v) { cfg.optimizer = std::get<std::string>(v); }},
      {num("lr", ParamType::Float, 1e-12, 1e3),
       [&](const Value& v) { cfg.lr = std::get<double>(v); }},
      {num("momentum", ParamType::Float, 0, 0.999999),
       [&](const Value& v) { cfg.momentum = std::get<double>(v); }},
      {num("weight_decay", ParamType::Float, 0, 10),
       [&](const Value& v) { cfg.weight_decay = std::get<double>(v); }},
      {str("schedule", {"constant", "cosine", "step"}),
       [&](const Value& v) { cfg.schedule = std::get<std::string>(v); }},
      {num("step_epochs", ParamType::Int, 1, 1e6),
       [&](const Value& v) { cfg.step_epochs = std::get<int64_t>(v); }},
      {num("gamma", ParamType::Float, 1e-9, 1),
       [&](const Value& v) { cfg.gamma = std::get<double>(v); }},
  };
  std::vector<std::string> valid;
  for (const auto& f : fields) valid.push_back(f.spec.key);
  c.check_keys(*t, "train.", valid, "[train]");
  for (const auto& f : fields)
    if (const toml::node* v = t->get(f.spec.key))
      f.set(c.convert(*v, f.spec, "train." + f.spec.key));
  return cfg;
}

toml::table train_to_toml(const TrainConfig& cfg) {
  toml::table t;
  t.insert_or_assign("epochs", cfg.epochs);
  t.insert_or_assign("batch_size", cfg.batch_size);
  t.insert_or_assign("optimizer", cfg.optimizer);
  t.insert_or_assign("lr", cfg.lr);
  t.insert_or_assign("momentum", cfg.momentum);
  t.insert_or_assign("weight_decay", cfg.weight_decay);
  t.insert_or_assign("schedule", cfg.schedule);
  t.insert_or_assign("step_epochs", cfg.step_epochs);
  t.insert_or_assign("gamma", cfg.gamma);
  return t;
}

std::string check_device(const toml::node& n, const Checker& c) {
  if (!n.is_string()) c.fail(n, fmt::format("'device' must be a string, got {}", describe(n)));
  std::string d = n.as_string()->get();
  if (d == "auto" || d == "cpu") return d;
  if (d == "cuda" || d.rfind("cuda:", 0) == 0) {
    int64_t index = 0;
    bool ok = d == "cuda";
    if (!ok) {
      std::string digits = d.substr(5);
      ok = !digits.empty() && digits.size() <= 3 && (digits == "0" || digits[0] != '0') &&
           std::all_of(digits.begin(), digits.end(),
                       [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); });
      if (ok) index = std::stoll(digits);
    }
    if (!ok)
      c.fail(n, fmt::format("device \"{}\" is not valid; expected \"cuda:N\" with N a device "
                            "number, e.g. \"cuda:0\"",
                            d));
    if (!torch::cuda::is_available())
      c.fail(n, fmt::format("device \"{}\" requested but this machine has no usable CUDA device "
                            "(or LibTorch was built without CUDA); use device = \"cpu\" or "
                            "\"auto\"",
                            d));
    if (index >= static_cast<int64_t>(torch::cuda::device_count()))
      c.fail(n, fmt::format("device \"{}\" requested but this machine has {} CUDA device(s); use "
                            "an index below {}",
                            d, torch::cuda::device_count(), torch::cuda::device_count()));
    return d;
  }
  std::vector<std::string> choices = {"auto", "cpu", "cuda", "cuda:0"};
  std::string hint = did_you_mean(nearest(d, choices));
  c.fail(n, fmt::format("device \"{}\" is not valid; {}expected \"auto\", \"cpu\", \"cuda\" or "
                        "\"cuda:N\"",
                        d, hint.empty() ? "" : hint + " "));
}

RunSpec validate(const toml::table& root, const Checker& c, const std::string& default_name) {
  c.check_keys(root, "", kTopKeys, "the experiment");
  RunSpec r;
  r.experiment = c.file;
  r.name = default_name;
  if (const toml::node* n = root.get("name")) {
    if (!n->is_string() || n->as_string()->get().empty())
      c.fail(*n, fmt::format("'name' must be a non-empty string, got {}", describe(*n)));
    r.name = n->as_string()->get();
  }
  if (const toml::node* n = root.get("seed")) {
    if (!n->is_integer() || n->as_integer()->get() < 0)
      c.fail(*n, fmt::format("'seed' must be an integer >= 0, got {}", describe(*n)));
    r.seed = n->as_integer()->get();
  }
  if (const toml::node* n = root.get("device")) r.device = check_device(*n, c);

  auto dataset = [&](const toml::node& n, const std::string& key) {
    DatasetSpec d;
    static_cast<PluginSpec&>(d) = c.plugin_table(n, Kind::Dataset, key, {"shots"});
    if (const toml::node* s = n.as_table()->get("shots")) {
      ParamSpec spec;
      spec.key = "shots";
      spec.type = ParamType::Int;
      spec.min = 0;
      spec.max = 1e9;
      d.shots = std::get<int64_t>(c.convert(*s, spec, key + ".shots"));
    }
    return d;
  };
  auto required = [&](const char* key) -> const toml::node& {
    const toml::node* n = root.get(key);
    if (!n)
      throw ConfigError(
          fmt::format("{}: the experiment has no [{}] table; add one with plugin = \"...\" (list "
                      "plugins with: tlab plugins)",
                      c.file, key));
    return *n;
  };
  if (const toml::node* n = root.get("source")) r.source = dataset(*n, "source");
  r.target = dataset(required("target"), "target");
  r.backbone = c.plugin_table(required("backbone"), Kind::Backbone, "backbone");
  if (const toml::node* n = root.get("adapters")) {
    const toml::array* a = n->as_array();
    if (!a || !a->is_array_of_tables())
      c.fail(*n, "'adapters' must be a list of tables: [[adapters]] plugin = \"linear_head\"");
    for (std::size_t i = 0; i < a->size(); ++i)
      r.adapters.push_back(
          c.plugin_table(*a->get(i), Kind::Adapter, fmt::format("adapters.{}", i)));
  }
  r.strategy = c.plugin_table(required("strategy"), Kind::Strategy, "strategy");
  r.train = train_table(root.get("train"), c);

  // The resolved config: every setting with its effective value.
  toml::table resolved;
  resolved.insert_or_assign("name", r.name);
  resolved.insert_or_assign("seed", r.seed);
  resolved.insert_or_assign("device", r.device);
  auto dataset_toml = [](const DatasetSpec& d) {
    toml::table t = plugin_to_toml(d);
    t.insert_or_assign("shots", d.shots);
    return t;
  };
  if (r.source) resolved.insert_or_assign("source", dataset_toml(*r.source));
  resolved.insert_or_assign("target", dataset_toml(r.target));
  resolved.insert_or_assign("backbone", plugin_to_toml(r.backbone));
  if (!r.adapters.empty()) {
    toml::array adapters;
    for (const auto& a : r.adapters) adapters.push_back(plugin_to_toml(a));
    resolved.insert_or_assign("adapters", std::move(adapters));
  }
  resolved.insert_or_assign("strategy", plugin_to_toml(r.strategy));
  resolved.insert_or_assign("train", train_to_toml(r.train));
  r.config_toml = toml_text(resolved) + "\n";
  r.config_hash = hash_string(r.config_toml);
  flatten(resolved, "", r.params);
  return r;
}

}  // namespace

std::vector<RunSpec> load_experiment(const fs::path& path,
                                     const std::vector<std::string>& overrides,
                                     PluginLoader& loader) {
  Checker c{path.string(), &loader};
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw ConfigError(fmt::format("{}: experiment file does not exist", path.string()));
  if (fs::is_directory(path, ec))
    throw ConfigError(
        fmt::format("{}: is a folder, expected a TOML experiment file", path.string()));
  // The file is parsed afresh for each run and values are moved into place, so that every node
  // keeps its file:line:col (see set_path).
  auto parse = [&]() {
    try {
      return toml::parse_file(path.string());
    } catch (const toml::parse_error& e) {
      const auto& b = e.source().begin;
      throw ConfigError(
          fmt::format("{}:{}:{}: {}", path.string(), b.line, b.column, e.description()));
    }
  };
  // Command-line overrides: key=value, value in TOML syntax, else taken as a bare string.
  // Overrides of `sweep.*` change the sweep itself; the others apply to every run after its
  // sweep values, and an override of a swept key replaces that sweep dimension.
  struct Override {
    std::string text, key, value;
  };
  std::vector<Override> pre, post;
  for (const auto& o : overrides) {
    auto eq = o.find('=');
    if (eq == std::string::npos || eq == 0)
      throw ConfigError(
          fmt::format("override '{}' is not of the form key=value (e.g. "
                      "train.lr=0.01)",
                      o));
    if (std::any_of(o.begin(), o.end(), [](char ch) { return ch == '\n' || ch == '\r'; }))
      throw ConfigError(
          fmt::format("override '{}' contains a line break; give one key=value per "
                      "argument",
                      o));
    Override ov{o, o.substr(0, eq), o.substr(eq + 1)};
    (ov.key == "sweep" || ov.key.rfind("sweep.", 0) == 0 ? pre : post).push_back(ov);
  }
  auto apply = [&](toml::table& root, const std::vector<Override>& list) {
    for (const auto& o : list) {
      toml::table holder;
      try {
        holder = toml::parse("v = " + o.value, "override '" + o.text + "'");
      } catch (const toml::parse_error&) {
        holder = toml::table{};
        holder.insert_or_assign("v", o.value);
      }
      set_path(root, o.key, *holder.get("v"), [&](const std::string& msg) {
        throw ConfigError(fmt::format("override '{}': {}", o.text, msg));
      });
    }
  };
  auto overridden = [&](const std::string& axis) {
    for (const auto& o : post)
      if (axis == o.key || axis.rfind(o.key + ".", 0) == 0) return true;
    return false;
  };
  auto prepare = [&]() {
    toml::table root = parse();
    apply(root, pre);
    return root;
  };
  auto axes_of = [&](toml::table& root) {
    std::vector<SweepAxis> axes;
    if (toml::node* s = root.get("sweep")) {
      if (!s->is_table())
        c.fail(*s, fmt::format("'sweep' must be a table of key = [values], got {}", describe(*s)));
      collect_sweep(*s->as_table(), "", c, axes);
    }
    axes.erase(std::remove_if(axes.begin(), axes.end(),
                              [&](const SweepAxis& a) { return overridden(a.key); }),
               axes.end());
    return axes;
  };

  std::vector<std::size_t> sizes;
  {
    toml::table first = prepare();
    for (const auto& a : axes_of(first)) sizes.push_back(a.values->size());
  }
  // Refuse runaway sweeps before expanding them (each run is validated and kept in memory).
  constexpr double kMaxRuns = 100000;
  double total = 1;
  for (auto n : sizes) total *= static_cast<double>(n);
  if (total > kMaxRuns)
    throw ConfigError(
        fmt::format("{}: the sweep has {:.0f} combinations, more than the limit of "
                    "{:.0f}; split it into several experiments",
                    path.string(), total, kMaxRuns));
  const std::string default_name = path.stem().string();
  std::vector<RunSpec> runs;
  std::vector<std::size_t> index(sizes.size(), 0);
  while (true) {
    toml::table combo = prepare();
    auto axes = axes_of(combo);
    nlohmann::json swept = nlohmann::json::object();
    std::vector<std::string> label;
    for (std::size_t i = 0; i < axes.size(); ++i) {
      toml::node& v = *axes[i].values->get(index[i]);
      swept[axes[i].key] = to_json(v);
      label.push_back(axes[i].key + "=" + to_json(v).dump());
      set_path(combo, axes[i].key, v, [&](const std::string& msg) { c.fail(v, "sweep: " + msg); });
    }
    combo.erase("sweep");
    apply(combo, post);
    try {
      RunSpec r = validate(combo, c, default_name);
      r.overrides_json = swept.dump();
      runs.push_back(std::move(r));
    } catch (const ConfigError& e) {
      if (axes.empty()) throw;
      throw ConfigError(
          fmt::format("{}\n(in sweep combination {}: {}; the whole sweep was "
                      "rejected, no run started)",
                      e.what(), runs.size() + 1, join(label, ", ")));
    }
    // Next combination: the last axis varies fastest.
    bool more = false;
    for (std::size_t i = sizes.size(); i-- > 0 && !more;) {
      more = ++index[i] < sizes[i];
      if (!more) index[i] = 0;
    }
    if (!more) break;
  }
  return runs;
}

}  // namespace tlab
