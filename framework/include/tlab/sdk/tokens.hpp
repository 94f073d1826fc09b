#pragma once
// Token-id inputs for backbones over text (transformer, bert, embedding, ...): the batch as N x L
// int64 ids, checked, with errors that name the plugin and the fix.
#include <torch/types.h>

#include <stdexcept>
#include <string>

namespace tlab {

/// `x` as N x L int64 token ids. Accepts int64, other integer types, and floats holding whole
/// numbers (converted). On the CPU (where reading values back costs no device synchronisation)
/// also checks that every id lies in [0, vocab_size); on a GPU the embedding's own bounds check
/// fires instead. Throws std::invalid_argument / std::out_of_range starting with "<plugin>: ";
/// `fix` ends the out-of-range message (e.g. "set backbone.vocab_size to ...").
inline torch::Tensor token_ids(const torch::Tensor& x, int64_t vocab_size,
                               const std::string& plugin, const std::string& fix) {
  if (x.dim() != 2)
    throw std::invalid_argument(plugin + ": expected token ids shaped N x L, got a tensor of " +
                                std::to_string(x.dim()) + " dimension(s)");
  torch::Tensor ids = x;
  const bool check = !x.is_cuda();
  if (x.is_floating_point()) {  // the runner used to cast inputs to float: accept whole numbers
    if (check && !torch::equal(x, x.round()))
      throw std::invalid_argument(plugin +
                                  ": inputs must be token ids (whole numbers), got fractional "
                                  "values; the dataset must produce int64 token ids");
    ids = x.to(torch::kLong);
  } else if (x.scalar_type() != torch::kLong) {
    ids = x.to(torch::kLong);
  }
  if (check && ids.numel() > 0) {
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= vocab_size)
      throw std::out_of_range(plugin + ": token id " + std::to_string(lo < 0 ? lo : hi) +
                              " is outside [0, vocab_size = " + std::to_string(vocab_size) + "); " +
                              fix);
  }
  return ids;
}

}  // namespace tlab
