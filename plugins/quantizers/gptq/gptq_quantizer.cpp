// gptq: weights quantized by GPTQ (gptq.hpp) against the Hessian of each Linear's inputs
// over the calibration batches, which run through the model; Linear layers only (other
// quantized tensors, e.g. an Embedding the recipe adds, are rounded to nearest), and
// activations as they come (weight-only at 4 bits, W8A8 dynamic at 8). The Hessians are
// taken on the float model in one pass, every layer's at once; the reference
// implementation's sequential pass (each block's inputs from the blocks before it
// already quantized) is not done yet.

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <map>
#include <set>

#include "gptq.hpp"
#include "mq/error.hpp"
#include "mq/layer_selection.hpp"
#include "mq/quantizer.hpp"

namespace {

class GptqQuantizer final : public mq::Quantizer {
 public:
  explicit GptqQuantizer(const mq::Options& options) : selector_(options, {mq::LayerKind::kLinear}) {
    settings_.block_size = options.get_int("block_size");
    settings_.dampening_frac = options.get_float("dampening_frac");
    if (settings_.block_size <= 0) throw mq::RecipeError(options.where("block_size") + ": block_size must be positive");
    if (settings_.dampening_frac <= 0)
      throw mq::RecipeError(options.where("dampening_frac") + ": dampening_frac must be positive");
  }

  std::vector<mq::PlanRow> plan(const mq::Model& model, const mq::QuantizeContext& context) const override {
    mq::require_calibration(model, context, "GPTQ");
    std::vector<mq::PlanRow> rows = selector_.plan(model);
    for (const mq::PlanRow& row : rows)
      if (row.spec && row.spec->is_block())
        throw mq::RecipeError("GPTQ does not quantize to llama.cpp's block types yet (" + row.tensor + ": " +
                              row.spec->to_string() + "); use the dynamic quantizer (round to nearest, as llama.cpp)");
    for (const auto& [layer, row] : linear_rows(model, rows))
      if (rows[row].spec->granularity == mq::Granularity::kPerChannel && rows[row].spec->axis != 0)
        throw mq::RecipeError("GPTQ quantizes Linear weights by rows: '" + layer +
                              "' is planned per channel on axis " + std::to_string(rows[row].spec->axis) +
                              ", not 0");
    return rows;
  }

  mq::QuantizedModel quantize(const mq::Model& model, mq::QuantizeContext& context) override {
    mq::QuantizedModel out;
    out.mode = "dynamic";
    out.plan = planned(model, context);
    const std::map<std::string, size_t> linears = linear_rows(model, out.plan);
    std::vector<std::string> layers;
    for (const auto& [layer, row] : linears) layers.push_back(layer);

    std::map<std::string, at::Tensor> hessians;
    mq::record_inputs(model, context, layers,
                      [&](const std::string& layer, const at::Tensor& x) { mq::gptq::accumulate(hessians[layer], x); });

    std::map<size_t, std::string> layer_of_row;
    for (const auto& [layer, row] : linears) layer_of_row[row] = layer;
    out.entries = mq::quantize_planned_with(model, out.plan, context, [&](size_t i, const at::Tensor& w) {
      const mq::QuantSpec& spec = *out.plan[i].spec;
      const auto layer = layer_of_row.find(i);
      const auto h = layer == layer_of_row.end() ? hessians.end() : hessians.find(layer->second);
      if (layer != layer_of_row.end() && h == hessians.end())
        context.warn("layer " + layer->second + " saw no input during calibration; its weight is rounded to nearest");
      if (h == hessians.end()) return mq::quantize_weight(w, spec, nullptr);
      mq::QuantizedTensor q = mq::gptq::quantize(w, h->second, spec, settings_);
      // The report's per-layer figure: the layer-output error on the calibration inputs,
      // against what round to nearest gives.
      const double error = mq::gptq::output_error(w, q.dequantize(), h->second);
      const double rtn = mq::gptq::output_error(w, mq::quantize_weight(w, spec, nullptr).dequantize(), h->second);
      out.plan[i].rule += fmt::format("; GPTQ: layer-output error {:.3g} (round to nearest {:.3g})", error, rtn);
      return q;
    });
    return out;
  }

 private:
  // Linear layers whose weight is planned with an integer spec: layer -> plan row.
  static std::map<std::string, size_t> linear_rows(const mq::Model& model, const std::vector<mq::PlanRow>& plan) {
    return mq::planned_linears(model, plan, [](const mq::QuantSpec& s) { return s.is_integer(); });
  }

  mq::LayerSelector selector_;
  mq::gptq::Settings settings_;
};

}  // namespace

MQ_PLUGIN(GptqQuantizer, mq::PluginKind::kQuantizer, "gptq", "0.1.0",
          "GPTQ: weights rounded so that each Linear's output on the calibration inputs moves least",
          MQ_SPEC_OPTIONS,
          {"block_size", mq::OptionType::kInt, "128", "columns updated together"},
          {"dampening_frac", mq::OptionType::kFloat, "0.01", "of the mean Hessian diagonal, added to it"})
