// gaussians: tabular classes drawn from isotropic Gaussians, with a source domain and a target
// domain whose shift is one number.
//
// Class k is N(mu_k, noise^2 I) with |mu_k| = separation in a random direction. The target domain
// applies a fixed rigid motion to the source distribution: a rotation by shift * 45 degrees in
// the plane of the first two class means (so the rotation moves the classes rather than a plane
// they barely occupy), then a translation by shift * separation along a fixed random direction.
// Means, direction and plane come from the data seed alone, so both domains agree on them; the
// samples of each domain and split come from their own streams, so at shift = 0 the target is a
// fresh sample of the source distribution, not a copy.

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "tlab/sdk/data.hpp"
#include "tlab/sdk/random.hpp"

namespace {

constexpr double kDegreesPerShift = 45.0;
constexpr double kPi = 3.14159265358979323846;

struct GaussiansOptions {
  /// "source" or "target" (default "source").
  std::string domain = "source";
  /// Number of classes (default 4).
  int64_t num_classes = 4;
  /// Input dimension (default 16).
  int64_t dim = 16;
  /// Labelled training examples (default 1000).
  int64_t train_size = 1000;
  /// Labelled validation examples (default 500).
  int64_t val_size = 500;
  /// Labelled test examples (default 1000).
  int64_t test_size = 1000;
  /// Extra inputs without labels, for adaptation methods (default 0).
  int64_t unlabeled_size = 0;
  /// Distance of every class mean from the origin; larger is easier (default 3).
  double separation = 3.0;
  /// Standard deviation of each class around its mean (default 1).
  double noise = 1.0;
  /// Size of the target shift; 0 gives the source distribution (default 1).
  double shift = 1.0;
  /// Data seed, independent of the run seed so every run sees the same data (default 0).
  int64_t seed = 0;
};

// Derives independent generator seeds from (parent, child) with the SDK's SplitMix64 mix. Not
// tlab::stream_seed (which also adds the golden gamma after the xor): changing it would change
// every published data set of this plugin.
uint64_t stream(uint64_t parent, uint64_t child) {
  return tlab::mix64(parent ^ (child * 0xD1B54A32D192ED03ULL + 0x9E3779B97F4A7C15ULL));
}

at::Generator generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

torch::Tensor unit(const torch::Tensor& v) { return v / v.norm(); }

void at_least(const char* key, int64_t value, int64_t lo) {
  if (value < lo)
    throw std::invalid_argument("gaussians: " + std::string(key) + " '" + std::to_string(value) +
                                "' is too small; expected at least " + std::to_string(lo));
}

// What both domains share: the class means and the target's motion.
struct Geometry {
  torch::Tensor means;        // num_classes x dim
  torch::Tensor translation;  // dim
  torch::Tensor u, v;         // orthonormal basis of the rotation plane
};

enum Stream : uint64_t { kGeometry = 1, kSource = 2, kTarget = 3 };
enum SplitId : uint64_t { kTrain = 1, kVal = 2, kTest = 3, kUnlabeled = 4 };

class Gaussians : public tlab::Dataset {
 public:
  using Options = GaussiansOptions;

  static tlab::Schema schema() {
    using O = Options;
    return tlab::SchemaFor<O>()
        .field("domain", &O::domain, "source, or target (the source moved by `shift`)")
        .choices({"source", "target"})
        .field("num_classes", &O::num_classes, "number of classes")
        .range(2, 1000)
        .field("dim", &O::dim, "input dimension")
        .range(2, 100000)
        .field("train_size", &O::train_size, "labelled training examples")
        .range(0, 10000000)
        .field("val_size", &O::val_size, "labelled validation examples")
        .range(0, 10000000)
        .field("test_size", &O::test_size, "labelled test examples")
        .range(0, 10000000)
        .field("unlabeled_size", &O::unlabeled_size, "inputs without labels")
        .range(0, 10000000)
        .field("separation", &O::separation, "distance of each class mean from the origin")
        .range(0.0, 1000.0)
        .field("noise", &O::noise, "standard deviation of each class")
        .range(1e-6, 1000.0)
        .field("shift", &O::shift,
               "target shift: rotate by shift*45 deg, translate by shift*separation; 0 = none")
        .range(0.0, 100.0)
        .field("seed", &O::seed, "data seed, independent of the run seed")
        .min(0);
  }

  // The host validates bounds before a run; these checks guard direct use of the factory.
  explicit Gaussians(Options options) : options_(std::move(options)) {
    if (options_.domain != "source" && options_.domain != "target")
      throw std::invalid_argument("gaussians: unknown domain '" + options_.domain +
                                  "'; expected one of: source, target");
    at_least("num_classes", options_.num_classes, 2);
    at_least("dim", options_.dim, 2);
    at_least("train_size", options_.train_size, 0);
    at_least("val_size", options_.val_size, 0);
    at_least("test_size", options_.test_size, 0);
    at_least("unlabeled_size", options_.unlabeled_size, 0);
  }

  tlab::DomainData load(tlab::Context& /*ctx*/) override {
    const int64_t k = options_.num_classes, dim = options_.dim;
    // Geometry, shared by both domains. Computed in double and rounded once at the end.
    auto gen = generator(stream(static_cast<uint64_t>(options_.seed), kGeometry));
    const auto f64 = torch::dtype(torch::kDouble);
    torch::Tensor directions = torch::randn({k, dim}, gen, f64);
    Geometry g;
    g.means = directions / directions.norm(2, 1, true) * options_.separation;
    g.translation = unit(torch::randn({dim}, gen, f64)) * options_.shift * options_.separation;
    // The plane of the first two mean directions, made orthonormal by Gram-Schmidt.
    g.u = unit(directions[0]);
    g.v = unit(directions[1] - (directions[1] * g.u).sum() * g.u);

    tlab::DomainData d;
    d.name = options_.domain;
    d.num_classes = k;
    d.input_shape = {dim};
    d.train = make(g, kTrain, options_.train_size);
    d.val = make(g, kVal, options_.val_size);
    d.test = make(g, kTest, options_.test_size);
    if (options_.unlabeled_size > 0) d.unlabeled = make(g, kUnlabeled, options_.unlabeled_size).x;
    return d;
  }

 private:
  // Balanced labels (round robin, then shuffled) and their samples, from a stream of this
  // domain and split.
  // Rows generated at once (a multiple of 16: see make()).
  static constexpr int64_t kChunkRows = 4096;

  tlab::Split make(const Geometry& g, SplitId split, int64_t n) const {
    const bool target = options_.domain == "target";
    const uint64_t seed = static_cast<uint64_t>(options_.seed);
    auto gen = generator(stream(stream(seed, target ? kTarget : kSource), split));
    torch::Tensor y = torch::arange(n, torch::kLong).remainder(options_.num_classes);
    y = y.index_select(0, torch::randperm(n, gen, torch::kLong));
    // means[y] + noise * N(0, 1), made in chunks of rows and rounded to float chunk by chunk,
    // so that at most two chunk-sized double tensors live besides the float result (one float
    // copy of the data, not four double ones). The values are bit for bit those of one
    // n x dim draw: LibTorch fills a contiguous double tensor of >= 16 values by drawing all
    // its uniforms first and transforming them 16 at a time, so chunks whose sizes are
    // multiples of 16 (and a last chunk of >= 16 values) consume the generator identically;
    // IEEE products and sums commute, so the in-place forms equal the expression.
    const int64_t dim = options_.dim;
    torch::Tensor out = torch::empty({n, dim}, torch::kFloat);
    const double t = options_.shift * kDegreesPerShift * kPi / 180.0;
    const double c = std::cos(t), s = std::sin(t);
    for (int64_t begin = 0; begin < n;) {
      int64_t end = std::min(n, begin + kChunkRows);
      if ((n - end) * dim < 16) end = n;  // a short tail joins this chunk
      torch::Tensor x = torch::randn({end - begin, dim}, gen, torch::kDouble);
      x.mul_(options_.noise).add_(g.means.index_select(0, y.slice(0, begin, end)));
      if (target) {
        // Rotation by angle t in the (u, v) plane: x + a((c-1)u + s v) + b((c-1)v - s u),
        // with a = x.u and b = x.v; components outside the plane are unchanged. Added term by
        // term in the same order as ((x + A) + B) + T.
        torch::Tensor a = (x * g.u).sum(1, true), b = (x * g.v).sum(1, true);
        x.add_(a * ((c - 1) * g.u + s * g.v));
        x.add_(b * ((c - 1) * g.v - s * g.u));
        x.add_(g.translation);
      }
      out.slice(0, begin, end).copy_(x);
      begin = end;
    }
    return {out, y};
  }

  Options options_;
};

}  // namespace

TLAB_PLUGIN(Gaussians, "gaussians", "1.0.0",
            "Gaussian classes in d dimensions with a controllable source->target shift")
