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

namespace {

void check_pairs(const std::vector<double>& x, const std::vector<double>& y, const char* what) {
  if (x.size() != y.size())
    throw std::invalid_argument(
        fmt::format("{}: {} values against {}; expected pairs", what, x.size(), y.size()));
}

bool all_finite(const std::vector<double>& v) {
  return std::all_of(v.begin(), v.end(), [](double d) { return std::isfinite(d); });
}

// Ties: sum over groups of equal values of t(t-1)/2, t(t-1)(t-2) and t(t-1)(2t+5).
struct Ties {
  double pairs = 0, v0 = 0, v1 = 0;
};
Ties ties(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  Ties t;
  for (std::size_t i = 0; i < v.size();) {
    std::size_t j = i;
    while (j < v.size() && v[j] == v[i]) ++j;
    const double c = static_cast<double>(j - i);
    t.pairs += c * (c - 1) / 2;
    t.v0 += c * (c - 1) * (c - 2);
    t.v1 += c * (c - 1) * (2 * c + 5);
    i = j;
  }
  return t;
}

// P(S <= -|S|) + P(S >= |S|) under independence, without ties: permutations of n with at most
// c = min(discordant, concordant) inversions (Mahonian numbers), as scipy's _kendall_p_exact.
double kendall_exact_p(std::size_t n, double discordant, double total) {
  const auto c = static_cast<std::size_t>(std::min(discordant, total - discordant));
  if (n <= 2 || 2 * c == static_cast<std::size_t>(total)) return 1.0;
  // counts[k] = permutations of j elements with k inversions, k <= c; divided by j! as we go.
  std::vector<double> counts(c + 1, 0.0);
  counts[0] = 1;
  for (std::size_t j = 2; j <= n; ++j) {
    // new[k] = sum_{i=0}^{min(k, j-1)} old[k - i], then / j.
    std::vector<double> next(c + 1, 0.0);
    double window = 0;
    for (std::size_t k = 0; k <= c; ++k) {
      window += counts[k];
      if (k >= j) window -= counts[k - j];
      next[k] = window / static_cast<double>(j);
    }
    counts = std::move(next);
  }
  double p = 0;
  for (double v : counts) p += v;
  return std::min(1.0, 2 * p);
}

}  // namespace

Correlation pearson(const std::vector<double>& x, const std::vector<double>& y) {
  check_pairs(x, y, "pearson");
  Correlation out;
  out.n = x.size();
  if (out.n < 2 || !all_finite(x) || !all_finite(y)) return {out.n, kNaN, kNaN};
  const MeanSe mx = mean_se(x), my = mean_se(y);
  double sxy = 0, sxx = 0, syy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx.mean) * (y[i] - my.mean);
    sxx += (x[i] - mx.mean) * (x[i] - mx.mean);
    syy += (y[i] - my.mean) * (y[i] - my.mean);
  }
  if (sxx == 0 || syy == 0) return {out.n, kNaN, kNaN};
  out.value = std::max(-1.0, std::min(1.0, sxy / std::sqrt(sxx * syy)));
  if (out.n == 2) {
    out.p = 1;
  } else if (std::abs(out.value) == 1) {
    out.p = 0;
  } else {
    const double df = static_cast<double>(out.n - 2);
    out.p = student_t_two_sided_p(out.value * std::sqrt(df / (1 - out.value * out.value)), df);
  }
  return out;
}

Correlation kendall_tau(const std::vector<double>& x, const std::vector<double>& y) {
  check_pairs(x, y, "kendall_tau");
  Correlation out;
  out.n = x.size();
  if (out.n < 2 || !all_finite(x) || !all_finite(y)) return {out.n, kNaN, kNaN};
  double s = 0, discordant = 0;  // concordant - discordant; pairs that disagree
  for (std::size_t i = 0; i < x.size(); ++i)
    for (std::size_t j = i + 1; j < x.size(); ++j) {
      const double sign = ((x[i] > x[j]) - (x[i] < x[j])) * ((y[i] > y[j]) - (y[i] < y[j]));
      s += sign;
      discordant += sign < 0;
    }
  const double n = static_cast<double>(out.n), total = n * (n - 1) / 2;
  const Ties tx = ties(x), ty = ties(y);
  if (tx.pairs == total || ty.pairs == total) return {out.n, kNaN, kNaN};
  out.value = s / std::sqrt(total - tx.pairs) / std::sqrt(total - ty.pairs);
  const double concordant = s + discordant;  // s = concordant - discordant
  if (tx.pairs == 0 && ty.pairs == 0 && (out.n <= 33 || std::min(discordant, concordant) <= 1)) {
    out.p = kendall_exact_p(out.n, discordant, total);
    return out;
  }
  const double m = n * (n - 1);
  const double var = (m * (2 * n + 5) - tx.v1 - ty.v1) / 18 + 2 * tx.pairs * ty.pairs / m +
                     tx.v0 * ty.v0 / (9 * m * (n - 2));
  out.p = std::erfc(std::abs(s) / std::sqrt(var) / std::sqrt(2.0));
  return out;
}

}  // namespace tlab
