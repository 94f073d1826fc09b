// source_only: the baseline of domain adaptation. In setup() (after the adapters attached the
// head) the whole model trains on the labelled source with cross-entropy alone, exactly the
// adaptation stage of dan, coral and dann without their term; then the runner's target stage
// fine-tunes on the target's labelled shots with [train] (nothing when [train] epochs = 0: the
// source model is evaluated on the target as is). Logs source/final/{coral,mmd}_{features,
// logits}: the domain distances every DA strategy logs, for comparison.
#include "../common/feature_da.hpp"

struct SourceOnlyOptions {
  int64_t source_epochs = 10;  ///< Epochs of training on the source.
  double source_lr = 0.0;      ///< Learning rate on the source (0 = train.lr).
};

class SourceOnly : public tlab::Strategy {
 public:
  using Options = SourceOnlyOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .field("source_epochs", &Options::source_epochs,
               "epochs of training on the labelled source (in setup, with the target's head)")
        .range(1, 100000)
        .field("source_lr", &Options::source_lr, "learning rate on the source (0 = train.lr)")
        .range(0, 1000);
  }
  explicit SourceOnly(Options o) : o_(o) {}

  void setup(tlab::Session& s) override {
    tlab_strategy::da::StageOptions so{o_.source_epochs, o_.source_lr, 0.0};
    tlab_strategy::da::run_adaptation(s, "source_only", so, {}, "", nullptr);
  }

 private:
  Options o_;
};

TLAB_PLUGIN(SourceOnly, "source_only", "1.0.0",
            "Train the target's classifier on source labels only (the DA baseline)")
