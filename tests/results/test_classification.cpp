// Classification metrics (results/classification.hpp) against scikit-learn on the same
// predictions, with a class absent from the labels, one never predicted, and one in neither;
// the counts' JSON round trip and every error message.
#include "results/classification.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_helpers.hpp"

namespace tlab {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ClassificationError& e) {
    return e.what();
  }
  return "(no ClassificationError)";
}

// Random scores for 7 classes; the labels never use class 5 (absent from the split), the
// scores make class 2 never win (never predicted), class 6 is neither a label nor predicted.
// sklearn's metrics and a NumPy ECE on them; the examples as CSV (label, scores...).
constexpr const char* kReference = R"PY(
import json, sys
import numpy as np
from sklearn import metrics
out = sys.argv[1]
rng = np.random.default_rng(7)
n, c = 500, 7
labels = rng.choice([0, 1, 2, 3, 4], size=n, p=[0.4, 0.3, 0.1, 0.15, 0.05])
logits = rng.normal(size=(n, c))
logits[np.arange(n), labels] += rng.normal(1.0, 1.0, size=n)   # better than chance
logits[:, 2] -= 100.0                                          # class 2: never predicted
logits[:, 6] -= 100.0                                          # class 6: neither
logits[:40, 5] += 100.0                                        # class 5: predicted, no label
p = np.exp(logits - logits.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
pred = p.argmax(1)
conf = p.max(1)
bins = 15
which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
ece = sum(abs((pred[which == b] == labels[which == b]).mean() - conf[which == b].mean())
          * (which == b).sum() / n for b in range(bins) if (which == b).any())
prec, rec, f1, sup = metrics.precision_recall_fscore_support(
    labels, pred, labels=list(range(c)), zero_division=0)
ref = {
  "accuracy": metrics.accuracy_score(labels, pred),
  "balanced_accuracy": metrics.balanced_accuracy_score(labels, pred),
  "precision_macro": metrics.precision_score(labels, pred, average="macro", zero_division=0),
  "recall_macro": metrics.recall_score(labels, pred, average="macro", zero_division=0),
  "f1_macro": metrics.f1_score(labels, pred, average="macro", zero_division=0),
  "top_3": metrics.top_k_accuracy_score(labels, p, k=3, labels=list(range(c))),
  "ece": float(ece),
  "precision": prec.tolist(), "recall": rec.tolist(), "f1": f1.tolist(),
  "support": sup.tolist(),
  "confusion": metrics.confusion_matrix(labels, pred, labels=list(range(c))).ravel().tolist(),
}
json.dump(ref, open(out + "/ref.json", "w"))
with open(out + "/examples.csv", "w") as f:
  for y, row in zip(labels, p):
    f.write(",".join([str(int(y))] + [repr(float(v)) for v in row]) + "\n")
)PY";

TEST(Classification, MetricsEqualScikitLearnsOnTheSamePredictions) {
  if (test::shell("/usr/bin/python3 -c 'import sklearn, numpy'").code != 0)
    GTEST_SKIP() << "/usr/bin/python3 cannot import sklearn: install the Debian package "
                    "python3-sklearn (tools/setup.sh installs it)";
  const fs::path dir = test::temp_dir("classification");
  const fs::path script = test::write_file(dir / "ref.py", kReference);
  const auto py = test::shell("/usr/bin/python3 " + script.string() + " " + dir.string());
  ASSERT_EQ(py.code, 0) << py.out;

  ClassificationCounts counts(7, {3, 1}, 15);
  std::ifstream csv(dir / "examples.csv");
  for (std::string line; std::getline(csv, line);) {
    std::stringstream fields(line);
    std::string field;
    std::getline(fields, field, ',');
    const int64_t label = std::stoll(field);
    std::vector<double> p;
    while (std::getline(fields, field, ',')) p.push_back(std::stod(field));
    int64_t predicted = 0, rank = 0;
    for (std::size_t c = 0; c < p.size(); ++c) {
      if (p[c] > p[static_cast<std::size_t>(predicted)]) predicted = static_cast<int64_t>(c);
      if (p[c] > p[static_cast<std::size_t>(label)]) ++rank;
    }
    counts.add(label, predicted, p[static_cast<std::size_t>(predicted)], rank);
  }
  ASSERT_EQ(counts.total(), 500);
  const auto ref = nlohmann::json::parse(test::read_file(dir / "ref.json"));
  const ClassificationReport r = summarize(counts);
  const double tol = 1e-9;
  EXPECT_NEAR(r.accuracy, ref["accuracy"].get<double>(), tol);
  EXPECT_NEAR(r.balanced_accuracy, ref["balanced_accuracy"].get<double>(), tol);
  EXPECT_NEAR(r.precision_macro, ref["precision_macro"].get<double>(), tol);
  EXPECT_NEAR(r.recall_macro, ref["recall_macro"].get<double>(), tol);
  EXPECT_NEAR(r.f1_macro, ref["f1_macro"].get<double>(), tol);
  EXPECT_NEAR(r.top_k.at(3), ref["top_3"].get<double>(), tol);
  EXPECT_NEAR(r.top_k.at(1), ref["accuracy"].get<double>(), tol);
  EXPECT_NEAR(r.ece, ref["ece"].get<double>(), tol);
  EXPECT_EQ(counts.confusion, ref["confusion"].get<std::vector<int64_t>>());
  for (std::size_t c = 0; c < 7; ++c) {
    EXPECT_NEAR(r.per_class[c].precision, ref["precision"][c].get<double>(), tol) << c;
    EXPECT_NEAR(r.per_class[c].recall, ref["recall"][c].get<double>(), tol) << c;
    EXPECT_NEAR(r.per_class[c].f1, ref["f1"][c].get<double>(), tol) << c;
    EXPECT_EQ(r.per_class[c].support, ref["support"][c].get<int64_t>()) << c;
  }
  // The cases the data was made for: 5 predicted but never a label, 2 never predicted.
  EXPECT_EQ(r.per_class[5].support, 0);
  EXPECT_GT(r.per_class[5].predicted, 0);
  EXPECT_EQ(r.per_class[2].predicted, 0);
  EXPECT_GT(r.per_class[2].support, 0);
  fs::remove_all(dir);
}

TEST(Classification, HandComputedCaseAndCalibrationBins) {
  // Labels 0 0 1 1, predictions 0 1 1 1 with confidences 0.9 0.6 0.8 1.0.
  ClassificationCounts counts(3, {1, 2}, 10);
  counts.add(0, 0, 0.9, 0);
  counts.add(0, 1, 0.6, 1);
  counts.add(1, 1, 0.8, 0);
  counts.add(1, 1, 1.0, 0);
  const ClassificationReport r = summarize(counts);
  EXPECT_DOUBLE_EQ(r.accuracy, 0.75);
  EXPECT_DOUBLE_EQ(r.per_class[0].precision, 1.0);
  EXPECT_DOUBLE_EQ(r.per_class[0].recall, 0.5);
  EXPECT_DOUBLE_EQ(r.per_class[1].precision, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(r.per_class[1].recall, 1.0);
  EXPECT_DOUBLE_EQ(r.recall_macro, 0.75);  // class 2: in neither, not averaged
  EXPECT_DOUBLE_EQ(r.balanced_accuracy, 0.75);
  EXPECT_DOUBLE_EQ(r.top_k.at(2), 1.0);
  // Bins of width 0.1: 0.6 -> (0.5, 0.6], 0.8 -> (0.7, 0.8], 0.9, 1.0 -> their own.
  EXPECT_EQ(counts.bin_of(0.6), 5);
  EXPECT_EQ(counts.bin_of(0.0), 0);
  EXPECT_EQ(counts.bin_of(1.0), 9);
  EXPECT_NEAR(r.ece, (0.1 + 0.6 + 0.2 + 0.0) / 4, 1e-12);
}

TEST(Classification, CountsRoundTripThroughJsonAndMerge) {
  ClassificationCounts a(2, {1}, 5), b(2, {1}, 5);
  a.add(0, 0, 0.7, 0);
  b.add(1, 0, 0.55, 1);
  const ClassificationCounts back = ClassificationCounts::from_json(a.to_json());
  EXPECT_EQ(back.confusion, a.confusion);
  EXPECT_EQ(back.bin_confidence, a.bin_confidence);
  a.merge(b);
  EXPECT_EQ(a.total(), 2);
  EXPECT_EQ(a.confusion, (std::vector<int64_t>{1, 0, 1, 0}));
}

TEST(Classification, ErrorsSayWhichValueAndWhatFits) {
  EXPECT_EQ(error_of([] { ClassificationCounts(0, {1}, 15); }),
            "a classification has 0 classes; expected 1 or more");
  EXPECT_EQ(error_of([] { ClassificationCounts(3, {0}, 15); }),
            "top-k accuracy with k = 0; expected k >= 1 (e.g. top_k = [1, 5])");
  EXPECT_EQ(error_of([] { ClassificationCounts(3, {1}, 0); }),
            "calibration_bins = 0; expected 1 or more (15 is the usual choice)");
  ClassificationCounts counts(3, {1}, 15);
  EXPECT_EQ(error_of([&] { counts.add(3, 0, 0.5, 0); }),
            "an example with label 3 predicted as 0; both must be classes 0..2 of this task");
  EXPECT_EQ(error_of([&] { summarize(counts); }),
            "no example was evaluated (an empty split): there are no metrics to compute");
  EXPECT_THAT(error_of([&] { counts.merge(ClassificationCounts(4, {1}, 15)); }),
              HasSubstr("cannot add the counts of a 4-class evaluation with 15 calibration bins "
                        "to those of a 3-class one with 15"));
  EXPECT_THAT(error_of([] { ClassificationCounts::from_json("[1]"); }),
              HasSubstr("classification counts are not a JSON object: '[1]'"));
  EXPECT_THAT(error_of([] { ClassificationCounts::from_json(R"({"num_classes": 2})"); }),
              HasSubstr("classification counts are incomplete"));
  EXPECT_THAT(error_of([] {
                ClassificationCounts::from_json(
                    R"({"num_classes": 2, "confusion": [1], "top_k": [], "top_k_correct": [],)"
                    R"( "bin_count": [1], "bin_correct": [1], "bin_confidence": [0.5]})");
              }),
              HasSubstr("do not fit together (2 classes, 1 confusion cells"));
}

}  // namespace
}  // namespace tlab
