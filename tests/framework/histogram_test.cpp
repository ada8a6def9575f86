#include "mq/histogram.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <limits>

#include "mq/error.hpp"

namespace {

void expect_histc(const at::Tensor& x, int64_t bins, float min, float max) {
  SCOPED_TRACE("bins " + std::to_string(bins) + " range [" + std::to_string(min) + ", " +
               std::to_string(max) + "] numel " + std::to_string(x.numel()));
  const at::Tensor ours = mq::histc(x, bins, min, max);
  const at::Tensor theirs = at::histc(x, bins, min, max);
  ASSERT_TRUE(at::equal(ours, theirs)) << (ours - theirs).abs().max().item<float>();
}

TEST(Histogram, MatchesAtHistcBinForBin) {
  at::manual_seed(21);
  const at::Tensor normal = at::randn({100003}) * 3;
  for (int64_t bins : {1, 7, 256, 2048}) {
    expect_histc(normal, bins, -2.0f, 2.5f);  // values outside the range are skipped
    expect_histc(normal, bins, normal.min().item<float>(), normal.max().item<float>());
    expect_histc(at::rand({5000}) * 1e-30f, bins, 0.0f, 1e-30f);
    expect_histc(at::randn({4096}) * 1e30f, bins, -3e30f, 3e30f);
  }
  // Values on the bin edges, the closed right edge, integers.
  expect_histc(at::arange(-64, 65, at::kFloat), 128, -64.0f, 64.0f);
  expect_histc(at::arange(0, 2049, at::kFloat) / 2048.0f, 2048, 0.0f, 1.0f);
}

TEST(Histogram, WidensAnEmptyRangeAsAtHistcDoes) {
  expect_histc(at::randn({300}), 16, 0.5f, 0.5f);  // min == max: the data's own range
  expect_histc(at::full({10}, 3.0f), 16, 3.0f, 3.0f);  // constant data: +-1
  expect_histc(at::empty({0}), 16, 1.0f, 1.0f);
}

// LibTorch 1.13's histc counts NaN in the first bin; a NaN is no value of any bin.
TEST(Histogram, SkipsNaNAndTakesOtherDtypes) {
  at::Tensor x = at::randn({1000});
  const at::Tensor clean = x.clone();
  x[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(at::equal(mq::histc(x, 64, -1.0f, 1.0f), at::histc(clean.index_select(0, at::cat(
      {at::arange(0, 3), at::arange(4, 1000)})), 64, -1.0f, 1.0f)));
  const at::Tensor half = at::randn({999}).to(at::kHalf);
  EXPECT_TRUE(at::equal(mq::histc(half, 32, -1.0f, 1.0f), at::histc(half.to(at::kFloat), 32, -1.0f, 1.0f)));
}

TEST(Histogram, FindsTheRangeInTheSamePass) {
  at::manual_seed(22);
  at::Tensor x = at::randn({70001}) * 2;
  x[17] = std::numeric_limits<float>::quiet_NaN();
  const mq::RangeHistogram pass = mq::histc_min_max(x, 2048, -1.5f, 3.0f);
  EXPECT_TRUE(at::equal(pass.counts, mq::histc(x, 2048, -1.5f, 3.0f)));
  const at::Tensor clean = x.nan_to_num(0.0);
  EXPECT_EQ(pass.min, clean.min().item<float>());
  EXPECT_EQ(pass.max, clean.max().item<float>());
  const mq::RangeHistogram nothing = mq::histc_min_max(at::full({5}, NAN), 8, 0.0f, 1.0f);
  EXPECT_EQ(nothing.min, std::numeric_limits<float>::infinity());
  EXPECT_EQ(nothing.max, -std::numeric_limits<float>::infinity());
  EXPECT_EQ(nothing.counts.sum().item<float>(), 0.0f);
}

TEST(Histogram, RefusesAnInfiniteRangeAndBadBinCounts) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_THROW(mq::histc(at::ones({4}), 8, 0.0f, inf), mq::InputError);
  EXPECT_THROW(mq::histc(at::ones({4}), 0, 0.0f, 1.0f), mq::RecipeError);
}

}  // namespace
