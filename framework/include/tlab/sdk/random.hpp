#pragma once
/// \file random.hpp
/// A portable random stream for data that must be the same everywhere: SplitMix64 (Steele, Lea
/// and Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014). Small, fast and
/// identical on every platform and standard library, unlike the distributions of <random>. Use
/// it for data a seed must reproduce (synthetic data sets, splits); use the Context's torch
/// generator for training.
///
/// Example:
/// \code
///   tlab::SplitMix64 rng(tlab::stream_seed(options.seed, split));
///   const double x = rng.uniform(-1.0, 1.0);
///   const std::vector<int64_t> order = tlab::permutation(n, tlab::stream_seed(options.seed, 7));
/// \endcode

#include <cstdint>
#include <utility>
#include <vector>

namespace tlab {

/// SplitMix64's output function: a bijective mix of 64 bits (also a good seed finaliser).
constexpr uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// The SplitMix64 generator: each number is mix64 of a counter advanced by the golden gamma.
class SplitMix64 {
 public:
  /// A stream that starts from `seed` (every seed is fine, 0 included).
  explicit SplitMix64(uint64_t seed) : state_(seed) {}

  /// The next 64 random bits.
  uint64_t next() { return mix64(state_ += 0x9E3779B97F4A7C15ULL); }

  /// Uniform in [0, 1), with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  /// Uniform in [lo, hi).
  double uniform(double lo, double hi) {
    return lo + (hi - lo) * static_cast<double>(next() >> 11) * 0x1.0p-53;
  }

  /// Uniform in [0, n) for n > 0 (modulo: a bias below n / 2^64, negligible for data sizes).
  int64_t index(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }

  /// +1.0 or -1.0, each with probability 1/2.
  double sign() { return (next() >> 63) ? 1.0 : -1.0; }

 private:
  uint64_t state_;
};

/// The seed of an independent stream `child` of the stream seeded `parent` (e.g. one per split,
/// one per example), so that a part is reproduced without drawing the others.
inline uint64_t stream_seed(uint64_t parent, uint64_t child) {
  return SplitMix64(parent ^ (child * 0xD1B54A32D192ED03ULL + 0x8CB92BA72F3D8DD7ULL)).next();
}

/// A seeded permutation of 0..n-1 (Fisher-Yates with SplitMix64(seed)).
inline std::vector<int64_t> permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> p(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[static_cast<std::size_t>(i)] = i;
  SplitMix64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i)
    std::swap(p[static_cast<std::size_t>(i)], p[static_cast<std::size_t>(rng.index(i + 1))]);
  return p;
}

}  // namespace tlab
