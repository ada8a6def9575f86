#include <gtest/gtest.h>

#include <cmath>

#include "mq/error.hpp"
#include "test_support.hpp"
#include "validator_support.hpp"

namespace {

using mq::test::opt;

std::unique_ptr<mq::Validator> sqnr(double min_db = -INFINITY, double min_layer_db = -INFINITY) {
  return mq::test::make_plugin<mq::Validator>(
      {opt("min_db", mq::Value::floating(min_db)), opt("min_layer_db", mq::Value::floating(min_layer_db))});
}

double metric(const mq::Check& c, const std::string& name) {
  for (const auto& [n, v] : c.metrics)
    if (n == name) return v;
  return NAN;
}

TEST(SqnrValidator, ComputesTheDefinitionPerTensorAndForTheModel) {
  mq::test::ModelPair m;
  mq::test::FakeFormat format;
  const mq::Check c = m.validate(*sqnr(), format);
  const at::Tensor x = m.original.tensors[0].tensor.to(at::kDouble);
  const at::Tensor y = m.quantized.entries[0].quantized->dequantize().to(at::kDouble);
  const double expected = 10 * std::log10(x.pow(2).mean().item<double>() / (x - y).pow(2).mean().item<double>());
  EXPECT_TRUE(c.passed);
  EXPECT_NEAR(metric(c, "mean_db"), expected, 1e-9);
  EXPECT_NEAR(metric(c, "worst_db"), expected, 1e-9);
  ASSERT_EQ(c.tensor_metrics.size(), 1u);
  EXPECT_EQ(c.tensor_metrics[0].tensor, "fc.weight");
  EXPECT_GT(expected, 35);  // int8 per-channel on a Gaussian
}

// The output SQNR runs both models on the model's input, the artifact as the runner
// loaded it; an artifact that fails where the original runs fails the check.
TEST(SqnrValidator, OutputSqnrOnTheModelInput) {
  mq::test::ModelPair m;
  auto original = std::make_shared<mq::test::FakeRunnable>();
  auto written = std::make_shared<mq::test::FakeRunnable>();
  written->fn = [](const at::Tensor& x) { return x * 1.01; };
  m.original.runnable = original;
  mq::test::FakeFormat format;
  const at::Tensor input = at::randn({4, 3});
  mq::Check c = m.validate(*sqnr(), format, false, {}, input, written);
  EXPECT_TRUE(c.passed) << c.message;
  EXPECT_TRUE(written->last_input.is_same(input));
  EXPECT_NEAR(metric(c, "output_sqnr_db"), 40.0, 1e-4);  // x * 1.01 in float
  written->fn = [](const at::Tensor&) -> at::Tensor { throw mq::InputError("no kernel for this"); };
  c = m.validate(*sqnr(), format, false, {}, input, written);
  EXPECT_FALSE(c.passed);
  EXPECT_EQ(c.message, "the written model fails where the original runs: no kernel for this");
}

TEST(SqnrValidator, FailsBelowMinDbNamingTheWorstTensor) {
  mq::test::ModelPair m;
  mq::test::FakeFormat format;
  const mq::Check c = m.validate(*sqnr(80), format);
  EXPECT_FALSE(c.passed);
  EXPECT_NE(c.message.find("below min_db 80.00 dB; worst tensor fc.weight"), std::string::npos) << c.message;
  const mq::Check layer = m.validate(*sqnr(-INFINITY, 80), format);
  EXPECT_FALSE(layer.passed);
  EXPECT_NE(layer.message.find("tensor fc.weight has SQNR"), std::string::npos) << layer.message;
}

TEST(SqnrValidator, AllZeroTensorIsExactSoInfinite) {
  mq::test::ModelPair m({}, at::zeros({4, 4}));
  mq::test::FakeFormat format;
  const mq::Check c = m.validate(*sqnr(100, 100), format);
  EXPECT_TRUE(c.passed) << c.message;
  EXPECT_TRUE(std::isinf(metric(c, "mean_db")) && metric(c, "mean_db") > 0);
}

// A tensor with no elements (a [0, 16] weight) loses nothing; it used to be 0/0, NaN,
// so -inf dB, which failed any min_db for the whole model.
TEST(SqnrValidator, EmptyTensorIsExact) {
  mq::test::ModelPair m({}, at::zeros({0, 16}));
  mq::test::FakeFormat format;
  const mq::Check c = m.validate(*sqnr(100, 100), format);
  EXPECT_TRUE(c.passed) << c.message;
  EXPECT_TRUE(std::isinf(metric(c, "worst_db")) && metric(c, "worst_db") > 0);
}

// Originals are read through the model's format where it can (Model::read_into, not
// faulted in from a mapping): what it reads is what is compared.
TEST(SqnrValidator, ComparesWhatTheFormatReads) {
  mq::test::ModelPair m;
  const at::Tensor x_hat = m.quantized.entries[0].quantized->dequantize();
  mq::test::read_originals_as(m.original, [&](const at::Tensor&) { return x_hat; });
  mq::test::FakeFormat format;
  const mq::Check c = m.validate(*sqnr(), format);
  EXPECT_TRUE(std::isinf(metric(c, "worst_db")) && metric(c, "worst_db") > 0) << c.message;
}

TEST(SqnrValidator, ZeroSignalWithNoiseIsMinusInfinite) {
  mq::test::ModelPair m({}, at::zeros({4, 4}));
  m.quantized.entries[0].quantized->data.fill_(3);  // noise where the signal is 0
  m.quantized.entries[0].quantized->qparams.scale.fill_(1.0f);
  mq::test::FakeFormat format;
  const mq::Check c = m.validate(*sqnr(), format);
  EXPECT_TRUE(std::isinf(metric(c, "worst_db")) && metric(c, "worst_db") < 0);
  EXPECT_FALSE(m.validate(*sqnr(-1000), format).passed);
}

}  // namespace
