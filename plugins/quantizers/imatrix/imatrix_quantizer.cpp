// imatrix: llama.cpp's importance matrix. The calibration batches run through the model;
// each Linear's mean square of every input (over all calibration tokens) weights the
// scale search of its llama.cpp-type weight (q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k:
// mq::blocks::quantize with importance; q8_0 takes none), as `llama-quantize --imatrix` does; other planned tensors are quantized as
// the dynamic quantizer does. Each weighted layer's rule in the report says its error,
// weighted by the same importance, against plain rounding's.

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <map>

#include "mq/blocks.hpp"
#include "mq/error.hpp"
#include "mq/layer_selection.hpp"
#include "mq/quantizer.hpp"

namespace {

// Σ_j importance_j Σ_rows (w - ŵ)²: the output error a layer's inputs of those mean
// squares would see, were they independent.
double weighted_error(const at::Tensor& w, const at::Tensor& q, mq::DType dtype, const at::Tensor& importance) {
  const at::Tensor diff = mq::blocks::dequantize(q, dtype, w.size(1)) - w.to(at::kFloat);
  return (diff.to(at::kDouble).pow(2).sum(0) * importance.to(at::kDouble)).sum().item<double>();
}

class ImatrixQuantizer final : public mq::Quantizer {
 public:
  explicit ImatrixQuantizer(const mq::Options& options) : selector_(options, {mq::LayerKind::kLinear}) {}

  std::vector<mq::PlanRow> plan(const mq::Model& model, const mq::QuantizeContext& context) const override {
    mq::require_calibration(model, context, "imatrix");
    std::vector<mq::PlanRow> rows = selector_.plan(model);
    if (linear_rows(model, rows).empty())
      throw mq::RecipeError("imatrix weights llama.cpp's types (dtype q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k), and no "
                            "Linear layer is planned with one: set quantizer.options.dtype");
    return rows;
  }

  mq::QuantizedModel quantize(const mq::Model& model, mq::QuantizeContext& context) override {
    mq::QuantizedModel out;
    out.mode = "dynamic";
    out.plan = planned(model, context);
    const std::map<std::string, size_t> linears = linear_rows(model, out.plan);
    std::vector<std::string> layers;
    for (const auto& [layer, row] : linears) layers.push_back(layer);

    struct Squares {
      at::Tensor sum;  // float64, per input
      int64_t count = 0;
    };
    std::map<std::string, Squares> squares;
    mq::record_inputs(model, context, layers, [&](const std::string& layer, const at::Tensor& input) {
      const at::Tensor x = input.reshape({-1, input.size(-1)}).to(at::kDouble);
      Squares& s = squares[layer];
      const at::Tensor sum = x.pow(2).sum(0);
      s.sum = s.sum.defined() ? s.sum + sum : sum;
      s.count += x.size(0);
    });

    std::map<size_t, std::string> layer_of_row;
    for (const auto& [layer, row] : linears) layer_of_row[row] = layer;
    out.entries = mq::quantize_planned_with(model, out.plan, context, [&](size_t i, const at::Tensor& w) {
      mq::PlanRow& row = out.plan[i];
      const auto layer = layer_of_row.find(i);
      const auto s = layer == layer_of_row.end() ? squares.end() : squares.find(layer->second);
      if (layer != layer_of_row.end() && s == squares.end())
        context.warn("layer " + layer->second + " saw no input during calibration; its weight is rounded as "
                     "llama.cpp does without an importance matrix");
      if (s == squares.end()) return mq::quantize_weight(w, *row.spec, nullptr);
      const at::Tensor importance = (s->second.sum / static_cast<double>(s->second.count)).to(at::kFloat);
      mq::QuantizedTensor q;
      q.spec = *row.spec;
      q.shape = w.sizes().vec();
      q.original_dtype = w.scalar_type();
      q.data = mq::blocks::quantize(w, q.spec.dtype, importance);
      const double weighted = weighted_error(w, q.data, q.spec.dtype, importance);
      const double plain = weighted_error(w, mq::blocks::quantize(w, q.spec.dtype), q.spec.dtype, importance);
      row.rule += fmt::format("; importance-weighted: error {:.3g}x plain rounding's", plain > 0 ? weighted / plain : 1.0);
      return q;
    });
    return out;
  }

 private:
  // Linear layers whose weight is planned as a llama.cpp type that takes importance: layer -> plan row.
  static std::map<std::string, size_t> linear_rows(const mq::Model& model, const std::vector<mq::PlanRow>& plan) {
    return mq::planned_linears(model, plan, [](const mq::QuantSpec& s) { return s.is_block() && s.dtype != mq::DType::kQ8_0; });
  }

  mq::LayerSelector selector_;
};

}  // namespace

MQ_PLUGIN(ImatrixQuantizer, mq::PluginKind::kQuantizer, "imatrix", "0.1.0",
          "llama.cpp's importance matrix: each Linear's input mean squares over calibration weight its k-quant scales",
          MQ_SPEC_OPTIONS)
