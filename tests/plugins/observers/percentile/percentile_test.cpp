#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/observer.hpp"
#include "test_support.hpp"

namespace {

std::unique_ptr<mq::Observer> percentile(double p) {
  return mq::test::make_plugin<mq::Observer>({mq::test::opt("percentile", mq::Value::floating(p))});
}

mq::QuantSpec affine(mq::Granularity g = mq::Granularity::kPerTensor) {
  mq::QuantSpec s;
  s.dtype = mq::DType::kUInt8;
  s.scheme = mq::Scheme::kAsymmetric;
  s.granularity = g;
  return s;
}

TEST(PercentileObserver, ClipsToTheNearestRankAndAveragesBatches) {
  // 1..100 and an outlier: the 99th percentile (rank 100 of 101) is 100, not 1000.
  at::Tensor x = at::cat({at::arange(1, 101, at::kFloat), at::full({1}, 1000.0f)});
  auto obs = percentile(99);
  obs->observe(x, affine());
  EXPECT_EQ(obs->qparams(affine()).scale.item<float>(), mq::qparams_from_min_max(at::zeros({1}), at::full({1}, 100.0f), affine()).scale.item<float>());
  obs->observe(x * 3, affine());  // mean of 100 and 300
  EXPECT_EQ(obs->qparams(affine()).scale.item<float>(), mq::qparams_from_min_max(at::zeros({1}), at::full({1}, 200.0f), affine()).scale.item<float>());
}

TEST(PercentileObserver, HundredIsMinMaxPerChannel) {
  at::manual_seed(4);
  const at::Tensor x = at::randn({5, 64});
  auto obs = percentile(100);
  obs->observe(x, affine(mq::Granularity::kPerChannel));
  auto [mn, mx] = mq::min_max(x, affine(mq::Granularity::kPerChannel));
  const mq::QParams expected = mq::qparams_from_min_max(mn, mx, affine(mq::Granularity::kPerChannel));
  EXPECT_TRUE(at::equal(obs->qparams(affine(mq::Granularity::kPerChannel)).scale, expected.scale));
}

TEST(PercentileObserver, RefusesPercentilesOutsideTheRange) {
  EXPECT_THROW(percentile(50), mq::RecipeError);
  EXPECT_THROW(percentile(100.5), mq::RecipeError);
}

}  // namespace
