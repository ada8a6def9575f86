// llama.cpp's block types: the threaded kernel against the scalar one, blocks worked out
// by hand from ggml-quants.c's reference formulas, and what specs and sizes say of them.
// (That the bytes equal llama.cpp's own quantizer's is interop_gguf's check.)

#include <ATen/ATen.h>
#include <c10/util/Half.h>
#include <gtest/gtest.h>

#include <cstring>

#include "mq/blocks.hpp"
#include "mq/error.hpp"
#include "mq/quantized_tensor.hpp"

namespace {

constexpr mq::DType kBlockTypes[] = {mq::DType::kQ8_0, mq::DType::kQ4_0, mq::DType::kQ4_1, mq::DType::kQ5_0,
                                     mq::DType::kQ5_1, mq::DType::kQ4_K, mq::DType::kQ5_K, mq::DType::kQ6_K};

float half_at(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}

TEST(Blocks, TheThreadedKernelMakesTheScalarOnesBytes) {
  at::manual_seed(3);
  // bf16 and strided inputs too: each row is widened to float32 first, as llama.cpp does.
  at::Tensor x = at::randn({67, 256}) * 3;
  // Blocks and sub-blocks with nothing to search: zeros, one value, a constant, a row of zeros.
  x[0].narrow(0, 0, 32).zero_();
  x[1].narrow(0, 32, 32).fill_(-2.5);
  x[2].narrow(0, 64, 16).zero_();
  x[3].zero_();
  x[4].narrow(0, 0, 32).zero_();
  x[4][5] = 1;
  for (mq::DType dtype : kBlockTypes)
    for (const at::Tensor& input : {x, x.to(at::kBFloat16), x.t().contiguous().t()}) {
      const at::Tensor fast = mq::blocks::quantize(input, dtype), ref = mq::blocks::quantize_ref(input, dtype);
      ASSERT_EQ(fast.sizes(), (at::IntArrayRef{67, mq::blocks::row_bytes(dtype, 256)}));
      EXPECT_TRUE(at::equal(fast, ref)) << mq::to_string(dtype);
    }
}

TEST(Blocks, Q8_0IsAmaxOver127RoundedHalfAwayFromZero) {
  // 127 * 0.5 / 127 ... : d = 1/2 exactly, so x / d is exact: 0.25 -> 0.5 -> 1 (away from zero).
  std::vector<float> v(32, 0.0f);
  v[0] = 63.5f;   // amax: q = 127
  v[1] = -0.25f;  // -0.5 -> -1
  v[2] = 0.75f;   // 1.5 -> 2
  const at::Tensor q = mq::blocks::quantize(at::from_blob(v.data(), {1, 32}, at::kFloat), mq::DType::kQ8_0);
  const uint8_t* b = q.data_ptr<uint8_t>();
  EXPECT_EQ(half_at(b), 0.5f);
  EXPECT_EQ(static_cast<int8_t>(b[2]), 127);
  EXPECT_EQ(static_cast<int8_t>(b[3]), -1);
  EXPECT_EQ(static_cast<int8_t>(b[4]), 2);
  EXPECT_EQ(b[5], 0);
}

TEST(Blocks, Q4_0MapsTheSignedMaximumToMinusEight) {
  // Signed max -4 (the largest magnitude): d = -4 / -8 = 0.5; q = min(15, trunc(x / d + 8.5)).
  std::vector<float> v(32, 0.0f);
  v[0] = -4.0f;  // -8 + 8.5 -> 0
  v[1] = 3.9f;   // 7.8 + 8.5 = 16.3 -> 16 -> clamped to 15
  v[16] = 1.0f;  // 2 + 8.5 -> 10, the high nibble of byte 0
  const at::Tensor q = mq::blocks::quantize(at::from_blob(v.data(), {1, 32}, at::kFloat), mq::DType::kQ4_0);
  const uint8_t* b = q.data_ptr<uint8_t>();
  EXPECT_EQ(half_at(b), 0.5f);
  EXPECT_EQ(b[2], 0 | (10 << 4));
  EXPECT_EQ(b[3], 15 | (8 << 4));  // value 17 is 0: 8
  const at::Tensor back = mq::blocks::dequantize(q, mq::DType::kQ4_0, 32);
  EXPECT_EQ(back[0][0].item<float>(), -4.0f);
  EXPECT_EQ(back[0][1].item<float>(), 3.5f);
  EXPECT_EQ(back[0][16].item<float>(), 1.0f);
}

TEST(Blocks, Q5_1KeepsTheMinimumAndTheFifthBits) {
  // min 1, max 32: d = 31 / 31 = 1, q = trunc(x - 1 + 0.5).
  std::vector<float> v(32);
  for (int j = 0; j < 32; ++j) v[j] = 1.0f + static_cast<float>(j);
  const at::Tensor q = mq::blocks::quantize(at::from_blob(v.data(), {1, 32}, at::kFloat), mq::DType::kQ5_1);
  const uint8_t* b = q.data_ptr<uint8_t>();
  EXPECT_EQ(half_at(b), 1.0f);
  EXPECT_EQ(half_at(b + 2), 1.0f);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  EXPECT_EQ(qh, 0xFFFF0000u);  // values 16..31 have their fifth bit set
  EXPECT_EQ(b[8], 0 | (0 << 4));  // 0 and 16 (low nibbles)
  EXPECT_EQ(b[9], 1 | (1 << 4));
  EXPECT_TRUE(at::equal(mq::blocks::dequantize(q, mq::DType::kQ5_1, 32)[0], at::from_blob(v.data(), {32})));
}

TEST(Blocks, DequantizedValuesLieWithinAStepOfTheOriginal) {
  at::manual_seed(4);
  const at::Tensor x = at::randn({8, 512});
  for (mq::DType dtype : kBlockTypes) {
    const at::Tensor back = mq::blocks::dequantize(mq::blocks::quantize(x, dtype), dtype, 512);
    const at::Tensor blocks = x.reshape({-1, 32});
    // One step: amax / 2^(bits-1) for the symmetric types (a value clamped at the far end
    // is a step off), (max - min) / (2^bits - 1) for those with a minimum; k-quants store
    // each sub-block's scale in 6 or 8 bits of the super-block's, and may miss by two.
    const mq::DTypeTraits& t = mq::traits(dtype);
    const at::Tensor step = t.is_signed ? std::get<0>(blocks.abs().max(1)) / (1 << (t.bits - 1))
                                        : (std::get<0>(blocks.max(1)) - std::get<0>(blocks.min(1))) / ((1 << t.bits) - 1);
    const at::Tensor error = (back.reshape({-1, 32}) - blocks).abs();
    const double steps = t.block == 256 ? 2.0 : 1.01;
    EXPECT_TRUE((error <= step.unsqueeze(1) * steps + 1e-3).all().item<bool>()) << mq::to_string(dtype);
    // and on average well inside it: a layout bug scatters values over the whole range.
    EXPECT_LT((error / step.unsqueeze(1)).mean().item<double>(), 0.35) << mq::to_string(dtype);
  }
}

TEST(Blocks, RowsThatAreNotWholeBlocksAndNonFiniteValuesAreRefused) {
  EXPECT_THROW(mq::blocks::quantize(at::ones({2, 48}), mq::DType::kQ4_0), mq::InputError);
  EXPECT_THROW(mq::blocks::quantize(at::ones({64}), mq::DType::kQ8_0), mq::InputError);
  at::Tensor x = at::ones({2, 32});
  x[1][5] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(mq::blocks::quantize(x, mq::DType::kQ8_0), mq::InputError);
  EXPECT_THROW(mq::blocks::quantize(x, mq::DType::kInt8), std::invalid_argument);
}

// Importance weights (llama.cpp's imatrix path, byte for byte: interop_blocks) lower the
// error they weight; they take one weight per column, for every type but q8_0.
TEST(Blocks, ImportanceWeightsLowerTheErrorTheyWeight) {
  at::manual_seed(6);
  const at::Tensor x = at::randn({32, 512});
  const at::Tensor importance = at::rand({512}).pow(4) * 10 + 1e-3;  // a few inputs matter most
  for (mq::DType dtype : {mq::DType::kQ4_0, mq::DType::kQ4_1, mq::DType::kQ5_0, mq::DType::kQ5_1, mq::DType::kQ4_K,
                          mq::DType::kQ5_K, mq::DType::kQ6_K}) {
    const auto error = [&](const at::Tensor& q) {
      return ((mq::blocks::dequantize(q, dtype, 512) - x).pow(2).sum(0) * importance).sum().item<double>();
    };
    const at::Tensor weighted = mq::blocks::quantize(x, dtype, importance);
    EXPECT_TRUE(at::equal(weighted, mq::blocks::quantize_ref(x, dtype, importance))) << mq::to_string(dtype);
    EXPECT_LT(error(weighted), error(mq::blocks::quantize(x, dtype))) << mq::to_string(dtype);
  }
  EXPECT_THROW(mq::blocks::quantize(x, mq::DType::kQ4_K, at::ones({256})), std::invalid_argument);
  EXPECT_THROW(mq::blocks::quantize(x, mq::DType::kQ8_0, importance), std::invalid_argument);
}

TEST(Blocks, SpecsSizesAndDequantizeFollowTheType) {
  EXPECT_EQ(mq::parse_dtype("q4_1"), mq::DType::kQ4_1);
  mq::QuantSpec spec;
  spec.dtype = mq::DType::kQ4_0;
  EXPECT_TRUE(spec.is_block());
  EXPECT_FALSE(spec.is_integer());
  EXPECT_EQ(mq::QuantSpec::from_json(spec.to_json()).dtype, mq::DType::kQ4_0);
  // 18 bytes a block of 32: 4.5 bits a weight, scales included.
  EXPECT_EQ(mq::storage_bytes(spec, {64, 256}, at::kFloat), 64 * 8 * 18);
  at::manual_seed(5);
  const at::Tensor w = at::randn({4, 64});
  mq::QuantizedTensor q;
  q.spec = spec;
  q.shape = {4, 64};
  q.data = mq::blocks::quantize(w, spec.dtype);
  EXPECT_EQ(q.nbytes(), q.data.numel());
  EXPECT_TRUE(at::equal(q.dequantize(), mq::blocks::dequantize(q.data, spec.dtype, 64)));
}

}  // namespace
