// Transferability scores (transfer/scores.hpp) against an independent NumPy implementation of
// each paper, written here from the papers, on the same features, probabilities and labels.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>

#include <fmt/format.h>
#include <torch/torch.h>

#include "test_helpers.hpp"
#include "test_paths.hpp"
#include "transfer/scores.hpp"

using ::testing::HasSubstr;
namespace fs = std::filesystem;
namespace tr = tlab::transfer;

namespace {

// Written from the papers (see transfer/scores.hpp), sharing nothing with the C++ code.
const char* kNumpy = R"PY(
import sys
import numpy as np

d = sys.argv[1]
f = np.loadtxt(d + "/features.txt", ndmin=2)
y = np.loadtxt(d + "/labels.txt", dtype=np.int64)
theta = np.loadtxt(d + "/probs.txt", ndmin=2)
C = int(open(d + "/classes.txt").read())
N, D = f.shape

def logme(f, y):
    # You et al. 2021, Algorithm 1: evidence maximisation for each class's one-hot column.
    fT = f.T
    v, s, vh = np.linalg.svd(fT @ f, full_matrices=True)
    out = []
    for k in range(C):
        yk = (y == k).astype(np.float64)
        if yk.sum() == 0:
            continue
        eps, alpha, beta = 1e-5, 1.0, 1.0
        lam = alpha / beta
        tmp = vh @ (fT @ yk)
        for _ in range(11):
            gamma = np.sum(s / (s + lam))
            m = v @ (tmp * beta / (alpha + beta * s))
            a_de = np.sum(m * m)
            alpha = gamma / (a_de + eps)
            b_de = np.sum((yk - f @ m) ** 2)
            beta = (N - gamma) / (b_de + eps)
            new_lam = alpha / beta
            if abs(new_lam - lam) / lam < 0.01:
                break
            lam = new_lam
        ev = (D / 2 * np.log(alpha) + N / 2 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * s))
              - beta / 2 * (b_de + eps) - alpha / 2 * (a_de + eps) - N / 2 * np.log(2 * np.pi))
        out.append(ev / N)
    return np.mean(out)

def leep(theta, y):
    # Nguyen et al. 2020, eqs. (1)-(3).
    Z = theta.shape[1]
    joint = np.zeros((C, Z))
    for i in range(N):
        joint[y[i]] += theta[i] / N
    cond = joint / joint.sum(axis=0, keepdims=True)
    return np.mean([np.log(np.dot(cond[y[i]], theta[i])) for i in range(N)])

def nce(z, Z, y):
    # Tran et al. 2019: -H(Y|Z) from the empirical joint of (y, z).
    joint = np.zeros((C, Z))
    np.add.at(joint, (y, z), 1.0 / N)
    pz = joint.sum(axis=0)
    total = 0.0
    for a in range(C):
        for b in range(Z):
            if joint[a, b] > 0:
                total += joint[a, b] * np.log(joint[a, b] / pz[b])
    return total

def hscore(f, y):
    # Bao et al. 2019: tr(cov(f)^-1 cov(E[f|y])), pseudo-inverse for a singular cov(f).
    cov_f = np.cov(f, rowvar=False, bias=True)
    g = np.zeros_like(f)
    for k in np.unique(y):
        g[y == k] = f[y == k].mean(axis=0)
    cov_g = np.cov(g, rowvar=False, bias=True)
    return np.trace(np.linalg.pinv(cov_f, rcond=1e-15, hermitian=True) @ cov_g)

z = theta.argmax(axis=1)
print(repr(logme(f, y)), repr(leep(theta, y)), repr(nce(z, theta.shape[1], y)), repr(hscore(f, y)))
)PY";

void write_matrix(const fs::path& path, const torch::Tensor& t) {
  std::ofstream out(path);
  const torch::Tensor m = t.dim() == 1 ? t.unsqueeze(1) : t;
  for (int64_t i = 0; i < m.size(0); ++i) {
    for (int64_t j = 0; j < m.size(1); ++j)
      out << (j ? " " : "")
          << (m.scalar_type() == torch::kLong ? fmt::format("{}", m[i][j].item<int64_t>())
                                              : fmt::format("{:.17g}", m[i][j].item<double>()));
    out << "\n";
  }
}

struct Data {
  torch::Tensor features, labels, probs;
  int64_t classes;
};

// Features that carry the label (class means apart, plus noise), and a source model's
// probabilities that partly agree with the label.
Data make_data(int64_t n, int64_t d, int64_t classes, int64_t source_classes, uint64_t seed) {
  torch::manual_seed(seed);
  Data data;
  data.classes = classes;
  data.labels = torch::randint(classes, {n}, torch::kLong);
  const torch::Tensor means = torch::randn({classes, d}, torch::kDouble) * 2;
  data.features = means.index_select(0, data.labels) + torch::randn({n, d}, torch::kDouble);
  const torch::Tensor logits =
      torch::randn({n, source_classes}, torch::kDouble) +
      2.0 * torch::one_hot(data.labels % source_classes, source_classes).to(torch::kDouble);
  data.probs = torch::softmax(logits, 1);
  return data;
}

}  // namespace

TEST(Transferability, EveryScoreEqualsNumPysFromThePaper) {
  if (tlab::test::shell("/usr/bin/python3 -c 'import numpy'").code != 0)
    GTEST_SKIP() << "/usr/bin/python3 cannot import numpy (Debian: python3-numpy)";
  const fs::path dir = tlab::test::temp_dir("transferability");
  const fs::path script = tlab::test::write_file(dir / "scores.py", kNumpy);
  struct Shape {
    int64_t n, d, classes, source_classes;
  };
  // More features than examples too (LogME's F F^T is then singular, the pseudo-inverse H-score
  // too); a class absent from the labels.
  for (const Shape& shape : {Shape{300, 16, 4, 6}, Shape{40, 64, 3, 10}, Shape{120, 8, 5, 3}}) {
    Data data = make_data(shape.n, shape.d, shape.classes, shape.source_classes, 20261205);
    if (shape.classes == 5) data.labels.masked_fill_(data.labels == 4, 3);  // class 4 absent
    write_matrix(dir / "features.txt", data.features);
    write_matrix(dir / "labels.txt", data.labels);
    write_matrix(dir / "probs.txt", data.probs);
    std::ofstream(dir / "classes.txt") << data.classes;
    const auto py = tlab::test::shell("/usr/bin/python3 " + script.string() + " " + dir.string());
    ASSERT_EQ(py.code, 0) << py.out;
    std::istringstream in(py.out);
    double want[4];
    for (double& w : want) in >> w;
    const double got[4] = {
        tr::logme(data.features, data.labels, data.classes),
        tr::leep(data.probs, data.labels, data.classes),
        tr::nce(data.probs.argmax(1), shape.source_classes, data.labels, data.classes),
        tr::hscore(data.features, data.labels, data.classes)};
    const char* names[4] = {"LogME", "LEEP", "NCE", "H-score"};
    for (int i = 0; i < 4; ++i)
      EXPECT_NEAR(got[i], want[i], 1e-6 * std::max(1.0, std::abs(want[i])))
          << names[i] << " for " << shape.n << " x " << shape.d << ", " << shape.classes
          << " classes";
  }
  fs::remove_all(dir);
}

TEST(Transferability, ScoresRankInformativeFeaturesAboveNoise) {
  Data data = make_data(400, 16, 4, 6, 7);
  const torch::Tensor noise = torch::randn({400, 16}, torch::kDouble);
  EXPECT_GT(tr::logme(data.features, data.labels, 4), tr::logme(noise, data.labels, 4));
  EXPECT_GT(tr::hscore(data.features, data.labels, 4), tr::hscore(noise, data.labels, 4));
  const torch::Tensor uniform = torch::full({400, 6}, 1.0 / 6, torch::kDouble);
  EXPECT_GT(tr::leep(data.probs, data.labels, 4), tr::leep(uniform, data.labels, 4));
  EXPECT_GT(tr::nce(data.probs.argmax(1), 6, data.labels, 4),
            tr::nce(torch::zeros({400}, torch::kLong), 6, data.labels, 4));
}

TEST(Transferability, BadInputIsNamed) {
  Data data = make_data(50, 4, 3, 3, 1);
  auto error = [](auto f) { return tlab::test::error_of<tr::ScoreError>(f); };
  EXPECT_THAT(error([&] { tr::logme(data.features, torch::zeros({50}, torch::kLong), 3); }),
              HasSubstr("LogME: the labels hold one class only; a score compares at least two"));
  EXPECT_THAT(error([&] { tr::hscore(data.features, data.labels + 1, 3); }),
              HasSubstr("H-score: label 3 is outside [0, 3); the target has 3 classes"));
  EXPECT_THAT(error([&] { tr::logme(data.features, data.labels.slice(0, 0, 49), 3); }),
              HasSubstr("LogME: 49 labels for 50 examples; expected one label per example"));
  EXPECT_THAT(error([&] { tr::leep(data.probs * 2, data.labels, 3); }),
              HasSubstr("LEEP: the source model's outputs are not probabilities"));
  torch::Tensor nan = data.features.clone();
  nan[0][0] = NAN;
  EXPECT_THAT(error([&] { tr::hscore(nan, data.labels, 3); }),
              HasSubstr("H-score: the features hold inf or nan"));
  EXPECT_THAT(error([&] { tr::logme(torch::zeros({0}), torch::zeros({0}, torch::kLong), 3); }),
              HasSubstr("LogME: features with 1 dimension(s) and 0 values"));
  EXPECT_THAT(
      error([&] { tr::logme(data.features.slice(0, 0, 1), data.labels.slice(0, 0, 1), 3); }),
      HasSubstr("LogME: 1 labelled examples; it needs at least 2"));
}

// tlab transferability: two finished runs scored on an experiment's target, ranked by LogME;
// a candidate that is not run:ID, one that does not exist and one whose inputs do not fit the
// target are refused naming it.
TEST(Transferability, CommandRanksFinishedRunsOnTheTarget) {
  const fs::path dir = tlab::test::temp_dir("transferability_cli");
  const fs::path exp = tlab::test::write_file(dir / "exp.toml", R"(name = "tf"
seed = 1
device = "cpu"
[target]
plugin = "gaussians"
train_size = 120
val_size = 20
test_size = 20
shots = 10
[backbone]
plugin = "mlp"
hidden = [8]
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = 2
)");
  const fs::path other = tlab::test::write_file(dir / "other.toml", R"(name = "digits"
seed = 1
device = "cpu"
[target]
plugin = "digits"
train_size = 50
val_size = 10
test_size = 10
[backbone]
plugin = "mlp"
hidden = [8]
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "scratch"
[train]
epochs = 1
)");
  const std::string tlab = TLAB_TEST_BIN_DIR + "/tlab --plugin-path " + TLAB_TEST_PLUGIN_DIR + " ";
  const std::string db = " --db " + (dir / "results.db").string();
  ASSERT_EQ(tlab::test::shell(tlab + "run " + exp.string() + db + " -m seed=1,2").code, 0);
  ASSERT_EQ(tlab::test::shell(tlab + "run " + other.string() + db).code, 0);
  const auto out = tlab::test::shell(tlab + "transferability " + exp.string() +
                                     " --candidates run:1,run:2" + db);
  ASSERT_EQ(out.code, 0) << out.out;
  EXPECT_THAT(out.out, HasSubstr("Transferability to gaussians (40 labelled examples, 4 classes)"));
  EXPECT_THAT(out.out, HasSubstr("candidate  name    logme     leep      nce  hscore  seconds"));
  EXPECT_THAT(out.out, HasSubstr("run:1"));
  EXPECT_THAT(out.out, HasSubstr("run:2"));
  const auto bad =
      tlab::test::shell(tlab + "transferability " + exp.string() + " --candidates 1" + db);
  EXPECT_EQ(bad.code, 2);
  EXPECT_THAT(bad.out, HasSubstr("--candidates: '1' is not a candidate; write run:ID"));
  const auto shape =
      tlab::test::shell(tlab + "transferability " + exp.string() + " --candidates run:3" + db);
  EXPECT_EQ(shape.code, 2);
  EXPECT_THAT(shape.out, HasSubstr("candidate run:3 (digits) takes examples of shape 1x28x28 but "
                                   "the target 'gaussians' gives 16: its features do not fit"));
  const auto missing =
      tlab::test::shell(tlab + "transferability " + exp.string() + " --candidates run:9" + db);
  EXPECT_EQ(missing.code, 2);
  EXPECT_THAT(missing.out, HasSubstr("9"));
  fs::remove_all(dir);
}
