// Four-bit packing as compressed-tensors' pack_to_int32 lays it out, against a
// per-element statement of that layout.

#include "mq/pack.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace {

// Element c of a row in bits 4 * (c % 8) of word c / 8, as value + offset; padding zero.
at::Tensor pack_by_element(const at::Tensor& values, int offset) {
  const at::Tensor v = values.to(at::kLong).contiguous();
  const int64_t rows = v.size(0), cols = v.size(1), words = (cols + 7) / 8;
  at::Tensor packed = at::zeros({rows, words}, at::kLong);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      packed[r][c / 8] += ((v[r][c].item<int64_t>() + offset) & 0xF) << (4 * (c % 8));
  return packed.to(at::kInt);  // wraps to int32 like the uint32 words it holds
}

TEST(Pack, KnownWords) {
  // int4 -8..7 become nibbles 0..15, element 0 in the lowest bits.
  const at::Tensor v = at::arange(-8, 8, at::kChar).reshape({2, 8});
  const at::Tensor packed = mq::pack_int4(v, 8);
  EXPECT_EQ(static_cast<uint32_t>(packed[0][0].item<int32_t>()), 0x76543210u);
  EXPECT_EQ(static_cast<uint32_t>(packed[1][0].item<int32_t>()), 0xFEDCBA98u);
}

TEST(Pack, MatchesTheLayoutAndRoundTripsForEveryWidth) {
  at::manual_seed(5);
  for (const int offset : {8, 0}) {
    for (const int64_t cols : {1, 7, 8, 9, 16, 33, 130}) {
      SCOPED_TRACE("offset " + std::to_string(offset) + ", cols " + std::to_string(cols));
      const at::Tensor v = at::randint(-offset, 16 - offset, {5, cols}, offset ? at::kChar : at::kByte);
      const at::Tensor packed = mq::pack_int4(v, offset);
      EXPECT_TRUE(at::equal(packed, pack_by_element(v, offset)));
      EXPECT_TRUE(at::equal(mq::pack_int4(v.to(at::kInt), offset), packed));  // any integer dtype
      EXPECT_TRUE(at::equal(mq::unpack_int4(packed, cols, offset, v.scalar_type()), v));
      EXPECT_TRUE(at::equal(mq::unpack_int4(packed, cols, offset, at::kInt), v.to(at::kInt)));
      EXPECT_TRUE(mq::packs_shape(packed, {5, cols}));
      EXPECT_TRUE(mq::packs_shape(packed, {1, 5, cols}));
      EXPECT_FALSE(mq::packs_shape(packed, {5, cols + 8}));
      EXPECT_FALSE(mq::packs_shape(packed, {4, cols}));
      EXPECT_FALSE(mq::packs_shape(packed.to(at::kLong), {5, cols}));
      // Rows too short for `cols` would leave values unset: refused, not read past.
      EXPECT_THROW(mq::unpack_int4(packed, cols + 8, offset, at::kInt), std::invalid_argument);
    }
  }
  const at::Tensor one_row = at::zeros({1, 1}, at::kInt);
  EXPECT_FALSE(mq::packs_shape(one_row, {}));
  EXPECT_FALSE(mq::packs_shape(one_row, {1, 0}));
  EXPECT_FALSE(mq::packs_shape(one_row, {-1, -1, 8}));                               // negative rows
  EXPECT_FALSE(mq::packs_shape(one_row, {int64_t{1} << 62, int64_t{1} << 62, 8}));  // overflow
}

}  // namespace
