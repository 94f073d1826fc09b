#pragma once
// Shared by the fine-tuning strategies (finetune, linear_probe, l2sp; header-only, compiled into
// each): the parameters of the model outside its backbone (the "new" layers), the L2-SP penalty
// and a content hash of tensors. Pre-training on the source is the SDK's
// tlab::pretrain_on_source (tlab/sdk/source.hpp).
#include <torch/types.h>

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <vector>

#include "tlab/sdk/strategy.hpp"

namespace tlab_strategy {

/// Parameters of the model that are not the backbone's (the head and whatever adapters added)
/// and require a gradient, in the model's order.
inline std::vector<torch::Tensor> non_backbone_parameters(tlab::Model& model) {
  std::unordered_set<const void*> in_backbone;
  for (const auto& p : model.backbone->parameters()) in_backbone.insert(p.unsafeGetTensorImpl());
  std::vector<torch::Tensor> out;
  for (const auto& p : model.parameters())
    if (p.requires_grad() && !in_backbone.count(p.unsafeGetTensorImpl())) out.push_back(p);
  return out;
}

/// The two terms of L2-SP (Li, Grandvalet & Davoine 2018, eq. 3):
///   Omega(w) = alpha/2 * ||w_S - w0_S||^2 + beta/2 * ||w_new||^2
/// with w_S the pre-trained (shared) parameters, w0_S their values after pre-training and
/// w_new the parameters of the new layers. Every tensor counts, biases included (as TLlib's
/// SPRegularization; the paper writes the penalty over all parameters `w`).
struct L2spTerms {
  torch::Tensor distance;  ///< ||w_S - w0_S||^2 (0-dim).
  torch::Tensor head;      ///< ||w_new||^2 (0-dim).
  torch::Tensor penalty;   ///< alpha/2 * distance + beta/2 * head.
};

inline L2spTerms l2sp_terms(const std::vector<torch::Tensor>& shared,
                            const std::vector<torch::Tensor>& start,
                            const std::vector<torch::Tensor>& fresh, double alpha, double beta) {
  if (shared.size() != start.size())
    throw std::invalid_argument("l2sp: " + std::to_string(shared.size()) +
                                " pre-trained parameters but " + std::to_string(start.size()) +
                                " starting points");
  L2spTerms t;
  auto opts = torch::TensorOptions().dtype(torch::kFloat);
  t.distance = torch::zeros({}, shared.empty() ? opts : opts.device(shared[0].device()));
  for (std::size_t i = 0; i < shared.size(); ++i)
    t.distance = t.distance + (shared[i] - start[i]).pow(2).sum();
  t.head = torch::zeros({}, t.distance.options());
  for (const auto& p : fresh) t.head = t.head + p.pow(2).sum();
  t.penalty = alpha / 2 * t.distance + beta / 2 * t.head;
  return t;
}

/// 64-bit FNV-1a, continued from `h`, over `n` bytes.
inline uint64_t fnv1a(const void* data, std::size_t n, uint64_t h = 14695981039346656037ull) {
  const auto* b = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/// Continues `h` with a tensor's dtype, shape and values (copied to the CPU, contiguous).
inline uint64_t hash_tensor(const torch::Tensor& t, uint64_t h) {
  const std::string head =
      std::string(c10::toString(t.scalar_type())) + ":" + c10::str(t.sizes()) + ";";
  h = fnv1a(head.data(), head.size(), h);
  auto c = t.detach().to(torch::kCPU).contiguous();
  return fnv1a(c.data_ptr(), c.numel() * c.element_size(), h);
}

}  // namespace tlab_strategy
