// importance_weighting: covariate-shift correction by importance weights (Shimodaira 2000,
// "Improving predictive inference under covariate shift by weighting the log-likelihood";
// Sugiyama et al. 2007), the density ratio estimated with a domain classifier (Bickel, Brueckner
// & Scheffer 2007, "Discriminative learning for differing training and test distributions").
//
// In setup() (after the adapters attached the head):
//   1. a probabilistic domain classifier learns source train inputs (label 0) against the
//      target's unlabelled inputs (label 1), on the flattened inputs or on the features of the
//      backbone as it is then (`on`);
//   2. each source example gets  w(x) = p(t|x)/p(s|x) * n_s/n_t = exp(logit(x)) * n_s/n_t,
//      an estimate of p_t(x)/p_s(x), raised to Shimodaira's flattening power lambda (1: the
//      ratio itself; smaller trades the bias of ignoring the shift for lower variance), clipped
//      to [0, clip] and normalised to mean 1 over the source;
//   3. the whole model trains on the labelled source with the weighted risk
//      mean_i w_i CE(f(x_i), y_i), so that it minimises an estimate of the target risk.
// The runner's target stage then fine-tunes on the target's labelled shots ([train] epochs = 0:
// none), as for source_only.
#include <sstream>

#include "../common/instance.hpp"
#include "tlab/sdk/source.hpp"

struct ImportanceWeightingOptions {
  tlab::SourceOptions source;
  std::string classifier = "logistic";
  std::string on = "inputs";
  int64_t domain_epochs = 5;
  double domain_lr = 0.001;
  int64_t domain_hidden = 64;
  double clip = 10.0;
  double lambda = 1.0;
};

class ImportanceWeighting : public tlab::Strategy {
 public:
  using Options = ImportanceWeightingOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .include(&Options::source)
        .field("classifier", &Options::classifier,
               "domain classifier estimating p(target|x): logistic (as Bickel et al.) or mlp (one "
               "hidden layer)")
        .choices({"logistic", "mlp"})
        .field("on", &Options::on,
               "domain classifier input: inputs (flattened) or features (the backbone's, at setup)")
        .choices({"inputs", "features"})
        .field("domain_epochs", &Options::domain_epochs, "epochs of domain-classifier training")
        .range(1, 10000)
        .field("domain_lr", &Options::domain_lr,
               "Adam learning rate of the domain classifier (on standardised inputs)")
        .range(1e-6, 10)
        .field("domain_hidden", &Options::domain_hidden, "hidden width of the mlp classifier")
        .range(1, 65536)
        .field("clip", &Options::clip, "largest weight before normalisation to mean 1")
        .range(1, 1e6)
        .field("lambda", &Options::lambda,
               "flattening: weights (p_t/p_s)^lambda; 1 = the ratio, 0 = equal (source only)")
        .range(0, 1);
  }
  explicit ImportanceWeighting(Options o) : o_(std::move(o)) {}

  void setup(tlab::Session& s) override {
    using namespace tlab_strategy;
    const auto& src = tlab::need_source(s);
    tlab::need_same_classes(s, src);
    const auto& xt = tlab::need_unlabeled(s);
    auto& model = s.model();
    auto& ctx = s.context();

    // 1. The domain classifier and 2. the weights of the source rows.
    DomainClassifierOptions dc;
    dc.kind = o_.classifier;
    dc.hidden = o_.domain_hidden;
    dc.epochs = o_.domain_epochs;
    dc.lr = o_.domain_lr;
    DomainFit fit;
    if (o_.on == "features") {
      torch::Tensor fs, ft;
      {
        torch::NoGradGuard no_grad;
        model.eval();
        auto feats = [&](const torch::Tensor& x) {
          std::vector<torch::Tensor> out;
          for (int64_t i = 0; i < x.size(0); i += 256)
            out.push_back(model.features(x.slice(0, i, std::min(x.size(0), i + 256))));
          return torch::cat(out);
        };
        fs = feats(src.train.x);
        ft = feats(xt);
      }
      fit = fit_domain_classifier(fs, ft, dc);
    } else {
      fit = fit_domain_classifier(src.train.x, xt, dc);
    }
    const int64_t ns = src.train.size(), nt = xt.size(0);
    hooks_.weights = importance_weights(fit.source_logits, ns, nt, o_.clip, o_.lambda);
    const double ess = effective_sample_size(hooks_.weights);
    auto& m = *ctx.metrics;
    m.summary("importance/domain_acc", fit.accuracy);
    m.summary("importance/weight_max", hooks_.weights.max().item<double>());
    m.summary("importance/ess", ess);
    m.summary("importance/ess_fraction", ess / static_cast<double>(ns));
    m.summary("importance/clipped_fraction",
              (o_.lambda * (fit.source_logits.to(torch::kDouble) + std::log(double(ns) / nt)))
                  .ge(std::log(o_.clip))
                  .to(torch::kDouble)
                  .mean()
                  .item<double>());
    std::ostringstream line;
    line << "domain classifier accuracy " << fit.accuracy << ", weights: max "
         << hooks_.weights.max().item<double>() << ", effective sample size " << ess << " of "
         << ns;
    ctx.log->info(line.str());
    if (!ctx.run_dir.empty())
      write_weights(ctx.run_dir / "importance_weights.csv", hooks_.weights, ns);

    // 3. Weighted training on the source; each batch row's weight is looked up by its row.
    auto st = tlab::source_stage(s, o_.source);
    st.hooks = &hooks_;
    s.fit(st);
    if (src.test.size() > 0)
      m.summary("source/test/acc", s.evaluate(model, st.forward, src.test).acc);
  }

 private:
  Options o_;
  tlab_strategy::WeightedHooks hooks_;  // weights: one per source training row, mean 1
};

TLAB_PLUGIN(ImportanceWeighting, "importance_weighting", "1.0.0",
            "Source examples weighted by p_t(x)/p_s(x) from a domain classifier")
