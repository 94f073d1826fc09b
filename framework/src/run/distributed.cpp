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
    const bool timed_out = why.find("Timed out") != std::string::npos;
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

void Distributed::reduce_gradients(const std::vector<torch::Tensor>& params, double weight,
                                   torch::Tensor& loss) {
#ifdef TLAB_HAVE_GLOO
  torch::NoGradGuard no_grad;
  // [weighted gradients..., defined flags..., weighted loss], float32 on the host.
  std::vector<torch::Tensor> parts;
  parts.reserve(params.size() + 2);
  auto opts = torch::TensorOptions().dtype(torch::kFloat);
  for (const auto& p : params)
    parts.push_back(p.grad().defined()
                        ? (p.grad().detach().to(torch::kCPU, torch::kFloat) * weight).reshape({-1})
                        : torch::zeros({p.numel()}, opts));
  std::vector<float> defined;
  for (const auto& p : params) defined.push_back(p.grad().defined() ? 1.0f : 0.0f);
  parts.push_back(torch::tensor(defined, opts));
  parts.push_back(loss.defined()
                      ? (loss.detach().to(torch::kCPU, torch::kFloat) * weight).reshape({1})
                      : torch::zeros({1}, opts));
  std::vector<torch::Tensor> flat = {torch::cat(parts, 0)};
  try {
    group_->pg->allreduce(flat)->wait();
  } catch (const std::exception& e) {
    failed("all-reduce of the gradients", e);
  }
  const int64_t total = flat[0].numel();
  const torch::Tensor flag_part =
      flat[0].slice(0, total - 1 - static_cast<int64_t>(params.size()), total - 1).contiguous();
  const float* reduced_flags = flag_part.data_ptr<float>();
  int64_t at = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    const int64_t n = p.numel();
    if (reduced_flags[i] > 0) {
      torch::Tensor g =
          flat[0].slice(0, at, at + n).view(p.sizes()).to(p.device(), p.scalar_type());
      if (p.grad().defined())
        p.mutable_grad().copy_(g);
      else
        p.mutable_grad() = g.clone();
    }
    at += n;
  }
  const torch::Tensor mean_loss = flat[0].slice(0, total - 1, total).reshape({});
  loss = loss.defined() ? mean_loss.to(loss.device(), loss.scalar_type()) : mean_loss;
#else
  (void)params;
  (void)weight;
  (void)loss;
#endif
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
