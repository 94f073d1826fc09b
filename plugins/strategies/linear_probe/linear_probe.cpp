// linear_probe: pre-train on the source like finetune (shared code and cache), freeze the
// backbone, compute the features of the target's training examples ONCE (eval mode, no
// gradients) and train only the head on them. The feature cache lives in memory, or on disk
// with cache = "disk" (next to the pre-training cache, <results>/cache/features/), keyed by a
// hash of the backbone's weights and buffers and of the training tensors, so that runs with the
// same pre-trained backbone and data (other heads, learning rates, epochs) skip the pass.
//
// The runner's target stage provides the loop (steps, optimiser over the head only, schedule,
// metrics); each step's loss takes the cached features of the batch's rows (Batch::index)
// instead of passing its inputs through the backbone: the same batches, in the same order, as
// fine-tuning a frozen backbone would see. Target val/test are evaluated by the runner through
// the whole model (backbone included) each epoch.
#include <torch/serialize.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <unordered_set>

#include "../common/finetuning.hpp"
#include "tlab/sdk/files.hpp"
#include "tlab/sdk/source.hpp"

namespace fs = std::filesystem;

struct LinearProbeOptions {
  tlab::SourceOptions source{5};
  std::string cache = "memory";
};

class LinearProbe : public tlab::Strategy {
 public:
  using Options = LinearProbeOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .include(&Options::source)
        .field("cache", &Options::cache,
               "where the target features are kept: memory (this run) or disk (shared by runs "
               "with the same pre-trained backbone and data, under <results>/cache/features)")
        .choices({"memory", "disk"});
  }
  explicit LinearProbe(Options o) : o_(std::move(o)) {}

  void prepare(tlab::Session& s) override { tlab::pretrain_on_source(s, o_.source); }

  void setup(tlab::Session& s) override {
    auto& model = s.model();
    for (auto& p : model.backbone->parameters()) p.requires_grad_(false);
    std::unordered_set<const void*> in_head;
    for (const auto& p : model.head->parameters()) in_head.insert(p.unsafeGetTensorImpl());
    for (const auto& p : tlab_strategy::non_backbone_parameters(model))
      if (!in_head.count(p.unsafeGetTensorImpl()))
        throw std::invalid_argument(
            "linear_probe trains the head on cached backbone features, but an adapter added "
            "trainable parameters outside the head (" +
            c10::str(p.sizes()) +
            "; e.g. LoRA or bottleneck adapters), which change the features; use finetune "
            "with freeze_backbone = true, or only head adapters (linear_head, mlp_head)");
    for (const auto& p : model.head->parameters())
      if (p.requires_grad()) head_.push_back(p);
    const tlab::Split& train = s.target().train;
    if (train.streamed())
      throw std::invalid_argument(
          "linear_probe caches the features of a resident target training split; this one is "
          "streamed: keep a few shots ([target] shots = K), raise the dataset's resident_max_mb "
          "(on a GPU: train.device_data_mb), or use finetune with freeze_backbone = true");
    if (s.train_config().epochs > 0) features_ = load_or_compute(s, train);  // else unused
  }

  std::vector<tlab::ParamGroup> parameter_groups(tlab::Session&) override {
    return {{"head", head_, 1.0}};
  }

  void on_epoch_start(tlab::Session& s, int64_t) override {
    s.model().backbone->eval();  // batch-norm statistics stay those of the cached features
  }

  torch::Tensor loss(tlab::Session& s, const tlab::Batch& b) override {
    return tlab::cross_entropy(s.model().head->forward(features_.index_select(0, b.index)), b.y);
  }

 private:
  // Features of `split` from the disk cache, or one pass of the frozen backbone.
  torch::Tensor load_or_compute(tlab::Session& s, const tlab::Split& split) {
    auto& ctx = s.context();
    auto& model = s.model();
    const auto t0 = std::chrono::steady_clock::now();
    fs::path file;
    if (o_.cache == "disk") {
      const std::string tag = std::string("tlab linear_probe features v1\ndevice type: ") +
                              (ctx.device.is_cuda() ? "cuda" : "cpu") + "\n";
      uint64_t h = tlab_strategy::fnv1a(tag.data(), tag.size());
      for (const auto& item : model.backbone->named_parameters()) {
        h = tlab_strategy::fnv1a(item.key().data(), item.key().size(), h);
        h = tlab_strategy::hash_tensor(item.value(), h);
      }
      for (const auto& item : model.backbone->named_buffers()) {
        h = tlab_strategy::fnv1a(item.key().data(), item.key().size(), h);
        h = tlab_strategy::hash_tensor(item.value(), h);
      }
      h = tlab_strategy::hash_tensor(split.x, h);
      h = tlab_strategy::hash_tensor(split.y, h);
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
      file = cache_dir(ctx.run_dir) / (std::string(hex) + ".pt");
      if (fs::exists(file)) {
        try {
          torch::Tensor f;
          torch::load(f, file.string(), ctx.device);
          if (f.dim() != 2 || f.size(0) != split.size())
            throw std::runtime_error("shape " + c10::str(f.sizes()));
          ctx.log->info("features of " + std::to_string(split.size()) +
                        " target examples loaded from the cache '" + file.string() + "'");
          record(ctx, 0, 1, t0);
          return f;
        } catch (const std::exception& e) {
          ctx.log->warn("feature cache entry '" + file.string() + "' cannot be read (" + e.what() +
                        "); computing the features again");
        }
      }
    }
    torch::Tensor f;
    {
      torch::NoGradGuard no_grad;
      const bool training = model.backbone->is_training();
      model.backbone->eval();
      std::vector<torch::Tensor> parts;
      const int64_t n = split.size(), bs = 256;
      for (int64_t i = 0; i < n; i += bs)
        parts.push_back(model.features(split.x.slice(0, i, std::min(n, i + bs))));
      f = torch::cat(parts).detach();
      model.backbone->train(training);
    }
    if (!file.empty()) {
      try {
        fs::create_directories(file.parent_path());
        // Atomic: runs sharing the entry (and writing it at the same time) see all of it or none.
        tlab::write_file_atomic_with(file, [&](const fs::path& temporary) {
          torch::save(f.to(torch::kCPU), temporary.string());
        });
      } catch (const std::exception& e) {  // the run itself is fine: only sharing is lost
        ctx.log->warn("cannot save the features to '" + file.string() + "': " + e.what());
      }
    }
    record(ctx, 1, 0, t0);
    return f;
  }

  // <results>/cache/features when the run folder is <results>/runs/<run>, as the runner makes
  // it (next to the pre-training cache); otherwise a folder beside the run folder.
  static fs::path cache_dir(const fs::path& run_dir) {
    const fs::path runs = run_dir.parent_path();
    if (runs.filename() == "runs") return runs.parent_path() / "cache" / "features";
    return runs / "feature_cache";
  }

  static void record(tlab::Context& ctx, int passes, int hit,
                     std::chrono::steady_clock::time_point t0) {
    ctx.metrics->summary("target/probe/feature_passes", passes);
    ctx.metrics->summary("target/probe/cache_hit", hit);
    ctx.metrics->summary(
        "target/probe/feature_seconds",
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }

  Options o_;
  std::vector<torch::Tensor> head_;
  torch::Tensor features_;  // of the target's training rows, in order
};

TLAB_PLUGIN(LinearProbe, "linear_probe", "1.0.0",
            "Pre-train on source, then train only the head on cached target features")
