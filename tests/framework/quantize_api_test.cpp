// The Python original's API in C++: load, dynamic_quantize, validate, save.

#include "mq/quantize.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>

#include <sys/stat.h>

#include "mq/error.hpp"
#include "test_support.hpp"

namespace {

const std::string kModel = std::string(MQ_SOURCE_DIR) + "/configs/models/mlp.safetensors";

TEST(QuantizeApi, DynamicQuantizeValidatesAndReportsFigures) {
  const mq::Model model = mq::load_model(kModel);
  ASSERT_EQ(model.tensors.size(), 5u);
  const mq::QuantizeResult r = mq::dynamic_quantize(model);
  EXPECT_TRUE(r.info.validated);
  EXPECT_TRUE(r.info.validation.passed()) << r.info.validation.errors.front();
  EXPECT_GT(r.info.validation.sqnr_db, 35);
  EXPECT_GT(r.info.validation.compression_ratio, 3.5);
  EXPECT_TRUE(r.info.validation.load_test_passed);
  EXPECT_TRUE(r.info.validation.weight_range_valid);
  EXPECT_EQ(r.info.plan.size(), 5u);

  mq::QuantizationConfig int4;
  int4.dtype = mq::DType::kInt4;
  int4.group_size = 32;
  const mq::QuantizeResult q4 = mq::dynamic_quantize(model, int4, mq::OnFailure::kError, false);
  EXPECT_FALSE(q4.info.validated);
  EXPECT_EQ(q4.model.entries[0].quantized->spec.to_string(), "int4 per_group(32) symmetric");
}

TEST(QuantizeApi, AWeightHoldingInfIsAnInputErrorNamingIt) {
  mq::Model model = mq::load_model(kModel);
  model.tensors[0].tensor = model.tensors[0].tensor.clone();
  model.tensors[0].tensor.view(-1)[3] = std::numeric_limits<float>::infinity();
  try {
    mq::dynamic_quantize(model, {}, mq::OnFailure::kError, false);
    FAIL() << "quantized a weight holding inf";
  } catch (const mq::InputError& e) {
    EXPECT_NE(std::string(e.what()).find(model.tensors[0].name + ": cannot quantize inf"), std::string::npos)
        << e.what();
  }
}

TEST(QuantizeApi, StaticQuantizeCalibratesARunnableModel) {
  mq::Value trust = mq::Value::map();
  trust.set("trust_torchscript", mq::Value::boolean(true));
  const mq::Model model = mq::load_model(std::string(MQ_SOURCE_DIR) + "/configs/models/mlp.pt", "", trust);
  ASSERT_NE(model.runnable, nullptr);
  std::vector<at::Tensor> batches;
  for (int b = 0; b < 4; ++b) batches.push_back(at::randn({8, 64}));
  mq::QuantizationConfig config;
  config.observer = "histogram";
  config.granularity = "per_channel";
  const mq::QuantizeResult r = mq::static_quantize(model, batches, config);
  EXPECT_EQ(r.model.mode, "static");
  EXPECT_EQ(r.model.activation_qparams.size(), 2u);
  EXPECT_TRUE(r.info.validated && r.info.validation.passed());
  EXPECT_THROW(mq::static_quantize(model, {}, config), mq::RecipeError);
  EXPECT_THROW(mq::load_model(std::string(MQ_SOURCE_DIR) + "/configs/models/mlp.pt"), mq::InputError);
}

TEST(QuantizeApi, SaveAndLoadGoThroughTheFormatPlugins) {
  mq::test::ScratchDir dir("api-save");
  const mq::QuantizeResult r = mq::dynamic_quantize(mq::load_model(kModel), {}, mq::OnFailure::kError, false);
  mq::save_model(r.model, dir / "q.safetensors");
  const mq::QuantizedModel back = mq::load_quantized_model(dir / "q.safetensors");
  ASSERT_EQ(back.entries.size(), r.model.entries.size());
  EXPECT_TRUE(at::equal(back.entries[0].quantized->data, r.model.entries[0].quantized->data));
  EXPECT_THROW(mq::load_model(dir / "absent.safetensors"), mq::InputError);
  // A file is written beside its destination and renamed over it: over a pipe (or
  // /dev/null) that would put a file in its place.
  ASSERT_EQ(::mkfifo((dir / "pipe").c_str(), 0644), 0);
  EXPECT_THROW(mq::save_model(r.model, dir / "pipe"), mq::OutputError);
  EXPECT_TRUE(std::filesystem::is_fifo(dir / "pipe"));
}

TEST(QuantizeApi, ValidateQuantizationAppliesOnFailure) {
  const mq::Model model = mq::load_model(kModel);
  mq::QuantizedModel broken = mq::dynamic_quantize(model, {}, mq::OnFailure::kError, false).model;
  broken.entries[0].quantized->qparams.scale = broken.entries[0].quantized->qparams.scale * -1;
  try {
    mq::validate_quantization(model, broken, mq::OnFailure::kError);
    FAIL() << "no error";
  } catch (const mq::Error& e) {
    EXPECT_EQ(e.code(), mq::ExitCode::kValidationFailed);
    EXPECT_NE(std::string(e.what()).find("range: fc1.weight has a scale"), std::string::npos) << e.what();
  }
  const mq::ValidationResult ignored = mq::validate_quantization(model, broken, mq::OnFailure::kIgnore);
  EXPECT_FALSE(ignored.passed());
  EXPECT_FALSE(ignored.weight_range_valid);
  EXPECT_LT(ignored.sqnr_db, 30);  // one of two tensors flipped sign
}

// The validators that compare each tensor with its original (sqnr, range, load_run)
// share one read of it: on a multi-GB model, a read for each was most of validation.
TEST(QuantizeApi, ValidatorsShareOneReadOfEachOriginal) {
  mq::Model model = mq::load_model(kModel);
  const mq::QuantizedModel quantized =
      mq::dynamic_quantize(model, {}, mq::OnFailure::kError, false).model;
  int reads = 0;
  mq::test::read_through(model, [&](const at::Tensor& t, const at::Tensor& into) {
    ++reads;
    into.copy_(t);
    return true;
  });
  EXPECT_TRUE(mq::validate_quantization(model, quantized, mq::OnFailure::kError).passed());
  const auto weights =
      std::count_if(quantized.entries.begin(), quantized.entries.end(),
                    [](const mq::QuantizedEntry& e) { return e.quantized.has_value(); });
  EXPECT_EQ(weights, 2);
  EXPECT_EQ(reads, weights);
}


// An HF model on its architecture hands over one Linear's activity at a time (so that a
// model of hundreds of Linears holds one layer's inputs, not all), each wanted layer once
// a batch, in batch order.
TEST(QuantizeApi, ARunnableHfModelHandsOverOneLayerAtATime) {
  mq::test::ScratchDir dir("record-one-layer");
  mq::test::write_tiny_llama(dir.path(), 8);
  const mq::Model model = mq::load_model(dir.path());
  ASSERT_TRUE(model.runnable);
  const std::string q = "model.layers.0.self_attn.q_proj", down = "model.layers.0.mlp.down_proj";
  const std::vector<at::Tensor> batches = {at::randint(20, {1, 5}, at::kLong), at::randint(20, {2, 3}, at::kLong)};
  std::vector<std::pair<size_t, std::string>> visits;
  model.runnable->record_layers(batches, {down, q}, [&](size_t b, const auto& seen) {
    EXPECT_EQ(seen.size(), 1u);
    for (const auto& [layer, a] : seen) {
      visits.emplace_back(b, layer);
      EXPECT_EQ(a.input.size(0), batches[b].numel()) << layer;
    }
  });
  EXPECT_EQ(visits, (std::vector<std::pair<size_t, std::string>>{{0, q}, {0, down}, {1, q}, {1, down}}));
}

// Sequential recording runs a stage (a block) over every batch before the next, and the
// next block sees what the block before it makes with the weights done() gave: here
// block 0's down_proj zeroed, so block 1's q_proj inputs are those of a model whose file
// has it zeroed. Those weights are for that pass only: forward() is as before after it.
TEST(QuantizeApi, SequentialRecordingFeedsEachBlockWhatTheLastMadeWithReplacedWeights) {
  mq::test::ScratchDir dir("record-sequential"), zeroed_dir("record-sequential-zeroed");
  const std::string down0 = "model.layers.0.mlp.down_proj", q1 = "model.layers.1.self_attn.q_proj";
  const at::Tensor zeros = at::zeros({8, 16});
  mq::test::write_tiny_llama(dir.path(), 8, 2);
  mq::test::write_tiny_llama(zeroed_dir.path(), 8, 2, {{down0 + ".weight", zeros}});
  const mq::Model model = mq::load_model(dir.path()), zeroed = mq::load_model(zeroed_dir.path());
  const std::vector<at::Tensor> batches = {at::randint(20, {1, 5}, at::kLong), at::randint(20, {2, 3}, at::kLong)};
  std::vector<at::Tensor> expected;
  zeroed.runnable->record_layers(batches, {q1}, [&](size_t, const auto& seen) { expected.push_back(seen.at(q1).input); });
  const at::Tensor before = model.runnable->forward(batches[0]);

  std::vector<std::vector<std::string>> stages;
  std::vector<std::pair<size_t, std::string>> visits;
  std::vector<at::Tensor> inputs;
  model.runnable->record_sequential(
      batches, {q1, down0},
      [&](size_t b, const auto& seen) {
        for (const auto& [layer, a] : seen) {
          visits.emplace_back(b, layer);
          if (layer == q1) inputs.push_back(a.input);
        }
      },
      [&](const std::vector<std::string>& layers) {
        stages.push_back(layers);
        return layers[0] == down0 ? std::map<std::string, at::Tensor>{{down0 + ".weight", zeros}}
                                  : std::map<std::string, at::Tensor>{};
      });
  EXPECT_EQ(stages, (std::vector<std::vector<std::string>>{{down0}, {q1}}));
  EXPECT_EQ(visits, (std::vector<std::pair<size_t, std::string>>{{0, down0}, {1, down0}, {0, q1}, {1, q1}}));
  ASSERT_EQ(inputs.size(), 2u);
  for (size_t b = 0; b < 2; ++b) EXPECT_TRUE(at::allclose(inputs[b], expected[b], 1e-5, 1e-6)) << b;
  EXPECT_FALSE(at::allclose(inputs[0], [&] {
    at::Tensor plain;
    model.runnable->record_layers({batches[0]}, {q1}, [&](size_t, const auto& seen) { plain = seen.at(q1).input; });
    return plain;
  }()));
  EXPECT_TRUE(at::equal(model.runnable->forward(batches[0]), before));
}

}  // namespace
