#include <gtest/gtest.h>

#include "test_support.hpp"
#include "validator_support.hpp"

namespace {

std::unique_ptr<mq::Validator> range(double max_abs = INFINITY) {
  return mq::test::make_plugin<mq::Validator>({mq::test::opt("max_abs", mq::Value::floating(max_abs))});
}

mq::QuantSpec int4() {
  mq::QuantSpec s;
  s.dtype = mq::DType::kInt4;
  s.granularity = mq::Granularity::kPerGroup;
  s.group_size = 8;
  return s;
}

std::string failure(const mq::test::ModelPair& m, double max_abs = INFINITY) {
  mq::test::FakeFormat format;
  const mq::Check c = m.validate(*range(max_abs), format);
  return c.passed ? "passed" : c.message;
}

TEST(RangeValidator, PassesWhatTheQuantizerProduces) {
  EXPECT_EQ(failure(mq::test::ModelPair()), "passed");
  EXPECT_EQ(failure(mq::test::ModelPair(int4())), "passed");
  mq::QuantSpec fp16;
  fp16.dtype = mq::DType::kFloat16;
  EXPECT_EQ(failure(mq::test::ModelPair(fp16)), "passed");
}

TEST(RangeValidator, CatchesACorruptedScale) {
  mq::test::ModelPair m;
  m.quantized.entries[0].quantized->qparams.scale[3] = -1.0f;
  EXPECT_NE(failure(m).find("fc.weight has a scale that is not finite and positive"), std::string::npos);
  m.quantized.entries[0].quantized->qparams.scale[3] = NAN;
  EXPECT_NE(failure(m).find("not finite and positive"), std::string::npos);
}

TEST(RangeValidator, CatchesAnOutOfRangeInt4) {
  mq::test::ModelPair m(int4());
  m.quantized.entries[0].quantized->data[0][0] = 9;
  EXPECT_EQ(failure(m), "fc.weight has integers in [-8, 9], outside [-8, 7]");
}

TEST(RangeValidator, CatchesAnFp16OverflowNamingTheTensor) {
  mq::QuantSpec fp16;
  fp16.dtype = mq::DType::kFloat16;
  mq::test::ModelPair m(fp16, at::full({2, 2}, 1e5f));
  EXPECT_NE(failure(m).find("fc.weight overflows fp16"), std::string::npos) << failure(m);
}

// A cast keeps the original's NaN and inf: the artifact fails, but not as an overflow.
TEST(RangeValidator, SaysANonFiniteCastComesFromTheOriginal) {
  mq::QuantSpec fp16;
  fp16.dtype = mq::DType::kFloat16;
  mq::test::ModelPair m(fp16, at::tensor({1.0f, NAN, 2.0f, 3.0f}).view({2, 2}));
  EXPECT_EQ(failure(m), "fc.weight holds NaN or infinite values, as the original does");
}

// A NaN in a weight (a damaged checkpoint) is stored as the lowest integer: the artifact
// reads finite, and only the original says what happened.
TEST(RangeValidator, CatchesNaNInTheOriginalOfAnIntegerTensor) {
  at::Tensor w = at::randn({8, 16});
  w[2][3] = NAN;
  const mq::test::ModelPair m(mq::QuantSpec{}, w);
  EXPECT_EQ(m.quantized.entries[0].quantized->data[2][3].item<int>(), -128);
  EXPECT_EQ(failure(m), "fc.weight: the original holds NaN, stored as the lowest integer");
  EXPECT_EQ(failure(mq::test::ModelPair(int4(), w)), failure(m));
}

TEST(RangeValidator, CatchesValuesOutsideTheOriginalRangeAndMaxAbs) {
  mq::test::ModelPair m;
  m.quantized.entries[0].quantized->qparams.scale.mul_(3);  // consistent, but far too wide
  EXPECT_NE(failure(m).find("outside the original"), std::string::npos) << failure(m);
  EXPECT_NE(failure(mq::test::ModelPair(), 0.5).find("above max_abs 0.5"), std::string::npos);
}

// Originals are read through the model's format where it can (Model::read_into): the
// range is what it reads.
TEST(RangeValidator, ComparesWithWhatTheFormatReads) {
  mq::test::ModelPair m;
  mq::test::read_originals_as(m.original, [](const at::Tensor& t) { return t * 0.01; });
  EXPECT_NE(failure(m).find("fc.weight dequantizes to"), std::string::npos) << failure(m);
}

TEST(RangeValidator, CatchesNonFiniteFloatTensors) {
  mq::test::ModelPair m;
  m.quantized.entries[1].tensor = at::full({8}, NAN);
  EXPECT_EQ(failure(m), "fc.bias holds NaN or infinite values");
}

}  // namespace
