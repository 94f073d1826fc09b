// cifar: CIFAR-10 and CIFAR-100 in their binary versions (cifar-10-binary.tar.gz,
// cifar-100-binary.tar.gz), read from the files themselves.
//
// A CIFAR-10 file is a run of 3073-byte records: 1 label byte (0-9), then 3072 pixel bytes, the
// 32 x 32 red plane, then green, then blue, each row by row. A CIFAR-100 record has 2 label
// bytes, coarse (0-19) then fine (0-99), then the same 3072 pixel bytes. Each image becomes a
// 3 x 32 x 32 float tensor in [0, 1], normalised per channel if asked.

#include <torch/types.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../common/io.hpp"
#include "../common/rng.hpp"
#include "tlab/sdk/data.hpp"

namespace {

namespace fs = std::filesystem;
using tlab_ds::quote;

constexpr int64_t kSide = 32, kPixels = 3 * kSide * kSide;

struct CifarOptions {
  /// "cifar10" or "cifar100" (default "cifar10").
  std::string variant = "cifar10";
  /// Folder with the standard file names: data_batch_1..5.bin and test_batch.bin (CIFAR-10),
  /// train.bin and test.bin (CIFAR-100).
  std::string dir;
  /// Training files instead of the standard ones (relative paths are taken in `dir`).
  std::vector<std::string> train_files;
  /// Test file instead of the standard one (relative paths are taken in `dir`).
  std::string test_file;
  /// CIFAR-100 labels: "fine" (100 classes) or "coarse" (20 superclasses) (default "fine").
  std::string labels = "fine";
  /// Fraction of the training files held out for validation, chosen by `seed` (default 0.1).
  double val_fraction = 0.1;
  /// Fraction of the training files held out for testing when there is no test file (0).
  double test_fraction = 0.0;
  /// At most this many training examples after the hold-outs, chosen by `seed`; 0 = all.
  int64_t max_train = 0;
  /// Data seed for the hold-outs and `max_train` (default 0).
  int64_t seed = 0;
  /// Normalise each channel: (x - mean) / std (default true).
  bool normalize = true;
  /// Per-channel means (R, G, B); empty = the variant's training-set means.
  std::vector<double> mean;
  /// Per-channel standard deviations; empty = the variant's training-set values.
  std::vector<double> stdev;
};

// Per-channel statistics of the training sets, of pixels scaled to [0, 1].
const std::vector<double> kMean10{0.4914, 0.4822, 0.4465}, kStd10{0.2470, 0.2435, 0.2616};
const std::vector<double> kMean100{0.5071, 0.4865, 0.4409}, kStd100{0.2673, 0.2564, 0.2762};

class Cifar : public tlab::Dataset {
 public:
  using Options = CifarOptions;

  static tlab::Schema schema() {
    using O = Options;
    return tlab::SchemaFor<O>()
        .field("variant", &O::variant, "cifar10 (1 label byte) or cifar100 (coarse + fine)")
        .choices({"cifar10", "cifar100"})
        .field("dir", &O::dir, "folder holding the standard binary files")
        .field("train_files", &O::train_files, "training files instead of the standard ones")
        .field("test_file", &O::test_file, "test file instead of the standard one")
        .field("labels", &O::labels, "cifar100 labels: fine (100 classes) or coarse (20)")
        .choices({"fine", "coarse"})
        .field("val_fraction", &O::val_fraction, "fraction of the train files held out for val")
        .range(0.0, 0.99)
        .field("test_fraction", &O::test_fraction,
               "fraction of the train files held out for test (only without a test file)")
        .range(0.0, 0.99)
        .field("max_train", &O::max_train, "at most this many training examples (0 = all)")
        .min(0)
        .field("seed", &O::seed, "data seed for the hold-outs and max_train")
        .min(0)
        .field("normalize", &O::normalize, "normalise each channel with mean and std")
        .field("mean", &O::mean, "per-channel means R, G, B (empty = the variant's)")
        .field("std", &O::stdev, "per-channel standard deviations (empty = the variant's)")
        .min(1e-6);
  }

  explicit Cifar(Options options) : o_(std::move(options)) {
    if (o_.variant != "cifar10" && o_.variant != "cifar100")
      throw std::invalid_argument("cifar: unknown variant '" + o_.variant +
                                  "'; expected one of: cifar10, cifar100");
    if (o_.labels != "fine" && o_.labels != "coarse")
      throw std::invalid_argument("cifar: unknown labels '" + o_.labels +
                                  "'; expected one of: fine, coarse");
    tlab_ds::check_range("cifar", "val_fraction", o_.val_fraction, 0.0, 0.99);
    tlab_ds::check_range("cifar", "test_fraction", o_.test_fraction, 0.0, 0.99);
    if (o_.max_train < 0)
      throw std::invalid_argument("cifar: max_train " + std::to_string(o_.max_train) +
                                  " is negative; expected 0 (all) or a count");
    if (o_.dir.empty() && o_.train_files.empty())
      throw std::invalid_argument(
          "cifar: no data: expected dir (the folder of the binary files, e.g. "
          "cifar-10-batches-bin) or train_files");
    for (const auto* list : {&o_.mean, &o_.stdev})
      if (!list->empty() && list->size() != 3)
        throw std::invalid_argument("cifar: mean and std have one value per channel; expected " +
                                    std::string("3 values (R, G, B), got ") +
                                    std::to_string(list->size()));
    for (double s : o_.stdev)
      if (!(s > 0))
        throw std::invalid_argument("cifar: std " + std::to_string(s) +
                                    " is not positive; expected standard deviations > 0");
  }

  tlab::DomainData load(tlab::Context& ctx) override {
    const bool c100 = o_.variant == "cifar100";
    std::vector<fs::path> train_files;
    if (o_.train_files.empty()) {
      if (c100)
        train_files.push_back(in_dir("train.bin"));
      else
        for (int i = 1; i <= 5; ++i)
          train_files.push_back(in_dir("data_batch_" + std::to_string(i) + ".bin"));
    } else {
      for (const auto& f : o_.train_files) train_files.push_back(in_dir(f));
    }
    fs::path test_file;
    if (!o_.test_file.empty())
      test_file = in_dir(o_.test_file);
    else if (!o_.dir.empty())
      test_file = in_dir(c100 ? "test.bin" : "test_batch.bin");
    if (!test_file.empty() && o_.test_fraction > 0)
      throw std::invalid_argument(
          "cifar: test_fraction holds out a test split when there is no test file; expected "
          "test_fraction = 0 with the test file " +
          quote(test_file));

    tlab::Split all = read_files(train_files, "train");
    tlab::DomainData d;
    d.name = o_.variant;
    d.num_classes = c100 ? (o_.labels == "fine" ? 100 : 20) : 10;
    d.input_shape = {3, kSide, kSide};
    const tlab_ds::Parts parts =
        tlab_ds::split_examples(all.size(), o_.val_fraction, o_.test_fraction, o_.max_train,
                                static_cast<uint64_t>(o_.seed), "cifar: the training files");
    auto take = [&](const std::vector<int64_t>& r) {
      return tlab::Split{tlab_ds::rows(all.x, r), tlab_ds::rows(all.y, r)};
    };
    d.train = take(parts.train);
    d.val = take(parts.val);
    d.test = test_file.empty() ? take(parts.test) : read_files({test_file}, "test");
    tlab_ds::log_info(ctx, "read " + std::to_string(all.size()) + " training images from " +
                               std::to_string(train_files.size()) + " file(s): train " +
                               std::to_string(d.train.size()) + ", val " +
                               std::to_string(d.val.size()) + ", test " +
                               std::to_string(d.test.size()));
    return d;
  }

 private:
  fs::path in_dir(const std::string& name) const {
    fs::path p(name);
    return (o_.dir.empty() || p.is_absolute()) ? p : fs::path(o_.dir) / p;
  }

  // Reads whole records from `files`, in order, into one split (pixels normalised).
  tlab::Split read_files(const std::vector<fs::path>& files, const std::string& role) const {
    const bool c100 = o_.variant == "cifar100";
    const int64_t label_bytes = c100 ? 2 : 1, record = label_bytes + kPixels;
    const std::string layout = c100 ? "CIFAR-100 record (coarse and fine label bytes + 3072 "
                                      "pixel bytes)"
                                    : "CIFAR-10 record (1 label byte + 3072 pixel bytes)";
    std::vector<std::string> contents;
    int64_t n = 0;
    for (const auto& f : files) {
      const std::string what = "cifar: " + role + " file";
      std::string bytes = tlab_ds::read_bytes(f, what);
      const auto size = static_cast<int64_t>(bytes.size());
      if (size == 0)
        throw std::invalid_argument(what + " " + quote(f) + " is empty; expected " +
                                    std::to_string(record) + "-byte " + layout + "s");
      if (size % record != 0)
        throw std::invalid_argument(
            what + " " + quote(f) + " has " + std::to_string(size) + " bytes, not a multiple of " +
            "the " + std::to_string(record) + "-byte " + layout + ": truncated after " +
            std::to_string(size / record) + " records, or not a " + o_.variant + " binary file");
      n += size / record;
      contents.push_back(std::move(bytes));
    }
    torch::Tensor pixels = torch::empty({n, 3, kSide, kSide}, torch::kByte);
    torch::Tensor y = torch::empty({n}, torch::kLong);
    uint8_t* px = pixels.data_ptr<uint8_t>();
    int64_t* py = y.data_ptr<int64_t>();
    int64_t i = 0;
    for (std::size_t f = 0; f < files.size(); ++f) {
      const std::string& b = contents[f];
      const int64_t records = static_cast<int64_t>(b.size()) / record;
      for (int64_t r = 0; r < records; ++r, ++i) {
        const auto* rec = reinterpret_cast<const unsigned char*>(b.data()) + r * record;
        const int64_t coarse = rec[0], fine = c100 ? rec[1] : 0;
        auto bad = [&](const char* which, int64_t v, int64_t limit, const std::string& hint) {
          return std::invalid_argument(
              "cifar: " + role + " file " + quote(files[f]) + " record " + std::to_string(r) +
              " (byte offset " + std::to_string(r * record) + "): " + which + " " +
              std::to_string(v) + " is out of range; expected < " + std::to_string(limit) + hint);
        };
        if (!c100 && coarse >= 10)
          throw bad("label", coarse, 10,
                    " (a CIFAR-100 file? set variant = \"cifar100\"), or a damaged file");
        if (c100 && coarse >= 20)
          throw bad("coarse label", coarse, 20,
                    " (a CIFAR-10 file? set variant = \"cifar10\"), or a damaged file");
        if (c100 && fine >= 100) throw bad("fine label", fine, 100, ", or a damaged file");
        py[i] = (c100 && o_.labels == "fine") ? fine : coarse;
        std::memcpy(px + i * kPixels, rec + label_bytes, kPixels);
      }
    }
    torch::Tensor x = pixels.to(torch::kFloat).div_(255.0);
    if (o_.normalize) {
      const bool c100v = o_.variant == "cifar100";
      const std::vector<double>& mean = o_.mean.empty() ? (c100v ? kMean100 : kMean10) : o_.mean;
      const std::vector<double>& sd = o_.stdev.empty() ? (c100v ? kStd100 : kStd10) : o_.stdev;
      torch::Tensor m = torch::tensor(mean, torch::kDouble).to(torch::kFloat).view({1, 3, 1, 1});
      torch::Tensor s = torch::tensor(sd, torch::kDouble).to(torch::kFloat).view({1, 3, 1, 1});
      x = x.sub_(m).div_(s);
    }
    return {x, y};
  }

  Options o_;
};

}  // namespace

TLAB_PLUGIN(Cifar, "cifar", "1.0.0", "CIFAR-10 / CIFAR-100 binary files (3x32x32 images)")
