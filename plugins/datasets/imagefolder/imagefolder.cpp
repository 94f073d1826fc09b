// imagefolder: images in one sub-folder per class (class ids follow the sorted folder names), as
// torchvision's ImageFolder. PNG (libpng) and JPEG (libjpeg-turbo) files are decoded on a few
// threads of our own, converted to grey or RGB, resized (bilinear) and normalised, giving float
// C x size x size examples.
//
// Files are found recursively in each class folder and taken in path order; files with other
// extensions and hidden files (".name") are skipped (and counted in the log). The result does not
// depend on `workers`. Resident (the decoded folder fits in resident_max_mb): `augment` adds
// seeded, randomly cropped and flipped copies of the training images once, when loading.
// Streamed (larger folders): nothing is decoded up front; the runner's prefetch workers decode
// each batch, and `augment` gives every training image a fresh crop and flip every epoch.

#include <torch/types.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../common/io.hpp"
#include "../common/parallel.hpp"
#include "../common/rng.hpp"
#include "decode.hpp"
#include "tlab/sdk/data.hpp"
#include "tlab/sdk/random.hpp"

namespace {

namespace fs = std::filesystem;
using tlab_ds::quote;

struct ImagefolderOptions {
  /// Folder with one sub-folder of images per class (required).
  std::string path;
  /// A test folder with the same class folders (optional; it may lack some classes).
  std::string test_path;
  /// Resize every image to size x size pixels, bilinear; 0 = keep (all must then agree) (0).
  int64_t size = 0;
  /// 1 (grey) or 3 (RGB): grey, RGB and RGBA files are converted; alpha is dropped (3).
  int64_t channels = 3;
  /// Per-channel means subtracted after scaling to [0, 1]; empty = none.
  std::vector<double> mean;
  /// Per-channel standard deviations divided by; empty = none.
  std::vector<double> stdev;
  /// Add randomly cropped (with zero padding) and flipped copies of the training images (false).
  bool augment = false;
  /// Augmented copies of each training image (default 1).
  int64_t augment_copies = 1;
  /// Zero padding on each side before the random crop, in pixels (default 4).
  int64_t augment_padding = 4;
  /// Fraction of the training folder held out for validation, chosen by `seed` (default 0.1).
  double val_fraction = 0.1;
  /// Fraction of the training folder held out for testing when there is no test folder (0).
  double test_fraction = 0.0;
  /// Data seed for the hold-outs and the augmentation (default 0).
  int64_t seed = 0;
  /// Decoding threads; 0 = one per hardware thread (default 0).
  int64_t workers = 0;
  /// Largest decoded size (MiB, all splits as float) kept resident; larger folders are streamed:
  /// decoded batch by batch by `workers` threads through the runner's prefetch queue (1024).
  int64_t resident_max_mb = 1024;
  /// A folder of images without labels (every .png/.jpg under it, in sorted path order), decoded
  /// and normalised as the training images: the domain's unlabelled inputs, what adaptation
  /// methods train on and `tlab predict --input` predicts (optional; kept resident).
  std::string unlabeled_path;
};

const std::vector<std::string> kExtensions{".png", ".jpg", ".jpeg"};

bool supported(const fs::path& p) {
  std::string ext = p.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return std::find(kExtensions.begin(), kExtensions.end(), ext) != kExtensions.end();
}

// The image files of one folder tree, with class ids.
struct Listing {
  std::vector<std::string> classes;  // sorted class folder names
  std::vector<fs::path> files;
  std::vector<int64_t> labels;
  int64_t skipped = 0;  // files with other extensions, or outside the class folders
};

// Lists `root`. With `known` (the training classes), a class folder must be one of them.
Listing list(const fs::path& root, const std::string& key, const std::vector<std::string>* known) {
  const std::string at = "imagefolder: " + key + " " + quote(root);
  std::error_code ec;
  if (root.empty())
    throw std::invalid_argument("imagefolder: " + key + " is not set; expected a folder path");
  if (!fs::exists(root, ec)) throw std::invalid_argument(at + " does not exist");
  if (!fs::is_directory(root, ec))
    throw std::invalid_argument(at + " is not a folder; expected one sub-folder per class");
  Listing l;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory()) {
      if (!name.empty() && name[0] != '.') l.classes.push_back(name);
    } else {
      ++l.skipped;
    }
  }
  std::sort(l.classes.begin(), l.classes.end());
  if (l.classes.empty())
    throw std::invalid_argument(at + " has no class folders; expected one sub-folder per class " +
                                "holding its .png or .jpg images");
  std::vector<int64_t> ids;
  for (const auto& c : l.classes) {
    if (!known) {
      ids.push_back(static_cast<int64_t>(ids.size()));
      continue;
    }
    auto it = std::find(known->begin(), known->end(), c);
    if (it == known->end())
      throw std::invalid_argument(at + " has the class folder '" + c +
                                  "', which the training folder lacks; expected only " +
                                  tlab_ds::join_quoted(*known));
    ids.push_back(it - known->begin());
  }
  for (std::size_t k = 0; k < l.classes.size(); ++k) {
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(root / l.classes[k])) {
      if (!e.is_regular_file()) continue;
      const std::string name = e.path().filename().string();
      // Hidden files are skipped: e.g. macOS's "._x.jpg" resource forks are not images.
      if (supported(e.path()) && name[0] != '.')
        files.push_back(e.path());
      else
        ++l.skipped;
    }
    std::sort(files.begin(), files.end());
    for (auto& f : files) {
      l.files.push_back(std::move(f));
      l.labels.push_back(ids[k]);
    }
  }
  if (known) l.classes = *known;
  return l;
}

// One decoded image: C x H x W floats in [0, 1].
struct Image {
  int64_t height = 0, width = 0;
  std::vector<float> data;
};

// Bilinear resize of a C x H x W image to C x size x size with half-pixel centres, as
// torch::nn::functional::interpolate(mode bilinear, align_corners false) computes it.
std::vector<float> resize(const std::vector<float>& in, int64_t c, int64_t h, int64_t w,
                          int64_t size) {
  std::vector<float> out(static_cast<std::size_t>(c * size * size));
  auto axis = [size](int64_t n, std::vector<int64_t>& i0, std::vector<int64_t>& step,
                     std::vector<float>& frac) {
    const float scale = static_cast<float>(n) / static_cast<float>(size);
    for (int64_t o = 0; o < size; ++o) {
      float src = scale * (static_cast<float>(o) + 0.5f) - 0.5f;
      if (src < 0) src = 0;
      const auto i = static_cast<int64_t>(src);
      i0.push_back(i);
      step.push_back(i < n - 1 ? 1 : 0);
      frac.push_back(src - static_cast<float>(i));
    }
  };
  std::vector<int64_t> y0, ys, x0, xs;
  std::vector<float> fy, fx;
  axis(h, y0, ys, fy);
  axis(w, x0, xs, fx);
  for (int64_t ch = 0; ch < c; ++ch) {
    const float* plane = in.data() + ch * h * w;
    float* dst = out.data() + ch * size * size;
    for (int64_t oy = 0; oy < size; ++oy) {
      const float* r0 = plane + y0[oy] * w;
      const float* r1 = r0 + ys[oy] * w;
      const float b = fy[oy], a = 1.0f - b;
      for (int64_t ox = 0; ox < size; ++ox) {
        const int64_t i = x0[ox], j = i + xs[ox];
        const float q = fx[ox], p = 1.0f - q;
        dst[oy * size + ox] = a * (p * r0[i] + q * r0[j]) + b * (p * r1[i] + q * r1[j]);
      }
    }
  }
  return out;
}

// One file: decoded by its signature (not its extension), to C x H x W floats in [0, 1],
// converted to `o.channels` and resized to `o.size` when set.
Image load_image(const ImagefolderOptions& o, const fs::path& file) {
  const std::string bytes = tlab_ds::read_bytes(file, "imagefolder: image");
  imagefolder::Pixels p;
  std::string why;
  if (imagefolder::is_png(bytes))
    why = imagefolder::decode_png(bytes, p);
  else if (imagefolder::is_jpeg(bytes))
    why = imagefolder::decode_jpeg(bytes, p);
  else
    why = "neither a PNG nor a JPEG file (its first bytes are not a PNG or JPEG signature)";
  if (!why.empty())
    throw std::invalid_argument("imagefolder: cannot decode " + quote(file) + ": " + why);
  if (p.width < 1 || p.height < 1)
    throw std::invalid_argument("imagefolder: cannot decode " + quote(file) + ": it has no pixels");
  const int64_t c = o.channels, hw = p.width * p.height, src_c = p.channels;
  Image img;
  img.height = p.height;
  img.width = p.width;
  img.data.resize(static_cast<std::size_t>(c * hw));
  const uint8_t* s = p.data.data();
  const bool colour = src_c >= 3;
  for (int64_t k = 0; k < hw; ++k) {
    const uint8_t* q = s + k * src_c;
    if (c == 3) {
      for (int64_t ch = 0; ch < 3; ++ch)
        img.data[ch * hw + k] = static_cast<float>(colour ? q[ch] : q[0]) / 255.0f;
    } else {
      // ITU-R BT.601 luma, as PIL's convert("L"), without its rounding to bytes.
      const float v = colour ? 0.299f * q[0] + 0.587f * q[1] + 0.114f * q[2] : q[0];
      img.data[k] = v / 255.0f;
    }
  }
  if (o.size > 0 && (p.height != o.size || p.width != o.size)) {
    img.data = resize(img.data, c, p.height, p.width, o.size);
    img.height = img.width = o.size;
  }
  return img;
}

// A random crop of `img` zero-padded by `pad`, flipped horizontally with probability 1/2, into
// `dst` (zeros where the crop leaves the image).
void crop_flip(const float* img, float* dst, int64_t c, int64_t h, int64_t w, int64_t pad,
               tlab::SplitMix64& rng) {
  const int64_t dy = rng.index(2 * pad + 1) - pad, dx = rng.index(2 * pad + 1) - pad;
  const bool flip = rng.next() >> 63;
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t y = 0; y < h; ++y) {
      const int64_t sy = y + dy;
      if (sy < 0 || sy >= h) continue;
      for (int64_t x = 0; x < w; ++x) {
        const int64_t sx = (flip ? w - 1 - x : x) + dx;
        if (sx >= 0 && sx < w) dst[(ch * h + y) * w + x] = img[(ch * h + sy) * w + sx];
      }
    }
}

// Streamed examples: each get() decodes one file (on the runner's prefetch workers), with a
// fresh random crop and flip per (epoch seed, file) when `augment` is set, then normalises.
class ImageStream : public tlab::ExampleSource {
 public:
  ImageStream(ImagefolderOptions o, std::vector<fs::path> files, int64_t h, int64_t w, bool augment)
      : o_(std::move(o)), files_(std::move(files)), h_(h), w_(w), augment_(augment) {}
  torch::Tensor get(int64_t index, uint64_t seed) const override {
    const fs::path& file = files_.at(static_cast<std::size_t>(index));
    Image img = load_image(o_, file);
    if (img.height != h_ || img.width != w_)
      throw std::invalid_argument("imagefolder: " + quote(file) + " is " +
                                  std::to_string(img.width) + " x " + std::to_string(img.height) +
                                  " pixels but the first image is " + std::to_string(w_) + " x " +
                                  std::to_string(h_) +
                                  "; expected images of one size, or set size to resize them all");
    const int64_t c = o_.channels;
    torch::Tensor x = torch::empty({c, h_, w_}, torch::kFloat);
    if (augment_ && seed != 0) {
      x.zero_();
      tlab::SplitMix64 rng(
          tlab::stream_seed(tlab::stream_seed(seed, 0xa06), static_cast<uint64_t>(index)));
      crop_flip(img.data.data(), x.data_ptr<float>(), c, h_, w_, o_.augment_padding, rng);
    } else {
      std::copy(img.data.begin(), img.data.end(), x.data_ptr<float>());
    }
    if (!o_.mean.empty()) {
      float* p = x.data_ptr<float>();
      for (int64_t ch = 0; ch < c; ++ch) {
        const auto m = static_cast<float>(o_.mean[ch]), sd = static_cast<float>(o_.stdev[ch]);
        for (int64_t k = 0; k < h_ * w_; ++k) p[ch * h_ * w_ + k] = (p[ch * h_ * w_ + k] - m) / sd;
      }
    }
    return x;
  }
  int workers() const override {
    // Default: one per hardware thread, at most 8 (each holds a decoded full-size image).
    return static_cast<int>(o_.workers > 0
                                ? o_.workers
                                : std::min(8u, std::max(1u, std::thread::hardware_concurrency())));
  }

 private:
  ImagefolderOptions o_;
  std::vector<fs::path> files_;
  int64_t h_, w_;
  bool augment_;
};

class Imagefolder : public tlab::Dataset {
 public:
  using Options = ImagefolderOptions;

  static tlab::Schema schema() {
    using O = Options;
    return tlab::SchemaFor<O>()
        .field("path", &O::path, "folder with one sub-folder of images per class")
        .field("test_path", &O::test_path, "test folder with the same class folders (optional)")
        .field("size", &O::size, "resize to size x size, bilinear (0 = keep; sizes must agree)")
        .range(0, 8192)
        .field("channels", &O::channels, "1 (grey) or 3 (RGB)")
        .range(1, 3)
        .field("mean", &O::mean, "per-channel means to subtract (empty = none)")
        .field("std", &O::stdev, "per-channel standard deviations (empty = none)")
        .min(1e-6)
        .field("augment", &O::augment, "add cropped and flipped copies of the training images")
        .field("augment_copies", &O::augment_copies, "augmented copies of each training image")
        .range(1, 100)
        .field("augment_padding", &O::augment_padding, "zero padding before the random crop")
        .range(0, 1024)
        .field("val_fraction", &O::val_fraction, "fraction of the train folder held out for val")
        .range(0.0, 0.99)
        .field("test_fraction", &O::test_fraction,
               "fraction of the train folder held out for test (only without test_path)")
        .range(0.0, 0.99)
        .field("seed", &O::seed, "data seed for the hold-outs and the augmentation")
        .min(0)
        .field("workers", &O::workers, "decoding threads (0 = one per hardware thread)")
        .range(0, 1024)
        .field("resident_max_mb", &O::resident_max_mb,
               "largest decoded size kept in memory (MiB); larger folders are streamed through "
               "a prefetch queue, with fresh augmentation every epoch (0 = always stream)")
        .range(0, 1 << 24)
        .field("unlabeled_path", &O::unlabeled_path,
               "folder of images without labels, decoded as the training images: the unlabelled "
               "inputs (optional)");
  }

  explicit Imagefolder(Options options) : o_(std::move(options)) {
    if (o_.path.empty())
      throw std::invalid_argument(
          "imagefolder: path is required; expected a folder with one "
          "sub-folder of images per class");
    if (o_.channels != 1 && o_.channels != 3)
      throw std::invalid_argument("imagefolder: channels " + std::to_string(o_.channels) +
                                  " is not supported; expected 1 (grey) or 3 (RGB)");
    tlab_ds::check_range("imagefolder", "size", static_cast<double>(o_.size), 0, 8192);
    tlab_ds::check_range("imagefolder", "val_fraction", o_.val_fraction, 0.0, 0.99);
    tlab_ds::check_range("imagefolder", "test_fraction", o_.test_fraction, 0.0, 0.99);
    tlab_ds::check_range("imagefolder", "augment_copies", static_cast<double>(o_.augment_copies), 1,
                         100);
    tlab_ds::check_range("imagefolder", "augment_padding", static_cast<double>(o_.augment_padding),
                         0, 1024);
    tlab_ds::check_range("imagefolder", "workers", static_cast<double>(o_.workers), 0, 1024);
    if (o_.mean.size() != o_.stdev.size())
      throw std::invalid_argument("imagefolder: mean has " + std::to_string(o_.mean.size()) +
                                  " values and std " + std::to_string(o_.stdev.size()) +
                                  "; expected both or neither, one value per channel");
    if (!o_.mean.empty() && static_cast<int64_t>(o_.mean.size()) != o_.channels)
      throw std::invalid_argument("imagefolder: mean and std have " +
                                  std::to_string(o_.mean.size()) + " values; expected " +
                                  std::to_string(o_.channels) + ", one per channel");
    for (double s : o_.stdev)
      if (!(s > 0))
        throw std::invalid_argument("imagefolder: std " + std::to_string(s) +
                                    " is not positive; expected standard deviations > 0");
    if (!o_.test_path.empty() && o_.test_fraction > 0)
      throw std::invalid_argument(
          "imagefolder: test_fraction holds out a test split when there is no test folder; "
          "expected test_fraction = 0 with test_path");
  }

  tlab::DomainData load(tlab::Context& ctx) override {
    tlab::DomainData d = load_labelled(ctx);
    if (o_.unlabeled_path.empty()) return d;
    std::error_code ec;
    if (!fs::is_directory(o_.unlabeled_path, ec))
      throw std::invalid_argument("imagefolder: unlabeled_path " + quote(o_.unlabeled_path) +
                                  " is not a folder; expected a folder of .png or .jpg images");
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(o_.unlabeled_path))
      if (e.is_regular_file() && supported(e.path())) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty())
      throw std::invalid_argument("imagefolder: unlabeled_path " + quote(o_.unlabeled_path) +
                                  " holds no .png or .jpg images");
    const int64_t c = d.input_shape[0], h = d.input_shape[1], w = d.input_shape[2];
    torch::Tensor x = torch::empty({static_cast<int64_t>(files.size()), c, h, w});
    for (std::size_t i = 0; i < files.size(); ++i) {
      const Image img = load_image(o_, files[i]);
      if (img.height != h || img.width != w)
        throw std::invalid_argument(
            "imagefolder: " + quote(files[i]) + " is " + std::to_string(img.height) + " x " +
            std::to_string(img.width) + " pixels; expected " + std::to_string(h) + " x " +
            std::to_string(w) + " as the training images, or set size to resize all");
      std::copy(img.data.begin(), img.data.end(), x[static_cast<int64_t>(i)].data_ptr<float>());
    }
    if (!o_.mean.empty()) {
      const auto ch = static_cast<int64_t>(o_.mean.size());
      x = (x - torch::tensor(o_.mean, torch::kDouble).to(torch::kFloat).view({1, ch, 1, 1})) /
          torch::tensor(o_.stdev, torch::kDouble).to(torch::kFloat).view({1, ch, 1, 1});
    }
    d.unlabeled = x;
    tlab_ds::log_info(ctx, "decoded " + std::to_string(files.size()) + " unlabelled images from " +
                               quote(o_.unlabeled_path));
    return d;
  }

 private:
  tlab::DomainData load_labelled(tlab::Context& ctx) {
    const Listing train = list(o_.path, "path", nullptr);
    if (train.files.empty())
      throw std::invalid_argument("imagefolder: path " + quote(o_.path) + " has " +
                                  std::to_string(train.classes.size()) +
                                  " class folder(s) but no .png or .jpg images in them");
    Listing test;
    if (!o_.test_path.empty()) test = list(o_.test_path, "test_path", &train.classes);
    const int64_t skipped = train.skipped + test.skipped;
    if (skipped > 0)
      tlab_ds::log_info(ctx, "skipped " + std::to_string(skipped) +
                                 " file(s) without a supported extension (.png, .jpg, .jpeg) "
                                 "or outside the class folders");

    // Decoded size of every split; above resident_max_mb the folder is streamed.
    int64_t h = o_.size, w = o_.size;
    if (h == 0) {
      const Image first = load_image(o_, train.files[0]);
      h = first.height;
      w = first.width;
    }
    const double copies = o_.augment ? 1.0 + static_cast<double>(o_.augment_copies) : 1.0;
    const double mib = static_cast<double>(train.files.size() * copies + test.files.size()) *
                       static_cast<double>(o_.channels * h * w) * 4.0 / (1 << 20);
    if (mib > static_cast<double>(o_.resident_max_mb)) return stream(ctx, train, test, h, w, mib);

    tlab::Split all = decode(train);
    tlab::DomainData d;
    fs::path root = fs::path(o_.path).lexically_normal();
    if (!root.has_filename()) root = root.parent_path();
    d.name = root.filename().string();
    d.num_classes = static_cast<int64_t>(train.classes.size());
    d.input_shape = std::vector<int64_t>(all.x.sizes().begin() + 1, all.x.sizes().end());
    const tlab_ds::Parts parts = tlab_ds::split_examples(
        all.size(), o_.val_fraction, o_.test_fraction, 0, static_cast<uint64_t>(o_.seed),
        "imagefolder: path " + quote(o_.path));
    auto take = [&](const std::vector<int64_t>& r) {
      return tlab::Split{tlab_ds::rows(all.x, r), tlab_ds::rows(all.y, r)};
    };
    d.train = take(parts.train);
    d.val = take(parts.val);
    d.test = take(parts.test);
    if (!o_.test_path.empty()) {
      d.test = decode(test);
      const auto shape = std::vector<int64_t>(d.test.x.sizes().begin() + 1, d.test.x.sizes().end());
      if (d.test.size() > 0 && shape != d.input_shape)
        throw std::invalid_argument(
            "imagefolder: the images of test_path " + quote(o_.test_path) + " are " +
            std::to_string(shape[1]) + " x " + std::to_string(shape[2]) + " pixels but those of " +
            "path are " + std::to_string(d.input_shape[1]) + " x " +
            std::to_string(d.input_shape[2]) + "; expected one size, or set size to resize all");
    }
    if (o_.augment) d.train = augment(d.train, parts.train);
    if (!o_.mean.empty()) {
      const auto c = static_cast<int64_t>(o_.mean.size());
      torch::Tensor m = torch::tensor(o_.mean, torch::kDouble).to(torch::kFloat).view({1, c, 1, 1});
      torch::Tensor s =
          torch::tensor(o_.stdev, torch::kDouble).to(torch::kFloat).view({1, c, 1, 1});
      for (tlab::Split* sp : {&d.train, &d.val, &d.test})
        if (sp->size() > 0) sp->x = (sp->x - m) / s;
    }
    std::string classes;
    for (std::size_t k = 0; k < train.classes.size(); ++k)
      classes += (k ? ", " : "") + std::to_string(k) + "='" + train.classes[k] + "'";
    tlab_ds::log_info(ctx, std::to_string(train.classes.size()) + " classes: " + classes);
    tlab_ds::log_info(
        ctx, "decoded " + std::to_string(all.size() + (o_.test_path.empty() ? 0 : d.test.size())) +
                 " images of " + std::to_string(d.input_shape[0]) + " x " +
                 std::to_string(d.input_shape[1]) + " x " + std::to_string(d.input_shape[2]) +
                 ": train " + std::to_string(d.train.size()) +
                 (o_.augment ? " (with augmented copies)" : "") + ", val " +
                 std::to_string(d.val.size()) + ", test " + std::to_string(d.test.size()));
    return d;
  }

 private:
  // The splits as streams of files: nothing is decoded now but the first image.
  tlab::DomainData stream(tlab::Context& ctx, const Listing& train, const Listing& test, int64_t h,
                          int64_t w, double mib) const {
    tlab::DomainData d;
    fs::path root = fs::path(o_.path).lexically_normal();
    if (!root.has_filename()) root = root.parent_path();
    d.name = root.filename().string();
    d.num_classes = static_cast<int64_t>(train.classes.size());
    d.input_shape = {o_.channels, h, w};
    const tlab_ds::Parts parts = tlab_ds::split_examples(
        static_cast<int64_t>(train.files.size()), o_.val_fraction, o_.test_fraction, 0,
        static_cast<uint64_t>(o_.seed), "imagefolder: path " + quote(o_.path));
    auto take = [&](const Listing& l, const std::vector<int64_t>& rows, bool augment) {
      std::vector<fs::path> files;
      std::vector<int64_t> labels;
      for (int64_t r : rows) {
        files.push_back(l.files[r]);
        labels.push_back(l.labels[r]);
      }
      tlab::Split sp;
      sp.y = torch::tensor(labels, torch::kLong).view({static_cast<int64_t>(labels.size())});
      if (!files.empty())
        sp.stream = std::make_shared<ImageStream>(o_, std::move(files), h, w, augment);
      return sp;
    };
    d.train = take(train, parts.train, o_.augment);
    d.val = take(train, parts.val, false);
    d.test = take(train, parts.test, false);
    if (!o_.test_path.empty()) {
      std::vector<int64_t> all(test.files.size());
      for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
      d.test = take(test, all, false);
    }
    tlab_ds::log_info(
        ctx, "streaming " + std::to_string(train.files.size() + test.files.size()) + " images of " +
                 std::to_string(o_.channels) + " x " + std::to_string(h) + " x " +
                 std::to_string(w) + " (" + std::to_string(static_cast<int64_t>(mib)) +
                 " MiB decoded > resident_max_mb " + std::to_string(o_.resident_max_mb) +
                 "): train " + std::to_string(d.train.size()) + ", val " +
                 std::to_string(d.val.size()) + ", test " + std::to_string(d.test.size()) +
                 (o_.augment ? "; a fresh crop and flip every epoch" : ""));
    return d;
  }

  // Decodes, converts and resizes every file of `l` in parallel into one split.
  tlab::Split decode(const Listing& l) const {
    const auto n = static_cast<int64_t>(l.files.size());
    std::vector<Image> images(static_cast<std::size_t>(n));
    tlab_ds::parallel_jobs(n, o_.workers,
                           [&](int64_t i) { images[i] = load_image(o_, l.files[i]); });
    const int64_t c = o_.channels;
    int64_t h = o_.size, w = o_.size;
    if (o_.size == 0 && n > 0) {
      h = images[0].height;
      w = images[0].width;
      for (int64_t i = 1; i < n; ++i)
        if (images[i].height != h || images[i].width != w)
          throw std::invalid_argument(
              "imagefolder: " + quote(l.files[i]) + " is " + std::to_string(images[i].width) +
              " x " + std::to_string(images[i].height) + " pixels but " + quote(l.files[0]) +
              " is " + std::to_string(w) + " x " + std::to_string(h) +
              "; expected images of one size, or set size to resize them all");
    }
    torch::Tensor x = torch::empty({n, c, h, w}, torch::kFloat);
    float* px = x.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i)
      std::copy(images[i].data.begin(), images[i].data.end(), px + i * c * h * w);
    return {x, torch::tensor(l.labels, torch::kLong).view({n})};
  }

  // The training images followed by `augment_copies` augmented copies of each: zero-pad by
  // augment_padding, crop back to the original size at a random offset, flip horizontally with
  // probability 1/2. Each copy draws from its own stream (seed, file index, copy).
  tlab::Split augment(const tlab::Split& train, const std::vector<int64_t>& file_index) const {
    const int64_t n = train.size(), c = train.x.size(1), h = train.x.size(2), w = train.x.size(3);
    const int64_t copies = o_.augment_copies, pad = o_.augment_padding;
    torch::Tensor src = train.x.contiguous();
    torch::Tensor out = torch::zeros({n * copies, c, h, w}, torch::kFloat);
    const float* ps = src.data_ptr<float>();
    float* po = out.data_ptr<float>();
    const uint64_t base = tlab::stream_seed(static_cast<uint64_t>(o_.seed), 0xa06);
    for (int64_t k = 0; k < copies; ++k) {
      for (int64_t i = 0; i < n; ++i) {
        tlab::SplitMix64 rng(
            tlab::stream_seed(base, static_cast<uint64_t>(file_index[i] * copies + k)));
        crop_flip(ps + i * c * h * w, po + (k * n + i) * c * h * w, c, h, w, pad, rng);
      }
    }
    return {torch::cat({train.x, out}), torch::cat({train.y, train.y.repeat({copies})})};
  }

  Options o_;
};

}  // namespace

TLAB_PLUGIN(Imagefolder, "imagefolder", "1.0.0",
            "PNG/JPEG images in one folder per class (ImageFolder layout)")
