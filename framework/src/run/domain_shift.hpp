#pragma once
// Domains from any dataset: what the host does to the data a dataset plugin returns, as a
// dataset table declares it — `class_subset` (a subset of the labels, relabelled: task transfer)
// and
// `[<role>.transform]` (rotation, flips, elastic distortion, blur, contrast, inversion, JPEG-like
// quantisation, noise, label-correlated colour; MNIST-C / ImageNet-C corruptions at severities
// 1-5). Deterministic: the same table gives the same domain in every run (the random transforms
// draw from the table's `seed`, the split and the example's index, not from the run's seed).
// See docs/datasets.md, "Domains from any dataset".

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "tlab/sdk/data.hpp"

namespace tlab {

/// How the host turns what a dataset plugin returns into a domain (docs/datasets.md, "Domains
/// from any dataset"): `class_subset` (task transfer) and the `[<role>.transform]` table (image
/// shifts), applied in that order before shots are taken. Defaults change nothing.
struct DomainShift {
  /// The labels kept, relabelled 0..k-1 in this order (e.g. [5, 7, 9]); empty keeps all.
  std::vector<int64_t> classes;
  double rotate = 0;  ///< Degrees, counter-clockwise (torchvision's rotate, bilinear).
  /// `rotate = [a, b, ...]`: one domain per angle, pooled (several source domains, each
  /// example once per angle); empty for a single angle.
  std::vector<double> rotations;
  bool hflip = false, vflip = false;
  double elastic = 0;        ///< Elastic distortion: displacement scale alpha in pixels.
  double elastic_sigma = 4;  ///< Its smoothing (Simard et al. 2003: alpha 34, sigma 4).
  double blur = 0;           ///< Gaussian blur sigma in pixels.
  double contrast = 1;       ///< ImageNet-C's contrast factor in (0, 1]; 1 = unchanged.
  bool invert = false;       ///< 1 - x (inputs in [0, 1]).
  int64_t jpeg = 0;          ///< JPEG-like quality 1-100 (8x8 DCT quantisation); 0 = none.
  double noise = 0;          ///< Additive Gaussian noise std, then clipped to [0, 1].
  double color = -1;         ///< ColoredMNIST: P(colour = the label's); -1 = no colour.
  std::string corruption;    ///< An MNIST-C / ImageNet-C family, with `severity` 1-5.
  int64_t severity = 0;
  int64_t seed = 0;  ///< Seeds the random transforms (noise, elastic, colour).
  /// Whether anything changes the data.
  bool any() const;
  /// Whether the image transforms (not `class_subset`) change anything.
  bool transforms() const;
};

/// The corruption families `corruption` names (ImageNet-C's names): gaussian_noise,
/// gaussian_blur, contrast, jpeg_compression, elastic_transform.
const std::vector<std::string>& corruption_names();

/// The transform key a corruption family sets: "noise", "blur", "contrast", "jpeg", "elastic".
std::string corruption_key(const std::string& corruption);

/// `s` with its corruption and severity turned into the value of the family's key.
DomainShift effective(const DomainShift& s);

/// `d` with the shift applied: class_subset first (each split keeps the examples of those labels,
/// relabelled; a streamed split keeps its stream, reindexed), then the image transforms in a
/// fixed order (rotate, flips, elastic, blur, contrast, invert, jpeg, noise, colour) to every
/// split and the unlabelled inputs. `role` ("source", "target") names the table in errors:
/// std::invalid_argument for a transform on data that is not images, a label the dataset does
/// not have, a split left empty.
/// `val_domains`: when the shift pools several domains (a list of angles), each domain's name
/// ("rotate_15") and its number of validation examples, in the order they follow each other in
/// the val split; left empty otherwise.
DomainData apply_shift(DomainData d, const DomainShift& s, const std::string& role,
                       std::vector<std::pair<std::string, int64_t>>* val_domains = nullptr);

/// The image transforms of `s` (effective()) on images `x` (N x C x H x W, float in [0, 1]) with
/// labels `y` (needed by colour) and `index` (each example's index, seeding its random draws;
/// `split` tells the splits apart). For tests and streamed examples.
torch::Tensor transform_images(const torch::Tensor& x, const torch::Tensor& y,
                               const torch::Tensor& index, const DomainShift& s, int split,
                               int64_t num_classes);

}  // namespace tlab
