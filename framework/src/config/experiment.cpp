#include "config/experiment.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <torch/cuda.h>
#include <nlohmann/json.hpp>

#include "plugins/loader.hpp"
#include "results/classification.hpp"
#include "run/distributed.hpp"
#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab {
namespace {

using cfg::Node;

// ---------------------------------------------------------------------------------------------
// Validation against the host's keys and the plugins' schemas

struct Checker {
  PluginLoader* loader;

  [[noreturn]] void fail(const Node& n, const std::string& msg) const { cfg::fail(n.origin, msg); }

  void check_keys(const Node& t, const std::string& prefix, const std::vector<std::string>& valid,
                  const std::string& what) const {
    for (std::size_t i = 0; i < t.size(); ++i) {
      const std::string& key = t.keys()[i];
      if (std::find(valid.begin(), valid.end(), key) != valid.end()) continue;
      std::string hint = did_you_mean(nearest(key, valid));
      fail(t.value_at(i),
           fmt::format("unknown key '{}{}' in {}; {}valid keys: {}", prefix, key, what,
                       hint.empty() ? "" : hint + " ", join(valid, ", ", "'")));
    }
  }

  // Converts `n` to the parameter's type and checks its constraints.
  Value convert(const Node& n, const ParamSpec& spec, const std::string& path) const {
    auto want = [&](const Node& e) -> std::string {
      return fmt::format("'{}' must be {}, got {}", path, type_name(spec.type), e.describe());
    };
    auto check_number = [&](const Node& e, double x) {
      if (!std::isfinite(x))
        fail(e, fmt::format("'{}' = {} is not a finite number; expected {}", path, x,
                            spec.min || spec.max ? bounds_text(spec) : "a finite number"));
      if ((spec.min && x < *spec.min) || (spec.max && x > *spec.max))
        fail(e, fmt::format("'{}' = {} is out of range; expected {}", path, x, bounds_text(spec)));
    };
    auto as_int = [&](const Node& e) -> int64_t {
      if (!e.is_int()) fail(e, want(e));
      int64_t v = e.as_int();
      check_number(e, static_cast<double>(v));
      return v;
    };
    auto as_float = [&](const Node& e) -> double {
      if (!e.is_number()) fail(e, want(e));
      double v = e.as_number();
      check_number(e, v);
      return v;
    };
    auto as_string = [&](const Node& e) -> std::string {
      if (!e.is_string()) fail(e, want(e));
      const std::string& s = e.as_string();
      if (!spec.choices.empty() &&
          std::find(spec.choices.begin(), spec.choices.end(), s) == spec.choices.end()) {
        std::string hint = did_you_mean(nearest(s, spec.choices));
        fail(e, fmt::format("'{}' = \"{}\" is not a valid choice; {}expected one of: {}", path, s,
                            hint.empty() ? "" : hint + " ", join(spec.choices, ", ", "\"")));
      }
      return s;
    };
    auto as_list = [&](auto&& element) {
      if (!n.is_list()) fail(n, want(n));
      if (n.size() < spec.min_size)
        fail(n, fmt::format("'{}' needs at least {} element(s), got {}", path, spec.min_size,
                            n.size()));
      std::vector<std::decay_t<decltype(element(n))>> out;
      for (const auto& e : n.items()) out.push_back(element(e));
      return out;
    };
    switch (spec.type) {
      case ParamType::Bool:
        if (!n.is_bool()) fail(n, want(n));
        return n.as_bool();
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
    fail(n, want(n));
  }

  static std::string bounds_text(const ParamSpec& s) {
    if (s.min && s.max) return fmt::format("a value in [{}, {}]", *s.min, *s.max);
    if (s.min) return fmt::format("a value >= {}", *s.min);
    if (s.max) return fmt::format("a value <= {}", *s.max);
    return "a finite number";
  }

  // A table choosing a plugin of `kind`: `plugin = "name"` plus the plugin's parameters.
  // `host_keys` are extra keys the host reads itself (e.g. `shots`).
  PluginSpec plugin_table(const Node& node, Kind kind, const std::string& path,
                          const std::vector<std::string>& host_keys = {}) const {
    if (!node.is_table())
      fail(node,
           fmt::format("'{}' must be a table with a 'plugin' key, got {}", path, node.describe()));
    const Node* name = node.get("plugin");
    if (!name)
      fail(node, fmt::format("'{}' has no 'plugin' key; name the {} plugin to use, e.g. "
                             "plugin = \"...\" (list them with: tlab plugins)",
                             path, kind_name(kind)));
    if (!name->is_string())
      fail(*name, fmt::format("'{}.plugin' must be a string, got {}", path, name->describe()));
    PluginSpec spec;
    spec.plugin = name->as_string();
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
    check_keys(node, path + ".", valid,
               fmt::format("{} plugin '{}' (see: tlab plugins show {})", kind_name(kind),
                           spec.plugin, spec.plugin));
    for (const auto& p : schema.params) {
      const Node* v = node.get(p.key);
      spec.params[p.key] = v ? convert(*v, p, path + "." + p.key) : p.default_value;
    }
    return spec;
  }
};

// ---------------------------------------------------------------------------------------------
// Values as config nodes

Node value_node(const Value& v) {
  return std::visit(
      [&](const auto& x) -> Node {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>) {
          return Node::boolean(x);
        } else if constexpr (std::is_same_v<T, int64_t>) {
          return Node::integer(x);
        } else if constexpr (std::is_same_v<T, double>) {
          return Node::floating(x);
        } else if constexpr (std::is_same_v<T, std::string>) {
          return Node::string(x);
        } else {
          Node l = Node::list();
          for (const auto& e : x) l.push_back(value_node(Value(e)));
          return l;
        }
      },
      v);
}

Node plugin_node(const PluginSpec& p) {
  Node t = Node::table();
  t.set("plugin", Node::string(p.plugin));
  for (const auto& [k, v] : p.params) t.set(k, value_node(v));
  return t;
}

std::string list_text(const Node& n) {
  std::vector<std::string> items;
  for (const auto& e : n.items())
    items.push_back(e.is_string() ? "\"" + e.as_string() + "\""
                    : e.is_list() ? list_text(e)
                                  : e.scalar_text());
  return "[" + join(items, ", ") + "]";
}

void flatten(const Node& n, const std::string& prefix, std::vector<ParamEntry>& out) {
  if (n.is_table()) {
    for (std::size_t i = 0; i < n.size(); ++i)
      flatten(n.value_at(i), prefix.empty() ? n.keys()[i] : prefix + "." + n.keys()[i], out);
    return;
  }
  if (n.is_list()) {
    if (!n.items().empty() && n.items()[0].is_table()) {
      for (std::size_t i = 0; i < n.size(); ++i)
        flatten(n.items()[i], prefix + "." + std::to_string(i), out);
      return;
    }
    out.push_back({prefix, list_text(n), "list"});
    return;
  }
  if (n.is_bool())
    out.push_back({prefix, n.as_bool(), "bool"});
  else if (n.is_int())
    out.push_back({prefix, n.as_int(), "int"});
  else if (n.is_float())
    out.push_back({prefix, n.as_number(), "float"});
  else
    out.push_back({prefix, n.scalar_text(), "string"});
}

// ---------------------------------------------------------------------------------------------
// The host's own settings

const std::vector<std::string> kTopKeys = {
    "name",     "seed",  "device",   "source",          "target", "backbone", "adapters",
    "strategy", "train", "launcher", "adapter_weights", "run",    "eval"};
const std::vector<std::string> kBackboneHostKeys = {"weights", "weights_strict", "weights_remap"};

ParamSpec num_spec(const char* key, ParamType type, double lo, double hi) {
  ParamSpec s;
  s.key = key;
  s.type = type;
  s.min = lo;
  s.max = hi;
  return s;
}

ParamSpec str_spec(const char* key, std::vector<std::string> choices) {
  ParamSpec s;
  s.key = key;
  s.type = ParamType::String;
  s.choices = std::move(choices);
  return s;
}

// The [train] keys, checked with the same machinery as plugin parameters.
struct TrainField {
  ParamSpec spec;
  std::function<void(TrainConfig&, const Value&)> set;
};

const std::vector<TrainField>& train_fields() {
  static const std::vector<TrainField> fields = {
      {num_spec("epochs", ParamType::Int, 0, 1e6),
       [](TrainConfig& c, const Value& v) { c.epochs = std::get<int64_t>(v); }},
      {num_spec("batch_size", ParamType::Int, 1, 1 << 24),
       [](TrainConfig& c, const Value& v) { c.batch_size = std::get<int64_t>(v); }},
      {str_spec("optimizer", {"sgd", "adam", "adamw"}),
       [](TrainConfig& c, const Value& v) { c.optimizer = std::get<std::string>(v); }},
      {num_spec("lr", ParamType::Float, 1e-12, 1e3),
       [](TrainConfig& c, const Value& v) { c.lr = std::get<double>(v); }},
      {num_spec("momentum", ParamType::Float, 0, 0.999999),
       [](TrainConfig& c, const Value& v) { c.momentum = std::get<double>(v); }},
      {num_spec("weight_decay", ParamType::Float, 0, 10),
       [](TrainConfig& c, const Value& v) { c.weight_decay = std::get<double>(v); }},
      {str_spec("schedule", {"constant", "cosine", "step"}),
       [](TrainConfig& c, const Value& v) { c.schedule = std::get<std::string>(v); }},
      {num_spec("step_epochs", ParamType::Int, 1, 1e6),
       [](TrainConfig& c, const Value& v) { c.step_epochs = std::get<int64_t>(v); }},
      {num_spec("gamma", ParamType::Float, 1e-9, 1),
       [](TrainConfig& c, const Value& v) { c.gamma = std::get<double>(v); }},
  };
  return fields;
}

// [train] keys of the runner's target stage only (SelectionSpec), not of the SDK's TrainConfig.
const char* const kSelectionKeys[] = {"checkpoint", "monitor", "patience"};
// [train] keys of how the host computes every stage (ComputeSpec), not of the SDK's TrainConfig.
const char* const kComputeKeys[] = {"precision", "channels_last", "cuda_graphs", "device_data_mb"};

std::vector<std::string> train_keys() {
  std::vector<std::string> keys;
  for (const auto& f : train_fields()) keys.push_back(f.spec.key);
  for (const char* k : kSelectionKeys) keys.emplace_back(k);
  for (const char* k : kComputeKeys) keys.emplace_back(k);
  return keys;
}

// The keys of a dataset table's [<role>.transform] (docs/datasets.md).
const std::vector<std::string> kTransformKeys = {
    "rotate", "hflip", "vflip", "elastic", "elastic_sigma", "blur",     "contrast",
    "invert", "jpeg",  "noise", "color",   "corruption",    "severity", "seed"};
// The keys of [run]: how to execute a run, not what it is (outside the resolved config).
const std::vector<std::string> kRunKeys = {"threads", "processes", "backend", "collective_timeout",
                                           "oversubscribe"};
const std::vector<std::string> kDatasetHostKeys = {"shots", "class_subset", "transform",
                                                   "disjoint_classes"};

// `[target] disjoint_classes = true` (task transfer to new classes): source and target each
// name their labels (class_subset) and share none.
void check_disjoint_classes(const Node& root, const RunSpec& r, const Checker& c) {
  const Node& target = *root.get("target");
  const Node* flag = target.get("disjoint_classes");
  if (!r.source)
    c.fail(*flag,
           "'target.disjoint_classes = true' compares the target's classes with the source's, "
           "but the experiment has no [source]; add one or remove target.disjoint_classes");
  for (const char* role : {"source", "target"}) {
    const DomainShift& s = std::string(role) == "source" ? r.source->shift : r.target.shift;
    if (s.classes.empty())
      c.fail(*flag, fmt::format("'target.disjoint_classes = true' needs the labels of both "
                                "domains, but [{0}] has no class_subset (it keeps every class "
                                "of its dataset); give it one, e.g. {0}.class_subset = [0, 1, "
                                "2, 3, 4]",
                                role));
  }
  std::vector<int64_t> shared;
  for (int64_t k : r.target.shift.classes)
    if (std::find(r.source->shift.classes.begin(), r.source->shift.classes.end(), k) !=
        r.source->shift.classes.end())
      shared.push_back(k);
  if (!shared.empty()) {
    auto list = [](const std::vector<int64_t>& v) {
      return fmt::format("[{}]", fmt::join(v, ", "));
    };
    c.fail(*target.get("class_subset"),
           fmt::format("'target.class_subset' = {} shares label{} {} with 'source.class_subset' = "
                       "{}, and target.disjoint_classes = true says the target's classes are new; "
                       "remove {} from one of the lists (or set target.disjoint_classes = false)",
                       list(r.target.shift.classes), shared.size() == 1 ? "" : "s",
                       fmt::join(shared, ", "), list(r.source->shift.classes),
                       shared.size() == 1 ? "it" : "them"));
  }
}

DomainShift domain_shift(const Node& table, const std::string& key, const Checker& c) {
  DomainShift s;
  if (const Node* cl = table.get("class_subset")) {
    const std::string path = key + ".class_subset";
    if (!cl->is_list() || cl->items().empty())
      c.fail(*cl, fmt::format("'{}' must be a non-empty list of the labels to keep (relabelled "
                              "0, 1, ... in that order), e.g. class_subset = [5, 7, 9]; got {}",
                              path, cl->describe()));
    for (const Node& x : cl->items()) {
      if (!x.is_int() || x.as_int() < 0)
        c.fail(x, fmt::format("'{}' holds {}; expected labels, integers >= 0", path, x.describe()));
      if (std::find(s.classes.begin(), s.classes.end(), x.as_int()) != s.classes.end())
        c.fail(x, fmt::format("'{}' names label {} twice; each label once", path, x.as_int()));
      s.classes.push_back(x.as_int());
    }
  }
  const Node* t = table.get("transform");
  if (!t) return s;
  const std::string path = key + ".transform";
  if (!t->is_table())
    c.fail(*t, fmt::format("'{}' must be a table of transforms, e.g. [{}] rotate = 30; got {}",
                           path, path, t->describe()));
  c.check_keys(*t, path + ".", kTransformKeys, "'" + path + "'");
  auto number = [&](const char* k, double lo, double hi, double& out) {
    if (const Node* v = t->get(k))
      out = std::get<double>(c.convert(*v, num_spec(k, ParamType::Float, lo, hi), path + "." + k));
  };
  auto integer = [&](const char* k, double lo, double hi, int64_t& out) {
    if (const Node* v = t->get(k))
      out = std::get<int64_t>(c.convert(*v, num_spec(k, ParamType::Int, lo, hi), path + "." + k));
  };
  auto flag = [&](const char* k, bool& out) {
    if (const Node* v = t->get(k)) {
      ParamSpec f;
      f.key = k;
      f.type = ParamType::Bool;
      out = std::get<bool>(c.convert(*v, f, path + "." + k));
    }
  };
  if (const Node* v = t->get("rotate"); v && v->is_list()) {
    // A list of angles: one domain each, pooled (several source domains).
    if (v->items().empty())
      c.fail(*v, fmt::format("'{}.rotate' is an empty list, which yields no domain; give one "
                             "angle, or a list of them (one domain each), e.g. rotate = [0, 15, "
                             "30]",
                             path));
    for (const Node& a : v->items()) {
      const double angle = std::get<double>(
          c.convert(a, num_spec("rotate", ParamType::Float, -360, 360), path + ".rotate"));
      if (std::find(s.rotations.begin(), s.rotations.end(), angle) != s.rotations.end())
        c.fail(a, fmt::format("'{}.rotate' lists {:g} twice; each angle is one domain, once", path,
                              angle));
      s.rotations.push_back(angle);
    }
  } else {
    number("rotate", -360, 360, s.rotate);
  }
  flag("hflip", s.hflip);
  flag("vflip", s.vflip);
  number("elastic", 0, 1000, s.elastic);
  number("elastic_sigma", 0.1, 100, s.elastic_sigma);
  number("blur", 0, 100, s.blur);
  number("contrast", 1e-6, 1, s.contrast);
  flag("invert", s.invert);
  integer("jpeg", 1, 100, s.jpeg);
  number("noise", 0, 10, s.noise);
  number("color", 0, 1, s.color);
  integer("severity", 1, 5, s.severity);
  integer("seed", 0, 9e15, s.seed);
  if (const Node* v = t->get("corruption")) {
    s.corruption = std::get<std::string>(
        c.convert(*v, str_spec("corruption", corruption_names()), path + ".corruption"));
    if (!s.severity)
      c.fail(*v, fmt::format("'{}.corruption' = \"{}\" needs its severity, 1 (mild) to 5: add "
                             "severity = 3",
                             path, s.corruption));
    // The family's own key, given as well, would be overwritten: refused.
    const std::string own = corruption_key(s.corruption);
    if (const Node* o = t->get(own))
      c.fail(*o, fmt::format("'{}.{}' and corruption = \"{}\" set the same thing; give one "
                             "(the corruption at its severity, or {} alone)",
                             path, own, s.corruption, own));
  } else if (const Node* v = t->get("severity")) {
    c.fail(*v, fmt::format("'{}.severity' grades a corruption; add corruption = \"...\" ({})", path,
                           join(corruption_names(), ", ")));
  }
  return s;
}

ComputeSpec compute_table(const Node* node, const Checker& c) {
  ComputeSpec s;
  if (!node || !node->is_table()) return s;  // train_table reported a wrong type
  if (const Node* v = node->get("precision"))
    s.precision = std::get<std::string>(
        c.convert(*v, str_spec("precision", {"fp32", "bf16", "fp16"}), "train.precision"));
  ParamSpec flag;
  flag.type = ParamType::Bool;
  if (const Node* v = node->get("channels_last")) {
    flag.key = "channels_last";
    s.channels_last = std::get<bool>(c.convert(*v, flag, "train.channels_last"));
  }
  if (const Node* v = node->get("cuda_graphs")) {
    flag.key = "cuda_graphs";
    s.cuda_graphs = std::get<bool>(c.convert(*v, flag, "train.cuda_graphs"));
  }
  if (const Node* v = node->get("device_data_mb")) {
    ParamSpec mb;
    mb.key = "device_data_mb";
    mb.type = ParamType::Int;
    mb.min = 0;
    s.device_data_mb = std::get<int64_t>(c.convert(*v, mb, "train.device_data_mb"));
  }
  return s;
}

TrainConfig train_table(const Node* node, const Checker& c) {
  TrainConfig cfg;
  if (!node) return cfg;
  if (!node->is_table())
    c.fail(*node, fmt::format("'train' must be a table, got {}", node->describe()));
  c.check_keys(*node, "train.", train_keys(), "[train]");
  for (const auto& f : train_fields())
    if (const Node* v = node->get(f.spec.key))
      f.set(cfg, c.convert(*v, f.spec, "train." + f.spec.key));
  return cfg;
}

SelectionSpec selection_table(const Node* node, const Checker& c) {
  SelectionSpec s;
  if (!node || !node->is_table()) return s;  // train_table reported a wrong type
  if (const Node* v = node->get("checkpoint"))
    s.checkpoint = std::get<std::string>(
        c.convert(*v, str_spec("checkpoint", {"last", "best"}), "train.checkpoint"));
  if (const Node* v = node->get("monitor")) {
    s.monitor = std::get<std::string>(c.convert(*v, str_spec("monitor", {}), "train.monitor"));
    try {
      check_metric_name(s.monitor, "train.monitor");
    } catch (const ClassificationError& e) {
      c.fail(*v, e.what());
    }
    if (s.monitor == "per_class")
      c.fail(*v,
             "train.monitor = \"per_class\" has one value per class; monitor a single-valued "
             "metric such as \"acc\", \"f1_macro\" or \"loss\"");
  }
  if (const Node* v = node->get("patience"))
    s.patience = std::get<int64_t>(
        c.convert(*v, num_spec("patience", ParamType::Int, 0, 1e6), "train.patience"));
  return s;
}

const std::vector<std::string>& eval_keys() {
  static const std::vector<std::string> keys = {"metrics", "calibration_bins", "transferability"};
  return keys;
}

EvalSpec eval_table(const Node* node, const Checker& c) {
  EvalSpec e;
  e.metrics = default_metrics();
  if (!node) return e;
  if (!node->is_table())
    c.fail(*node, fmt::format("'eval' must be a table, got {}", node->describe()));
  c.check_keys(*node, "eval.", eval_keys(), "[eval]");
  if (const Node* v = node->get("metrics")) {
    ParamSpec spec;
    spec.key = "metrics";
    spec.type = ParamType::StringList;
    e.metrics = std::get<std::vector<std::string>>(c.convert(*v, spec, "eval.metrics"));
    if (e.metrics.empty())
      c.fail(*v, fmt::format("'eval.metrics' is empty; list what to record, e.g. [\"{}\"]",
                             fmt::join(default_metrics(), "\", \"")));
    std::vector<std::string> seen;
    for (const auto& m : e.metrics) {
      try {
        check_metric_name(m, "eval.metrics");
      } catch (const ClassificationError& err) {
        c.fail(*v, err.what());
      }
      if (std::find(seen.begin(), seen.end(), m) != seen.end())
        c.fail(*v, fmt::format("'eval.metrics' lists \"{}\" twice", m));
      seen.push_back(m);
    }
  }
  if (const Node* v = node->get("calibration_bins"))
    e.calibration_bins = std::get<int64_t>(c.convert(
        *v, num_spec("calibration_bins", ParamType::Int, 1, 10000), "eval.calibration_bins"));
  if (const Node* v = node->get("transferability")) {
    if (v->is_bool()) {
      e.transferability = v->as_bool();
    } else if (v->is_string() && v->as_string() == "only") {
      e.transferability = e.transferability_only = true;
    } else {
      c.fail(*v, fmt::format("'eval.transferability' must be true (score the starting point, then "
                             "train), false, or \"only\" (score it and end the run before the "
                             "target stage), got {}",
                             v->describe()));
    }
  }
  return e;
}

Node eval_node(const EvalSpec& e) {
  Node t = Node::table();
  Node metrics = Node::list();
  for (const auto& m : e.metrics) metrics.push_back(Node::string(m));
  t.set("metrics", std::move(metrics));
  t.set("calibration_bins", Node::integer(e.calibration_bins));
  // Only when on: the resolved configs (and run keys) of runs without it stay as they were.
  if (e.transferability_only)
    t.set("transferability", Node::string("only"));
  else if (e.transferability)
    t.set("transferability", Node::boolean(true));
  return t;
}

Node train_node(const TrainConfig& cfg) {
  Node t = Node::table();
  t.set("epochs", Node::integer(cfg.epochs));
  t.set("batch_size", Node::integer(cfg.batch_size));
  t.set("optimizer", Node::string(cfg.optimizer));
  t.set("lr", Node::floating(cfg.lr));
  t.set("momentum", Node::floating(cfg.momentum));
  t.set("weight_decay", Node::floating(cfg.weight_decay));
  t.set("schedule", Node::string(cfg.schedule));
  t.set("step_epochs", Node::integer(cfg.step_epochs));
  t.set("gamma", Node::floating(cfg.gamma));
  return t;
}

// The [launcher] keys. Strings end up in sbatch options and a shell script: no whitespace or
// quotes where SLURM expects one word.
ParamSpec list_spec(const char* key) {
  ParamSpec s;
  s.key = key;
  s.type = ParamType::StringList;
  return s;
}

const std::vector<std::string>& launcher_keys() {
  static const std::vector<std::string> keys = {
      "name",          "partition",     "time",
      "mem",           "account",       "qos",
      "cpus_per_task", "gpus_per_task", "array_parallelism",
      "sbatch",        "setup",         "nodes_per_run"};
  return keys;
}

LauncherSpec launcher_table(const Node* node, const Checker& c) {
  LauncherSpec l;
  if (!node) return l;
  if (!node->is_table())
    c.fail(*node, fmt::format("'launcher' must be a table, got {}", node->describe()));
  c.check_keys(*node, "launcher.", launcher_keys(), "[launcher]");
  auto word = [&](const char* key, const char* pattern, const char* expected) -> std::string {
    const Node* v = node->get(key);
    if (!v) return "";
    const std::string path = std::string("launcher.") + key;
    std::string s = std::get<std::string>(c.convert(*v, str_spec(key, {}), path));
    if (!s.empty() && !std::regex_match(s, std::regex(pattern)))
      c.fail(*v, fmt::format("'{}' = \"{}\" is not valid; expected {}", path, s, expected));
    return s;
  };
  l.name = word("name", "local|slurm", "\"local\" or \"slurm\"");
  if (l.name.empty()) l.name = "local";
  const char* name_chars = "[A-Za-z0-9_.,:+@-]+";
  l.partition = word("partition", name_chars, "a partition name (or names, comma-separated)");
  l.account = word("account", name_chars, "an account name");
  l.qos = word("qos", name_chars, "a QOS name");
  l.time = word("time", "([0-9]+-)?[0-9]+(:[0-9]{1,2}){0,2}",
                "a SLURM time limit: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS");
  l.mem = word("mem", "[0-9]+[KMGT]?", "a size in megabytes, or with a unit: 500M, 4G");
  auto integer = [&](const char* key, double lo, double hi, int64_t fallback) {
    const Node* v = node->get(key);
    return v ? std::get<int64_t>(c.convert(*v, num_spec(key, ParamType::Int, lo, hi),
                                           std::string("launcher.") + key))
             : fallback;
  };
  l.cpus_per_task = integer("cpus_per_task", 1, 4096, 1);
  l.gpus_per_task = integer("gpus_per_task", 0, 64, 0);
  l.array_parallelism = integer("array_parallelism", 0, 1e6, 0);
  l.nodes_per_run = integer("nodes_per_run", 1, 4096, 1);
  auto lines = [&](const char* key) {
    const Node* v = node->get(key);
    if (!v) return std::vector<std::string>{};
    auto out = std::get<std::vector<std::string>>(
        c.convert(*v, list_spec(key), std::string("launcher.") + key));
    for (const auto& line : out)
      if (line.find_first_of("\n\r") != std::string::npos)
        c.fail(*v,
               fmt::format("'launcher.{}' holds a line break; give one line per list item", key));
    return out;
  };
  l.sbatch = lines("sbatch");
  for (const auto& option : l.sbatch)
    if (option.rfind("-", 0) != 0)
      c.fail(*node->get("sbatch"),
             fmt::format("'launcher.sbatch' item \"{}\" is not an sbatch option; write it as "
                         "on sbatch's command line, e.g. \"--constraint=a100\"",
                         option));
  l.setup = lines("setup");
  return l;
}

Node launcher_node(const LauncherSpec& l) {
  Node t = Node::table();
  t.set("name", Node::string(l.name));
  t.set("partition", Node::string(l.partition));
  t.set("time", Node::string(l.time));
  t.set("mem", Node::string(l.mem));
  t.set("account", Node::string(l.account));
  t.set("qos", Node::string(l.qos));
  t.set("cpus_per_task", Node::integer(l.cpus_per_task));
  t.set("gpus_per_task", Node::integer(l.gpus_per_task));
  t.set("array_parallelism", Node::integer(l.array_parallelism));
  t.set("nodes_per_run", Node::integer(l.nodes_per_run));
  Node sbatch = Node::list(), setup = Node::list();
  for (const auto& s : l.sbatch) sbatch.push_back(Node::string(s));
  for (const auto& s : l.setup) setup.push_back(Node::string(s));
  t.set("sbatch", std::move(sbatch));
  t.set("setup", std::move(setup));
  return t;
}

std::string check_device(const Node& n, const Checker& c) {
  if (!n.is_string()) c.fail(n, fmt::format("'device' must be a string, got {}", n.describe()));
  std::string d = n.as_string();
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

// A weights source: "" (none), "run:<id>" with a positive integer id, or a file path.
void check_weights_source(const std::string& w, const Node* n, const Checker& c) {
  if (w.rfind("run:", 0) != 0) return;
  const std::string id = w.substr(4);
  if (id.empty() || id.size() > 18 ||
      !std::all_of(id.begin(), id.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) ||
      std::stoll(id) < 1)
    c.fail(*n, fmt::format("\"{}\" names no run: expected \"run:<id>\" with the id of a "
                           "finished run (see: tlab results list)",
                           w));
}

RunSpec validate(const Node& root, const Checker& c, const std::string& file,
                 const std::string& default_name) {
  c.check_keys(root, "", kTopKeys, "the experiment");
  RunSpec r;
  r.experiment = file;
  r.name = default_name;
  if (const Node* n = root.get("name")) {
    if (!n->is_string() || n->as_string().empty())
      c.fail(*n, fmt::format("'name' must be a non-empty string, got {}", n->describe()));
    r.name = n->as_string();
    // The name is printed in tables, logs and run folders: no escape sequences for terminals.
    if (const std::string where = find_control(r.name); !where.empty())
      c.fail(*n, fmt::format("'name' holds a control character ({}); expected printable text, "
                             "e.g. \"digits-fewshot\"",
                             where));
  }
  if (const Node* n = root.get("seed")) {
    if (!n->is_int() || n->as_int() < 0)
      c.fail(*n, fmt::format("'seed' must be an integer >= 0, got {}", n->describe()));
    r.seed = n->as_int();
  }
  if (const Node* n = root.get("device")) r.device = check_device(*n, c);

  auto dataset = [&](const Node& n, const std::string& key) {
    DatasetSpec d;
    static_cast<PluginSpec&>(d) = c.plugin_table(n, Kind::Dataset, key, kDatasetHostKeys);
    if (const Node* s = n.get("shots"))
      d.shots = std::get<int64_t>(
          c.convert(*s, num_spec("shots", ParamType::Int, 0, 1e9), key + ".shots"));
    d.shift = domain_shift(n, key, c);
    if (const Node* v = n.get("disjoint_classes")) {
      if (key != "target")
        c.fail(*v, fmt::format("'{}.disjoint_classes' belongs in [target]: it says the target's "
                               "classes are none of the source's; move it there",
                               key));
      ParamSpec f;
      f.key = "disjoint_classes";
      f.type = ParamType::Bool;
      d.disjoint_classes = std::get<bool>(c.convert(*v, f, "target.disjoint_classes"));
    }
    return d;
  };
  auto required = [&](const char* key) -> const Node& {
    const Node* n = root.get(key);
    if (!n)
      cfg::fail(cfg::Origin::in_file(file),
                fmt::format("the experiment has no [{}] table; add one with plugin = \"...\" "
                            "(list plugins with: tlab plugins), or choose it from a config group "
                            "(list them with: tlab config --groups {})",
                            key, file));
    return *n;
  };
  if (const Node* n = root.get("source")) r.source = dataset(*n, "source");
  r.target = dataset(required("target"), "target");
  if (r.target.disjoint_classes) check_disjoint_classes(root, r, c);
  {
    const Node& n = required("backbone");
    static_cast<PluginSpec&>(r.backbone) =
        c.plugin_table(n, Kind::Backbone, "backbone", kBackboneHostKeys);
    if (const Node* w = n.get("weights"))
      r.backbone.weights =
          std::get<std::string>(c.convert(*w, str_spec("weights", {}), "backbone.weights"));
    if (const Node* w = n.get("weights_strict")) {
      if (!w->is_bool())
        c.fail(*w,
               fmt::format("'backbone.weights_strict' must be a boolean, got {}", w->describe()));
      r.backbone.weights_strict = w->as_bool();
    }
    if (const Node* w = n.get("weights_remap")) {
      ParamSpec spec;
      spec.key = "weights_remap";
      spec.type = ParamType::StringList;
      r.backbone.weights_remap =
          std::get<std::vector<std::string>>(c.convert(*w, spec, "backbone.weights_remap"));
      for (const auto& rule : r.backbone.weights_remap) {
        auto eq = rule.find('=');
        if (eq == std::string::npos || eq == 0 || rule.find('=', eq + 1) != std::string::npos)
          c.fail(*w, fmt::format("'backbone.weights_remap' rule \"{}\" is not of the form "
                                 "\"from=to\" (a key prefix and its replacement, empty to strip "
                                 "it), e.g. \"module.=\"",
                                 rule));
      }
    }
    if (r.backbone.weights.empty() && (n.get("weights_strict") || n.get("weights_remap")))
      c.fail(n,
             "'backbone.weights_strict' and 'backbone.weights_remap' apply to weights loaded "
             "with backbone.weights = \"file.safetensors\" or \"run:<id>\"; set "
             "backbone.weights or remove them");
    check_weights_source(r.backbone.weights, n.get("weights"), c);
  }
  if (const Node* n = root.get("adapters")) {
    if (!n->is_list() || !std::all_of(n->items().begin(), n->items().end(),
                                      [](const Node& e) { return e.is_table(); }))
      c.fail(*n, "'adapters' must be a list of tables: [[adapters]] plugin = \"linear_head\"");
    for (std::size_t i = 0; i < n->size(); ++i)
      r.adapters.push_back(
          c.plugin_table(n->items()[i], Kind::Adapter, fmt::format("adapters.{}", i)));
  }
  r.strategy = c.plugin_table(required("strategy"), Kind::Strategy, "strategy");
  if (const Node* n = root.get("adapter_weights")) {
    r.adapter_weights =
        std::get<std::string>(c.convert(*n, str_spec("adapter_weights", {}), "adapter_weights"));
    check_weights_source(r.adapter_weights, n, c);
    if (!r.adapter_weights.empty() && r.adapters.empty())
      c.fail(*n,
             "'adapter_weights' is set but the experiment has no adapters to load them "
             "into; add the [[adapters]] the weights were trained with");
  }
  r.train = train_table(root.get("train"), c);
  r.selection = selection_table(root.get("train"), c);
  r.compute = compute_table(root.get("train"), c);
  r.eval = eval_table(root.get("eval"), c);
  r.launcher = launcher_table(root.get("launcher"), c);
  if (const Node* run = root.get("run")) {  // how to execute, not what: out of the run key
    if (!run->is_table())
      c.fail(*run, fmt::format("'run' must be a table, got {}", run->describe()));
    c.check_keys(*run, "run.", kRunKeys, "[run]");
    if (const Node* t = run->get("threads"))
      r.threads = std::get<int64_t>(
          c.convert(*t, num_spec("threads", ParamType::Int, 0, 1024), "run.threads"));
    if (const Node* t = run->get("processes"))
      r.processes = std::get<int64_t>(
          c.convert(*t, num_spec("processes", ParamType::Int, 1, 1024), "run.processes"));
    if (const Node* t = run->get("collective_timeout"))
      r.collective_timeout =
          std::get<double>(c.convert(*t, num_spec("collective_timeout", ParamType::Float, 1, 86400),
                                     "run.collective_timeout"));
    if (const Node* t = run->get("oversubscribe")) {
      ParamSpec f;
      f.key = "oversubscribe";
      f.type = ParamType::Bool;
      r.oversubscribe = std::get<bool>(c.convert(*t, f, "run.oversubscribe"));
    }
    if (const Node* b = run->get("backend")) {
      r.backend = std::get<std::string>(c.convert(*b, str_spec("backend", {}), "run.backend"));
      if (r.backend == "nccl")
        c.fail(*b,
               "'run.backend' = \"nccl\": NCCL ranks (one GPU each) are not built yet, and "
               "Debian's LibTorch has no CUDA; use backend = \"gloo\" (CPU)");
      if (r.backend != "gloo")
        c.fail(*b, fmt::format("'run.backend' = \"{}\" is not a c10d backend tlab has; expected "
                               "\"gloo\"",
                               r.backend));
    }
    if (r.processes > 1 && r.device.rfind("cuda", 0) == 0)
      c.fail(*run->get("processes"),
             fmt::format("'run.processes' = {} with device \"{}\": several ranks train on the CPU "
                         "(Gloo) only for now; NCCL ranks with one GPU each are not built; set "
                         "device = \"cpu\" or run.processes = 1",
                         r.processes, r.device));
    if (const int cores = static_cast<int>(std::thread::hardware_concurrency());
        r.processes > std::max(1, cores) && !r.oversubscribe)
      c.fail(*run->get("processes"),
             fmt::format("'run.processes' = {} ranks, and this machine has {} cores: ranks beyond "
                         "the cores only wait for each other; lower run.processes, or set "
                         "run.oversubscribe = true to run them anyway",
                         r.processes, cores));
    if (r.processes > 1 && !gloo_available())
      c.fail(*run->get("processes"),
             fmt::format("'run.processes' = {} needs Gloo, and this tlab was built without it; "
                         "install libgloo-dev (tools/setup.sh does) and build again",
                         r.processes));
  }
  {
    Node launcher = Node::table();
    launcher.set("launcher", launcher_node(r.launcher));
    r.launcher.config_toml = cfg::format_tree(launcher, "toml");
  }

  // The resolved config: every setting with its effective value.
  Node resolved = Node::table();
  resolved.set("name", Node::string(r.name));
  resolved.set("seed", Node::integer(r.seed));
  resolved.set("device", Node::string(r.device));
  auto dataset_node = [](const DatasetSpec& d) {
    Node t = plugin_node(d);
    t.set("shots", Node::integer(d.shots));
    // The shift only when it changes something: runs without one keep their run keys.
    const DomainShift& s = d.shift;
    if (!s.classes.empty()) {
      Node classes = Node::list();
      for (int64_t k : s.classes) classes.push_back(Node::integer(k));
      t.set("class_subset", std::move(classes));
    }
    if (s.transforms()) {
      const DomainShift none;
      Node x = Node::table();
      auto num = [&](const char* k, double v, double def) {
        if (v != def) x.set(k, Node::floating(v));
      };
      auto flag = [&](const char* k, bool v) {
        if (v) x.set(k, Node::boolean(true));
      };
      num("rotate", s.rotate, none.rotate);
      if (!s.rotations.empty()) {
        Node angles = Node::list();
        for (double a : s.rotations) angles.push_back(Node::floating(a));
        x.set("rotate", std::move(angles));
      }
      flag("hflip", s.hflip);
      flag("vflip", s.vflip);
      num("elastic", s.elastic, none.elastic);
      if (s.elastic > 0) num("elastic_sigma", s.elastic_sigma, -1);
      num("blur", s.blur, none.blur);
      num("contrast", s.contrast, none.contrast);
      flag("invert", s.invert);
      if (s.jpeg) x.set("jpeg", Node::integer(s.jpeg));
      num("noise", s.noise, none.noise);
      num("color", s.color, none.color);
      if (!s.corruption.empty()) {
        x.set("corruption", Node::string(s.corruption));
        x.set("severity", Node::integer(s.severity));
      }
      x.set("seed", Node::integer(s.seed));
      t.set("transform", std::move(x));
    }
    return t;
  };
  if (r.source) resolved.set("source", dataset_node(*r.source));
  resolved.set("target", dataset_node(r.target));
  {
    Node backbone = plugin_node(r.backbone);
    if (!r.backbone.weights.empty()) {  // only when used: runs without weights keep their keys
      backbone.set("weights", Node::string(r.backbone.weights));
      backbone.set("weights_strict", Node::boolean(r.backbone.weights_strict));
      Node remap = Node::list();
      for (const auto& rule : r.backbone.weights_remap) remap.push_back(Node::string(rule));
      backbone.set("weights_remap", std::move(remap));
    }
    resolved.set("backbone", std::move(backbone));
  }
  if (!r.adapters.empty()) {
    Node adapters = Node::list();
    for (const auto& a : r.adapters) adapters.push_back(plugin_node(a));
    resolved.set("adapters", std::move(adapters));
  }
  resolved.set("strategy", plugin_node(r.strategy));
  if (!r.adapter_weights.empty()) resolved.set("adapter_weights", Node::string(r.adapter_weights));
  {
    // The selection keys only when they differ from the defaults, so that runs that do not use
    // them keep their resolved config and run key.
    Node train = train_node(r.train);
    const SelectionSpec defaults;
    if (r.selection.checkpoint != defaults.checkpoint)
      train.set("checkpoint", Node::string(r.selection.checkpoint));
    if (r.selection.monitor != defaults.monitor)
      train.set("monitor", Node::string(r.selection.monitor));
    if (r.selection.patience != defaults.patience)
      train.set("patience", Node::integer(r.selection.patience));
    const ComputeSpec compute;  // likewise
    if (r.compute.precision != compute.precision)
      train.set("precision", Node::string(r.compute.precision));
    if (r.compute.channels_last != compute.channels_last)
      train.set("channels_last", Node::boolean(r.compute.channels_last));
    if (r.compute.cuda_graphs != compute.cuda_graphs)
      train.set("cuda_graphs", Node::boolean(r.compute.cuda_graphs));
    if (r.compute.device_data_mb != compute.device_data_mb)
      train.set("device_data_mb", Node::integer(r.compute.device_data_mb));
    resolved.set("train", std::move(train));
  }
  // [eval] likewise only when the experiment has one.
  if (root.get("eval")) resolved.set("eval", eval_node(r.eval));
  r.config_toml = cfg::format_tree(resolved, "toml");
  r.config_yaml = cfg::format_tree(resolved, "yaml");
  r.config_hash = hash_string(r.config_toml);
  flatten(resolved, "", r.params);
  return r;
}

// The keys an override may set although the composed config leaves them out: the host's keys
// and the parameters of the plugin a table names.
cfg::SchemaKeys schema_keys(PluginLoader& loader) {
  return [&loader](const Node& root, const std::vector<std::string>& path) {
    std::vector<std::string> keys;
    auto plugin_keys = [&](Kind kind, const Node* table, std::vector<std::string> extra) {
      keys = {"plugin"};
      keys.insert(keys.end(), extra.begin(), extra.end());
      const Node* name = table && table->is_table() ? table->get("plugin") : nullptr;
      if (!name || !name->is_string()) return;
      try {
        for (const auto& p : loader.get(kind, name->as_string()).descriptor->schema.params)
          keys.push_back(p.key);
      } catch (const PluginError&) {
        // An unknown plugin is reported, located, by validation.
      }
    };
    const Node* table = root.find(path);
    if (path.empty()) {
      keys = kTopKeys;
      keys.push_back("sweep");
    } else if (path.size() == 1 && path[0] == "train") {
      keys = train_keys();
    } else if (path.size() == 1 && path[0] == "eval") {
      keys = eval_keys();
    } else if (path.size() == 1 && path[0] == "launcher") {
      keys = launcher_keys();
    } else if (path.size() == 1 && path[0] == "run") {
      keys = kRunKeys;
    } else if (path.size() == 1 && (path[0] == "source" || path[0] == "target")) {
      plugin_keys(Kind::Dataset, table, kDatasetHostKeys);
    } else if (path.size() == 2 && (path[0] == "source" || path[0] == "target") &&
               path[1] == "transform") {
      keys = kTransformKeys;
    } else if (path.size() == 1 && path[0] == "backbone") {
      plugin_keys(Kind::Backbone, table, kBackboneHostKeys);
    } else if (path.size() == 1 && path[0] == "strategy") {
      plugin_keys(Kind::Strategy, table, {});
    } else if (path.size() == 2 && path[0] == "adapters") {
      plugin_keys(Kind::Adapter, table, {});
    }
    return keys;
  };
}

void check_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw ConfigError(fmt::format("{}: experiment file does not exist", path.string()));
  if (fs::is_directory(path, ec))
    throw ConfigError(
        fmt::format("{}: is a folder, expected a TOML experiment file", path.string()));
}

}  // namespace

cfg::Composition compose_experiment(const fs::path& path, const std::vector<std::string>& overrides,
                                    PluginLoader& loader, const LoadOptions& options) {
  check_file(path);
  cfg::ComposeOptions co;
  co.config_dirs = options.config_dirs;
  co.multirun = options.multirun;
  co.schema_keys = schema_keys(loader);
  co.draws = options.draws;
  cfg::Composition composition = cfg::compose(path, overrides, co);
  if (options.search) *options.search = composition.search_spec;
  return composition;
}

std::vector<RunSpec> load_experiment(const fs::path& path,
                                     const std::vector<std::string>& overrides,
                                     PluginLoader& loader, const LoadOptions& options) {
  cfg::Composition composition = compose_experiment(path, overrides, loader, options);
  Checker c{&loader};
  const std::string default_name = path.stem().string();
  std::vector<RunSpec> runs;
  const std::size_t total = composition.jobs.size();
  for (std::size_t i = 0; i < total; ++i) {
    cfg::Job& job = composition.jobs[i];
    try {
      Node resolved = cfg::resolve(job.config);
      RunSpec r = validate(resolved, c, path.string(), default_name);
      // Swept values in sweep order, e.g. {"strategy":"scratch","seed":1}.
      nlohmann::ordered_json swept = nlohmann::ordered_json::object();
      for (const auto& [k, v] : job.swept) swept[k] = cfg::to_json(v);
      r.overrides_json = swept.dump();
      r.overrides = job.overrides;
      if (!job.distributions.empty()) {
        const cfg::SearchSpec& search = composition.search_spec;
        nlohmann::ordered_json j{{"sweeper", search.sweeper}};
        if (job.trial >= 0) {
          j["trial"] = job.trial;
          j["samples"] = search.samples;
          j["search_seed"] = search.search_seed;
        }
        if (search.sweeper == "optuna") {  // the study's name and storage: the runner adds them
          j["sampler"] = search.sampler;
          j["metric"] = search.metric;
          j["direction"] = search.direction;
        }
        nlohmann::ordered_json dist = nlohmann::ordered_json::object();
        for (const auto& [k, d] : job.distributions) dist[k] = d;
        if (search.asha) {
          j["pruner"] = {{"name", "asha"},
                         {"min_epochs", search.asha_min_epochs},
                         {"reduction", search.asha_reduction}};
          // The runs compared with this one: the same search of the same experiment (more
          // samples extend it: the first draws stay), with the same config-group choices and
          // crossed values (every seed competes).
          nlohmann::ordered_json searched = dist;  // seeds may be added later: not part of it
          searched.erase("seed");
          j["bracket"] = hash_string(fmt::format("{}\n{}\n{}\n{}", r.name, searched.dump(),
                                                 search.search_seed, job.bracket));
        }
        j["distributions"] = std::move(dist);
        r.search_json = j.dump();
      }
      runs.push_back(std::move(r));
    } catch (const ConfigError& e) {
      if (total == 1 && job.swept.empty()) throw;
      std::vector<std::string> label;
      for (const auto& [k, v] : job.swept) label.push_back(k + "=" + cfg::format_value(v));
      throw ConfigError(
          fmt::format("{}\n(in sweep combination {} of {}: {}; the whole sweep was "
                      "rejected, no run started)",
                      e.what(), i + 1, total, join(label, " ")));
    }
  }
  return runs;
}

RunSpec load_resolved_run(const std::string& config_toml, const std::string& experiment,
                          PluginLoader& loader) {
  Node root = cfg::parse_text(config_toml, experiment + " (resolved config of a queued run)");
  Checker c{&loader};
  return validate(root, c, experiment, fs::path(experiment).stem().string());
}

}  // namespace tlab
