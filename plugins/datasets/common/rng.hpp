#pragma once
// Shared by the file-reading dataset plugins (header only, included by relative path; each
// plugin is its own library and gets its own copy): the seeded split of a file's examples into
// train and held-out parts. The random stream is the SDK's (tlab/sdk/random.hpp).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "tlab/sdk/random.hpp"

namespace tlab_ds {

/// Which examples of a file go where; each list is in file order.
struct Parts {
  std::vector<int64_t> train, val, test;
};

/// Splits the `n` examples of a train file: a seeded `val_fraction` (rounded) is held out for
/// validation, then `test_fraction` for testing (used when there is no test file), and at most
/// `max_train` of the rest (0 = all) are kept for training, also chosen by the seed. The
/// validation part does not depend on `test_fraction` or `max_train`. `what` names the
/// plugin and the file for messages.
inline Parts split_examples(int64_t n, double val_fraction, double test_fraction, int64_t max_train,
                            uint64_t seed, const std::string& what) {
  const auto count = [n](double f) { return static_cast<int64_t>(std::llround(f * n)); };
  const int64_t n_val = count(val_fraction), n_test = count(test_fraction);
  if (n_val + n_test >= n)
    throw std::invalid_argument(
        what + " holds " + std::to_string(n) + " examples: holding out " + std::to_string(n_val) +
        " for validation (val_fraction " + std::to_string(val_fraction) + ") and " +
        std::to_string(n_test) + " for testing (test_fraction " + std::to_string(test_fraction) +
        ") leaves no training examples; expected smaller fractions or more examples");
  const std::vector<int64_t> p = tlab::permutation(n, tlab::stream_seed(seed, 0x5e1f));
  Parts parts;
  parts.val.assign(p.begin(), p.begin() + n_val);
  parts.test.assign(p.begin() + n_val, p.begin() + n_val + n_test);
  int64_t n_train = n - n_val - n_test;
  if (max_train > 0) n_train = std::min(n_train, max_train);
  parts.train.assign(p.begin() + n_val + n_test, p.begin() + n_val + n_test + n_train);
  for (auto* v : {&parts.train, &parts.val, &parts.test}) std::sort(v->begin(), v->end());
  return parts;
}

/// Rows `rows` (sorted, unique) of `t`, as a tensor; an empty list gives zero rows. When they are
/// all the rows, `t` itself (no copy of a whole training set).
inline torch::Tensor rows(const torch::Tensor& t, const std::vector<int64_t>& rows) {
  if (static_cast<int64_t>(rows.size()) == t.size(0) &&
      (rows.empty() || rows.back() == t.size(0) - 1))
    return t;
  torch::Tensor idx = torch::tensor(rows, torch::kLong);
  if (rows.empty()) idx = torch::empty({0}, torch::kLong);
  return t.index_select(0, idx);
}

/// Checks an option that the host bounds through the schema but a direct caller may not.
inline void check_range(const std::string& plugin, const char* key, double value, double lo,
                        double hi) {
  if (!(value >= lo && value <= hi))
    throw std::invalid_argument(plugin + ": " + key + " " + std::to_string(value) +
                                " is out of range; expected a value in [" + std::to_string(lo) +
                                ", " + std::to_string(hi) + "]");
}

}  // namespace tlab_ds
