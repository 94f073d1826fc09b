// digits: handwritten-style digits 0-9 at 1x28x28, rendered procedurally from stroke skeletons (no
// fonts or files), in several visual domains that share the same ten classes.
//
// Each example draws, from its own random stream, a glyph variant, a smooth warp and a pose
// (scale, aspect, slant, rotation, position, pen width, ink), then rasterises the strokes with
// anti-aliasing: a pixel's ink is the coverage of a pen of that width at the distance from the
// pixel centre to the nearest segment. The domain acts on top of the same base draw, so equal
// seeds give paired domains (as in Rotated MNIST) and `inverted` is exactly 1 - `clean`; give the
// target domain another seed for unpaired digits.

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/types.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tlab/sdk/data.hpp"
#include "tlab/sdk/random.hpp"

namespace {

constexpr int64_t kSide = 28;
constexpr int64_t kPixels = kSide * kSide;
constexpr int64_t kClasses = 10;
constexpr double kPi = 3.14159265358979323846;
constexpr double kDeg = kPi / 180.0;

struct DigitsOptions {
  /// Visual domain: clean, rotated, inverted, noisy, thick or small (default "clean").
  std::string domain = "clean";
  /// Labelled training examples (default 5000).
  int64_t train_size = 5000;
  /// Labelled validation examples (default 1000).
  int64_t val_size = 1000;
  /// Labelled test examples (default 1000).
  int64_t test_size = 1000;
  /// Extra inputs without labels, for adaptation methods (default 0).
  int64_t unlabeled_size = 0;
  /// Data seed, independent of the run seed so every run sees the same data (default 0).
  int64_t seed = 0;
  /// Fraction of labels (every split) replaced by a uniformly drawn class, the images unchanged:
  /// 1 keeps no label information (a shuffled-label source) (default 0).
  double label_noise = 0;
  /// Scale of the per-example variation in warp, slant, rotation and position (default 1).
  double variation = 1.0;
};

// The domains, from mild to severe shift for a model trained on `clean` (measured with a small
// CNN, see the plugin's report): thick (pen 4.2-5.6 px instead of 1.6-2.8), noisy (2-4 stray
// lines, then Gaussian noise of std 0.2, clamped), rotated (a further 40-70 degrees, either
// sign), small (half size, anywhere in the frame) and inverted (1 - x: white paper, dark ink).
enum class Domain { Clean, Rotated, Inverted, Noisy, Thick, Small };

const std::vector<std::string>& domain_names() {
  static const std::vector<std::string> names{"clean", "rotated", "inverted",
                                              "noisy", "thick",   "small"};
  return names;
}

Domain parse_domain(const std::string& name) {
  const auto& names = domain_names();
  auto it = std::find(names.begin(), names.end(), name);
  if (it == names.end()) {
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    throw std::invalid_argument("digits: unknown domain '" + name + "'; expected one of: " + list);
  }
  return static_cast<Domain>(it - names.begin());
}

// ---- Glyphs: polylines in a unit box, x to the right, y down. ---------------------------------

struct Pt {
  double x, y;
};
using Stroke = std::vector<Pt>;
using Glyph = std::vector<Stroke>;

// Elliptic arc; angles in degrees with y down (0 right, 90 bottom, 180 left, 270 top), so that
// increasing angles run clockwise on screen. About 16 segments per full turn.
Stroke arc(double cx, double cy, double rx, double ry, double from, double to) {
  const int n = std::max(2, static_cast<int>(std::ceil(std::abs(to - from) / 22.5)));
  Stroke s;
  for (int i = 0; i <= n; ++i) {
    const double a = (from + (to - from) * i / n) * kDeg;
    s.push_back({cx + rx * std::cos(a), cy + ry * std::sin(a)});
  }
  return s;
}

// Quadratic Bezier curve from a to b pulled towards c.
Stroke bezier(Pt a, Pt c, Pt b, int n = 6) {
  Stroke s;
  for (int i = 0; i <= n; ++i) {
    const double t = static_cast<double>(i) / n, u = 1.0 - t;
    s.push_back(
        {u * u * a.x + 2 * u * t * c.x + t * t * b.x, u * u * a.y + 2 * u * t * c.y + t * t * b.y});
  }
  return s;
}

// Continues polyline `a` with `b` (whose first point replaces a's last one).
Stroke then(Stroke a, const Stroke& b) {
  a.pop_back();
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A figure-of-eight in one stroke, as many people write an 8.
Stroke figure_eight() {
  Stroke s;
  for (int i = 0; i <= 24; ++i) {
    const double t = 2 * kPi * i / 24;
    s.push_back({0.5 - 0.36 * std::sin(2 * t), 0.5 - 0.5 * std::cos(t)});
  }
  return s;
}

// Two or three writing styles per digit, so that a class is not one template.
const std::array<std::vector<Glyph>, kClasses>& glyphs() {
  static const std::array<std::vector<Glyph>, kClasses> table{{
      // 0: round, and narrow with the pen overshooting where it started.
      {{arc(0.5, 0.5, 0.45, 0.5, 0, 360)}, {arc(0.5, 0.5, 0.33, 0.5, 250, 630)}},
      // 1: a bar; with a flag; with a flag and a base.
      {{{{0.5, 0.0}, {0.5, 1.0}}},
       {{{0.3, 0.2}, {0.55, 0.0}, {0.55, 1.0}}},
       {{{0.3, 0.2}, {0.55, 0.0}, {0.55, 1.0}}, {{0.2, 1.0}, {0.9, 1.0}}}},
      // 2: straight neck; curved neck; with a loop at the bottom.
      {{then(arc(0.5, 0.3, 0.42, 0.3, 195, 380), {{0.88, 0.4}, {0.05, 1.0}, {0.95, 1.0}})},
       {then(then(arc(0.5, 0.28, 0.42, 0.28, 190, 370),
                  bezier({0.91, 0.33}, {0.85, 0.7}, {0.05, 1.0})),
             {{0.05, 1.0}, {0.95, 0.97}})},
       {then(arc(0.5, 0.3, 0.42, 0.3, 195, 380), {{0.88, 0.4},
                                                  {0.25, 0.88},
                                                  {0.12, 0.98},
                                                  {0.02, 0.88},
                                                  {0.12, 0.78},
                                                  {0.28, 0.9},
                                                  {0.4, 1.0},
                                                  {0.95, 0.98}})}},
      // 3: two bowls; flat top.
      {{arc(0.5, 0.26, 0.38, 0.26, 200, 450), arc(0.5, 0.74, 0.45, 0.26, 270, 520)},
       {then(Stroke{{0.1, 0.0}, {0.9, 0.0}, {0.42, 0.4}}, arc(0.5, 0.7, 0.45, 0.3, 245, 500))}},
      // 4: closed; open top.
      {{{{0.72, 1.0}, {0.72, 0.0}, {0.05, 0.68}, {0.95, 0.68}}},
       {{{0.2, 0.0}, {0.1, 0.6}, {0.95, 0.6}}, {{0.72, 0.08}, {0.72, 1.0}}}},
      // 5: round belly; angular belly.
      {{then(Stroke{{0.85, 0.0}, {0.2, 0.0}, {0.16, 0.43}}, arc(0.48, 0.68, 0.42, 0.32, 232, 500))},
       {{{0.2, 0.0}, {0.17, 0.45}, {0.7, 0.42}, {0.88, 0.62}, {0.8, 0.9}, {0.5, 1.0}, {0.1, 0.9}},
        {{0.2, 0.0}, {0.88, 0.0}}}},
      // 6: curved stem; straight stem.
      {{then(bezier({0.8, 0.02}, {0.15, 0.15}, {0.12, 0.7}), arc(0.48, 0.7, 0.36, 0.29, 180, 540))},
       {then(Stroke{{0.7, 0.0}, {0.14, 0.66}}, arc(0.5, 0.7, 0.36, 0.29, 180, 540))}},
      // 7: plain; with a crossbar; with a serif on the left.
      {{{{0.05, 0.0}, {0.95, 0.0}, {0.35, 1.0}}},
       {{{0.05, 0.0}, {0.95, 0.0}, {0.35, 1.0}}, {{0.4, 0.52}, {0.88, 0.52}}},
       {{{0.05, 0.2}, {0.05, 0.0}, {0.95, 0.0}, {0.45, 1.0}}}},
      // 8: two loops; one figure-of-eight stroke.
      {{arc(0.5, 0.25, 0.33, 0.25, 90, 450), arc(0.5, 0.72, 0.42, 0.28, 270, 630)},
       {figure_eight()}},
      // 9: straight tail; curved tail.
      {{arc(0.5, 0.3, 0.4, 0.3, 0, 360), {{0.9, 0.3}, {0.85, 1.0}}},
       {then(arc(0.5, 0.3, 0.4, 0.3, 0, 360), bezier({0.9, 0.3}, {0.9, 0.95}, {0.3, 1.0}))}},
  }};
  return table;
}

// ---- Rasterisation -----------------------------------------------------------------------------

struct Seg {
  double ax, ay, bx, by;
};

// Draws segments with a pen `width` pixels wide and intensity `ink` into a 28x28 image, keeping the
// maximum where strokes overlap. A pixel's ink is the 1-D box-filter coverage of the pen across
// the pixel at its centre's distance from the segment: cheap anti-aliasing that stays faithful
// for pens thinner than a pixel. Only the pixels in each segment's bounding box are visited.
void draw(const std::vector<Seg>& segs, double width, double ink, float* img) {
  const double half = 0.5 * width;
  const double reach = half + 0.5;
  auto cell = [](double v) { return static_cast<int64_t>(std::floor(v)); };
  for (const Seg& s : segs) {
    const int64_t x0 = std::max<int64_t>(0, cell(std::min(s.ax, s.bx) - reach));
    const int64_t x1 = std::min<int64_t>(kSide - 1, cell(std::max(s.ax, s.bx) + reach));
    const int64_t y0 = std::max<int64_t>(0, cell(std::min(s.ay, s.by) - reach));
    const int64_t y1 = std::min<int64_t>(kSide - 1, cell(std::max(s.ay, s.by) + reach));
    const double vx = s.bx - s.ax, vy = s.by - s.ay;
    const double len2 = vx * vx + vy * vy;
    const double inv = len2 > 1e-12 ? 1.0 / len2 : 0.0;
    for (int64_t y = y0; y <= y1; ++y) {
      for (int64_t x = x0; x <= x1; ++x) {
        const double dx = static_cast<double>(x) + 0.5 - s.ax;
        const double dy = static_cast<double>(y) + 0.5 - s.ay;
        const double t = std::clamp((dx * vx + dy * vy) * inv, 0.0, 1.0);
        const double ex = dx - t * vx, ey = dy - t * vy;
        const double d = std::sqrt(ex * ex + ey * ey);
        const double cover = std::min(0.5, d + half) - std::max(-0.5, d - half);
        if (cover <= 0) continue;
        float& p = img[y * kSide + x];
        p = std::max(p, static_cast<float>(cover * ink));
      }
    }
  }
}

// ---- One example -------------------------------------------------------------------------------

// Renders digit `label` into `img` (zeroed, 784 floats). Every random draw of the base look is
// made in the same order whatever the domain, so domains differ only by what they add on top.
void render(int64_t label, Domain domain, double variation, tlab::SplitMix64& rng, float* img) {
  const auto& variants = glyphs()[label];
  const Glyph& glyph = variants[rng.index(static_cast<int64_t>(variants.size()))];

  // A smooth random warp (one low-frequency wave per axis) bends strokes the way a hand does,
  // without the wobble that independent per-vertex noise gives densely sampled curves.
  const double v = variation;
  const double wx = rng.uniform(-0.04, 0.04) * v, wy = rng.uniform(-0.04, 0.04) * v;
  const double fx = rng.uniform(1.0, 2.5), fy = rng.uniform(1.0, 2.5);
  const double px = rng.uniform(0, 2 * kPi), py = rng.uniform(0, 2 * kPi);
  const double height = rng.uniform(17.0, 21.0);
  const double aspect = rng.uniform(0.6, 0.85);
  const double slant = rng.uniform(-0.25, 0.25) * v;
  double angle = rng.uniform(-10.0, 10.0) * kDeg * v;
  double cx = kSide / 2.0 + rng.uniform(-1.5, 1.5) * v;
  double cy = kSide / 2.0 + rng.uniform(-1.5, 1.5) * v;
  const double pen = rng.uniform();
  const double ink = rng.uniform(0.85, 1.0);
  // Drawn for every domain so that the base look above never depends on the domain.
  const double big_angle = rng.sign() * rng.uniform(40.0, 70.0) * kDeg;
  const double small_scale = rng.uniform(0.45, 0.6);
  const double small_dx = rng.uniform(-7.0, 7.0), small_dy = rng.uniform(-7.0, 7.0);

  double scale = 1.0, width = 1.6 + pen * 1.2;
  switch (domain) {
    case Domain::Rotated:
      angle += big_angle;
      break;
    case Domain::Thick:
      width = 4.2 + pen * 1.4;
      break;
    case Domain::Small:
      scale = small_scale;
      width *= 0.75;
      cx = kSide / 2.0 + small_dx;
      cy = kSide / 2.0 + small_dy;
      break;
    default:
      break;
  }

  const double h = height * scale, w = h * aspect;
  const double ca = std::cos(angle), sa = std::sin(angle);
  auto place = [&](Pt p) {
    const double qx = p.x + wx * std::sin(2 * kPi * fx * p.y + px) + rng.uniform(-0.01, 0.01) * v;
    const double qy = p.y + wy * std::sin(2 * kPi * fy * p.x + py) + rng.uniform(-0.01, 0.01) * v;
    const double y = (qy - 0.5) * h;
    const double x = (qx - 0.5) * w - slant * y;  // y grows downwards: positive slant leans right
    return Pt{cx + ca * x - sa * y, cy + sa * x + ca * y};
  };
  std::vector<Seg> segs;
  for (const Stroke& stroke : glyph) {
    Pt a = place(stroke[0]);
    for (size_t i = 1; i < stroke.size(); ++i) {
      const Pt b = place(stroke[i]);
      segs.push_back({a.x, a.y, b.x, b.y});
      a = b;
    }
  }
  draw(segs, width, ink, img);

  if (domain == Domain::Noisy) {
    // Clutter: a few stray pen lines, fainter and thinner than the digit.
    const int64_t lines = 2 + rng.index(3);
    for (int64_t i = 0; i < lines; ++i) {
      const double x = rng.uniform(2, kSide - 2), y = rng.uniform(2, kSide - 2);
      const double len = rng.uniform(5, 14), dir = rng.uniform(0, kPi);
      const double dx = 0.5 * len * std::cos(dir), dy = 0.5 * len * std::sin(dir);
      draw({{x - dx, y - dy, x + dx, y + dy}}, rng.uniform(1.0, 1.8), rng.uniform(0.5, 0.9), img);
    }
  }
}

// ---- Splits ------------------------------------------------------------------------------------

enum SplitId : uint64_t { kTrain = 1, kVal = 2, kTest = 3, kUnlabeled = 4 };

class Digits : public tlab::Dataset {
 public:
  using Options = DigitsOptions;

  static tlab::Schema schema() {
    using O = Options;
    return tlab::SchemaFor<O>()
        .field("domain", &O::domain, "visual domain (the same ten classes in every domain)")
        .choices(domain_names())
        .field("train_size", &O::train_size, "labelled training examples")
        .range(0, 1000000)
        .field("val_size", &O::val_size, "labelled validation examples")
        .range(0, 1000000)
        .field("test_size", &O::test_size, "labelled test examples")
        .range(0, 1000000)
        .field("unlabeled_size", &O::unlabeled_size, "inputs without labels")
        .range(0, 1000000)
        .field("seed", &O::seed, "data seed, independent of the run seed")
        .min(0)
        .field("variation", &O::variation, "scale of per-example shape and pose variation")
        .range(0.0, 2.0)
        .field("label_noise", &O::label_noise,
               "fraction of labels replaced by a random class (1 = no label information left)")
        .range(0.0, 1.0);
  }

  // The host validates bounds before a run; this check guards direct use of the factory.
  explicit Digits(Options options)
      : options_(std::move(options)), domain_(parse_domain(options_.domain)) {
    const std::pair<const char*, int64_t> sizes[] = {{"train_size", options_.train_size},
                                                     {"val_size", options_.val_size},
                                                     {"test_size", options_.test_size},
                                                     {"unlabeled_size", options_.unlabeled_size}};
    for (const auto& [key, n] : sizes)
      if (n < 0)
        throw std::invalid_argument("digits: " + std::string(key) + " '" + std::to_string(n) +
                                    "' is negative; expected a count >= 0");
  }

  tlab::DomainData load(tlab::Context& /*ctx*/) override {
    tlab::DomainData d;
    d.name = options_.domain;
    d.num_classes = kClasses;
    d.input_shape = {1, kSide, kSide};
    d.train = make(kTrain, options_.train_size);
    d.val = make(kVal, options_.val_size);
    d.test = make(kTest, options_.test_size);
    if (options_.unlabeled_size > 0) d.unlabeled = make(kUnlabeled, options_.unlabeled_size).x;
    return d;
  }

 private:
  // Balanced labels (round robin, then shuffled), each example rendered from its own stream so
  // that results do not depend on the number of threads; splits use distinct streams.
  tlab::Split make(SplitId split, int64_t n) const {
    const uint64_t base = tlab::stream_seed(static_cast<uint64_t>(options_.seed), split);
    std::vector<int64_t> labels(n);
    for (int64_t i = 0; i < n; ++i) labels[i] = i % kClasses;
    tlab::SplitMix64 shuffle(tlab::stream_seed(base, 0));
    for (int64_t i = n - 1; i > 0; --i) std::swap(labels[i], labels[shuffle.index(i + 1)]);

    torch::Tensor x = torch::zeros({n, 1, kSide, kSide}, torch::kFloat);
    float* pixels = x.data_ptr<float>();
    at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        tlab::SplitMix64 rng(tlab::stream_seed(base, static_cast<uint64_t>(i) + 1));
        render(labels[i], domain_, options_.variation, rng, pixels + i * kPixels);
      }
    });

    if (domain_ == Domain::Inverted) {
      x = 1.0 - x;
    } else if (domain_ == Domain::Noisy && n > 0) {
      // Sensor noise from a generator of our own: LibTorch's global one belongs to the run seed.
      auto gen = at::make_generator<at::CPUGeneratorImpl>(tlab::stream_seed(base, ~uint64_t{0}));
      x = (x + 0.2 * torch::randn(x.sizes(), gen, torch::kFloat)).clamp_(0.0, 1.0);
    }
    if (options_.label_noise > 0) {  // after rendering: the images stay those of the true labels
      tlab::SplitMix64 noise(tlab::stream_seed(base, ~uint64_t{1}));
      for (auto& label : labels)
        if (noise.uniform(0, 1) < options_.label_noise) label = noise.index(kClasses);
    }
    torch::Tensor y = torch::from_blob(labels.data(), {n}, torch::kLong).clone();
    return {x, y};
  }

  Options options_;
  Domain domain_;
};

}  // namespace

TLAB_PLUGIN(Digits, "digits", "1.1.0",
            "Procedurally rendered digits 0-9 (1x28x28) in visual domains")
