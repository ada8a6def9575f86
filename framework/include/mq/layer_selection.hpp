#pragma once
// Which tensors a quantizer quantizes, and with which spec, from the quantizer's
// `dtype`, `granularity`, `group_size`, `scheme`, `reduce_range`, `layers` and
// `overrides` options. Quantizers declare those options with MQ_SPEC_OPTIONS.
//
// Precedence, highest first (docs/quantization.md):
//   1. an override keyed by the exact layer or tensor name;
//   2. patterns: `layers.exclude`, then the default skip set (`lm_head` and MoE routers
//      (`*.block_sparse_moe.gate`, `*.mlp.gate`) for every target, as the recipes of
//      llm-compressor and vLLM keep them; embeddings and norms
//      for 4-bit targets; `layers.replace: true` drops it), then overrides keyed by a
//      glob, first match in recipe order;
//   3. the layer's type in `layers.types` (the quantizer's default, as PyTorch's
//      mappings: Linear and the recurrent layers for dynamic, Linear and Conv1d/2d for
//      static);
//   4. otherwise the tensor stays in float.
// A per_group spec applies to 2-D weights only; other shapes stay in float and the plan
// says so. When group_size does not divide the input dimension the last group of each
// row is partial (compressed-tensors' ceil(in / G) scale columns), and the plan says so.

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "mq/model.hpp"
#include "mq/options.hpp"
#include "mq/quant_spec.hpp"
#include "mq/quantized_model.hpp"

namespace mq {

class MQ_API LayerSelector {
 public:
  // Throws RecipeError naming the option's place in the recipe. `default_types` apply
  // when the recipe sets no `layers.types`.
  explicit LayerSelector(const Options& options, std::vector<LayerKind> default_types = {LayerKind::kLinear});

  const QuantSpec& base() const { return base_; }
  // One row per tensor of `model`, in order, with the predicted bytes.
  std::vector<PlanRow> plan(const Model& model) const;

 private:
  QuantSpec base_;
  std::vector<LayerKind> types_;
  std::vector<std::string> exclude_;
  bool replace_skips_ = false;
  std::vector<std::pair<std::string, Value>> overrides_;
};

// The spec a map of spec fields (a `dtype` and any of granularity, group_size, scheme,
// reduce_range) names, with the options' defaults for the rest ("auto" granularity);
// RecipeError naming `section` for anything else.
MQ_API QuantSpec spec_from_fields(const Value& fields, const std::string& section);

class Observer;
struct QuantizeContext;

// Quantizes a weight with `spec`: integer targets with qparams from `observer` (or, when
// null, min/max as PyTorch's weight observers compute them), scales rounded to the
// weight's own dtype first (they are stored in it); fp16/bf16 targets are casts. With
// min/max qparams the integers go into `out` when given (quantize_min_max()'s buffer).
MQ_API QuantizedTensor quantize_weight(const at::Tensor& weight, const QuantSpec& spec, Observer* observer,
                                       at::Tensor out = {});

// Every tensor of `model` as `plan` says (one row per tensor, in order), with progress:
// quantized by quantize_weight (with a fresh observer from the context when
// `observe_weights`, else min/max), or kept as it is. When the context streams
// (context.emit), each entry goes there instead and the result is empty.
MQ_API std::vector<QuantizedEntry> quantize_planned(const Model& model, const std::vector<PlanRow>& plan,
                                                    QuantizeContext& context, bool observe_weights);

// For quantizers that calibrate Linear layers (gptq, imatrix). RecipeError unless
// `model` runs and `context` has calibration batches, saying what `who` needs.
MQ_API void require_calibration(const Model& model, const QuantizeContext& context, const std::string& who);
// The calibration batches run through `model` with progress; `visit(layer, input)` gets
// each of `layers`' inputs, batch after batch.
MQ_API void record_inputs(const Model& model, const QuantizeContext& context, const std::vector<std::string>& layers,
                          const std::function<void(const std::string& layer, const at::Tensor& input)>& visit);
// The Linear layers whose
// 2-D weight `plan` quantizes with a spec `takes` accepts: layer name -> plan row.
MQ_API std::map<std::string, size_t> planned_linears(const Model& model, const std::vector<PlanRow>& plan,
                                                     const std::function<bool(const QuantSpec&)>& takes);
// quantize_planned() in steps, with each planned row's weight quantized by
// `make(row, weight)` (the weight read through the model's files), in order: for a
// quantizer whose weights are ready out of order (sequential GPTQ, a block at a time),
// which makes each row as soon as the rows before it are made, so that a streaming run
// holds few results. With `progress`, a "quantize" stage counts the rows.
class MQ_API PlannedRows {
 public:
  using Make = std::function<QuantizedTensor(size_t row, const at::Tensor& weight)>;
  PlannedRows(const Model& model, const std::vector<PlanRow>& plan, QuantizeContext& context, Make make,
              bool progress = true);
  // Makes the rows from the first not yet made, while `ready(row)` holds.
  void make_while(const std::function<bool(size_t row)>& ready);
  // Makes the rest: the entries, or none when the context streams (context.emit).
  std::vector<QuantizedEntry> finish();

 private:
  const Model& model_;
  const std::vector<PlanRow>& plan_;
  QuantizeContext& context_;
  Make make_;
  bool progress_;
  size_t next_ = 0;
  at::Tensor staging_;
  std::vector<QuantizedEntry> entries_;
};

// All rows at once, with progress: PlannedRows(...).finish().
MQ_API std::vector<QuantizedEntry> quantize_planned_with(const Model& model, const std::vector<PlanRow>& plan,
                                                         QuantizeContext& context, const PlannedRows::Make& make);

}  // namespace mq

// The options LayerSelector reads, for a quantizer's MQ_PLUGIN declaration list.
#define MQ_SPEC_OPTIONS                                                                     \
  {"dtype", ::mq::OptionType::kString, "int8", "target dtype (q*: llama.cpp's, format gguf)", \
   "int8|uint8|int4|uint4|fp16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q4_k|q5_k|q6_k"},              \
      {"granularity", ::mq::OptionType::kString, "auto",                                    \
       "auto: per_group for 4-bit, per_channel otherwise",                                  \
       "auto|per_tensor|per_channel|per_group"},                                            \
      {"group_size", ::mq::OptionType::kInt, "128", "elements per group along the input dim"}, \
      {"scheme", ::mq::OptionType::kString, "symmetric", "zero point fixed or fitted",       \
       "symmetric|asymmetric"},                                                             \
      {"reduce_range", ::mq::OptionType::kBool, "false",                                    \
       "fit one bit less of range (PyTorch's x86 default; costs ~6 dB SQNR)"},              \
      {"layers", ::mq::OptionType::kMap, "{}",                                              \
       "types: [Linear, ...], exclude: [globs], replace: drop the low-bit skip set"},       \
      {"overrides", ::mq::OptionType::kMap, "{}",                                           \
       "name or glob -> {dtype, granularity, group_size, scheme, reduce_range}"}
