#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/observer.hpp"
#include "test_support.hpp"

namespace {

using mq::test::make_plugin;
using mq::test::opt;

mq::QuantSpec per_tensor() {
  mq::QuantSpec s;
  s.granularity = mq::Granularity::kPerTensor;
  return s;
}

mq::QuantSpec per_channel() {
  mq::QuantSpec s;
  s.granularity = mq::Granularity::kPerChannel;
  return s;
}

// torch.ao's MovingAverageMinMaxObserver, written out: the first batch sets the range,
// each later one moves it by c * (batch - current), in float32.
TEST(MovingAverageObserver, MovesTheRangeByTheAveragingConstant) {
  auto obs = make_plugin<mq::Observer>({opt("averaging_constant", mq::Value::floating(0.25))});
  obs->observe(at::tensor({-1.0f, 2.0f}), per_tensor());
  obs->observe(at::tensor({-5.0f, 10.0f}), per_tensor());
  obs->observe(at::tensor({0.0f, 6.0f}), per_tensor());
  float lo = -1.0f, hi = 2.0f;
  for (const auto& [l, h] : {std::pair{-5.0f, 10.0f}, std::pair{0.0f, 6.0f}}) {
    lo = lo + 0.25f * (l - lo);
    hi = hi + 0.25f * (h - hi);
  }
  const mq::QParams expected = mq::qparams_from_min_max(at::full({1}, lo), at::full({1}, hi), per_tensor());
  EXPECT_TRUE(at::equal(obs->qparams(per_tensor()).scale, expected.scale));
}

TEST(MovingAverageObserver, PerChannelMovesEachChannelAndSkipsEmptyBatches) {
  auto obs = make_plugin<mq::Observer>({opt("averaging_constant", mq::Value::floating(0.5))});
  obs->observe(at::tensor({1.0f, -1.0f, 4.0f, 0.0f}).reshape({2, 2}), per_channel());
  obs->observe(at::empty({0, 2}), per_channel());  // nothing to move by
  obs->observe(at::tensor({3.0f, -3.0f, 8.0f, 0.0f}).reshape({2, 2}), per_channel());
  // channel 0: [-1, 1] then [-3, 3] -> [-2, 2]; channel 1: [0, 4] then [0, 8] -> [0, 6]
  const mq::QParams expected =
      mq::qparams_from_min_max(at::tensor({-2.0f, 0.0f}), at::tensor({2.0f, 6.0f}), per_channel());
  EXPECT_TRUE(at::equal(obs->qparams(per_channel()).scale, expected.scale));
}

TEST(MovingAverageObserver, OptionsOutOfRangeAreRecipeErrors) {
  for (const double c : {0.0, -0.1, 1.5})
    EXPECT_THROW(make_plugin<mq::Observer>({opt("averaging_constant", mq::Value::floating(c))}), mq::RecipeError) << c;
  EXPECT_THROW(make_plugin<mq::Observer>({opt("eps", mq::Value::floating(0.0))}), mq::RecipeError);
}

TEST(MovingAverageObserver, NothingObservedGivesPyTorchsDefault) {
  const mq::QParams qp = make_plugin<mq::Observer>()->qparams(per_tensor());
  EXPECT_EQ(qp.scale.item<float>(), 1.0f);
  EXPECT_EQ(qp.zero_point.item<int>(), 0);
}

}  // namespace
