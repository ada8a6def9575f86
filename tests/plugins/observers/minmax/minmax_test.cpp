#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/observer.hpp"
#include "test_support.hpp"

namespace {

using mq::test::make_plugin;
using mq::test::opt;

mq::QuantSpec per_channel() {
  mq::QuantSpec s;
  s.granularity = mq::Granularity::kPerChannel;
  return s;
}

std::unique_ptr<mq::Observer> observer() {
  return make_plugin<mq::Observer>({opt("eps", mq::Value::floating(mq::kScaleEps))});
}

TEST(MinMaxObserver, AccumulatesOverBatchesLikeOneBigTensor) {
  at::manual_seed(3);
  const at::Tensor a = at::randn({8, 16}), b = at::randn({8, 16}) * 4;
  auto obs = observer();
  obs->observe(a, per_channel());
  obs->observe(b, per_channel());
  auto [mn, mx] = mq::min_max(at::cat({a, b}, 1), per_channel());
  const mq::QParams expected = mq::qparams_from_min_max(mn, mx, per_channel());
  const mq::QParams got = obs->qparams(per_channel());
  EXPECT_TRUE(at::equal(got.scale, expected.scale));
  EXPECT_TRUE(at::equal(got.zero_point, expected.zero_point));
}

TEST(MinMaxObserver, ChannelCountChangeIsAnInputError) {
  auto obs = observer();
  obs->observe(at::ones({4, 2}), per_channel());
  try {
    obs->observe(at::ones({5, 2}), per_channel());
    ADD_FAILURE() << "observed";
  } catch (const mq::InputError& e) {
    EXPECT_STREQ(e.what(), "minmax observer saw 5 channels after 4");
  }
}

TEST(MinMaxObserver, NothingObservedGivesPyTorchsDefault) {
  const mq::QParams qp = observer()->qparams(mq::QuantSpec{});
  EXPECT_EQ(qp.scale.item<float>(), 1.0f);
  EXPECT_EQ(qp.zero_point.item<int>(), 0);
}

TEST(MinMaxObserver, EpsBoundsTheScale) {
  auto obs = make_plugin<mq::Observer>({opt("eps", mq::Value::floating(0.5))});
  obs->observe(at::full({2, 2}, 1.0f), per_channel());
  EXPECT_TRUE(at::all(obs->qparams(per_channel()).scale == 0.5f).item<bool>());
}

TEST(MinMaxObserver, NonPositiveEpsIsARecipeError) {
  EXPECT_THROW(make_plugin<mq::Observer>({opt("eps", mq::Value::floating(0.0))}), mq::RecipeError);
}

}  // namespace
