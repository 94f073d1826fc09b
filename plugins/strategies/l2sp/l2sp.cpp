// l2sp: fine-tuning with an explicit inductive bias toward the pre-trained weights (Li,
// Grandvalet & Davoine 2018, "Explicit Inductive Bias for Transfer Learning with Convolutional
// Networks", eq. 3). Pre-trains on the source like finetune (shared code and cache), keeps
// w0 = the pre-trained backbone weights, then trains on the target with
//   L = CE + alpha/2 * ||w_S - w0_S||^2 + beta/2 * ||w_new||^2
// where S are the backbone's parameters and w_new those of the new layers (the head and
// whatever adapters added). Every tensor counts, biases included (TLlib does the same).
// Logs target/train/sp_distance (||w_S - w0_S||^2 at each epoch's end) and
// target/train/penalty (the regulariser's mean over the epoch's steps).
#include "../common/finetuning.hpp"
#include "tlab/sdk/source.hpp"

struct L2spOptions {
  tlab::SourceOptions source{5};
  double alpha = 0.01;
  double beta = 0.01;
};

class L2sp : public tlab::Strategy {
 public:
  using Options = L2spOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .include(&Options::source)
        .field("alpha", &Options::alpha,
               "weight of alpha/2 * ||w - w0||^2 on the backbone (pull toward pre-trained)")
        .range(0, 1e6)
        .field("beta", &Options::beta, "weight of beta/2 * ||w||^2 on the new layers (the head)")
        .range(0, 1e6);
  }
  explicit L2sp(Options o) : o_(o) {}

  void prepare(tlab::Session& s) override {
    tlab::pretrain_on_source(s, o_.source);
    for (const auto& p : s.model().backbone->parameters()) {
      shared_.push_back(p);
      start_.push_back(p.detach().clone());
    }
  }

  void setup(tlab::Session& s) override {
    fresh_ = tlab_strategy::non_backbone_parameters(s.model());
  }

  void on_epoch_start(tlab::Session& s, int64_t) override {
    penalty_sum_ = torch::zeros({}, torch::TensorOptions(s.context().device));
    steps_ = 0;
  }

  torch::Tensor loss(tlab::Session& s, const tlab::Batch& b) override {
    auto t = tlab_strategy::l2sp_terms(shared_, start_, fresh_, o_.alpha, o_.beta);
    penalty_sum_ += t.penalty.detach();
    ++steps_;
    return tlab::cross_entropy(s.model().forward(b.x), b.y) + t.penalty;
  }

  void on_epoch_end(tlab::Session& s, int64_t epoch) override {
    torch::NoGradGuard no_grad;
    auto t = tlab_strategy::l2sp_terms(shared_, start_, fresh_, o_.alpha, o_.beta);
    auto& m = *s.context().metrics;
    const double d = t.distance.item<double>();
    m.log("target/train/sp_distance", d, s.step(), epoch);
    m.log("target/train/penalty", penalty_sum_.item<double>() / std::max<int64_t>(1, steps_),
          s.step(), epoch);
    m.summary("target/l2sp/sp_distance", d);
  }

 private:
  Options o_;
  std::vector<torch::Tensor> shared_, start_, fresh_;
  torch::Tensor penalty_sum_;
  int64_t steps_ = 0;
};

TLAB_PLUGIN(L2sp, "l2sp", "1.0.0", "Fine-tune on target pulled toward the pre-trained weights")
