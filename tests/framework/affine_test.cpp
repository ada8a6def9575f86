#include "mq/affine.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <limits>

#include "mq/error.hpp"

namespace {

mq::QuantSpec spec(mq::DType dtype, mq::Granularity g, mq::Scheme s, bool reduce = false) {
  mq::QuantSpec q;
  q.dtype = dtype;
  q.granularity = g;
  q.scheme = s;
  q.reduce_range = reduce;
  return q;
}

// PyTorch's own quantization of `x` with our qparams, as integers.
at::Tensor torch_quantize(const at::Tensor& x, const mq::QParams& qp, const mq::QuantSpec& s) {
  const auto dtype = s.qmin() < 0 ? at::kQInt8 : at::kQUInt8;
  if (s.granularity == mq::Granularity::kPerTensor)
    return at::quantize_per_tensor(x, qp.scale.item<float>(), qp.zero_point.item<int>(), dtype)
        .int_repr();
  return at::quantize_per_channel(x, qp.scale.to(at::kDouble), qp.zero_point.to(at::kLong), s.axis,
                                  dtype)
      .int_repr();
}

TEST(Affine, MatchesTorchQuantizeAndTheReferenceKernel) {
  for (auto dtype : {mq::DType::kInt8, mq::DType::kUInt8})
    for (auto granularity : {mq::Granularity::kPerTensor, mq::Granularity::kPerChannel})
      for (auto scheme : {mq::Scheme::kSymmetric, mq::Scheme::kAsymmetric}) {
        at::manual_seed(7);
        for (const auto& x : {at::randn({64, 33}) * 3, at::randn({16, 256}).abs() + 0.1,
                              -at::rand({8, 5}), at::zeros({4, 4}), at::full({3, 7}, 2.5f),
                              at::randn({1, 1}), at::randn({5, 3, 2, 2}) * 1e4}) {
          for (bool reduce : {false, true}) {
            const mq::QuantSpec s = spec(dtype, granularity, scheme, reduce);
            SCOPED_TRACE(s.to_string());
            auto [mn, mx] = mq::min_max(x, s);
            auto [rmn, rmx] = mq::min_max_ref(x, s);
            ASSERT_TRUE(at::equal(mn, rmn));
            ASSERT_TRUE(at::equal(mx, rmx));
            const mq::QParams qp = mq::qparams_from_min_max(mn, mx, s);
            const mq::QuantizedTensor fast = mq::quantize(x, qp, s);
            ASSERT_TRUE(at::equal(fast.data, mq::quantize_ref(x, qp, s).data));
            ASSERT_TRUE(at::equal(fast.data, torch_quantize(x, qp, s)));
            if (!reduce) {  // PyTorch's reduce_range only narrows the fit, not the clamp
              EXPECT_TRUE(at::all(fast.data.to(at::kInt) >= s.qmin()).item<bool>());
              EXPECT_TRUE(at::all(fast.data.to(at::kInt) <= s.qmax()).item<bool>());
            }
          }
        }
      }
}

TEST(Affine, GroupWiseKernelsMatchTheirReferenceAndStayInRange) {
  at::manual_seed(9);
  const at::Tensor x = at::randn({7, 50}) * 2;
  for (auto dtype : {mq::DType::kInt4, mq::DType::kUInt4, mq::DType::kInt8})
    for (auto scheme : {mq::Scheme::kSymmetric, mq::Scheme::kAsymmetric}) {
      mq::QuantSpec s = spec(dtype, mq::Granularity::kPerGroup, scheme);
      s.group_size = 16;  // 50 = 3 * 16 + 2: a partial last group
      SCOPED_TRACE(s.to_string());
      auto [mn, mx] = mq::min_max(x, s);
      auto [rmn, rmx] = mq::min_max_ref(x, s);
      ASSERT_EQ(mn.sizes(), (at::IntArrayRef{7, 4}));
      ASSERT_TRUE(at::equal(mn, rmn) && at::equal(mx, rmx));
      EXPECT_EQ(mx[0][3].item<float>(), x[0].narrow(0, 48, 2).max().item<float>());
      const mq::QParams qp = mq::qparams_from_min_max(mn, mx, s);
      const mq::QuantizedTensor q = mq::quantize(x, qp, s);
      ASSERT_TRUE(at::equal(q.data, mq::quantize_ref(x, qp, s).data));
      EXPECT_TRUE(at::all(q.data.to(at::kInt) >= s.qmin()).item<bool>());
      EXPECT_TRUE(at::all(q.data.to(at::kInt) <= s.qmax()).item<bool>());
      // Each value within half a step of its group's scale.
      const at::Tensor step = qp.scale.repeat_interleave(16, 1).narrow(1, 0, 50);
      EXPECT_TRUE(at::all((q.dequantize() - x).abs() <= step * 0.5001f).item<bool>());
    }
}

TEST(Affine, RoundsHalfToEvenLikeTorch) {
  const at::Tensor x = at::arange(-300, 300, at::kFloat) * 0.5f;
  const mq::QuantSpec s = spec(mq::DType::kInt8, mq::Granularity::kPerTensor, mq::Scheme::kAsymmetric);
  const mq::QParams qp{at::ones({1}), at::full({1}, 3, at::kInt)};
  EXPECT_TRUE(at::equal(mq::quantize(x, qp, s).data, torch_quantize(x, qp, s)));
  EXPECT_TRUE(at::equal(mq::quantize_ref(x, qp, s).data, torch_quantize(x, qp, s)));
}

TEST(Affine, SymmetricQParamsFollowPyTorch) {
  const mq::QuantSpec s = spec(mq::DType::kInt8, mq::Granularity::kPerTensor, mq::Scheme::kSymmetric);
  const mq::QParams qp = mq::qparams_from_min_max(at::full({1}, -2.0f), at::full({1}, 1.0f), s);
  EXPECT_FLOAT_EQ(qp.scale.item<float>(), 2.0f / 127.5f);
  EXPECT_EQ(qp.zero_point.item<int>(), 0);
  const mq::QuantSpec u = spec(mq::DType::kUInt8, mq::Granularity::kPerTensor, mq::Scheme::kSymmetric, true);
  const mq::QParams uq = mq::qparams_from_min_max(at::full({1}, -2.0f), at::full({1}, 1.0f), u);
  EXPECT_FLOAT_EQ(uq.scale.item<float>(), 2.0f / 63.5f);
  EXPECT_EQ(uq.zero_point.item<int>(), 128);  // PyTorch keeps 128 under reduce_range
}

TEST(Affine, AffineQParamsIncludeZeroAndClampTheZeroPoint) {
  const mq::QuantSpec s = spec(mq::DType::kUInt8, mq::Granularity::kPerTensor, mq::Scheme::kAsymmetric);
  const mq::QParams qp = mq::qparams_from_min_max(at::full({1}, 1.0f), at::full({1}, 3.0f), s);
  EXPECT_FLOAT_EQ(qp.scale.item<float>(), 3.0f / 255.0f);  // range widened to [0, 3]
  EXPECT_EQ(qp.zero_point.item<int>(), 0);
}

TEST(Affine, ConstantZeroTensorGetsEpsScale) {
  const mq::QuantSpec s = spec(mq::DType::kInt8, mq::Granularity::kPerChannel, mq::Scheme::kSymmetric);
  const at::Tensor x = at::zeros({3, 4});
  auto [mn, mx] = mq::min_max(x, s);
  const mq::QParams qp = mq::qparams_from_min_max(mn, mx, s);
  EXPECT_TRUE(at::all(qp.scale == mq::kScaleEps).item<bool>());
  EXPECT_TRUE(at::all(mq::quantize(x, qp, s).data == 0).item<bool>());
}

TEST(Affine, NothingObservedGivesUnitScale) {
  const float inf = std::numeric_limits<float>::infinity();
  const mq::QuantSpec s = spec(mq::DType::kInt8, mq::Granularity::kPerTensor, mq::Scheme::kSymmetric);
  const mq::QParams qp = mq::qparams_from_min_max(at::full({1}, inf), at::full({1}, -inf), s);
  EXPECT_FLOAT_EQ(qp.scale.item<float>(), 1.0f);
  EXPECT_EQ(qp.zero_point.item<int>(), 0);
}

TEST(Affine, NonFiniteInputsSaturate) {
  const float inf = std::numeric_limits<float>::infinity();
  const at::Tensor x = at::tensor({inf, -inf, std::numeric_limits<float>::quiet_NaN(), 1.0f});
  const mq::QuantSpec s = spec(mq::DType::kInt8, mq::Granularity::kPerTensor, mq::Scheme::kSymmetric);
  const mq::QParams qp{at::ones({1}), at::zeros({1}, at::kInt)};
  const at::Tensor q = mq::quantize(x, qp, s).data;
  EXPECT_TRUE(at::equal(q, mq::quantize_ref(x, qp, s).data));
  EXPECT_EQ(q[0].item<int>(), 127);
  EXPECT_EQ(q[1].item<int>(), -128);
  EXPECT_EQ(q[2].item<int>(), -128);
}

TEST(Affine, DequantizeInvertsWithinHalfAStep) {
  at::manual_seed(1);
  const at::Tensor x = at::randn({32, 64});
  const mq::QuantSpec s = spec(mq::DType::kInt8, mq::Granularity::kPerChannel, mq::Scheme::kAsymmetric);
  auto [mn, mx] = mq::min_max(x, s);
  const mq::QuantizedTensor q = mq::quantize(x, mq::qparams_from_min_max(mn, mx, s), s);
  const at::Tensor err = (q.dequantize() - x).abs();
  const at::Tensor half_step = q.qparams.scale.unsqueeze(1) * 0.5001f;
  EXPECT_TRUE(at::all(err <= half_step).item<bool>());
  EXPECT_EQ(q.nbytes(), 32 * 64 + 32 * 4 + 32);
}

TEST(Affine, PerGroupIsRefusedNotGuessed) {
  mq::QuantSpec s = spec(mq::DType::kInt8, mq::Granularity::kPerGroup, mq::Scheme::kSymmetric);
  EXPECT_THROW(mq::quantize(at::ones({2, 2}), {at::ones({1}), at::zeros({1}, at::kInt)}, s), std::exception);
}

void expect_same(const mq::QuantizedTensor& a, const mq::QuantizedTensor& b) {
  ASSERT_TRUE(at::equal(a.data, b.data));
  ASSERT_TRUE(at::equal(a.qparams.scale, b.qparams.scale));
  ASSERT_TRUE(at::equal(a.qparams.zero_point, b.qparams.zero_point));
  EXPECT_EQ(a.shape, b.shape);
  EXPECT_EQ(a.original_dtype, b.original_dtype);
}

// The one-pass kernel against its composed reference, for every path it takes: fused
// spans (per channel on axis 0, per group with a partial group), pieces of long spans
// (per tensor, rows longer than a piece), shared parameters (per channel on axis 1),
// and input widened from bf16/fp16 or converted from double.
TEST(Affine, OnePassMinMaxQuantizeMatchesTheComposedReference) {
  at::manual_seed(11);
  at::Tensor x = at::randn({6, 70001}) * 3;
  x[2][5] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<at::Tensor> inputs = {at::randn({64, 300}), at::randn({5, 3, 4}) - 2, x,
                                          at::zeros({3, 130}), at::randn({1, 7}), at::randn({3, 0}),
                                          at::randn({0, 5})};
  for (const at::Tensor& base : inputs)
    for (auto in_dtype : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble})
      for (auto dtype : {mq::DType::kInt8, mq::DType::kUInt8, mq::DType::kInt4, mq::DType::kUInt4})
        for (auto g : {mq::Granularity::kPerTensor, mq::Granularity::kPerChannel, mq::Granularity::kPerGroup})
          for (auto scheme : {mq::Scheme::kSymmetric, mq::Scheme::kAsymmetric})
            for (int64_t axis : {0, 1}) {
              mq::QuantSpec s = spec(dtype, g, scheme);
              s.axis = axis;
              s.group_size = 128;
              if (axis == 1 && g != mq::Granularity::kPerChannel) continue;
              const at::Tensor input = base.to(in_dtype);
              SCOPED_TRACE(s.to_string() + " axis " + std::to_string(axis) + " " +
                           c10::toString(in_dtype) + " " + std::to_string(base.numel()));
              expect_same(mq::quantize_min_max(input, s), mq::quantize_min_max_ref(input, s));
            }
}

// float16 input is widened by F16C where the CPU has it, by c10's bit algorithm where
// not: every finite float16 (subnormals included), in rows of neighbouring bit patterns,
// quantizes as ATen's conversion to float32 gives it.
TEST(Affine, EveryFiniteFloat16IsWidenedExactly) {
  at::Tensor bits = at::arange(0, 65536, at::kInt);
  bits = bits.masked_select((bits & 0x7c00) != 0x7c00).to(at::kShort);  // no infinities or NaN
  const at::Tensor half = bits.view(at::kHalf).reshape({-1, 1024});
  for (auto g : {mq::Granularity::kPerChannel, mq::Granularity::kPerGroup, mq::Granularity::kPerTensor}) {
    SCOPED_TRACE(static_cast<int>(g));
    const mq::QuantSpec s = spec(mq::DType::kInt8, g, mq::Scheme::kAsymmetric);
    expect_same(mq::quantize_min_max(half, s), mq::quantize_min_max_ref(half, s));
  }
}

// Rows of sixteen or more whole groups take the kernel's sixteen-at-a-time min/max
// (lanes folded across groups); the rest of a row the one-group path. NaN in a group,
// extremes in every lane position, partial last groups.
TEST(Affine, OnePassGroupsSixteenAtATimeMatchTheReference) {
  at::manual_seed(14);
  at::Tensor x = at::randn({7, 1040}) * 2;
  x[1][40] = std::numeric_limits<float>::quiet_NaN();
  x[3][17] = 50.0f;
  x[4][1039] = -60.0f;
  for (int64_t group : {16, 32, 64, 128})
    for (auto dtype : {mq::DType::kInt4, mq::DType::kUInt8})
      for (auto scheme : {mq::Scheme::kSymmetric, mq::Scheme::kAsymmetric})
        for (auto in_dtype : {at::kFloat, at::kBFloat16}) {
          mq::QuantSpec s = spec(dtype, mq::Granularity::kPerGroup, scheme);
          s.group_size = group;
          SCOPED_TRACE(s.to_string() + " " + c10::toString(in_dtype));
          expect_same(mq::quantize_min_max(x.to(in_dtype), s), mq::quantize_min_max_ref(x.to(in_dtype), s));
        }
}

TEST(Affine, OnePassMinMaxQuantizeEqualsTheApiItFuses) {
  at::manual_seed(12);
  const at::Tensor x = at::randn({33, 515});
  mq::QuantSpec s = spec(mq::DType::kInt4, mq::Granularity::kPerGroup, mq::Scheme::kAsymmetric);
  s.group_size = 64;
  auto [mn, mx] = mq::min_max(x, s);
  const mq::QParams qp = mq::qparams_from_min_max(mn, mx, s, 1e-5f);
  expect_same(mq::quantize_min_max(x, s, 1e-5f), mq::quantize(x, qp, s));
}

TEST(Affine, OnePassResultsDoNotDependOnThreads) {
  at::manual_seed(13);
  const at::Tensor x = at::randn({257, 1031});
  const mq::QuantSpec s = spec(mq::DType::kInt8, mq::Granularity::kPerChannel, mq::Scheme::kSymmetric);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const mq::QuantizedTensor one = mq::quantize_min_max(x, s);
  at::set_num_threads(2);
  const mq::QuantizedTensor two = mq::quantize_min_max(x, s);
  at::set_num_threads(threads);
  expect_same(one, two);
}

TEST(Affine, OnePassWritesIntoAGivenBufferAndRefusesAWrongOne) {
  const at::Tensor x = at::randn({8, 16});
  const mq::QuantSpec s = spec(mq::DType::kInt8, mq::Granularity::kPerChannel, mq::Scheme::kSymmetric);
  at::Tensor buffer = at::empty({128}, at::kChar);
  const mq::QuantizedTensor q = mq::quantize_min_max(x, s, mq::kScaleEps, buffer);
  EXPECT_EQ(q.data.data_ptr(), buffer.data_ptr());
  EXPECT_EQ(q.data.sizes(), x.sizes());
  expect_same(q, mq::quantize_min_max_ref(x, s));
  EXPECT_THROW(mq::quantize_min_max(x, s, mq::kScaleEps, at::empty({128}, at::kByte)), mq::RecipeError);
  EXPECT_THROW(mq::quantize_min_max(x, s, mq::kScaleEps, at::empty({127}, at::kChar)), mq::RecipeError);
}

TEST(Affine, OnePassRefusesInfRatherThanStoringAnInfiniteScale) {
  const mq::QuantSpec s = spec(mq::DType::kInt8, mq::Granularity::kPerChannel, mq::Scheme::kSymmetric);
  at::Tensor x = at::ones({4, 4});
  x[1][2] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(mq::quantize_min_max(x, s), mq::InputError);
  EXPECT_THROW(mq::quantize_min_max_ref(x, s), mq::InputError);
}

// dequantize() gives its oracle's values bit for bit, and compare_dequantized() sees
// them, for every kind of quantized tensor: the same extremes, and the sums within
// rounding of the float tensors' own.
TEST(Affine, DequantizeAndCompareDequantizedMatchTheOracle) {
  at::manual_seed(9);
  const at::Tensor x = at::randn({33, 300}) * 3;
  std::vector<std::pair<at::Tensor, mq::QuantizedTensor>> cases;
  for (const auto& s : {spec(mq::DType::kInt8, mq::Granularity::kPerChannel, mq::Scheme::kSymmetric),
                        spec(mq::DType::kUInt8, mq::Granularity::kPerTensor, mq::Scheme::kAsymmetric),
                        spec(mq::DType::kInt4, mq::Granularity::kPerGroup, mq::Scheme::kSymmetric),
                        spec(mq::DType::kUInt4, mq::Granularity::kPerGroup, mq::Scheme::kAsymmetric)})
    for (const at::Tensor& input : {x, x.to(at::kBFloat16)}) cases.push_back({input, mq::quantize_min_max(input, s)});
  mq::QuantSpec columns = spec(mq::DType::kInt8, mq::Granularity::kPerChannel, mq::Scheme::kAsymmetric);
  columns.axis = 1;
  cases.push_back({x, mq::quantize_min_max(x, columns)});
  mq::QuantizedTensor half;  // a float cast, overflowing
  half.spec.dtype = mq::DType::kFloat16;
  half.data = (x * 3e4).to(at::kHalf);
  half.shape = x.sizes().vec();
  cases.push_back({x * 3e4, half});
  for (const auto& [original, q] : cases) {
    SCOPED_TRACE(q.spec.to_string() + " from " + std::string(c10::toString(original.scalar_type())));
    const at::Tensor hat = q.dequantize();
    EXPECT_TRUE(at::equal(hat, mq::dequantize_ref(q)));
    const at::Tensor finite = hat.masked_fill(~at::isfinite(hat), 0);
    const mq::DequantizedComparison c = mq::compare_dequantized(original, q);
    const at::Tensor xd = original.to(at::kDouble);
    EXPECT_EQ(c.non_finite, (~at::isfinite(hat)).sum().item<int64_t>());
    if (c.non_finite) {
      EXPECT_TRUE(std::isinf(c.noise));
      continue;
    }
    EXPECT_EQ(c.min, hat.min().item<float>());
    EXPECT_EQ(c.max, hat.max().item<float>());
    EXPECT_NEAR(c.signal, xd.pow(2).sum().item<double>(), 1e-9 * c.signal);
    const double noise = (xd - finite.to(at::kDouble)).pow(2).sum().item<double>();
    EXPECT_NEAR(c.noise, noise, 1e-9 * noise);
  }
  EXPECT_THROW(mq::compare_dequantized(x.t(), cases[0].second), mq::InputError);
}

// x w^T summed as linear() states its order, element by element: lane j takes the
// elements j mod 16 of the whole sixteens, the lanes are added in order, then the tail.
at::Tensor linear_in_order(const at::Tensor& x, const at::Tensor& w) {
  const at::Tensor a = x.contiguous(), b = w.to(at::kFloat).contiguous();
  const int64_t m = a.size(0), n = b.size(0), k = a.size(1), whole = k / 16 * 16;
  at::Tensor y = at::empty({m, n});
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const float* u = a.data_ptr<float>() + i * k;
      const float* v = b.data_ptr<float>() + j * k;
      float lanes[16] = {};
      for (int64_t t = 0; t < whole; ++t) {
        const float product = u[t] * v[t];
        lanes[t % 16] += product;
      }
      float sum = 0;
      for (float lane : lanes) sum += lane;
      for (int64_t t = whole; t < k; ++t) {
        const float product = u[t] * v[t];
        sum += product;
      }
      y[i][j] = sum;
    }
  return y;
}

TEST(Affine, LinearSumsInItsStatedOrderForEveryWeightKind) {
  at::manual_seed(21);
  for (const int64_t k : {1, 16, 37, 300})
    for (const int64_t m : {1, 8, 11}) {
      SCOPED_TRACE("k " + std::to_string(k) + ", m " + std::to_string(m));
      const at::Tensor x = at::randn({m, k}), w = at::randn({40, k});  // 40 rows: three blocks of 16
      for (const at::Tensor& weight : {w, w.to(at::kBFloat16), w.to(at::kHalf)}) {
        const at::Tensor y = mq::linear(x, weight);
        EXPECT_TRUE(at::equal(y, linear_in_order(x, weight)));
        EXPECT_TRUE(at::allclose(y, at::matmul(x, weight.to(at::kFloat).t()), 1e-4, 1e-4));
      }
      std::vector<mq::QuantSpec> specs = {
          spec(mq::DType::kInt8, mq::Granularity::kPerTensor, mq::Scheme::kSymmetric),
          spec(mq::DType::kInt8, mq::Granularity::kPerChannel, mq::Scheme::kSymmetric),
          spec(mq::DType::kUInt8, mq::Granularity::kPerChannel, mq::Scheme::kAsymmetric),
          spec(mq::DType::kInt4, mq::Granularity::kPerGroup, mq::Scheme::kSymmetric),
          spec(mq::DType::kUInt4, mq::Granularity::kPerGroup, mq::Scheme::kAsymmetric)};
      specs.push_back(specs[2]);
      specs.back().axis = 1;  // a scale per column
      for (mq::QuantSpec& s : specs) {
        s.group_size = 16;  // k = 37, 300: partial last groups
        SCOPED_TRACE(s.to_string());
        const mq::QuantizedTensor q = mq::quantize_min_max(w, s);
        EXPECT_TRUE(at::equal(mq::linear(x, q), linear_in_order(x, q.dequantize())));
      }
      mq::QuantizedTensor half;
      half.spec.dtype = mq::DType::kFloat16;
      half.data = w.to(at::kHalf);
      half.shape = w.sizes().vec();
      EXPECT_TRUE(at::equal(mq::linear(x, half), linear_in_order(x, half.data)));
    }
}

TEST(Affine, LinearDoesNotDependOnThreadsAndRefusesAMismatch) {
  at::manual_seed(22);
  const at::Tensor x = at::randn({9, 1031}), w = at::randn({100, 1031});
  const mq::QuantizedTensor q =
      mq::quantize_min_max(w, spec(mq::DType::kInt8, mq::Granularity::kPerChannel, mq::Scheme::kSymmetric));
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor one = mq::linear(x, w), one_q = mq::linear(x, q);
  at::set_num_threads(2);
  const at::Tensor two = mq::linear(x, w), two_q = mq::linear(x, q);
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(one, two));
  EXPECT_TRUE(at::equal(one_q, two_q));
  EXPECT_THROW(mq::linear(x.narrow(1, 0, 1000), w), mq::InputError);
  EXPECT_THROW(mq::linear(x, w.reshape({-1})), mq::InputError);
}

// A tensor whose groups are not runs of columns (GPTQ's activation order "group"):
// every column takes the scale and zero point of the group g_idx gives it, in
// dequantize(), its oracle, compare_dequantized() and linear() alike.
TEST(Affine, AGroupIndexGivesEachColumnItsGroupsQParams) {
  at::manual_seed(23);
  const at::Tensor w = at::randn({6, 37}), x = at::randn({3, 37});
  mq::QuantSpec s = spec(mq::DType::kUInt4, mq::Granularity::kPerGroup, mq::Scheme::kAsymmetric);
  s.group_size = 16;  // three groups, the last of 5 columns
  const at::Tensor order = at::randperm(37, at::kLong);
  const mq::QuantizedTensor ordered = mq::quantize_min_max(w.index_select(1, order), s);
  const mq::QuantizedTensor q = mq::with_group_index(ordered, order);
  ASSERT_TRUE(q.g_idx.defined());
  EXPECT_EQ(q.g_idx.scalar_type(), at::kInt);
  at::Tensor expected = at::empty({6, 37});
  for (int64_t c = 0; c < 37; ++c) {
    const int64_t g = q.g_idx[c].item<int64_t>();
    EXPECT_EQ(g, at::argsort(order)[c].item<int64_t>() / 16);
    const at::Tensor column = q.data.select(1, c).to(at::kFloat);
    expected.select(1, c).copy_((column - q.qparams.zero_point.select(1, g)) * q.qparams.scale.select(1, g));
  }
  EXPECT_TRUE(at::equal(q.dequantize(), expected));
  EXPECT_TRUE(at::allclose(mq::dequantize_ref(q), expected));
  EXPECT_TRUE(at::equal(ordered.dequantize(), expected.index_select(1, order)));
  const at::Tensor by_group = mq::group_order(q);  // the columns, group by group
  EXPECT_TRUE(at::equal(q.g_idx.to(at::kLong).index_select(0, by_group), at::div(at::arange(37), 16, "floor")));
  const mq::DequantizedComparison c = mq::compare_dequantized(w, q);
  const double noise = (w.to(at::kDouble) - expected.to(at::kDouble)).pow(2).sum().item<double>();
  EXPECT_NEAR(c.noise, noise, 1e-9 * noise);
  EXPECT_TRUE(at::allclose(mq::linear(x, q), x.mm(expected.t()), 1e-5, 1e-5));
  EXPECT_EQ(q.nbytes(), ordered.nbytes() + 37 * 4);

  // A g_idx that does not give each group its columns (or fit the tensor) is refused.
  mq::QuantizedTensor bad = q;
  bad.g_idx = q.g_idx.clone();
  bad.g_idx[0] = (q.g_idx[0].item<int>() + 1) % 3;
  EXPECT_THROW(bad.dequantize(), mq::InputError);
  bad.g_idx = q.g_idx.narrow(0, 0, 36);
  EXPECT_THROW(mq::compare_dequantized(w, bad), mq::InputError);
  bad.g_idx = q.g_idx.to(at::kFloat);
  EXPECT_THROW(mq::linear(x, bad), mq::InputError);
}

}  // namespace
