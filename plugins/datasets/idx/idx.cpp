// idx: images and labels in the IDX format of MNIST (and Fashion-MNIST, KMNIST, EMNIST), read
// from the files themselves, gzip-compressed or not.
//
// An IDX file is a big-endian header, magic 0x0000 08 D (08 = unsigned bytes, D dimensions),
// then D 32-bit sizes, then the bytes: images are 0x00000803 (N x rows x columns), labels
// 0x00000801 (N). Pixels are scaled to [0, 1] and each image becomes 1 x rows x columns.

#include <torch/types.h>

#include <climits>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../common/gzip.hpp"
#include "../common/io.hpp"
#include "../common/rng.hpp"
#include "tlab/sdk/data.hpp"

namespace {

using tlab_ds::quote;

struct IdxOptions {
  /// Training images, IDX 0x00000803, optionally .gz (required).
  std::string train_images;
  /// Training labels, IDX 0x00000801, optionally .gz (required).
  std::string train_labels;
  /// Test images (optional; with test_labels).
  std::string test_images;
  /// Test labels (optional; with test_images).
  std::string test_labels;
  /// Fraction of the training file held out for validation, chosen by `seed` (default 0.1).
  double val_fraction = 0.1;
  /// Fraction of the training file held out for testing when there are no test files (0).
  double test_fraction = 0.0;
  /// At most this many training examples after the hold-outs, chosen by `seed`; 0 = all.
  int64_t max_train = 0;
  /// Data seed for the hold-outs and `max_train` (default 0).
  int64_t seed = 0;
  /// Labels must be below this (default 10).
  int64_t num_classes = 10;
  /// Images without labels (IDX 0x00000803, optionally .gz): the domain's unlabelled inputs,
  /// what adaptation methods train on and `tlab predict --input` predicts (optional).
  std::string unlabeled_path;
};

constexpr uint32_t kImagesMagic = 0x00000803, kLabelsMagic = 0x00000801;

std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

uint32_t big_endian(const std::string& b, std::size_t at) {
  auto u = [&](std::size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(b[i])); };
  return u(at) << 24 | u(at + 1) << 16 | u(at + 2) << 8 | u(at + 3);
}

// One IDX file of unsigned bytes: its sizes and its bytes (after the header).
struct IdxFile {
  std::filesystem::path path;
  std::vector<int64_t> dims;
  std::string bytes;
  std::size_t offset = 0;  // where the data starts in `bytes`
  const unsigned char* data() const {
    return reinterpret_cast<const unsigned char*>(bytes.data()) + offset;
  }
};

// Reads and checks the IDX file named by option `key`; `images` selects the expected magic.
IdxFile read_idx(const std::string& key, const std::string& file, bool images) {
  const std::string what = "idx: " + key + " file";
  IdxFile f;
  f.path = file;
  const std::string kind = images ? "images: unsigned bytes, 3 dimensions N x rows x columns"
                                  : "labels: unsigned bytes, 1 dimension N";
  const uint32_t expected = images ? kImagesMagic : kLabelsMagic;
  // The magic number is checked on the first bytes, before the rest is read: a wrong file (a
  // huge sparse one, say) is refused at once.
  auto check_magic = [&](std::string_view start) {
    if (start.size() < 4)
      throw std::invalid_argument(what + " " + quote(f.path) + " is truncated: expected a " +
                                  "4-byte magic number, got " + std::to_string(start.size()) +
                                  " bytes");
    const uint32_t magic = big_endian(std::string(start.substr(0, 4)), 0);
    if (magic == expected) return;
    std::string hint;
    if (magic == (images ? kLabelsMagic : kImagesMagic))
      hint = images ? " (that is a label file: swapped train_images and train_labels?)"
                    : " (that is an image file: swapped images and labels?)";
    throw std::invalid_argument(what + " " + quote(f.path) + " has magic number " + hex(magic) +
                                "; expected " + hex(expected) + " (IDX " + kind + ")" + hint);
  };
  f.bytes = tlab_ds::read_maybe_gzip(f.path, what, check_magic);
  const std::size_t ndim = images ? 3 : 1;
  f.offset = 4 + 4 * ndim;
  if (f.bytes.size() < f.offset)
    throw std::invalid_argument(what + " " + quote(f.path) + " is truncated: expected a " +
                                std::to_string(f.offset) + "-byte header, got " +
                                std::to_string(f.bytes.size()) + " bytes");
  int64_t expected_bytes = 1;
  std::string product;
  for (std::size_t i = 0; i < ndim; ++i) {
    const int64_t d = big_endian(f.bytes, 4 + 4 * i);
    f.dims.push_back(d);
    // Saturates instead of overflowing: a corrupt header then reads as a truncated file.
    expected_bytes = (d != 0 && expected_bytes > INT64_MAX / d) ? INT64_MAX : expected_bytes * d;
    product += (i ? "*" : "") + std::to_string(d);
  }
  if (images && (f.dims[1] == 0 || f.dims[2] == 0))
    throw std::invalid_argument(what + " " + quote(f.path) + " has images of " +
                                std::to_string(f.dims[1]) + " x " + std::to_string(f.dims[2]) +
                                " pixels; expected at least 1 x 1");
  const int64_t got = static_cast<int64_t>(f.bytes.size() - f.offset);
  const std::string need = "expected " + product + " = " + std::to_string(expected_bytes) +
                           " bytes after the " + std::to_string(f.offset) + "-byte header, got " +
                           std::to_string(got);
  if (got < expected_bytes)
    throw std::invalid_argument(what + " " + quote(f.path) + " is truncated: " + need);
  if (got > expected_bytes)
    throw std::invalid_argument(what + " " + quote(f.path) +
                                " is longer than its header says: " + need);
  return f;
}

// The images of an IDX file as N x 1 x rows x columns floats in [0, 1].
torch::Tensor images_of(const IdxFile& im) {
  return torch::from_blob(const_cast<unsigned char*>(im.data()),
                          {im.dims[0], 1, im.dims[1], im.dims[2]}, torch::kByte)
      .to(torch::kFloat)
      .div_(255.0);
}

// Images and labels of one pair of files, checked against each other.
tlab::Split read_pair(const std::string& images_key, const std::string& images_file,
                      const std::string& labels_key, const std::string& labels_file,
                      int64_t num_classes) {
  IdxFile im = read_idx(images_key, images_file, true);
  IdxFile lb = read_idx(labels_key, labels_file, false);
  const int64_t n = im.dims[0];
  if (lb.dims[0] != n)
    throw std::invalid_argument("idx: " + images_key + " " + quote(im.path) + " holds " +
                                std::to_string(n) + " images but " + labels_key + " " +
                                quote(lb.path) + " holds " + std::to_string(lb.dims[0]) +
                                " labels; expected one label per image");
  std::vector<int64_t> y(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    y[i] = lb.data()[i];
    if (y[i] >= num_classes)
      throw std::invalid_argument(
          "idx: " + labels_key + " file " + quote(lb.path) + ": label " + std::to_string(y[i]) +
          " at index " + std::to_string(i) +
          " is out of range; expected a label < num_classes = " + std::to_string(num_classes));
  }
  return {images_of(im), torch::tensor(y, torch::kLong).view({n})};
}

class Idx : public tlab::Dataset {
 public:
  using Options = IdxOptions;

  static tlab::Schema schema() {
    using O = Options;
    return tlab::SchemaFor<O>()
        .field("train_images", &O::train_images, "training images (IDX 0x00000803, or .gz)")
        .field("train_labels", &O::train_labels, "training labels (IDX 0x00000801, or .gz)")
        .field("test_images", &O::test_images, "test images (optional, with test_labels)")
        .field("test_labels", &O::test_labels, "test labels (optional, with test_images)")
        .field("val_fraction", &O::val_fraction, "fraction of the train file held out for val")
        .range(0.0, 0.99)
        .field("test_fraction", &O::test_fraction,
               "fraction of the train file held out for test (only without test files)")
        .range(0.0, 0.99)
        .field("max_train", &O::max_train, "at most this many training examples (0 = all)")
        .min(0)
        .field("seed", &O::seed, "data seed for the hold-outs and max_train")
        .min(0)
        .field("unlabeled_path", &O::unlabeled_path,
               "images without labels (IDX, or .gz): the unlabelled inputs (optional)")
        .field("num_classes", &O::num_classes, "number of classes; labels must be below it")
        .range(1, 256);
  }

  explicit Idx(Options options) : o_(std::move(options)) {
    tlab_ds::check_range("idx", "val_fraction", o_.val_fraction, 0.0, 0.99);
    tlab_ds::check_range("idx", "test_fraction", o_.test_fraction, 0.0, 0.99);
    tlab_ds::check_range("idx", "num_classes", static_cast<double>(o_.num_classes), 1, 256);
    if (o_.max_train < 0)
      throw std::invalid_argument("idx: max_train " + std::to_string(o_.max_train) +
                                  " is negative; expected 0 (all) or a count");
    if (o_.train_images.empty() || o_.train_labels.empty())
      throw std::invalid_argument(
          "idx: train_images and train_labels are required; expected the paths of the IDX "
          "files, e.g. train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz");
    if (o_.test_images.empty() != o_.test_labels.empty())
      throw std::invalid_argument(
          "idx: test_images and test_labels go together; expected both or neither (got '" +
          o_.test_images + "' and '" + o_.test_labels + "')");
    if (!o_.test_images.empty() && o_.test_fraction > 0)
      throw std::invalid_argument(
          "idx: test_fraction holds out a test split when there are no test files; expected "
          "test_fraction = 0 with test_images");
  }

  tlab::DomainData load(tlab::Context& ctx) override {
    tlab::Split all =
        read_pair("train_images", o_.train_images, "train_labels", o_.train_labels, o_.num_classes);
    tlab::DomainData d;
    d.name = "idx";
    d.num_classes = o_.num_classes;
    d.input_shape = {1, all.x.size(2), all.x.size(3)};
    const tlab_ds::Parts parts = tlab_ds::split_examples(
        all.size(), o_.val_fraction, o_.test_fraction, o_.max_train, static_cast<uint64_t>(o_.seed),
        "idx: train_images file " + quote(o_.train_images));
    auto take = [&](const std::vector<int64_t>& r) {
      return tlab::Split{tlab_ds::rows(all.x, r), tlab_ds::rows(all.y, r)};
    };
    d.train = take(parts.train);
    d.val = take(parts.val);
    d.test = take(parts.test);
    if (!o_.test_images.empty()) {
      d.test =
          read_pair("test_images", o_.test_images, "test_labels", o_.test_labels, o_.num_classes);
      if (d.test.x.size(2) != all.x.size(2) || d.test.x.size(3) != all.x.size(3))
        throw std::invalid_argument(
            "idx: test_images file " + quote(o_.test_images) + " has images of " +
            std::to_string(d.test.x.size(2)) + " x " + std::to_string(d.test.x.size(3)) +
            " pixels; expected " + std::to_string(all.x.size(2)) + " x " +
            std::to_string(all.x.size(3)) + " as in train_images " + quote(o_.train_images));
    }
    if (!o_.unlabeled_path.empty()) {
      const IdxFile im = read_idx("unlabeled_path", o_.unlabeled_path, true);
      if (im.dims[1] != all.x.size(2) || im.dims[2] != all.x.size(3))
        throw std::invalid_argument(
            "idx: unlabeled_path file " + quote(o_.unlabeled_path) + " has images of " +
            std::to_string(im.dims[1]) + " x " + std::to_string(im.dims[2]) + " pixels; expected " +
            std::to_string(all.x.size(2)) + " x " + std::to_string(all.x.size(3)) +
            " as in train_images " + quote(o_.train_images));
      d.unlabeled = images_of(im);
    }
    tlab_ds::log_info(ctx,
                      "read " + std::to_string(all.size()) + " training images of " +
                          std::to_string(all.x.size(2)) + " x " + std::to_string(all.x.size(3)) +
                          ": train " + std::to_string(d.train.size()) + ", val " +
                          std::to_string(d.val.size()) + ", test " + std::to_string(d.test.size()));
    return d;
  }

 private:
  Options o_;
};

}  // namespace

TLAB_PLUGIN(Idx, "idx", "1.0.0", "MNIST-format IDX image and label files (optionally .gz)")
