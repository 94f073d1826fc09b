// Schemas bound to option structs: defaults, types, constraints, binding.
#include <gtest/gtest.h>

#include "tlab/sdk/params.hpp"

namespace {

struct Opts {
  int64_t epochs = 3;
  double lr = 0.1;
  bool flag = true;
  std::string mode = "a";
  std::vector<int64_t> sizes{4, 8};
};

tlab::Schema schema() {
  return tlab::SchemaFor<Opts>()
      .field("epochs", &Opts::epochs, "passes")
      .range(1, 10)
      .field("lr", &Opts::lr, "rate")
      .min(0)
      .field("flag", &Opts::flag, "a switch")
      .field("mode", &Opts::mode, "mode")
      .choices({"a", "b"})
      .field("sizes", &Opts::sizes, "widths")
      .min(1)
      .min_size(1);
}

TEST(Schema, RecordsTypesDefaultsAndConstraints) {
  tlab::Schema s = schema();
  ASSERT_EQ(s.params.size(), 5u);
  const auto* e = s.find("epochs");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->type, tlab::ParamType::Int);
  EXPECT_EQ(std::get<int64_t>(e->default_value), 3);
  EXPECT_EQ(*e->min, 1);
  EXPECT_EQ(*e->max, 10);
  EXPECT_EQ(s.find("lr")->type, tlab::ParamType::Float);
  EXPECT_FALSE(s.find("lr")->max.has_value());
  EXPECT_EQ(s.find("mode")->choices, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(s.find("sizes")->type, tlab::ParamType::IntList);
  EXPECT_EQ(s.find("sizes")->min_size, 1u);
  EXPECT_EQ(s.find("nope"), nullptr);
  EXPECT_STREQ(tlab::type_name(tlab::ParamType::FloatList), "list of float");
}

TEST(Schema, BindsValuesOverDefaults) {
  tlab::Params p{{"lr", 0.5}, {"mode", std::string("b")}, {"sizes", std::vector<int64_t>{1}}};
  Opts o = tlab::bind_options<Opts>(schema(), p);
  EXPECT_EQ(o.epochs, 3);
  EXPECT_DOUBLE_EQ(o.lr, 0.5);
  EXPECT_TRUE(o.flag);
  EXPECT_EQ(o.mode, "b");
  EXPECT_EQ(o.sizes, (std::vector<int64_t>{1}));
}

}  // namespace
