// The in-tree dataset plugins (digits, gaussians), loaded through the real plugin loader: schema,
// shapes and dtypes, balanced labels, determinism, and that each domain is a real shift.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <string>
#include <vector>

#include "plugins/loader.hpp"
#include "test_paths.hpp"
#include "tlab/sdk/sdk.hpp"

using ::testing::HasSubstr;

namespace {

const std::vector<std::string> kDigitDomains{"clean", "rotated", "inverted",
                                             "noisy", "thick",   "small"};

// Libraries stay loaded for the life of the process, so one loader serves every test.
tlab::PluginLoader& loader() {
  static tlab::PluginLoader l({TLAB_TEST_PLUGIN_DIR});
  return l;
}

const tlab::Schema& schema_of(const std::string& name) {
  return loader().get(tlab::Kind::Dataset, name).descriptor->schema;
}

tlab::DomainData load(const std::string& name, const tlab::Params& params) {
  tlab::Context ctx;
  return loader().create<tlab::Dataset>(name, params)->load(ctx);
}

tlab::Params digits(const std::string& domain, int64_t train = 100, int64_t seed = 0) {
  return {{"domain", domain},
          {"train_size", train},
          {"val_size", int64_t{20}},
          {"test_size", int64_t{30}},
          {"seed", seed}};
}

tlab::Params gaussians(const std::string& domain, double shift, int64_t train = 400) {
  return {{"domain", domain},
          {"shift", shift},
          {"train_size", train},
          {"val_size", int64_t{0}},
          {"test_size", int64_t{40}}};
}

// Examples per class, as a vector (index = class).
std::vector<int64_t> class_counts(const torch::Tensor& y, int64_t classes) {
  auto c = at::bincount(y, {}, classes);
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

void expect_same(const tlab::DomainData& a, const tlab::DomainData& b) {
  EXPECT_TRUE(torch::equal(a.train.x, b.train.x));
  EXPECT_TRUE(torch::equal(a.train.y, b.train.y));
  EXPECT_TRUE(torch::equal(a.test.x, b.test.x));
  EXPECT_TRUE(torch::equal(a.test.y, b.test.y));
}

// The host seeds LibTorch's global generator per run; the data must not depend on it.
class Datasets : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(7); }
};

// The message of the PluginError thrown when creating plugin `name` ("" if none was thrown).
std::string create_error(const std::string& name, const tlab::Params& params) {
  try {
    loader().create<tlab::Dataset>(name, params);
  } catch (const tlab::PluginError& e) {
    return e.what();
  }
  return "";
}

// ---- digits -----------------------------------------------------------------------------------

// label_noise replaces that fraction of labels by a uniformly drawn class and leaves the images
// as they were: 1 is a source without label information (transferability zoo), 0 the data of
// digits 1.0.0.
TEST_F(Datasets, DigitsLabelNoiseReplacesLabelsNotImages) {
  tlab::Params clean = digits("clean", 2000);
  const tlab::DomainData a = load("digits", clean);
  clean["label_noise"] = 0.0;
  const tlab::DomainData zero = load("digits", clean);
  EXPECT_TRUE(torch::equal(a.train.y, zero.train.y));
  for (double p : {0.3, 1.0}) {
    tlab::Params noisy = digits("clean", 2000);
    noisy["label_noise"] = p;
    const tlab::DomainData b = load("digits", noisy);
    EXPECT_TRUE(torch::equal(a.train.x, b.train.x));
    // A replaced label equals the true one by chance 1 time in 10.
    const double changed = (a.train.y != b.train.y).to(torch::kDouble).mean().item<double>();
    EXPECT_NEAR(changed, p * 0.9, 0.04) << p;
    EXPECT_EQ(b.train.y.min().item<int64_t>(), 0);
    EXPECT_EQ(b.train.y.max().item<int64_t>(), 9);
  }
  const tlab::ParamSpec* spec = schema_of("digits").find("label_noise");
  ASSERT_NE(spec, nullptr);
  EXPECT_EQ(spec->min, 0.0);
  EXPECT_EQ(spec->max, 1.0);
}

TEST_F(Datasets, DigitsSchemaHasDefaultsBoundsAndChoices) {
  const tlab::Schema& s = schema_of("digits");
  const tlab::ParamSpec* domain = s.find("domain");
  ASSERT_NE(domain, nullptr);
  EXPECT_EQ(std::get<std::string>(domain->default_value), "clean");
  EXPECT_EQ(domain->choices, kDigitDomains);
  for (const char* key : {"train_size", "val_size", "test_size", "unlabeled_size", "seed"}) {
    const tlab::ParamSpec* p = s.find(key);
    ASSERT_NE(p, nullptr) << key;
    EXPECT_EQ(p->type, tlab::ParamType::Int) << key;
    EXPECT_EQ(p->min, 0.0) << key;
  }
  EXPECT_EQ(std::get<int64_t>(s.find("train_size")->default_value), 5000);
  EXPECT_EQ(std::get<int64_t>(s.find("unlabeled_size")->default_value), 0);
  EXPECT_EQ(std::get<int64_t>(s.find("seed")->default_value), 0);
  const tlab::ParamSpec* variation = s.find("variation");
  ASSERT_NE(variation, nullptr);
  EXPECT_EQ(std::get<double>(variation->default_value), 1.0);
  EXPECT_TRUE(variation->min && variation->max);
}

TEST_F(Datasets, DigitsEveryDomainHasShapesDtypesRangeAndBalancedLabels) {
  for (const auto& domain : kDigitDomains) {
    SCOPED_TRACE(domain);
    tlab::Params p = digits(domain);
    p["unlabeled_size"] = int64_t{25};
    tlab::DomainData d = load("digits", p);
    EXPECT_EQ(d.name, domain);
    EXPECT_EQ(d.num_classes, 10);
    EXPECT_EQ(d.input_shape, (std::vector<int64_t>{1, 28, 28}));
    for (const tlab::Split* s : {&d.train, &d.val, &d.test}) {
      EXPECT_EQ(s->x.dim(), 4);
      EXPECT_EQ(s->x.sizes().slice(1), torch::IntArrayRef({1, 28, 28}));
      EXPECT_EQ(s->x.scalar_type(), torch::kFloat);
      EXPECT_EQ(s->y.scalar_type(), torch::kLong);
      EXPECT_TRUE(s->x.device().is_cpu());
      EXPECT_EQ(s->y.size(0), s->x.size(0));
      EXPECT_GE(s->x.min().item<float>(), 0.0f);
      EXPECT_LE(s->x.max().item<float>(), 1.0f);
    }
    EXPECT_EQ(d.train.size(), 100);
    EXPECT_EQ(d.val.size(), 20);
    EXPECT_EQ(d.test.size(), 30);
    EXPECT_EQ(class_counts(d.train.y, 10), std::vector<int64_t>(10, 10));
    EXPECT_EQ(class_counts(d.test.y, 10), std::vector<int64_t>(10, 3));
    ASSERT_TRUE(d.unlabeled.defined());
    EXPECT_EQ(d.unlabeled.sizes(), torch::IntArrayRef({25, 1, 28, 28}));
    // Every image shows a digit: its brightest and darkest pixels are far apart.
    auto flat = d.train.x.flatten(1);
    EXPECT_GT((std::get<0>(flat.max(1)) - std::get<0>(flat.min(1))).min().item<float>(), 0.5f);
  }
}

TEST_F(Datasets, DigitsEmptySplitsAreAllowed) {
  tlab::Params p = digits("clean", 0);
  p["val_size"] = int64_t{0};
  tlab::DomainData d = load("digits", p);
  EXPECT_EQ(d.train.size(), 0);
  EXPECT_EQ(d.val.size(), 0);
  EXPECT_EQ(d.test.size(), 30);
  EXPECT_FALSE(d.unlabeled.defined());
}

TEST_F(Datasets, DigitsAreDeterministicWhateverTheGlobalSeedAndThreads) {
  const int threads = at::get_num_threads();
  for (const char* domain : {"clean", "noisy"}) {
    SCOPED_TRACE(domain);
    torch::manual_seed(1);
    at::set_num_threads(1);
    tlab::DomainData a = load("digits", digits(domain));
    torch::manual_seed(2);
    at::set_num_threads(2);
    tlab::DomainData b = load("digits", digits(domain));
    expect_same(a, b);
  }
  at::set_num_threads(threads);
}

TEST_F(Datasets, DigitsSeedsAndSplitsGiveDifferentImages) {
  tlab::DomainData a = load("digits", digits("clean", 100, 0));
  tlab::DomainData b = load("digits", digits("clean", 100, 1));
  EXPECT_FALSE(torch::equal(a.train.x, b.train.x));
  EXPECT_FALSE(torch::equal(a.train.y, b.train.y));
  // Splits are disjoint: no test image is (near) any training image.
  auto dist = at::cdist(a.test.x.flatten(1), a.train.x.flatten(1));
  EXPECT_GT(dist.min().item<float>(), 1.0f);
}

TEST_F(Datasets, DigitsDomainsAreRealShiftsOfTheSameDigits) {
  tlab::DomainData clean = load("digits", digits("clean"));
  // Domains act on the same base draw: labels agree, and inverted is exactly 1 - clean.
  tlab::DomainData inverted = load("digits", digits("inverted"));
  EXPECT_TRUE(torch::equal(inverted.train.y, clean.train.y));
  EXPECT_TRUE(torch::equal(inverted.train.x, 1.0 - clean.train.x));
  const float ink = clean.train.x.mean().item<float>();
  for (const char* domain : {"rotated", "noisy", "thick", "small"}) {
    SCOPED_TRACE(domain);
    tlab::DomainData d = load("digits", digits(domain));
    EXPECT_TRUE(torch::equal(d.train.y, clean.train.y));
    EXPECT_GT((d.train.x - clean.train.x).abs().mean().item<float>(), 0.05f);
  }
  // Each shift in the direction it claims.
  EXPECT_GT(load("digits", digits("thick")).train.x.mean().item<float>(), 1.5f * ink);
  EXPECT_LT(load("digits", digits("small")).train.x.mean().item<float>(), 0.6f * ink);
  auto corner = [](const tlab::DomainData& d) { return d.train.x.select(2, 0).select(2, 0); };
  EXPECT_GT(corner(load("digits", digits("noisy"))).std().item<float>(), 0.05f);
  EXPECT_EQ(corner(clean).abs().max().item<float>(), 0.0f);
}

TEST_F(Datasets, DigitsRejectsAnUnknownDomainNamingTheChoices) {
  std::string msg = create_error("digits", {{"domain", std::string("bogus")}});
  EXPECT_THAT(msg, HasSubstr("unknown domain 'bogus'"));
  EXPECT_THAT(msg, HasSubstr("clean, rotated, inverted, noisy, thick, small"));
}

TEST_F(Datasets, DigitsRejectsANegativeSize) {
  EXPECT_THAT(create_error("digits", {{"val_size", int64_t{-3}}}),
              HasSubstr("val_size '-3' is negative"));
}

// ---- gaussians --------------------------------------------------------------------------------

TEST_F(Datasets, GaussiansSchemaHasDefaultsBoundsAndChoices) {
  const tlab::Schema& s = schema_of("gaussians");
  ASSERT_NE(s.find("domain"), nullptr);
  EXPECT_EQ(std::get<std::string>(s.find("domain")->default_value), "source");
  EXPECT_EQ(s.find("domain")->choices, (std::vector<std::string>{"source", "target"}));
  EXPECT_EQ(std::get<int64_t>(s.find("num_classes")->default_value), 4);
  EXPECT_EQ(std::get<int64_t>(s.find("dim")->default_value), 16);
  EXPECT_EQ(s.find("num_classes")->min, 2.0);
  for (const char* key : {"separation", "noise", "shift"}) {
    ASSERT_NE(s.find(key), nullptr) << key;
    EXPECT_EQ(s.find(key)->type, tlab::ParamType::Float) << key;
    EXPECT_TRUE(s.find(key)->min && s.find(key)->max) << key;
  }
  EXPECT_EQ(s.find("shift")->min, 0.0);
  EXPECT_GT(s.find("noise")->min.value(), 0.0);
}

TEST_F(Datasets, GaussiansRejectsBadDomainsAndTooFewClasses) {
  EXPECT_THAT(create_error("gaussians", {{"domain", std::string("middle")}}),
              HasSubstr("unknown domain 'middle'; expected one of: source, target"));
  EXPECT_THAT(create_error("gaussians", {{"num_classes", int64_t{1}}}),
              HasSubstr("num_classes '1' is too small; expected at least 2"));
}

TEST_F(Datasets, GaussiansHaveShapesDtypesAndBalancedLabels) {
  tlab::DomainData d = load("gaussians", {{"num_classes", int64_t{3}},
                                          {"dim", int64_t{5}},
                                          {"train_size", int64_t{90}},
                                          {"val_size", int64_t{12}},
                                          {"test_size", int64_t{30}},
                                          {"unlabeled_size", int64_t{7}}});
  EXPECT_EQ(d.name, "source");
  EXPECT_EQ(d.num_classes, 3);
  EXPECT_EQ(d.input_shape, (std::vector<int64_t>{5}));
  EXPECT_EQ(d.train.x.sizes(), torch::IntArrayRef({90, 5}));
  EXPECT_EQ(d.train.x.scalar_type(), torch::kFloat);
  EXPECT_EQ(d.train.y.scalar_type(), torch::kLong);
  EXPECT_EQ(d.val.size(), 12);
  EXPECT_EQ(class_counts(d.train.y, 3), (std::vector<int64_t>{30, 30, 30}));
  EXPECT_EQ(class_counts(d.test.y, 3), (std::vector<int64_t>{10, 10, 10}));
  EXPECT_EQ(d.unlabeled.sizes(), torch::IntArrayRef({7, 5}));
  EXPECT_TRUE(torch::isfinite(d.train.x).all().item<bool>());
}

TEST_F(Datasets, GaussiansAreDeterministicAndSeedsDiffer) {
  torch::manual_seed(1);
  tlab::DomainData a = load("gaussians", gaussians("target", 0.5));
  torch::manual_seed(2);
  tlab::DomainData b = load("gaussians", gaussians("target", 0.5));
  expect_same(a, b);
  tlab::Params other = gaussians("target", 0.5);
  other["seed"] = int64_t{1};
  EXPECT_FALSE(torch::equal(a.train.x, load("gaussians", other).train.x));
}

TEST_F(Datasets, GaussiansShiftMovesOnlyTheTarget) {
  tlab::DomainData source = load("gaussians", gaussians("source", 0.0, 2000));
  // The source ignores `shift`; the target at shift 0 is a fresh sample of the same distribution.
  expect_same(source, load("gaussians", gaussians("source", 3.0, 2000)));
  tlab::DomainData same = load("gaussians", gaussians("target", 0.0, 2000));
  EXPECT_FALSE(torch::equal(same.train.x, source.train.x));
  auto mean_gap = [&](const tlab::DomainData& t) {
    return (t.train.x.mean(0) - source.train.x.mean(0)).norm().item<float>();
  };
  // Sampling error of a mean of 2000 points in 16-d with unit noise is about 0.13.
  EXPECT_LT(mean_gap(same), 0.4f);
  // shift 1 translates every class by `separation` (3) and rotates by 45 degrees.
  EXPECT_GT(mean_gap(load("gaussians", gaussians("target", 1.0, 2000))), 1.5f);
  EXPECT_GT(mean_gap(load("gaussians", gaussians("target", 2.0, 2000))), 3.0f);
}

}  // namespace
