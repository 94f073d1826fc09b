// coral: Deep CORAL (Sun & Saenko 2016, "Deep CORAL: Correlation Alignment for Deep Domain
// Adaptation", ECCV workshops). In setup() (after the adapters attached the head) the whole
// model trains on the labelled source with
//   loss = CE(source batch) + weight * sum_layers l_CORAL,
//   l_CORAL = ||C_S - C_T||_F^2 / (4 d^2)                                   (eq. 1)
//   C_S = 1/(n_S - 1) (D_S^T D_S - 1/n_S (1^T D_S)^T (1^T D_S))            (eq. 2, C_T alike)
// between the activations of the source batch and of a batch of unlabelled target inputs; the
// paper aligns the last layer's outputs (fc8, the class scores: layer = "logits", default;
// "features" aligns the backbone's output, "both" sums the two).
// Then the runner's target stage fine-tunes on the target's labelled shots ([train] epochs = 0:
// none, pure unsupervised adaptation). Logs source/train/coral (mean per epoch) and the final
// domain distances source/final/{coral,mmd}_{features,logits}.
#include "../common/feature_da.hpp"

struct CoralOptions {
  tlab::SourceOptions source;
  double weight = 1.0;
  std::string layer = "logits";
};

// The CORAL losses of the adapted layers, summed.
class CoralHooks : public tlab::AdaptationHooks {
 public:
  using AdaptationHooks::AdaptationHooks;
  torch::Tensor term(tlab::Session&, const std::vector<torch::Tensor>& s,
                     const std::vector<torch::Tensor>& t) override {
    torch::Tensor sum;
    for (std::size_t i = 0; i < s.size(); ++i) {
      auto l = tlab_strategy::da::coral(s[i], t[i]);
      sum = sum.defined() ? sum + l : l;
    }
    return sum;
  }
};

class Coral : public tlab::Strategy {
 public:
  using Options = CoralOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .include(&Options::source)
        .field("weight", &Options::weight, "trade-off lambda of the CORAL loss")
        .range(0, 1e6)
        .field("layer", &Options::layer,
               "activations whose covariances are aligned: logits (the head's output, the "
               "paper's fc8), features (the backbone's output) or both (the two losses summed)")
        .choices({"logits", "features", "both"});
  }
  explicit Coral(Options o)
      : o_(std::move(o)),
        hooks_(o_.layer == "both" ? std::vector<std::string>{"features", "logits"}
                                  : std::vector<std::string>{o_.layer},
               "coral") {
    TLAB_CHECK(o_.layer == "both" || o_.layer == "logits" || o_.layer == "features",
               "coral: layer = '", o_.layer, "'; expected logits, features or both");
  }

  void setup(tlab::Session& s) override {
    tlab_strategy::da::adapt_and_measure(s, hooks_, o_.source, o_.weight);
  }

 private:
  Options o_;
  CoralHooks hooks_;
};

TLAB_PLUGIN(Coral, "coral", "1.0.0",
            "Deep CORAL: align second-order statistics of source and unlabelled target")
