// rkd: relational knowledge distillation (Park, Kim, Lu & Cho 2019, "Relational Knowledge
// Distillation"). The teacher is the model of an earlier finished run (`teacher = "run:<id>"` or
// its folder), frozen. Rather than its outputs, the student matches the structure of the
// teacher's feature space on each batch: distances between examples (RKD-D, normalised by their
// mean) and angles formed by triplets (RKD-A), both through a Huber loss (formulas in
// ../common/distillation.hpp). Each target step minimises
//   ce_weight * CE(student(x), y) + distance_weight * L_RKD-D(f_s, f_t)
//                                 + angle_weight * L_RKD-A(f_s, f_t)
// on the backbone features f = model.features(x) (the teacher's through its own backbone). Only
// relations are compared, so the two feature widths and the teacher's classes may differ. With
// `unlabeled = true` the relational terms also cover a batch of the target's unlabelled inputs.
// The paper's weights for classification: 25 (distances) and 50 (angles).
// Metrics per epoch: target/train/rkd_distance, target/train/rkd_angle, target/train/ce.
#include <optional>

#include "../common/distillation.hpp"
#include "tlab/sdk/mode.hpp"
#include "tlab/sdk/sampler.hpp"

struct RkdOptions {
  std::string teacher;
  double distance_weight = 25.0;
  double angle_weight = 50.0;
  double ce_weight = 1.0;
  bool unlabeled = true;
  int64_t unlabeled_batch = 0;
};

class Rkd : public tlab::Strategy {
 public:
  using Options = RkdOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("teacher", &Options::teacher,
               "the teacher: \"run:<id>\" (a finished run, tlab results list) or a run folder")
        .field("distance_weight", &Options::distance_weight,
               "weight of the distance-wise loss RKD-D (paper: 25)")
        .range(0, 1e6)
        .field("angle_weight", &Options::angle_weight,
               "weight of the angle-wise loss RKD-A (paper: 50)")
        .range(0, 1e6)
        .field("ce_weight", &Options::ce_weight, "weight of the cross-entropy on the labels")
        .range(0, 1e6)
        .field("unlabeled", &Options::unlabeled,
               "also match relations over a batch of the target's unlabelled inputs each step")
        .field("unlabeled_batch", &Options::unlabeled_batch,
               "unlabelled inputs per step (0 = train.batch_size)")
        .range(0, 1 << 20);
  }
  explicit Rkd(Options o) : o_(std::move(o)) {
    tlab_strategy::check_teacher_ref(o_.teacher, "rkd");
    if (o_.distance_weight + o_.angle_weight + o_.ce_weight <= 0)
      throw std::invalid_argument(
          "rkd: distance_weight, angle_weight and ce_weight are all 0, so nothing would train; "
          "give at least one a positive weight (paper: 25, 50, 1)");
  }

  void setup(tlab::Session& s) override {
    if (o_.unlabeled) {
      pool_ = tlab::unlabeled_sampler(s, o_.unlabeled_batch);
    }
    teacher_ = tlab_strategy::load_teacher(s, o_.teacher, "rkd");
  }

  void on_epoch_start(tlab::Session& s, int64_t) override {
    auto opts = torch::TensorOptions(s.context().device);
    dist_sum_ = torch::zeros({}, opts);
    angle_sum_ = torch::zeros({}, opts);
    ce_sum_ = torch::zeros({}, opts);
    steps_ = 0;
  }

  torch::Tensor loss(tlab::Session& s, const tlab::Batch& b) override {
    auto& model = s.model();
    const int64_t n = b.x.size(0);
    auto x = pool_ ? torch::cat({b.x, pool_->next()}) : b.x;
    auto f = model.features(x);
    torch::Tensor ft;
    {
      torch::NoGradGuard no_grad;
      ft = teacher_->features(x);
    }
    auto ce = tlab::cross_entropy(model.head->forward(f.slice(0, 0, n)), b.y);
    auto dist = tlab_strategy::rkd_distance_loss(f, ft);
    auto angle = tlab_strategy::rkd_angle_loss(f, ft);
    ce_sum_ += ce.detach();
    dist_sum_ += dist.detach();
    angle_sum_ += angle.detach();
    ++steps_;
    return o_.ce_weight * ce + o_.distance_weight * dist + o_.angle_weight * angle;
  }

  void on_epoch_end(tlab::Session& s, int64_t epoch) override {
    if (steps_ == 0) return;
    auto& m = *s.context().metrics;
    m.log("target/train/rkd_distance", dist_sum_.item<double>() / steps_, s.step(), epoch);
    m.log("target/train/rkd_angle", angle_sum_.item<double>() / steps_, s.step(), epoch);
    m.log("target/train/ce", ce_sum_.item<double>() / steps_, s.step(), epoch);
  }

 private:
  Options o_;
  std::shared_ptr<tlab::Model> teacher_;
  std::optional<tlab::Sampler> pool_;
  torch::Tensor dist_sum_, angle_sum_, ce_sum_;
  int64_t steps_ = 0;
};

TLAB_PLUGIN(Rkd, "rkd", "1.0.0",
            "Relational distillation of a teacher run's feature distances and angles (Park 2019)")
