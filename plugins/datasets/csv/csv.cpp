// csv: tabular examples from a delimited text file with a header line: numeric feature columns
// and one label column (integers, or strings mapped to class ids in sorted order).
//
// Fields may be quoted ("a, b" or "say ""hi"""); blank lines are skipped. Features are
// standardised with the mean and standard deviation of the training split only, so that
// validation and test examples are scaled as new data would be.

#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../common/io.hpp"
#include "../common/labels.hpp"
#include "../common/rng.hpp"
#include "tlab/sdk/data.hpp"

namespace {

namespace fs = std::filesystem;
using tlab_ds::quote;

struct CsvOptions {
  /// The training file (required).
  std::string path;
  /// A test file with the same columns (optional).
  std::string test_path;
  /// Name of the label column (default "label").
  std::string label = "label";
  /// Feature columns, in this order; empty = every column but the label, in file order.
  std::vector<std::string> columns;
  /// Field separator, one character (default ",").
  std::string delimiter = ",";
  /// Standardise each feature with the training split's mean and std (default true).
  bool standardize = true;
  /// Fraction of the training file held out for validation, chosen by `seed` (default 0.1).
  double val_fraction = 0.1;
  /// Fraction of the training file held out for testing when there is no test file (0).
  double test_fraction = 0.0;
  /// Data seed for the hold-outs (default 0).
  int64_t seed = 0;
  /// Number of classes; 0 = from the labels (integers: max + 1; strings: distinct values).
  int64_t num_classes = 0;
  /// Class names in id order; labels must be among them (empty = from the labels).
  std::vector<std::string> classes;
  /// A file of inputs without labels (the feature columns; a label column is ignored), read
  /// into the domain's unlabelled inputs with the training file's standardisation: what
  /// adaptation methods train on, and what `tlab predict --input` predicts (optional).
  std::string unlabeled_path;
};

// Splits one line into fields; quoted fields may hold the delimiter and doubled quotes.
// Returns "" or what is wrong.
std::string split_fields(std::string_view line, char delim, std::vector<std::string>& out) {
  out.clear();
  std::size_t i = 0;
  for (;;) {
    std::string field;
    if (i < line.size() && line[i] == '"') {
      ++i;
      for (;;) {
        if (i >= line.size())
          return "a quoted field is not closed; expected a '\"' before the end of the line";
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        field += line[i++];
      }
      if (i < line.size() && line[i] != delim)
        return std::string("unexpected '") + line[i] + "' after a closing quote; expected the " +
               "delimiter '" + delim + "' or the end of the line";
    } else {
      const std::size_t end = line.find(delim, i);
      field = std::string(line.substr(i, end == std::string_view::npos ? end : end - i));
      i = end == std::string_view::npos ? line.size() : end;
    }
    out.push_back(std::move(field));
    if (i >= line.size()) return "";
    ++i;  // the delimiter
  }
}

// One file's feature rows and raw labels.
struct Table {
  std::vector<double> values;  // rows x features, row by row
  std::vector<tlab_ds::RawLabel> labels;
  int64_t rows = 0;
};

class Csv : public tlab::Dataset {
 public:
  using Options = CsvOptions;

  static tlab::Schema schema() {
    using O = Options;
    return tlab::SchemaFor<O>()
        .field("path", &O::path, "training file, with a header line")
        .field("test_path", &O::test_path, "test file with the same columns (optional)")
        .field("label", &O::label, "name of the label column")
        .field("columns", &O::columns, "feature columns (empty = all but the label)")
        .field("delimiter", &O::delimiter, "field separator, one character")
        .field("standardize", &O::standardize, "scale features by the train split's mean/std")
        .field("val_fraction", &O::val_fraction, "fraction of the train file held out for val")
        .range(0.0, 0.99)
        .field("test_fraction", &O::test_fraction,
               "fraction of the train file held out for test (only without test_path)")
        .range(0.0, 0.99)
        .field("seed", &O::seed, "data seed for the hold-outs")
        .min(0)
        .field("num_classes", &O::num_classes, "number of classes (0 = from the labels)")
        .min(0)
        .field("classes", &O::classes, "class names in id order (empty = from the labels)")
        .field("unlabeled_path", &O::unlabeled_path,
               "file of inputs without labels (same feature columns), standardised as the "
               "training file: the unlabelled inputs (optional)");
  }

  explicit Csv(Options options) : o_(std::move(options)) {
    if (o_.path.empty())
      throw std::invalid_argument("csv: path is required; expected the training file's path");
    if (o_.delimiter.size() != 1 || o_.delimiter == "\"" || o_.delimiter == "\n")
      throw std::invalid_argument("csv: delimiter '" + o_.delimiter +
                                  "' is not one character; expected e.g. \",\", \";\" or a tab");
    tlab_ds::check_range("csv", "val_fraction", o_.val_fraction, 0.0, 0.99);
    tlab_ds::check_range("csv", "test_fraction", o_.test_fraction, 0.0, 0.99);
    if (!o_.test_path.empty() && o_.test_fraction > 0)
      throw std::invalid_argument(
          "csv: test_fraction holds out a test split when there is no test file; expected "
          "test_fraction = 0 with test_path");
    if (o_.num_classes < 0)
      throw std::invalid_argument("csv: num_classes " + std::to_string(o_.num_classes) +
                                  " is negative; expected 0 (from the labels) or a count");
  }

  tlab::DomainData load(tlab::Context& ctx) override {
    std::vector<std::string> features = o_.columns;
    Table train = read(o_.path, features);
    Table test;
    if (!o_.test_path.empty()) test = read(o_.test_path, features);
    const auto f = static_cast<int64_t>(features.size());

    tlab_ds::Labels labels =
        tlab_ds::map_labels(train.labels, test.labels, o_.classes, o_.num_classes, "csv");
    tlab_ds::log_info(ctx, labels.description);

    auto to_split = [&](Table& t, std::vector<int64_t>& ids) {
      const auto n = static_cast<int64_t>(ids.size());
      torch::Tensor x = torch::tensor(t.values, torch::kDouble).view({n, f});
      return tlab::Split{x, torch::tensor(ids, torch::kLong).view({n})};
    };
    tlab::Split all = to_split(train, labels.train);
    const tlab_ds::Parts parts =
        tlab_ds::split_examples(all.size(), o_.val_fraction, o_.test_fraction, 0,
                                static_cast<uint64_t>(o_.seed), "csv: file " + quote(o_.path));
    auto take = [&](const std::vector<int64_t>& r) {
      return tlab::Split{tlab_ds::rows(all.x, r), tlab_ds::rows(all.y, r)};
    };
    tlab::DomainData d;
    d.name = fs::path(o_.path).stem().string();
    d.num_classes = labels.num_classes;
    d.input_shape = {f};
    d.train = take(parts.train);
    d.val = take(parts.val);
    d.test = o_.test_path.empty() ? take(parts.test) : to_split(test, labels.test);

    if (o_.standardize) {
      torch::Tensor mean = d.train.x.mean(0);
      torch::Tensor sd = d.train.x.std(0, /*unbiased=*/false);
      torch::Tensor constant = sd < 1e-12;
      if (constant.any().item<bool>()) {
        std::vector<std::string> names;
        for (int64_t j = 0; j < f; ++j)
          if (constant[j].item<bool>()) names.push_back(features[j]);
        tlab_ds::log_warn(
            ctx, "constant in the train split, only centred: " + tlab_ds::join_quoted(names));
        sd = torch::where(constant, torch::ones_like(sd), sd);
      }
      for (tlab::Split* s : {&d.train, &d.val, &d.test}) s->x = (s->x - mean) / sd;
      mean_ = mean;
      sd_ = sd;
      tlab_ds::log_info(ctx, "standardised " + std::to_string(f) +
                                 " features with the train split's mean and std");
    }
    if (!o_.unlabeled_path.empty()) {
      Table u = read(o_.unlabeled_path, features, /*labelled=*/false);
      const auto rows = static_cast<int64_t>(u.values.size()) / f;
      d.unlabeled = torch::tensor(u.values, torch::kDouble).view({rows, f});
    }
    if (o_.standardize) {
      if (d.unlabeled.defined()) d.unlabeled = (d.unlabeled - mean_) / sd_;
    }
    for (tlab::Split* s : {&d.train, &d.val, &d.test}) s->x = s->x.to(torch::kFloat);
    if (d.unlabeled.defined()) d.unlabeled = d.unlabeled.to(torch::kFloat);
    tlab_ds::log_info(ctx, "read " + std::to_string(all.size()) + " rows of " + std::to_string(f) +
                               " features from " + quote(o_.path) + ": train " +
                               std::to_string(d.train.size()) + ", val " +
                               std::to_string(d.val.size()) + ", test " +
                               std::to_string(d.test.size()));
    return d;
  }

 private:
  // Reads one file. `features` is the feature column list: filled from the first file's header
  // when empty, then required in every file.
  Table read(const fs::path& path, std::vector<std::string>& features, bool labelled = true) const {
    const std::string text = tlab_ds::read_bytes(path, "csv: file", /*text=*/true);
    const std::string at = "csv: file " + quote(path);
    const char delim = o_.delimiter[0];
    std::vector<tlab_ds::Line> lines = tlab_ds::split_lines(text);
    std::size_t next = 0;
    while (next < lines.size() && tlab_ds::trim(lines[next].text).empty()) ++next;
    if (next == lines.size())
      throw std::invalid_argument(at +
                                  " is empty; expected a header line naming the columns, then "
                                  "one row per example");
    std::vector<std::string> header;
    const tlab_ds::Line& head = lines[next++];
    std::string why = split_fields(head.text, delim, header);
    if (!why.empty())
      throw std::invalid_argument(at + " line " + std::to_string(head.number) + ": " + why);
    std::map<std::string, std::size_t> column;
    for (std::size_t j = 0; j < header.size(); ++j) {
      header[j] = std::string(tlab_ds::trim(header[j]));
      auto [it, fresh] = column.emplace(header[j], j);
      if (!fresh)
        throw std::invalid_argument(at + " line " + std::to_string(head.number) + ": column '" +
                                    header[j] + "' appears twice in the header (fields " +
                                    std::to_string(it->second + 1) + " and " +
                                    std::to_string(j + 1) + "); expected distinct names");
    }
    auto missing = [&](const std::string& name, const std::string& role) {
      return std::invalid_argument(at + " has no " + role + " '" + name +
                                   "'; its header has the columns " +
                                   tlab_ds::join_quoted(header, 1000));
    };
    if (labelled && !column.count(o_.label)) throw missing(o_.label, "label column");
    if (features.empty()) {
      for (const auto& h : header)
        if (h != o_.label) features.push_back(h);
      if (features.empty())
        throw std::invalid_argument(at + " has only the label column '" + o_.label +
                                    "'; expected at least one feature column");
    }
    std::vector<std::size_t> feature_at;
    for (const auto& name : features) {
      if (name == o_.label)
        throw std::invalid_argument("csv: columns lists the label column '" + name +
                                    "'; expected only feature columns");
      if (!column.count(name)) throw missing(name, "column");
      feature_at.push_back(column.at(name));
    }
    const std::size_t label_at = labelled ? column.at(o_.label) : 0;

    Table t;
    std::vector<std::string> fields;
    for (; next < lines.size(); ++next) {
      const tlab_ds::Line& line = lines[next];
      if (tlab_ds::trim(line.text).empty()) continue;
      const std::string where = at + " line " + std::to_string(line.number);
      why = split_fields(line.text, delim, fields);
      if (!why.empty()) throw std::invalid_argument(where + ": " + why);
      if (fields.size() != header.size())
        throw std::invalid_argument(where + ": " + std::to_string(fields.size()) +
                                    " fields; expected " + std::to_string(header.size()) +
                                    " as in the header (delimiter '" + o_.delimiter + "')");
      for (std::size_t k = 0; k < feature_at.size(); ++k) {
        const std::string& v = fields[feature_at[k]];
        double value = 0;
        if (!tlab_ds::parse_double(v, value))
          throw std::invalid_argument(
              where + ", column '" + features[k] + "': '" + v + "' is not a number; expected " +
              (tlab_ds::trim(v).empty() ? "a value (missing values are not supported)"
                                        : "a finite decimal number"));
        t.values.push_back(value);
      }
      ++t.rows;
      if (!labelled) continue;
      std::string label(tlab_ds::trim(fields[label_at]));
      if (label.empty())
        throw std::invalid_argument(where + ", column '" + o_.label +
                                    "': the label is empty; expected an integer or a class name");
      t.labels.push_back({std::move(label), path, line.number});
    }
    if (t.rows == 0)
      throw std::invalid_argument(at + " has a header but no data rows; expected one row per " +
                                  "example after the header");
    return t;
  }

  Options o_;
  torch::Tensor mean_, sd_;  // the training split's standardisation
};

}  // namespace

TLAB_PLUGIN(Csv, "csv", "1.0.0", "Tabular features and a label column from a CSV file")
