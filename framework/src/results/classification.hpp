#pragma once
// Classification metrics from the counts of one evaluation pass: precision, recall and F1 per
// class and macro-averaged, balanced accuracy, top-k accuracy, expected calibration error, the
// confusion matrix. No LibTorch: the engine fills the counts while it evaluates (argmax, top-k,
// the winning probability), the results commands read them back from the database.
//
// The definitions are scikit-learn's defaults, so that a number here equals the one a
// researcher gets from sklearn on the same predictions (tests/results/test_classification.cpp
// checks <= 1e-9 against python3-sklearn):
//   - precision_c = TP / (TP + FP), 0 when class c is never predicted (zero_division=0);
//     recall_c = TP / (TP + FN), 0 when c is absent from the labels; F1_c = 2PR / (P + R), 0
//     when P + R = 0.
//   - macro averages run over the classes that occur in the labels or the predictions
//     (sklearn's `labels=None`): a class absent from a split and never predicted does not
//     count, one absent from the labels but predicted counts with recall 0.
//   - balanced accuracy: the mean recall over the classes that occur in the labels
//     (sklearn's balanced_accuracy_score).
//   - top-k accuracy: the fraction whose label is among the k highest scores.
//   - expected calibration error (Guo et al. 2017, "On Calibration of Modern Neural
//     Networks"): the winning probability's range [0, 1] cut into B equal bins (a value on a
//     boundary goes to the lower bin; 0 to the first), sum over bins of
//     |accuracy(bin) - mean confidence(bin)| * count(bin) / N.
//
// Example:
//   ClassificationCounts counts(10, {1, 5}, 15);
//   counts.add(label, predicted, confidence, rank_of_label);   // per example
//   ClassificationReport report = summarize(counts);
//   report.recall_macro, report.per_class[3].f1, report.top_k.at(5), report.ece
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace tlab {

/// A problem with counts or their text (the message says which value and what fits).
class ClassificationError : public std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

/// What one evaluation pass counts: enough for every metric of ClassificationReport.
struct ClassificationCounts {
  ClassificationCounts() = default;
  /// `num_classes` >= 1; `top_k` the k of the top-k accuracies (each >= 1); `calibration_bins`
  /// >= 1 (15 is the usual choice).
  ClassificationCounts(int64_t num_classes, std::vector<int64_t> top_k, int64_t calibration_bins);

  int64_t num_classes = 0;
  /// num_classes x num_classes, row-major: [label * num_classes + predicted].
  std::vector<int64_t> confusion;
  std::vector<int64_t> top_k;          ///< The k values, ascending, distinct.
  std::vector<int64_t> top_k_correct;  ///< Per k: examples whose label is among the top k.
  /// Calibration bins of the winning probability: count, correct, sum of the probabilities.
  std::vector<int64_t> bin_count, bin_correct;
  std::vector<double> bin_confidence;

  /// One example: its label, the predicted class, the predicted class's probability, and the
  /// label's rank among the scores (0 when it was predicted). Throws ClassificationError for a
  /// class out of range.
  void add(int64_t label, int64_t predicted, double confidence, int64_t label_rank);
  /// Adds `other`'s counts (same classes, k values and bins, or ClassificationError).
  void merge(const ClassificationCounts& other);
  /// Examples counted.
  int64_t total() const;
  /// The bin of a winning probability in [0, 1].
  int64_t bin_of(double confidence) const;

  /// A compact JSON text of the counts (what the database stores) and back. from_json throws
  /// ClassificationError naming what is missing or inconsistent.
  std::string to_json() const;
  static ClassificationCounts from_json(const std::string& text);
};

/// Precision, recall, F1 and support of one class.
struct ClassMetrics {
  double precision = 0, recall = 0, f1 = 0;
  int64_t support = 0;    ///< Examples of this class among the labels.
  int64_t predicted = 0;  ///< Examples predicted as this class.
};

/// Every metric of one evaluation.
struct ClassificationReport {
  int64_t total = 0;
  double accuracy = 0;
  double balanced_accuracy = 0;
  double precision_macro = 0, recall_macro = 0, f1_macro = 0;
  double ece = 0;
  std::map<int64_t, double> top_k;      ///< k -> top-k accuracy.
  std::vector<ClassMetrics> per_class;  ///< By class index.
};

/// The metrics of `counts` (see the top of this file). Throws ClassificationError when nothing
/// was counted.
ClassificationReport summarize(const ClassificationCounts& counts);

// ---------------------------------------------------------------------------------------------
// Metric names: what `[eval] metrics` lists, `[train] monitor` names, and the last part of a
// summary's name (`target/test/f1_macro`).
//
//   acc, loss, balanced_acc, precision_macro, recall_macro, f1_macro, ece   one value each
//   top<k>_acc (k >= 2, e.g. top5_acc)                                      top-k accuracy
//   per_class      precision, recall and F1 of each class: per_class/<c>/precision, ...

/// The metrics recorded when `[eval] metrics` is not given.
const std::vector<std::string>& default_metrics();

/// Checks one metric name; throws ClassificationError saying which name and listing those that
/// exist. `where` names the setting in the message (e.g. "[eval] metrics").
void check_metric_name(const std::string& name, const std::string& where);

/// The k of every top<k>_acc among `names`, ascending.
std::vector<int64_t> top_k_of(const std::vector<std::string>& names);

/// Whether a larger value of the metric is better (false for loss and ece).
bool higher_is_better(const std::string& name);

/// The value of one single-valued metric (not per_class) of `report`; `loss` is the mean
/// cross-entropy of the same pass. Throws ClassificationError for a top-k the counts lack.
double metric_value(const ClassificationReport& report, double loss, const std::string& name);

/// The (summary name, value) pairs that `names` select, in their order; per_class expands to
/// per_class/<c>/{precision,recall,f1} for every class that occurs in the labels or the
/// predictions.
std::vector<std::pair<std::string, double>> metric_values(const ClassificationReport& report,
                                                          double loss,
                                                          const std::vector<std::string>& names);

}  // namespace tlab
