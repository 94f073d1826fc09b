#include "run/session.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <ctime>
#include <limits>
#include <unordered_set>

#include <torch/cuda.h>
#include <torch/nn.h>
#include <torch/optim.h>

#include "run/data_prep.hpp"
#include "run/precision.hpp"
#include "run/prefetch.hpp"
#include "tlab/sdk/mode.hpp"
#include "util.hpp"

namespace tlab {
namespace {

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

}  // namespace

void report_progress(const std::string& domain, int64_t epoch, int64_t epochs) {
  if (progress_fd() < 0) return;
  std::string line = fmt::format("epoch {} {} {}\n", domain, epoch, epochs);
  [[maybe_unused]] auto n = ::write(progress_fd(), line.data(), line.size());
}

namespace {

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

}  // namespace

const DomainData* RunSession::source() const {
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

Evaluation RunSession::evaluate(torch::nn::Module& module,
                                const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                                const Split& split) {
  if (split.size() == 0) return {};
  const SplitEvaluation e = evaluate_split(module, forward, split, ctx_.device, 0, {}, 1);
  return {e.accuracy(), e.loss};
}

SplitEvaluation RunSession::evaluate_all(
    torch::nn::Module& module, const std::function<torch::Tensor(const torch::Tensor&)>& forward,
    const Split& split, int64_t num_classes) {
  return evaluate_split(module, forward, split, ctx_.device, num_classes, top_k_,
                        calibration_bins_);
}

const Stage& RunSession::stage() const {
  if (stages_.empty())
    throw std::logic_error(
        "Session::stage() is only defined while a stage is being fit (inside its hooks)");
  return *stages_.back();
}

void RunSession::fit(const Stage& st) {
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
  // Several ranks ([run] processes): every rank starts the stage from rank 0's model (as DDP
  // does at construction), whatever happened before on each.
  if (dist_) {
    std::vector<torch::Tensor> state;
    std::unordered_set<const void*> listed;
    auto add = [&](const torch::Tensor& t) {
      if (t.defined() && listed.insert(t.unsafeGetTensorImpl()).second) state.push_back(t);
    };
    for (const auto& p : st.module->parameters()) add(p);
    for (const auto& b : st.module->buffers()) add(b);
    for (const auto& p : staged) add(p);
    dist_->broadcast(state);
  }
  // This rank's share of a global batch (all of it with one rank): near-equal contiguous parts.
  const int64_t ranks = dist_ ? dist_->world() : 1, rank = dist_ ? dist_->rank() : 0;
  auto share = [&](int64_t size) {
    return std::pair{size * rank / ranks, size * (rank + 1) / ranks};
  };
  const bool evaluates = !dist_ || dist_->rank() == 0;  // rank 0 evaluates and records
  std::optional<GradientReducer> reducer;               // the gradients summed over the ranks
  if (dist_) reducer.emplace(*dist_, staged);
  // float16: the loss scaled before backward, the step skipped when a gradient overflowed.
  std::optional<LossScaler> scaler;
  if (compute_.precision == "fp16") scaler.emplace(ctx_.device);
  const Split& data = *st.train;
  const int64_t n = data.size();
  const int64_t steps = (n + c.batch_size - 1) / c.batch_size;
  auto loss_fn = [&](const Batch& b) {
    if (!st.hooks) return cross_entropy(st.forward(b.x), b.y);
    return call_hook(loss_hook, [&] { return st.hooks->loss(*this, b); });
  };
  // Epoch selection (the runner's target stage only): the best epoch's state, kept on the
  // device, and epochs since the monitored metric last improved.
  const bool selecting = &st == selected_stage_;
  const bool keep_best = selecting && selection_.checkpoint == "best";
  const bool higher = higher_is_better(selection_.monitor);
  std::vector<std::pair<torch::Tensor, torch::Tensor>> best_state;  // (live tensor, copy)
  int64_t since_best = 0;
  if (selecting) {
    selected_epoch_ = -1;
    epochs_run_ = 0;
    if (!st.val || st.val->size() == 0)
      throw std::invalid_argument(fmt::format(
          "train.checkpoint = \"{}\" with train.patience = {} selects epochs on the target's "
          "validation split, but the target dataset has none; give it one (its val_size or "
          "similar option) or remove train.checkpoint and train.patience",
          selection_.checkpoint, selection_.patience));
  }
  for (int64_t epoch = 0; epoch < c.epochs; ++epoch) {
    auto t0 = Clock::now();
    double lr = scheduled_lr(c, epoch);
    for (std::size_t g = 0; g < scales.size(); ++g)
      optimizer->param_groups()[g].options().set_lr(lr * scales[g]);
    st.module->train();
    if (st.hooks)  // after train(): may set parts to eval mode
      call_hook(start_hook, [&] { st.hooks->on_epoch_start(*this, epoch); });
    auto perm = torch::randperm(n, torch::TensorOptions(ctx_.device).dtype(torch::kLong));
    if (dist_) dist_->broadcast({perm});  // one order for every rank: disjoint shares
    // A streamed split: workers decode the epoch's batches ahead of the loop, in its order,
    // with a fresh seed per epoch (random augmentation differs from epoch to epoch).
    std::optional<Prefetcher> stream;
    if (data.streamed()) {
      auto batches = index_batches(perm, c.batch_size);
      for (auto& b : batches) {
        const auto [lo, hi] = share(static_cast<int64_t>(b.size()));
        b = std::vector<int64_t>(b.begin() + lo, b.begin() + hi);
      }
      stream.emplace(
          data.stream, std::move(batches),
          std::stoull(hash_string(fmt::format("{} {} {} {}", ctx_.seed, st.domain, epoch, step_)),
                      nullptr, 16),
          data.stream->workers(), prefetch_capacity(*data.stream));
    }
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
      if (stop_signal()) {
        metrics_.flush();
        throw_if_stopped(fmt::format("in {} epoch {} at step {}", st.domain, epoch, step_));
      }
      auto idx = perm.slice(0, s * c.batch_size, std::min(n, (s + 1) * c.batch_size));
      const int64_t global = idx.size(0);
      if (dist_) {
        const auto [lo, hi] = share(global);
        idx = idx.slice(0, lo, hi);
      }
      clear_grads();
      torch::Tensor loss;
      // A rank's share is empty when the batch has fewer examples than ranks: it only adds
      // nothing to the sum of the gradients.
      if (reducer) reducer->begin(static_cast<double>(idx.size(0)) / global);
      if (idx.size(0) > 0) {
        Batch b{stream ? as_input(stream->next(), ctx_.device) : data.x.index_select(0, idx),
                data.y.index_select(0, idx), idx};
        if (compute_.channels_last) b.x = channels_last_input(b.x);
        if (profile_) lap("data");
        {
          AutocastScope autocast(ctx_.device, compute_.precision);  // nothing for fp32
          loss = loss_fn(b);
        }
        if (profile_) lap("forward");
        if (scaler)
          scaler->scale(loss).backward();
        else
          loss.backward();
        if (profile_) lap("backward");
      } else if (stream) {
        stream->next();  // the empty share's batch
      }
      if (reducer) {  // what the backward pass has not overlapped
        reducer->finish(loss);
        if (profile_) lap("all-reduce");
      }
      if (scaler)
        scaler->step(*optimizer, staged);
      else
        optimizer->step();
      loss_sum += loss.detach().to(loss_sum.scalar_type());
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
    bool stop_early = false;
    for (auto [split, name] : {std::pair{st.val, "val"}, std::pair{st.test, "test"}}) {
      if (!split || split->size() == 0 || !evaluates) continue;
      const SplitEvaluation e = evaluate_all(*st.module, st.forward, *split, 0);
      const double acc = e.accuracy();
      metrics_.log(fmt::format("{}/{}/acc", st.domain, name), acc, step_, epoch);
      metrics_.log(fmt::format("{}/{}/loss", st.domain, name), e.loss, step_, epoch);
      line += fmt::format(" {} acc {:.4f}", name, acc);
      // Several pooled domains: each one's validation accuracy too (DomainBed's per-domain
      // training-domain validation), when the split is resident in their order.
      if (split == st.val && !split->streamed())
        if (auto it = val_domains_.find(st.domain); it != val_domains_.end()) {
          int64_t begin = 0;
          double worst = std::numeric_limits<double>::infinity();
          int evaluated = 0;
          for (const auto& [domain, count] : it->second) {
            if (count == 0 || begin + count > split->size()) break;
            Split part;
            part.x = split->x.slice(0, begin, begin + count);
            part.y = split->y.slice(0, begin, begin + count);
            begin += count;
            const SplitEvaluation pe = evaluate_all(*st.module, st.forward, part, 0);
            metrics_.log(fmt::format("{}/val/{}/acc", st.domain, domain), pe.accuracy(), step_,
                         epoch);
            worst = std::min(worst, pe.accuracy());
            ++evaluated;
          }
          // The worst domain's (WILDS' worst-group accuracy): model selection that asks every
          // training domain to be learnt (`--select-config source-val-worst`).
          if (evaluated > 1)
            metrics_.log(fmt::format("{}/val/worst/acc", st.domain), worst, step_, epoch);
        }
      if (!selecting || split != st.val) continue;
      const double value = metric_value(summarize(e.counts), e.loss, selection_.monitor);
      if (selection_.monitor != "acc" && selection_.monitor != "loss")
        metrics_.log(fmt::format("{}/val/{}", st.domain, selection_.monitor), value, step_, epoch);
      const bool better = selected_epoch_ < 0 ||
                          (higher ? value > selected_value_ : value < selected_value_) ||
                          (std::isnan(selected_value_) && !std::isnan(value));
      if (better) {
        selected_epoch_ = epoch;
        selected_value_ = value;
        since_best = 0;
        if (keep_best) {
          torch::NoGradGuard no_grad;
          if (best_state.empty()) {
            for (const auto& p : st.module->parameters()) best_state.emplace_back(p, p.clone());
            for (const auto& b : st.module->buffers()) best_state.emplace_back(b, b.clone());
          } else {
            for (auto& [live, copy] : best_state) copy.copy_(live);
          }
        }
      } else if (selection_.patience > 0 && ++since_best >= selection_.patience) {
        stop_early = true;
      }
      if (epoch_gate_ && epoch + 1 < c.epochs) {
        metrics_.flush();
        stopped_because_ = epoch_gate_(epoch + 1, value);
        if (!stopped_because_.empty()) stop_early = true;
      }
    }
    // Source validation during the target stage, for model selection by training-domain
    // validation (`tlab results compare --select source-val`): only when the strategy loaded
    // the source and both domains have the same classes.
    if (dist_) stop_early = dist_->agree(stop_early);  // rank 0 selects and prunes
    if (st.domain == "target" && evaluates && source_ && source_->val.size() > 0 &&
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
    if (selecting) epochs_run_ = epoch + 1;
    if (stop_early && !stopped_because_.empty()) {
      spdlog::info("[runner] {}", stopped_because_);
      break;
    }
    if (stop_early) {
      spdlog::info(
          "[runner] early stopping after epoch {}: target val {} has not improved for {} "
          "epoch(s) (best {:.4f} at epoch {})",
          epoch + 1, selection_.monitor, selection_.patience, selected_value_, selected_epoch_ + 1);
      break;
    }
  }
  if (selecting) {
    if (keep_best && !best_state.empty()) {
      torch::NoGradGuard no_grad;
      for (auto& [live, copy] : best_state) live.copy_(copy);
    } else {
      selected_epoch_ = epochs_run_ - 1;  // checkpoint "last": the model as training left it
    }
  }
  clear_grads();  // a later stage starts clean; the memory is freed
  const auto& phase = phases_[st.domain];
  if (profile_ && !phase.empty()) {
    std::string text;
    double total = 0;
    for (const auto& [name, value] : phase) total += value;
    for (const char* name : {"setup", "data", "forward", "backward", "all-reduce", "optimizer",
                             "evaluation", "logging"})
      if (phase.count(name))
        text += fmt::format(" {} {:.2f} s ({:.0f}%)", name, phase.at(name),
                            total > 0 ? 100 * phase.at(name) / total : 0.0);
    spdlog::info("[profile] {}:{}", st.domain, text);
  }
}

}  // namespace tlab
