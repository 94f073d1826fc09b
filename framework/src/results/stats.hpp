#pragma once
// Statistics for result tables: mean and standard error over seeds, Student's t distribution
// (through the regularized incomplete beta function), the paired t-test of `tlab results gain`,
// and the correlations of `tlab results transferability` (Pearson's r, Kendall's tau-b), each
// with the p-value scipy.stats gives.

#include <cstddef>
#include <vector>

namespace tlab {

/// Mean and standard error (sample standard deviation / sqrt(n); 0 for n = 1).
struct MeanSe {
  double mean = 0;
  double se = 0;
  std::size_t n = 0;
};

/// Mean and standard error of `values` (all zero for no values). Equal values give that value
/// and s.e. 0 exactly. NaN values make mean and s.e. NaN; callers leave out what should not
/// count.
MeanSe mean_se(const std::vector<double>& values);

/// The regularized incomplete beta function I_x(a, b) for a > 0, b > 0, 0 <= x <= 1, by the
/// continued fraction of Numerical Recipes (3rd ed., 6.4) evaluated with the modified Lentz
/// method; relative error about 1e-14. Throws std::invalid_argument for arguments outside
/// those ranges (NaN included), naming the argument and its value.
double incomplete_beta(double a, double b, double x);

/// Two-sided p-value of Student's t distribution: P(|T| >= |t|) with `df` degrees of freedom
/// (df > 0, need not be an integer), = I_{df / (df + t^2)}(df / 2, 1 / 2). |t| = inf gives 0;
/// NaN gives NaN. Throws std::invalid_argument for df <= 0.
double student_t_two_sided_p(double t, double df);

/// A one-sample t-test of "the mean is 0"; with the differences of paired values it is the
/// paired t-test.
struct TTest {
  std::size_t n = 0;  ///< Number of values.
  double mean = 0;    ///< Their mean.
  double se = 0;      ///< Standard error of the mean.
  double t = 0;       ///< mean / se; NaN for n < 2.
  double df = 0;      ///< n - 1.
  double p = 0;       ///< Two-sided p-value; NaN for n < 2.
};

/// The t-test of `differences` (paired values already subtracted). n < 2: t and p are NaN
/// (no degrees of freedom). All differences equal (s.e. 0): t = +-inf and p = 0 when the mean
/// is not 0; t = 0 and p = 1 when every difference is 0. Non-finite values make t and p NaN.
TTest one_sample_t_test(const std::vector<double>& differences);

/// The paired t-test of `treatment[i] - control[i]`. Throws std::invalid_argument when the two
/// have different lengths.
TTest paired_t_test(const std::vector<double>& treatment, const std::vector<double>& control);

/// A correlation coefficient over n pairs and its two-sided p-value (no correlation).
struct Correlation {
  std::size_t n = 0;  ///< Number of pairs.
  double value = 0;   ///< r or tau; NaN when undefined (n < 2, or a constant variable).
  double p = 0;       ///< Two-sided p-value; NaN when undefined.
};

/// Pearson's r; p from t = r sqrt((n - 2) / (1 - r^2)) with n - 2 degrees of freedom, as
/// scipy.stats.pearsonr (n = 2: r = +-1, p = 1). Throws std::invalid_argument for lengths that
/// differ. Non-finite values make r and p NaN.
Correlation pearson(const std::vector<double>& x, const std::vector<double>& y);

/// Kendall's tau-b (tau-a corrected for ties in either variable), as scipy.stats.kendalltau
/// with its default method: without ties and for n <= 33 (or with at most one discordant or
/// concordant pair) the exact p-value of the permutation distribution, otherwise the normal
/// approximation with the tie-corrected variance. Throws std::invalid_argument for lengths that
/// differ. Non-finite values make tau and p NaN.
Correlation kendall_tau(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace tlab
