#include "run/model_io.hpp"

#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <tuple>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "tlab/sdk/files.hpp"
#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab {

using weights::WeightsError;

namespace {

nlohmann::json params_json(const Params& params) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : params) std::visit([&, &k = k](const auto& x) { j[k] = x; }, v);
  return j;
}

nlohmann::json plugin_json(const PluginSpec& p) {
  return {{"plugin", p.plugin}, {"params", params_json(p.params)}};
}

void write_text_atomically(const fs::path& file, const std::string& text) {
  try {
    write_file_atomic(file, text);
  } catch (const std::runtime_error& e) {
    throw WeightsError(e.what());
  }
}

}  // namespace

WeightsFile resolve_weights(const std::string& spec, Store& store, const std::string& file_in_run,
                            const std::string& key) {
  WeightsFile w;
  w.spec = spec;
  if (spec.rfind("run:", 0) == 0) {
    w.run = std::stoll(spec.substr(4));  // the format was checked with the config
    RunRecord r;
    try {
      r = store.run(w.run);
    } catch (const std::exception&) {
      throw WeightsError(fmt::format(
          "{} = \"{}\": there is no run {} in this results database; list the runs with: tlab "
          "results list",
          key, spec, w.run));
    }
    if (r.status != to_string(RunStatus::kFinished))
      throw WeightsError(fmt::format(
          "{} = \"{}\": run {} is {}, not finished, so it has no final weights; use a finished "
          "run",
          key, spec, w.run, r.status));
    w.path = fs::absolute(fs::path(r.run_dir) / file_in_run);
    if (!fs::exists(w.path))
      throw WeightsError(fmt::format(
          "{} = \"{}\": run {} has no '{}' (its folder was moved or deleted, relative run "
          "folders are taken from the current folder, or an older tlab made it with model.pt "
          "only); run it again",
          key, spec, w.run, w.path.string()));
  } else {
    w.path = fs::absolute(spec);
    std::error_code ec;
    if (!fs::is_regular_file(w.path, ec))
      throw WeightsError(fmt::format(
          "{} = \"{}\": no such file ('{}'; relative paths are taken from the current folder)", key,
          spec, w.path.string()));
    if (w.path.extension() != ".safetensors")
      throw WeightsError(fmt::format(
          "{} = \"{}\": expected a .safetensors file; PyTorch checkpoints (.pt, .pth, .bin) are "
          "pickles that C++ cannot read safely: convert them with the snippet in docs/models.md",
          key, spec));
  }
  w.path = w.path.lexically_normal();
  w.hash = hash_file(w.path);
  return w;
}

weights::LoadReport load_backbone_weights(BackboneNet& net, const BackboneSpec& spec,
                                          const WeightsFile& file) {
  weights::LoadOptions o;
  o.strict = spec.weights_strict;
  o.remap = weights::parse_remap(spec.weights_remap);
  if (file.run) o.only_prefix = "backbone.";  // a checkpoint holds the head and adapters too
  o.what = fmt::format("the {} backbone", spec.plugin);
  return weights::load_state_dict(net, weights::read_safetensors(file.path), file.path.string(), o);
}

ParamCounts count_parameters(torch::nn::Module& module) {
  ParamCounts c;
  for (const auto& p : module.parameters()) {
    c.total += p.numel();
    if (p.requires_grad()) c.trainable += p.numel();
  }
  return c;
}

void save_model(torch::nn::Module& model, const fs::path& file,
                const std::map<std::string, std::string>& metadata) {
  weights::write_safetensors(file, weights::state_dict(model), metadata);
}

std::map<std::string, torch::Tensor> snapshot_buffers(torch::nn::Module& model) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& b : model.named_buffers(/*recurse=*/true))
    out[b.key()] = b.value().detach().clone();
  return out;
}

namespace {

// PEFT's LoRA format (docs/models.md, "PEFT's format"): adapter_config.json and
// adapter_model.safetensors with keys base_model.model.<module>.lora_A.weight (r x in) and
// .lora_B.weight (out x r), for the Linear layers of the run's one lora adapter.
const char* const kPeftPrefix = "base_model.model.";

std::string underscored(const std::string& name) {
  std::string out = name;
  for (char& c : out)
    if (c == '.') c = '_';
  return out;
}

// The index of the run's only lora adapter, or -1 (none, or several: PEFT's file holds one).
int lora_adapter(const RunSpec& spec, int* count = nullptr) {
  int found = -1, n = 0;
  for (std::size_t i = 0; i < spec.adapters.size(); ++i)
    if (spec.adapters[i].plugin == "lora") {
      found = n == 0 ? static_cast<int>(i) : found;
      ++n;
    }
  if (count) *count = n;
  return n == 1 ? found : -1;
}

double number(const Params& p, const char* key, double fallback) {
  auto it = p.find(key);
  if (it == p.end()) return fallback;
  if (auto* d = std::get_if<double>(&it->second)) return *d;
  if (auto* i = std::get_if<int64_t>(&it->second)) return static_cast<double>(*i);
  return fallback;
}

// (module name, A, B) of every adapted Linear layer of lora_<k>, in the backbone's module order.
std::vector<std::tuple<std::string, torch::Tensor, torch::Tensor>> lora_layers(Model& model,
                                                                               int k) {
  auto params = model.named_parameters(/*recurse=*/true);
  std::vector<std::tuple<std::string, torch::Tensor, torch::Tensor>> out;
  const std::string holder = fmt::format("lora_{}.", k);
  for (const auto& m : model.backbone->named_modules("", /*include_self=*/false)) {
    if (!m.value()->as<torch::nn::Linear>()) continue;
    const std::string base = holder + underscored(m.key());
    if (params.contains(base + ".A") && params.contains(base + ".B"))
      out.emplace_back(m.key(), params[base + ".A"], params[base + ".B"]);
  }
  return out;
}

void write_peft(Model& model, const RunSpec& spec, const fs::path& dir) {
  int count = 0;
  const int index = lora_adapter(spec, &count);
  if (index < 0) return;
  // lora_<k>: the k-th lora adapter attached (the only one here).
  const auto layers = lora_layers(model, 0);
  if (layers.empty()) return;  // e.g. only convolutions or attention projections: not PEFT's Linear
  const Params& p = spec.adapters[static_cast<std::size_t>(index)].params;
  weights::NamedTensors out;
  nlohmann::json targets = nlohmann::json::array();
  for (const auto& [name, a, b] : layers) {
    out.emplace_back(kPeftPrefix + name + ".lora_A.weight", a);
    out.emplace_back(kPeftPrefix + name + ".lora_B.weight", b);
    targets.push_back(name);
  }
  const int64_t rank = static_cast<int64_t>(number(p, "rank", 8));
  const double alpha = number(p, "alpha", 8);
  nlohmann::json config = {
      {"peft_type", "LORA"},
      {"task_type", nullptr},
      {"r", rank},
      {"lora_alpha", alpha == std::floor(alpha) ? nlohmann::json(static_cast<int64_t>(alpha))
                                                : nlohmann::json(alpha)},
      {"lora_dropout", 0.0},
      {"target_modules", targets},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"modules_to_save", nullptr},
      {"init_lora_weights", true},
      {"inference_mode", true},
      {"use_rslora", false},
      {"use_dora", false},
      {"base_model_name_or_path", nullptr},
      {"revision", nullptr}};
  fs::create_directories(dir / "peft");
  weights::write_safetensors(dir / "peft" / "adapter_model.safetensors", out, {{"format", "pt"}});
  write_text_atomically(dir / "peft" / "adapter_config.json", config.dump(2) + "\n");
}

// adapter_weights = ".../adapter_model.safetensors" beside a PEFT adapter_config.json.
weights::LoadReport load_peft(Model& model, const RunSpec& spec, const WeightsFile& file,
                              const fs::path& config_path) {
  std::ifstream in(config_path);
  const nlohmann::json c = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  auto fail = [&](const std::string& why) {
    throw WeightsError(fmt::format("adapter_weights = \"{}\" (PEFT, '{}'): {}", file.spec,
                                   config_path.string(), why));
  };
  if (!c.is_object()) fail("adapter_config.json is not a JSON object");
  if (c.value("peft_type", "") != "LORA")
    fail(fmt::format("peft_type is {}; tlab reads PEFT's LoRA adapters (\"LORA\")",
                     c.contains("peft_type") ? c["peft_type"].dump() : "missing"));
  int count = 0;
  const int index = lora_adapter(spec, &count);
  if (index < 0)
    fail(
        fmt::format("this run has {} lora adapters; a PEFT file fits exactly one: add "
                    "[[adapters]] plugin = \"lora\" with the file's r and lora_alpha",
                    count));
  const Params& p = spec.adapters[static_cast<std::size_t>(index)].params;
  const double rank = number(p, "rank", 8), alpha = number(p, "alpha", 8);
  if (c.value("r", -1.0) != rank || c.value("lora_alpha", -1.0) != alpha)
    fail(
        fmt::format("the file has r = {}, lora_alpha = {}; this run's lora has rank = {}, "
                    "alpha = {}: use the file's values (the update is lora_alpha / r * B A)",
                    c.contains("r") ? c["r"].dump() : "?",
                    c.contains("lora_alpha") ? c["lora_alpha"].dump() : "?", rank, alpha));
  if (c.value("use_dora", false) || c.value("use_rslora", false) ||
      c.value("fan_in_fan_out", false))
    fail("use_dora, use_rslora and fan_in_fan_out are not read by tlab's lora; expected false");
  std::map<std::string, std::pair<torch::Tensor, torch::Tensor>> ours;
  for (const auto& [name, a, b] : lora_layers(model, 0)) ours[name] = {a, b};
  weights::LoadReport report;
  torch::NoGradGuard no_grad;
  std::set<std::string> seen;
  for (const auto& [key, t] : weights::read_safetensors(file.path)) {
    const bool is_a = key.size() > 14 && key.compare(key.size() - 14, 14, ".lora_A.weight") == 0;
    const bool is_b = key.size() > 14 && key.compare(key.size() - 14, 14, ".lora_B.weight") == 0;
    if (key.rfind(kPeftPrefix, 0) != 0 || !(is_a || is_b)) {
      report.unexpected.push_back(key);
      continue;
    }
    const std::string module =
        key.substr(std::strlen(kPeftPrefix), key.size() - std::strlen(kPeftPrefix) - 14);
    auto it = ours.find(module);
    if (it == ours.end()) {
      report.unexpected.push_back(key);
      continue;
    }
    torch::Tensor& target = is_a ? it->second.first : it->second.second;
    if (target.sizes() != t.sizes()) {
      report.mismatched.push_back(key);
      continue;
    }
    target.copy_(t.to(target.device(), target.scalar_type()));
    report.matched.push_back(key);
    seen.insert(module + (is_a ? ".A" : ".B"));
  }
  for (const auto& [name, ab] : ours)
    for (const char* f : {".A", ".B"})
      if (!seen.count(name + f)) report.missing.push_back(name + f);
  if (!report.unexpected.empty() || !report.mismatched.empty() || !report.missing.empty())
    fail(fmt::format(
        "its LoRA layers do not fit this model's lora targets: {}; target the "
        "same modules (the file's target_modules: {})",
        report.summary(8), c.contains("target_modules") ? c["target_modules"].dump() : "?"));
  return report;
}

}  // namespace

int64_t save_adapters(Model& model, const std::vector<torch::Tensor>& trained,
                      const std::map<std::string, torch::Tensor>& buffers_before,
                      const RunSpec& spec, int64_t num_classes,
                      const std::vector<int64_t>& input_shape, const fs::path& dir) {
  std::set<const void*> keep;
  for (const auto& t : trained) keep.insert(t.unsafeGetTensorImpl());
  weights::NamedTensors out;
  std::vector<std::string> names;
  for (const auto& p : model.named_parameters(/*recurse=*/true))
    if (keep.count(p.value().unsafeGetTensorImpl())) {
      out.emplace_back(p.key(), p.value());
      names.push_back(p.key());
    }
  std::vector<std::string> buffer_names;
  for (const auto& b : model.named_buffers(/*recurse=*/true)) {
    auto it = buffers_before.find(b.key());
    if (it == buffers_before.end() ||
        !torch::equal(it->second, b.value().to(it->second.device()))) {
      out.emplace_back(b.key(), b.value());
      buffer_names.push_back(b.key());
    }
  }
  nlohmann::json adapters = nlohmann::json::array();
  for (const auto& a : spec.adapters) adapters.push_back(plugin_json(a));
  nlohmann::json j = {{"format", "tlab-adapter"},
                      {"version", 1},
                      {"backbone", plugin_json(spec.backbone)},
                      {"backbone_weights", spec.backbone.weights},
                      {"adapters", adapters},
                      {"num_classes", num_classes},
                      {"input_shape", input_shape},
                      {"parameters", names},
                      {"buffers", buffer_names}};
  weights::write_safetensors(dir / "adapter.safetensors", out,
                             {{"format", "tlab-adapter"}, {"adapter_json", "adapter.json"}});
  write_text_atomically(dir / "adapter.json", j.dump(2) + "\n");
  write_peft(model, spec, dir);  // the LoRA factors in PEFT's format too, when there are some
  return static_cast<int64_t>(out.size());
}

weights::LoadReport load_adapters(Model& model, const RunSpec& spec, int64_t num_classes,
                                  const std::vector<int64_t>& input_shape,
                                  const WeightsFile& file) {
  const fs::path json_path = file.path.parent_path() / "adapter.json";
  const fs::path peft_config = file.path.parent_path() / "adapter_config.json";
  if (!fs::exists(json_path) && fs::exists(peft_config))
    return load_peft(model, spec, file, peft_config);
  std::ifstream in(json_path);
  if (!in)
    throw WeightsError(
        fmt::format("adapter_weights = \"{}\": '{}' is missing; adapter weights are saved as "
                    "adapter.safetensors with adapter.json beside it (every run writes both)",
                    file.spec, json_path.string()));
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || j.value("format", "") != "tlab-adapter")
    throw WeightsError(
        fmt::format("'{}' is not a tlab adapter description (no \"format\": "
                    "\"tlab-adapter\")",
                    json_path.string()));
  auto differ = [&](const std::string& what, const nlohmann::json& saved,
                    const nlohmann::json& now) {
    if (saved != now)
      throw WeightsError(fmt::format(
          "adapter_weights = \"{}\": the adapters were trained with {} {}, this run has {}; "
          "use the same {} (see '{}')",
          file.spec, what, saved.dump(), now.dump(), what, json_path.string()));
  };
  differ("backbone", j["backbone"], plugin_json(spec.backbone));
  nlohmann::json adapters = nlohmann::json::array();
  for (const auto& a : spec.adapters) adapters.push_back(plugin_json(a));
  differ("adapters", j["adapters"], adapters);
  differ("classes", j["num_classes"], num_classes);
  differ("input shape", j["input_shape"], input_shape);

  weights::LoadOptions o;
  o.strict = false;  // the file holds what trained; the rest of the model keeps its weights
  o.what = "the model's adapters";
  o.hint = "the file was saved by a run with other adapters; use the same [[adapters]]";
  auto report =
      weights::load_state_dict(model, weights::read_safetensors(file.path), file.path.string(), o);
  if (!report.unexpected.empty() || !report.mismatched.empty())
    throw WeightsError(fmt::format("{}: the adapter weights do not fit this model: {}",
                                   file.path.string(), report.summary(8)));
  return report;
}

namespace {

// A parameter value saved in adapter.json, converted back to the type the plugin's schema has.
Value param_from_json(const nlohmann::json& v, ParamType type, const std::string& what) {
  auto bad = [&] {
    return WeightsError(
        fmt::format("{}: saved value {} is not a {}", what, v.dump(), type_name(type)));
  };
  auto all_of = [&](auto pred) {
    if (!v.is_array()) return false;
    for (const auto& e : v)
      if (!pred(e)) return false;
    return true;
  };
  switch (type) {
    case ParamType::Bool:
      if (!v.is_boolean()) throw bad();
      return v.get<bool>();
    case ParamType::Int:
      if (!v.is_number_integer()) throw bad();
      return v.get<int64_t>();
    case ParamType::Float:
      if (!v.is_number()) throw bad();
      return v.get<double>();
    case ParamType::String:
      if (!v.is_string()) throw bad();
      return v.get<std::string>();
    case ParamType::IntList:
      if (!all_of([](const auto& e) { return e.is_number_integer(); })) throw bad();
      return v.get<std::vector<int64_t>>();
    case ParamType::FloatList:
      if (!all_of([](const auto& e) { return e.is_number(); })) throw bad();
      return v.get<std::vector<double>>();
    case ParamType::StringList:
      if (!all_of([](const auto& e) { return e.is_string(); })) throw bad();
      return v.get<std::vector<std::string>>();
  }
  throw bad();
}

Params params_from_json(PluginLoader& loader, Kind kind, const std::string& plugin,
                        const nlohmann::json& j, const std::string& where) {
  Params out;
  if (!j.is_object()) return out;
  const Schema& schema = loader.get(kind, plugin).descriptor->schema;
  for (const auto& [key, value] : j.items()) {
    const ParamSpec* spec = schema.find(key);
    if (!spec)
      throw WeightsError(fmt::format(
          "{}: {} plugin '{}' has no parameter '{}' any more (the run was made with another "
          "version of it); rebuild that run's plugin or train the model again",
          where, kind_name(kind), plugin, key));
    out[key] = param_from_json(value, spec->type, fmt::format("{}: {}.{}", where, plugin, key));
  }
  return out;
}

}  // namespace

std::shared_ptr<Model> load_run_model(const fs::path& run_dir, const std::string& ref,
                                      PluginLoader& loader, Context& ctx,
                                      const std::vector<int64_t>& input_shape) {
  const fs::path json_path = run_dir / "adapter.json";
  const fs::path weights_path = run_dir / "model.safetensors";
  for (const auto& f : {json_path, weights_path})
    if (!fs::is_regular_file(f))
      throw WeightsError(fmt::format(
          "model \"{}\": '{}' is missing; every finished run writes model.safetensors and "
          "adapter.json into its folder (was the folder moved, or the run made by an older "
          "tlab?)",
          ref, f.string()));
  std::ifstream in(json_path);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || j.value("format", "") != "tlab-adapter" || !j["backbone"].is_object() ||
      !j["adapters"].is_array() || !j["num_classes"].is_number_integer() ||
      !j["input_shape"].is_array())
    throw WeightsError(fmt::format(
        "model \"{}\": '{}' is not a tlab run description (format \"tlab-adapter\" with backbone, "
        "adapters, num_classes, input_shape)",
        ref, json_path.string()));
  const std::string where = fmt::format("model \"{}\" ({})", ref, json_path.string());
  TaskInfo task;
  task.num_classes = j["num_classes"].get<int64_t>();
  task.input_shape = j["input_shape"].get<std::vector<int64_t>>();
  if (task.input_shape != input_shape)
    throw WeightsError(fmt::format(
        "model \"{}\" takes examples of shape {} but this run's are {}; use a model trained on "
        "data of the same shape",
        ref, fmt::join(task.input_shape, "x"), fmt::join(input_shape, "x")));

  // Building draws random initial weights: keep the run's own random sequence untouched. The
  // model is built and loaded on the CPU (so no CUDA generator is drawn from), then moved.
  Context cpu = ctx;
  cpu.device = torch::kCPU;
  auto gen = at::detail::getDefaultCPUGenerator();
  const auto rng_state = gen.get_state();
  struct Restore {
    at::Generator& g;
    const at::Tensor& s;
    ~Restore() { g.set_state(s); }
  } restore{gen, rng_state};

  const std::string bname = j["backbone"].value("plugin", "");
  auto backbone = loader.create<Backbone>(
      bname, params_from_json(loader, Kind::Backbone, bname, j["backbone"]["params"], where));
  auto model = std::make_shared<Model>(backbone->build(task.input_shape, cpu));
  for (const auto& a : j["adapters"]) {
    const std::string aname = a.value("plugin", "");
    auto adapter = loader.create<Adapter>(
        aname, params_from_json(loader, Kind::Adapter, aname, a["params"], where));
    adapter->attach(*model, task, cpu);
  }
  weights::LoadOptions o;
  o.strict = true;
  o.what = fmt::format("the model of {}", ref);
  o.hint = "the run's plugins changed since it was trained; rebuild them as they were";
  weights::load_state_dict(*model, weights::read_safetensors(weights_path), weights_path.string(),
                           o);
  model->to(ctx.device);
  model->eval();
  for (auto& p : model->parameters()) p.requires_grad_(false);
  return model;
}

}  // namespace tlab
