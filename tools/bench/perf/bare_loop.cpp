// bench_bare_loop: the reference for tools/bench/perf/run.sh (issue 7, "Performance on CPU").
// The same training work as `tlab run` with strategy scratch, written against LibTorch alone:
// random tensors of the dataset's shapes, the backbone + linear_head model layer for layer as the
// plugins build it, Adam, and the runner's loop (RunSession::fit in framework/src/run/runner.cpp):
// per epoch randperm + index_select batches; per step zero_grad, forward, cross_entropy,
// backward, step; the loss summed on the device and read once per epoch.
//
// Usage: bench_bare_loop --workload mlp|cnn|resnet18 [--threads 2] [--epochs E] [--train N]
//                        [--test 256] [--batch B] [--lr 1e-3] [--seed 1] [--hidden 512,256]
//                        [--dim 784]
// Prints one JSON line: samples_per_second = train x epochs / train_seconds, where
// train_seconds covers the training loops only (no data generation, no evaluation).
#include <dlfcn.h>

#include <ATen/Parallel.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/init.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
namespace nn = torch::nn;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Every model maps a batch to 10 class scores; `features` + `fc` mirrors backbone + linear_head.
struct Net : nn::Module {
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};

// plugins/backbones/mlp: Linear + ReLU per hidden width, then linear_head.
struct Mlp : Net {
  Mlp(int64_t in, const std::vector<int64_t>& hidden, int64_t classes) {
    for (std::size_t i = 0; i < hidden.size(); ++i)
      layers.push_back(register_module("layer" + std::to_string(i),
                                       nn::Linear(i ? hidden[i - 1] : in, hidden[i])));
    fc = register_module("fc", nn::Linear(hidden.back(), classes));
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = x.flatten(1);
    for (auto& l : layers) x = torch::relu(l->forward(x));
    return fc->forward(x);
  }
  std::vector<nn::Linear> layers;
  nn::Linear fc{nullptr};
};

// plugins/backbones/cnn defaults: conv3x3(pad 1) -> batch norm -> ReLU -> max-pool 2, channels
// 16 and 32, then Linear(32*7*7, 64) + ReLU, then linear_head.
struct Cnn : Net {
  explicit Cnn(int64_t classes) {
    conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(1, 16, 3).padding(1)));
    bn1 = register_module("bn1", nn::BatchNorm2d(16));
    conv2 = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(16, 32, 3).padding(1)));
    bn2 = register_module("bn2", nn::BatchNorm2d(32));
    feat = register_module("feat", nn::Linear(32 * 7 * 7, 64));
    fc = register_module("fc", nn::Linear(64, classes));
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = torch::max_pool2d(torch::relu(bn1->forward(conv1->forward(x))), 2);
    x = torch::max_pool2d(torch::relu(bn2->forward(conv2->forward(x))), 2);
    x = torch::relu(feat->forward(x.flatten(1)));
    return fc->forward(x);
  }
  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  nn::Linear feat{nullptr}, fc{nullptr};
};

// torchvision's ResNet-18 (plugins/backbones/resnet, depth 18, classifier false) + linear_head.
nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).bias(false));
}

struct BasicBlock : nn::Module {
  BasicBlock(int64_t in, int64_t planes, int64_t stride)
      : conv1(register_module("conv1", conv(in, planes, 3, stride))),
        bn1(register_module("bn1", nn::BatchNorm2d(planes))),
        conv2(register_module("conv2", conv(planes, planes, 3, 1))),
        bn2(register_module("bn2", nn::BatchNorm2d(planes))) {
    if (stride != 1 || in != planes)
      downsample = register_module(
          "downsample", nn::Sequential(conv(in, planes, 1, stride), nn::BatchNorm2d(planes)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto out = torch::relu(bn1->forward(conv1->forward(x)));
    out = bn2->forward(conv2->forward(out));
    return torch::relu(out + (downsample.is_empty() ? x : downsample->forward(x)));
  }
  nn::Conv2d conv1;
  nn::BatchNorm2d bn1;
  nn::Conv2d conv2;
  nn::BatchNorm2d bn2;
  nn::Sequential downsample{nullptr};
};

struct ResNet18 : Net {
  explicit ResNet18(int64_t classes) {
    conv1 = register_module(
        "conv1", nn::Conv2d(nn::Conv2dOptions(3, 64, 7).stride(2).padding(3).bias(false)));
    bn1 = register_module("bn1", nn::BatchNorm2d(64));
    int64_t in = 64;
    for (int64_t stage = 0; stage < 4; ++stage) {
      const int64_t planes = int64_t{64} << stage;
      for (int64_t b = 0; b < 2; ++b) {
        auto block = std::make_shared<BasicBlock>(in, planes, (stage > 0 && b == 0) ? 2 : 1);
        blocks.push_back(
            register_module("layer" + std::to_string(stage + 1) + "_" + std::to_string(b), block));
        in = planes;
      }
    }
    fc = register_module("fc", nn::Linear(512, classes));
    for (auto& m : modules(/*include_self=*/false))
      if (auto* c = m->as<nn::Conv2dImpl>())
        nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = torch::relu(bn1->forward(conv1->forward(x)));
    x = torch::max_pool2d(x, 3, 2, 1);
    for (auto& b : blocks) x = b->forward(x);
    x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
    return fc->forward(x);
  }
  nn::Conv2d conv1{nullptr};
  nn::BatchNorm2d bn1{nullptr};
  std::vector<std::shared_ptr<BasicBlock>> blocks;
  nn::Linear fc{nullptr};
};

struct Args {
  std::string workload;
  int threads = 2;
  int64_t epochs = 0, train = 0, test = 256, batch = 0, seed = 1;
  double lr = 1e-3;
  std::vector<int64_t> hidden{512, 256};
  int64_t dim = 784;  // mlp inputs
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "bench_bare_loop: %s\nusage: bench_bare_loop --workload mlp|cnn|resnet18 "
               "[--threads N] [--epochs E] [--train N] [--test N] [--batch B] [--lr LR] "
               "[--seed S] [--hidden 512,256] [--dim 784]\n",
               why.c_str());
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "-h" || k == "--help") usage("help");
    if (i + 1 >= argc) usage("option " + k + " needs a value");
    std::string v = argv[++i];
    try {
      if (k == "--workload")
        a.workload = v;
      else if (k == "--threads")
        a.threads = std::stoi(v);
      else if (k == "--epochs")
        a.epochs = std::stoll(v);
      else if (k == "--train")
        a.train = std::stoll(v);
      else if (k == "--test")
        a.test = std::stoll(v);
      else if (k == "--batch")
        a.batch = std::stoll(v);
      else if (k == "--lr")
        a.lr = std::stod(v);
      else if (k == "--seed")
        a.seed = std::stoll(v);
      else if (k == "--dim")
        a.dim = std::stoll(v);
      else if (k == "--hidden") {
        a.hidden.clear();
        for (std::size_t p = 0; p < v.size();) {
          std::size_t q = v.find(',', p);
          a.hidden.push_back(std::stoll(v.substr(p, q - p)));
          p = q == std::string::npos ? v.size() : q + 1;
        }
      } else
        usage("unknown option " + k);
    } catch (const std::logic_error&) {
      usage("bad value '" + v + "' for " + k);
    }
  }
  // Defaults per workload: the sizes tools/bench/perf/run.sh uses.
  if (a.workload == "mlp") {
    if (!a.batch) a.batch = 128;
    if (!a.train) a.train = 20000;
    if (!a.epochs) a.epochs = 5;
  } else if (a.workload == "cnn") {
    if (!a.batch) a.batch = 64;
    if (!a.train) a.train = 10000;
    if (!a.epochs) a.epochs = 3;
  } else if (a.workload == "resnet18") {
    if (!a.batch) a.batch = 32;
    if (!a.train) a.train = 1024;
    if (!a.epochs) a.epochs = 2;
  } else {
    usage("unknown workload '" + a.workload + "'");
  }
  if (a.threads < 1 || a.epochs < 1 || a.train < 1 || a.batch < 1 || a.test < 0 || a.dim < 1 ||
      a.hidden.empty())
    usage("threads, epochs, train, batch, dim and hidden must be positive");
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  const auto process0 = Clock::now();
  const Args a = parse(argc, argv);
  // As tlab's configure_threads: intra-op threads, and OpenBLAS single-threaded inside them.
  at::set_num_threads(a.threads);
  if (auto set = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
    set(1);
  torch::manual_seed(a.seed);

  const int64_t classes = 10;
  std::vector<int64_t> shape;
  std::shared_ptr<Net> model;
  if (a.workload == "mlp") {
    shape = {a.dim};
    model = std::make_shared<Mlp>(a.dim, a.hidden, classes);
  } else if (a.workload == "cnn") {
    shape = {1, 28, 28};
    model = std::make_shared<Cnn>(classes);
  } else {
    shape = {3, 32, 32};
    model = std::make_shared<ResNet18>(classes);
  }
  // Random data of the datasets' shapes: the content does not change the speed.
  auto with_n = [&](int64_t n) {
    std::vector<int64_t> s{n};
    s.insert(s.end(), shape.begin(), shape.end());
    return s;
  };
  const auto data0 = Clock::now();
  torch::Tensor x = torch::randn(with_n(a.train)), y = torch::randint(classes, {a.train});
  torch::Tensor tx = torch::randn(with_n(a.test)), ty = torch::randint(classes, {a.test});
  const double data_seconds = seconds_since(data0);

  int64_t parameters = 0;
  for (const auto& p : model->parameters()) parameters += p.numel();
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(a.lr));
  const int64_t n = a.train, steps = (n + a.batch - 1) / a.batch;
  double train_seconds = 0, last_loss = 0;
  std::vector<double> epoch_seconds;
  const double setup_seconds = seconds_since(process0);
  for (int64_t epoch = 0; epoch < a.epochs; ++epoch) {
    model->train();
    auto perm = torch::randperm(n, torch::TensorOptions().dtype(torch::kLong));
    auto loss_sum = torch::zeros({});
    const auto t0 = Clock::now();  // as tlab's target/train/seconds: the steps + the loss read
    for (int64_t s = 0; s < steps; ++s) {
      auto idx = perm.slice(0, s * a.batch, std::min(n, (s + 1) * a.batch));
      auto bx = x.index_select(0, idx), by = y.index_select(0, idx);
      optimizer.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(model->forward(bx), by);
      loss.backward();
      optimizer.step();
      loss_sum += loss.detach();
    }
    last_loss = loss_sum.item<double>() / steps;
    epoch_seconds.push_back(seconds_since(t0));
    train_seconds += epoch_seconds.back();
  }

  // Evaluation once at the end (tlab evaluates after each epoch): outside the timed loop.
  const auto eval0 = Clock::now();
  int64_t correct = 0;
  {
    torch::NoGradGuard no_grad;
    model->eval();
    for (int64_t i = 0; i < a.test; i += 256) {
      auto scores = model->forward(tx.slice(0, i, std::min(a.test, i + 256)));
      correct +=
          scores.argmax(1).eq(ty.slice(0, i, std::min(a.test, i + 256))).sum().item<int64_t>();
    }
  }
  const double eval_seconds = seconds_since(eval0);
  std::string epochs_json;
  for (double e : epoch_seconds)
    epochs_json += (epochs_json.empty() ? "" : ", ") + std::to_string(e);
  std::printf(
      "{\"impl\": \"bare\", \"workload\": \"%s\", \"threads\": %d, \"intra_op_threads\": %d, "
      "\"parameters\": %lld, \"train\": %lld, \"epochs\": %lld, \"batch\": %lld, "
      "\"steps_per_epoch\": %lld, "
      "\"train_seconds\": %.6f, \"samples_per_second\": %.3f, \"data_seconds\": %.6f, "
      "\"setup_seconds\": %.6f, \"eval_seconds\": %.6f, \"last_epoch_loss\": %.6f, "
      "\"test_acc\": %.4f, \"epoch_seconds\": [%s], \"libtorch\": \"%s\"}\n",
      a.workload.c_str(), a.threads, at::get_num_threads(), static_cast<long long>(parameters),
      static_cast<long long>(a.train), static_cast<long long>(a.epochs),
      static_cast<long long>(a.batch), static_cast<long long>(steps), train_seconds,
      static_cast<double>(a.train * a.epochs) / train_seconds, data_seconds, setup_seconds,
      eval_seconds, last_loss, a.test ? static_cast<double>(correct) / a.test : 0.0,
      epochs_json.c_str(), TORCH_VERSION);
  return 0;
}
