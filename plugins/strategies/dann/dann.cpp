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
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

#include "../common/feature_da.hpp"

struct DannOptions {
  int64_t source_epochs = 10;        ///< Epochs of the adaptation stage.
  double source_lr = 0.0;            ///< Its learning rate (0 = train.lr).
  double weight = 0.1;               ///< Trade-off of the domain loss.
  std::vector<int64_t> hidden{256};  ///< Hidden widths of the domain classifier.
  double dropout = 0.5;              ///< Dropout after each hidden layer of the classifier.
  double gamma = 10.0;               ///< Steepness of the lambda schedule.
  double lambda_max = 1.0;           ///< Final reversal coefficient (0 = no reversal).
  bool anneal_lr = false;            ///< mu_p = mu_0 / (1 + alpha p)^beta (SGD only).
  double alpha = 10.0;               ///< Annealing alpha.
  double beta = 0.75;                ///< Annealing beta.
};

namespace {
// What the loss shares with the epoch hooks.
struct DannState {
  int64_t start_step = -1;  // Session::step() at the stage's first epoch
  int64_t total_steps = 1;  // steps of the whole stage
  double p = 0;             // progress of the current step
  torch::Tensor correct;    // domain predictions right, this epoch (device)
  int64_t seen = 0;         // domain predictions made, this epoch
};
}  // namespace

class Dann : public tlab::Strategy {
 public:
  using Options = DannOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("source_epochs", &Options::source_epochs,
               "epochs of the adaptation stage (source labels + unlabelled target, in setup)")
        .range(1, 100000)
        .field("source_lr", &Options::source_lr,
               "learning rate of the adaptation stage (0 = train.lr)")
        .range(0, 1000)
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
  explicit Dann(Options o) : o_(std::move(o)) {}

  void setup(tlab::Session& s) override {
    namespace da = tlab_strategy::da;
    if (o_.anneal_lr && s.train_config().optimizer != "sgd")
      throw std::invalid_argument(
          "dann: anneal_lr scales the loss by mu_p / mu_0, which " + s.train_config().optimizer +
          " cancels (it normalises gradients); set [train] optimizer = \"sgd\" or anneal_lr = "
          "false");
    auto& model = s.model();
    const auto dev = s.context().device;
    torch::nn::Sequential d;
    int64_t width = model.backbone->feature_dim();
    for (int64_t h : o_.hidden) {
      d->push_back(torch::nn::Linear(width, h));
      d->push_back(torch::nn::ReLU());
      if (o_.dropout > 0) d->push_back(torch::nn::Dropout(o_.dropout));
      width = h;
    }
    d->push_back(torch::nn::Linear(width, 1));
    d->to(dev);
    disc_ = d;
    std::shared_ptr<torch::nn::SequentialImpl> dp = d.ptr();
    auto st = std::make_shared<DannState>();
    st->correct = torch::zeros({}, torch::TensorOptions(dev));
    const double gamma = o_.gamma, lmax = o_.lambda_max;
    da::StageOptions so{o_.source_epochs, o_.source_lr, o_.weight};
    auto term = [dp, st, gamma, lmax](const std::vector<torch::Tensor>& a,
                                      const std::vector<torch::Tensor>& b) {
      const int64_t ns = a[0].size(0), nt = b[0].size(0);
      auto f = da::grad_reverse(torch::cat({a[0], b[0]}), lmax * da::grl_lambda(st->p, gamma));
      auto logit = dp->forward(f).squeeze(1);
      auto dom =
          torch::cat({torch::zeros({ns}, logit.options()), torch::ones({nt}, logit.options())});
      {
        torch::NoGradGuard no_grad;
        st->correct += (logit > 0).to(logit.dtype()).eq(dom).sum().to(st->correct.dtype());
        st->seen += ns + nt;
      }
      return torch::nn::functional::binary_cross_entropy_with_logits(logit, dom);
    };
    const bool anneal = o_.anneal_lr;
    const double alpha = o_.alpha, beta = o_.beta;
    da::run_adaptation(
        s, "dann", so, {"features"}, "domain_loss", term, [&, dp, st](tlab::Stage& stage) {
          const int64_t n = stage.train->size(), bs = stage.config.batch_size;
          st->total_steps = std::max<int64_t>(1, stage.config.epochs * ((n + bs - 1) / bs));
          stage.groups.push_back({"domain_classifier", dp->parameters(), 1.0});
          auto base_loss = stage.loss;
          stage.loss = [&s, st, base_loss, anneal, alpha, beta](const tlab::Batch& b) {
            st->p = std::clamp(static_cast<double>(s.step() - st->start_step) /
                                   static_cast<double>(st->total_steps),
                               0.0, 1.0);
            auto l = base_loss(b);
            return anneal ? l * da::annealed_lr_factor(st->p, alpha, beta) : l;
          };
          stage.on_epoch_start = [&s, dp, st](int64_t epoch) {
            if (epoch == 0) st->start_step = s.step();
            dp->train();  // the model's mode is set by the runner; the classifier is not in it
          };
          auto prev_end = stage.on_epoch_end;
          auto* metrics = s.context().metrics;
          stage.on_epoch_end = [&s, st, prev_end, metrics, gamma, lmax](int64_t epoch) {
            if (prev_end) prev_end(epoch);
            metrics->log(
                "source/train/domain_acc",
                st->seen ? st->correct.item<double>() / static_cast<double>(st->seen) : 0.0,
                s.step(), epoch);
            metrics->log("source/train/grl_lambda", lmax * da::grl_lambda(st->p, gamma), s.step(),
                         epoch);
            st->correct.zero_();
            st->seen = 0;
          };
        });
  }

 private:
  Options o_;
  torch::nn::Sequential disc_{nullptr};  // the domain classifier (kept for the run's lifetime)
};

TLAB_PLUGIN(Dann, "dann", "1.0.0",
            "DANN: domain classifier through gradient reversal, with the paper's lambda schedule")
