// The strategies multitask, distill and rkd: their losses (knowledge distillation, RKD-D, RKD-A)
// against independent PyTorch implementations written from the papers' formulas (loss values
// and the student's gradients), a distilled student matching its teacher's soft labels better
// than the same student trained without distillation, RKD making the student's feature relations
// the teacher's, multitask's source head training beside a target head with other classes, and
// every error message. The comparisons with Python need /usr/bin/python3 with torch; without it
// those tests are skipped.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../plugins/strategies/common/distillation.hpp"
#include "config/experiment.hpp"
#include "plugins/loader.hpp"
#include "run/model_io.hpp"
#include "run/runner.hpp"
#include "store/store.hpp"
#include "test_helpers.hpp"
#include "test_paths.hpp"
#include "weights/safetensors.hpp"

using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

namespace {

tlab::PluginLoader& loader() {
  static tlab::PluginLoader l({TLAB_TEST_PLUGIN_DIR});
  return l;
}

bool python_has(const std::string& modules) {
  return tlab::test::shell("/usr/bin/python3 -c 'import " + modules + "'").code == 0;
}

class NullLogger : public tlab::Logger {
 public:
  void debug(const std::string&) override {}
  void info(const std::string&) override {}
  void warn(const std::string&) override {}
};
class RecordingMetrics : public tlab::Metrics {
 public:
  void log(const std::string& name, double value, int64_t, int64_t) override {
    logged[name].push_back(value);
  }
  void summary(const std::string& name, double value) override { summaries[name] = value; }
  std::map<std::string, std::vector<double>> logged;
  std::map<std::string, double> summaries;
};

double rel_diff(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

// Relative difference of two tensors in the Euclidean norm.
double rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  auto bd = b.to(torch::kDouble);
  return (a.to(torch::kDouble) - bd).norm().item<double>() /
         std::max(bd.norm().item<double>(), 1e-30);
}

// ---------------------------------------------------------------------------------------------
// The losses against PyTorch

// Random float32 inputs; each loss and its gradient with respect to the student, in float64,
// computed from the papers' formulas with explicit sums over examples, pairs and triplets (not
// the vectorised code under test). Written to losses.safetensors.
const char* kReferenceLosses = R"PY(
import json, struct, sys, math
import torch
out = sys.argv[1]
g = torch.Generator().manual_seed(3)

def save(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        data = t.numpy().tobytes()
        header[name] = {"dtype": {torch.float32: "F32", torch.float64: "F64"}[t.dtype],
                        "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

def huber(x):  # smooth L1 with delta 1
    return 0.5 * x * x if abs(x.item()) < 1 else abs(x) - 0.5

# Hinton et al. 2015: T^2 * (1/N) sum_i sum_c p_ic (log p_ic - log q_ic), p = softmax(z_t/T),
# q = softmax(z_s/T).
def kd(zs, zt, T):
    total = 0
    for i in range(zs.shape[0]):
        et = [torch.exp(v / T) for v in zt[i]]
        es = [torch.exp(v / T) for v in zs[i]]
        st, ss = sum(et), sum(es)
        for c in range(zs.shape[1]):
            p, q = et[c] / st, es[c] / ss
            total = total + p * (torch.log(p) - torch.log(q))
    return T * T * total / zs.shape[0]

# Park et al. 2019, eq. 3-4: psi_D = ||e_i - e_j|| / mu, mu = mean over pairs i != j; Huber over
# the pairs, divided by N^2 (the authors' averaging over the N x N matrix).
def rkd_d(s, t):
    n = s.shape[0]
    def psi(e):
        d = {(i, j): torch.sqrt(((e[i] - e[j]) ** 2).sum()) for i in range(n) for j in range(n)
             if i != j}
        mu = sum(d.values()) / len(d)
        return {k: v / mu for k, v in d.items()}
    ps, pt = psi(s), psi(t)
    return sum(huber(ps[k] - pt[k]) for k in ps) / (n * n)

# Eq. 5-6: psi_A(i, j, k) = <e_ij, e_kj>, e_ij = (e_i - e_j)/||e_i - e_j||; Huber over the
# triplets with i != j and k != j, divided by N^3.
def rkd_a(s, t):
    n = s.shape[0]
    def unit(v):
        return v / torch.sqrt((v ** 2).sum())
    total = 0
    for j in range(n):
        us = [unit(s[i] - s[j]) if i != j else None for i in range(n)]
        ut = [unit(t[i] - t[j]) if i != j else None for i in range(n)]
        for i in range(n):
            for k in range(n):
                if i == j or k == j:
                    continue
                total = total + huber((us[i] * us[k]).sum() - (ut[i] * ut[k]).sum())
    return total / (n * n * n)

T = 3.0
zs = (2 * torch.randn(10, 5, generator=g)).float()
zt = (2 * torch.randn(10, 5, generator=g)).float()
fs = torch.randn(9, 7, generator=g).float()
ft = (3 * torch.randn(9, 11, generator=g)).float()
res = {"zs": zs, "zt": zt, "fs": fs, "ft": ft}
for name, fn, s, t in [("kd", lambda a, b: kd(a, b, T), zs, zt), ("rkd_d", rkd_d, fs, ft),
                       ("rkd_a", rkd_a, fs, ft)]:
    x = s.double().requires_grad_(True)
    loss = fn(x, t.double())
    loss.backward()
    res[name] = loss.detach().reshape(1)
    res[name + "_grad"] = x.grad
save(out + "/losses.safetensors", res)
)PY";

class DistillLosses : public ::testing::Test {
 protected:
  // Python runs once for the suite (importing torch takes most of its time).
  static void SetUpTestSuite() {
    python_ok_ = python_has("torch");
    if (!python_ok_) return;
    const fs::path dir = tlab::test::temp_dir("distill_losses");
    const auto script = tlab::test::write_file(dir / "ref.py", kReferenceLosses);
    const auto r = tlab::test::shell("/usr/bin/python3 " + script.string() + " " + dir.string());
    python_output_ = r.out;
    if (r.code == 0)
      for (auto& [name, t] : tlab::weights::read_safetensors(dir / "losses.safetensors"))
        ref_[name] = t;
    fs::remove_all(dir);
  }
  void SetUp() override {
    if (!python_ok_)
      GTEST_SKIP() << "/usr/bin/python3 cannot import torch: install the Debian package "
                      "python3-torch; tools/setup.sh installs it";
    ASSERT_FALSE(ref_.empty()) << "the reference script failed:\n" << python_output_;
  }
  // Compares `loss(student, teacher)` (float32, as in training) and its gradient with Python's.
  template <class F>
  void check(const std::string& name, const std::string& s, const std::string& t, F loss) {
    auto x = ref_.at(s).clone().requires_grad_(true);
    torch::Tensor value = loss(x, ref_.at(t));
    value.backward();
    const double expected = ref_.at(name).item<double>();
    std::printf("%s: C++ %.9g, PyTorch %.9g, rel diff %.2g, gradient rel diff %.2g\n", name.c_str(),
                value.item<double>(), expected, rel_diff(value.item<double>(), expected),
                rel_diff(x.grad(), ref_.at(name + "_grad")));
    EXPECT_GT(expected, 1e-3) << name << ": the inputs should not make the loss trivial";
    EXPECT_LE(rel_diff(value.item<double>(), expected), 1e-5) << name;
    EXPECT_LE(rel_diff(x.grad(), ref_.at(name + "_grad")), 1e-4) << name;
  }
  static inline std::map<std::string, torch::Tensor> ref_;
  static inline std::string python_output_;
  static inline bool python_ok_ = false;
};

TEST_F(DistillLosses, KnowledgeDistillationMatchesPyTorch) {
  check("kd", "zs", "zt", [](const torch::Tensor& s, const torch::Tensor& t) {
    return tlab_strategy::kd_loss(s, t, 3.0);
  });
}

TEST_F(DistillLosses, RkdDistanceMatchesPyTorch) {
  check("rkd_d", "fs", "ft", tlab_strategy::rkd_distance_loss);
}

TEST_F(DistillLosses, RkdAngleMatchesPyTorch) {
  check("rkd_a", "fs", "ft", tlab_strategy::rkd_angle_loss);
}

TEST(DistillLossProperties, ZeroForIdenticalInputsAndScaleInvariantRelations) {
  torch::manual_seed(0);
  auto z = torch::randn({6, 4});
  EXPECT_NEAR(tlab_strategy::kd_loss(z, z, 2.0).item<double>(), 0.0, 1e-6);
  auto f = torch::randn({8, 5});
  // Relations are invariant to scaling (distances are normalised by their mean, angles are
  // angles) and to translation; the teacher may be wider (an orthogonal embedding in 9 dims).
  auto q = std::get<0>(torch::linalg_qr(torch::randn({9, 9})));
  auto t = (3 * f + 1).mm(q.slice(0, 0, 5));
  EXPECT_NEAR(tlab_strategy::rkd_distance_loss(f, t).item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(tlab_strategy::rkd_angle_loss(f, t).item<double>(), 0.0, 1e-6);
  EXPECT_GT(tlab_strategy::rkd_distance_loss(f, torch::randn({8, 5})).item<double>(), 1e-3);
  // Too few examples for a relation: zero, with a gradient path.
  auto one = torch::randn({1, 3}, torch::requires_grad());
  EXPECT_EQ(tlab_strategy::rkd_distance_loss(one, one).item<double>(), 0.0);
  EXPECT_EQ(
      tlab_strategy::rkd_angle_loss(torch::randn({2, 3}), torch::randn({2, 3})).item<double>(),
      0.0);
  // Coinciding rows give finite gradients.
  auto dup = torch::cat({f.slice(0, 0, 1), f}).requires_grad_(true);
  (tlab_strategy::rkd_distance_loss(dup, torch::randn({9, 3})) +
   tlab_strategy::rkd_angle_loss(dup, torch::randn({9, 3})))
      .backward();
  EXPECT_TRUE(torch::isfinite(dup.grad()).all().item<bool>());
}

// ---------------------------------------------------------------------------------------------
// Runs through the real runner

// Gaussian classes (16 dimensions, 4 classes). The teacher is a wide MLP trained on all 400
// training labels; students keep 5 labels per class, the rest is their unlabelled pool.
const std::string kTeacher = R"(name = "teacher"
seed = 7
device = "cpu"

[target]
plugin = "gaussians"
domain = "target"
train_size = 400
val_size = 100
test_size = 400
noise = 1.5

[backbone]
plugin = "mlp"
hidden = [64]

[[adapters]]
plugin = "linear_head"

[strategy]
plugin = "scratch"

[train]
epochs = 20
batch_size = 32
lr = 0.01
)";

const std::string kStudent = R"(name = "student"
seed = 7
device = "cpu"

[target]
plugin = "gaussians"
domain = "target"
train_size = 400
val_size = 100
test_size = 400
noise = 1.5
shots = 5

[backbone]
plugin = "mlp"
hidden = [16]

[[adapters]]
plugin = "linear_head"

[strategy]
plugin = "scratch"

[train]
epochs = 30
batch_size = 16
lr = 0.01
)";

// Multitask: the source has 6 classes, the target 3.
const std::string kMultitask = R"(name = "multitask"
seed = 7
device = "cpu"

[source]
plugin = "gaussians"
domain = "source"
num_classes = 6
train_size = 300
val_size = 60
test_size = 300

[target]
plugin = "gaussians"
domain = "target"
num_classes = 3
train_size = 300
val_size = 60
test_size = 300
shots = 5

[backbone]
plugin = "mlp"
hidden = [32]

[[adapters]]
plugin = "linear_head"

[strategy]
plugin = "multitask"

[train]
epochs = 15
batch_size = 16
lr = 0.01
)";

class DistillRuns : public ::testing::Test {
 protected:
  fs::path dir_ = tlab::test::temp_dir("distill_runs");
  tlab::PluginLoader loader_{{TLAB_TEST_PLUGIN_DIR, TLAB_TEST_FIXTURE_DIR}};
  std::unique_ptr<tlab::Store> store_ = std::make_unique<tlab::Store>(dir_ / "results.db");
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }

  std::vector<tlab::RunSpec> specs(const std::string& text, std::vector<std::string> ov = {}) {
    return tlab::load_experiment(tlab::test::write_file(dir_ / "exp.toml", text), ov, loader_);
  }
  tlab::RunOutcome run(const std::string& text, std::vector<std::string> ov = {}) {
    tlab::RunOptions o;
    o.results_dir = dir_;
    return tlab::execute_run(specs(text, std::move(ov))[0], loader_, *store_, o);
  }
  // A finished run's model, rebuilt as Session::load_model does.
  std::shared_ptr<tlab::Model> model_of(int64_t id) {
    tlab::Context ctx;
    ctx.log = &log_;
    return tlab::load_run_model(store_->run(id).run_dir, "run:" + std::to_string(id), loader_, ctx,
                                {16});
  }
  // The students' target test inputs (the gaussians dataset is deterministic for its options).
  torch::Tensor test_inputs() {
    tlab::Context ctx;
    ctx.log = &log_;
    tlab::Params p{{"domain", std::string("target")},
                   {"train_size", int64_t{400}},
                   {"val_size", int64_t{100}},
                   {"test_size", int64_t{400}},
                   {"noise", 1.5}};
    return loader_.create<tlab::Dataset>("gaussians", p)->load(ctx).test.x;
  }
  std::string teacher() {
    if (teacher_id_ == 0) {
      auto t = run(kTeacher);
      EXPECT_EQ(t.status, tlab::RunStatus::kFinished) << t.reason;
      EXPECT_GT(t.summary.at("target/test/acc"), 0.7);
      teacher_id_ = t.id;
      teacher_acc_ = t.summary.at("target/test/acc");
    }
    return "\"run:" + std::to_string(teacher_id_) + "\"";
  }
  NullLogger log_;
  int64_t teacher_id_ = 0;
  double teacher_acc_ = 0;
};

// KL(teacher || student) at T = 1 on x, mean over examples.
double kl_to_teacher(tlab::Model& teacher, tlab::Model& student, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  return tlab_strategy::kd_loss(student.forward(x), teacher.forward(x), 1.0).item<double>();
}

TEST_F(DistillRuns, ADistilledStudentMatchesTheTeachersSoftLabelsBetter) {
  const std::string t = teacher();
  auto scratch = run(kStudent);
  auto distill = run(kStudent, {"strategy={plugin=\"distill\"}", "++strategy.teacher=" + t});
  auto labelled = run(kStudent, {"strategy={plugin=\"distill\"}", "++strategy.teacher=" + t,
                                 "++strategy.unlabeled=false"});
  for (const auto* r : {&scratch, &distill, &labelled})
    ASSERT_EQ(r->status, tlab::RunStatus::kFinished) << r->reason;
  auto teacher_model = model_of(teacher_id_);
  const auto x = test_inputs();
  const double kl_scratch = kl_to_teacher(*teacher_model, *model_of(scratch.id), x);
  const double kl_distill = kl_to_teacher(*teacher_model, *model_of(distill.id), x);
  const double kl_labelled = kl_to_teacher(*teacher_model, *model_of(labelled.id), x);
  std::printf(
      "KL(teacher || student) on target test: scratch %.4f, distill %.4f (labelled batches only "
      "%.4f); test acc scratch %.3f, distill %.3f, teacher %.3f\n",
      kl_scratch, kl_distill, kl_labelled, scratch.summary.at("target/test/acc"),
      distill.summary.at("target/test/acc"), teacher_acc_);
  EXPECT_LT(kl_distill, 0.5 * kl_scratch);
  EXPECT_LT(kl_labelled, kl_scratch);
  EXPECT_LT(kl_distill, kl_labelled);  // distilling on the unlabelled pool helps most
  // The strategy's own summary measures the same quantity.
  EXPECT_NEAR(distill.summary.at("target/test/teacher_kl"), kl_distill, 1e-4);
  // The KD term is logged per epoch and falls.
  const auto kd = store_->metrics(distill.id, "target/train/kd");
  ASSERT_EQ(kd.size(), 30u);
  EXPECT_LT(kd.back().value, 0.5 * kd.front().value);
  EXPECT_EQ(store_->metrics(distill.id, "target/train/ce").size(), 30u);
}

TEST_F(DistillRuns, RkdMakesTheStudentsFeatureRelationsTheTeachers) {
  const std::string t = teacher();
  auto scratch = run(kStudent);
  auto rkd = run(kStudent, {"strategy={plugin=\"rkd\"}", "++strategy.teacher=" + t});
  for (const auto* r : {&scratch, &rkd})
    ASSERT_EQ(r->status, tlab::RunStatus::kFinished) << r->reason;
  auto teacher_model = model_of(teacher_id_);
  const auto x = test_inputs().slice(0, 0, 100);
  torch::NoGradGuard no_grad;
  const auto ft = teacher_model->features(x);
  auto relations = [&](int64_t id) {
    const auto fs = model_of(id)->features(x);
    return std::pair{tlab_strategy::rkd_distance_loss(fs, ft).item<double>(),
                     tlab_strategy::rkd_angle_loss(fs, ft).item<double>()};
  };
  const auto [d_scratch, a_scratch] = relations(scratch.id);
  const auto [d_rkd, a_rkd] = relations(rkd.id);
  std::printf(
      "on target test (teacher 64 wide, student 16): RKD-D scratch %.4f, rkd %.4f; "
      "RKD-A scratch %.4f, rkd %.4f; test acc scratch %.3f, rkd %.3f\n",
      d_scratch, d_rkd, a_scratch, a_rkd, scratch.summary.at("target/test/acc"),
      rkd.summary.at("target/test/acc"));
  EXPECT_LT(d_rkd, 0.7 * d_scratch);
  EXPECT_LT(a_rkd, 0.7 * a_scratch);
  for (const char* m : {"target/train/rkd_distance", "target/train/rkd_angle", "target/train/ce"})
    EXPECT_EQ(store_->metrics(rkd.id, m).size(), 30u) << m;
}

TEST_F(DistillRuns, MultitaskTrainsASourceHeadWithOtherClassesBesideTheTargetHead) {
  auto mt = run(kMultitask);
  ASSERT_EQ(mt.status, tlab::RunStatus::kFinished) << mt.reason;
  std::printf("multitask: source (6 classes) test acc %.3f, target (3 classes) test acc %.3f\n",
              mt.summary.at("source/test/acc"), mt.summary.at("target/test/acc"));
  EXPECT_GT(mt.summary.at("source/test/acc"), 0.6);
  EXPECT_GT(mt.summary.at("target/test/acc"), 0.6);
  const auto acc = store_->metrics(mt.id, "source/train/acc");
  ASSERT_EQ(acc.size(), 15u);
  EXPECT_GT(acc.back().value, acc.front().value + 0.2);
  EXPECT_EQ(store_->metrics(mt.id, "source/train/loss").size(), 15u);
  // The source head (6 x width + 6) trains outside the model: counted apart by the runner.
  EXPECT_LE(mt.summary.at("model/params/trainable"), mt.summary.at("model/params/total"));
  EXPECT_GT(mt.summary.at("strategy/params/trainable"), 0);
  // The saved model is the target classifier: 3 classes, no source head.
  tlab::Context ctx;
  ctx.log = &log_;
  auto model = tlab::load_run_model(store_->run(mt.id).run_dir, "run", loader_, ctx, {16});
  EXPECT_EQ(model->out_dim(), 3);
  for (const auto& p : model->named_parameters()) EXPECT_THAT(p.key(), Not(HasSubstr("source")));
  // A warm-up on the source first: logged by the runner as a source stage.
  auto warm = run(kMultitask, {"++strategy.source_epochs=2"});
  ASSERT_EQ(warm.status, tlab::RunStatus::kFinished) << warm.reason;
  EXPECT_EQ(store_->metrics(warm.id, "source/val/acc").size(), 2u);
  EXPECT_EQ(store_->metrics(warm.id, "source/train/acc").size(), 15u);
}

// The teacher's errors: unknown, unfinished, other classes, other input shape, missing folder.
TEST_F(DistillRuns, TeacherErrorsSayWhatIsWrongAndHowToFixIt) {
  auto unknown = run(kStudent, {"strategy={plugin=\"distill\"}", "++strategy.teacher=\"run:999\""});
  EXPECT_EQ(unknown.status, tlab::RunStatus::kFailed);
  EXPECT_THAT(unknown.reason, HasSubstr("distill: cannot load the teacher \"run:999\" (option "
                                        "teacher)"));
  EXPECT_THAT(unknown.reason, HasSubstr("there is no run 999 in this results database"));
  const std::string failed = "\"run:" + std::to_string(unknown.id) + "\"";
  auto unfinished = run(kStudent, {"strategy={plugin=\"rkd\"}", "++strategy.teacher=" + failed});
  EXPECT_THAT(unfinished.reason, HasSubstr("rkd: cannot load the teacher"));
  EXPECT_THAT(unfinished.reason,
              HasSubstr("run " + std::to_string(unknown.id) + " is failed, not finished"));
  auto three = run(kTeacher, {"target.num_classes=3", "train.epochs=1"});
  ASSERT_EQ(three.status, tlab::RunStatus::kFinished) << three.reason;
  auto classes = run(kStudent, {"strategy={plugin=\"distill\"}",
                                "++strategy.teacher=\"run:" + std::to_string(three.id) + "\""});
  EXPECT_THAT(classes.reason, HasSubstr("predicts 3 classes but the target has 4"));
  // RKD compares features only: a teacher with other classes is fine.
  auto rkd = run(kStudent, {"strategy={plugin=\"rkd\"}", "train.epochs=1",
                            "++strategy.teacher=\"run:" + std::to_string(three.id) + "\""});
  EXPECT_EQ(rkd.status, tlab::RunStatus::kFinished) << rkd.reason;
  auto shape = run(kStudent, {"strategy={plugin=\"distill\"}", "target.dim=8",
                              "++strategy.teacher=\"run:" + std::to_string(three.id) + "\""});
  EXPECT_THAT(shape.reason, HasSubstr("takes examples of shape 16 but this run's are 8"));
  auto folder = run(kStudent, {"strategy={plugin=\"rkd\"}", "++strategy.teacher=\"no/such/run\""});
  EXPECT_THAT(folder.reason, HasSubstr("no such run folder"));
  // A run folder works like run:<id>.
  auto by_path = run(kStudent, {"strategy={plugin=\"distill\"}", "train.epochs=1",
                                "++strategy.teacher=\"" + store_->run(three.id).run_dir + "\"",
                                "target.num_classes=3"});
  EXPECT_EQ(by_path.status, tlab::RunStatus::kFinished) << by_path.reason;
}

TEST_F(DistillRuns, OptionAndDataErrors) {
  auto none = run(kStudent, {"strategy={plugin=\"distill\"}"});
  EXPECT_THAT(none.reason, HasSubstr("distill: no teacher: set teacher = \"run:<id>\""));
  auto rkd_none = run(kStudent, {"strategy={plugin=\"rkd\"}"});
  EXPECT_THAT(rkd_none.reason, HasSubstr("rkd: no teacher"));
  auto zero = run(kStudent, {"strategy={plugin=\"rkd\"}", "++strategy.teacher=\"run:1\"",
                             "++strategy.distance_weight=0", "++strategy.angle_weight=0",
                             "++strategy.ce_weight=0"});
  EXPECT_THAT(zero.reason, HasSubstr("distance_weight, angle_weight and ce_weight are all 0"));
  auto alpha = tlab::test::error_of<std::exception>([&] {
    specs(kStudent, {"strategy={plugin=\"distill\"}", "++strategy.alpha=1.5"});
  });
  EXPECT_THAT(alpha, HasSubstr("alpha"));
  EXPECT_THAT(alpha, HasSubstr("1.5"));
  auto temp = tlab::test::error_of<std::exception>([&] {
    specs(kStudent, {"strategy={plugin=\"distill\"}", "++strategy.temperature=0"});
  });
  EXPECT_THAT(temp, HasSubstr("temperature"));
  // unlabeled = true needs an unlabelled pool (all training examples are labelled here).
  auto no_pool = run(kTeacher, {"strategy={plugin=\"distill\"}", "++strategy.teacher=\"run:1\""});
  EXPECT_THAT(no_pool.reason, HasSubstr("distill adapts to unlabelled target "
                                        "inputs, but the target has none"));
  // multitask needs a source and a target weight.
  auto no_source = run(kStudent, {"strategy={plugin=\"multitask\"}"});
  EXPECT_THAT(no_source.reason, HasSubstr("multitask trains on a labelled source domain"));
  auto weight = run(kMultitask, {"++strategy.target_weight=0"});
  EXPECT_THAT(weight.reason, HasSubstr("multitask: target_weight is 0"));
}

// ---------------------------------------------------------------------------------------------
// multitask's hooks on a minimal session: the source head is an optimiser group of its own, gets
// gradients and changes, and stays out of the model.

class MinimalSession : public tlab::Session {
 public:
  MinimalSession() {
    ctx_.log = &log_;
    ctx_.metrics = &metrics;
    torch::manual_seed(0);
    source_.num_classes = 6;
    source_.train = {torch::randn({40, 5}), torch::randint(0, 6, {40})};
    target_.num_classes = 3;
    target_.train = {torch::randn({12, 5}), torch::randint(0, 3, {12})};
    model_ = std::make_shared<tlab::Model>(
        loader()
            .create<tlab::Backbone>("mlp", {{"hidden", std::vector<int64_t>{8}}})
            ->build({5}, ctx_));
    config_.batch_size = 8;
    config_.epochs = 2;
  }
  tlab::Context& context() override { return ctx_; }
  tlab::Model& model() override { return *model_; }
  const tlab::DomainData* source() const override { return &source_; }
  const tlab::DomainData& target() const override { return target_; }
  const tlab::TrainConfig& train_config() const override { return config_; }
  int64_t step() const override { return 0; }
  void fit(const tlab::Stage&) override {}
  const tlab::Stage& stage() const override { throw std::logic_error("no stage is being fit"); }
  tlab::Evaluation evaluate(torch::nn::Module&,
                            const std::function<torch::Tensor(const torch::Tensor&)>&,
                            const tlab::Split&) override {
    return {};
  }
  bool reuse(const std::string&, torch::nn::Module&, const std::function<void()>& f) override {
    f();
    return true;
  }
  std::shared_ptr<tlab::Model> load_model(const std::string&) override { return nullptr; }

  RecordingMetrics metrics;

 private:
  NullLogger log_;
  tlab::Context ctx_;
  std::shared_ptr<tlab::Model> model_;
  tlab::DomainData source_, target_;
  tlab::TrainConfig config_;
};

TEST(MultitaskHooks, TheSourceHeadTrainsAsItsOwnGroupOutsideTheModel) {
  MinimalSession s;
  auto strategy = loader().create<tlab::Strategy>("multitask", {{"source_weight", 0.5}});
  strategy->prepare(s);
  auto& model = s.model();
  model.add_head(torch::nn::Linear(model.out_dim(), 3), 3);  // what linear_head does
  strategy->setup(s);
  auto groups = strategy->parameter_groups(s);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].name, "model");
  EXPECT_EQ(groups[0].parameters.size(), model.parameters().size());
  ASSERT_EQ(groups[1].name, "source_head");
  ASSERT_EQ(groups[1].parameters.size(), 2u);
  const auto source_weight = groups[1].parameters[0];
  EXPECT_EQ(source_weight.sizes(), (std::vector<int64_t>{6, 8}));  // 6 source classes
  for (const auto& p : model.parameters())
    EXPECT_NE(p.unsafeGetTensorImpl(), source_weight.unsafeGetTensorImpl());
  const auto before = source_weight.detach().clone();
  std::vector<torch::Tensor> all;
  for (const auto& g : groups) all.insert(all.end(), g.parameters.begin(), g.parameters.end());
  torch::optim::SGD opt(all, torch::optim::SGDOptions(0.1));
  strategy->on_epoch_start(s, 0);
  for (int step = 0; step < 3; ++step) {
    opt.zero_grad();
    const auto& t = s.target().train;
    auto loss = strategy->loss(s, {t.x.slice(0, 0, 8), t.y.slice(0, 0, 8)});
    loss.backward();
    ASSERT_TRUE(source_weight.grad().defined());
    EXPECT_GT(source_weight.grad().abs().sum().item<double>(), 0.0);
    opt.step();
  }
  EXPECT_GT((source_weight.detach() - before).abs().max().item<double>(), 1e-4);
  strategy->on_epoch_end(s, 0);
  EXPECT_EQ(s.metrics.logged["source/train/loss"].size(), 1u);
  EXPECT_EQ(s.metrics.logged["source/train/acc"].size(), 1u);
  EXPECT_EQ(model.forward(s.target().train.x).size(1), 3);  // the target classifier's forward
}

}  // namespace
