#include "results/classification.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace tlab {

namespace {

std::size_t at(int64_t i) { return static_cast<std::size_t>(i); }

double ratio(int64_t numerator, int64_t denominator) {
  return denominator == 0 ? 0.0 : static_cast<double>(numerator) / denominator;
}

}  // namespace

ClassificationCounts::ClassificationCounts(int64_t classes, std::vector<int64_t> ks,
                                           int64_t calibration_bins)
    : num_classes(classes), top_k(std::move(ks)) {
  if (num_classes < 1)
    throw ClassificationError(
        fmt::format("a classification has {} classes; expected 1 or more", num_classes));
  if (calibration_bins < 1)
    throw ClassificationError(fmt::format(
        "calibration_bins = {}; expected 1 or more (15 is the usual choice)", calibration_bins));
  std::sort(top_k.begin(), top_k.end());
  top_k.erase(std::unique(top_k.begin(), top_k.end()), top_k.end());
  for (int64_t k : top_k)
    if (k < 1)
      throw ClassificationError(
          fmt::format("top-k accuracy with k = {}; expected k >= 1 (e.g. top_k = [1, 5])", k));
  confusion.assign(at(num_classes * num_classes), 0);
  top_k_correct.assign(top_k.size(), 0);
  bin_count.assign(at(calibration_bins), 0);
  bin_correct.assign(at(calibration_bins), 0);
  bin_confidence.assign(at(calibration_bins), 0.0);
}

int64_t ClassificationCounts::bin_of(double confidence) const {
  const auto bins = static_cast<int64_t>(bin_count.size());
  // (i/B, (i+1)/B] is bin i; 0 (and anything below, e.g. -0) goes to the first bin.
  const auto bin = static_cast<int64_t>(std::ceil(confidence * bins)) - 1;
  return std::clamp<int64_t>(bin, 0, bins - 1);
}

void ClassificationCounts::add(int64_t label, int64_t predicted, double confidence,
                               int64_t label_rank) {
  if (label < 0 || label >= num_classes || predicted < 0 || predicted >= num_classes)
    throw ClassificationError(fmt::format(
        "an example with label {} predicted as {}; both must be classes 0..{} of this task", label,
        predicted, num_classes - 1));
  ++confusion[at(label * num_classes + predicted)];
  for (std::size_t i = 0; i < top_k.size(); ++i)
    if (label_rank < top_k[i]) ++top_k_correct[i];
  const auto bin = at(bin_of(confidence));
  ++bin_count[bin];
  bin_correct[bin] += label == predicted ? 1 : 0;
  bin_confidence[bin] += confidence;
}

void ClassificationCounts::merge(const ClassificationCounts& other) {
  if (other.num_classes != num_classes || other.top_k != top_k ||
      other.bin_count.size() != bin_count.size())
    throw ClassificationError(fmt::format(
        "cannot add the counts of a {}-class evaluation with {} calibration bins to those of a "
        "{}-class one with {}: they come from different tasks or [eval] settings",
        other.num_classes, other.bin_count.size(), num_classes, bin_count.size()));
  for (std::size_t i = 0; i < confusion.size(); ++i) confusion[i] += other.confusion[i];
  for (std::size_t i = 0; i < top_k_correct.size(); ++i) top_k_correct[i] += other.top_k_correct[i];
  for (std::size_t i = 0; i < bin_count.size(); ++i) {
    bin_count[i] += other.bin_count[i];
    bin_correct[i] += other.bin_correct[i];
    bin_confidence[i] += other.bin_confidence[i];
  }
}

int64_t ClassificationCounts::total() const {
  int64_t n = 0;
  for (int64_t c : confusion) n += c;
  return n;
}

std::string ClassificationCounts::to_json() const {
  nlohmann::json j = {
      {"num_classes", num_classes},      {"confusion", confusion}, {"top_k", top_k},
      {"top_k_correct", top_k_correct},  {"bin_count", bin_count}, {"bin_correct", bin_correct},
      {"bin_confidence", bin_confidence}};
  return j.dump();
}

ClassificationCounts ClassificationCounts::from_json(const std::string& text) {
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object())
    throw ClassificationError(
        fmt::format("classification counts are not a JSON object: '{}'", text.substr(0, 80)));
  ClassificationCounts c;
  try {
    c.num_classes = j.at("num_classes").get<int64_t>();
    c.confusion = j.at("confusion").get<std::vector<int64_t>>();
    c.top_k = j.at("top_k").get<std::vector<int64_t>>();
    c.top_k_correct = j.at("top_k_correct").get<std::vector<int64_t>>();
    c.bin_count = j.at("bin_count").get<std::vector<int64_t>>();
    c.bin_correct = j.at("bin_correct").get<std::vector<int64_t>>();
    c.bin_confidence = j.at("bin_confidence").get<std::vector<double>>();
  } catch (const nlohmann::json::exception& e) {
    throw ClassificationError(fmt::format("classification counts are incomplete: {}", e.what()));
  }
  if (c.num_classes < 1 || c.confusion.size() != at(c.num_classes * c.num_classes) ||
      c.top_k_correct.size() != c.top_k.size() || c.bin_count.empty() ||
      c.bin_correct.size() != c.bin_count.size() || c.bin_confidence.size() != c.bin_count.size())
    throw ClassificationError(fmt::format(
        "classification counts do not fit together ({} classes, {} confusion cells, {} k "
        "values with {} counts, {}/{}/{} calibration bins)",
        c.num_classes, c.confusion.size(), c.top_k.size(), c.top_k_correct.size(),
        c.bin_count.size(), c.bin_correct.size(), c.bin_confidence.size()));
  return c;
}

ClassificationReport summarize(const ClassificationCounts& counts) {
  ClassificationReport r;
  r.total = counts.total();
  if (r.total == 0)
    throw ClassificationError(
        "no example was evaluated (an empty split): there are no metrics to compute");
  const int64_t n = counts.num_classes;
  r.per_class.resize(at(n));
  int64_t correct = 0;
  for (int64_t c = 0; c < n; ++c) {
    ClassMetrics& m = r.per_class[at(c)];
    for (int64_t other = 0; other < n; ++other) {
      m.support += counts.confusion[at(c * n + other)];
      m.predicted += counts.confusion[at(other * n + c)];
    }
    const int64_t tp = counts.confusion[at(c * n + c)];
    correct += tp;
    m.precision = ratio(tp, m.predicted);
    m.recall = ratio(tp, m.support);
    m.f1 = m.precision + m.recall > 0 ? 2 * m.precision * m.recall / (m.precision + m.recall) : 0;
  }
  r.accuracy = ratio(correct, r.total);
  int64_t present = 0, labelled = 0;
  for (const ClassMetrics& m : r.per_class) {
    if (m.support > 0 || m.predicted > 0) {
      ++present;
      r.precision_macro += m.precision;
      r.recall_macro += m.recall;
      r.f1_macro += m.f1;
    }
    if (m.support > 0) {
      ++labelled;
      r.balanced_accuracy += m.recall;
    }
  }
  r.precision_macro /= present;
  r.recall_macro /= present;
  r.f1_macro /= present;
  r.balanced_accuracy /= labelled;
  for (std::size_t i = 0; i < counts.top_k.size(); ++i)
    r.top_k[counts.top_k[i]] = ratio(counts.top_k_correct[i], r.total);
  for (std::size_t b = 0; b < counts.bin_count.size(); ++b) {
    if (counts.bin_count[b] == 0) continue;
    const double count = static_cast<double>(counts.bin_count[b]);
    const double accuracy = counts.bin_correct[b] / count;
    const double confidence = counts.bin_confidence[b] / count;
    r.ece += std::abs(accuracy - confidence) * count / static_cast<double>(r.total);
  }
  return r;
}

}  // namespace tlab
