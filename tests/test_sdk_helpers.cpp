// The public SDK helpers (tlab/sdk/): TLAB_CHECK, options fragments (SchemaFor::include), a
// plugin class without options, Model::add_head, Sampler, ModeScope, and the source helpers'
// messages on a session without a source. Each against an answer known without the helper.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "tlab/sdk/sdk.hpp"

using ::testing::HasSubstr;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

TEST(SdkCheck, ThrowsTheStreamedPartsOnlyWhenTheConditionFails) {
  int evaluated = 0;
  auto part = [&] { return ++evaluated; };
  TLAB_CHECK(1 + 1 == 2, "never ", part());
  EXPECT_EQ(evaluated, 0);  // parts of a passing check are not evaluated
  const double lr = 0.5;
  EXPECT_EQ(
      error_of([&] { TLAB_CHECK(lr < 0.1, "lr = '", lr, "' is too large; expected < ", 0.1); }),
      "lr = '0.5' is too large; expected < 0.1");
  EXPECT_THROW(TLAB_CHECK(false, "x"), std::invalid_argument);
}

struct Fragment {
  int64_t epochs = 10;
  double lr = 0.0;
  static tlab::Schema schema() {
    return tlab::SchemaFor<Fragment>()
        .field("epochs", &Fragment::epochs, "epochs")
        .range(1, 100)
        .field("lr", &Fragment::lr, "rate");
  }
};
struct Owner {
  Fragment source{5};  // the owner's own default for the fragment
  double weight = 0.1;
};

TEST(SdkSchema, IncludeAddsAFragmentWithTheOwnersDefaultsAndBindsIntoIt) {
  tlab::Schema s =
      tlab::SchemaFor<Owner>().include(&Owner::source).field("weight", &Owner::weight, "trade-off");
  ASSERT_EQ(s.params.size(), 3u);
  EXPECT_EQ(s.params[0].key, "epochs");
  EXPECT_EQ(std::get<int64_t>(s.params[0].default_value), 5);  // Owner's, not Fragment's 10
  EXPECT_EQ(*s.params[0].max, 100);                            // the fragment's bounds
  EXPECT_EQ(std::get<double>(s.params[1].default_value), 0.0);
  Owner o = tlab::bind_options<Owner>(s, {{"epochs", int64_t{7}}, {"weight", 0.3}});
  EXPECT_EQ(o.source.epochs, 7);
  EXPECT_EQ(o.source.lr, 0.0);
  EXPECT_EQ(o.weight, 0.3);
  EXPECT_EQ(std::get<int64_t>(s.params[0].get(&o)), 7);
  // The SDK's own fragment: source_epochs and source_lr.
  tlab::Schema src = tlab::SourceOptions::schema();
  ASSERT_EQ(src.params.size(), 2u);
  EXPECT_EQ(src.params[0].key, "source_epochs");
  EXPECT_EQ(src.params[1].key, "source_lr");
}

class NoOptions : public tlab::Strategy {};

TEST(SdkPlugin, AClassWithoutOptionsHasAnEmptySchemaAndIsBuiltByItsDefaultConstructor) {
  EXPECT_TRUE(tlab::detail::schema_of<NoOptions>().params.empty());
  auto p = tlab::detail::create<NoOptions>({});
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->kind(), tlab::Kind::Strategy);
  EXPECT_NE(dynamic_cast<NoOptions*>(p.get()), nullptr);
}

struct Identity : tlab::BackboneNet {
  torch::nn::Linear fc{nullptr};
  Identity() { fc = register_module("fc", torch::nn::Linear(4, 6)); }
  torch::Tensor forward(torch::Tensor x) override { return fc->forward(x); }
  int64_t feature_dim() const override { return 6; }
  std::vector<tlab::LayerGroup> layer_groups() override { return {{"fc", fc->parameters()}}; }
};

TEST(SdkModel, AddHeadAppendsAndTracksTheOutputWidth) {
  tlab::Model m(std::make_shared<Identity>());
  EXPECT_EQ(m.out_dim(), 6);  // the features' width before any head
  m.add_head(torch::nn::Linear(m.out_dim(), 5), 5);
  m.add_head(torch::nn::ReLU(), 5);
  m.add_head(torch::nn::Linear(5, 3), 3);
  EXPECT_EQ(m.out_dim(), 3);
  EXPECT_EQ(m.head->size(), 3u);
  EXPECT_EQ(m.forward(torch::randn({2, 4})).sizes(), (std::vector<int64_t>{2, 3}));
}

TEST(SdkSampler, EachPassOverThePoolDrawsEveryRowOnceInBatches) {
  torch::manual_seed(1);
  tlab::Sampler t(torch::arange(10), 5);
  std::set<int64_t> seen;
  for (int i = 0; i < 2; ++i) {
    auto b = t.next();
    ASSERT_EQ(b.size(0), 5);
    for (int64_t j = 0; j < 5; ++j) seen.insert(b[j].item<int64_t>());
  }
  EXPECT_EQ(seen.size(), 10u);  // two batches of one permutation: every row once
  tlab::Sampler big(torch::arange(3), 8);
  EXPECT_EQ(big.next().size(0), 3);  // a batch is at most the pool
}

TEST(SdkSampler, MisuseSaysWhatToDo) {
  tlab::Sampler empty;
  EXPECT_THAT(error_of([&] { empty.next(); }),
              HasSubstr("tlab::Sampler used before it was given a pool: make it in setup()"));
  EXPECT_THAT(error_of([] { tlab::Sampler(torch::arange(4), 0); }),
              HasSubstr("tlab::Sampler: batch size 0 must be >= 1"));
  EXPECT_THAT(error_of([] {
                tlab::Sampler(torch::zeros({0, 2}), 4);
              }),
              HasSubstr("the pool is empty"));
}

TEST(SdkModeScope, GivesEverySubmoduleItsOwnModeBack) {
  torch::nn::Sequential net(torch::nn::Linear(2, 2), torch::nn::Dropout(0.5));
  net->train();
  net[1]->eval();  // a part kept in eval mode (a frozen backbone's batch norm)
  {
    tlab::ModeScope keep(*net);
    net->eval();
    EXPECT_FALSE(net[0]->is_training());
    net->train();  // train() recurses: the frozen part wakes up inside the scope
    EXPECT_TRUE(net[1]->is_training());
  }
  EXPECT_TRUE(net->is_training());
  EXPECT_TRUE(net[0]->is_training());
  EXPECT_FALSE(net[1]->is_training());  // back in eval mode, unlike net->train() would leave it
  try {
    tlab::ModeScope keep(*net);
    net->eval();
    throw std::runtime_error("x");
  } catch (const std::runtime_error&) {
  }
  EXPECT_TRUE(net[0]->is_training());  // restored on an exception too
}

}  // namespace
