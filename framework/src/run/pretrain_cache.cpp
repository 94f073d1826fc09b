// The pre-training cache (docs/strategies.md): a strategy's Session::reuse(key, module, train)
// trains once per key and shares the result between runs and sweeps, under
// <results>/cache/pretrain: <hash>.pt (the module's weights), <hash>.json (key, steps, the
// metrics logged while training; written last, so its presence marks a whole entry) and
// <hash>.lock (runs sharing a pre-training wait there for the first to finish).

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>

#include <torch/serialize.h>
#include <torch/utils.h>
#include <xxhash.h>
#include <nlohmann/json.hpp>

#include "run/session.hpp"
#include "tlab/sdk/files.hpp"
#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab {
namespace {

/// The module's weights (LibTorch's archive), written through the SDK's durable atomic write.
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
      if (errno == EINTR && stop_signal()) {  // stopped while waiting for another run
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

void save_checkpoint(torch::nn::Module& model, const fs::path& file) {
  write_file_atomic_with(file, [&](const fs::path& temporary) {
    torch::serialize::OutputArchive archive;
    model.save(archive);
    archive.save_to(temporary.string());
  });
}

// xxh3-64 of the module's parameters and buffers (names, types, shapes, values), as 16 hex
// digits: the state a reused training starts from. Part of the key, so that a training that
// follows another stage (masked-language-model training, then supervised) never restores an
// entry made from another starting point.
std::string state_hash(torch::nn::Module& module) {
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    const std::string head =
        fmt::format("{} {} {}\n", name, c10::toString(t.scalar_type()), fmt::join(t.sizes(), "x"));
    XXH3_64bits_update(state, head.data(), head.size());
    if (!t.defined() || t.numel() == 0) return;
    const torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    XXH3_64bits_update(state, c.data_ptr(), static_cast<std::size_t>(c.nbytes()));
  };
  for (const auto& p : module.named_parameters()) add(p.key(), p.value());
  for (const auto& b : module.named_buffers()) add(b.key(), b.value());
  const XXH64_hash_t h = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return fmt::format("{:016x}", h);
}

}  // namespace

bool RunSession::reuse(const std::string& key, torch::nn::Module& module,
                       const std::function<void()>& train) {
  const std::string full =
      reuse_base_ + "start state: " + state_hash(module) + "\nstrategy key: " + key + "\n";
  const std::string hash = hash_string(full);
  bool trained = false;
  if (dist_) {
    // Several ranks: each would look up the cache on its own and might decide otherwise
    // (another run may write the entry meanwhile), and the ranks' collectives must match; so
    // every rank trains, and nothing is cached.
    spdlog::info("[runner] the pre-training cache is not used by a run on {} processes",
                 dist_->world());
    train();
    trained = true;
  } else {
    fs::create_directories(reuse_dir_);
    const fs::path weights = reuse_dir_ / (hash + ".pt"), meta = reuse_dir_ / (hash + ".json");
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
        write_file_atomic(meta, out.dump());  // last: its presence marks a complete entry
      } catch (const std::exception& e) {     // the run itself is fine: only sharing is lost
        spdlog::warn("[runner] cannot save the pre-training for reuse in '{}': {}",
                     reuse_dir_.string(), e.what());
      }
      trained = true;
    }
  }
  metrics_.summary("source/pretrain_reused", trained ? 0.0 : 1.0);
  for (const auto& child : module.named_children()) {
    if (child.key() != "head") continue;
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const auto& p : child.value()->named_parameters())
      tensors.emplace_back(p.key(), p.value());
    source_classifier_ = transfer::linear_classifier(tensors, "", model_->backbone->feature_dim(),
                                                     &no_source_classifier_);
  }
  // The same random state afterwards whether this run trained or reused.
  const std::string reseed = reseed_base_ + "strategy key: " + key + "\n";
  torch::manual_seed(std::stoull(hash_string(reseed + std::to_string(ctx_.seed)), nullptr, 16));
  return trained;
}

}  // namespace tlab
