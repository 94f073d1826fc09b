#include "run/domain_shift.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <stdexcept>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include "tlab/sdk/random.hpp"

namespace tlab {
namespace {

constexpr double kPi = 3.14159265358979323846;

struct Family {
  const char* name;
  const char* key;
  std::array<double, 5> level;  // the key's value at severities 1-5
};

// ImageNet-C's levels (Hendrycks & Dietterich 2019, its corruptions.py) for noise, blur,
// contrast and JPEG quality; elastic's are ours, up to Simard et al. 2003's alpha = 34 (sigma 4)
// for 28 x 28 digits.
const std::array<Family, 5> kFamilies = {{
    {"gaussian_noise", "noise", {0.08, 0.12, 0.18, 0.26, 0.38}},
    {"gaussian_blur", "blur", {1, 2, 3, 4, 6}},
    {"contrast", "contrast", {0.4, 0.3, 0.2, 0.1, 0.05}},
    {"jpeg_compression", "jpeg", {25, 18, 15, 10, 7}},
    {"elastic_transform", "elastic", {6, 10, 16, 24, 34}},
}};

uint64_t mix(uint64_t z) { return SplitMix64(z).next(); }  // tlab/sdk/random.hpp

// The generator of one example: a function of the table's seed, the split and the index.
at::Generator example_generator(int64_t seed, int split, int64_t index, int what) {
  const uint64_t s = mix(mix(mix(static_cast<uint64_t>(seed)) ^ static_cast<uint64_t>(split)) ^
                         static_cast<uint64_t>(index)) ^
                     static_cast<uint64_t>(what);
  return at::make_generator<at::CPUGeneratorImpl>(mix(s));
}

// torchvision.transforms.functional.rotate(img, angle, InterpolationMode.BILINEAR, fill=0) on
// tensors: its inverse affine matrix and _gen_affine_grid, then grid_sample.
torch::Tensor rotate(const torch::Tensor& x, double degrees) {
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  const double r = degrees * kPi / 180.0, c = std::cos(r), s = std::sin(r);
  auto opts = x.options();
  auto base = torch::empty({1, h, w, 3}, opts);
  base.select(3, 0).copy_(torch::linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w, opts));
  base.select(3, 1).copy_(torch::linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h, opts).unsqueeze(-1));
  base.select(3, 2).fill_(1);
  // theta = [[c, -s, 0], [s, c, 0]], transposed and scaled by [0.5 w, 0.5 h].
  auto theta = torch::tensor({c, s, -s, c, 0.0, 0.0}, opts).view({1, 3, 2});
  theta = theta / torch::tensor({0.5 * w, 0.5 * h}, opts);
  auto grid = base.view({1, h * w, 3}).bmm(theta).view({1, h, w, 2});
  // As torchvision with a fill value: a ones channel sampled alongside weighs the edges
  // (img * mask + (1 - mask) * fill, fill 0).
  auto mask = torch::grid_sampler(torch::ones({1, 1, h, w}, opts), grid, 0, 0, false);
  auto out = torch::grid_sampler(x, grid.expand({n, h, w, 2}), /*bilinear*/ 0, /*zeros*/ 0,
                                 /*align_corners*/ false);
  return out * mask;
}

torch::Tensor gaussian_kernel(double sigma, int64_t limit, const torch::TensorOptions& opts) {
  const int64_t radius = std::min<int64_t>(std::max<int64_t>(1, std::ceil(3 * sigma)), limit);
  auto t = torch::arange(-radius, radius + 1, opts);
  auto k = torch::exp(-(t * t) / (2 * sigma * sigma));
  return k / k.sum();
}

// Separable Gaussian blur of (N, C, H, W), edges extended (skimage's mode "nearest").
torch::Tensor blur(const torch::Tensor& x, double sigma) {
  const int64_t ch = x.size(1);
  auto k = gaussian_kernel(sigma, std::min(x.size(2), x.size(3)) - 1, x.options());
  const int64_t r = (k.size(0) - 1) / 2;
  auto y = torch::replication_pad2d(x, {r, r, r, r});
  const torch::Tensor none;
  const std::vector<int64_t> one{1, 1}, zero{0, 0};
  y = torch::conv2d(y, k.view({1, 1, 1, -1}).expand({ch, 1, 1, k.size(0)}).contiguous(), none, one,
                    zero, one, ch);
  y = torch::conv2d(y, k.view({1, 1, -1, 1}).expand({ch, 1, k.size(0), 1}).contiguous(), none, one,
                    zero, one, ch);
  return y;
}

// Elastic distortion (Simard et al. 2003): a random displacement field per example, uniform in
// [-1, 1], smoothed by a Gaussian of sigma, scaled by alpha pixels.
torch::Tensor elastic(const torch::Tensor& x, const torch::Tensor& index, double alpha,
                      double sigma, int64_t seed, int split) {
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  auto opts = x.options();
  auto field = torch::empty({n, 2, h, w}, opts);
  auto idx = index.accessor<int64_t, 1>();
  for (int64_t i = 0; i < n; ++i)
    field[i].copy_(torch::rand({2, h, w}, example_generator(seed, split, idx[i], 1), opts) * 2 - 1);
  field = blur(field, sigma) * alpha;  // pixels
  auto ys = (torch::arange(h, opts) * 2 + 1) / h - 1;
  auto xs = (torch::arange(w, opts) * 2 + 1) / w - 1;
  auto grid = torch::stack({xs.view({1, w}).expand({h, w}), ys.view({h, 1}).expand({h, w})}, -1)
                  .unsqueeze(0)
                  .expand({n, h, w, 2})
                  .clone();
  grid.select(3, 0).add_(field.select(1, 0) * (2.0 / w));
  grid.select(3, 1).add_(field.select(1, 1) * (2.0 / h));
  return torch::grid_sampler(x, grid, 0, 0, false);
}

// JPEG's quantisation of each channel as a luminance plane (no colour conversion or chroma
// subsampling): 8 x 8 DCT blocks of the pixel values (0-255, shifted by 128), divided by the
// standard luminance table scaled to `quality` (libjpeg's rule), rounded, and transformed back.
torch::Tensor jpeg(const torch::Tensor& x, int64_t quality) {
  static const double kLuma[64] = {16,  11,  10,  16,  24, 40, 51,  61,  12,  12,  14,  19,  26,
                                   58,  60,  55,  14,  13, 16, 24,  40,  57,  69,  56,  14,  17,
                                   22,  29,  51,  87,  80, 62, 18,  22,  37,  56,  68,  109, 103,
                                   77,  24,  35,  55,  64, 81, 104, 113, 92,  49,  64,  78,  87,
                                   103, 121, 120, 101, 72, 92, 95,  98,  112, 100, 103, 99};
  const double scale = quality < 50 ? 5000.0 / quality : 200.0 - 2.0 * quality;
  auto opts = x.options();
  auto q = torch::empty({8, 8}, opts);
  auto d = torch::empty({8, 8}, opts);
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) {
      q[i][j] = std::clamp(std::floor((kLuma[i * 8 + j] * scale + 50) / 100), 1.0, 255.0);
      d[i][j] = (i == 0 ? std::sqrt(1.0 / 8) : std::sqrt(2.0 / 8)) *
                std::cos(kPi * (2 * j + 1) * i / 16.0);
    }
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t ph = (8 - h % 8) % 8, pw = (8 - w % 8) % 8;
  auto v = torch::round(x * 255) - 128;
  if (ph || pw) v = torch::replication_pad2d(v, {0, pw, 0, ph});
  const int64_t bh = (h + ph) / 8, bw = (w + pw) / 8;
  auto blocks = v.view({n, c, bh, 8, bw, 8}).permute({0, 1, 2, 4, 3, 5});  // ..., 8, 8
  auto coef = d.matmul(blocks).matmul(d.t());
  coef = torch::round(coef / q) * q;
  auto back = d.t().matmul(coef).matmul(d);
  back = back.permute({0, 1, 2, 4, 3, 5}).reshape({n, c, bh * 8, bw * 8});
  back = back.slice(2, 0, h).slice(3, 0, w);
  return (torch::round(back + 128).clamp(0, 255)) / 255;
}

// Label-correlated colour (ColoredMNIST, generalised to k classes): a grey image becomes
// colour * intensity in RGB; the colour is its label's hue (i / k of the circle, full saturation)
// with probability p, otherwise another label's, drawn uniformly.
torch::Tensor colorize(const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& index,
                       double p, int64_t k, int64_t seed, int split) {
  auto opts = x.options();
  auto palette = torch::empty({std::max<int64_t>(k, 1), 3}, opts);
  for (int64_t i = 0; i < palette.size(0); ++i) {
    const double hue = 6.0 * static_cast<double>(i) / static_cast<double>(palette.size(0));
    const double f = hue - std::floor(hue);
    const int sector = static_cast<int>(std::floor(hue)) % 6;
    const double rgb[6][3] = {{1, f, 0},     {1 - f, 1, 0}, {0, 1, f},
                              {0, 1 - f, 1}, {f, 0, 1},     {1, 0, 1 - f}};
    for (int j = 0; j < 3; ++j) palette[i][j] = rgb[sector][j];
  }
  const int64_t n = x.size(0);
  auto colour = torch::empty({n}, torch::kLong);
  auto idx = index.accessor<int64_t, 1>();
  auto lab = y.accessor<int64_t, 1>();
  for (int64_t i = 0; i < n; ++i) {
    auto g = example_generator(seed, split, idx[i], 2);
    auto u = torch::rand({2}, g, torch::kDouble);
    int64_t c = lab[i];
    if (k > 1 && u[0].item<double>() >= p) {  // another label's colour
      int64_t other = std::min<int64_t>(k - 2, static_cast<int64_t>(u[1].item<double>() * (k - 1)));
      c = other >= lab[i] ? other + 1 : other;
    }
    colour[i] = c;
  }
  auto rgb = palette.index_select(0, colour).view({n, 3, 1, 1});
  return x * rgb;  // (N, 1, H, W) * (N, 3, 1, 1)
}

/// Examples of a stream, reindexed (classes) and transformed one at a time.
class ShiftedSource : public ExampleSource {
 public:
  ShiftedSource(std::shared_ptr<ExampleSource> base, torch::Tensor rows, torch::Tensor labels,
                DomainShift shift, int split, int64_t num_classes)
      : base_(std::move(base)),
        rows_(std::move(rows)),
        labels_(std::move(labels)),
        shift_(std::move(shift)),
        split_(split),
        num_classes_(num_classes) {}
  torch::Tensor get(int64_t index, uint64_t seed) const override {
    const int64_t row = rows_.defined() ? rows_[index].item<int64_t>() : index;
    torch::Tensor x = base_->get(row, seed);
    if (!shift_.transforms()) return x;
    auto batch = x.to(torch::kFloat).unsqueeze(0);
    auto out = transform_images(batch, labels_.slice(0, index, index + 1),
                                torch::tensor({row}, torch::kLong), shift_, split_, num_classes_);
    return out.squeeze(0);
  }
  int workers() const override { return base_->workers(); }

 private:
  std::shared_ptr<ExampleSource> base_;
  torch::Tensor rows_, labels_;
  DomainShift shift_;
  int split_;
  int64_t num_classes_;
};

// The first transform `s` uses, as its key (for errors).
std::string first_key(const DomainShift& s) {
  if (!s.corruption.empty()) return "corruption";
  if (s.rotate != 0 || !s.rotations.empty()) return "rotate";
  if (s.hflip) return "hflip";
  if (s.vflip) return "vflip";
  if (s.elastic > 0) return "elastic";
  if (s.blur > 0) return "blur";
  if (s.contrast != 1) return "contrast";
  if (s.invert) return "invert";
  if (s.jpeg) return "jpeg";
  if (s.noise > 0) return "noise";
  return "color";
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::vector<std::string> parts;
  for (int64_t v : shape) parts.push_back(std::to_string(v));
  return "[" + fmt::format("{}", fmt::join(parts, ", ")) + "]";
}

}  // namespace

bool DomainShift::transforms() const {
  return rotate != 0 || !rotations.empty() || hflip || vflip || elastic > 0 || blur > 0 ||
         contrast != 1 || invert || jpeg != 0 || noise > 0 || color >= 0 || !corruption.empty();
}

bool DomainShift::any() const { return !classes.empty() || transforms(); }

const std::vector<std::string>& corruption_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& f : kFamilies) v.push_back(f.name);
    return v;
  }();
  return names;
}

std::string corruption_key(const std::string& corruption) {
  for (const auto& f : kFamilies)
    if (corruption == f.name) return f.key;
  return "";
}

DomainShift effective(const DomainShift& s) {
  DomainShift e = s;
  for (const auto& f : kFamilies) {
    if (s.corruption != f.name || s.severity < 1 || s.severity > 5) continue;
    const double v = f.level[static_cast<std::size_t>(s.severity - 1)];
    const std::string key = f.key;
    if (key == "noise") e.noise = v;
    if (key == "blur") e.blur = v;
    if (key == "contrast") e.contrast = v;
    if (key == "jpeg") e.jpeg = static_cast<int64_t>(v);
    if (key == "elastic") {
      e.elastic = v;
      e.elastic_sigma = 4;
    }
  }
  e.corruption.clear();
  e.severity = 0;
  return e;
}

torch::Tensor transform_images(const torch::Tensor& images, const torch::Tensor& y,
                               const torch::Tensor& index, const DomainShift& shift, int split,
                               int64_t num_classes) {
  const DomainShift s = effective(shift);
  torch::NoGradGuard no_grad;
  torch::Tensor x = images.to(torch::kFloat).contiguous();
  if (s.rotate != 0) x = rotate(x, s.rotate);
  if (s.hflip) x = x.flip({3});
  if (s.vflip) x = x.flip({2});
  if (s.elastic > 0) x = elastic(x, index, s.elastic, s.elastic_sigma, s.seed, split);
  if (s.blur > 0) x = blur(x, s.blur);
  if (s.contrast != 1) {
    auto m = x.mean({2, 3}, true);
    x = ((x - m) * s.contrast + m).clamp(0, 1);
  }
  if (s.invert) x = 1 - x;
  if (s.jpeg) x = jpeg(x.clamp(0, 1), s.jpeg);
  if (s.noise > 0) {
    auto idx = index.accessor<int64_t, 1>();
    auto noise = torch::empty_like(x);
    for (int64_t i = 0; i < x.size(0); ++i)
      noise[i].copy_(
          torch::randn(x[i].sizes(), example_generator(s.seed, split, idx[i], 3), x.options()));
    x = (x + noise * s.noise).clamp(0, 1);
  }
  if (s.color >= 0) x = colorize(x, y, index, s.color, num_classes, s.seed, split);
  return x.contiguous();
}

namespace {

// Several angles: the domain once per angle (each with that single angle), pooled split by split.
DomainData pool_rotations(const DomainData& d, const DomainShift& s, const std::string& role,
                          std::vector<std::pair<std::string, int64_t>>* val_domains) {
  if (d.train.streamed() || d.val.streamed() || d.test.streamed())
    throw std::invalid_argument(fmt::format(
        "{}.transform.rotate = a list of angles pools one domain per angle, which needs resident "
        "data, but the dataset streams its examples; give one angle per run (a sweep: -m "
        "{}.transform.rotate=0,15,30)",
        role, role));
  std::vector<DomainData> parts;
  for (std::size_t k = 0; k < s.rotations.size(); ++k) {
    DomainShift one = s;
    one.rotations.clear();
    one.rotate = s.rotations[k];
    one.seed = s.seed + static_cast<int64_t>(k) * 7919;  // other draws in each domain
    parts.push_back(apply_shift(d, one, role));
    if (val_domains)
      val_domains->emplace_back(fmt::format("rotate_{:g}", s.rotations[k]),
                                parts.back().val.size());
  }
  DomainData out = parts.front();
  auto cat = [&](auto member) {
    std::vector<torch::Tensor> xs, ys;
    for (auto& p : parts) {
      Split& sp = p.*member;
      if (sp.size() == 0) return;
      xs.push_back(sp.x);
      ys.push_back(sp.y);
    }
    (out.*member).x = torch::cat(xs);
    (out.*member).y = torch::cat(ys);
  };
  cat(&DomainData::train);
  cat(&DomainData::val);
  cat(&DomainData::test);
  if (out.unlabeled.defined() && out.unlabeled.size(0) > 0) {
    std::vector<torch::Tensor> us;
    for (auto& p : parts) us.push_back(p.unlabeled);
    out.unlabeled = torch::cat(us);
  }
  std::vector<std::string> angles;
  for (double a : s.rotations) angles.push_back(fmt::format("{:g}", a));
  out.name = fmt::format("{} rotated {}", d.name, fmt::join(angles, "/"));
  return out;
}

}  // namespace

DomainData apply_shift(DomainData d, const DomainShift& s, const std::string& role,
                       std::vector<std::pair<std::string, int64_t>>* val_domains) {
  if (val_domains) val_domains->clear();
  if (!s.any()) return d;
  if (!s.rotations.empty()) {
    // The classes first (once), then one domain per angle.
    DomainShift classes_only;
    classes_only.classes = s.classes;
    DomainShift rest = s;
    rest.classes.clear();
    return pool_rotations(apply_shift(std::move(d), classes_only, role), rest, role, val_domains);
  }
  // class_subset: each split keeps the examples of these labels, relabelled in their order.
  std::vector<torch::Tensor> rows(3);  // per labelled split: the original rows kept
  Split* splits[3] = {&d.train, &d.val, &d.test};
  const char* names[3] = {"train", "val", "test"};
  if (!s.classes.empty()) {
    std::vector<std::string> listed;
    for (int64_t k : s.classes) listed.push_back(std::to_string(k));
    const std::string list = "[" + fmt::format("{}", fmt::join(listed, ", ")) + "]";
    auto lut = torch::full({d.num_classes}, -1, torch::kLong);
    for (std::size_t i = 0; i < s.classes.size(); ++i) {
      if (s.classes[i] >= d.num_classes)
        throw std::invalid_argument(
            fmt::format("{}.class_subset = {} names label {}, but the dataset's labels are 0 to "
                        "{}; name labels "
                        "it has",
                        role, list, s.classes[i], d.num_classes - 1));
      lut[s.classes[i]] = static_cast<int64_t>(i);
    }
    for (int i = 0; i < 3; ++i) {
      Split& sp = *splits[i];
      if (sp.size() == 0) continue;
      auto mapped = lut.index_select(0, sp.y.to(torch::kLong).cpu());
      auto keep = torch::nonzero(mapped >= 0).view({-1});
      if (keep.size(0) == 0)
        throw std::invalid_argument(fmt::format(
            "{}.class_subset = {} leaves the {} split empty: none of its {} examples has one of "
            "these labels",
            role, list, names[i], sp.size()));
      rows[i] = keep;
      sp.y = mapped.index_select(0, keep);
      if (!sp.streamed()) sp.x = sp.x.index_select(0, keep);
    }
    d.num_classes = static_cast<int64_t>(s.classes.size());
  }
  if (s.transforms()) {
    const std::string key = role + ".transform." + first_key(s);
    if (d.input_shape.size() != 3)
      throw std::invalid_argument(fmt::format(
          "{} applies to images (C x H x W inputs), but the dataset gives examples of shape {}; "
          "remove [{}.transform] or use an image dataset",
          key, shape_text(d.input_shape), role));
    const bool tokens = d.train.x.defined() && d.train.x.scalar_type() == torch::kLong;
    if (tokens)
      throw std::invalid_argument(fmt::format(
          "{} applies to images, but the dataset gives token ids (int64); remove [{}.transform]",
          key, role));
    if (s.color >= 0 && d.input_shape[0] != 1)
      throw std::invalid_argument(fmt::format(
          "{}.transform.color colours grey images (1 channel -> 3), but the examples have {} "
          "channels; remove color",
          role, d.input_shape[0]));
    if (s.color >= 0 && d.unlabeled.defined() && d.unlabeled.size(0) > 0)
      throw std::invalid_argument(fmt::format(
          "{}.transform.color draws each colour from the example's label, but the dataset gives "
          "unlabelled inputs too; remove color or use a dataset without them",
          role));
    if (d.train.x.defined() && d.train.size() > 0 && !d.train.streamed()) {
      const double lo = d.train.x.min().item<double>(), hi = d.train.x.max().item<double>();
      if (lo < -1e-6 || hi > 1 + 1e-6)
        throw std::invalid_argument(fmt::format(
            "{} expects pixel values in [0, 1], but the training inputs range over [{:g}, {:g}]; "
            "use the dataset without normalisation",
            key, lo, hi));
    }
    for (int i = 0; i < 3; ++i) {
      Split& sp = *splits[i];
      if (sp.size() == 0) continue;
      if (sp.streamed()) {
        sp.stream = std::make_shared<ShiftedSource>(sp.stream, rows[i], sp.y.to(torch::kLong), s,
                                                    i + 1, d.num_classes);
        continue;
      }
      auto index = rows[i].defined() ? rows[i] : torch::arange(sp.size(), torch::kLong);
      sp.x = transform_images(sp.x, sp.y.to(torch::kLong), index, s, i + 1, d.num_classes);
    }
    if (d.unlabeled.defined() && d.unlabeled.size(0) > 0)
      d.unlabeled =
          transform_images(d.unlabeled, torch::Tensor(),
                           torch::arange(d.unlabeled.size(0), torch::kLong), s, 4, d.num_classes);
    if (s.color >= 0) d.input_shape[0] = 3;
  } else {
    for (int i = 0; i < 3; ++i) {
      Split& sp = *splits[i];
      if (sp.streamed() && rows[i].defined())
        sp.stream =
            std::make_shared<ShiftedSource>(sp.stream, rows[i], sp.y, s, i + 1, d.num_classes);
    }
  }
  return d;
}

}  // namespace tlab
