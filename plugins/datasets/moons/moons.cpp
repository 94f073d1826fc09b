// moons: two interleaving half circles in the plane (the geometry of scikit-learn's make_moons)
// with Gaussian noise. The target domain is the same picture rotated by `angle` degrees about
// the centre of the data, a covariate shift that keeps the labels.
//
// Class 0 is the upper half circle (cos t, sin t), class 1 the lower one (1 - cos t,
// 0.5 - sin t), with t uniform in [0, pi] (make_moons spaces t evenly; random t lets every split
// be an independent sample). The centre of the two moons is (0.5, 0.25).

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "tlab/sdk/data.hpp"
#include "tlab/sdk/random.hpp"

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kCentreX = 0.5, kCentreY = 0.25;

struct MoonsOptions {
  /// "source" or "target" (default "source").
  std::string domain = "source";
  /// Rotation of the target about the data centre, in degrees (default 30).
  double angle = 30.0;
  /// Standard deviation of the Gaussian noise added to each point (default 0.1).
  double noise = 0.1;
  /// Labelled training examples (default 1000).
  int64_t train_size = 1000;
  /// Labelled validation examples (default 200).
  int64_t val_size = 200;
  /// Labelled test examples (default 1000).
  int64_t test_size = 1000;
  /// Extra inputs without labels from the same domain (default 0).
  int64_t unlabeled_size = 0;
  /// Data seed, independent of the run seed so every run sees the same data (default 0).
  int64_t seed = 0;
};

// Derives independent generator seeds from (parent, child) with the SDK's SplitMix64 mix. Not
// tlab::stream_seed (which also adds the golden gamma after the xor): changing it would change
// every published data set of this plugin.
uint64_t stream(uint64_t parent, uint64_t child) {
  return tlab::mix64(parent ^ (child * 0xD1B54A32D192ED03ULL + 0x9E3779B97F4A7C15ULL));
}

enum Stream : uint64_t { kSource = 1, kTarget = 2 };
enum SplitId : uint64_t { kTrain = 1, kVal = 2, kTest = 3, kUnlabeled = 4 };

class Moons : public tlab::Dataset {
 public:
  using Options = MoonsOptions;

  static tlab::Schema schema() {
    using O = Options;
    return tlab::SchemaFor<O>()
        .field("domain", &O::domain, "source, or target (the source rotated by `angle`)")
        .choices({"source", "target"})
        .field("angle", &O::angle, "rotation of the target about the data centre, in degrees")
        .range(-360.0, 360.0)
        .field("noise", &O::noise, "standard deviation of the Gaussian noise on each point")
        .range(0.0, 10.0)
        .field("train_size", &O::train_size, "labelled training examples")
        .range(0, 10000000)
        .field("val_size", &O::val_size, "labelled validation examples")
        .range(0, 10000000)
        .field("test_size", &O::test_size, "labelled test examples")
        .range(0, 10000000)
        .field("unlabeled_size", &O::unlabeled_size, "inputs without labels, same domain")
        .range(0, 10000000)
        .field("seed", &O::seed, "data seed, independent of the run seed")
        .min(0);
  }

  // The host validates bounds before a run; these checks guard direct use of the factory.
  explicit Moons(Options options) : o_(std::move(options)) {
    if (o_.domain != "source" && o_.domain != "target")
      throw std::invalid_argument("moons: unknown domain '" + o_.domain +
                                  "'; expected one of: source, target");
    if (!(o_.noise >= 0.0))
      throw std::invalid_argument("moons: noise " + std::to_string(o_.noise) +
                                  " is negative; expected a standard deviation >= 0");
    const std::pair<const char*, int64_t> sizes[] = {{"train_size", o_.train_size},
                                                     {"val_size", o_.val_size},
                                                     {"test_size", o_.test_size},
                                                     {"unlabeled_size", o_.unlabeled_size}};
    for (const auto& [key, n] : sizes)
      if (n < 0)
        throw std::invalid_argument("moons: " + std::string(key) + " '" + std::to_string(n) +
                                    "' is negative; expected a count >= 0");
  }

  tlab::DomainData load(tlab::Context& /*ctx*/) override {
    tlab::DomainData d;
    d.name = o_.domain;
    d.num_classes = 2;
    d.input_shape = {2};
    d.train = make(kTrain, o_.train_size);
    d.val = make(kVal, o_.val_size);
    d.test = make(kTest, o_.test_size);
    if (o_.unlabeled_size > 0) d.unlabeled = make(kUnlabeled, o_.unlabeled_size).x;
    return d;
  }

 private:
  // Balanced labels (round robin, then shuffled) and their points, from a generator of this
  // domain and split. Computed in double and rounded once at the end.
  tlab::Split make(SplitId split, int64_t n) const {
    const bool target = o_.domain == "target";
    const uint64_t seed = static_cast<uint64_t>(o_.seed);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(
        stream(stream(seed, target ? kTarget : kSource), split));
    const auto f64 = torch::dtype(torch::kDouble);
    torch::Tensor y = torch::arange(n, torch::kLong).remainder(2);
    y = y.index_select(0, torch::randperm(n, gen, torch::kLong));
    torch::Tensor t = torch::rand({n}, gen, f64) * kPi;
    torch::Tensor inner = y.to(torch::kDouble);  // 1 for the lower moon
    torch::Tensor px = t.cos() * (1 - 2 * inner) + inner;
    torch::Tensor py = t.sin() * (1 - 2 * inner) + 0.5 * inner;
    torch::Tensor x = torch::stack({px, py}, 1) + o_.noise * torch::randn({n, 2}, gen, f64);
    if (target) {
      const double a = o_.angle * kPi / 180.0, c = std::cos(a), s = std::sin(a);
      torch::Tensor dx = x.select(1, 0) - kCentreX, dy = x.select(1, 1) - kCentreY;
      x = torch::stack({kCentreX + c * dx - s * dy, kCentreY + s * dx + c * dy}, 1);
    }
    return {x.to(torch::kFloat), y};
  }

  Options o_;
};

}  // namespace

TLAB_PLUGIN(Moons, "moons", "1.0.0",
            "Two interleaving half circles in the plane; the target is rotated about the centre")
