#pragma once
// One run on several processes (`[run] processes = N`, docs/performance.md "One run on several
// processes"): data-parallel training through LibTorch's c10d with Gloo. Rank 0 is the run's
// own process; it starts ranks 1..N-1 as its children (`tlab _rank`), which meet it through a
// c10d FileStore in the run folder. Every rank trains on its share of each global batch; the
// gradients are summed by all-reduce, weighted by the shares, so that N ranks take the steps
// one process would take with the same train.batch_size. Rank 0 alone evaluates and records.

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/types.h>

namespace tlab {

/// A collective failed or a rank is gone: what() names the rank and the reason.
class DistributedError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Whether this tlab was built with Gloo (libgloo-dev): processes > 1 needs it.
bool gloo_available();

/// How the ranks of one run meet.
struct DistributedOptions {
  int world = 1;                 ///< [run] processes
  std::string backend = "gloo";  ///< [run] backend: gloo (CPU); nccl needs a CUDA LibTorch
  std::chrono::milliseconds timeout{300000};  ///< [run] collective_timeout: no collective hangs
  std::filesystem::path store;                ///< the c10d FileStore (a file in the run folder)
  /// The ranks share one machine: Gloo over 127.0.0.1; else over this host's name (SLURM,
  /// several nodes).
  bool loopback = true;
};

/// This process's rank and the collectives of its run.
class Distributed {
 public:
  /// Rank 0: starts ranks 1..N-1 (`argv(rank)` is each one's command line; its output goes to
  /// `log_dir`/rank<r>.log) and connects with them. A rank that exits before connecting fails
  /// this at once, naming it and the last line of its log.
  static std::unique_ptr<Distributed> launch(
      const DistributedOptions& o, const std::function<std::vector<std::string>(int)>& argv,
      const std::filesystem::path& log_dir);
  /// Rank r > 0: connects with the others (started by rank 0).
  static std::unique_ptr<Distributed> join(const DistributedOptions& o, int rank);
  ~Distributed();  ///< rank 0: kills ranks still running (a failed run) and reaps them
  Distributed(const Distributed&) = delete;
  Distributed& operator=(const Distributed&) = delete;

  int rank() const { return rank_; }
  int world() const { return o_.world; }
  const std::string& backend() const { return o_.backend; }

  /// `tensors` take rank 0's values on every rank (in place).
  void broadcast(std::vector<torch::Tensor> tensors);
  /// Rank 0's `value` on every rank.
  bool agree(bool value);
  /// Sums `tensors` (float32, on the host) over the ranks, in place, asynchronously: wait()
  /// on the result before reading them. Collectives start in the order they are asked, and
  /// every rank must ask the same ones in the same order.
  std::function<void()> all_reduce_async(std::vector<torch::Tensor> tensors);
  /// Rank 0, at the end of a run that succeeded: waits for the other ranks to exit, and
  /// throws DistributedError when one did not exit 0.
  void finish();

 private:
  Distributed(DistributedOptions o, int rank) : o_(std::move(o)), rank_(rank) {}
  void connect();
  [[noreturn]] void failed(const char* what, const std::exception& e);
  /// Rank 0: why the other ranks ended ("" when all run), after waiting up to `grace`.
  std::string ranks_gone(std::chrono::milliseconds grace);

  DistributedOptions o_;
  int rank_ = 0;
  struct Group;  // the c10d process group (distributed.cpp)
  std::shared_ptr<Group> group_;
  struct Child {
    int rank;
    pid_t pid;
    std::filesystem::path log;
    bool reaped = false;
    int status = 0;
  };
  std::vector<Child> children_;
};

/// The gradients of one stage's parameters, summed over the ranks while the backward pass runs
/// (PyTorch DDP's Reducer, in small): the parameters in buckets of about `bucket_mb` (in the
/// reverse of their order, roughly the order the backward pass reaches them), a hook on each;
/// when every gradient of a bucket has arrived, weighted by this rank's share of the batch, the
/// bucket's all-reduce starts, in bucket order on every rank, overlapping the rest of the
/// backward pass. finish() starts the buckets left (parameters without a gradient this step),
/// waits, and writes the sums back as the gradients: the gradient of the global batch's mean
/// loss. A gradient undefined on every rank (a frozen or unused parameter) stays undefined.
class GradientReducer {
 public:
  /// 4 MB buckets: ResNet-18 on 2 ranks of 1 thread, the all-reduce left after the backward
  /// pass took 0.58-0.60 s per 32 steps with 1-4 MB buckets, 0.69 s with 8, 1.17-1.37 s with
  /// PyTorch DDP's 25 (docs/benchmarks.md, "One run on several processes").
  GradientReducer(Distributed& dist, const std::vector<torch::Tensor>& params,
                  double bucket_mb = 4);
  ~GradientReducer();  ///< removes the hooks
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  /// Before the backward pass of a step: this rank's share of the batch (examples here / in
  /// the batch; 0 for an empty share, which then runs no backward pass).
  void begin(double weight);
  /// After it: `loss` (this rank's mean loss, undefined for an empty share) becomes the batch's.
  void finish(torch::Tensor& loss);

 private:
  void arrived(std::size_t param, const torch::Tensor& grad);
  void start_ready();

  struct Bucket {
    torch::Tensor flat;               // float32, on the host
    std::vector<std::size_t> params;  // indices into params_
    std::size_t waiting = 0;          // gradients not yet arrived this step
    std::function<void()> wait;       // the running all-reduce; empty when not started
  };
  Distributed& dist_;
  std::vector<torch::Tensor> params_;
  std::vector<std::size_t> bucket_of_;  // per parameter
  std::vector<int64_t> offset_of_;      // per parameter, in its bucket
  std::vector<char> arrived_;
  std::vector<Bucket> buckets_;
  std::size_t next_ = 0;  // the next bucket to start
  std::vector<std::pair<torch::Tensor, unsigned>> hooks_;
  double weight_ = 1;
  bool active_ = false;
};

}  // namespace tlab
