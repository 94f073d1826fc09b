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
  int64_t source_epochs = 10;    ///< Epochs of the adaptation stage.
  double source_lr = 0.0;        ///< Its learning rate (0 = train.lr).
  double weight = 1.0;           ///< Trade-off lambda of the CORAL term.
  std::string layer = "logits";  ///< Where covariances are aligned.
};

class Coral : public tlab::Strategy {
 public:
  using Options = CoralOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("source_epochs", &Options::source_epochs,
               "epochs of the adaptation stage (source labels + unlabelled target, in setup)")
        .range(1, 100000)
        .field("source_lr", &Options::source_lr,
               "learning rate of the adaptation stage (0 = train.lr)")
        .range(0, 1000)
        .field("weight", &Options::weight, "trade-off lambda of the CORAL loss")
        .range(0, 1e6)
        .field("layer", &Options::layer,
               "activations whose covariances are aligned: logits (the head's output, the "
               "paper's fc8), features (the backbone's output) or both (the two losses summed)")
        .choices({"logits", "features", "both"});
  }
  explicit Coral(Options o) : o_(std::move(o)) {
    if (o_.layer == "both")
      layers_ = {"features", "logits"};
    else if (o_.layer == "logits" || o_.layer == "features")
      layers_ = {o_.layer};
    else
      throw std::invalid_argument("coral: layer = '" + o_.layer +
                                  "'; expected logits, features or both");
  }

  void setup(tlab::Session& s) override {
    tlab_strategy::da::StageOptions so{o_.source_epochs, o_.source_lr, o_.weight};
    tlab_strategy::da::run_adaptation(
        s, "coral", so, layers_, "coral",
        [](const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
          torch::Tensor sum;
          for (std::size_t i = 0; i < a.size(); ++i) {
            auto l = tlab_strategy::da::coral(a[i], b[i]);
            sum = sum.defined() ? sum + l : l;
          }
          return sum;
        });
  }

 private:
  Options o_;
  std::vector<std::string> layers_;
};

TLAB_PLUGIN(Coral, "coral", "1.0.0",
            "Deep CORAL: align second-order statistics of source and unlabelled target")
