#include <gtest/gtest.h>

#include "mq/error.hpp"
#include "test_support.hpp"
#include "validator_support.hpp"

namespace {

mq::Check load_run(const mq::test::ModelPair& m, std::function<mq::QuantizedModel()> read_back) {
  mq::test::FakeFormat format;
  format.read_back = std::move(read_back);
  return m.validate(*mq::test::make_plugin<mq::Validator>(), format);
}

TEST(LoadRunValidator, PassesWhenTheFileReadsBackAsWrittenAndRuns) {
  mq::test::ModelPair m;
  const mq::Check c = load_run(m, [&] { return m.quantized; });
  EXPECT_TRUE(c.passed) << c.message;
  EXPECT_EQ(c.message, "read back 2 tensors bit-exactly; ran 1 layer matmuls (batch 8), outputs finite");
  ASSERT_EQ(c.tensor_metrics.size(), 1u);
  EXPECT_GT(c.tensor_metrics[0].value, 30);  // output SQNR of the layer
}

// The layer's reference output comes from the original as the model's format reads it
// (Model::read_into): an all-zero reference has no output SQNR to give.
TEST(LoadRunValidator, RunsTheOriginalTheFormatReads) {
  mq::test::ModelPair m;
  mq::test::read_originals_as(m.original, [](const at::Tensor& t) { return at::zeros_like(t); });
  const mq::Check c = load_run(m, [&] { return m.quantized; });
  EXPECT_TRUE(c.passed) << c.message;
  EXPECT_TRUE(c.tensor_metrics.empty());
}

TEST(LoadRunValidator, FailsOnATruncatedFile) {
  mq::test::ModelPair m;
  const mq::Check c = load_run(m, []() -> mq::QuantizedModel {
    throw mq::InputError("out.safetensors: the tensors cover 800 bytes but the data buffer has 700");
  });
  EXPECT_FALSE(c.passed);
  EXPECT_EQ(c.message, "cannot read the written file back: out.safetensors: the tensors cover 800 bytes but the data buffer has 700");
}

TEST(LoadRunValidator, FailsOnAnyBitThatDiffers) {
  mq::test::ModelPair m;
  mq::QuantizedModel changed = m.quantized;
  changed.entries[0].quantized = *m.quantized.entries[0].quantized;
  changed.entries[0].quantized->data = changed.entries[0].quantized->data.clone();
  changed.entries[0].quantized->data[0][0] += 1;
  EXPECT_EQ(load_run(m, [&] { return changed; }).message, "fc.weight: quantized data differs from what was written");
  changed = m.quantized;
  changed.entries[1].tensor = changed.entries[1].tensor.to(at::kHalf);
  EXPECT_EQ(load_run(m, [&] { return changed; }).message, "fc.bias differs from what was written");
  changed.entries.pop_back();
  EXPECT_EQ(load_run(m, [&] { return changed; }).message, "wrote 2 tensors but read back 1");
}

// A streamed run hands validators the file as read back (and checked) by the runner:
// load_run runs it without reading it again.
TEST(LoadRunValidator, RunsWhatTheRunnerReadBackWithoutReadingItAgain) {
  mq::test::ModelPair m;
  mq::test::FakeFormat format;
  format.read_back = []() -> mq::QuantizedModel { throw mq::InputError("read a second time"); };
  const mq::Check c = m.validate(*mq::test::make_plugin<mq::Validator>(), format, true);
  EXPECT_TRUE(c.passed) << c.message;
  EXPECT_EQ(c.message, "read back 2 tensors bit-exactly; ran 1 layer matmuls (batch 8), outputs finite");
  m.quantized.entries[0].quantized->qparams.scale.fill_(INFINITY);  // and still runs it
  EXPECT_FALSE(m.validate(*mq::test::make_plugin<mq::Validator>(), format, true).passed);
}

TEST(LoadRunValidator, FailsWhenARunGivesNonFiniteOutputs) {
  mq::test::ModelPair m;
  m.quantized.entries[0].quantized->qparams.scale.fill_(INFINITY);
  const mq::Check c = load_run(m, [&] { return m.quantized; });
  EXPECT_FALSE(c.passed);
  EXPECT_EQ(c.message, "fc.weight: matmul on the read-back weight gives non-finite outputs");
}

// Both models run: the forward pass takes the model's input as the runner hands it, on
// the artifact as the runner loaded it, and an artifact that fails where the original
// runs fails the check.
TEST(LoadRunValidator, ForwardPassRunsOnTheModelInput) {
  mq::test::ModelPair m;
  auto original = std::make_shared<mq::test::FakeRunnable>();
  auto written = std::make_shared<mq::test::FakeRunnable>();
  written->fn = [](const at::Tensor& x) { return x * 1.001; };
  m.original.runnable = original;
  mq::test::FakeFormat format;
  format.read_back = [&] { return m.quantized; };
  const at::Tensor input = at::randn({3, 5});
  mq::Check c = m.validate(*mq::test::make_plugin<mq::Validator>(), format, false, {}, input, written);
  EXPECT_TRUE(c.passed) << c.message;
  EXPECT_TRUE(original->last_input.is_same(input));
  EXPECT_NE(c.message.find("; forward pass on [3, 5] gives finite outputs at 60.00 dB output SQNR"),
            std::string::npos) << c.message;

  written->fn = [](const at::Tensor&) -> at::Tensor { throw mq::InputError("no kernel for this"); };
  c = m.validate(*mq::test::make_plugin<mq::Validator>(), format, false, {}, input, written);
  EXPECT_FALSE(c.passed);
  EXPECT_EQ(c.message, "the written model fails where the original runs: no kernel for this");
}

}  // namespace
