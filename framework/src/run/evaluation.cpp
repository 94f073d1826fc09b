#include "run/evaluation.hpp"

#include <optional>

#include <fmt/format.h>
#include <torch/nn/functional/loss.h>

#include "run/data_prep.hpp"
#include "run/prefetch.hpp"
#include "tlab/sdk/mode.hpp"

namespace tlab {

double SplitEvaluation::accuracy() const {
  int64_t correct = 0;
  for (int64_t c = 0; c < counts.num_classes; ++c)
    correct += counts.confusion[static_cast<std::size_t>(c * counts.num_classes + c)];
  const int64_t n = counts.total();
  return n ? static_cast<double>(correct) / static_cast<double>(n) : 0.0;
}

SplitEvaluation evaluate_split(torch::nn::Module& module,
                               const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                               const Split& split, torch::Device device, int64_t num_classes,
                               const std::vector<int64_t>& top_k, int64_t calibration_bins) {
  SplitEvaluation out;
  const int64_t n = split.size();
  if (n == 0) return out;
  ModeScope restore(module);  // each submodule gets its own mode back (a frozen part stays eval)
  module.eval();
  torch::NoGradGuard no_grad;
  const auto longs = torch::TensorOptions(device).dtype(torch::kLong);
  const auto doubles = torch::TensorOptions(device).dtype(torch::kDouble);
  // Device-side accumulators, created once the width of the scores is known.
  torch::Tensor confusion, hits, bin_count, bin_correct, bin_confidence;
  auto loss = torch::zeros({}, doubles);
  torch::Tensor ks = torch::tensor(top_k, torch::kLong).to(device);
  const int64_t bins = calibration_bins;
  // Modest batches: activations of huge ones are mmap-allocated and page-faulted every call.
  const int64_t bs = 256;
  std::optional<Prefetcher> stream;
  if (split.streamed())
    stream.emplace(split.stream, index_batches(torch::arange(n, torch::kLong), bs), 0,
                   split.stream->workers(), prefetch_capacity(*split.stream));
  int64_t classes = num_classes;
  for (int64_t i = 0; i < n; i += bs) {
    auto x = stream ? as_input(stream->next(), device) : split.x.slice(0, i, std::min(n, i + bs));
    auto y = split.y.slice(0, i, std::min(n, i + bs));
    auto scores = forward(x);
    if (scores.dim() != 2 || scores.size(0) != y.size(0))
      throw std::invalid_argument(fmt::format(
          "the model's class scores have shape [{}] for a batch of {} examples; expected "
          "[{}, classes]",
          fmt::join(scores.sizes(), ", "), y.size(0), y.size(0)));
    if (!confusion.defined()) {
      if (classes == 0) classes = scores.size(1);
      if (scores.size(1) != classes)
        throw std::invalid_argument(fmt::format(
            "the model gives {} class scores per example but the data has {} classes; evaluate "
            "it on a dataset with the classes it was trained on",
            scores.size(1), classes));
      if (bins < 1)
        throw ClassificationError(fmt::format("calibration_bins = {}; expected >= 1", bins));
      out.counts = ClassificationCounts(classes, top_k, bins);
      confusion = torch::zeros({classes * classes}, longs);
      hits = torch::zeros({static_cast<int64_t>(top_k.size())}, longs);
      bin_count = torch::zeros({bins}, longs);
      bin_correct = torch::zeros({bins}, doubles);
      bin_confidence = torch::zeros({bins}, doubles);
    }
    const auto s = scores.to(torch::kDouble);
    loss += torch::nn::functional::cross_entropy(
        s, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    const auto predicted = s.argmax(1);
    confusion += torch::bincount(y * classes + predicted, {}, classes * classes);
    if (!top_k.empty()) {
      // The label's rank: classes scored higher, and (as sklearn's stable sort, reversed) equal
      // scores of higher class index.
      const auto label_score = s.gather(1, y.unsqueeze(1));
      const auto index = torch::arange(classes, longs).unsqueeze(0);
      const auto ahead =
          s.gt(label_score).logical_or(s.eq(label_score).logical_and(index.gt(y.unsqueeze(1))));
      const auto rank = ahead.sum(1);
      hits += rank.unsqueeze(1).lt(ks.unsqueeze(0)).sum(0);
    }
    const auto confidence = torch::softmax(s, 1).gather(1, predicted.unsqueeze(1)).squeeze(1);
    const auto bin =
        (confidence * static_cast<double>(bins)).ceil().to(torch::kLong).sub(1).clamp(0, bins - 1);
    bin_count += torch::bincount(bin, {}, bins);
    bin_correct += torch::bincount(bin, predicted.eq(y).to(torch::kDouble), bins);
    bin_confidence += torch::bincount(bin, confidence, bins);
  }
  // One transfer of everything counted.
  auto copy = [](const torch::Tensor& t, auto& into) {
    const auto c = t.cpu().contiguous();
    using T = typename std::decay_t<decltype(into)>::value_type;
    into.assign(c.data_ptr<T>(), c.data_ptr<T>() + c.numel());
  };
  copy(confusion, out.counts.confusion);
  copy(hits, out.counts.top_k_correct);
  copy(bin_count, out.counts.bin_count);
  std::vector<double> correct;
  copy(bin_correct, correct);
  for (std::size_t b = 0; b < correct.size(); ++b)
    out.counts.bin_correct[b] = static_cast<int64_t>(std::llround(correct[b]));
  copy(bin_confidence, out.counts.bin_confidence);
  out.loss = loss.item<double>() / static_cast<double>(n);
  return out;
}

}  // namespace tlab
