#include "run/runner.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/file.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <ctime>
#include <fstream>
#include <optional>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/cuda.h>
#include <torch/nn.h>
#include <torch/optim.h>
#include <torch/serialize.h>
#include <torch/utils.h>
#include <nlohmann/json.hpp>

#include "run/model_io.hpp"
#include "run/prefetch.hpp"
#include "tlab/sdk/mode.hpp"
#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab {
namespace {

using Clock = std::chrono::steady_clock;

volatile std::sig_atomic_t g_stop_signal = 0;

volatile std::sig_atomic_t g_second_signal_ends = 1;

void on_stop_signal(int sig) {
  if (g_stop_signal != 0 && g_second_signal_ends) {  // second signal: the user insists
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
  g_stop_signal = sig;
}

void throw_if_stopped(const std::string& where) {
  if (int sig = g_stop_signal)
    throw InterruptedError(fmt::format("stopped by signal {} ({}) {}", sig,
                                       sig == SIGINT ? "SIGINT, Ctrl-C" : strsignal(sig), where));
}

// Logger handed to plugins: spdlog with the plugin's name as a prefix.
class PrefixLogger : public Logger {
 public:
  explicit PrefixLogger(std::string prefix) : prefix_("[" + std::move(prefix) + "] ") {}
  void debug(const std::string& m) override { spdlog::debug("{}{}", prefix_, m); }
  void info(const std::string& m) override { spdlog::info("{}{}", prefix_, m); }
  void warn(const std::string& m) override { spdlog::warn("{}{}", prefix_, m); }

 private:
  std::string prefix_;
};

// Buffers metric rows and writes them in one transaction per flush.
class StoreMetrics : public Metrics {
 public:
  StoreMetrics(Store& store, int64_t run) : store_(store), run_(run), start_(Clock::now()) {}
  void log(const std::string& name, double value, int64_t step, int64_t epoch) override {
    double t = std::chrono::duration<double>(Clock::now() - start_).count();
    add({name, step, epoch, value, t});
  }
  void add(const MetricRow& row) {
    buffer_.push_back(row);
    if (capture_) capture_->push_back(row);
    if (buffer_.size() >= 4096) flush();
  }
  /// While set, every row logged is also appended to `rows` (for the pre-training cache).
  void capture(std::vector<MetricRow>* rows) { capture_ = rows; }
  void summary(const std::string& name, double value) override { summary_[name] = value; }
  void flush() {
    if (!buffer_.empty()) store_.write_metrics(run_, buffer_);
    buffer_.clear();
    store_.heartbeat(run_);
  }
  const std::map<std::string, double>& summaries() const { return summary_; }

 private:
  Store& store_;
  int64_t run_;
  Clock::time_point start_;
  std::vector<MetricRow> buffer_;
  std::vector<MetricRow>* capture_ = nullptr;
  std::map<std::string, double> summary_;
};

// Progress lines for the supervisor ("epoch target 3 10"), written to the file descriptor in
// TLAB_PROGRESS_FD when a sweep runs this process as a child; never blocks training.
int progress_fd() {
  static const int fd = [] {
    const char* v = std::getenv("TLAB_PROGRESS_FD");
    if (!v || !*v) return -1;
    int n = std::atoi(v);
    if (n <= 2 || fcntl(n, F_GETFD) < 0) return -1;
    fcntl(n, F_SETFL, fcntl(n, F_GETFL) | O_NONBLOCK);
    return n;
  }();
  return fd;
}

void report_progress(const std::string& domain, int64_t epoch, int64_t epochs) {
  if (progress_fd() < 0) return;
  std::string line = fmt::format("epoch {} {} {}\n", domain, epoch, epochs);
  [[maybe_unused]] auto n = ::write(progress_fd(), line.data(), line.size());
}

// LibTorch's CPU and CUDA allocators report failure as c10::Error with these words.
bool is_out_of_memory(const std::string& message) {
  return message.find("out of memory") != std::string::npos ||
         message.find("can't allocate memory") != std::string::npos;
}

// Calls into a plugin; any exception is rethrown naming the plugin and the hook.
template <class F>
auto call_plugin(const std::string& kind, const std::string& name, const std::string& hook, F&& f) {
  try {
    return f();
  } catch (const PluginError&) {  // from a stage the plugin ran: already names plugin and hook
    throw;
  } catch (const DivergedError&) {
    throw;
  } catch (const InterruptedError&) {
    throw;
  } catch (const OutOfMemoryError&) {
    throw;
  } catch (const std::bad_alloc& e) {
    throw OutOfMemoryError(
        fmt::format("{} plugin '{}' ran out of memory in {}: {}", kind, name, hook, e.what()));
  } catch (const std::exception& e) {
    if (is_out_of_memory(e.what()))
      throw OutOfMemoryError(
          fmt::format("{} plugin '{}' ran out of memory in {}: {}", kind, name, hook, e.what()));
    throw PluginError(fmt::format("{} plugin '{}' failed in {}: {}", kind, name, hook, e.what()));
  } catch (...) {
    throw PluginError(
        fmt::format("{} plugin '{}' failed in {}: non-standard exception", kind, name, hook));
  }
}

torch::Device resolve_device(const std::string& d) {
  if (d == "auto")
    return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0)
                                       : torch::Device(torch::kCPU);
  return torch::Device(d);
}

// Checks what a dataset plugin returned, so that a bad plugin fails with a clear message
// rather than deep inside LibTorch.
void check_domain(const DomainData& d, const std::string& role, const std::string& plugin) {
  auto fail = [&](const std::string& msg) {
    throw PluginError(
        fmt::format("dataset plugin '{}' ({}) returned invalid data: {}", plugin, role, msg));
  };
  if (d.num_classes < 1) fail(fmt::format("num_classes = {}, expected >= 1", d.num_classes));
  if (d.input_shape.empty()) fail("input_shape is empty");
  if (d.train.size() == 0) fail("the train split is empty");
  auto check_split = [&](const Split& s, const char* name) {
    if (s.size() == 0) return;
    // A streamed split: its first example stands for all (the source checks the others).
    const torch::Tensor x = s.streamed() ? s.stream->get(0, 0).unsqueeze(0) : s.x;
    if (!x.defined()) fail(fmt::format("{}: neither examples (x) nor a stream of examples", name));
    if (!s.y.defined() || s.y.dim() != 1 || (!s.streamed() && s.y.size(0) != s.x.size(0)))
      fail(fmt::format("{}: labels must be a 1-D tensor with one label per example", name));
    if (s.y.scalar_type() != torch::kLong) fail(fmt::format("{}: labels must be int64", name));
    if (!x.is_floating_point() && x.scalar_type() != torch::kLong &&
        x.scalar_type() != torch::kByte)
      fail(fmt::format("{}: inputs are {}, expected a floating-point tensor (or int64 token ids)",
                       name, c10::toString(x.scalar_type())));
    std::vector<int64_t> shape(x.sizes().begin() + 1, x.sizes().end());
    if (shape != d.input_shape)
      fail(fmt::format("{}: example shape {} differs from input_shape {}", name,
                       fmt::join(shape, "x"), fmt::join(d.input_shape, "x")));
    int64_t lo = s.y.min().item<int64_t>(), hi = s.y.max().item<int64_t>();
    if (lo < 0 || hi >= d.num_classes)
      fail(fmt::format("{}: labels span [{}, {}], expected [0, {})", name, lo, hi, d.num_classes));
  };
  check_split(d.train, "train");
  check_split(d.val, "val");
  check_split(d.test, "test");
}

Split to_device(const Split& s, torch::Device dev) {
  if (s.size() == 0) return s;
  if (s.streamed()) return {s.x, s.y.to(dev), s.stream};  // batches move when they are made
  // Token ids (int64) stay integers; everything else becomes float.
  return {s.x.to(dev, s.x.scalar_type() == torch::kLong ? torch::kLong : torch::kFloat),
          s.y.to(dev)};
}

DomainData to_device(DomainData d, torch::Device dev) {
  d.train = to_device(d.train, dev);
  d.val = to_device(d.val, dev);
  d.test = to_device(d.test, dev);
  if (d.unlabeled.defined())
    d.unlabeled = d.unlabeled.to(
        dev, d.unlabeled.scalar_type() == torch::kLong ? torch::kLong : torch::kFloat);
  return d;
}

// Inputs of a batch: resident rows, or the examples of a streamed split stacked.
torch::Tensor as_input(torch::Tensor x, torch::Device dev) {
  return x.to(dev, x.scalar_type() == torch::kLong ? torch::kLong : torch::kFloat);
}

// Prefetch depth for a streamed split: two batches per worker keep every worker busy.
int prefetch_capacity(const ExampleSource& s) { return 2 * std::max(1, s.workers()); }

// One optimiser parameter group per entry of `groups` (empty groups are dropped by the caller).
std::unique_ptr<torch::optim::Optimizer> make_optimizer(
    const TrainConfig& c, const std::vector<std::vector<torch::Tensor>>& groups) {
  std::vector<torch::optim::OptimizerParamGroup> g;
  for (const auto& params : groups) g.emplace_back(params);
  if (c.optimizer == "sgd")
    return std::make_unique<torch::optim::SGD>(
        g, torch::optim::SGDOptions(c.lr).momentum(c.momentum).weight_decay(c.weight_decay));
  if (c.optimizer == "adamw")
    return std::make_unique<torch::optim::AdamW>(
        g, torch::optim::AdamWOptions(c.lr).weight_decay(c.weight_decay));
  return std::make_unique<torch::optim::Adam>(
      g, torch::optim::AdamOptions(c.lr).weight_decay(c.weight_decay));
}

double scheduled_lr(const TrainConfig& c, int64_t epoch) {
  if (c.schedule == "cosine")
    return 0.5 * c.lr * (1.0 + std::cos(M_PI * static_cast<double>(epoch) / c.epochs));
  if (c.schedule == "step") return c.lr * std::pow(c.gamma, epoch / c.step_epochs);
  return c.lr;
}

// Seconds since this process started (its start time in /proc, 10 ms resolution); -1 if unknown.
double seconds_since_process_start() {
  const int64_t start = process_start_ticks(getpid());
  timespec now{};
  if (start < 0 || clock_gettime(CLOCK_BOOTTIME, &now) != 0) return -1;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9 -
         static_cast<double>(start) / ticks;
}

class RunSession : public Session {
 public:
  RunSession(Context& ctx, StoreMetrics& metrics, bool verbose, bool profile)
      : ctx_(ctx), metrics_(metrics), verbose_(verbose), profile_(profile) {}

  Context& context() override { return ctx_; }
  Model& model() override { return *model_; }
  // Loaded on first use: a strategy that never asks (scratch) costs no source data.
  const DomainData* source() const override {
    if (!source_ && load_source_) {
      DomainData d = load_source_();
      if (d.input_shape != target_.input_shape)
        throw std::invalid_argument(fmt::format(
            "source examples have shape {} but target examples {}; a model cannot take both",
            fmt::join(d.input_shape, "x"), fmt::join(target_.input_shape, "x")));
      source_ = std::move(d);
    }
    return source_ ? &*source_ : nullptr;
  }
  const DomainData& target() const override { return target_; }
  const TrainConfig& train_config() const override { return train_; }
  int64_t step() const override { return step_; }

  Evaluation evaluate(torch::nn::Module& module,
                      const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                      const Split& split) override {
    if (split.size() == 0) return {};
    ModeScope restore(module);  // each submodule gets its own mode back (a frozen part stays eval)
    module.eval();
    torch::NoGradGuard no_grad;
    auto correct = torch::zeros({}, torch::TensorOptions(ctx_.device).dtype(torch::kLong));
    auto loss = torch::zeros({}, torch::TensorOptions(ctx_.device).dtype(torch::kDouble));
    // Modest batches: activations of huge ones are mmap-allocated and page-faulted every call.
    const int64_t n = split.size(), bs = 256;
    std::optional<Prefetcher> stream;
    if (split.streamed())
      stream.emplace(split.stream, index_batches(torch::arange(n, torch::kLong), bs), 0,
                     split.stream->workers(), prefetch_capacity(*split.stream));
    for (int64_t i = 0; i < n; i += bs) {
      auto x =
          stream ? as_input(stream->next(), ctx_.device) : split.x.slice(0, i, std::min(n, i + bs));
      auto y = split.y.slice(0, i, std::min(n, i + bs));
      auto scores = forward(x);
      correct += scores.argmax(1).eq(y).sum();
      loss +=
          torch::nn::functional::cross_entropy(
              scores, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
              .to(torch::kDouble);
    }
    return {static_cast<double>(correct.item<int64_t>()) / n, loss.item<double>() / n};
  }

  const Stage& stage() const override {
    if (stages_.empty())
      throw std::logic_error(
          "Session::stage() is only defined while a stage is being fit (inside its hooks)");
    return *stages_.back();
  }

  void fit(const Stage& st) override {
    const TrainConfig& c = st.config;
    if (c.epochs == 0) return;  // e.g. [train] epochs = 0: the target is only evaluated
    for (const Stage* running : stages_)
      if (st.hooks && running->hooks == st.hooks)
        throw std::invalid_argument(fmt::format(
            "stage '{}' was given the hooks object that drives the running stage '{}' (a hook "
            "called Session::fit with its own hooks); one hooks object serves one running stage: "
            "give the inner stage an object of its own",
            st.domain, running->domain));
    stages_.push_back(&st);
    struct Pop {
      std::vector<const Stage*>& v;
      ~Pop() { v.pop_back(); }
    } pop{stages_};
    // The stage's hooks, each call naming the plugin, the hook and the stage when it fails.
    const std::string loss_hook = fmt::format("loss (stage '{}')", st.domain);
    const std::string start_hook = fmt::format("on_epoch_start (stage '{}')", st.domain);
    const std::string end_hook = fmt::format("on_epoch_end (stage '{}')", st.domain);
    auto call_hook = [&](const std::string& hook, auto&& f) {
      return call_plugin("strategy", ctx_.plugin, hook, f);
    };
    if (!st.train || st.train->size() == 0)
      throw std::invalid_argument(fmt::format("stage '{}' has no training data", st.domain));
    if (!st.module || !st.forward)
      throw std::invalid_argument(
          fmt::format("stage '{}' needs a module and a forward function", st.domain));
    // Optimiser groups: `parameters` at the base rate, then each ParamGroup at its scale.
    std::vector<std::vector<torch::Tensor>> groups;
    std::vector<double> scales;
    std::unordered_set<const void*> seen_params;
    auto add_group = [&](const std::vector<torch::Tensor>& params, double scale,
                         const std::string& name) {
      for (const auto& p : params)
        if (!seen_params.insert(p.unsafeGetTensorImpl()).second)
          throw std::invalid_argument(fmt::format(
              "stage '{}': a parameter ({}) is in two parameter groups (second: '{}'); list each "
              "tensor once",
              st.domain, fmt::join(p.sizes(), "x"), name));
      if (params.empty()) return;
      groups.push_back(params);
      scales.push_back(scale);
    };
    add_group(st.parameters, 1.0, "parameters");
    for (const auto& g : st.groups) {
      if (!(g.lr_scale >= 0) || !std::isfinite(g.lr_scale))
        throw std::invalid_argument(
            fmt::format("stage '{}': parameter group '{}' has lr_scale {}; expected a finite "
                        "number >= 0",
                        st.domain, g.name, g.lr_scale));
      add_group(g.parameters, g.lr_scale, g.name);
    }
    if (groups.empty())
      throw std::invalid_argument(
          fmt::format("stage '{}' has no parameters to train (is everything frozen?)", st.domain));
    // Gradients are cleared (undefined), not zeroed, before the stage and each step: the
    // optimisers skip tensors without a gradient, so a group frozen for now (gradual unfreezing)
    // does not move (no weight decay, no Adam step count), whether or not an earlier stage in
    // this process left gradients on it (a pre-training that ran here or came from the cache).
    std::vector<torch::Tensor> staged;
    for (const auto& g : groups) staged.insert(staged.end(), g.begin(), g.end());
    auto clear_grads = [&staged] {
      for (auto& p : staged)
        if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
    };
    clear_grads();
    auto optimizer = make_optimizer(c, groups);
    const Split& data = *st.train;
    const int64_t n = data.size();
    const int64_t steps = (n + c.batch_size - 1) / c.batch_size;
    auto loss_fn = [&](const Batch& b) {
      if (!st.hooks) return cross_entropy(st.forward(b.x), b.y);
      return call_hook(loss_hook, [&] { return st.hooks->loss(*this, b); });
    };
    for (int64_t epoch = 0; epoch < c.epochs; ++epoch) {
      auto t0 = Clock::now();
      double lr = scheduled_lr(c, epoch);
      for (std::size_t g = 0; g < scales.size(); ++g)
        optimizer->param_groups()[g].options().set_lr(lr * scales[g]);
      st.module->train();
      if (st.hooks)  // after train(): may set parts to eval mode
        call_hook(start_hook, [&] { st.hooks->on_epoch_start(*this, epoch); });
      auto perm = torch::randperm(n, torch::TensorOptions(ctx_.device).dtype(torch::kLong));
      // A streamed split: workers decode the epoch's batches ahead of the loop, in its order,
      // with a fresh seed per epoch (random augmentation differs from epoch to epoch).
      std::optional<Prefetcher> stream;
      if (data.streamed())
        stream.emplace(
            data.stream, index_batches(perm, c.batch_size),
            std::stoull(hash_string(fmt::format("{} {} {} {}", ctx_.seed, st.domain, epoch, step_)),
                        nullptr, 16),
            data.stream->workers(), prefetch_capacity(*data.stream));
      // Accumulated on the device and read once per epoch: no host sync per step.
      auto loss_sum = torch::zeros({}, torch::TensorOptions(ctx_.device));
      const int64_t first_step = step_;
      // --profile: a clock read (and on a GPU a synchronisation) after each phase of a step.
      auto& phase = phases_[st.domain];
      auto lap = [&, last = Clock::now()](const char* name) mutable {
        if (ctx_.device.is_cuda()) torch::cuda::synchronize();
        const auto now = Clock::now();
        phase[name] += std::chrono::duration<double>(now - last).count();
        last = now;
      };
      if (!first_step_recorded_) {  // start-up: process start to the first training step
        first_step_recorded_ = true;
        const double since = seconds_since_process_start();
        if (since >= 0) metrics_.summary("run/first_step_seconds", since);
      }
      const auto train_start = Clock::now();
      if (profile_) lap("setup");
      for (int64_t s = 0; s < steps; ++s) {
        if (g_stop_signal) {
          metrics_.flush();
          throw_if_stopped(fmt::format("in {} epoch {} at step {}", st.domain, epoch, step_));
        }
        auto idx = perm.slice(0, s * c.batch_size, std::min(n, (s + 1) * c.batch_size));
        Batch b{stream ? as_input(stream->next(), ctx_.device) : data.x.index_select(0, idx),
                data.y.index_select(0, idx), idx};
        if (profile_) lap("data");
        clear_grads();
        auto loss = loss_fn(b);
        if (profile_) lap("forward");
        loss.backward();
        if (profile_) lap("backward");
        optimizer->step();
        loss_sum += loss.detach();
        if (profile_) lap("optimizer");
        ++step_;
      }
      if (st.hooks) call_hook(end_hook, [&] { st.hooks->on_epoch_end(*this, epoch); });
      if (stream) {
        data_wait_[st.domain] += stream->wait_seconds();
        metrics_.summary(st.domain + "/train/data_wait_seconds", data_wait_[st.domain]);
      }
      double mean_loss = loss_sum.item<double>() / steps;
      auto& [train_seconds, seen] = trained_[st.domain];
      train_seconds += std::chrono::duration<double>(Clock::now() - train_start).count();
      seen += n;
      metrics_.summary(st.domain + "/train/seconds", train_seconds);
      metrics_.summary(st.domain + "/train/samples_per_second",
                       train_seconds > 0 ? static_cast<double>(seen) / train_seconds : 0.0);
      if (profile_) lap("optimizer");  // the epoch's one read of the loss
      metrics_.log(st.domain + "/train/loss", mean_loss, step_, epoch);
      metrics_.log(st.domain + "/train/lr", lr, step_, epoch);
      if (!std::isfinite(mean_loss)) {
        metrics_.flush();
        throw DivergedError(fmt::format(
            "{} loss became {} in epoch {} (steps {}..{}); lower train.lr or check the data",
            st.domain, mean_loss, epoch, first_step, step_ - 1));
      }
      std::string line =
          fmt::format("[{}] epoch {}/{} loss {:.4f}", st.domain, epoch + 1, c.epochs, mean_loss);
      for (auto [split, name] : {std::pair{st.val, "val"}, std::pair{st.test, "test"}}) {
        if (!split || split->size() == 0) continue;
        Evaluation e = evaluate(*st.module, st.forward, *split);
        metrics_.log(fmt::format("{}/{}/acc", st.domain, name), e.acc, step_, epoch);
        metrics_.log(fmt::format("{}/{}/loss", st.domain, name), e.loss, step_, epoch);
        line += fmt::format(" {} acc {:.4f}", name, e.acc);
      }
      // Source validation during the target stage, for model selection by training-domain
      // validation (`tlab results compare --select source-val`): only when the strategy loaded
      // the source and both domains have the same classes.
      if (st.domain == "target" && source_ && source_->val.size() > 0 &&
          source_->num_classes == target_.num_classes) {
        Evaluation e = evaluate(*st.module, st.forward, source_->val);
        metrics_.log("source/val/acc", e.acc, step_, epoch);
        metrics_.log("source/val/loss", e.loss, step_, epoch);
      }
      if (profile_) lap("evaluation");
      report_progress(st.domain, epoch + 1, c.epochs);
      metrics_.flush();
      double secs = std::chrono::duration<double>(Clock::now() - t0).count();
      if (verbose_)
        spdlog::info("{} ({:.2f} s)", line, secs);
      else
        spdlog::debug("{} ({:.2f} s)", line, secs);
      if (profile_) {
        lap("logging");
        for (const auto& [name, value] : phase)
          metrics_.summary(fmt::format("profile/{}/{}_seconds", st.domain, name), value);
      }
    }
    clear_grads();  // a later stage starts clean; the memory is freed
    const auto& phase = phases_[st.domain];
    if (profile_ && !phase.empty()) {
      std::string text;
      double total = 0;
      for (const auto& [name, value] : phase) total += value;
      for (const char* name :
           {"setup", "data", "forward", "backward", "optimizer", "evaluation", "logging"})
        if (phase.count(name))
          text += fmt::format(" {} {:.2f} s ({:.0f}%)", name, phase.at(name),
                              total > 0 ? 100 * phase.at(name) / total : 0.0);
      spdlog::info("[profile] {}:{}", st.domain, text);
    }
  }

  bool reuse(const std::string& key, torch::nn::Module& module,
             const std::function<void()>& train) override;

  std::shared_ptr<Model> load_model(const std::string& ref) override {
    if (!load_model_) throw std::logic_error("load_model is not available in this session");
    return load_model_(ref);
  }
  std::function<std::shared_ptr<Model>(const std::string&)> load_model_;

  std::shared_ptr<Model> model_;
  std::function<DomainData()> load_source_;
  std::string reuse_base_;   // what every pre-training key shares: see execute_run
  std::string reseed_base_;  // the same without plugin build hashes: seeds what follows
  fs::path reuse_dir_;       // <results>/cache/pretrain
  mutable std::optional<DomainData> source_;
  DomainData target_;
  TrainConfig train_;
  int64_t ctx_run_id_ = 0;  // the run id, recorded with the cache entries it makes

 private:
  Context& ctx_;
  StoreMetrics& metrics_;
  bool verbose_;
  int64_t step_ = 0;
  std::map<std::string, double> data_wait_;  // seconds each stage waited for streamed batches
  bool profile_;
  // Per domain: seconds in the training loops (all epochs, evaluation excluded), examples seen.
  std::map<std::string, std::pair<double, int64_t>> trained_;
  // Per domain, with profiling: seconds per phase.
  std::map<std::string, std::map<std::string, double>> phases_;
  std::vector<const Stage*> stages_;  // the stages being fit, innermost last
  bool first_step_recorded_ = false;
};

void fsync_path(const fs::path& p, int flags);
void save_checkpoint(torch::nn::Module& model, const fs::path& file);

// An exclusive flock() held for the object's lifetime: runs sharing a pre-training wait here.
class FileLock {
 public:
  explicit FileLock(const fs::path& path)
      : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_ < 0)
      throw std::runtime_error(
          fmt::format("cannot open the lock file '{}': {}", path.string(), strerror(errno)));
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno == EINTR && g_stop_signal) {  // stopped while waiting for another run
        ::close(fd_);
        throw_if_stopped("while waiting for the shared pre-training");
      }
      if (errno != EINTR) {
        ::close(fd_);
        throw std::runtime_error(
            fmt::format("cannot lock '{}': {}", path.string(), strerror(errno)));
      }
    }
  }
  ~FileLock() { ::close(fd_); }  // closing releases the lock
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_;
};

void write_file_atomically(const fs::path& file, const std::string& text) {
  fs::path tmp = file;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out << text;
    if (!out.flush())
      throw std::runtime_error(fmt::format("cannot write '{}' (disk full?)", tmp.string()));
  }
  fsync_path(tmp, O_RDONLY);
  fs::rename(tmp, file);
}

bool RunSession::reuse(const std::string& key, torch::nn::Module& module,
                       const std::function<void()>& train) {
  const std::string full = reuse_base_ + "strategy key: " + key + "\n";
  const std::string hash = hash_string(full);
  fs::create_directories(reuse_dir_);
  const fs::path weights = reuse_dir_ / (hash + ".pt"), meta = reuse_dir_ / (hash + ".json");
  bool trained = false;
  {
    FileLock lock(reuse_dir_ / (hash + ".lock"));
    std::ifstream in(meta, std::ios::binary);
    nlohmann::json m;
    if (in) {
      m = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
      if (!m.is_object() || m.value("key", "") != full) {
        spdlog::warn(
            "[runner] pre-training cache entry '{}' is unreadable or for another key; "
            "training again",
            meta.string());
        m = nlohmann::json();
      }
    }
    if (m.is_object()) {
      try {
        torch::serialize::InputArchive archive;
        archive.load_from(weights.string(), ctx_.device);
        module.load(archive);
      } catch (const std::exception& e) {
        spdlog::warn(
            "[runner] pre-training cache entry '{}' cannot be loaded ({}); training "
            "again",
            weights.string(), e.what());
        m = nlohmann::json();
      }
    }
    if (m.is_object()) {
      const int64_t base = step_;
      for (const auto& r : m["metrics"])
        metrics_.add({r[0].get<std::string>(), base + r[1].get<int64_t>(), r[2].get<int64_t>(),
                      r[3].is_null() ? NAN : r[3].get<double>(), r[4].get<double>()});
      step_ += m["steps"].get<int64_t>();
      spdlog::info("[runner] pre-training reused from '{}' ({} steps, made by run {})",
                   weights.string(), m["steps"].get<int64_t>(), m.value("run", int64_t{0}));
    } else {
      std::vector<MetricRow> rows;
      const int64_t base = step_;
      metrics_.capture(&rows);
      try {
        train();
      } catch (...) {
        metrics_.capture(nullptr);
        throw;
      }
      metrics_.capture(nullptr);
      nlohmann::json out = {{"key", full}, {"steps", step_ - base}, {"run", ctx_run_id_}};
      nlohmann::json list = nlohmann::json::array();
      for (const auto& r : rows)
        list.push_back({r.name, r.step - base, r.epoch,
                        std::isnan(r.value) ? nlohmann::json() : nlohmann::json(r.value),
                        r.wall_time});
      out["metrics"] = std::move(list);
      try {
        save_checkpoint(module, weights);
        write_file_atomically(meta, out.dump());  // last: its presence marks a complete entry
      } catch (const std::exception& e) {         // the run itself is fine: only sharing is lost
        spdlog::warn("[runner] cannot save the pre-training for reuse in '{}': {}",
                     reuse_dir_.string(), e.what());
      }
      trained = true;
    }
  }
  metrics_.summary("source/pretrain_reused", trained ? 0.0 : 1.0);
  // The same random state afterwards whether this run trained or reused.
  const std::string reseed = reseed_base_ + "strategy key: " + key + "\n";
  torch::manual_seed(std::stoull(hash_string(reseed + std::to_string(ctx_.seed)), nullptr, 16));
  return trained;
}

void fsync_path(const fs::path& p, int flags) {
  int fd = ::open(p.c_str(), flags);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void save_checkpoint(torch::nn::Module& model, const fs::path& file) {
  fs::path tmp = file;
  tmp += ".tmp";
  try {
    torch::serialize::OutputArchive archive;
    model.save(archive);
    archive.save_to(tmp.string());
    fsync_path(tmp, O_RDONLY);  // data on disk before the rename makes it visible
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  fs::rename(tmp, file);  // atomic: a reader sees the old file or the new one, never half
  fsync_path(file.parent_path(), O_RDONLY | O_DIRECTORY);
}

}  // namespace

void install_stop_handlers(bool second_signal_ends) {
  g_stop_signal = 0;
  g_second_signal_ends = second_signal_ends;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);  // a closed terminal or ssh session stops runs cleanly too
}

int stop_signal() { return g_stop_signal; }

void configure_threads(int threads) {
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
}

Split take_shots(const Split& split, int64_t shots, int64_t num_classes, uint64_t seed,
                 torch::Tensor* rest) {
  if (shots <= 0 || split.size() == 0) return split;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto y = split.y.to(torch::kCPU);
  auto perm = torch::randperm(split.size(), gen, torch::TensorOptions().dtype(torch::kLong));
  auto labels = y.index_select(0, perm);
  std::vector<int64_t> keep;
  std::vector<int64_t> count(num_classes, 0);
  auto p = perm.accessor<int64_t, 1>();
  auto l = labels.accessor<int64_t, 1>();
  for (int64_t i = 0; i < perm.size(0); ++i)
    if (count[l[i]]++ < shots) keep.push_back(p[i]);
  if (split.streamed()) {  // k labelled examples per class: small, so kept resident
    std::vector<torch::Tensor> xs;
    for (int64_t i : keep) xs.push_back(split.stream->get(i, 0));
    auto idx = torch::tensor(keep, torch::kLong).to(split.y.device());
    return {xs.empty() ? torch::Tensor() : torch::stack(xs), split.y.index_select(0, idx)};
  }
  auto idx = torch::tensor(keep, torch::kLong).to(split.x.device());
  if (rest) {
    std::vector<bool> kept(static_cast<std::size_t>(split.size()), false);
    for (int64_t i : keep) kept[static_cast<std::size_t>(i)] = true;
    std::vector<int64_t> others;
    for (int64_t i = 0; i < split.size(); ++i)
      if (!kept[static_cast<std::size_t>(i)]) others.push_back(i);
    *rest = split.x.index_select(0, torch::tensor(others, torch::kLong).to(split.x.device()));
  }
  return {split.x.index_select(0, idx), split.y.index_select(0, idx)};
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
      throw std::runtime_error(fmt::format("cannot write '{}' (disk full?)", path.string()));
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

RunOutcome execute_run(const RunSpec& spec, PluginLoader& loader, Store& store,
                       const RunOptions& options) {
  const auto wall0 = Clock::now();
  // Validated at config time; a failure here (e.g. the GPU vanished) fails only this run.
  torch::Device device(torch::kCPU);
  std::string device_error;
  try {
    device = resolve_device(spec.device);
  } catch (const std::exception& e) {
    device_error = e.what();
  }
  NewRun row;
  fs::path run_dir;
  RunOutcome out;
  if (options.run_id != 0) {  // a run the supervisor queued: its row exists
    RunRecord queued = store.run(options.run_id);
    run_dir = queued.run_dir;
    out.id = options.run_id;
    if (!store.start_run(out.id, getpid(), device.str(), options.gpu, boot_id(),
                         process_start_ticks(getpid()), host_name())) {
      out.status = store.run(out.id).status;
      out.reason = "the run was no longer queued when its process started";
      return out;
    }
  } else {
    row = describe_run(spec, options);
    row.device = device.str();
    run_dir = row.run_dir;
    out.id = store.create_run(row);
  }
  StoreMetrics metrics(store, out.id);
  spdlog::info("[runner] run {} started: {} (seed {}, device {})", out.id, spec.name, spec.seed,
               device.str());
  try {
    if (!device_error.empty())
      throw std::runtime_error(fmt::format("device \"{}\": {}", spec.device, device_error));
    fs::create_directories(run_dir);
    write_run_config(spec, run_dir);
    torch::manual_seed(spec.seed);

    // Load every plugin first, so their versions are recorded even if the run fails later.
    std::vector<PluginRecord> used;
    auto record = [&](Kind kind, const std::string& name) {
      const LoadedPlugin& p = loader.get(kind, name);
      used.push_back({kind_name(kind), name, p.descriptor->version, p.path.string(), p.file_hash});
    };
    if (spec.source) record(Kind::Dataset, spec.source->plugin);
    record(Kind::Dataset, spec.target.plugin);
    record(Kind::Backbone, spec.backbone.plugin);
    for (const auto& a : spec.adapters) record(Kind::Adapter, a.plugin);
    record(Kind::Strategy, spec.strategy.plugin);
    store.add_plugins(out.id, used);
    // Weight files are recorded like plugins (kind "weights"): what the run was built from.
    std::optional<WeightsFile> backbone_weights, adapter_weights;
    if (!spec.backbone.weights.empty()) {
      backbone_weights =
          resolve_weights(spec.backbone.weights, store, "model.safetensors", "backbone.weights");
      store.add_plugins(out.id, {{"weights", "backbone", backbone_weights->spec,
                                  backbone_weights->path.string(), backbone_weights->hash}});
    }
    if (!spec.adapter_weights.empty()) {
      adapter_weights =
          resolve_weights(spec.adapter_weights, store, "adapter.safetensors", "adapter_weights");
      store.add_plugins(out.id, {{"weights", "adapters", adapter_weights->spec,
                                  adapter_weights->path.string(), adapter_weights->hash}});
    }

    PrefixLogger runner_log("runner");
    Context ctx;
    ctx.device = device;
    ctx.seed = static_cast<uint64_t>(spec.seed);
    ctx.run_dir = run_dir;
    ctx.log = &runner_log;
    ctx.metrics = &metrics;

    const char* profile_env = std::getenv("TLAB_PROFILE");
    RunSession session(ctx, metrics, options.verbose,
                       options.profile || (profile_env && std::string(profile_env) == "1"));
    session.train_ = spec.train;
    auto load_domain = [&](const DatasetSpec& d, const char* role) {
      auto ds = loader.create<Dataset>(d.plugin, d.params);
      PrefixLogger log(d.plugin);
      Context c = ctx;
      c.plugin = d.plugin;
      c.log = &log;
      const auto t0 = Clock::now();
      DomainData data = call_plugin("dataset", d.plugin, "load", [&] { return ds->load(c); });
      const double load_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      metrics.summary(fmt::format("{}/data/load_seconds", role), load_seconds);
      check_domain(data, role, d.plugin);
      // The target's training examples not kept as shots are its unlabelled pool, unless the
      // dataset brings its own (adaptation methods train on it without labels).
      torch::Tensor rest;
      const bool pool = !data.unlabeled.defined() && d.shots > 0 && !data.train.streamed();
      data.train =
          take_shots(data.train, d.shots, data.num_classes, spec.seed, pool ? &rest : nullptr);
      if (pool && rest.defined() && rest.size(0) > 0) data.unlabeled = rest;
      spdlog::debug("[runner] {}: {} '{}' train {} val {} test {}{} (loaded in {:.2f} s)", role,
                    d.plugin, data.name, data.train.size(), data.val.size(), data.test.size(),
                    data.train.streamed() ? " (streamed)" : "", load_seconds);
      return to_device(std::move(data), device);
    };
    session.target_ = load_domain(spec.target, "target");
    if (spec.source) session.load_source_ = [&] { return load_domain(*spec.source, "source"); };

    // The backbone's initial weights depend on the seed only, not on how much randomness the
    // dataset plugins used: runs that share a pre-training start from the same weights.
    torch::manual_seed(spec.seed);
    session.ctx_run_id_ = out.id;
    session.reuse_dir_ = options.results_dir / "cache" / "pretrain";
    {
      std::string base =
          fmt::format("tlab pre-training cache v1\ndevice type: {}\ninput shape: {}\n",
                      device.type() == torch::kCUDA ? "cuda" : "cpu",
                      fmt::join(session.target_.input_shape, "x"));
      // The random state after pre-training is seeded from the same text without the plugin
      // builds' hashes: rebuilding a plugin makes a new cache entry, not other results.
      std::string reseed = base;
      for (const auto& p : used) {
        base += fmt::format("plugin: {} {} {}\n", p.kind, p.name, p.file_hash);
        reseed += fmt::format("plugin: {} {}\n", p.kind, p.name);
      }
      std::string tail;
      if (backbone_weights) tail += fmt::format("backbone weights: {}\n", backbone_weights->hash);
      for (const auto& p : spec.params)
        if (p.key == "seed" || p.key.rfind("source.", 0) == 0 || p.key.rfind("backbone.", 0) == 0 ||
            p.key.rfind("train.", 0) == 0 || p.key == "strategy.plugin")
          tail +=
              fmt::format("{} = {}\n", p.key,
                          std::visit([](const auto& v) { return fmt::format("{}", v); }, p.value));
      session.reuse_base_ = base + tail;
      session.reseed_base_ = reseed + tail;
    }
    auto backbone = loader.create<Backbone>(spec.backbone.plugin, spec.backbone.params);
    PrefixLogger backbone_log(spec.backbone.plugin);
    Context bctx = ctx;
    bctx.plugin = spec.backbone.plugin;
    bctx.log = &backbone_log;
    auto net = call_plugin("backbone", spec.backbone.plugin, "build",
                           [&] { return backbone->build(session.target_.input_shape, bctx); });
    if (!net)
      throw PluginError(fmt::format("backbone plugin '{}' built no network", spec.backbone.plugin));
    if (backbone_weights) {
      auto report = load_backbone_weights(*net, spec.backbone, *backbone_weights);
      spdlog::info("[runner] backbone weights from '{}' ({}): {}", backbone_weights->path.string(),
                   backbone_weights->hash, report.summary());
      metrics.summary("weights/backbone/matched", static_cast<double>(report.matched.size()));
      metrics.summary("weights/backbone/missing", static_cast<double>(report.missing.size()));
      metrics.summary("weights/backbone/unexpected", static_cast<double>(report.unexpected.size()));
      metrics.summary("weights/backbone/mismatched", static_cast<double>(report.mismatched.size()));
    }
    session.load_model_ = [&](const std::string& ref) {
      fs::path dir;
      if (ref.rfind("run:", 0) == 0) {
        const std::string id = ref.substr(4);
        if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos)
          throw std::invalid_argument(fmt::format(
              "model \"{}\": expected \"run:<id>\" with a run number (tlab results list) or "
              "the path of a run folder",
              ref));
        dir = resolve_weights(ref, store, "model.safetensors", "model").path.parent_path();
      } else {
        dir = fs::absolute(ref);
        if (!fs::is_directory(dir))
          throw std::invalid_argument(fmt::format(
              "model \"{}\": no such run folder ('{}'; relative paths are taken from the current "
              "folder); name a run as \"run:<id>\" (tlab results list) or give its folder",
              ref, dir.string()));
      }
      Context c = ctx;
      PrefixLogger log("load_model");
      c.log = &log;
      auto m = load_run_model(dir, ref, loader, c, session.target_.input_shape);
      spdlog::info("[runner] model \"{}\" loaded from '{}'", ref, dir.string());
      return m;
    };
    session.model_ = std::make_shared<Model>(net);
    session.model_->to(device);

    auto strategy = loader.create<Strategy>(spec.strategy.plugin, spec.strategy.params);
    PrefixLogger strategy_log(spec.strategy.plugin);
    ctx.log = &strategy_log;  // the session's context is the strategy's
    ctx.plugin = spec.strategy.plugin;
    const std::string& sname = spec.strategy.plugin;
    call_plugin("strategy", sname, "prepare", [&] { strategy->prepare(session); });

    TaskInfo task{session.target_.num_classes, session.target_.input_shape};
    for (std::size_t i = 0; i < spec.adapters.size(); ++i) {
      const auto& a = spec.adapters[i];
      auto adapter = loader.create<Adapter>(a.plugin, a.params);
      PrefixLogger log(a.plugin);
      Context c = ctx;
      c.plugin = a.plugin;
      c.log = &log;
      const ParamCounts before = count_parameters(*session.model_);
      call_plugin("adapter", a.plugin, "attach",
                  [&] { adapter->attach(*session.model_, task, c); });
      const ParamCounts after = count_parameters(*session.model_);
      metrics.summary(fmt::format("adapters/{}.{}/params_added", i, a.plugin),
                      static_cast<double>(after.total - before.total));
      metrics.summary(fmt::format("adapters/{}.{}/trainable_after", i, a.plugin),
                      static_cast<double>(after.trainable));
    }
    session.model_->to(device);
    if (adapter_weights) {
      auto report = load_adapters(*session.model_, spec, task.num_classes, task.input_shape,
                                  *adapter_weights);
      spdlog::info("[runner] adapter weights from '{}' ({}): {} tensors loaded",
                   adapter_weights->path.string(), adapter_weights->hash, report.matched.size());
      metrics.summary("weights/adapters/matched", static_cast<double>(report.matched.size()));
    }
    if (session.model_->out_dim() != task.num_classes)
      throw std::invalid_argument(fmt::format(
          "the model outputs {} values per example but the target has {} classes; add a head, "
          "e.g. [[adapters]] plugin = \"linear_head\"",
          session.model_->out_dim(), task.num_classes));
    // Before setup: strategies that adapt the model there (domain adaptation) change buffers too.
    const auto buffers_before = snapshot_buffers(*session.model_);
    call_plugin("strategy", sname, "setup", [&] { strategy->setup(session); });

    Stage stage;
    stage.domain = "target";
    stage.config = spec.train;
    stage.groups = call_plugin("strategy", sname, "parameter_groups",
                               [&] { return strategy->parameter_groups(session); });
    if (stage.groups.empty())
      for (auto& p : session.model_->parameters())
        if (p.requires_grad()) stage.parameters.push_back(p);
    // What the target stage may train: for gradual unfreezing, parameters frozen now count too.
    auto staged = [&] {
      std::vector<torch::Tensor> all = stage.parameters;
      for (const auto& g : stage.groups)
        for (const auto& p : g.parameters) all.push_back(p);
      return all;
    };
    {
      const ParamCounts counts = count_parameters(*session.model_);
      // Parameters the strategy trains outside the model (a source head, a domain classifier)
      // are counted apart: they are not part of the model that is saved and evaluated.
      std::unordered_set<const void*> in_model;
      for (const auto& p : session.model_->parameters()) in_model.insert(p.unsafeGetTensorImpl());
      int64_t trainable = 0, outside = 0;
      for (const auto& p : staged())
        (in_model.count(p.unsafeGetTensorImpl()) ? trainable : outside) += p.numel();
      metrics.summary("model/params/total", static_cast<double>(counts.total));
      metrics.summary("model/params/trainable", static_cast<double>(trainable));
      if (outside > 0) {
        metrics.summary("strategy/params/trainable", static_cast<double>(outside));
        spdlog::info("[runner] the strategy also trains {} parameters outside the model", outside);
      }
      spdlog::info("[runner] model: {} parameters, {} trainable ({:.2f}%)", counts.total, trainable,
                   counts.total ? 100.0 * trainable / counts.total : 0.0);
    }
    stage.module = session.model_.get();
    stage.forward = [&](const torch::Tensor& x) { return session.model_->forward(x); };
    stage.hooks = strategy.get();  // the strategy is the target stage's hooks
    stage.train = &session.target_.train;
    stage.val = &session.target_.val;
    stage.test = &session.target_.test;
    session.fit(stage);

    for (auto [split, name] :
         {std::pair{&session.target_.val, "val"}, std::pair{&session.target_.test, "test"}}) {
      if (split->size() == 0) continue;
      Evaluation e = session.evaluate(*session.model_, stage.forward, *split);
      metrics.summary(fmt::format("target/{}/acc", name), e.acc);
      metrics.summary(fmt::format("target/{}/loss", name), e.loss);
    }
    metrics.summary("target/train/examples", static_cast<double>(session.target_.train.size()));
    save_model(*session.model_, run_dir / "model.safetensors",
               {{"format", "tlab-model"},
                {"run", std::to_string(out.id)},
                {"backbone", spec.backbone.plugin},
                {"tlab_version", TLAB_VERSION}});
    // What trained after the adapters attached: the target stage's parameters, or with
    // [train] epochs = 0 every parameter setup could train (domain adaptation trains the whole
    // model there), so that adapter_weights reproduces the evaluated model.
    std::vector<torch::Tensor> trained;
    for (const auto& p : spec.train.epochs > 0 ? staged() : session.model_->parameters())
      if (p.requires_grad()) trained.push_back(p);
    save_adapters(*session.model_, trained, buffers_before, spec, task.num_classes,
                  task.input_shape, run_dir);
    out.status = "finished";
  } catch (const DivergedError& e) {
    out.status = "diverged";
    out.reason = e.what();
  } catch (const InterruptedError& e) {
    out.status = "killed";
    out.reason = e.what();
  } catch (const OutOfMemoryError& e) {
    out.status = "oom";
    out.reason = e.what();
  } catch (const std::bad_alloc& e) {
    out.status = "oom";
    out.reason = fmt::format("out of memory: {}", e.what());
  } catch (const std::exception& e) {
    out.status = is_out_of_memory(e.what()) ? "oom" : "failed";
    out.reason = e.what();
  }
  metrics.summary("run/wall_seconds", std::chrono::duration<double>(Clock::now() - wall0).count());
  metrics.flush();
  std::vector<std::pair<std::string, double>> summaries(metrics.summaries().begin(),
                                                        metrics.summaries().end());
  store.write_summaries(out.id, summaries);
  store.finish_run(out.id, out.status, out.reason);
  out.summary = metrics.summaries();
  if (out.status == "finished")
    spdlog::info("[runner] run {} finished: target test acc {:.4f} ({:.1f} s)", out.id,
                 out.summary.count("target/test/acc") ? out.summary["target/test/acc"] : NAN,
                 out.summary["run/wall_seconds"]);
  else
    spdlog::error("[runner] run {} {}: {}", out.id, out.status, out.reason);
  return out;
}

}  // namespace tlab
