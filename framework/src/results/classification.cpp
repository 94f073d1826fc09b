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

namespace {

const std::vector<std::string>& single_metrics() {
  static const std::vector<std::string> names = {
      "acc", "loss", "balanced_acc", "precision_macro", "recall_macro", "f1_macro", "ece"};
  return names;
}

// k of "top<k>_acc", or 0 when `name` is not of that form.
int64_t top_k_value(const std::string& name) {
  if (name.size() < 8 || name.compare(0, 3, "top") != 0 ||
      name.compare(name.size() - 4, 4, "_acc") != 0)
    return 0;
  const std::string digits = name.substr(3, name.size() - 7);
  if (digits.empty() || digits.size() > 6 || digits[0] == '0' ||
      digits.find_first_not_of("0123456789") != std::string::npos)
    return 0;
  return std::stoll(digits);
}

}  // namespace

const std::vector<std::string>& default_metrics() {
  static const std::vector<std::string> names = single_metrics();
  return names;
}

void check_metric_name(const std::string& name, const std::string& where) {
  if (std::find(single_metrics().begin(), single_metrics().end(), name) != single_metrics().end() ||
      name == "per_class")
    return;
  if (const int64_t k = top_k_value(name)) {
    if (k >= 2) return;
    throw ClassificationError(fmt::format(
        "{}: unknown metric \"{}\": top-1 accuracy is \"acc\"; top-k needs k >= 2, e.g. "
        "\"top5_acc\"",
        where, name));
  }
  throw ClassificationError(fmt::format(
      "{}: unknown metric \"{}\"; expected one of {}, top<k>_acc (e.g. top5_acc) or per_class",
      where, name, fmt::join(single_metrics(), ", ")));
}

std::vector<int64_t> top_k_of(const std::vector<std::string>& names) {
  std::vector<int64_t> ks;
  for (const auto& n : names)
    if (const int64_t k = top_k_value(n); k >= 2) ks.push_back(k);
  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  return ks;
}

bool higher_is_better(const std::string& name) { return name != "loss" && name != "ece"; }

double metric_value(const ClassificationReport& r, double loss, const std::string& name) {
  if (name == "acc") return r.accuracy;
  if (name == "loss") return loss;
  if (name == "balanced_acc") return r.balanced_accuracy;
  if (name == "precision_macro") return r.precision_macro;
  if (name == "recall_macro") return r.recall_macro;
  if (name == "f1_macro") return r.f1_macro;
  if (name == "ece") return r.ece;
  if (const int64_t k = top_k_value(name)) {
    auto found = r.top_k.find(k);
    if (found != r.top_k.end()) return found->second;
    throw ClassificationError(fmt::format(
        "metric \"{}\" was not counted in this evaluation (it counted top-k for k in [{}])", name,
        fmt::join(
            [&] {
              std::vector<int64_t> v;
              for (const auto& [kk, value] : r.top_k) v.push_back(kk);
              return v;
            }(),
            ", ")));
  }
  check_metric_name(name, "metric");
  throw ClassificationError(
      fmt::format("metric \"{}\" has one value per class; name a single-valued metric", name));
}

std::vector<std::pair<std::string, double>> metric_values(const ClassificationReport& r,
                                                          double loss,
                                                          const std::vector<std::string>& names) {
  std::vector<std::pair<std::string, double>> out;
  for (const auto& name : names) {
    if (name != "per_class") {
      out.emplace_back(name, metric_value(r, loss, name));
      continue;
    }
    for (std::size_t c = 0; c < r.per_class.size(); ++c) {
      const ClassMetrics& m = r.per_class[c];
      if (m.support == 0 && m.predicted == 0) continue;
      out.emplace_back(fmt::format("per_class/{}/precision", c), m.precision);
      out.emplace_back(fmt::format("per_class/{}/recall", c), m.recall);
      out.emplace_back(fmt::format("per_class/{}/f1", c), m.f1);
    }
  }
  return out;
}

}  // namespace tlab
