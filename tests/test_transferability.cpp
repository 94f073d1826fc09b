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
  EXPECT_THAT(bad.out, HasSubstr("--candidates: '1' is neither run:ID (a finished run, e.g. "
                                 "run:3, or run:UUID-PREFIX) nor a weights file (no such file)"));
  const auto shape =
      tlab::test::shell(tlab + "transferability " + exp.string() + " --candidates run:3" + db);
  EXPECT_EQ(shape.code, 2);
  EXPECT_THAT(shape.out, HasSubstr("candidate run:3 (digits) takes examples of shape 1x28x28 but "
                                   "the target 'gaussians' gives 16: its features do not fit"));
  const auto missing =
      // Not "run:9": a digit is also the start of a uuid, and one run in 16 has that one.
      tlab::test::shell(tlab + "transferability " + exp.string() + " --candidates run:9999999999" +
                        db);
  EXPECT_EQ(missing.code, 2);
  EXPECT_THAT(missing.out, HasSubstr("no run '9999999999' in '"));
  fs::remove_all(dir);
}

namespace {

// The value of the column `column` in the row starting with `first` of a text table.
double table_value(const std::string& table, const std::string& first, std::size_t column) {
  std::istringstream lines(table);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream cells(line);
    std::vector<std::string> row;
    for (std::string c; cells >> c;) row.push_back(c);
    if (!row.empty() && row[0] == first && column < row.size()) return std::stod(row[column]);
  }
  ADD_FAILURE() << "no row '" << first << "' in:\n" << table;
  return NAN;
}

std::string summaries_of(const fs::path& db, int64_t run) {
  return tlab::test::shell(
             fmt::format("sqlite3 {} \"SELECT name || '=' || printf('%.10g', value) "
                         "FROM summaries WHERE run_id = {} AND name LIKE "
                         "'transfer/%' AND name != 'transfer/seconds' ORDER BY name\"",
                         db.string(), run))
      .out;
}

fs::path run_dir_of(const fs::path& db, int64_t run) {
  const std::string out =
      tlab::test::shell(
          fmt::format("sqlite3 {} \"SELECT run_dir FROM runs WHERE id = {}\"", db.string(), run))
          .out;
  return out.substr(0, out.find('\n'));
}

const char* kTwoDomains = R"(name = "tf"
seed = 1
device = "cpu"
[source]
plugin = "gaussians"
train_size = 200
val_size = 20
test_size = 20
seed = 5
[target]
plugin = "gaussians"
train_size = 120
val_size = 20
test_size = 40
shots = 10
[backbone]
plugin = "mlp"
hidden = [8]
[[adapters]]
plugin = "linear_head"
[strategy]
plugin = "finetune"
[train]
epochs = 2
)";

}  // namespace

// [eval] transferability: a run scores its own starting point before training: after the source
// pre-training (LEEP and NCE through the pre-training's head), or the backbone's weights file
// (LEEP and NCE through the file's linear head) — the latter equal to what `tlab
// transferability` gives the same model as a candidate. Scoring changes nothing the run trains.
TEST(Transferability, ARunRecordsTheScoresOfItsStartingPoint) {
  const fs::path dir = tlab::test::temp_dir("transferability_run");
  const fs::path exp = tlab::test::write_file(dir / "exp.toml", kTwoDomains);
  const std::string tlab = TLAB_TEST_BIN_DIR + "/tlab --plugin-path " + TLAB_TEST_PLUGIN_DIR + " ";
  const fs::path db = dir / "results.db", plain = dir / "plain.db";
  ASSERT_EQ(tlab::test::shell(tlab + "run " + exp.string() + " +eval.transferability=true --db " +
                              db.string())
                .code,
            0);
  ASSERT_EQ(tlab::test::shell(tlab + "run " + exp.string() + " --db " + plain.string()).code, 0);
  const std::string scores = summaries_of(db, 1);
  for (const char* name :
       {"transfer/hscore=", "transfer/leep=", "transfer/logme=", "transfer/nce="})
    EXPECT_THAT(scores, HasSubstr(name));
  // The same training with and without scoring.
  auto acc = [&](const fs::path& d) {
    return tlab::test::shell(
               fmt::format("sqlite3 {} \"SELECT printf('%.17g', value) FROM summaries "
                           "WHERE run_id = 1 AND name = 'target/test/acc'\"",
                           d.string()))
        .out;
  };
  EXPECT_EQ(acc(db), acc(plain));
  EXPECT_THAT(tlab::test::shell(tlab + "results show 1 --db " + db.string()).out,
              HasSubstr("transferability = true"));

  // From run 1's model file: the runner's starting point is the candidate the command scores.
  ASSERT_EQ(
      tlab::test::shell(tlab + "run " + exp.string() +
                        " strategy.plugin=scratch +eval.transferability=true backbone.weights=run:1"
                        " --db " +
                        db.string())
          .code,
      0);
  const std::string from_file = summaries_of(db, 2);
  const auto cmd =
      tlab::test::shell(tlab + "transferability " + exp.string() +
                        " strategy.plugin=scratch --candidates run:1 --db " + db.string());
  ASSERT_EQ(cmd.code, 0) << cmd.out;
  std::size_t column = 2;
  for (const char* score : {"logme", "leep", "nce", "hscore"}) {
    const std::string key = fmt::format("transfer/{}=", score);
    const auto at = from_file.find(key);
    ASSERT_NE(at, std::string::npos) << from_file;
    EXPECT_NEAR(std::stod(from_file.substr(at + key.size())), table_value(cmd.out, "run:1", column),
                5e-5)
        << score;
    ++column;
  }
  // A weights file as the candidate: the same model, the same scores.
  const fs::path file = run_dir_of(db, 1) / "model.safetensors";
  const auto by_file = tlab::test::shell(tlab + "transferability " + exp.string() +
                                         " strategy.plugin=scratch --candidates " + file.string() +
                                         " --db " + db.string());
  ASSERT_EQ(by_file.code, 0) << by_file.out;
  EXPECT_EQ(table_value(by_file.out, "model.safetensors", 2), table_value(cmd.out, "run:1", 2));
  // A file for another network is refused, naming it.
  const auto misfit =
      tlab::test::shell(tlab + "transferability " + exp.string() +
                        " strategy.plugin=scratch backbone.hidden=[5] --candidates " +
                        file.string() + " --db " + db.string());
  EXPECT_EQ(misfit.code, 2);
  EXPECT_THAT(misfit.out, HasSubstr("candidate '" + file.string() +
                                    "' does not fit the mlp backbone of " + exp.string()));

  // From scratch: no source classifier, so no LEEP or NCE, and the log says why.
  ASSERT_EQ(
      tlab::test::shell(tlab + "run " + exp.string() +
                        " strategy.plugin=scratch +eval.transferability=true --db " + db.string())
          .code,
      0);
  EXPECT_EQ(summaries_of(db, 3).find("transfer/leep"), std::string::npos);
  EXPECT_THAT(summaries_of(db, 3), HasSubstr("transfer/logme="));
  std::ifstream log_file(run_dir_of(db, 3) / "output.log");
  const std::string log((std::istreambuf_iterator<char>(log_file)),
                        std::istreambuf_iterator<char>());
  EXPECT_THAT(log, HasSubstr("no LEEP or NCE: the strategy pre-trained no source classifier"));

  // "only": the starting point scored, the run finished before the target stage (no model), the
  // same scores as the run that went on to train; any other value is refused, located.
  const auto only = tlab::test::shell(tlab + "run " + exp.string() +
                                      " +eval.transferability=only --db " + db.string());
  ASSERT_EQ(only.code, 0) << only.out;
  EXPECT_EQ(summaries_of(db, 4), scores);
  EXPECT_EQ(tlab::test::shell("sqlite3 " + db.string() +
                              " \"SELECT status || ' ' || COUNT(s.name) FROM runs r LEFT JOIN "
                              "summaries s ON s.run_id = r.id AND s.name LIKE 'target/test/%' "
                              "WHERE r.id = 4\"")
                .out,
            "finished 0\n");
  const auto bad = tlab::test::shell(tlab + "run " + exp.string() +
                                     " +eval.transferability=sometimes --db " + db.string());
  EXPECT_EQ(bad.code, 2);
  EXPECT_THAT(bad.out, HasSubstr("'eval.transferability' must be true (score the starting point, "
                                 "then train), false, or \"only\""));

  // A target with too few labelled examples for a score: the run fails saying so.
  const auto few = tlab::test::shell(tlab + "run " + exp.string() +
                                     " +eval.transferability=true strategy.plugin=scratch "
                                     "target.train_size=1 target.shots=0 --db " +
                                     db.string());
  EXPECT_EQ(few.code, 1);
  EXPECT_THAT(few.out, HasSubstr("run 5 failed: eval.transferability: LogME: 1 labelled examples; "
                                 "it needs at least 2 (on the target's 1 labelled training "
                                 "examples)"));
  fs::remove_all(dir);
}

// tlab results transferability: the correlations of the recorded scores with the realised
// accuracy and the gain over scratch; the HTML report's scatter plots; no scored run is an error
// that says how to record scores.
TEST(Transferability, ResultsCorrelateScoresWithTheRealisedGain) {
  const fs::path dir = tlab::test::temp_dir("transferability_results");
  const fs::path exp = tlab::test::write_file(dir / "exp.toml", kTwoDomains);
  const std::string tlab = TLAB_TEST_BIN_DIR + "/tlab --plugin-path " + TLAB_TEST_PLUGIN_DIR + " ";
  const std::string db = " --db " + (dir / "results.db").string();
  const auto none =
      tlab::test::shell(tlab + "run " + exp.string() + db + " strategy.plugin=scratch");
  ASSERT_EQ(none.code, 0) << none.out;
  const auto empty = tlab::test::shell(tlab + "results transferability" + db);
  EXPECT_EQ(empty.code, 2);
  EXPECT_THAT(empty.out, HasSubstr("recorded transferability scores (summaries transfer/logme, "
                                   "...); run the transfer experiments with "
                                   "+eval.transferability=true"));
  const auto sweep = tlab::test::shell(tlab + "run " + exp.string() + db +
                                       " -m +eval.transferability=true "
                                       "strategy.source_epochs=1,4 source.seed=5,6 -j 2");
  ASSERT_EQ(sweep.code, 0) << sweep.out;
  const auto table = tlab::test::shell(tlab + "results transferability" + db);
  ASSERT_EQ(table.code, 0) << table.out;
  EXPECT_THAT(table.out, HasSubstr("score   runs"));
  EXPECT_EQ(table_value(table.out, "logme", 1), 4);  // the scratch run recorded no scores
  EXPECT_EQ(table_value(table.out, "logme", 6), 4);  // each paired with the scratch run
  const auto csv = tlab::test::shell(tlab + "results transferability --format csv" + db);
  EXPECT_THAT(csv.out, HasSubstr("score,runs,tau,p,r,p,pairs,tau gain,p,r gain,p,flag"));
  const auto report =
      tlab::test::shell(tlab + "results report -o " + (dir / "report.html").string() + db);
  ASSERT_EQ(report.code, 0) << report.out;
  std::ifstream in(dir / "report.html");
  const std::string html((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(html, HasSubstr("Transferability: scores before training against the realised gain"));
  EXPECT_THAT(html, HasSubstr("logme against the gain over scratch"));
  fs::remove_all(dir);
}
