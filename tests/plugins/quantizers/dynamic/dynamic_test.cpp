#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "mq/affine.hpp"
#include "mq/quantizer.hpp"
#include "test_support.hpp"

namespace {

using mq::test::opt;

class MinMax final : public mq::Observer {
 public:
  void observe(const at::Tensor& t, const mq::QuantSpec& s) override { mm_ = mq::min_max(t, s); }
  mq::QParams qparams(const mq::QuantSpec& s) const override {
    return mq::qparams_from_min_max(mm_.first, mm_.second, s);
  }

 private:
  std::pair<at::Tensor, at::Tensor> mm_;
};

std::unique_ptr<mq::Quantizer> quantizer(const std::string& granularity = "per_channel",
                                         std::vector<std::string> exclude = {}) {
  std::vector<mq::Value> patterns;
  for (auto& p : exclude) patterns.push_back(mq::Value::string(p));
  return mq::test::make_plugin<mq::Quantizer>(
      {opt("dtype", mq::Value::string("int8")), opt("granularity", mq::Value::string(granularity)),
       opt("scheme", mq::Value::string("symmetric")), opt("reduce_range", mq::Value::boolean(false)),
       opt("exclude", mq::Value::list(patterns))});
}

mq::Model model(at::ScalarType dtype = at::kFloat) {
  at::manual_seed(5);
  mq::Model m;
  m.tensors = {{"embed.weight", at::randn({10, 8}).to(dtype)},
               {"fc.weight", at::randn({16, 8}).to(dtype)},
               {"fc.bias", at::randn({16}).to(dtype)},
               {"head.weight", at::randn({4, 16}).to(dtype)},
               {"norm.weight", at::ones({16}).to(dtype)}};
  m.layers = {{"embed", mq::LayerKind::kEmbedding, "embed.weight", ""},
              {"fc", mq::LayerKind::kLinear, "fc.weight", "fc.bias"},
              {"head", mq::LayerKind::kLinear, "head.weight", ""},
              {"norm", mq::LayerKind::kLayerNorm, "norm.weight", ""}};
  return m;
}

mq::QuantizedModel run(mq::Quantizer& q, const mq::Model& m) {
  mq::NullProgress progress;
  mq::QuantizeContext context;
  context.make_observer = [] { return std::make_unique<MinMax>(); };
  context.progress = &progress;
  return q.quantize(m, context);
}

TEST(DynamicQuantizer, QuantizesLinearWeightsOnlyAndSaysWhy) {
  const mq::QuantizedModel q = run(*quantizer(), model());
  ASSERT_EQ(q.plan.size(), 5u);
  EXPECT_EQ(q.plan[0].rule, "Embedding weight (dynamic quantizes Linear only)");
  EXPECT_EQ(q.plan[1].rule, "Linear weight");
  EXPECT_EQ(q.plan[2].rule, "not a layer weight");
  EXPECT_TRUE(q.entries[1].quantized.has_value());
  EXPECT_TRUE(q.entries[3].quantized.has_value());
  EXPECT_FALSE(q.entries[0].quantized.has_value());
  EXPECT_TRUE(at::equal(q.entries[2].tensor, model().tensors[2].tensor));  // kept bit-exact
  EXPECT_EQ(q.entries[1].quantized->qparams.scale.numel(), 16);
  EXPECT_EQ(q.mode, "dynamic");
}

TEST(DynamicQuantizer, ExcludePatternsKeepLayersInFloat) {
  const mq::QuantizedModel q = run(*quantizer("per_channel", {"he*"}), model());
  EXPECT_EQ(q.plan[3].rule, "exclude: he*");
  EXPECT_FALSE(q.entries[3].quantized.has_value());
}

TEST(DynamicQuantizer, PerTensorGivesOneScale) {
  const mq::QuantizedModel q = run(*quantizer("per_tensor"), model());
  EXPECT_EQ(q.entries[1].quantized->qparams.scale.numel(), 1);
}

TEST(DynamicQuantizer, HalfPrecisionWeightsGetScalesExactInTheirDtype) {
  for (auto dtype : {at::kHalf, at::kBFloat16}) {
    const mq::QuantizedModel q = run(*quantizer(), model(dtype));
    const mq::QuantizedTensor& w = *q.entries[1].quantized;
    EXPECT_EQ(w.original_dtype, dtype);
    EXPECT_TRUE(at::equal(w.qparams.scale, w.qparams.scale.to(dtype).to(at::kFloat)));
    // The data was quantized with exactly those scales.
    EXPECT_TRUE(at::equal(w.data, mq::quantize(model(dtype).tensors[1].tensor, w.qparams, w.spec).data));
  }
}

}  // namespace
