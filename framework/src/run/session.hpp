#pragma once
// The run's Session (tlab/sdk/strategy.hpp), what strategies see of a run: its model, data,
// stages (fit), evaluation and the pre-training cache (reuse); and the pieces around it: the
// metric buffer, the plugins' logger, calls into plugins that name the plugin and hook on
// failure, progress lines for the sweep supervisor. Private to the engine (run/runner.cpp
// builds one per run). fit and evaluate are in run/session.cpp, reuse in run/pretrain_cache.cpp.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "run/distributed.hpp"
#include "run/evaluation.hpp"
#include "run/runner.hpp"
#include "run/signals.hpp"
#include "store/store.hpp"
#include "tlab/sdk/strategy.hpp"
#include "transfer/scores.hpp"

namespace tlab {

using Clock = std::chrono::steady_clock;

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

/// Progress lines for the supervisor ("epoch target 3 10"), written to the file descriptor in
/// TLAB_PROGRESS_FD when a sweep runs this process as a child; never blocks training.
void report_progress(const std::string& domain, int64_t epoch, int64_t epochs);

// LibTorch's CPU and CUDA allocators report failure as c10::Error with these words.
inline bool is_out_of_memory(const std::string& message) {
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

class RunSession : public Session {
 public:
  RunSession(Context& ctx, StoreMetrics& metrics, bool verbose, bool profile)
      : ctx_(ctx), metrics_(metrics), verbose_(verbose), profile_(profile) {}

  Context& context() override { return ctx_; }
  Model& model() override { return *model_; }
  // Loaded on first use: a strategy that never asks (scratch) costs no source data.
  const DomainData* source() const override;
  const DomainData& target() const override { return target_; }
  const TrainConfig& train_config() const override { return train_; }
  int64_t step() const override { return step_; }

  Evaluation evaluate(torch::nn::Module& module,
                      const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                      const Split& split) override;

  const Stage& stage() const override;

  /// One stage: its optimiser and parameter groups, the epochs with the stage's hooks, per-epoch
  /// evaluation and metrics, profiling. Stages nest (a hook may fit another stage).
  void fit(const Stage& st) override;

  /// The pre-training cache (run/pretrain_cache.cpp).
  bool reuse(const std::string& key, torch::nn::Module& module,
             const std::function<void()>& train) override;

  std::shared_ptr<Model> load_model(const std::string& ref) override {
    if (!load_model_) throw std::logic_error("load_model is not available in this session");
    return load_model_(ref);
  }
  std::function<std::shared_ptr<Model>(const std::string&)> load_model_;

  std::shared_ptr<Model> model_;
  /// [run] processes > 1: this rank's collectives (fit shares each batch, sums the gradients;
  /// rank 0 alone evaluates); null for one process.
  Distributed* dist_ = nullptr;
  std::function<DomainData()> load_source_;
  std::string reuse_base_;           // what every pre-training key shares: see execute_run
  std::string reseed_base_;          // the same without plugin build hashes: seeds what follows
  std::filesystem::path reuse_dir_;  // <results>/cache/pretrain
  mutable std::optional<DomainData> source_;
  DomainData target_;
  /// Per role ("source", "target"): the domains pooled in its val split (apply_shift's
  /// val_domains), each evaluated on its own after every epoch of that role's stage.
  std::map<std::string, std::vector<std::pair<std::string, int64_t>>> val_domains_;
  TrainConfig train_;
  int64_t ctx_run_id_ = 0;  // the run id, recorded with the cache entries it makes
  /// The source classifier of the last reuse() whose module has a `head` child that is one
  /// linear layer on the backbone's features (pretrain_on_source's temporary head): what
  /// [eval] transferability scores LEEP and NCE with. Empty otherwise, with the reason.
  transfer::ModelFn source_classifier_;
  std::string no_source_classifier_ = "the strategy pre-trained no source classifier";

  /// What every evaluation counts: top-k for these k, calibration bins (from [eval]).
  std::vector<int64_t> top_k_;
  int64_t calibration_bins_ = 15;
  /// Evaluates like Session::evaluate, counting every metric (run/evaluation.hpp).
  SplitEvaluation evaluate_all(torch::nn::Module& module,
                               const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                               const Split& split, int64_t num_classes);

  /// Epoch selection ([train] checkpoint, monitor, patience) for one stage: the runner's target
  /// stage. fit() evaluates `monitor` on the stage's val split each epoch, stops after
  /// `patience` epochs without improvement, and with checkpoint "best" puts the best epoch's
  /// parameters and buffers back into the stage's module when it ends.
  const Stage* selected_stage_ = nullptr;
  /// Asked after each epoch of the selected stage with the epochs done and the monitored
  /// value: "" to go on, or why the stage stops (ASHA, run/asha.hpp); kept in stopped_because_.
  std::function<std::string(int64_t, double)> epoch_gate_;
  std::string stopped_because_;
  SelectionSpec selection_;
  ComputeSpec compute_;          // [train] precision, channels_last: every stage's steps
  int64_t selected_epoch_ = -1;  ///< 0-based epoch whose model the stage ended with.
  int64_t epochs_run_ = 0;       ///< Epochs the selected stage ran (fewer when it stopped early).
  double selected_value_ = 0;    ///< The monitored value at selected_epoch_.

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

}  // namespace tlab
