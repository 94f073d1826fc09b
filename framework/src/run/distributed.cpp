#include "run/distributed.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <string_view>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#ifdef TLAB_HAVE_GLOO
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

#include "util.hpp"

namespace fs = std::filesystem;

namespace tlab {

bool gloo_available() {
#ifdef TLAB_HAVE_GLOO
  return true;
#else
  return false;
#endif
}

struct Distributed::Group {
#ifdef TLAB_HAVE_GLOO
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
#endif
};

namespace {

// The last non-empty line of a rank's log: usually its error.
std::string last_line(const fs::path& log) {
  std::ifstream in(log);
  std::string line, last;
  while (std::getline(in, line))
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
  return last;
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return fmt::format("was killed by signal {} ({})", sig, strsignal(sig));
  }
  return fmt::format("exited with status {}", WEXITSTATUS(status));
}

}  // namespace

std::unique_ptr<Distributed> Distributed::launch(
    const DistributedOptions& o, const std::function<std::vector<std::string>(int)>& argv,
    const fs::path& log_dir) {
  if (!gloo_available())
    throw DistributedError(
        "[run] processes > 1 needs Gloo, and this tlab was built without it; install "
        "libgloo-dev (tools/setup.sh does) and build again");
  std::unique_ptr<Distributed> d(new Distributed(o, 0));
  std::error_code ec;
  fs::remove(o.store, ec);  // a store left by an earlier attempt would mix two rendezvous
  if (fs::exists(o.store))
    throw DistributedError(
        fmt::format("the c10d store '{}' exists and cannot be removed: {}; "
                    "remove it or give the run another folder",
                    o.store.string(), ec.message()));
  fs::create_directories(log_dir);
  const pid_t parent = getpid();
  // The ranks' environment: this one's, less the sweep's progress pipe (rank 0 reports).
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e)
    if (std::string_view(*e).rfind("TLAB_PROGRESS_FD=", 0) != 0) env.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  for (int r = 1; r < o.world; ++r) {
    std::vector<std::string> args = argv(r);
    std::vector<char*> cargs;
    for (auto& a : args) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    const fs::path log = log_dir / fmt::format("rank{}.log", r);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      throw DistributedError(fmt::format("cannot create the log of rank {}, '{}': {}", r,
                                         log.string(), system_error_text(errno)));
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {                        // only async-signal-safe calls until exec
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // rank 0 dies: so do the others
      if (::getppid() != parent) ::_exit(1);
      if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      ::execve("/proc/self/exe", cargs.data(), envp.data());
      const char msg[] = "tlab: cannot execute the rank's process\n";
      [[maybe_unused]] auto n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
      ::_exit(127);
    }
    const int error = errno;
    ::close(fd);
    if (devnull >= 0) ::close(devnull);
    if (pid < 0)
      throw DistributedError(fmt::format("cannot start rank {} of {}: fork failed: {}", r, o.world,
                                         system_error_text(error)));
    d->children_.push_back({r, pid, log});
  }
  // Connect in a thread, watching the ranks meanwhile: one that dies before it connects would
  // otherwise keep rank 0 waiting for the whole timeout.
  struct Shared {
    std::mutex m;
    bool done = false;
    std::string error;
  };
  auto shared = std::make_shared<Shared>();
  Distributed* self = d.get();
  std::thread connecting([shared, self] {
    std::string error;
    try {
      self->connect();
    } catch (const std::exception& e) {
      error = e.what();
    }
    std::lock_guard<std::mutex> lock(shared->m);
    shared->done = true;
    shared->error = error;
  });
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(shared->m);
      if (shared->done) break;
    }
    const std::string gone = d->ranks_gone(std::chrono::milliseconds(0));
    if (!gone.empty()) {
      for (auto& c : d->children_)
        if (!c.reaped) {
          ::kill(c.pid, SIGKILL);
          ::waitpid(c.pid, &c.status, 0);
          c.reaped = true;
        }
      connecting.detach();  // blocked in the rendezvous: it ends with the process
      d.release();          // the thread still uses it
      throw DistributedError(fmt::format("{}, before the ranks connected", gone));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  connecting.join();
  if (!shared->error.empty()) {
    const std::string gone = d->ranks_gone(std::chrono::milliseconds(500));
    throw DistributedError(fmt::format("the {} ranks could not connect through '{}': {}{}", o.world,
                                       o.store.string(), shared->error,
                                       gone.empty() ? "" : "; " + gone));
  }
  return d;
}

std::unique_ptr<Distributed> Distributed::join(const DistributedOptions& o, int rank) {
  if (!gloo_available())
    throw DistributedError("this tlab was built without Gloo; install libgloo-dev and build again");
  std::unique_ptr<Distributed> d(new Distributed(o, rank));
  try {
    d->connect();
  } catch (const std::exception& e) {
    throw DistributedError(fmt::format("rank {} of {} could not connect through '{}': {}", rank,
                                       o.world, o.store.string(), e.what()));
  }
  return d;
}

void Distributed::connect() {
#ifdef TLAB_HAVE_GLOO
  std::error_code ec;
  fs::create_directories(o_.store.parent_path(), ec);  // srun's ranks may come before rank 0
  auto store = c10::make_intrusive<c10d::FileStore>(o_.store.string(), o_.world);
  store->setTimeout(o_.timeout);
  auto opts = c10d::ProcessGroupGloo::Options::create();
  opts->devices.push_back(o_.loopback ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                      : c10d::ProcessGroupGloo::createDefaultDevice());
  opts->timeout = o_.timeout;
  auto group = std::make_shared<Group>();
  group->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank_, o_.world, opts);
  group_ = std::move(group);
#endif
}

Distributed::~Distributed() {
  for (auto& c : children_) {
    if (c.reaped) continue;
    ::kill(c.pid, SIGKILL);
    ::waitpid(c.pid, &c.status, 0);
    c.reaped = true;
  }
}

std::string Distributed::ranks_gone(std::chrono::milliseconds grace) {
  const auto until = std::chrono::steady_clock::now() + grace;
  std::vector<std::string> gone;
  for (;;) {
    gone.clear();
    for (auto& c : children_) {
      if (!c.reaped && ::waitpid(c.pid, &c.status, WNOHANG) == c.pid) c.reaped = true;
      if (!c.reaped) continue;
      if (WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0) continue;
      // An exit status comes with the error the rank printed last; a signal with nothing.
      const std::string line = WIFEXITED(c.status) ? last_line(c.log) : "";
      gone.push_back(fmt::format("rank {} of {} {}{} (its log: {})", c.rank, o_.world,
                                 describe_exit(c.status), line.empty() ? "" : ": " + line,
                                 c.log.string()));
    }
    if (!gone.empty() || std::chrono::steady_clock::now() >= until) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return fmt::format("{}", fmt::join(gone, "; "));
}

void Distributed::failed(const char* what, const std::exception& e) {
  std::string why = e.what();
  if (const auto cut = why.find('\n'); cut != std::string::npos) why.resize(cut);
  if (rank_ == 0) {
    // A rank that died closes its connections: the collective fails at once, and the dead rank
    // is the news. Give it a moment to be reaped.
    const std::string gone = ranks_gone(std::chrono::milliseconds(2000));
    for (auto& c : children_)
      if (!c.reaped) ::kill(c.pid, SIGKILL);
    // Gloo says "Timed out waiting ..." where the wait expired, and "Application timeout
    // caused pair closure" on later operations of the pair that timed out.
    const bool timed_out =
        why.find("Timed out") != std::string::npos || why.find("timeout") != std::string::npos;
    throw DistributedError(
        fmt::format("{}; rank 0's {} failed: {}",
                    !gone.empty() ? gone
                    : timed_out   ? fmt::format("the other ranks did not answer within "
                                                  "run.collective_timeout = {:g} s (a rank hangs or is "
                                                  "stopped; they were killed)",
                                                o_.timeout.count() / 1000.0)
                                  : "a collective of the run's ranks failed",
                    what, why));
  }
  throw DistributedError(fmt::format("rank {} of {}: {} failed: {}", rank_, o_.world, what, why));
}

void Distributed::broadcast(std::vector<torch::Tensor> tensors) {
#ifdef TLAB_HAVE_GLOO
  if (tensors.empty()) return;
  torch::NoGradGuard no_grad;
  // One flat buffer per dtype: one collective, not one per tensor.
  std::map<c10::ScalarType, std::vector<torch::Tensor>> by_type;
  for (auto& t : tensors) by_type[t.scalar_type()].push_back(t);
  for (auto& [type, list] : by_type) {
    std::vector<torch::Tensor> flat = {torch::cat(
        [&] {
          std::vector<torch::Tensor> parts;
          for (auto& t : list) parts.push_back(t.detach().reshape({-1}).cpu());
          return parts;
        }(),
        0)};
    try {
      group_->pg->broadcast(flat)->wait();
    } catch (const std::exception& e) {
      failed("broadcast", e);
    }
    int64_t at = 0;
    for (auto& t : list) {
      const int64_t n = t.numel();
      t.copy_(flat[0].slice(0, at, at + n).view(t.sizes()));
      at += n;
    }
  }
#else
  (void)tensors;
#endif
}

bool Distributed::agree(bool value) {
  torch::Tensor flag = torch::full({1}, value ? 1 : 0, torch::kInt);
  broadcast({flag});
  return flag.item<int>() != 0;
}

std::function<void()> Distributed::all_reduce_async(std::vector<torch::Tensor> tensors) {
#ifdef TLAB_HAVE_GLOO
  try {
    auto work = group_->pg->allreduce(tensors);
    return [this, work] {
      try {
        work->wait();
      } catch (const std::exception& e) {
        failed("all-reduce of the gradients", e);
      }
    };
  } catch (const std::exception& e) {
    failed("all-reduce of the gradients", e);
  }
#else
  (void)tensors;
  return [] {};
#endif
}

GradientReducer::GradientReducer(Distributed& dist, const std::vector<torch::Tensor>& params,
                                 double bucket_mb)
    : dist_(dist), params_(params) {
  const int64_t cap = static_cast<int64_t>(bucket_mb * (1 << 20) / sizeof(float));
  bucket_of_.resize(params_.size());
  offset_of_.resize(params_.size());
  arrived_.assign(params_.size(), 0);
  int64_t size = 0;
  std::vector<std::size_t> members;
  auto close = [&] {
    if (members.empty()) return;
    Bucket b;
    b.flat = torch::zeros({size}, torch::kFloat);
    b.params = members;
    buckets_.push_back(std::move(b));
    members.clear();
    size = 0;
  };
  for (std::size_t k = params_.size(); k-- > 0;) {
    const int64_t n = params_[k].numel();
    if (size > 0 && size + n > cap) close();
    bucket_of_[k] = buckets_.size();
    offset_of_[k] = size;
    members.push_back(k);
    size += n;
  }
  close();
  for (std::size_t k = 0; k < params_.size(); ++k) {
    if (!params_[k].requires_grad()) continue;
    const unsigned id = params_[k].register_hook([this, k](torch::Tensor g) {
      if (active_) arrived(k, g);  // the gradient itself is unchanged
    });
    hooks_.emplace_back(params_[k], id);
  }
}

GradientReducer::~GradientReducer() {
  for (auto& [p, id] : hooks_) {
    try {
      p.remove_hook(id);
    } catch (...) {  // a destructor does not throw
    }
  }
}

void GradientReducer::begin(double weight) {
  weight_ = weight;
  std::fill(arrived_.begin(), arrived_.end(), 0);
  for (auto& b : buckets_) {
    b.waiting = b.params.size();
    b.wait = nullptr;
  }
  next_ = 0;
  active_ = true;
}

void GradientReducer::arrived(std::size_t k, const torch::Tensor& grad) {
  Bucket& b = buckets_[bucket_of_[k]];
  torch::NoGradGuard no_grad;
  torch::Tensor slice = b.flat.slice(0, offset_of_[k], offset_of_[k] + params_[k].numel());
  if (arrived_[k]) {
    // A second gradient for one parameter in one step (a loss that runs backward twice): its
    // bucket must not have started.
    if (b.wait)
      throw DistributedError(
          "a parameter got a second gradient in one step after its bucket's all-reduce started "
          "(the strategy's loss runs backward more than once per step), which a run on "
          "several processes cannot sum; run it on one process");
    slice.add_(grad.detach().reshape({-1}).to(torch::kCPU, torch::kFloat), weight_);
    return;
  }
  arrived_[k] = 1;
  slice.copy_(grad.detach().reshape({-1}));
  if (weight_ != 1) slice.mul_(weight_);
  if (--b.waiting == 0) start_ready();
}

void GradientReducer::start_ready() {
  // In bucket order on every rank: Gloo pairs the ranks' collectives by their order.
  while (next_ < buckets_.size() && buckets_[next_].waiting == 0) {
    buckets_[next_].wait = dist_.all_reduce_async({buckets_[next_].flat});
    ++next_;
  }
}

void GradientReducer::finish(torch::Tensor& loss) {
  active_ = false;
  torch::NoGradGuard no_grad;
  // The buckets left: parameters without a gradient this step add zeros.
  for (std::size_t k = 0; k < params_.size(); ++k)
    if (!arrived_[k]) {
      Bucket& b = buckets_[bucket_of_[k]];
      if (b.wait) continue;  // cannot happen: a started bucket had every gradient
      b.flat.slice(0, offset_of_[k], offset_of_[k] + params_[k].numel()).zero_();
      b.waiting = 0;
    }
  start_ready();
  // Which gradients exist on some rank, and the weighted loss: one small all-reduce last.
  std::vector<float> tail;
  tail.reserve(params_.size() + 1);
  for (char a : arrived_) tail.push_back(a ? 1.0f : 0.0f);
  tail.push_back(loss.defined() ? static_cast<float>(loss.detach().item<double>() * weight_) : 0);
  torch::Tensor flags = torch::tensor(tail, torch::kFloat);
  auto wait_flags = dist_.all_reduce_async({flags});
  for (auto& b : buckets_) b.wait();
  wait_flags();
  const float* any = flags.data_ptr<float>();
  for (std::size_t k = 0; k < params_.size(); ++k) {
    if (!(any[k] > 0)) continue;
    torch::Tensor& p = params_[k];
    const Bucket& b = buckets_[bucket_of_[k]];
    torch::Tensor g = b.flat.slice(0, offset_of_[k], offset_of_[k] + p.numel()).view(p.sizes());
    if (p.grad().defined())
      p.mutable_grad().copy_(g);
    else
      p.mutable_grad() = g.to(p.device(), p.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
  }
  const torch::Tensor mean_loss = torch::full({}, any[params_.size()], torch::kFloat);
  loss = loss.defined() ? mean_loss.to(loss.device(), loss.scalar_type()) : mean_loss;
}

void Distributed::finish() {
  if (rank_ != 0) return;
  const auto until = std::chrono::steady_clock::now() + o_.timeout;
  for (;;) {
    bool all = true;
    for (auto& c : children_) {
      if (!c.reaped && ::waitpid(c.pid, &c.status, WNOHANG) == c.pid) c.reaped = true;
      all = all && c.reaped;
    }
    if (all) break;
    if (std::chrono::steady_clock::now() >= until) {
      for (auto& c : children_)
        if (!c.reaped) ::kill(c.pid, SIGKILL);
      throw DistributedError(fmt::format(
          "the run's other ranks did not exit within the collective timeout ({} s) after "
          "training; they were killed",
          o_.timeout.count() / 1000));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const std::string gone = ranks_gone(std::chrono::milliseconds(0));
  if (!gone.empty()) throw DistributedError(gone);
}

}  // namespace tlab
