// gptq: weights quantized by GPTQ (gptq.hpp) against the Hessian of each Linear's inputs
// over the calibration batches, which run through the model; Linear layers only (other
// quantized tensors, e.g. an Embedding the recipe adds, are rounded to nearest), and
// activations as they come (weight-only at 4 bits, W8A8 dynamic at 8).
//
// Sequential (the default), as the reference implementation and llm-compressor run it:
// the calibration batches go through the model a block at a time; a block's Hessians come
// from what the blocks before it, already quantized, made of the batches, the block's
// Linears are quantized, and the block runs again with its quantized weights to make the
// next block's inputs. Only one block's Hessians are held. `sequential: false` takes every
// Hessian on the float model in one pass (one forward instead of two a block; every
// layer's Hessian held at once). A model that cannot run a block at a time (TorchScript)
// runs as one stage either way.

#include <ATen/ATen.h>

#include <map>

#include "mq/error.hpp"
#include "mq/gptq.hpp"
#include "mq/layer_selection.hpp"
#include "mq/quantizer.hpp"

namespace {

class GptqQuantizer final : public mq::Quantizer {
 public:
  explicit GptqQuantizer(const mq::Options& options) : selector_(options, {mq::LayerKind::kLinear}) {
    settings_.block_size = options.get_int("block_size");
    settings_.dampening_frac = options.get_float("dampening_frac");
    sequential_ = options.get_bool("sequential");
    const std::string actorder = options.get_string("actorder");
    if (actorder == "weight") settings_.actorder = mq::gptq::ActOrder::kWeight;
    if (actorder == "group") settings_.actorder = mq::gptq::ActOrder::kGroup;
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

    mq::gptq::Hessians hessians;
    const auto accumulate = [&](const std::string& layer, const at::Tensor& x) { hessians.add(layer, x); };
    // GPTQ of one layer against its Hessian (let go once its sharers have it too); the plan
    // row says how far the layer's output on the calibration inputs moved, against round
    // to nearest (a float32 copy of the Hessian for that: the float64 one goes before the
    // solve's largest temporaries are made).
    const auto solve = [&](const std::string& layer, const at::Tensor& w) {
      mq::PlanRow& row = out.plan[linears.at(layer)];
      return mq::gptq::quantize_reported(w, hessians.take(layer), *row.spec, settings_, row.rule);
    };
    std::map<size_t, mq::QuantizedTensor> solved;  // by plan row: sequential results, until written
    std::map<size_t, std::string> layer_of_row;
    for (const auto& [layer, row] : linears) layer_of_row[row] = layer;
    const auto make = [&](size_t i, const at::Tensor& w) {
      if (const auto s = solved.find(i); s != solved.end()) {
        mq::QuantizedTensor q = std::move(s->second);
        solved.erase(s);
        return q;
      }
      const auto layer = layer_of_row.find(i);
      if (layer == layer_of_row.end()) return mq::quantize_weight(w, *out.plan[i].spec, nullptr);
      if (!hessians.find(layer->second)) {
        context.warn("layer " + layer->second + " saw no input during calibration; its weight is rounded to nearest");
        return mq::quantize_weight(w, *out.plan[i].spec, nullptr);
      }
      return solve(layer->second, w);
    };
    if (!sequential_) {
      mq::record_inputs(model, context, layers, accumulate);
      out.entries = mq::quantize_planned_with(model, out.plan, context, make);
      return out;
    }
    // Each block's results are written as soon as every tensor before them in the file
    // is, so that a streaming run holds a few blocks' results, not the model's.
    mq::PlannedRows rows(model, out.plan, context, make, /*progress=*/false);
    const auto ready = [&](size_t i) { return !layer_of_row.count(i) || solved.count(i); };
    context.progress->begin("gptq", static_cast<int64_t>(layers.size()), 0);
    const mq::TensorIndex index(model);
    model.runnable->record_sequential(
        context.calibration, layers,
        [&](size_t, const auto& activity) {
          for (const auto& [layer, a] : activity) accumulate(layer, a.input);
        },
        [&](const std::vector<std::string>& stage) {
          std::map<std::string, at::Tensor> quantized;
          for (const std::string& layer : stage) {
            const size_t row = linears.at(layer);
            const at::Tensor& w = *index.find(model.tensors[row].name);
            mq::QuantizedTensor q = solve(layer, w);
            quantized[model.tensors[row].name] = q.dequantize();
            solved.emplace(row, std::move(q));
            model.release(w);
            context.progress->advance(layer, 0);
          }
          rows.make_while(ready);
          return quantized;
        });
    context.progress->end();
    out.entries = rows.finish();
    return out;
  }

 private:
  // Linear layers whose weight is planned with an integer spec: layer -> plan row.
  static std::map<std::string, size_t> linear_rows(const mq::Model& model, const std::vector<mq::PlanRow>& plan) {
    return mq::planned_linears(model, plan, [](const mq::QuantSpec& s) { return s.is_integer(); });
  }

  mq::LayerSelector selector_;
  mq::gptq::Settings settings_;
  bool sequential_ = true;
};

}  // namespace

MQ_PLUGIN(GptqQuantizer, mq::PluginKind::kQuantizer, "gptq", "0.1.0",
          "GPTQ: weights rounded so that each Linear's output on the calibration inputs moves least",
          MQ_SPEC_OPTIONS,
          {"block_size", mq::OptionType::kInt, "128", "columns updated together"},
          {"dampening_frac", mq::OptionType::kFloat, "0.01", "of the mean Hessian diagonal, added to it"},
          {"actorder", mq::OptionType::kString, "weight",
           "weight: columns by falling input energy, each group's scales fixed first (llm-compressor's default, "
           "compressed-tensors' static/weight order; the layout is unchanged); group: groups of columns "
           "in that order (written with a g_idx); none: in column order",
           "none|weight|group"},
          {"sequential", mq::OptionType::kBool, "true",
           "each block calibrated on what the blocks before it make quantized (false: all on the float model)"})
