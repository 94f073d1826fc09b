// bin/bench_evaluation: what counting every classification metric costs over the accuracy and
// loss an evaluation pass used to compute (docs/benchmarks.md, "Evaluation beyond accuracy").
//
// The peer is the pass as it was before issue 20: argmax == label summed and the summed
// cross-entropy, on the device, read once. tlab's pass (run/evaluation.hpp) adds the confusion
// matrix, the label's rank for top-k and the calibration bins, also on the device, also read
// once. Both run the same model on the same split in batches of 256, interleaved, several times;
// the median of each is printed.
//
//   bench_evaluation [examples=10000] [repeats=9] [threads=1]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/functional.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/utils.h>

#include "run/evaluation.hpp"
#include "run/runner.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// The pass before issue 20 (accuracy and mean loss), as the peer.
std::pair<double, double> accuracy_and_loss(
    torch::nn::Module& module, const std::function<torch::Tensor(const torch::Tensor&)>& f,
    const tlab::Split& split) {
  module.eval();
  torch::NoGradGuard no_grad;
  auto correct = torch::zeros({}, torch::kLong);
  auto loss = torch::zeros({}, torch::kDouble);
  const int64_t n = split.size(), bs = 256;
  for (int64_t i = 0; i < n; i += bs) {
    auto x = split.x.slice(0, i, std::min(n, i + bs));
    auto y = split.y.slice(0, i, std::min(n, i + bs));
    auto scores = f(x);
    correct += scores.argmax(1).eq(y).sum();
    loss += torch::nn::functional::cross_entropy(
                scores, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                .to(torch::kDouble);
  }
  return {static_cast<double>(correct.item<int64_t>()) / n, loss.item<double>() / n};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 10000;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 9;
  const int threads = argc > 3 ? std::atoi(argv[3]) : 1;
  tlab::configure_threads(threads);  // as a run sets them (OpenBLAS single-threaded inside)
  torch::manual_seed(0);
  tlab::Split split;
  split.x = torch::rand({n, 1, 28, 28});
  split.y = torch::randint(0, 10, {n}, torch::kLong);
  torch::nn::Sequential mlp(torch::nn::Flatten(), torch::nn::Linear(784, 64), torch::nn::ReLU(),
                            torch::nn::Linear(64, 10));
  torch::nn::Sequential cnn(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 16, 3).padding(1)),
                            torch::nn::ReLU(), torch::nn::MaxPool2d(2),
                            torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 3).padding(1)),
                            torch::nn::ReLU(), torch::nn::MaxPool2d(2), torch::nn::Flatten(),
                            torch::nn::Linear(32 * 7 * 7, 10));
  std::printf("examples %lld, threads %d, median of %d passes (ms)\n", static_cast<long long>(n),
              threads, repeats);
  std::printf("%-6s  %12s  %14s  %9s\n", "model", "acc + loss", "every metric", "overhead");
  for (auto& [name, net] : {std::pair<const char*, torch::nn::Sequential&>{"mlp", mlp},
                            std::pair<const char*, torch::nn::Sequential&>{"cnn", cnn}}) {
    auto forward = [&](const torch::Tensor& x) { return net->forward(x); };
    std::vector<double> peer, ours;
    for (int r = 0; r < repeats + 1; ++r) {
      auto t0 = Clock::now();
      const auto [acc, loss] = accuracy_and_loss(*net, forward, split);
      auto t1 = Clock::now();
      const auto e = tlab::evaluate_split(*net, forward, split, torch::kCPU, 10, {5}, 15);
      auto t2 = Clock::now();
      if (std::abs(e.accuracy() - acc) > 0 || std::abs(e.loss - loss) > 1e-5) {
        std::fprintf(stderr, "the passes disagree: acc %g vs %g, loss %g vs %g\n", e.accuracy(),
                     acc, e.loss, loss);
        return 1;
      }
      if (r == 0) continue;  // warm-up
      peer.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      ours.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
    }
    const double a = median(peer), b = median(ours);
    std::printf("%-6s  %12.1f  %14.1f  %8.1f%%\n", name, a, b, 100 * (b - a) / a);
  }
  return 0;
}
