// dan: Deep Adaptation Networks (Long et al. 2015, "Learning Transferable Features with Deep
// Adaptation Networks", ICML). In setup() (after the adapters attached the head) the whole model
// trains on the labelled source with
//   loss = CE(source batch) + weight * sum_{l in layers} d_k^2(D_s^l, D_t^l)      (eq. 3)
// the multi-kernel MMD between the activations of the source batch and of a batch of
// unlabelled target inputs at each adapted layer (DAN adapts the task-specific layers fc6-fc8:
// here the backbone's features and optionally the head's logits). The kernel is a family of
// Gaussians k = sum_u exp(-||x - y||^2 / gamma_u) (eq. 2 with equal weights beta_u, as the
// reference implementations; the paper learns beta by a QP), gamma_u = base * kernel_mul^(u -
// kernel_num/2), base = the mean squared distance between the joint batch's rows, or fixed
// `bandwidths`. Estimators of MMD^2 (option `estimator`):
//   linear   - the paper's linear-time unbiased estimator (Gretton et al. 2012): over quads
//              z_i = (x^s_2i-1, x^s_2i, x^t_2i-1, x^t_2i), d_k^2 = 2/n sum_i g_k(z_i),
//              g_k(z_i) = k(x^s_2i-1, x^s_2i) + k(x^t_2i-1, x^t_2i) - k(x^s_2i-1, x^t_2i)
//              - k(x^s_2i, x^t_2i-1); O(n) but noisy (n/2 terms);
//   biased   - the quadratic V-statistic mean K_ss + mean K_tt - 2 mean K_st (what most
//              implementations use: lower variance, O(n^2) for a batch of n, cheap at batch
//              sizes); never negative;
//   unbiased - the quadratic U-statistic (diagonals of K_ss and K_tt left out).
// Then the runner's target stage fine-tunes on the target's labelled shots ([train] epochs = 0:
// none). Logs source/train/mmd (mean per epoch) and source/final/{coral,mmd}_{features,logits}.
#include "../common/feature_da.hpp"

struct DanOptions {
  tlab::SourceOptions source;
  double weight = 1.0;
  std::vector<std::string> layers{"features"};
  std::string estimator = "biased";
  double kernel_mul = 2.0;
  int64_t kernel_num = 5;
  std::vector<double> bandwidths;
};

// The MK-MMDs of the adapted layers, summed.
class MmdHooks : public tlab::AdaptationHooks {
 public:
  MmdHooks(std::vector<std::string> layers, tlab_strategy::da::KernelFamily k)
      : AdaptationHooks(std::move(layers), "mmd"), k_(std::move(k)) {}
  torch::Tensor term(tlab::Session&, const std::vector<torch::Tensor>& s,
                     const std::vector<torch::Tensor>& t) override {
    torch::Tensor sum;
    for (std::size_t i = 0; i < s.size(); ++i) {
      auto l = tlab_strategy::da::mk_mmd(s[i], t[i], k_);
      sum = sum.defined() ? sum + l : l;
    }
    return sum;
  }

 private:
  tlab_strategy::da::KernelFamily k_;
};

class Dan : public tlab::Strategy {
 public:
  using Options = DanOptions;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Options>()
        .include(&Options::source)
        .field("weight", &Options::weight, "trade-off lambda of the MK-MMD term")
        .range(0, 1e6)
        .field("layers", &Options::layers,
               "adapted layers, MMDs summed: \"features\" (the backbone's output) and/or "
               "\"logits\" (the head's output)")
        .min_size(1)
        .field("estimator", &Options::estimator,
               "MMD^2 estimator: biased (quadratic V-statistic), unbiased (quadratic "
               "U-statistic) or linear (the paper's linear-time estimator)")
        .choices({"biased", "unbiased", "linear"})
        .field("kernel_mul", &Options::kernel_mul,
               "ratio between consecutive Gaussian bandwidths of the family")
        .range(1.0001, 1000)
        .field("kernel_num", &Options::kernel_num,
               "number of Gaussian kernels (bandwidths base * kernel_mul^(u - kernel_num/2))")
        .range(1, 64)
        .field("bandwidths", &Options::bandwidths,
               "fixed bandwidths gamma_u of exp(-||x-y||^2/gamma_u) (empty: base = the mean "
               "squared distance in the joint batch, times kernel_mul powers)")
        .range(1e-12, 1e12);
  }
  explicit Dan(Options o)
      : o_(std::move(o)),
        hooks_(o_.layers, {o_.kernel_mul, o_.kernel_num, o_.bandwidths, o_.estimator}) {
    tlab_strategy::da::check_layers(o_.layers, "dan", "layers");
  }

  void setup(tlab::Session& s) override {
    tlab_strategy::da::adapt_and_measure(s, hooks_, o_.source, o_.weight);
  }

 private:
  Options o_;
  MmdHooks hooks_;
};

TLAB_PLUGIN(Dan, "dan", "1.0.0",
            "DAN: multi-kernel MMD between source and unlabelled target activations")
