// tradaboost: TrAdaBoost (Dai, Yang, Xue & Yu 2007, "Boosting for transfer learning",
// Algorithm 1) with the model as base learner, for a large labelled source (T_d, n rows, the
// "diff-distribution" data) and the target's few labelled shots (T_s, m rows).
//
// In setup(), with weights w = 1 on all n + m rows, for t = 1..N (`rounds`):
//   p = w / sum(w); the model trains `round_epochs` on T_d + T_s with the per-example weighted
//   cross-entropy mean_i (n+m) p_i CE_i (an unbiased batch estimate of the p-weighted risk);
//   eps_t = sum_{T_s} w_i [h(x_i) != y_i] / sum_{T_s} w_i, clamped to [0.001, 0.499] (the paper
//   needs eps_t < 1/2; a network fitting the few target labels reaches 0, where beta_t = 0);
//   beta_t = eps_t / (1 - eps_t),  beta = 1 / (1 + sqrt(2 ln n / N));
//   source rows: w_i *= beta^[h(x_i) != y_i]   (a source row the learner gets wrong, i.e. one
//                                               that contradicts the target, loses weight);
//   target rows: w_i *= beta_t^-[h(x_i) != y_i] (a target row it gets wrong gains weight).
// The 0/1 loss [h(x) != y] is the multi-class form of |h(x) - c(x)|.
//
// Deviation from the paper, for a neural learner: the paper's output is a vote of the learners
// of rounds ceil(N/2)..N. One model of the run cannot hold several networks without changing
// its parameter names (checkpoints and `run:<id>` models would no longer load), so the final
// model is the learner of the last round. By default each round continues training the previous
// round's learner on the new distribution (`restart = false`), so the last learner has seen every
// reweighting; `restart = true` starts each round from the parameters the model had at setup, as
// a learner trained anew on each distribution in the paper.
// The runner's target stage then fine-tunes on the shots ([train] epochs = 0: none).
#include <sstream>

#include "../common/instance.hpp"
#include "tlab/sdk/source.hpp"

struct TradaboostOptions {
  int64_t rounds = 10;
  int64_t round_epochs = 1;
  double lr = 0.0;
  bool restart = false;
};

class Tradaboost : public tlab::Strategy {
 public:
  using Options = TradaboostOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("rounds", &Options::rounds, "boosting rounds N")
        .range(1, 1000)
        .field("round_epochs", &Options::round_epochs,
               "epochs of weighted training on source + target labels per round")
        .range(1, 10000)
        .field("lr", &Options::lr, "learning rate of the rounds (0 = train.lr)")
        .range(0, 1000)
        .field("restart", &Options::restart,
               "start each round from the parameters at setup (false: continue the last learner)");
  }
  explicit Tradaboost(Options o) : o_(o) {}

  void setup(tlab::Session& s) override {
    using namespace tlab_strategy;
    const auto& src = tlab::need_source(s);
    tlab::need_same_classes(s, src);
    const auto& tgt = s.target();
    if (tgt.train.size() == 0 || tgt.train.streamed())
      throw std::invalid_argument(
          "tradaboost boosts on the target's labelled examples, but the target has " +
          std::string(tgt.train.streamed() ? "a streamed training split" : "none") +
          ": keep some with [target] shots = K (e.g. 10), on a resident split");
    auto& model = s.model();
    auto& ctx = s.context();
    auto& m = *ctx.metrics;
    const int64_t n = src.train.size(), mt = tgt.train.size();
    all_ = {torch::cat({src.train.x, tgt.train.x}), torch::cat({src.train.y, tgt.train.y})};
    const tlab::Split& all = all_;
    w_ = torch::ones({n + mt}, torch::TensorOptions(all.x.device()).dtype(torch::kDouble));

    // The parameters at setup, for `restart`.
    std::vector<torch::Tensor> start;
    if (o_.restart)
      for (auto& t : state(model)) start.push_back(t.detach().clone());

    auto st = tlab::model_stage(s, "tradaboost", o_.round_epochs, o_.lr);
    st.train = &all_;
    st.val = &tgt.val;  // how the rounds do on the target (logged only)
    st.hooks = &hooks_;
    for (int64_t t = 0; t < o_.rounds; ++t) {
      if (o_.restart) {
        torch::NoGradGuard no_grad;
        auto now = state(model);
        for (std::size_t i = 0; i < now.size(); ++i) now[i].copy_(start[i]);
      }
      hooks_.weights = (w_ * (static_cast<double>(n + mt) / w_.sum())).to(torch::kFloat);
      s.fit(st);
      model.eval();
      auto wrong = predict(st.forward, all.x).ne(all.y);
      const BoostRound r = tradaboost_update(w_, wrong, n, o_.rounds);
      // Source weights (as a share of the mean weight over all rows) of the rows the learner
      // got wrong (contradicting the target's labelling) and right, after the update.
      auto wn = w_ * (static_cast<double>(n + mt) / w_.sum());
      auto ws = wn.slice(0, 0, n), ok = wrong.slice(0, 0, n).logical_not();
      const double wrong_n = (n - ok.sum()).item<double>();
      const double w_right = ok.any().item<bool>() ? ws.masked_select(ok).mean().item<double>() : 0;
      const double w_wrong =
          wrong_n > 0 ? ws.masked_select(ok.logical_not()).mean().item<double>() : 0;
      const int64_t step = s.step();
      m.log("tradaboost/round/error", r.error, step, t);
      m.log("tradaboost/round/beta_t", r.beta_t, step, t);
      m.log("tradaboost/round/source_weight_mean", ws.mean().item<double>(), step, t);
      m.log("tradaboost/round/source_weight_wrong", w_wrong, step, t);
      m.log("tradaboost/round/source_weight_right", w_right, step, t);
      m.log("tradaboost/round/source_wrong_fraction", wrong_n / n, step, t);
      std::ostringstream line;
      line << "round " << t + 1 << "/" << o_.rounds << ": eps " << r.error << " beta_t " << r.beta_t
           << " beta " << r.beta << ", source weight mean " << ws.mean().item<double>()
           << " (wrong " << w_wrong << ", right " << w_right << ")";
      ctx.log->info(line.str());
      if (t + 1 == o_.rounds) m.summary("tradaboost/beta", r.beta);
    }
    auto wn = w_ * (static_cast<double>(n + mt) / w_.sum());
    m.summary("tradaboost/source_weight_mean", wn.slice(0, 0, n).mean().item<double>());
    m.summary("tradaboost/target_weight_mean", wn.slice(0, n).mean().item<double>());
    m.summary("tradaboost/source_ess_fraction",
              effective_sample_size(wn.slice(0, 0, n)) / static_cast<double>(n));
    if (!ctx.run_dir.empty()) write_weights(ctx.run_dir / "tradaboost_weights.csv", wn, n);
    if (src.test.size() > 0)
      m.summary("source/test/acc", s.evaluate(model, st.forward, src.test).acc);
    all_ = {};
  }

 private:
  static std::vector<torch::Tensor> state(torch::nn::Module& m) {
    auto out = m.parameters();
    for (auto& b : m.buffers()) out.push_back(b);
    return out;
  }
  Options o_;
  torch::Tensor w_;  // TrAdaBoost's weights, source rows then target rows (double)
  tlab_strategy::WeightedHooks hooks_;  // weights: this round's training weights, mean 1 (float)
  tlab::Split all_;  // source + target training rows (the rounds' training split)
};

TLAB_PLUGIN(Tradaboost, "tradaboost", "1.0.0",
            "TrAdaBoost: boosting that down-weights source examples contradicting the target")
