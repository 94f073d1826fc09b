// pseudo_label: Pseudo-Label (Lee 2013, "Pseudo-Label: the simple and efficient semi-supervised
// learning method for deep neural networks"), with a confidence threshold.
//
// In setup() (after the adapters attached the head), one stage of `epochs` trains the whole
// model on the labelled data available (the source's training split when there is a source,
// plus the target's labelled shots) while each step also draws a batch of the target's
// unlabelled inputs (an epoch passes over the larger of the two; few labels repeat):
//   L = CE(labelled batch) + alpha(t) * (1/B') sum_j [max_c p(c|u_j) >= threshold] CE(u_j, y'_j),
//   y'_j = argmax_c p(c|u_j) of the current model in the same step, detached (as in the paper),
//   alpha(t) = 0 for t < T1, alpha_f (t - T1) / (T2 - T1) for T1 <= t < T2, alpha_f after
// (t in epochs, 0-based; Lee used T1 = 100, T2 = 600, alpha_f = 3 over many more epochs). The
// threshold keeps unconfident guesses out (Lee's method uses every argmax: threshold = 0). The
// runner's target stage then fine-tunes on the shots ([train] epochs = 0: none).
#include "../common/instance.hpp"
#include "tlab/sdk/mode.hpp"
#include "tlab/sdk/sampler.hpp"
#include "tlab/sdk/source.hpp"

struct PseudoLabelOptions {
  int64_t epochs = 10;
  double lr = 0.0;
  double threshold = 0.95;
  double alpha_f = 3.0;
  int64_t t1 = 2;
  int64_t t2 = 6;
  int64_t unlabeled_batch = 0;
};

// The semi-supervised stage: labelled cross-entropy plus the ramped pseudo-label term.
class PseudoLabelHooks : public tlab::StageHooks {
 public:
  explicit PseudoLabelHooks(const PseudoLabelOptions& o) : o_(o) {}
  tlab::Sampler unlabeled;

  void on_epoch_start(tlab::Session& s, int64_t e) override {
    alpha_ = tlab_strategy::pseudo_label_alpha(e, o_.t1, o_.t2, o_.alpha_f);
    if (!confident_.defined())
      confident_ = torch::zeros({}, torch::TensorOptions(s.context().device).dtype(torch::kLong));
    confident_.zero_();
    drawn_ = 0;
  }

  torch::Tensor loss(tlab::Session& s, const tlab::Batch& b) override {
    auto& model = s.model();
    auto loss = tlab::cross_entropy(model.forward(b.x), b.y);
    auto u = unlabeled.next();
    torch::Tensor mask;
    if (alpha_ > 0) {
      loss =
          loss + alpha_ * tlab_strategy::pseudo_label_loss(model.forward(u), o_.threshold, &mask);
    } else {  // before T1 the term has weight 0: only count what would pass the threshold,
              // in eval mode (this pass must not move batch-norm statistics or draw dropout)
      torch::NoGradGuard no_grad;
      tlab::ModeScope keep(model);
      model.eval();
      tlab_strategy::pseudo_label_loss(model.forward(u), o_.threshold, &mask);
    }
    confident_ += mask.sum();
    drawn_ += u.size(0);
    return loss;
  }

  void on_epoch_end(tlab::Session& s, int64_t e) override {
    auto& m = *s.context().metrics;
    const int64_t step = s.step();
    const double frac = drawn_ > 0 ? static_cast<double>(confident_.item<int64_t>()) / drawn_ : 0;
    m.log("pseudo_label/train/alpha", alpha_, step, e);
    m.log("pseudo_label/train/confident_fraction", frac, step, e);
    m.summary("pseudo_label/confident_fraction", frac);
  }

 private:
  PseudoLabelOptions o_;
  double alpha_ = 0;
  torch::Tensor confident_;  // confident unlabelled inputs this epoch (device)
  int64_t drawn_ = 0;        // unlabelled inputs drawn this epoch
};

class PseudoLabel : public tlab::Strategy {
 public:
  using Options = PseudoLabelOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("epochs", &Options::epochs, "epochs of semi-supervised training (labelled data)")
        .range(1, 100000)
        .field("lr", &Options::lr, "learning rate of that training (0 = train.lr)")
        .range(0, 1000)
        .field("threshold", &Options::threshold,
               "smallest top softmax probability that makes a pseudo-label (0 = every argmax)")
        .range(0, 1)
        .field("alpha_f", &Options::alpha_f, "final weight of the pseudo-label loss")
        .range(0, 1000)
        .field("t1", &Options::t1, "epoch where the weight starts to ramp up from 0")
        .range(0, 100000)
        .field("t2", &Options::t2, "epoch where the weight reaches alpha_f (>= t1)")
        .range(0, 100000)
        .field("unlabeled_batch", &Options::unlabeled_batch,
               "unlabelled target inputs per step (0 = train.batch_size)")
        .range(0, 1 << 20);
  }
  explicit PseudoLabel(Options o) : o_(o), hooks_(o_) {
    TLAB_CHECK(o_.t1 <= o_.t2, "pseudo_label: t2 = ", o_.t2, " is before t1 = ", o_.t1,
               "; the ramp-up needs t1 <= t2 (e.g. t1 = 2, t2 = 6)");
  }

  void setup(tlab::Session& s) override {
    const auto& tgt = s.target();
    const auto& xu = tlab::need_unlabeled(s);
    // The labelled data: the source (same classes) and the target's shots.
    std::vector<torch::Tensor> xs, ys;
    if (const tlab::DomainData* src = s.source()) {
      tlab::need_source(s);
      tlab::need_same_classes(s, *src);
      xs.push_back(src->train.x);
      ys.push_back(src->train.y);
    }
    if (tgt.train.size() > 0 && !tgt.train.streamed()) {
      xs.push_back(tgt.train.x);
      ys.push_back(tgt.train.y);
    }
    if (xs.empty())
      throw std::invalid_argument(
          "pseudo_label needs labelled examples to start from, but there is no source and the "
          "target keeps no labels: set [target] shots = K, or add a [source] with the same "
          "classes");
    labelled_ = {torch::cat(xs), torch::cat(ys)};
    const int64_t ub = o_.unlabeled_batch > 0 ? o_.unlabeled_batch : s.train_config().batch_size;
    // An epoch passes over the larger of the two: with few labels (no source) the labelled
    // examples repeat so that each epoch also draws the whole unlabelled pool once.
    const int64_t steps = (xu.size(0) + ub - 1) / ub, bl = s.train_config().batch_size;
    const int64_t reps = (steps * bl + labelled_.size() - 1) / labelled_.size();
    if (reps > 1)
      labelled_ = {labelled_.x.repeat_interleave(reps, 0), labelled_.y.repeat_interleave(reps, 0)};
    hooks_.unlabeled = tlab::Sampler(xu, ub);

    tlab::Stage st = tlab::model_stage(s, "pseudo_label", o_.epochs, o_.lr);
    st.train = &labelled_;
    st.val = &tgt.val;  // the target's, logged only
    st.hooks = &hooks_;
    s.fit(st);
    labelled_ = {};
  }

 private:
  Options o_;
  PseudoLabelHooks hooks_;
  tlab::Split labelled_;  // source training examples and the target's shots
};

TLAB_PLUGIN(PseudoLabel, "pseudo_label", "1.0.0",
            "Confident predictions on unlabelled target inputs become labels (Lee 2013)")
