// bitfit: train only the backbone's biases (Ben Zaken, Ravfogel and Goldberg, "BitFit: Simple
// Parameter-efficient Fine-tuning for Transformer-based Masked Language-models", ACL 2022).
// Every backbone parameter whose name does not end in "bias" is frozen; biases keep their
// requires_grad (bitfit unfreezes nothing); the head and other adapters' modules are untouched.
#include <sstream>
#include <string>

#include "tlab/sdk/model.hpp"

struct BitFitOptions {};

class BitFit : public tlab::Adapter {
 public:
  using Options = BitFitOptions;
  static tlab::Schema schema() { return tlab::SchemaFor<Options>(); }
  explicit BitFit(Options /*o*/) {}

  void attach(tlab::Model& model, const tlab::TaskInfo& /*task*/, tlab::Context& ctx) override {
    int64_t biases = 0, bias_values = 0, frozen = 0;
    for (auto& item : model.backbone->named_parameters()) {
      const std::string& name = item.key();
      const bool is_bias =
          name.size() >= 4 && name.compare(name.size() - 4, std::string::npos, "bias") == 0;
      if (is_bias) {
        if (item.value().requires_grad()) {
          ++biases;
          bias_values += item.value().numel();
        }
      } else {
        if (item.value().requires_grad()) frozen += item.value().numel();
        item.value().requires_grad_(false);
      }
    }
    if (ctx.log && biases == 0)
      ctx.log->warn("the backbone has no trainable bias: only the head and other adapters train");
    if (ctx.log) {
      int64_t trainable = 0, total = 0;
      for (const auto& p : model.parameters()) {
        total += p.numel();
        if (p.requires_grad()) trainable += p.numel();
      }
      std::ostringstream s;
      s << "backbone: " << biases << " bias tensor(s) train (" << bias_values << " parameters), "
        << frozen << " other parameters frozen; added 0 parameters; trainable " << trainable
        << " of " << total << " parameters";
      ctx.log->info(s.str());
    }
  }
};

TLAB_PLUGIN(BitFit, "bitfit", "1.0.0", "Train only the backbone's biases (BitFit)")
