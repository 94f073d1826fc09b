// distill: knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a
// Neural Network"). The teacher is the model of an earlier finished run (`teacher = "run:<id>"`
// or its folder), frozen; the student is this run's model. Each target step minimises
//   (1 - alpha) * CE(student(x), y) + alpha * T^2 * KL(softmax(teacher(x) / T) ||
//                                                      softmax(student(x) / T))
// (KL summed over classes, mean over the batch; formula in ../common/distillation.hpp). The KD
// term needs no labels: with `unlabeled = true` it also covers a batch of the target's unlabelled
// inputs each step, which is where a teacher helps most when labels are few.
// Metrics: target/train/kd and target/train/ce per epoch; at the end target/test/teacher_kl,
// KL(teacher || student) at T = 1 on the target test inputs.
#include <algorithm>
#include <optional>

#include "../common/distillation.hpp"
#include "tlab/sdk/mode.hpp"
#include "tlab/sdk/sampler.hpp"

struct DistillOptions {
  std::string teacher;
  double temperature = 4.0;
  double alpha = 0.9;
  bool unlabeled = true;
  int64_t unlabeled_batch = 0;
};

class Distill : public tlab::Strategy {
 public:
  using Options = DistillOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("teacher", &Options::teacher,
               "the teacher: \"run:<id>\" (a finished run, tlab results list) or a run folder")
        .field("temperature", &Options::temperature, "softmax temperature T of the soft targets")
        .range(0.01, 1000)
        .field("alpha", &Options::alpha, "weight of the KD term (1 - alpha: labels' CE), in [0, 1]")
        .range(0, 1)
        .field("unlabeled", &Options::unlabeled,
               "also distil on a batch of the target's unlabelled inputs each step")
        .field("unlabeled_batch", &Options::unlabeled_batch,
               "unlabelled inputs per step (0 = train.batch_size)")
        .range(0, 1 << 20);
  }
  explicit Distill(Options o) : o_(std::move(o)) {
    tlab_strategy::check_teacher_ref(o_.teacher, "distill");
  }

  void setup(tlab::Session& s) override {
    if (o_.unlabeled) {
      pool_ = tlab::unlabeled_sampler(s, o_.unlabeled_batch);
    }
    teacher_ = tlab_strategy::load_teacher(s, o_.teacher, "distill");
    const int64_t classes = s.target().num_classes;
    if (teacher_->out_dim() != classes)
      throw std::invalid_argument(
          "distill: the teacher \"" + o_.teacher + "\" predicts " +
          std::to_string(teacher_->out_dim()) + " classes but the target has " +
          std::to_string(classes) +
          "; distillation matches class probabilities, so use a teacher trained on the target's "
          "classes (or rkd, which distils features and allows any teacher head)");
  }

  void on_epoch_start(tlab::Session& s, int64_t) override {
    auto opts = torch::TensorOptions(s.context().device);
    kd_sum_ = torch::zeros({}, opts);
    ce_sum_ = torch::zeros({}, opts);
    steps_ = 0;
  }

  torch::Tensor loss(tlab::Session& s, const tlab::Batch& b) override {
    auto& model = s.model();
    const int64_t n = b.x.size(0);
    auto x = pool_ ? torch::cat({b.x, pool_->next()}) : b.x;
    auto scores = model.forward(x);
    torch::Tensor soft;
    {
      torch::NoGradGuard no_grad;
      soft = teacher_->forward(x);
    }
    auto ce = tlab::cross_entropy(scores.slice(0, 0, n), b.y);
    auto kd = tlab_strategy::kd_loss(scores, soft, o_.temperature);
    kd_sum_ += kd.detach();
    ce_sum_ += ce.detach();
    ++steps_;
    return (1 - o_.alpha) * ce + o_.alpha * kd;
  }

  void on_epoch_end(tlab::Session& s, int64_t epoch) override {
    auto& m = *s.context().metrics;
    if (steps_ > 0) {
      m.log("target/train/kd", kd_sum_.item<double>() / steps_, s.step(), epoch);
      m.log("target/train/ce", ce_sum_.item<double>() / steps_, s.step(), epoch);
    }
    const auto& test = s.target().test;
    if (epoch + 1 == s.train_config().epochs && test.size() > 0 && !test.streamed())
      m.summary("target/test/teacher_kl", teacher_kl(s, test.x));
  }

 private:
  // KL(teacher || student) at T = 1 on `x`, mean over examples, in eval mode.
  double teacher_kl(tlab::Session& s, const torch::Tensor& x) {
    auto& model = s.model();
    tlab::ModeScope keep(model);
    model.eval();
    torch::NoGradGuard no_grad;
    auto sum = torch::zeros({}, torch::TensorOptions(x.device()).dtype(torch::kDouble));
    for (int64_t i = 0; i < x.size(0); i += 256) {
      auto xb = x.slice(0, i, std::min(x.size(0), i + 256));
      sum +=
          tlab_strategy::kd_loss(model.forward(xb), teacher_->forward(xb), 1.0).to(torch::kDouble) *
          xb.size(0);
    }
    return sum.item<double>() / x.size(0);
  }

  Options o_;
  std::shared_ptr<tlab::Model> teacher_;
  std::optional<tlab::Sampler> pool_;
  torch::Tensor kd_sum_, ce_sum_;
  int64_t steps_ = 0;
};

TLAB_PLUGIN(Distill, "distill", "1.0.0",
            "Knowledge distillation from a teacher run's soft labels (Hinton et al. 2015)")
