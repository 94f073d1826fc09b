#pragma once
// Distillation losses shared by the distill and rkd strategies (header-only, compiled into each),
// and the teacher they learn from: an earlier finished run's model (Session::load_model).
//
// Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
// Network"): the student matches the teacher's class probabilities softened by a temperature T,
//   L_KD = T^2 * KL(softmax(z_t / T) || softmax(z_s / T)),
// summed over classes and averaged over the batch ("batchmean"); the T^2 keeps the gradient's
// scale independent of T (section 2 of the paper).
//
// Relational knowledge distillation (Park, Kim, Lu & Cho 2019, "Relational Knowledge
// Distillation"): the student matches relations between the teacher's embeddings of a batch,
// not the embeddings themselves, so the two widths may differ.
//   distance-wise (eq. 3-4): psi_D(t_i, t_j) = ||t_i - t_j||_2 / mu, mu the mean distance over the
//     pairs i != j of the batch; L_RKD-D = Huber(psi_D(s_i, s_j), psi_D(t_i, t_j)) over pairs;
//   angle-wise (eq. 5-6): psi_A(t_i, t_j, t_k) = <e_ij, e_kj>, e_ij = (t_i - t_j) / ||t_i - t_j||;
//     L_RKD-A = Huber(psi_A(s), psi_A(t)) over triplets;
// Huber is the smooth L1 loss with delta 1. As in the authors' code, the Huber terms are averaged
// over all N^2 ordered pairs (N^3 triplets); pairs and triplets with a repeated index have
// relation 0 on both sides and contribute 0. The paper's weights for classification (25 for
// distances, 50 for angles) assume this averaging.
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/normalization.h>
#include <torch/types.h>

#include "tlab/sdk/strategy.hpp"

namespace tlab_strategy {

/// Hinton et al.'s KD term: T^2 * KL(softmax(teacher / T) || softmax(student / T)), summed over
/// classes, mean over the batch. `student` and `teacher` are N x C class scores.
inline torch::Tensor kd_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                             double temperature) {
  auto log_q = torch::log_softmax(student / temperature, 1);
  auto log_p = torch::log_softmax(teacher / temperature, 1);
  return (temperature * temperature) * (log_p.exp() * (log_p - log_q)).sum() / student.size(0);
}

/// Euclidean distances between the rows of `e` (N x D), N x N with a zero diagonal. Computed
/// as in the RKD authors' code (|a|^2 + |b|^2 - 2ab, clamped at 1e-12 before the square root so
/// that the gradient stays finite for coinciding rows).
inline torch::Tensor pairwise_distances(const torch::Tensor& e) {
  auto sq = e.pow(2).sum(1);
  auto d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e.mm(e.t())).clamp_min(1e-12);
  return d2.sqrt() * (1 - torch::eye(e.size(0), e.options()));
}

/// psi_D of a batch: pairwise distances divided by their mean over the pairs i != j.
inline torch::Tensor distance_relations(const torch::Tensor& e) {
  const int64_t n = e.size(0);
  auto d = pairwise_distances(e);
  return d / (d.sum() / static_cast<double>(n * (n - 1)));
}

/// psi_A of a batch, N x N x N: [j][i][k] = cosine of the angle at e_j between e_i and e_k
/// (0 where two indices coincide).
inline torch::Tensor angle_relations(const torch::Tensor& e) {
  namespace F = torch::nn::functional;
  auto diff = e.unsqueeze(0) - e.unsqueeze(1);  // [j][i] = e_i - e_j
  auto unit = F::normalize(diff, F::NormalizeFuncOptions().p(2).dim(2));
  return torch::bmm(unit, unit.transpose(1, 2));
}

/// RKD-D: smooth L1 between the student's and the teacher's distance relations (mean over the
/// N^2 ordered pairs). Features are N x D_s and N x D_t; widths may differ. 0 for N < 2.
inline torch::Tensor rkd_distance_loss(const torch::Tensor& student, const torch::Tensor& teacher) {
  if (student.size(0) < 2) return student.sum() * 0;
  return torch::nn::functional::smooth_l1_loss(distance_relations(student),
                                               distance_relations(teacher.detach()));
}

/// RKD-A: smooth L1 between the student's and the teacher's angle relations (mean over the N^3
/// ordered triplets). 0 for N < 3.
inline torch::Tensor rkd_angle_loss(const torch::Tensor& student, const torch::Tensor& teacher) {
  if (student.size(0) < 3) return student.sum() * 0;
  return torch::nn::functional::smooth_l1_loss(angle_relations(student),
                                               angle_relations(teacher.detach()));
}

/// Checks a `teacher` option before any run starts: "run:<id>" or a run folder's path.
inline void check_teacher_ref(const std::string& ref, const std::string& strategy) {
  if (ref.empty())
    throw std::invalid_argument(
        strategy +
        ": no teacher: set teacher = \"run:<id>\" (a finished run of this results database, see "
        "tlab results list) or the path of a run folder, e.g. strategy.teacher=\"run:3\"");
}

/// The teacher's model (frozen, eval mode, on the run's device), loaded with the error saying
/// which option named it.
inline std::shared_ptr<tlab::Model> load_teacher(tlab::Session& s, const std::string& ref,
                                                 const std::string& strategy) {
  try {
    return s.load_model(ref);
  } catch (const std::exception& e) {
    throw std::invalid_argument(strategy + ": cannot load the teacher \"" + ref +
                                "\" (option teacher): " + e.what());
  }
}

}  // namespace tlab_strategy
