#include "results/stats.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

namespace tlab {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The continued fraction of I_x(a, b) (Numerical Recipes 3rd ed., Beta::betacf): converges
// quickly for x < (a + 1) / (a + b + 2). Modified Lentz's method.
double beta_continued_fraction(double a, double b, double x) {
  constexpr int kMaxIterations = 10000;
  constexpr double kEpsilon = std::numeric_limits<double>::epsilon();
  constexpr double kTiny = std::numeric_limits<double>::min() / kEpsilon;
  const double qab = a + b, qap = a + 1.0, qam = a - 1.0;
  double c = 1.0;
  double d = 1.0 - qab * x / qap;
  if (std::fabs(d) < kTiny) d = kTiny;
  d = 1.0 / d;
  double h = d;
  for (int m = 1; m <= kMaxIterations; ++m) {
    const double m2 = 2.0 * m;
    // Even step: d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m)).
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1.0 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1.0 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    h *= d * c;
    // Odd step: d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)).
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1.0 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1.0 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    const double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1.0) <= kEpsilon) return h;
  }
  throw std::runtime_error(fmt::format(
      "incomplete_beta(a={}, b={}, x={}): the continued fraction did not converge in {} "
      "iterations; a or b is too large for this method",
      a, b, x, kMaxIterations));
}

}  // namespace

MeanSe mean_se(const std::vector<double>& values) {
  MeanSe m;
  m.n = values.size();
  if (m.n == 0) return m;
  // Equal values: their mean exactly, s.e. 0 (summing would leave rounding noise in both).
  if (std::all_of(values.begin(), values.end(), [&](double v) { return v == values.front(); })) {
    m.mean = values.front();
    return m;
  }
  for (double v : values) m.mean += v;
  m.mean /= static_cast<double>(m.n);
  if (m.n > 1) {
    double ss = 0;
    for (double v : values) ss += (v - m.mean) * (v - m.mean);
    m.se = std::sqrt(ss / static_cast<double>(m.n - 1)) / std::sqrt(static_cast<double>(m.n));
  }
  return m;
}

double incomplete_beta(double a, double b, double x) {
  if (!(a > 0) || !std::isfinite(a))
    throw std::invalid_argument(
        fmt::format("incomplete_beta: a = {} but it must be a finite number > 0", a));
  if (!(b > 0) || !std::isfinite(b))
    throw std::invalid_argument(
        fmt::format("incomplete_beta: b = {} but it must be a finite number > 0", b));
  if (!(x >= 0 && x <= 1))
    throw std::invalid_argument(
        fmt::format("incomplete_beta: x = {} but it must lie in [0, 1]", x));
  if (x == 0 || x == 1) return x;
  // Prefactor x^a (1-x)^b / (a B(a, b)), in logs to avoid overflow.
  const double log_front =
      std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x);
  const double front = std::exp(log_front);
  // The continued fraction converges fast below the mean of the distribution; above it use the
  // symmetry I_x(a, b) = 1 - I_{1-x}(b, a).
  if (x < (a + 1.0) / (a + b + 2.0)) return front * beta_continued_fraction(a, b, x) / a;
  return 1.0 - front * beta_continued_fraction(b, a, 1.0 - x) / b;
}

double student_t_two_sided_p(double t, double df) {
  if (!(df > 0))
    throw std::invalid_argument(fmt::format(
        "student_t_two_sided_p: df = {} but the degrees of freedom must be > 0 (a t-test "
        "needs at least 2 values)",
        df));
  if (std::isnan(t)) return kNaN;
  if (std::isinf(t)) return 0.0;
  if (std::isinf(df)) return std::erfc(std::fabs(t) / std::sqrt(2.0));  // the normal limit
  // x = df / (df + t^2) loses precision for small t (x near 1): use 1 - x = t^2 / (df + t^2)
  // and the symmetry there.
  const double t2 = t * t;
  const double x = df / (df + t2);
  if (x > 0.5) return 1.0 - incomplete_beta(0.5, df / 2.0, t2 / (df + t2));
  return incomplete_beta(df / 2.0, 0.5, x);
}

TTest one_sample_t_test(const std::vector<double>& differences) {
  TTest r;
  const MeanSe m = mean_se(differences);
  r.n = m.n;
  r.mean = m.mean;
  r.se = m.se;
  if (r.n < 2) {
    r.t = r.p = kNaN;
    r.df = 0;
    return r;
  }
  r.df = static_cast<double>(r.n - 1);
  if (!std::isfinite(r.mean) || !std::isfinite(r.se)) {
    r.t = r.p = kNaN;
  } else if (r.se == 0) {
    r.t = r.mean == 0 ? 0.0 : std::copysign(std::numeric_limits<double>::infinity(), r.mean);
    r.p = r.mean == 0 ? 1.0 : 0.0;
  } else {
    r.t = r.mean / r.se;
    r.p = student_t_two_sided_p(r.t, r.df);
  }
  return r;
}

TTest paired_t_test(const std::vector<double>& treatment, const std::vector<double>& control) {
  if (treatment.size() != control.size())
    throw std::invalid_argument(
        fmt::format("paired_t_test: {} treatment values but {} control values; a paired test "
                    "needs one control value per treatment value",
                    treatment.size(), control.size()));
  std::vector<double> d(treatment.size());
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = treatment[i] - control[i];
  return one_sample_t_test(d);
}

}  // namespace tlab
