// source_only: the baseline of domain adaptation. In setup() (after the adapters attached the
// head) the whole model trains on the labelled source with cross-entropy alone, exactly the
// adaptation stage of dan, coral and dann without their term; then the runner's target stage
// fine-tunes on the target's labelled shots with [train] (nothing when [train] epochs = 0: the
// source model is evaluated on the target as is). Logs source/final/{coral,mmd}_{features,
// logits}: the domain distances every DA strategy logs, for comparison.
#include "../common/feature_da.hpp"

struct SourceOnlyOptions {
  tlab::SourceOptions source;
};

class SourceOnly : public tlab::Strategy {
 public:
  using Options = SourceOnlyOptions;
  static tlab::Schema schema() { return tlab::SchemaFor<Options>().include(&Options::source); }
  explicit SourceOnly(Options o) : o_(o) {}

  void setup(tlab::Session& s) override {
    tlab_strategy::da::adapt_and_measure(s, hooks_, o_.source, 0.0);
  }

 private:
  Options o_;
  tlab::AdaptationHooks hooks_;  // no layers: cross-entropy on the source alone
};

TLAB_PLUGIN(SourceOnly, "source_only", "1.0.0",
            "Train the target's classifier on source labels only (the DA baseline)")
