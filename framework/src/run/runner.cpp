// The runner: one validated RunSpec executed in this process (execute_run, a sequence of named
// phases: RunExecution below) and recorded in the store. Its parts live beside it: the
// strategies' Session with fit and evaluate (run/session.*), the pre-training cache
// (run/pretrain_cache.cpp), the data checks and k-shot sampling (run/data_prep.*), stop signals
// (run/signals.*), checkpoints and weights (run/model_io.*).
#include "run/runner.hpp"

#include <dlfcn.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <fstream>
#include <optional>
#include <unordered_set>

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/utils.h>
#include <nlohmann/json.hpp>

#include "results/classification.hpp"
#include "run/asha.hpp"
#include "run/data_prep.hpp"
#include "run/model_io.hpp"
#include "run/precision.hpp"
#include "run/session.hpp"
#include "tlab/sdk/mode.hpp"
#include "transfer/scores.hpp"
#include "util.hpp"
#include "weights/safetensors.hpp"

namespace fs = std::filesystem;

namespace tlab {

namespace {

// OpenBLAS takes a buffer of about 128 MiB of address space for each thread the first time
// that thread multiplies matrices, and when it cannot get one it retries for ever (its
// blas_memory_alloc loops); LibTorch's thread pool likewise waits for ever for a worker that
// could not be created. Under a memory limit (ulimit -v) a run would hang instead of failing.
// So, with a limit: check first that there is room for them, and let every thread take its
// buffer now, while there is; the buffers are kept for the process's life.
constexpr std::size_t kBlasBuffer = std::size_t{130} << 20;

void check_headroom(int threads) {
  rlimit limit{};
  if (getrlimit(RLIMIT_AS, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return;
  const std::size_t need = kBlasBuffer * static_cast<std::size_t>(std::max(threads, 1)) +
                           (std::size_t{96} << 20);  // thread stacks, the first tensors
  void* probe =
      ::mmap(nullptr, need, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (probe == MAP_FAILED)
    throw OutOfMemoryError(fmt::format(
        "out of memory before training: {} thread(s) need {} MiB of address space for LibTorch "
        "and OpenBLAS, which is not left{}",
        std::max(threads, 1), need >> 20, memory_limit_hint()));
  ::munmap(probe, need);
}

void take_blas_buffers(int threads) {
  rlimit limit{};
  if (getrlimit(RLIMIT_AS, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return;
  torch::NoGradGuard no_grad;
  // 128^3 is above OpenBLAS's small-matrix path, which needs no buffer.
  const auto a = torch::ones({128, 128});
  at::parallel_for(0, std::max(threads, 1), 1, [&](int64_t, int64_t) { (void)torch::mm(a, a); });
}

}  // namespace

void configure_threads(int threads) {
  check_headroom(threads > 0 ? threads : torch::get_num_threads());
  if (threads > 0) torch::set_num_threads(threads);
#ifdef __GLIBC__
  // glibc serves blocks over 128 KiB with mmap and unmaps them on free, so every training step
  // page-faults its activations in again (millions of faults per run; up to 40% of the time on
  // a small CNN: docs/benchmarks.md). Keep such blocks in the heap instead, as a long-running
  // trainer wants; GLIBC_TUNABLES set by the user still win (they are read at start-up, and an
  // explicit mallopt is skipped when they are present).
  if (!std::getenv("GLIBC_TUNABLES")) {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
  }
#endif
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
    set(1);
  else
    spdlog::warn(
        "[runner] OpenBLAS is not loaded: LibTorch runs on the reference BLAS, about 7x "
        "slower; install libopenblas0-pthread (tools/setup.sh does)");
  take_blas_buffers(torch::get_num_threads());
}

namespace {

// The run's config next to its outputs: config.toml (resolved, defaults included) and
// overrides.txt, plus Hydra's .hydra/config.yaml and .hydra/overrides.yaml so that tools that
// read Hydra run folders can read ours.
void write_run_config(const RunSpec& spec, const fs::path& run_dir) {
  auto write = [](const fs::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
    if (!out.flush())
      throw std::runtime_error(
          fmt::format("cannot write '{}': {}", path.string(), system_error_text(errno)));
  };
  write(run_dir / "config.toml", spec.config_toml);
  std::string lines;
  for (const auto& o : spec.overrides) lines += o + "\n";
  write(run_dir / "overrides.txt", lines);
  fs::create_directories(run_dir / ".hydra");
  write(run_dir / ".hydra" / "config.yaml", spec.config_yaml);
  std::string yaml;
  for (const auto& o : spec.overrides) yaml += "- " + nlohmann::json(o).dump() + "\n";
  write(run_dir / ".hydra" / "overrides.yaml", yaml.empty() ? "[]\n" : yaml);
}

}  // namespace

NewRun describe_run(const RunSpec& spec, const RunOptions& options, const GitState* known) {
  // Provenance: the repository holding the experiment file (usually the project's own).
  const GitState git = known ? *known : git_state(fs::absolute(spec.experiment).parent_path());

  NewRun row;
  row.experiment = spec.experiment;
  row.name = spec.name;
  row.host = host_name();
  row.pid = getpid();
  row.boot_id = boot_id();
  row.pid_start = process_start_ticks(getpid());
  row.device = spec.device;
  row.seed = spec.seed;
  row.git_commit = git.commit;
  row.git_dirty = git.dirty;
  row.config_toml = spec.config_toml;
  row.config_hash = spec.config_hash;
  row.overrides = spec.overrides_json;
  row.override_args = spec.overrides;
  row.search = spec.search_json;
  row.processes =
      spec.processes;  // [run]: not in the resolved config, so its process reads them here
  row.backend = spec.backend;
  row.collective_timeout = spec.collective_timeout;
  row.tlab_version = TLAB_VERSION;
  row.params = spec.params;
  auto stamp = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
  // The experiment name is free text: keep only safe characters so that it cannot leave runs/.
  std::string safe_name = spec.name;
  for (char& ch : safe_name)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_') ch = '_';
  static int counter = 0;  // runs queued in the same millisecond get distinct folders
  row.run_dir = (options.results_dir / "runs" /
                 fmt::format("{}-{}-{}{}", safe_name, spec.config_hash.substr(0, 8), stamp,
                             counter++ ? fmt::format("-{}", counter) : ""))
                    .string();
  return row;
}

namespace {

/// One run, as a sequence of named phases (execute_run lists them). Members carry what one
/// phase hands to the next; everything a plugin can reach (context, session, model) lives here
/// for the whole run.
class RunExecution {
 public:
  RunExecution(const RunSpec& spec, PluginLoader& loader, Store& store, const RunOptions& options)
      : spec_(spec), loader_(loader), store_(store), options_(options) {}

  /// Resolves the device and records the run as started (a new row, or the queued one). False
  /// when the queued run was no longer queued: outcome() says so and nothing else happens.
  bool start() {
    // Validated at config time; a failure here (e.g. the GPU vanished) fails only this run.
    try {
      device_ = resolve_device(spec_.device);
    } catch (const std::exception& e) {
      device_error_ = e.what();
    }
    if (options_.run_id != 0) {  // a run the supervisor queued: its row exists
      RunRecord queued = store_.run(options_.run_id);
      run_dir_ = queued.run_dir;
      out_.id = options_.run_id;
      if (!store_.start_run(out_.id, getpid(), device_.str(), options_.gpu, boot_id(),
                            process_start_ticks(getpid()), host_name())) {
        out_.status = parse_run_status(store_.run(out_.id).status);
        out_.reason = "the run was no longer queued when its process started";
        return false;
      }
    } else {
      NewRun row = describe_run(spec_, options_);
      row.device = device_.str();
      run_dir_ = row.run_dir;
      out_.id = store_.create_run(row);
    }
    metrics_.emplace(store_, out_.id);
    spdlog::info("[runner] run {} started: {} (seed {}, device {})", out_.id, spec_.name,
                 spec_.seed, device_.str());
    return true;
  }

  /// The run folder with the run's config (config.toml, overrides, Hydra's .hydra/).
  void prepare_folder() {
    if (!device_error_.empty())
      throw std::runtime_error(fmt::format("device \"{}\": {}", spec_.device, device_error_));
    check_compute(spec_.compute, device_);
    device_budget_.bytes_left = spec_.compute.device_data_mb << 20;
    // A resident dataset gives every step the same shapes (the last batch aside): let cuDNN
    // time its algorithms once per shape and keep the fastest.
    if (device_.is_cuda()) at::globalContext().setBenchmarkCuDNN(true);
    fs::create_directories(run_dir_);
    write_run_config(spec_, run_dir_);
    torch::manual_seed(spec_.seed);
  }

  /// Loads every plugin first, so that their versions are recorded even if the run fails
  /// later; weight files are recorded like plugins (kind "weights").
  void record_plugins() {
    auto record = [&](Kind kind, const std::string& name) {
      const LoadedPlugin& p = loader_.get(kind, name);
      used_.push_back({kind_name(kind), name, p.descriptor->version, p.path.string(), p.file_hash});
    };
    if (spec_.source) record(Kind::Dataset, spec_.source->plugin);
    record(Kind::Dataset, spec_.target.plugin);
    record(Kind::Backbone, spec_.backbone.plugin);
    for (const auto& a : spec_.adapters) record(Kind::Adapter, a.plugin);
    record(Kind::Strategy, spec_.strategy.plugin);
    store_.add_plugins(out_.id, used_);
    if (!spec_.backbone.weights.empty()) {
      backbone_weights_ =
          resolve_weights(spec_.backbone.weights, store_, "model.safetensors", "backbone.weights");
      store_.add_plugins(out_.id, {{"weights", "backbone", backbone_weights_->spec,
                                    backbone_weights_->path.string(), backbone_weights_->hash}});
    }
    if (!spec_.adapter_weights.empty()) {
      adapter_weights_ =
          resolve_weights(spec_.adapter_weights, store_, "adapter.safetensors", "adapter_weights");
      store_.add_plugins(out_.id, {{"weights", "adapters", adapter_weights_->spec,
                                    adapter_weights_->path.string(), adapter_weights_->hash}});
    }
  }

  /// The context plugins get, and the session strategies get.
  void open_session() {
    ctx_.device = device_;
    ctx_.seed = static_cast<uint64_t>(spec_.seed);
    ctx_.run_dir = run_dir_;
    ctx_.log = &runner_log_;
    ctx_.metrics = &*metrics_;
    const char* profile_env = std::getenv("TLAB_PROFILE");
    session_.emplace(ctx_, *metrics_, options_.verbose,
                     options_.profile || (profile_env && std::string(profile_env) == "1"));
    session_->train_ = spec_.train;
    // Every evaluation counts the top-k [eval] lists and the one train.monitor names.
    std::vector<std::string> counted = spec_.eval.metrics;
    counted.push_back(spec_.selection.monitor);
    session_->top_k_ = top_k_of(counted);
    session_->calibration_bins_ = spec_.eval.calibration_bins;
    session_->selection_ = spec_.selection;
    session_->compute_ = spec_.compute;
  }

  /// [run] processes > 1: rank 0 (this process) starts ranks 1..N-1 and connects with them;
  /// a rank > 0 got its connection from run_rank. The session's fit then shares each batch.
  void start_ranks() {
    if (options_.dist) {
      dist_ = options_.dist;
      session_->dist_ = dist_.get();
      return;
    }
    if (spec_.processes <= 1) return;
    if (!device_.is_cpu())
      throw std::invalid_argument(fmt::format(
          "run.processes = {} on device {}: several ranks train on the CPU (Gloo) only; NCCL "
          "ranks with one GPU each are not built; set device = \"cpu\" or run.processes = 1",
          spec_.processes, device_.str()));
    const int threads = options_.threads > 0 ? options_.threads : torch::get_num_threads();
    DistributedOptions o;
    o.world = static_cast<int>(spec_.processes);
    o.backend = spec_.backend;
    o.timeout = std::chrono::milliseconds(static_cast<int64_t>(spec_.collective_timeout * 1000));
    o.store = run_dir_ / "c10d.store";
    if (options_.srun_ranks) {  // SLURM started every rank as a task of one srun step
      const char* tasks = std::getenv("SLURM_NTASKS");
      if (!tasks || std::atoi(tasks) != o.world)
        throw std::invalid_argument(fmt::format(
            "run.processes = {} but srun started {} task(s) (SLURM_NTASKS); the job script asks "
            "one task per rank: submit the run again",
            o.world, tasks ? tasks : "no"));
      const char* nodes = std::getenv("SLURM_NNODES");
      o.loopback = !nodes || std::atoi(nodes) <= 1;
      dist_ = Distributed::join(o, 0);
      session_->dist_ = dist_.get();
      spdlog::info("[runner] {} ranks (srun tasks, {}) connected", o.world, o.backend);
      return;
    }
    const std::string db = store_.path().string();
    const auto dirs = loader_.search_dirs();
    const int64_t id = out_.id, timeout_ms = o.timeout.count();
    const auto t0 = Clock::now();
    dist_ = Distributed::launch(
        o,
        [&](int rank) {
          std::vector<std::string> args = {"tlab"};
          for (const auto& d : dirs)  // the folders searched here that exist
            if (std::error_code ec; fs::is_directory(d, ec))
              args.insert(args.end(), {"--plugin-path", d.string()});
          if (options_.verbose) args.push_back("-v");
          args.insert(args.end(),
                      {"_run", "--db", db, "--id", std::to_string(id), "--rank",
                       std::to_string(rank), "--world", std::to_string(o.world), "--timeout-ms",
                       std::to_string(timeout_ms), "--threads", std::to_string(threads)});
          return args;
        },
        run_dir_ / "ranks");
    session_->dist_ = dist_.get();
    spdlog::info("[runner] {} ranks ({}, {} thread(s) each) connected in {:.2f} s", o.world,
                 o.backend, threads, std::chrono::duration<double>(Clock::now() - t0).count());
  }

  /// A rank > 0 trains only: rank 0 evaluates, saves and records.
  bool records() const { return !options_.dist; }
  void trained_only() { out_.status = RunStatus::kFinished; }

  /// Rank 0, at the end: the other ranks exited 0.
  void finish_ranks() {
    if (dist_ && records()) dist_->finish();
  }

  /// The target domain now (checked, k shots taken, on the device); the source on first use.
  void load_data() {
    session_->target_ = load_domain(spec_.target, "target");
    if (spec_.source)
      session_->load_source_ = [this] { return load_domain(*spec_.source, "source"); };
  }

  /// What every pre-training cache key of this run shares (Session::reuse).
  void key_pretraining_cache() {
    // The backbone's initial weights depend on the seed only, not on how much randomness the
    // dataset plugins used: runs that share a pre-training start from the same weights.
    torch::manual_seed(spec_.seed);
    session_->ctx_run_id_ = out_.id;
    session_->reuse_dir_ = options_.results_dir / "cache" / "pretrain";
    std::string base = fmt::format("tlab pre-training cache v1\ndevice type: {}\ninput shape: {}\n",
                                   device_.type() == torch::kCUDA ? "cuda" : "cpu",
                                   fmt::join(session_->target_.input_shape, "x"));
    // The random state after pre-training is seeded from the same text without the plugin
    // builds' hashes: rebuilding a plugin makes a new cache entry, not other results.
    std::string reseed = base;
    for (const auto& p : used_) {
      base += fmt::format("plugin: {} {} {}\n", p.kind, p.name, p.file_hash);
      reseed += fmt::format("plugin: {} {}\n", p.kind, p.name);
    }
    std::string tail;
    if (backbone_weights_) tail += fmt::format("backbone weights: {}\n", backbone_weights_->hash);
    for (const auto& p : spec_.params)
      if (p.key == "seed" || p.key.rfind("source.", 0) == 0 || p.key.rfind("backbone.", 0) == 0 ||
          (p.key.rfind("train.", 0) == 0 && p.key != "train.checkpoint" &&
           p.key != "train.monitor" && p.key != "train.patience") ||
          p.key == "strategy.plugin")
        tail +=
            fmt::format("{} = {}\n", p.key,
                        std::visit([](const auto& v) { return fmt::format("{}", v); }, p.value));
    session_->reuse_base_ = base + tail;
    session_->reseed_base_ = reseed + tail;
  }

  /// The backbone plugin's network, with its weights file when one is given.
  void build_model() {
    auto backbone = loader_.create<Backbone>(spec_.backbone.plugin, spec_.backbone.params);
    PrefixLogger backbone_log(spec_.backbone.plugin);
    Context bctx = ctx_;
    bctx.plugin = spec_.backbone.plugin;
    bctx.log = &backbone_log;
    auto net = call_plugin("backbone", spec_.backbone.plugin, "build",
                           [&] { return backbone->build(session_->target_.input_shape, bctx); });
    if (!net)
      throw PluginError(
          fmt::format("backbone plugin '{}' built no network", spec_.backbone.plugin));
    if (backbone_weights_) {
      auto report = load_backbone_weights(*net, spec_.backbone, *backbone_weights_);
      spdlog::info("[runner] backbone weights from '{}' ({}): {}", backbone_weights_->path.string(),
                   backbone_weights_->hash, report.summary());
      metrics_->summary("weights/backbone/matched", static_cast<double>(report.matched.size()));
      metrics_->summary("weights/backbone/missing", static_cast<double>(report.missing.size()));
      metrics_->summary("weights/backbone/unexpected",
                        static_cast<double>(report.unexpected.size()));
      metrics_->summary("weights/backbone/mismatched",
                        static_cast<double>(report.mismatched.size()));
    }
    session_->load_model_ = [this](const std::string& ref) { return load_model(ref); };
    session_->model_ = std::make_shared<Model>(net);
    session_->model_->to(device_);
    if (spec_.compute.channels_last) to_channels_last(*session_->model_);
  }

  /// The strategy plugin, and its prepare hook (before the adapters attach).
  void prepare_strategy() {
    strategy_ = loader_.create<Strategy>(spec_.strategy.plugin, spec_.strategy.params);
    ctx_.log = &strategy_log_;  // the session's context is the strategy's
    ctx_.plugin = spec_.strategy.plugin;
    call_plugin("strategy", spec_.strategy.plugin, "prepare",
                [&] { strategy_->prepare(*session_); });
  }

  /// [eval] transferability: the starting point (after the strategy's prepare: its source
  /// pre-training, or the backbone's weights file) scored on the target's labelled training
  /// examples, before adapters attach and anything trains on the target. Summaries
  /// transfer/{logme,hscore,leep,nce,seconds}; LEEP and NCE need a source classifier: the
  /// pre-training's head (Session::reuse), or the single linear head of a tlab model file given
  /// as backbone.weights. Runs in eval mode without gradients: the run's training is unchanged.
  void score_starting_point() {
    if (!spec_.eval.transferability) return;
    const auto t0 = Clock::now();
    const DomainData& target = session_->target_;
    if (target.train.streamed())
      throw std::invalid_argument(fmt::format(
          "eval.transferability scores the target's labelled training examples, but dataset "
          "'{}' streams them; raise its resident_max_mb (on a GPU: train.device_data_mb) or "
          "set eval.transferability = false",
          spec_.target.plugin));
    Model& model = *session_->model_;
    transfer::ModelFn classifier = session_->source_classifier_;
    std::string why = session_->no_source_classifier_, from = "the source pre-training's head";
    if (!classifier && backbone_weights_) {
      std::string file_why;
      classifier = transfer::linear_classifier(weights::read_safetensors(backbone_weights_->path),
                                               "head.", model.backbone->feature_dim(), &file_why);
      from = fmt::format("the head in '{}'", backbone_weights_->path.string());
      if (!classifier)
        why += fmt::format(", and backbone.weights '{}' has none usable ({})",
                           backbone_weights_->spec, file_why);
    }
    transfer::ScoreSet scores;
    {
      ModeScope restore(model);
      model.eval();
      try {
        scores = transfer::score_starting_point(
            [&](const torch::Tensor& x) { return model.features(x); }, classifier,
            as_input(target.train.x, device_), target.train.y, target.num_classes);
      } catch (const transfer::ScoreError& e) {
        throw std::invalid_argument(
            fmt::format("eval.transferability: {} (on the target's {} labelled training examples)",
                        e.what(), target.train.size()));
      }
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    metrics_->summary("transfer/logme", scores.logme);
    metrics_->summary("transfer/hscore", scores.hscore);
    if (classifier) {
      metrics_->summary("transfer/leep", scores.leep);
      metrics_->summary("transfer/nce", scores.nce);
    }
    metrics_->summary("transfer/seconds", seconds);
    spdlog::info(
        "[runner] starting point on the target's {} labelled examples: LogME {:.4f}, H-score "
        "{:.4f}{} ({:.2f} s)",
        target.train.size(), scores.logme, scores.hscore,
        classifier ? fmt::format(", LEEP {:.4f}, NCE {:.4f} (source classifier: {})", scores.leep,
                                 scores.nce, from)
                   : fmt::format("; no LEEP or NCE: {}", why),
        seconds);
  }

  /// `[eval] transferability = "only"`: the run ends after scoring its starting point.
  bool ends_after_scoring() {
    if (!spec_.eval.transferability_only) return false;
    spdlog::info(
        "[runner] eval.transferability = \"only\": the run ends before the target stage (no "
        "fine-tuning, no model saved)");
    out_.status = RunStatus::kFinished;
    return true;
  }

  /// Each adapter in order (parameters it adds counted), then the adapter weights file.
  void attach_adapters() {
    task_ = TaskInfo{session_->target_.num_classes, session_->target_.input_shape};
    Model& model = *session_->model_;
    for (std::size_t i = 0; i < spec_.adapters.size(); ++i) {
      const auto& a = spec_.adapters[i];
      auto adapter = loader_.create<Adapter>(a.plugin, a.params);
      PrefixLogger log(a.plugin);
      Context c = ctx_;
      c.plugin = a.plugin;
      c.log = &log;
      const ParamCounts before = count_parameters(model);
      call_plugin("adapter", a.plugin, "attach", [&] { adapter->attach(model, task_, c); });
      const ParamCounts after = count_parameters(model);
      metrics_->summary(fmt::format("adapters/{}.{}/params_added", i, a.plugin),
                        static_cast<double>(after.total - before.total));
      metrics_->summary(fmt::format("adapters/{}.{}/trainable_after", i, a.plugin),
                        static_cast<double>(after.trainable));
    }
    model.to(device_);
    if (spec_.compute.channels_last) to_channels_last(model);  // what the adapters added too
    if (adapter_weights_) {
      auto report =
          load_adapters(model, spec_, task_.num_classes, task_.input_shape, *adapter_weights_);
      spdlog::info("[runner] adapter weights from '{}' ({}): {} tensors loaded",
                   adapter_weights_->path.string(), adapter_weights_->hash, report.matched.size());
      metrics_->summary("weights/adapters/matched", static_cast<double>(report.matched.size()));
    }
    if (model.out_dim() != task_.num_classes)
      throw std::invalid_argument(fmt::format(
          "the model outputs {} values per example but the target has {} classes; add a head, "
          "e.g. [[adapters]] plugin = \"linear_head\"",
          model.out_dim(), task_.num_classes));
  }

  /// The strategy's setup, then the target stage with its parameter groups, fit.
  void train_target() {
    target_start_ = Clock::now();
    const std::string& sname = spec_.strategy.plugin;
    // Before setup: strategies that adapt the model there (domain adaptation) change buffers too.
    buffers_before_ = snapshot_buffers(*session_->model_);
    call_plugin("strategy", sname, "setup", [&] { strategy_->setup(*session_); });
    stage_.domain = "target";
    stage_.config = spec_.train;
    stage_.groups = call_plugin("strategy", sname, "parameter_groups",
                                [&] { return strategy_->parameter_groups(*session_); });
    if (stage_.groups.empty())
      for (auto& p : session_->model_->parameters())
        if (p.requires_grad()) stage_.parameters.push_back(p);
    count_trainable();
    stage_.module = session_->model_.get();
    stage_.forward = [this](const torch::Tensor& x) { return session_->model_->forward(x); };
    stage_.hooks = strategy_.get();  // the strategy is the target stage's hooks
    stage_.train = &session_->target_.train;
    stage_.val = &session_->target_.val;
    stage_.test = &session_->target_.test;
    // [sweep.asha]: the sweep's pruner compares this run with its bracket at each rung.
    const auto asha = asha_of(spec_.search_json);
    if (asha && spec_.train.epochs > 0) {
      if (session_->target_.val.size() == 0)
        throw std::invalid_argument(
            "[sweep.asha] compares the runs of a sweep on the target's validation split, but "
            "the target dataset has none; give it one (its val_size or similar option) or remove "
            "[sweep.asha]");
      pruner_ = std::make_unique<AshaPruner>(store_, out_.id, *asha, spec_.selection.monitor,
                                             higher_is_better(spec_.selection.monitor));
      session_->epoch_gate_ = [this](int64_t epochs, double value) {
        return pruner_->after_epoch(epochs, value);
      };
    }
    const bool selecting =
        spec_.selection.checkpoint == "best" || spec_.selection.patience > 0 || pruner_;
    if (selecting) session_->selected_stage_ = &stage_;
    session_->fit(stage_);
    if (selecting && spec_.train.epochs > 0) {
      metrics_->summary("target/train/selected_epoch",
                        static_cast<double>(session_->selected_epoch_ + 1));
      metrics_->summary("target/train/epochs_run", static_cast<double>(session_->epochs_run_));
      spdlog::info("[runner] the model of epoch {} of {} is kept (train.checkpoint = \"{}\"{})",
                   session_->selected_epoch_ + 1, session_->epochs_run_, spec_.selection.checkpoint,
                   spec_.selection.checkpoint == "best"
                       ? fmt::format(", target val {} {:.4f}", spec_.selection.monitor,
                                     session_->selected_value_)
                       : "");
    }
  }

  /// The trained model on the target's val and test splits: the [eval] metrics as summaries
  /// target/<split>/<metric> (acc and loss always), the counts in the evaluations table.
  void evaluate_target() {
    std::vector<std::string> metrics = {"acc", "loss"};
    for (const auto& m : spec_.eval.metrics)
      if (m != "acc" && m != "loss") metrics.push_back(m);
    for (auto [split, name] :
         {std::pair{&session_->target_.val, "val"}, std::pair{&session_->target_.test, "test"}}) {
      if (split->size() == 0) continue;
      const SplitEvaluation e =
          session_->evaluate_all(*session_->model_, stage_.forward, *split, task_.num_classes);
      EvaluationRecord record;
      record.run_id = out_.id;
      record.name = fmt::format("target/{}", name);
      record.counts = e.counts.to_json();
      record.loss = e.loss;
      std::vector<std::pair<std::string, double>> values;
      for (auto& [metric, value] : metric_values(summarize(e.counts), e.loss, metrics)) {
        values.emplace_back(record.name + "/" + metric, value);
        metrics_->summary(values.back().first, value);
      }
      store_.write_evaluation(record, values);
    }
    metrics_->summary("target/train/examples", static_cast<double>(session_->target_.train.size()));
    // What the target stage cost, from the strategy's setup to the final evaluations: the price
    // of learning how well a starting point transfers by fine-tuning it (transfer/seconds is
    // the price of scoring it).
    metrics_->summary("target/stage_seconds",
                      std::chrono::duration<double>(Clock::now() - target_start_).count());
  }

  /// model.safetensors, and adapter.safetensors + adapter.json (what trained).
  void save_outputs() {
    save_model(*session_->model_, run_dir_ / "model.safetensors",
               {{"format", "tlab-model"},
                {"run", std::to_string(out_.id)},
                {"backbone", spec_.backbone.plugin},
                {"tlab_version", TLAB_VERSION}});
    // What trained after the adapters attached: the target stage's parameters, or with
    // [train] epochs = 0 every parameter setup could train (domain adaptation trains the whole
    // model there), so that adapter_weights reproduces the evaluated model.
    std::vector<torch::Tensor> trained;
    for (const auto& p : spec_.train.epochs > 0 ? staged() : session_->model_->parameters())
      if (p.requires_grad()) trained.push_back(p);
    save_adapters(*session_->model_, trained, buffers_before_, spec_, task_.num_classes,
                  task_.input_shape, run_dir_);
    out_.status = RunStatus::kFinished;
    if (!session_->stopped_because_.empty()) {  // ASHA stopped it: evaluated, not trained out
      out_.status = RunStatus::kPruned;
      out_.reason = session_->stopped_because_;
    }
  }

  /// Runs `phases`; what they throw becomes the run's status and reason.
  template <class F>
  void guarded(F&& phases) {
    try {
      phases();
    } catch (const DivergedError& e) {
      out_.status = RunStatus::kDiverged;
      out_.reason = e.what();
    } catch (const InterruptedError& e) {
      out_.status = RunStatus::kKilled;
      out_.reason = e.what();
    } catch (const OutOfMemoryError& e) {
      out_.status = RunStatus::kOom;
      out_.reason = e.what();
    } catch (const std::bad_alloc& e) {
      out_.status = RunStatus::kOom;
      out_.reason = fmt::format("out of memory: {}", e.what());
    } catch (const std::exception& e) {
      out_.status = is_out_of_memory(e.what()) ? RunStatus::kOom : RunStatus::kFailed;
      out_.reason = e.what();
    }
    // LibTorch's errors end in a C++ backtrace ("Exception raised from ...: frame #0 ..."):
    // the reason keeps the message, the backtrace is for the run's output.log.
    // c10's enforce failures (allocation failures among them) end in "\nframe #0: ..." instead.
    for (const char* tail : {"\nException raised from", "\nframe #"})
      if (const auto cut = out_.reason.find(tail); cut != std::string::npos)
        out_.reason.resize(cut);
    if (out_.status == RunStatus::kOom) out_.reason += memory_limit_hint();
    // With very few file descriptors allowed, almost anything fails to open something.
    if ((out_.status == RunStatus::kFailed || out_.status == RunStatus::kOom) &&
        out_.reason.find("(ulimit -n)") == std::string::npos)
      out_.reason += open_files_hint();
  }

  /// Summaries and the final status into the store; the outcome.
  RunOutcome finish() {
    metrics_->summary("run/wall_seconds",
                      std::chrono::duration<double>(Clock::now() - wall0_).count());
    metrics_->flush();
    std::vector<std::pair<std::string, double>> summaries(metrics_->summaries().begin(),
                                                          metrics_->summaries().end());
    store_.write_summaries(out_.id, summaries);
    store_.finish_run(out_.id, out_.status, out_.reason);
    out_.summary = metrics_->summaries();
    if (is_complete(out_.status))
      spdlog::info("[runner] run {} {}: target test acc {:.4f} ({:.1f} s)", out_.id,
                   to_string(out_.status),
                   out_.summary.count("target/test/acc") ? out_.summary["target/test/acc"] : NAN,
                   out_.summary["run/wall_seconds"]);
    else
      spdlog::error("[runner] run {} {}: {}", out_.id, to_string(out_.status), out_.reason);
    return out_;
  }

  const RunOutcome& outcome() const { return out_; }

 private:
  DomainData load_domain(const DatasetSpec& d, const char* role) {
    auto ds = loader_.create<Dataset>(d.plugin, d.params);
    PrefixLogger log(d.plugin);
    Context c = ctx_;
    c.plugin = d.plugin;
    c.log = &log;
    const auto t0 = Clock::now();
    DomainData data = call_plugin("dataset", d.plugin, "load", [&] { return ds->load(c); });
    const double load_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    metrics_->summary(fmt::format("{}/data/load_seconds", role), load_seconds);
    check_domain(data, role, d.plugin);
    // The table's classes and transforms make the domain (run/domain_shift.hpp).
    data = apply_shift(std::move(data), d.shift, role, &session_->val_domains_[role]);
    // The target's training examples not kept as shots are its unlabelled pool, unless the
    // dataset brings its own (adaptation methods train on it without labels).
    torch::Tensor rest;
    const bool pool = !data.unlabeled.defined() && d.shots > 0 && !data.train.streamed();
    data.train =
        take_shots(data.train, d.shots, data.num_classes, spec_.seed, pool ? &rest : nullptr);
    if (pool && rest.defined() && rest.size(0) > 0) data.unlabeled = rest;
    spdlog::debug("[runner] {}: {} '{}' train {} val {} test {}{} (loaded in {:.2f} s)", role,
                  d.plugin, data.name, data.train.size(), data.val.size(), data.test.size(),
                  data.train.streamed() ? " (streamed)" : "", load_seconds);
    std::vector<std::string> on_host;
    const int64_t before = device_budget_.bytes_left;
    data = to_device(std::move(data), device_, device_budget_, &on_host);
    if (!device_.is_cpu()) {
      metrics_->summary(fmt::format("{}/data/device_mb", role),
                        static_cast<double>(before - device_budget_.bytes_left) / (1 << 20));
      if (!on_host.empty())
        spdlog::info(
            "[runner] {}: {} split(s) exceed train.device_data_mb = {} and stay in {}, "
            "copied to {} batch by batch",
            role, fmt::join(on_host, ", "), spec_.compute.device_data_mb,
            device_.is_cuda() ? "pinned host memory" : "host memory", device_.str());
    }
    return data;
  }

  /// Session::load_model: "run:<id>" or a run folder.
  std::shared_ptr<Model> load_model(const std::string& ref) {
    fs::path dir;
    if (ref.rfind("run:", 0) == 0) {
      const std::string id = ref.substr(4);
      if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos)
        throw std::invalid_argument(
            fmt::format("model \"{}\": expected \"run:<id>\" with a run number (tlab results "
                        "list) or the path of a run folder",
                        ref));
      dir = resolve_weights(ref, store_, "model.safetensors", "model").path.parent_path();
    } else {
      dir = fs::absolute(ref);
      if (!fs::is_directory(dir))
        throw std::invalid_argument(fmt::format(
            "model \"{}\": no such run folder ('{}'; relative paths are taken from the current "
            "folder); name a run as \"run:<id>\" (tlab results list) or give its folder",
            ref, dir.string()));
    }
    Context c = ctx_;
    PrefixLogger log("load_model");
    c.log = &log;
    auto m = load_run_model(dir, ref, loader_, c, session_->target_.input_shape);
    spdlog::info("[runner] model \"{}\" loaded from '{}'", ref, dir.string());
    return m;
  }

  /// What the target stage may train: for gradual unfreezing, parameters frozen now count too.
  std::vector<torch::Tensor> staged() const {
    std::vector<torch::Tensor> all = stage_.parameters;
    for (const auto& g : stage_.groups)
      for (const auto& p : g.parameters) all.push_back(p);
    return all;
  }

  /// model/params/{total,trainable}; strategy/params/trainable for parameters outside it.
  void count_trainable() {
    const ParamCounts counts = count_parameters(*session_->model_);
    // Parameters the strategy trains outside the model (a source head, a domain classifier)
    // are counted apart: they are not part of the model that is saved and evaluated.
    std::unordered_set<const void*> in_model;
    for (const auto& p : session_->model_->parameters()) in_model.insert(p.unsafeGetTensorImpl());
    int64_t trainable = 0, outside = 0;
    for (const auto& p : staged())
      (in_model.count(p.unsafeGetTensorImpl()) ? trainable : outside) += p.numel();
    metrics_->summary("model/params/total", static_cast<double>(counts.total));
    metrics_->summary("model/params/trainable", static_cast<double>(trainable));
    if (outside > 0) {
      metrics_->summary("strategy/params/trainable", static_cast<double>(outside));
      spdlog::info("[runner] the strategy also trains {} parameters outside the model", outside);
    }
    spdlog::info("[runner] model: {} parameters, {} trainable ({:.2f}%)", counts.total, trainable,
                 counts.total ? 100.0 * trainable / counts.total : 0.0);
  }

  const RunSpec& spec_;
  PluginLoader& loader_;
  Store& store_;
  const RunOptions& options_;
  const Clock::time_point wall0_ = Clock::now();
  Clock::time_point target_start_;
  torch::Device device_{torch::kCPU};
  std::unique_ptr<AshaPruner> pruner_;  ///< [sweep.asha], for the target stage
  std::shared_ptr<Distributed> dist_;   ///< [run] processes > 1: this rank's collectives
  DeviceBudget device_budget_;          ///< train.device_data_mb, less what the domains placed
  std::string device_error_;
  fs::path run_dir_;
  RunOutcome out_;
  std::optional<StoreMetrics> metrics_;
  std::vector<PluginRecord> used_;
  std::optional<WeightsFile> backbone_weights_, adapter_weights_;
  PrefixLogger runner_log_{"runner"};
  PrefixLogger strategy_log_{spec_.strategy.plugin};
  Context ctx_;
  std::optional<RunSession> session_;
  std::unique_ptr<Strategy> strategy_;
  TaskInfo task_;
  Stage stage_;
  std::map<std::string, torch::Tensor> buffers_before_;
};

}  // namespace

RunOutcome execute_run(const RunSpec& spec, PluginLoader& loader, Store& store,
                       const RunOptions& options) {
  RunExecution run(spec, loader, store, options);
  if (!run.start()) return run.outcome();
  run.guarded([&] {
    run.prepare_folder();
    run.record_plugins();
    run.open_session();
    run.start_ranks();
    run.load_data();
    run.key_pretraining_cache();
    run.build_model();
    run.prepare_strategy();
    if (run.records()) run.score_starting_point();
    if (run.ends_after_scoring()) return;
    run.attach_adapters();
    run.train_target();
    if (!run.records()) return run.trained_only();
    run.evaluate_target();
    run.save_outputs();
    run.finish_ranks();
  });
  return run.finish();
}

}  // namespace tlab
