#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/quantizer.hpp"
#include "test_support.hpp"

namespace {

// Min and max over everything observed (the recipe's observer, in the runner).
class MinMax final : public mq::Observer {
 public:
  void observe(const at::Tensor& t, const mq::QuantSpec& s) override {
    auto [lo, hi] = mq::min_max(t, s);
    mm_ = mm_.first.defined() ? std::pair{at::minimum(mm_.first, lo), at::maximum(mm_.second, hi)} : std::pair{lo, hi};
  }
  mq::QParams qparams(const mq::QuantSpec& s) const override {
    return mq::qparams_from_min_max(mm_.first, mm_.second, s);
  }

 private:
  std::pair<at::Tensor, at::Tensor> mm_;
};

// x -> fc -> relu -> head, where `head` is reached only when the batch's first value
// is positive (a branch calibration may never take); an embedding the model never runs.
class TwoLayers final : public mq::Runnable {
 public:
  TwoLayers(at::Tensor fc, at::Tensor head) : fc_(std::move(fc)), head_(std::move(head)) {}
  at::Tensor forward(const at::Tensor& x) override { return at::linear(at::relu(at::linear(x, fc_)), head_); }
  void record_layers(const std::vector<at::Tensor>& batches, const std::vector<std::string>& layers,
                     const ActivityVisitor& visit) override {
    layers_ = layers;
    for (size_t b = 0; b < batches.size(); ++b) {
      std::map<std::string, Activity> seen;
      const at::Tensor y = at::linear(batches[b], fc_);
      seen["fc"] = {batches[b], y};
      if (batches[b].flatten()[0].item<float>() > 0) seen["head"] = {at::relu(y), at::linear(at::relu(y), head_)};
      visit(b, seen);
    }
  }
  std::vector<std::string> layers_;  // what the quantizer asked to record

 private:
  at::Tensor fc_, head_;
};

struct Fixture {
  mq::Model model;
  std::shared_ptr<TwoLayers> runnable;
};

Fixture two_layers() {
  at::manual_seed(7);
  Fixture f;
  const at::Tensor fc = at::randn({16, 8}), head = at::randn({4, 16});
  f.model.tensors = {{"embed.weight", at::randn({10, 8})}, {"fc.weight", fc}, {"head.weight", head}};
  f.model.layers = {{"embed", mq::LayerKind::kEmbedding, "embed.weight", ""},
                    {"fc", mq::LayerKind::kLinear, "fc.weight", ""},
                    {"head", mq::LayerKind::kLinear, "head.weight", ""}};
  f.runnable = std::make_shared<TwoLayers>(fc, head);
  f.model.runnable = f.runnable;
  return f;
}

std::unique_ptr<mq::Quantizer> quantizer() {
  return mq::test::make_plugin<mq::Quantizer>({mq::test::opt("layers", mq::Value::map({{"types", mq::Value::list({mq::Value::string("Linear"), mq::Value::string("Embedding")}), {}}}))});
}

mq::QuantizeContext context(std::vector<at::Tensor> batches, std::vector<std::string>* warnings = nullptr) {
  static mq::NullProgress progress;
  mq::QuantizeContext c;
  c.make_observer = [] { return std::make_unique<MinMax>(); };
  c.calibration = std::move(batches);
  c.progress = &progress;
  c.warn = [warnings](const std::string& m) { if (warnings) warnings->push_back(m); };
  return c;
}

std::string plan_error(const mq::Model& model, const mq::QuantizeContext& c) {
  try {
    quantizer()->plan(model, c);
  } catch (const mq::RecipeError& e) {
    return e.what();
  }
  return "planned";
}

TEST(StaticQuantizer, RefusesAModelThatCannotRunAndMissingCalibration) {
  Fixture f = two_layers();
  EXPECT_EQ(plan_error(f.model, context({})).find("static quantization needs calibration data"), 0u);
  f.model.runnable.reset();
  EXPECT_EQ(plan_error(f.model, context({at::randn({2, 8})})).find("static quantization runs calibration batches"), 0u);
}

// Input qparams are the observer's over every batch's input (int8 symmetric per tensor,
// the default), output qparams uint8 asymmetric over its outputs, as they are and
// through a ReLU; weights are quantized per channel; an Embedding is weight-only.
TEST(StaticQuantizer, CalibratesEachLayersInputAndOutput) {
  Fixture f = two_layers();
  const std::vector<at::Tensor> batches = {at::randn({4, 8}).abs(), at::randn({4, 8}) * 3};
  batches[1].flatten()[0] = 1.0f;  // both reach head
  mq::QuantizeContext c = context(batches);
  const mq::QuantizedModel q = quantizer()->quantize(f.model, c);
  EXPECT_EQ(q.mode, "static");
  EXPECT_EQ(f.runnable->layers_, (std::vector<std::string>{"fc", "head"}));  // not the embedding
  mq::QuantSpec input;
  input.granularity = mq::Granularity::kPerTensor;
  mq::QuantSpec output = input;
  output.dtype = mq::DType::kUInt8;
  output.scheme = mq::Scheme::kAsymmetric;
  const at::Tensor x = at::cat(batches), y = at::linear(x, f.model.tensors[1].tensor);
  const auto expect_qparams = [](const mq::QParams& got, const at::Tensor& seen, const mq::QuantSpec& spec) {
    const auto [lo, hi] = mq::min_max(seen, spec);
    const mq::QParams want = mq::qparams_from_min_max(lo, hi, spec);
    EXPECT_TRUE(at::equal(got.scale, want.scale) && at::equal(got.zero_point, want.zero_point));
  };
  expect_qparams(q.activation_qparams.at("fc"), x, input);
  expect_qparams(q.output_qparams.at("fc"), y, output);
  expect_qparams(q.relu_output_qparams.at("fc"), at::relu(y), output);
  expect_qparams(q.activation_qparams.at("head"), at::relu(y), input);
  ASSERT_EQ(q.entries.size(), 3u);
  for (const mq::QuantizedEntry& e : q.entries) {
    ASSERT_TRUE(e.quantized) << e.name;
    EXPECT_EQ(e.quantized->spec.dtype, mq::DType::kInt8) << e.name;
  }
  EXPECT_EQ(q.entries[1].quantized->spec.granularity, mq::Granularity::kPerChannel);
  EXPECT_EQ(q.activation_qparams.count("embed"), 0u);
}

TEST(StaticQuantizer, ALayerCalibrationNeverReachedIsWeightOnlyAndWarned) {
  Fixture f = two_layers();
  at::Tensor batch = at::randn({4, 8});
  batch.flatten()[0] = -1.0f;  // never reaches head
  std::vector<std::string> warnings;
  mq::QuantizeContext c = context({batch}, &warnings);
  const mq::QuantizedModel q = quantizer()->quantize(f.model, c);
  EXPECT_EQ(q.activation_qparams.count("head"), 0u);
  EXPECT_TRUE(q.entries[2].quantized);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0], "layer head saw no input during calibration; its weight is quantized, its activations are not");
}

}  // namespace
