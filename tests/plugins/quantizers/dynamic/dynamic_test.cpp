#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/quantizer.hpp"
#include "mq/recipe.hpp"
#include "test_support.hpp"

namespace {

class MinMax final : public mq::Observer {
 public:
  void observe(const at::Tensor& t, const mq::QuantSpec& s) override { mm_ = mq::min_max(t, s); }
  mq::QParams qparams(const mq::QuantSpec& s) const override {
    return mq::qparams_from_min_max(mm_.first, mm_.second, s);
  }

 private:
  std::pair<at::Tensor, at::Tensor> mm_;
};

// A quantizer from the options of a recipe's quantizer step, written as YAML.
std::unique_ptr<mq::Quantizer> quantizer(const std::string& options_yaml = "{}") {
  const mq::Recipe r = mq::parse_recipe(
      "version: 1\nmodel: {path: m}\nformat: {plugin: f, output: o}\nquantizer:\n  plugin: dynamic\n"
      "  options: " + options_yaml + "\n", "/t/r.yaml");
  std::vector<mq::MapEntry> entries = r.quantizer.options.as_map();
  return mq::test::make_plugin<mq::Quantizer>(entries);
}

mq::Model model(at::ScalarType dtype = at::kFloat) {
  at::manual_seed(5);
  mq::Model m;
  m.tensors = {{"embed.weight", at::randn({10, 8}).to(dtype)},
               {"fc.weight", at::randn({16, 8}).to(dtype)},
               {"fc.bias", at::randn({16}).to(dtype)},
               {"head.weight", at::randn({4, 16}).to(dtype)},
               {"norm.weight", at::ones({16}).to(dtype)},
               {"lm_head.weight", at::randn({10, 16}).to(dtype)},
               {"odd.weight", at::randn({3, 100}).to(dtype)}};
  m.layers = {{"embed", mq::LayerKind::kEmbedding, "embed.weight", ""},
              {"fc", mq::LayerKind::kLinear, "fc.weight", "fc.bias"},
              {"head", mq::LayerKind::kLinear, "head.weight", ""},
              {"norm", mq::LayerKind::kLayerNorm, "norm.weight", ""},
              {"lm_head", mq::LayerKind::kLinear, "lm_head.weight", ""},
              {"odd", mq::LayerKind::kLinear, "odd.weight", ""}};
  return m;
}

std::vector<mq::PlanRow> plan(const mq::Quantizer& q, const mq::Model& m) {
  mq::QuantizeContext context;
  context.make_observer = [] { return std::make_unique<MinMax>(); };
  return q.plan(m, context);
}

mq::QuantizedModel run(mq::Quantizer& q, const mq::Model& m) {
  mq::NullProgress progress;
  mq::QuantizeContext context;
  context.make_observer = [] { return std::make_unique<MinMax>(); };
  context.progress = &progress;
  return q.quantize(m, context);
}

std::vector<std::string> rules(const std::vector<mq::PlanRow>& plan) {
  std::vector<std::string> out;
  for (const auto& row : plan) out.push_back(row.rule + " => " + (row.spec ? row.spec->to_string() : "float"));
  return out;
}

TEST(DynamicQuantizer, Int8QuantizesLinearWeightsAndSaysWhyOthersStay) {
  const mq::QuantizedModel q = run(*quantizer(), model());
  EXPECT_EQ(rules(q.plan), (std::vector<std::string>{
                               "type Embedding not in layers.types => float",
                               "type Linear => int8 per_channel(axis=0) symmetric",
                               "not a layer weight => float",
                               "type Linear => int8 per_channel(axis=0) symmetric",
                               "type LayerNorm not in layers.types => float",
                               "default skip: lm_head => float",  // for every dtype, as W8A8 recipes have it
                               "type Linear => int8 per_channel(axis=0) symmetric"}));
  EXPECT_TRUE(at::equal(q.entries[2].tensor, model().tensors[2].tensor));  // kept bit-exact
  EXPECT_EQ(q.entries[1].quantized->qparams.scale.numel(), 16);
  for (size_t i = 0; i < q.plan.size(); ++i)  // the plan's prediction is what was produced
    EXPECT_EQ(q.plan[i].bytes_after,
              q.entries[i].quantized ? q.entries[i].quantized->nbytes() : q.plan[i].bytes_before);
}

// Recurrent layers are PyTorch's dynamic defaults too, and `types` names them.
TEST(DynamicQuantizer, RecurrentLayersAreQuantizedByDefaultAndNamedInTypes) {
  mq::Model m;
  m.tensors = {{"rnn.weight_ih_l0", at::randn({32, 5})}, {"rnn.weight_hh_l0", at::randn({32, 8})},
               {"fc.weight", at::randn({4, 8})}};
  m.layers = mq::layers_from_names(m);
  EXPECT_EQ(rules(plan(*quantizer(), m)),
            (std::vector<std::string>{"type LSTM => int8 per_channel(axis=0) symmetric",
                                      "type LSTM => int8 per_channel(axis=0) symmetric",
                                      "type Linear => int8 per_channel(axis=0) symmetric"}));
  EXPECT_EQ(rules(plan(*quantizer("{layers: {types: [LSTM]}}"), m))[2], "type Linear not in layers.types => float");
}

// A weight with no elements has nothing to quantize: it stays as it is, and says so.
TEST(DynamicQuantizer, EmptyWeightIsKept) {
  mq::Model m;
  m.tensors = {{"empty.weight", at::zeros({0, 16})}};
  m.layers = {{"empty", mq::LayerKind::kLinear, "empty.weight", ""}};
  for (const std::string options : {"{}", "{dtype: int4, granularity: per_group, group_size: 16}", "{dtype: fp16}"}) {
    const mq::QuantizedModel q = run(*quantizer(options), m);
    EXPECT_EQ(rules(q.plan), std::vector<std::string>{"empty tensor, nothing to quantize => float"}) << options;
    EXPECT_FALSE(q.entries[0].quantized) << options;
  }
}

// Where the model's format reads a tensor from its file (read_into), the weight is
// quantized from what it read, into one buffer used again while it is large enough;
// where it cannot, from the tensor itself.
TEST(DynamicQuantizer, QuantizesWhatTheFormatReadsInto) {
  at::manual_seed(4);
  mq::Model m;
  for (const auto& [name, rows] : {std::pair{"a", 16}, {"b", 8}, {"c", 16}, {"d", 4}}) {
    m.tensors.push_back({std::string(name) + ".weight", at::randn({rows, 8})});
    m.layers.push_back({name, mq::LayerKind::kLinear, std::string(name) + ".weight", ""});
  }
  mq::Model negated = m;
  for (mq::NamedTensor& t : negated.tensors) t.tensor = t.name == "b.weight" ? t.tensor : -t.tensor;
  std::vector<const void*> buffers;
  mq::test::read_through(m, [&](const at::Tensor& t, const at::Tensor& into) {
    if (t.data_ptr() == m.tensors[1].tensor.data_ptr()) return false;  // b: read where it lies
    buffers.push_back(into.data_ptr());
    into.copy_(-t);
    return true;
  });
  const mq::QuantizedModel q = run(*quantizer(), m), expected = run(*quantizer(), negated);
  EXPECT_EQ(buffers, std::vector<const void*>(3, buffers.at(0)));
  for (size_t i = 0; i < 4; ++i)
    EXPECT_TRUE(at::equal(q.entries[i].quantized->data, expected.entries[i].quantized->data)) << i;
}

// Streaming, a weight's integers go into the buffer of the entry two before it once that
// entry was written and dropped (the one just before may still be in the writer's
// hands); an entry still held (kept by the caller) is never written into. Either way
// each entry holds its own weight's integers.
TEST(DynamicQuantizer, StreamedEntriesReuseTwoBuffersInTurnHeldOnesNever) {
  at::manual_seed(3);
  mq::Model m;
  for (const std::string name : {"a", "b", "c", "d"}) {
    m.tensors.push_back({name + ".weight", at::randn({8, 16})});
    m.layers.push_back({name, mq::LayerKind::kLinear, name + ".weight", ""});
  }
  auto q = quantizer();
  const mq::QuantSpec spec = *plan(*q, m)[0].spec;
  mq::NullProgress progress;
  mq::QuantizeContext context;
  context.progress = &progress;
  struct OnePass final : mq::Observer {  // as the minmax plugin: weights in one pass
    void observe(const at::Tensor&, const mq::QuantSpec&) override {}
    mq::QParams qparams(const mq::QuantSpec&) const override { return {}; }
    std::optional<float> min_max_eps() const override { return mq::kScaleEps; }
  };
  context.make_observer = [] { return std::make_unique<OnePass>(); };
  std::vector<const void*> buffers;
  std::vector<at::Tensor> values;
  context.emit = [&](const mq::QuantizedEntry& e) {  // written (copied) and dropped
    buffers.push_back(e.quantized->data.data_ptr());
    values.push_back(e.quantized->data.clone());
  };
  q->quantize(m, context);
  ASSERT_EQ(buffers.size(), 4u);
  EXPECT_NE(buffers[0], buffers[1]);
  EXPECT_EQ(buffers[0], buffers[2]);
  EXPECT_EQ(buffers[1], buffers[3]);
  std::vector<mq::QuantizedEntry> held;
  context.emit = [&](mq::QuantizedEntry e) { held.push_back(std::move(e)); };
  q->quantize(m, context);
  ASSERT_EQ(held.size(), 4u);
  for (size_t i = 0; i < 4; ++i)
    for (size_t j = 0; j < i; ++j) EXPECT_NE(held[i].quantized->data.data_ptr(), held[j].quantized->data.data_ptr());
  for (size_t i = 0; i < 4; ++i) {
    const at::Tensor alone = mq::quantize_min_max(m.tensors[i].tensor, spec).data;
    EXPECT_TRUE(at::equal(values[i], alone));
    EXPECT_TRUE(at::equal(held[i].quantized->data, alone));
  }
}

TEST(DynamicQuantizer, Int4IsGroupWiseAndSkipsTheDefaultLowBitSet) {
  const mq::QuantizedModel q = run(*quantizer("{dtype: int4, group_size: 8, layers: {types: [Linear, Embedding]}}"), model());
  const auto r = rules(q.plan);
  EXPECT_EQ(r[0], "default low-bit skip: embedding => float");
  EXPECT_EQ(r[1], "type Linear => int4 per_group(8) symmetric");
  EXPECT_EQ(r[5], "default skip: lm_head => float");
  EXPECT_EQ(r[6], "type Linear; last group partial (100 % 8) => int4 per_group(8) symmetric");
  const mq::QuantizedTensor& w = *q.entries[1].quantized;
  EXPECT_EQ(w.qparams.scale.sizes(), (at::IntArrayRef{16, 1}));
  EXPECT_TRUE(at::all(w.data >= -8).item<bool>() && at::all(w.data <= 7).item<bool>());
  EXPECT_LT((w.dequantize() - model().tensors[1].tensor).abs().max().item<float>(),
            w.qparams.scale.max().item<float>());
}

TEST(DynamicQuantizer, PartialLastGroupIsQuantizedToo) {
  const mq::QuantizedModel q = run(*quantizer("{dtype: uint4, scheme: asymmetric, group_size: 64}"), model());
  const mq::QuantizedTensor& w = *q.entries[6].quantized;
  EXPECT_EQ(w.qparams.scale.sizes(), (at::IntArrayRef{3, 2}));  // ceil(100 / 64)
  const at::Tensor err = (w.dequantize() - model().tensors[6].tensor).abs();
  EXPECT_LT(err.max().item<float>(), w.qparams.scale.max().item<float>());
}

TEST(DynamicQuantizer, ReplaceDropsTheDefaultSkipSet) {
  const auto r = rules(run(*quantizer("{dtype: int4, layers: {replace: true}}"), model()).plan);
  EXPECT_EQ(r[5], "type Linear; last group partial (16 % 128) => int4 per_group(128) symmetric");
}

TEST(DynamicQuantizer, PrecedenceIsNameThenPatternThenType) {
  const auto q = quantizer(
      "{dtype: int4, group_size: 8, layers: {exclude: ['he*']},"
      " overrides: {lm_head: {dtype: int8}, 'h*': {dtype: fp16}, 'f*': {granularity: per_tensor, dtype: int8}}}");
  const auto r = rules(plan(*q, model()));
  EXPECT_EQ(r[1], "override 'f*' => int8 per_tensor symmetric");
  EXPECT_EQ(r[3], "exclude 'he*' => float");                       // exclude beats a pattern override
  EXPECT_EQ(r[5], "override 'lm_head' => int8 per_channel(axis=0) symmetric");  // name beats the skip set
  EXPECT_EQ(r[6], "type Linear; last group partial (100 % 8) => int4 per_group(8) symmetric");
}

TEST(DynamicQuantizer, Fp16AndBf16AreCasts) {
  const mq::QuantizedModel q = run(*quantizer("{dtype: bf16}"), model());
  const mq::QuantizedTensor& w = *q.entries[1].quantized;
  EXPECT_EQ(w.data.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(w.dequantize(), model().tensors[1].tensor.to(at::kBFloat16).to(at::kFloat)));
  EXPECT_EQ(w.nbytes(), 16 * 8 * 2);
}

TEST(DynamicQuantizer, HalfPrecisionWeightsGetScalesExactInTheirDtype) {
  for (auto dtype : {at::kHalf, at::kBFloat16}) {
    const mq::QuantizedModel q = run(*quantizer(), model(dtype));
    const mq::QuantizedTensor& w = *q.entries[1].quantized;
    EXPECT_EQ(w.original_dtype, dtype);
    EXPECT_TRUE(at::equal(w.qparams.scale, w.qparams.scale.to(dtype).to(at::kFloat)));
    EXPECT_TRUE(at::equal(w.data, mq::quantize(model(dtype).tensors[1].tensor, w.qparams, w.spec).data));
  }
}

TEST(DynamicQuantizer, BadSelectionOptionsAreRecipeErrorsWithPlaces) {
  const auto error = [](const std::string& yaml) {
    try {
      quantizer(yaml);
    } catch (const mq::RecipeError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error("{layers: {types: [Linaer]}}"),
            "/t/r.yaml:6:30: unknown layer type 'Linaer' (did you mean 'Linear'?); types are "
            "'Linear', 'Conv1d', 'Conv2d', 'Embedding', 'LayerNorm', 'LSTM', 'GRU', 'LSTMCell', "
            "'GRUCell', 'Other'");
  EXPECT_NE(error("{layers: {exlude: []}}").find("unknown key 'exlude' in 'layers' (did you mean 'exclude'?)"),
            std::string::npos);
  EXPECT_NE(error("{overrides: {fc: {dtyp: int8}}}").find("unknown key 'dtyp' in 'overrides.fc'"),
            std::string::npos);
  EXPECT_NE(error("{overrides: {fc: {dtype: int3}}}").find("'overrides.fc.dtype' must be one of"),
            std::string::npos);
  EXPECT_NE(error("{group_size: 0}").find("must be positive"), std::string::npos);
}

}  // namespace
