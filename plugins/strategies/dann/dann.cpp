// dann: Domain-Adversarial Training of Neural Networks (Ganin et al. 2016, JMLR 17(59)). In
// setup() (after the adapters attached the head) the whole model trains on the labelled source
// together with a domain classifier d on the backbone's features, through a gradient reversal
// layer R_lambda (identity forward, -lambda * gradient backward; sec. 5, eq. 16-18):
//   loss = CE(source batch) + weight * BCE(d(R_lambda(f)), domain)
// over the source batch (domain 0) and a batch of unlabelled target inputs (domain 1), so that
// d learns to tell the domains apart while the features learn to fool it (the saddle point of
// eq. 9-10). lambda follows the paper's schedule lambda_p = lambda_max (2 / (1 + exp(-gamma p))
// - 1), gamma = 10, p = training progress in [0, 1] over the stage's steps (from
// Session::step()). With anneal_lr the step size follows mu_p = mu_0 / (1 + alpha p)^beta
// (alpha 10, beta 0.75), applied by scaling the loss (the runner sets rates per epoch only): the
// same update as scaling the rate for plain SGD (no momentum, no weight decay; with momentum
// the buffer keeps earlier gradients at their earlier, larger scale, so it is close, not equal),
// hence only with [train] optimizer = "sgd" (Adam's normalisation would cancel it).
// The domain classifier is an MLP feature_dim -> hidden... (ReLU, dropout) -> 1 (the paper: 1024,
// 1024 for Office); it trains with the stage (a parameter group "domain_classifier") but is
// owned by the strategy, not registered on the model: it is not part of the classifier, is not
// in the head and is not saved in the checkpoint (the checkpoint holds what predicts classes).
// Then the runner's target stage fine-tunes on the target's labelled shots ([train] epochs = 0:
// none). Logs per epoch source/train/domain_loss, source/train/domain_acc (accuracy of d on the
// stage's batches, accumulated on the device) and source/train/grl_lambda (at the epoch's end),
// and source/final/{coral,mmd}_{features,logits}.
#include "../common/feature_da.hpp"

struct DannOptions {
  tlab::SourceOptions source;
  double weight = 0.1;
  std::vector<int64_t> hidden{256};
  double dropout = 0.5;
  double gamma = 10.0;
  double lambda_max = 1.0;
  bool anneal_lr = false;
  double alpha = 10.0;
  double beta = 0.75;
};

namespace da = tlab_strategy::da;

// The adaptation stage with a domain classifier behind a gradient reversal layer.
class DannHooks : public tlab::AdaptationHooks {
 public:
  explicit DannHooks(const DannOptions& o) : AdaptationHooks({"features"}, "domain_loss"), o_(o) {}

  // The domain classifier: an MLP feature_dim -> hidden... (ReLU, dropout) -> 1.
  torch::nn::Sequential make_classifier(int64_t features, torch::Device device) {
    torch::nn::Sequential d;
    int64_t width = features;
    for (int64_t h : o_.hidden) {
      d->push_back(torch::nn::Linear(width, h));
      d->push_back(torch::nn::ReLU());
      if (o_.dropout > 0) d->push_back(torch::nn::Dropout(o_.dropout));
      width = h;
    }
    d->push_back(torch::nn::Linear(width, 1));
    d->to(device);
    disc_ = d;
    correct_ = torch::zeros({}, torch::TensorOptions(device));
    return d;
  }

  torch::Tensor term(tlab::Session&, const std::vector<torch::Tensor>& a,
                     const std::vector<torch::Tensor>& b) override {
    const int64_t ns = a[0].size(0), nt = b[0].size(0);
    auto f = da::grad_reverse(torch::cat({a[0], b[0]}), lambda());
    auto logit = disc_->forward(f).squeeze(1);
    auto dom =
        torch::cat({torch::zeros({ns}, logit.options()), torch::ones({nt}, logit.options())});
    {
      torch::NoGradGuard no_grad;
      correct_ += (logit > 0).to(logit.dtype()).eq(dom).sum().to(correct_.dtype());
      seen_ += ns + nt;
    }
    return torch::nn::functional::binary_cross_entropy_with_logits(logit, dom);
  }

  // p = the stage's progress in [0, 1]; with anneal_lr the loss is scaled by mu_p / mu_0.
  torch::Tensor loss(tlab::Session& s, const tlab::Batch& b) override {
    p_ = std::clamp(static_cast<double>(s.step() - start_step_) / static_cast<double>(total_steps_),
                    0.0, 1.0);
    auto l = AdaptationHooks::loss(s, b);
    return o_.anneal_lr ? l * da::annealed_lr_factor(p_, o_.alpha, o_.beta) : l;
  }

  void on_epoch_start(tlab::Session& s, int64_t epoch) override {
    if (epoch == 0) {
      const tlab::Stage& st = s.stage();
      const int64_t n = st.train->size(), bs = st.config.batch_size;
      start_step_ = s.step();
      total_steps_ = std::max<int64_t>(1, st.config.epochs * ((n + bs - 1) / bs));
    }
    disc_->train();  // the model's mode is set by the runner; the classifier is not in it
  }

  void on_epoch_end(tlab::Session& s, int64_t epoch) override {
    AdaptationHooks::on_epoch_end(s, epoch);
    auto& m = *s.context().metrics;
    m.log("source/train/domain_acc",
          seen_ ? correct_.item<double>() / static_cast<double>(seen_) : 0.0, s.step(), epoch);
    m.log("source/train/grl_lambda", lambda(), s.step(), epoch);
    correct_.zero_();
    seen_ = 0;
  }

 private:
  double lambda() const { return o_.lambda_max * da::grl_lambda(p_, o_.gamma); }

  DannOptions o_;
  torch::nn::Sequential disc_{nullptr};  // the domain classifier (kept for the run's lifetime)
  int64_t start_step_ = 0;               // Session::step() at the stage's first epoch
  int64_t total_steps_ = 1;              // steps of the whole stage
  double p_ = 0;                         // progress of the current step
  torch::Tensor correct_;                // domain predictions right, this epoch (device)
  int64_t seen_ = 0;                     // domain predictions made, this epoch
};

class Dann : public tlab::Strategy {
 public:
  using Options = DannOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .include(&Options::source)
        .field("weight", &Options::weight,
               "trade-off of the domain classifier's loss (the paper: 1; 0.1 is steadier here)")
        .range(0, 1e6)
        .field("hidden", &Options::hidden,
               "hidden widths of the domain classifier MLP (the paper: [1024, 1024])")
        .min_size(1)
        .range(1, 1000000)
        .field("dropout", &Options::dropout, "dropout after each hidden layer of the classifier")
        .range(0, 0.99)
        .field("gamma", &Options::gamma,
               "steepness of lambda_p = lambda_max (2 / (1 + exp(-gamma p)) - 1) (paper: 10)")
        .range(0, 1000)
        .field("lambda_max", &Options::lambda_max,
               "final gradient-reversal coefficient (0: the domain classifier trains but the "
               "features ignore it)")
        .range(0, 1000)
        .field("anneal_lr", &Options::anneal_lr,
               "anneal the step size mu_p = mu_0 / (1 + alpha p)^beta (needs [train] optimizer "
               "= \"sgd\")")
        .field("alpha", &Options::alpha, "alpha of the annealed step size (paper: 10)")
        .range(0, 1000)
        .field("beta", &Options::beta, "beta of the annealed step size (paper: 0.75)")
        .range(0, 100);
  }
  explicit Dann(Options o) : o_(std::move(o)), hooks_(o_) {}

  void setup(tlab::Session& s) override {
    TLAB_CHECK(!o_.anneal_lr || s.train_config().optimizer == "sgd",
               "dann: anneal_lr scales the loss by mu_p / mu_0, which ", s.train_config().optimizer,
               " cancels (it normalises gradients); set [train] optimizer = \"sgd\" or anneal_lr = "
               "false");
    auto d = hooks_.make_classifier(s.model().backbone->feature_dim(), s.context().device);
    da::adapt_and_measure(s, hooks_, o_.source, o_.weight,
                          {{"domain_classifier", d->parameters(), 1.0}});
  }

 private:
  Options o_;
  DannHooks hooks_;
};

TLAB_PLUGIN(Dann, "dann", "1.0.0",
            "DANN: domain classifier through gradient reversal, with the paper's lambda schedule")
