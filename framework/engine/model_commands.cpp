// What can be done with a finished run's model, in the training engine: `tlab eval`, `tlab
// export` and `tlab predict`.
//
// `tlab eval RUN [overrides]`: a finished run's model (rebuilt from its
// adapter.json and model.safetensors) evaluated on the dataset its resolved config names after
// the overrides, on the chosen splits, with the [eval] metrics; recorded as evaluations
// `eval/<label>/<split>` of the run (table `evaluations`, summaries `eval/<label>/<split>/<m>`).
// Everything is evaluated before anything is written: a failure leaves the database unchanged.

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/utils.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "config/experiment.hpp"
#include "errors.hpp"
#include "plugins/loader.hpp"
#include "results/table.hpp"
#include "run/data_prep.hpp"
#include "run/evaluation.hpp"
#include "run/export.hpp"
#include "run/model_io.hpp"
#include "run/runner.hpp"
#include "run/session.hpp"
#include "store/store.hpp"
#include "tlab/sdk/files.hpp"
#include "tlab/sdk/mode.hpp"
#include "transfer/scores.hpp"
#include "util.hpp"
#include "weights/safetensors.hpp"

namespace fs = std::filesystem;

namespace tlab::engine {
namespace {

using cli::UsageError;

// Metrics are not logged by a dataset's load(): anything it reports is dropped.
class NoMetrics : public Metrics {
 public:
  void log(const std::string&, double, int64_t, int64_t) override {}
  void summary(const std::string&, double) override {}
};

// What an override may change: the dataset evaluated, the metrics, the device. Anything else
// would describe another model, which only a new run trains.
void check_override(const std::string& o) {
  std::string key = o.substr(0, o.find('='));
  key.erase(0, key.find_first_not_of("+~"));
  const auto first = key.substr(0, key.find('.'));
  if (first == "target" || first == "eval" || key == "device") return;
  throw UsageError(fmt::format(
      "tlab eval: override '{}' changes '{}', which the run's model does not depend on at "
      "evaluation time or which would need another model; tlab eval takes target.* (the dataset "
      "evaluated), eval.* (the metrics) and device; to train with other settings, tlab run",
      o, key));
}

std::string label_of(const std::string& text) {
  std::string label;
  for (char c : text)
    label += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
                     c == '=' || c == ','
                 ? c
                 : '_';
  return label.empty() ? "data" : label;
}

// The dataset table of `spec` as TOML: what the evaluation record keeps.
std::string dataset_toml(const RunSpec& spec) {
  std::string text = "[target]\n";
  for (const auto& p : spec.params) {
    if (p.key.rfind("target.", 0) != 0 || p.key == "target.shots") continue;
    const std::string value = p.type == "string"
                                  ? nlohmann::json(std::get<std::string>(p.value)).dump()
                                  : param_text(p.value);
    text += fmt::format("{} = {}\n", p.key.substr(7), value);
  }
  return text;
}

struct Pending {
  EvaluationRecord record;
  std::vector<std::pair<std::string, double>> summaries;
  ClassificationReport report;
  std::string label, split;
};

// A finished run of the database whose model can be loaded: its record and input shape.
struct TrainedRun {
  RunRecord record;
  std::vector<int64_t> input_shape;  // from its adapter.json ({} if unreadable)
};

Store open_store(const std::string& db) {
  try {
    return Store(db, /*create=*/false);
  } catch (const StoreError& e) {
    throw UsageError(e.what());
  }
}

TrainedRun trained_run(Store& store, int64_t id, const char* use) {
  TrainedRun t;
  t.record = store.run(id);
  const RunRecord& run = t.record;
  if (run.status != to_string(RunStatus::kFinished))
    throw UsageError(fmt::format(
        "run {} is {}{}: only a finished run has a trained model to {}; tlab results list "
        "--where status=finished shows those that have",
        run.id, run.status, run.reason.empty() ? "" : fmt::format(" ({})", run.reason), use));
  if (!fs::exists(fs::path(run.run_dir) / "model.safetensors"))
    throw UsageError(fmt::format(
        "run {} finished but its model '{}' is missing (was its folder moved or deleted?)", run.id,
        (fs::path(run.run_dir) / "model.safetensors").string()));
  std::ifstream in(fs::path(run.run_dir) / "adapter.json");
  const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("input_shape") && j["input_shape"].is_array())
    for (const auto& d : j["input_shape"])
      if (d.is_number_integer()) t.input_shape.push_back(d.get<int64_t>());
  return t;
}

// The run's resolved config with `overrides`, composed as an experiment of its own.
std::vector<RunSpec> run_specs(const RunRecord& run, const std::vector<std::string>& overrides,
                               bool multirun, PluginLoader& loader) {
  const fs::path tmp =
      fs::temp_directory_path() / fmt::format("tlab-model-{}-{}", getpid(), run.id);
  fs::create_directories(tmp);
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{tmp};
  const fs::path file = tmp / fmt::format("run-{}.toml", run.id);
  write_file_atomic(file, run.config_toml);
  LoadOptions lo;
  lo.multirun = multirun;
  return load_experiment(file, overrides, loader, lo);
}

// The data `spec` names (its target table, no shots taken) and the run's model, checked to fit
// each other, on `device`.
struct Loaded {
  DomainData data;
  std::shared_ptr<Model> model;
  std::string what;  // "dataset 'csv' (domain 'x')"
};

// The context the model commands give plugins: `spec`'s seed (LibTorch's too), `device`, no
// metrics.
Context model_context(const RunSpec& spec, torch::Device device) {
  static PrefixLogger log("model");
  static NoMetrics no_metrics;
  Context ctx;
  ctx.device = device;
  ctx.seed = static_cast<uint64_t>(spec.seed);
  ctx.log = &log;
  ctx.metrics = &no_metrics;
  torch::manual_seed(spec.seed);
  return ctx;
}

// `spec`'s target dataset, loaded and checked (on the CPU, all splits).
DomainData load_target(const RunSpec& spec, const Context& ctx, PluginLoader& loader) {
  auto dataset = loader.create<Dataset>(spec.target.plugin, spec.target.params);
  Context dctx = ctx;
  dctx.plugin = spec.target.plugin;
  DomainData data =
      call_plugin("dataset", spec.target.plugin, "load", [&] { return dataset->load(dctx); });
  check_domain(data, "target", spec.target.plugin);
  return apply_shift(std::move(data), spec.target.shift, "target");
}

Loaded load_for_run(const TrainedRun& t, const RunSpec& spec, torch::Device device,
                    PluginLoader& loader, const char* use) {
  const RunRecord& run = t.record;
  Context ctx = model_context(spec, device);
  ctx.run_dir = run.run_dir;
  Loaded l;
  DeviceBudget budget{spec.compute.device_data_mb << 20};  // as the run placed its data
  l.data = to_device(load_target(spec, ctx, loader), device, budget);
  l.what = fmt::format("dataset '{}' (domain '{}')", spec.target.plugin, l.data.name);
  if (!t.input_shape.empty() && t.input_shape != l.data.input_shape)
    throw UsageError(fmt::format(
        "run {}'s model takes examples of shape {} but {} gives {}; {} it on data of the shape it "
        "was trained on",
        run.id, fmt::join(t.input_shape, "x"), l.what, fmt::join(l.data.input_shape, "x"), use));
  l.model =
      load_run_model(run.run_dir, fmt::format("run:{}", run.id), loader, ctx, l.data.input_shape);
  if (l.model->out_dim() != l.data.num_classes)
    throw UsageError(fmt::format(
        "run {}'s model predicts {} classes but {} has {}; {} it on data with the {} classes it "
        "was trained on",
        run.id, l.model->out_dim(), l.what, l.data.num_classes, use, l.model->out_dim()));
  return l;
}

// Rows [begin, end) of a split's inputs, resident or streamed, on `device`.
torch::Tensor split_inputs(const Split& split, int64_t begin, int64_t end, torch::Device device) {
  if (!split.streamed()) return split.x.slice(0, begin, end).to(device);
  std::vector<torch::Tensor> rows;
  for (int64_t i = begin; i < end; ++i) rows.push_back(split.stream->get(i, 0));
  return as_input(torch::stack(rows), device);
}

}  // namespace

int evaluate(const Globals& g, const EvalArgs& a) {
  for (const auto& o : a.overrides) check_override(o);
  std::vector<std::string> splits = a.splits.empty() ? std::vector<std::string>{"test"} : a.splits;
  for (const auto& s : splits)
    if (s != "train" && s != "val" && s != "test")
      throw UsageError(
          fmt::format("tlab eval: --split '{}' is not a split; expected train, val or test", s));
  PluginLoader loader(plugin_search_dirs(g));
  Store store = open_store(a.db);
  // Every run is checked before anything is evaluated, everything evaluated before anything is
  // written.
  std::vector<TrainedRun> runs;
  for (int64_t id : a.runs) runs.push_back(trained_run(store, id, "evaluate"));
  std::vector<Pending> pending;
  for (const TrainedRun& trained : runs) {
    const RunRecord& run = trained.record;
    std::vector<RunSpec> specs = run_specs(run, a.overrides, a.multirun, loader);
    if (a.dry_run) {
      for (const auto& s : specs)
        std::cout << fmt::format("run {}: {}  {}\n", run.id, join(s.overrides, " "),
                                 join(splits, ","));
      continue;
    }
    if (!a.name.empty() && specs.size() > 1)
      throw UsageError(fmt::format(
          "tlab eval: --name '{}' labels one evaluation but the overrides sweep {}; leave --name "
          "out (each is labelled by its dataset's domain name)",
          a.name, specs.size()));
    configure_threads(a.threads);
    std::set<std::string> labels;
    for (const RunSpec& spec : specs) {
      const torch::Device device = resolve_device(spec.device);
      Loaded loaded = load_for_run(trained, spec, device, loader, "evaluate");
      DomainData& data = loaded.data;
      auto& model = loaded.model;
      const std::string& what = loaded.what;
      std::string label = label_of(a.name.empty() ? data.name : a.name);
      if (labels.count(label))  // two domains of the same name in one sweep: say which is which
        label = label_of(data.name + "," + join(spec.overrides, ","));
      labels.insert(label);
      std::vector<std::string> metrics = {"acc", "loss"};
      for (const auto& m : spec.eval.metrics)
        if (m != "acc" && m != "loss") metrics.push_back(m);
      for (const auto& split_name : splits) {
        const Split& split = split_name == "train" ? data.train
                             : split_name == "val" ? data.val
                                                   : data.test;
        if (split.size() == 0)
          throw UsageError(
              fmt::format("{} has no {} split; choose another with --split", what, split_name));
        auto forward = [&](const torch::Tensor& x) { return model->forward(x); };
        const SplitEvaluation e = evaluate_split(*model, forward, split, device, data.num_classes,
                                                 top_k_of(metrics), spec.eval.calibration_bins);
        Pending p;
        p.label = label;
        p.split = split_name;
        p.report = summarize(e.counts);
        p.record.run_id = run.id;
        p.record.name = fmt::format("eval/{}/{}", label, split_name);
        p.record.dataset = dataset_toml(spec);
        p.record.counts = e.counts.to_json();
        p.record.loss = e.loss;
        for (auto& [metric, value] : metric_values(p.report, e.loss, metrics))
          p.summaries.emplace_back(p.record.name + "/" + metric, value);
        pending.push_back(std::move(p));
      }
    }
  }
  if (a.dry_run) return 0;
  for (const auto& p : pending) store.write_evaluation(p.record, p.summaries);

  Table t;
  t.title = runs.size() == 1 ? fmt::format(
                                   "Run {} ({}) evaluated; tlab results show {} has the confusion "
                                   "matrices",
                                   runs[0].record.id, runs[0].record.name, runs[0].record.id)
                             : fmt::format(
                                   "{} runs evaluated; tlab results compare --cross-domain has the "
                                   "matrix, tlab results show RUN the confusion matrices",
                                   runs.size());
  t.header = {"run", "evaluation", "examples", "acc", "balanced_acc", "f1_macro", "ece", "loss"};
  t.numeric = {true, false, true, true, true, true, true, true};
  for (const auto& p : pending)
    t.rows.push_back({std::to_string(p.record.run_id), p.record.name,
                      std::to_string(p.report.total), fmt::format("{:.4f}", p.report.accuracy),
                      fmt::format("{:.4f}", p.report.balanced_accuracy),
                      fmt::format("{:.4f}", p.report.f1_macro), fmt::format("{:.4f}", p.report.ece),
                      fmt::format("{:.4f}", p.record.loss)});
  std::cout << render(t, TableFormat::Text);
  return 0;
}

namespace {

// Class names from the dataset's `classes` option when it has one, else "0", "1", ...
std::vector<std::string> class_names(const RunSpec& spec, int64_t num_classes) {
  std::vector<std::string> names;
  for (const auto& p : spec.target.params)
    if (p.first == "classes")
      if (const auto* list = std::get_if<std::vector<std::string>>(&p.second)) names = *list;
  if (static_cast<int64_t>(names.size()) != num_classes) {
    names.clear();
    for (int64_t c = 0; c < num_classes; ++c) names.push_back(std::to_string(c));
  }
  return names;
}

}  // namespace

int export_model(const Globals& g, const ExportArgs& a) {
  if (a.format != "torchscript")
    throw UsageError(fmt::format(
        "tlab export: --format '{}' is not a format tlab writes; expected torchscript (a "
        "TorchScript module for torch.jit.load)",
        a.format));
  PluginLoader loader(plugin_search_dirs(g));
  Store store = open_store(a.db);
  const TrainedRun trained = trained_run(store, a.run, "export");
  const RunRecord& run = trained.record;
  const RunSpec spec = run_specs(run, {}, false, loader).at(0);
  // On the CPU: a module saved from CPU tensors loads anywhere (map_location moves it).
  Loaded l = load_for_run(trained, spec, torch::kCPU, loader, "export");
  // Examples of the run's own data: the right dtype (token ids stay int64) and realistic values.
  const Split* split = nullptr;
  for (const Split* s : {&l.data.test, &l.data.val, &l.data.train})
    if (!split && s->size() >= 3) split = s;
  if (!split)
    throw UsageError(fmt::format(
        "tlab export: {} has fewer than 3 examples in every split; the export is traced on 2 "
        "examples of the run's data and checked on more",
        l.what));
  const int64_t n = std::min<int64_t>(split->size(), 64);
  const torch::Tensor example = split_inputs(*split, 0, 2, torch::kCPU);
  const torch::Tensor check = split_inputs(*split, 0, n, torch::kCPU);
  auto forward = [&](const torch::Tensor& x) { return l.model->forward(x); };
  ExportCheck result;
  torch::jit::Module module;
  try {
    module = trace_module(*l.model, forward, example, check, fmt::format("run {}'s model", run.id),
                          &result);
  } catch (const ExportError& e) {
    throw UsageError(e.what());
  }
  const fs::path output =
      a.output.empty() ? fs::path(run.run_dir) / "model.torchscript.pt" : fs::path(a.output);
  fs::path meta = output;
  meta.replace_extension(".json");
  if (meta == output) meta += ".json";
  std::error_code ec;
  if (!output.parent_path().empty() && !fs::is_directory(output.parent_path(), ec))
    throw UsageError(fmt::format("tlab export: --output '{}': the folder '{}' does not exist",
                                 output.string(), output.parent_path().string()));
  const fs::path partial = output.string() + ".partial";
  try {
    module.save(partial.string());
  } catch (const std::exception& e) {
    fs::remove(partial, ec);
    throw UsageError(fmt::format("tlab export: cannot write '{}': {}", output.string(),
                                 std::string(e.what()).substr(0, 300)));
  }
  fs::rename(partial, output);

  nlohmann::ordered_json j;
  j["format"] = "tlab-torchscript";
  j["run"] = run.id;
  j["uuid"] = run.uuid;
  j["experiment"] = run.name;
  j["tlab_version"] = TLAB_VERSION;
  j["module"] = output.filename().string();
  j["input_shape"] = l.data.input_shape;
  j["input_dtype"] = example.scalar_type() == torch::kLong ? "int64" : "float32";
  j["num_classes"] = l.data.num_classes;
  j["classes"] = class_names(spec, l.data.num_classes);
  j["output"] = "class scores (logits): softmax gives the probabilities";
  // The module takes what the dataset plugin produced: its options are the preprocessing
  // (normalisation, resizing, tokenisation) inputs must get first.
  nlohmann::ordered_json dataset;
  dataset["plugin"] = spec.target.plugin;
  for (const auto& p : spec.params)
    if (p.key.rfind("target.", 0) == 0 && p.key != "target.plugin" && p.key != "target.shots")
      dataset[p.key.substr(7)] = param_text(p.value);
  j["preprocessing"] = dataset;
  j["check"] = {{"examples", result.examples}, {"max_abs_diff", result.max_abs_diff}};
  write_file_atomic(meta, j.dump(2) + "\n");
  std::cout << fmt::format(
      "wrote '{}' (TorchScript, {} tensors; load it with torch.jit.load) and '{}' (classes, input "
      "shape {} {}, preprocessing); checked on {} examples: largest difference {:.3g}\n",
      output.string(),
      module.named_parameters(/*recurse=*/true).size() +
          module.named_buffers(/*recurse=*/true).size(),
      meta.string(), fmt::join(l.data.input_shape, "x"), j["input_dtype"].get<std::string>(),
      result.examples, result.max_abs_diff);
  return 0;
}

int predict(const Globals& g, const PredictArgs& a) {
  for (const auto& o : a.overrides) check_override(o);
  if (a.split != "train" && a.split != "val" && a.split != "test")
    throw UsageError(fmt::format(
        "tlab predict: --split '{}' is not a split; expected train, val or test", a.split));
  PluginLoader loader(plugin_search_dirs(g));
  Store store = open_store(a.db);
  const TrainedRun trained = trained_run(store, a.run, "predict with");
  const RunRecord& run = trained.record;
  std::vector<std::string> overrides = a.overrides;
  if (!a.input.empty()) {
    // The dataset plugin reads the file as inputs without labels (its unlabeled_path option),
    // with the preprocessing it gave the run's training data.
    const RunSpec base = run_specs(run, {}, false, loader).at(0);
    const auto& schema = loader.get(Kind::Dataset, base.target.plugin).descriptor->schema.params;
    const bool reads = std::any_of(schema.begin(), schema.end(),
                                   [](const ParamSpec& p) { return p.key == "unlabeled_path"; });
    if (!reads)
      throw UsageError(fmt::format(
          "tlab predict --input: run {} was trained on dataset plugin '{}', which reads no input "
          "files (no unlabeled_path option); --input works for runs on csv, idx, imagefolder "
          "and text data; predict on its own splits with --split instead",
          run.id, base.target.plugin));
    std::error_code ec;
    if (!fs::exists(a.input, ec))
      throw UsageError(fmt::format("tlab predict --input '{}': no such file or folder", a.input));
    std::string path = fs::absolute(a.input).string(), quoted;
    for (char c : path) quoted += c == '\'' ? std::string("\\'") : std::string(1, c);
    overrides.push_back("target.unlabeled_path='" + quoted + "'");
  }
  const auto specs = run_specs(run, overrides, false, loader);
  const RunSpec& spec = specs.at(0);
  configure_threads(a.threads);
  const torch::Device device = resolve_device(spec.device);
  Loaded l = load_for_run(trained, spec, device, loader, "predict with");
  const std::vector<std::string> names = class_names(spec, l.data.num_classes);

  Split split;
  if (!a.input.empty()) {
    if (!l.data.unlabeled.defined() || l.data.unlabeled.size(0) == 0)
      throw UsageError(
          fmt::format("tlab predict --input '{}': {} read no example from it", a.input, l.what));
    split.x = l.data.unlabeled;
  } else {
    split = a.split == "train" ? l.data.train : a.split == "val" ? l.data.val : l.data.test;
    if (split.size() == 0)
      throw UsageError(
          fmt::format("{} has no {} split; choose another with --split", l.what, a.split));
  }
  const bool labelled = split.y.defined();
  const int64_t n = labelled ? split.size() : split.x.size(0);
  std::ostringstream out;
  out << "index,predicted,class";
  if (labelled) out << ",label,correct";
  for (const auto& name : names) out << "," << csv_field("p_" + name);
  out << "\n";
  ModeScope restore(*l.model);
  l.model->eval();
  torch::NoGradGuard no_grad;
  int64_t correct = 0;
  for (int64_t i = 0; i < n; i += 256) {
    const int64_t end = std::min(n, i + 256);
    const auto probs =
        torch::softmax(l.model->forward(split_inputs(split, i, end, device)).to(torch::kDouble), 1)
            .cpu()
            .contiguous();
    const auto predicted = probs.argmax(1);
    const auto labels = labelled ? split.y.slice(0, i, end).cpu() : torch::Tensor();
    const double* p = probs.data_ptr<double>();
    for (int64_t r = 0; r < end - i; ++r) {
      const int64_t k = predicted[r].item<int64_t>();
      out << i + r << "," << k << "," << csv_field(names[static_cast<std::size_t>(k)]);
      if (labelled) {
        const int64_t y = labels[r].item<int64_t>();
        correct += y == k;
        out << "," << y << "," << (y == k ? 1 : 0);
      }
      for (int64_t c = 0; c < l.data.num_classes; ++c)
        out << "," << fmt::format("{:.6g}", p[r * l.data.num_classes + c]);
      out << "\n";
    }
  }
  if (a.output.empty() || a.output == "-") {
    std::cout << out.str();
  } else {
    write_file_atomic(a.output, out.str());
  }
  std::cerr << fmt::format(
      "predicted {} example(s) of {}{}{}\n", n,
      a.input.empty() ? fmt::format("the {} split of {}", a.split, l.what) : "'" + a.input + "'",
      labelled ? fmt::format(" (accuracy {:.4f})", static_cast<double>(correct) / n) : "",
      a.output.empty() || a.output == "-" ? "" : fmt::format(" into '{}'", a.output));
  return 0;
}

// tlab transferability EXPERIMENT --candidates run:3,run:7,FILE: each candidate's features and
// source class probabilities on the labelled target examples the experiment would fine-tune on
// (its target's training split, `shots` per class kept as a run keeps them), scored without any
// training (transfer/scores.hpp). A run candidate is its whole model (its head is the source
// classifier); a file candidate is the experiment's backbone with the file's weights (LEEP and
// NCE when the file holds a tlab model's single linear head).
int transferability(const Globals& g, const TransferabilityArgs& a) {
  using Clock = std::chrono::steady_clock;
  if (a.candidates.empty())
    throw UsageError(
        "tlab transferability needs candidates: --candidates run:3,run:7 (finished runs whose "
        "models are scored on the experiment's target) or weights files");
  PluginLoader loader(plugin_search_dirs(g));
  LoadOptions lo;
  lo.config_dirs.assign(a.config_dirs.begin(), a.config_dirs.end());
  const std::vector<RunSpec> specs = load_experiment(a.experiment, a.overrides, loader, lo);
  if (specs.size() != 1)
    throw UsageError(
        fmt::format("{} composes {} runs (a sweep); transferability scores one target: pick one "
                    "configuration with overrides (e.g. ~sweep)",
                    a.experiment, specs.size()));
  const RunSpec& spec = specs[0];
  configure_threads(a.threads);
  Store store = open_store(a.db);
  struct Candidate {
    std::string ref, name;
    std::optional<TrainedRun> run;
    fs::path file;
  };
  std::vector<Candidate> candidates;
  for (const std::string& c : a.candidates) {
    Candidate cand;
    if (c.rfind("run:", 0) == 0) {
      cand.run = trained_run(store, std::stoll(c.substr(4)), "score");
      cand.ref = fmt::format("run:{}", cand.run->record.id);
      cand.name = cand.run->record.name;
    } else {
      cand.file = c.substr(c.find(':') + 1);
      cand.ref = cand.file.filename().string();
      cand.name = cand.file.string();
    }
    candidates.push_back(std::move(cand));
  }

  const Context ctx = model_context(spec, torch::kCPU);
  DomainData data = load_target(spec, ctx, loader);
  if (data.train.streamed())
    throw UsageError(
        fmt::format("dataset '{}' streams its examples; transferability needs them "
                    "in memory",
                    spec.target.plugin));
  const Split split = take_shots(data.train, spec.target.shots, data.num_classes,
                                 static_cast<uint64_t>(spec.seed));  // as a run of it keeps them
  const torch::Tensor x = as_input(split.x, torch::kCPU);
  const torch::Tensor y = split.y.to(torch::kLong);

  Table t;
  t.title = fmt::format(
      "Transferability to {} ({} labelled examples, {} classes): higher is better; ranked by "
      "LogME",
      spec.target.plugin, split.size(), data.num_classes);
  t.header = {"candidate", "name", "logme", "leep", "nce", "hscore", "seconds"};
  t.numeric = {false, false, true, true, true, true, true};
  std::vector<std::pair<double, std::vector<std::string>>> rows;
  std::vector<std::string> notes;
  for (const Candidate& c : candidates) {
    const auto t0 = Clock::now();
    std::shared_ptr<Model> model;
    transfer::ModelFn classifier;
    if (c.run) {
      const RunRecord& run = c.run->record;
      if (!c.run->input_shape.empty() && c.run->input_shape != data.input_shape)
        throw UsageError(fmt::format(
            "candidate {} ({}) takes examples of shape {} but the target '{}' gives {}: its "
            "features do not fit the target's inputs",
            c.ref, run.name, fmt::join(c.run->input_shape, "x"), spec.target.plugin,
            fmt::join(data.input_shape, "x")));
      Context mctx = ctx;
      mctx.run_dir = run.run_dir;
      model = load_run_model(run.run_dir, c.ref, loader, mctx, data.input_shape);
      // Its own head, over its own classes.
      classifier = [m = model](const torch::Tensor& f) { return m->head->forward(f); };
    } else {
      // The experiment's backbone with the file's weights (its remapping rules apply).
      auto backbone = loader.create<Backbone>(spec.backbone.plugin, spec.backbone.params);
      Context bctx = ctx;
      bctx.plugin = spec.backbone.plugin;
      auto net = call_plugin("backbone", spec.backbone.plugin, "build",
                             [&] { return backbone->build(data.input_shape, bctx); });
      WeightsFile wf;
      std::map<std::string, std::string> meta;
      weights::NamedTensors tensors;
      try {
        wf = resolve_weights(c.file.string(), store, "model.safetensors", "--candidates");
        tensors = weights::read_safetensors(wf.path, &meta);
        if (meta.count("format") && meta["format"] == "tlab-model")
          wf.run = meta.count("run") ? std::atoll(meta["run"].c_str()) : -1;  // backbone.* only
        BackboneSpec bspec = spec.backbone;
        bspec.weights_strict = false;  // reported below instead
        const weights::LoadReport report = load_backbone_weights(*net, bspec, wf);
        if (report.matched.empty() || !report.missing.empty() || !report.mismatched.empty())
          throw UsageError(fmt::format(
              "candidate '{}' does not fit the {} backbone of {}: {}; its features do not fit "
              "the target's inputs (pass backbone.* overrides for the network it was made "
              "for, or backbone.weights_remap rules)",
              c.file.string(), spec.backbone.plugin, a.experiment, report.summary()));
      } catch (const weights::WeightsError& e) {
        throw UsageError(fmt::format("candidate '{}': {}", c.file.string(), e.what()));
      }
      model = std::make_shared<Model>(net);
      std::string why;
      classifier = transfer::linear_classifier(tensors, "head.", net->feature_dim(), &why);
      if (!classifier) notes.push_back(fmt::format("({}: no LEEP or NCE: {})", c.ref, why));
    }
    ModeScope restore(*model);
    model->eval();
    transfer::ScoreSet s;
    try {
      s = transfer::score_starting_point(
          [&](const torch::Tensor& xb) { return model->features(xb); }, classifier, x, y,
          data.num_classes);
    } catch (const transfer::ScoreError& e) {
      throw UsageError(fmt::format("candidate {} ({}): {}", c.ref, c.name, e.what()));
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    auto num = [](double v) { return std::isnan(v) ? std::string() : fmt::format("{:.4f}", v); };
    rows.push_back({s.logme,
                    {c.ref, c.name, num(s.logme), num(s.leep), num(s.nce), num(s.hscore),
                     fmt::format("{:.2f}", seconds)}});
  }
  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto& l, const auto& r) { return l.first > r.first; });
  for (auto& row : rows) t.rows.push_back(std::move(row.second));
  t.notes = notes;
  std::cout << render(t, TableFormat::Text);
  return 0;
}

}  // namespace tlab::engine
