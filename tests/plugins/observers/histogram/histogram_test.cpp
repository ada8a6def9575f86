// Parity with PyTorch is tests/interop/observer_parity_test.cpp; these pin the rest.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "mq/error.hpp"
#include "mq/observer.hpp"
#include "test_support.hpp"

namespace {

TEST(HistogramObserver, IsPerTensorOnlyAsInPyTorch) {
  auto obs = mq::test::make_plugin<mq::Observer>();
  mq::QuantSpec s;
  s.granularity = mq::Granularity::kPerChannel;
  EXPECT_THROW(obs->observe(at::ones({2, 2}), s), mq::RecipeError);
}

TEST(HistogramObserver, NothingObservedGivesPyTorchsDefault) {
  const mq::QParams qp = mq::test::make_plugin<mq::Observer>()->qparams(mq::QuantSpec{});
  EXPECT_EQ(qp.scale.item<float>(), 1.0f);
  EXPECT_EQ(qp.zero_point.item<int>(), 0);
}

TEST(HistogramObserver, BadOptionsAreRecipeErrors) {
  EXPECT_THROW(mq::test::make_plugin<mq::Observer>({mq::test::opt("bins", mq::Value::integer(1))}),
               mq::RecipeError);
}

}  // namespace
