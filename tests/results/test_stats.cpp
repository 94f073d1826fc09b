// Statistics of result tables: mean ± s.e., the regularized incomplete beta function, Student's
// t distribution and the paired t-test. Reference values: closed forms, exact binomial sums
// (I_x(a, b) = P(Binomial(a + b - 1, x) >= a) for integer a, b, computed with Python
// fractions) and Simpson integration of the t density with 400000 intervals (scipy was not
// available; where both exist they agree with scipy.stats.t.sf to the digits shown in tables).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "report/report.hpp"
#include "results/stats.hpp"

namespace tlab {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kPi = std::acos(-1.0);

std::string invalid_argument(const std::function<void()>& action) {
  try {
    action();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected std::invalid_argument";
  return "";
}

TEST(Stats, MeanAndStandardError) {
  const MeanSe m = mean_se({1.0, 2.0, 3.0, 4.0});
  EXPECT_DOUBLE_EQ(m.mean, 2.5);
  EXPECT_DOUBLE_EQ(m.se, std::sqrt(5.0 / 3.0) / 2.0);  // sd with n - 1, over sqrt(n)
  EXPECT_EQ(m.n, 4u);
  const MeanSe one = mean_se({0.7});
  EXPECT_DOUBLE_EQ(one.mean, 0.7);
  EXPECT_EQ(one.se, 0.0);
  EXPECT_EQ(one.n, 1u);
  const MeanSe none = mean_se({});
  EXPECT_EQ(none.n, 0u);
  EXPECT_EQ(none.mean, 0.0);
  EXPECT_TRUE(std::isnan(mean_se({1.0, kNaN}).mean));
}

TEST(Stats, ReportHeaderStillOffersMeanSe) {
  // Existing callers include report/report.hpp only.
  const tlab::MeanSe m = tlab::mean_se({0.5, 0.7});
  EXPECT_DOUBLE_EQ(m.mean, 0.6);
  EXPECT_DOUBLE_EQ(m.se, 0.1);
}

TEST(Stats, IncompleteBetaClosedForms) {
  for (double x : {0.01, 0.2, 0.5, 0.77, 0.999}) {
    EXPECT_NEAR(incomplete_beta(3.5, 1.0, x), std::pow(x, 3.5), 1e-14) << x;  // I_x(a,1) = x^a
    EXPECT_NEAR(incomplete_beta(1.0, 2.5, x), 1 - std::pow(1 - x, 2.5), 1e-14) << x;
  }
  EXPECT_NEAR(incomplete_beta(7.0, 7.0, 0.5), 0.5, 1e-14);  // symmetry
  EXPECT_NEAR(incomplete_beta(50.0, 50.0, 0.5), 0.5, 1e-13);
  EXPECT_NEAR(incomplete_beta(0.5, 0.5, 0.25), 2 / kPi * std::asin(0.5), 1e-14);  // arcsine
  EXPECT_EQ(incomplete_beta(2.0, 3.0, 0.0), 0.0);
  EXPECT_EQ(incomplete_beta(2.0, 3.0, 1.0), 1.0);
}

TEST(Stats, IncompleteBetaMatchesExactBinomialSums) {
  EXPECT_NEAR(incomplete_beta(2, 3, 0.4), 0.5248, 1e-14);
  EXPECT_NEAR(incomplete_beta(30, 3, 0.9), 0.36668351908062014, 1e-13);
  EXPECT_NEAR(incomplete_beta(1, 40, 0.05), 0.8714878434348966, 1e-13);
  // Large parameters: many continued-fraction terms.
  EXPECT_NEAR(incomplete_beta(100, 200, 0.3), 0.10884306564490984, 1e-12);
  // Both branches (x below and above (a + 1) / (a + b + 2)) agree with the symmetry.
  for (double x : {0.1, 0.35, 0.6, 0.9})
    EXPECT_NEAR(incomplete_beta(4.2, 2.7, x), 1 - incomplete_beta(2.7, 4.2, 1 - x), 1e-14) << x;
}

TEST(Stats, IncompleteBetaRefusesArgumentsOutsideItsDomain) {
  EXPECT_EQ(invalid_argument([] { incomplete_beta(0, 1, 0.5); }),
            "incomplete_beta: a = 0 but it must be a finite number > 0");
  EXPECT_EQ(invalid_argument([] { incomplete_beta(1, -2, 0.5); }),
            "incomplete_beta: b = -2 but it must be a finite number > 0");
  EXPECT_EQ(invalid_argument([] { incomplete_beta(1, 1, 1.5); }),
            "incomplete_beta: x = 1.5 but it must lie in [0, 1]");
  EXPECT_EQ(invalid_argument([] { incomplete_beta(1, 1, kNaN); }),
            "incomplete_beta: x = nan but it must lie in [0, 1]");
}

TEST(Stats, StudentTTwoSidedPValues) {
  // Published values (t tables; scipy.stats.t.sf(t, df) * 2).
  EXPECT_NEAR(student_t_two_sided_p(2.0, 10), 0.07338803477072575, 1e-12);
  EXPECT_NEAR(student_t_two_sided_p(2.0, 10), 0.0734, 5e-5);
  EXPECT_NEAR(student_t_two_sided_p(1.0, 1), 0.5, 1e-14);
  EXPECT_NEAR(student_t_two_sided_p(2.228138851986274, 10), 0.05, 1e-12);  // t_{0.975, 10}
  EXPECT_NEAR(student_t_two_sided_p(12.706204736174707, 1), 0.05, 1e-12);  // t_{0.975, 1}
  EXPECT_NEAR(student_t_two_sided_p(0.5, 3), 0.6514479648481493, 1e-12);
  EXPECT_NEAR(student_t_two_sided_p(3.5, 4), 0.024896163460197962, 1e-12);
  EXPECT_NEAR(student_t_two_sided_p(4.0, 29), 0.00040006394565483827, 1e-13);
  EXPECT_NEAR(student_t_two_sided_p(0.1, 5), 0.9242301411546583, 1e-12);
  EXPECT_NEAR(student_t_two_sided_p(6.0, 7), 0.0005422583419942839, 1e-13);
  EXPECT_NEAR(student_t_two_sided_p(1.5, 2.5), 0.24783645308627877, 1e-12);  // df not integer
  // Sign does not matter; t = 0 is p = 1.
  EXPECT_DOUBLE_EQ(student_t_two_sided_p(-2.0, 10), student_t_two_sided_p(2.0, 10));
  EXPECT_NEAR(student_t_two_sided_p(0.0, 4), 1.0, 1e-15);
}

TEST(Stats, StudentTClosedFormsIncludingFarTails) {
  // df = 1 (Cauchy): p = 1 - 2/pi atan|t| = 2/pi atan(1/|t|); df = 2: p = 1 - |t| / sqrt(t^2+2).
  for (double t : {0.3, 1.0, 3.0, 30.0, 1000.0}) {
    const double p1 = 2 / kPi * std::atan(1 / t);
    EXPECT_NEAR(student_t_two_sided_p(t, 1) / p1, 1.0, 1e-12) << t;
    const double s = std::sqrt(t * t + 2);
    const double p2 = 2 / (s * (s + t));  // = 1 - t/s without cancellation
    EXPECT_NEAR(student_t_two_sided_p(t, 2) / p2, 1.0, 1e-12) << t;
  }
  EXPECT_NEAR(student_t_two_sided_p(1000.0, 1), 0.000636619560161118, 1e-15);
  EXPECT_NEAR(student_t_two_sided_p(100.0, 2), 9.998500249956255e-05, 1e-16);
  // Infinite df is the normal distribution: 1.959963985 -> 0.05.
  EXPECT_NEAR(student_t_two_sided_p(1.959963984540054, kInf), 0.05, 1e-12);
  EXPECT_EQ(student_t_two_sided_p(kInf, 3), 0.0);
  EXPECT_EQ(student_t_two_sided_p(-kInf, 3), 0.0);
  EXPECT_TRUE(std::isnan(student_t_two_sided_p(kNaN, 3)));
  EXPECT_EQ(invalid_argument([] { student_t_two_sided_p(1.0, 0); }),
            "student_t_two_sided_p: df = 0 but the degrees of freedom must be > 0 (a t-test "
            "needs at least 2 values)");
}

TEST(Stats, PairedTTest) {
  // Differences 0.1, 0.2, 0.3, 0.2: mean 0.2, sd sqrt(0.02/3), se = sd / 2.
  const TTest r = paired_t_test({0.6, 0.7, 0.8, 0.7}, {0.5, 0.5, 0.5, 0.5});
  EXPECT_EQ(r.n, 4u);
  EXPECT_NEAR(r.mean, 0.2, 1e-15);
  EXPECT_NEAR(r.se, std::sqrt(0.02 / 3) / 2, 1e-15);
  EXPECT_NEAR(r.t, 0.2 / (std::sqrt(0.02 / 3) / 2), 1e-12);
  EXPECT_DOUBLE_EQ(r.df, 3);
  EXPECT_NEAR(r.p, student_t_two_sided_p(r.t, 3), 1e-15);
  EXPECT_NEAR(r.p, 0.016276603459436934, 1e-12);  // t = 4.899 with 3 df
  // A t of exactly 2 with 10 df: eleven differences with mean 2 * se.
  std::vector<double> d = {1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 0};  // mean 0, sd sqrt(1)
  const double shift = 2 * std::sqrt(1.0) / std::sqrt(11.0);
  for (auto& x : d) x += shift;
  const TTest two = one_sample_t_test(d);
  EXPECT_NEAR(two.t, 2.0, 1e-12);
  EXPECT_NEAR(two.p, 0.07338803477072575, 1e-10);
}

TEST(Stats, TTestEdgeCases) {
  const TTest one = one_sample_t_test({-0.3});
  EXPECT_EQ(one.n, 1u);
  EXPECT_DOUBLE_EQ(one.mean, -0.3);
  EXPECT_TRUE(std::isnan(one.t));
  EXPECT_TRUE(std::isnan(one.p));
  const TTest same = one_sample_t_test({-0.1, -0.1, -0.1});
  EXPECT_EQ(same.t, -kInf);
  EXPECT_EQ(same.p, 0.0);
  const TTest zero = one_sample_t_test({0.0, 0.0});
  EXPECT_EQ(zero.t, 0.0);
  EXPECT_EQ(zero.p, 1.0);
  EXPECT_TRUE(std::isnan(one_sample_t_test({0.1, kNaN}).p));
  EXPECT_EQ(invalid_argument([] {
              paired_t_test({1, 2}, {1});
            }),
            "paired_t_test: 2 treatment values but 1 control values; a paired test needs one "
            "control value per treatment value");
}

}  // namespace
}  // namespace tlab
