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

// Kendall's tau-b and Pearson's r with their p-values equal scipy.stats.kendalltau and
// scipy.stats.pearsonr (scipy 1.10.1, Debian 12's python3-scipy; the values below were printed by
// it for these inputs): exact p without ties for n <= 33, the tie-corrected normal
// approximation otherwise.
TEST(Stats, CorrelationsEqualScipys) {
  struct Case {
    const char* name;
    std::vector<double> x, y;
    double tau, tau_p, r, r_p;
  };
  const std::vector<double> x40 = {
      0.0012301533574825742, 0.2987455375084699,   -0.2741378553622176,  -0.8905918387572742,
      -0.45467078517172255,  -0.9916465549964624,  0.060143602597438485, 1.3402152455545335,
      -0.49220651855132963,  -0.6204748998199404,  0.4898420501851982,   0.35688700816006075,
      0.10541424899789856,   -0.9304680447082047,  -0.02925182246327349, 0.6953031944582878,
      -1.344214547285082,    -0.45761576104021817, -1.901222739800844,   -1.289537739784976,
      -1.8417350377917323,   -0.23509113107468127, -1.2674464814437032,  0.2712643588217015,
      0.15675108662422516,   -0.18693094462995438, -2.516759710820513,   -0.5386928958466366,
      -0.048500945401071985, 0.11330898600330756,  -1.5301357655053935,  -0.47775327603393064,
      -0.9785190780566395,   -0.8088372394255993,  1.0608986233860787,   -0.8075346753318965,
      -0.0325217049455206,   0.8843898673831739,   -0.583600432743302,   -0.11170194958415963};
  const std::vector<double> y40 = {
      0.11169429660696316,  0.3625273117635318,   -1.499193681779911,  -0.8144516083802661,
      0.904152636569815,    -2.538791233124945,   0.9195262906190367,  1.4595692712511148,
      -1.133676912658551,   1.3799416465224823,   1.25210176226991,    -0.8424018939451625,
      0.179930477769362,    -0.35377846103801935, -0.2180339478140228, 1.3782134616534938,
      -1.4107318674344975,  0.20963179979410973,  -0.4627001481446922, -1.9651999907906288,
      -1.6385964274021232,  -0.6983987076130964,  -1.1401780702178723, -0.9159301690284384,
      -0.42255050987844806, -0.38312691743445104, -1.6179958387201054, 0.6065291116074953,
      -1.372028737885327,   -0.681333379983742,   -0.8832323429319717, -2.470173060208425,
      -1.4416889430090065,  -0.9061241650956883,  2.3179136006728984,  -0.11813077476114087,
      -0.35973512516771844, 0.5158139732832148,   -0.833795833261227,  1.4118274508720006};
  std::vector<double> x40r, y40r;  // np.round: half to even, as nearbyint by default
  for (double v : x40) x40r.push_back(std::nearbyint(v));
  for (double v : y40) y40r.push_back(std::nearbyint(v * 2) / 2);
  const std::vector<Case> cases = {
      {"5, no ties (exact)",
       {1, 2, 3, 4, 5},
       {2, 1, 4, 3, 5},
       0.6,
       0.23333333333333334,
       0.8,
       0.10408803866182785},
      {"8, ties in both",
       {1, 2, 2, 3, 4, 4, 4, 5},
       {3, 1, 2, 2, 5, 4, 6, 6},
       0.6405126152203486,
       0.03717256786957783,
       0.7875788688438807,
       0.020307130381585995},
      {"12, no ties (exact)",
       {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11},
       {3, 1, 0, 2, 7, 5, 4, 6, 11, 8, 10, 9},
       0.6363636363636362,
       0.003181646992410881,
       0.8531468531468531,
       0.00041811794041499823},
      {"40, no ties (normal)", x40, y40, 0.441025641025641, 6.124655595959732e-05,
       0.6126286237412225, 2.6485496627164964e-05},
      {"40, ties (normal, tie-corrected)", x40r, y40r, 0.43919628013765966, 0.0007614640212157632,
       0.5073528936785572, 0.0008335752874207381},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const tlab::Correlation tau = tlab::kendall_tau(c.x, c.y), r = tlab::pearson(c.x, c.y);
    EXPECT_EQ(tau.n, c.x.size());
    EXPECT_NEAR(tau.value, c.tau, 1e-12);
    EXPECT_NEAR(tau.p, c.tau_p, 1e-9 * std::max(1.0, c.tau_p));
    EXPECT_NEAR(r.value, c.r, 1e-12);
    EXPECT_NEAR(r.p, c.r_p, 1e-9);
  }
}

TEST(Stats, CorrelationEdgeCases) {
  // Reversed order: tau = r = -1; a constant variable: undefined; two pairs: p = 1.
  const auto tau = tlab::kendall_tau({1, 2, 3, 4}, {4, 3, 2, 1});
  EXPECT_DOUBLE_EQ(tau.value, -1);
  EXPECT_NEAR(tau.p, 2.0 / 24, 1e-15);  // 2 / 4!: one permutation of 24 in each tail
  EXPECT_DOUBLE_EQ(tlab::pearson({1, 2, 3, 4}, {4, 3, 2, 1}).value, -1);
  EXPECT_TRUE(std::isnan(tlab::kendall_tau({1, 1, 1}, {1, 2, 3}).value));
  EXPECT_TRUE(std::isnan(tlab::pearson({1, 1, 1}, {1, 2, 3}).value));
  EXPECT_TRUE(std::isnan(tlab::pearson({1}, {2}).value));
  EXPECT_DOUBLE_EQ(tlab::pearson({1, 2}, {3, 5}).p, 1);
  EXPECT_TRUE(std::isnan(tlab::kendall_tau({1, NAN, 3}, {1, 2, 3}).value));
  try {
    tlab::kendall_tau({1, 2}, {1});
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "kendall_tau: 2 values against 1; expected pairs");
  }
}
