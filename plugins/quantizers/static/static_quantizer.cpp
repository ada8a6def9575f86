// static: calibrated quantization. Calibration batches (floats, or token ids) run
// through the model with the input of every selected Linear and Conv layer recorded
// (the model's results do not change; Embeddings are weight-only); the
// recipe's observer turns those inputs into per-tensor activation qparams, stored
// beside the weights (compressed-tensors' input_scale), and the outputs of Linear and
// Conv layers into uint8 output qparams (for TorchScript's quantized::linear and
// conv2d). Weights are quantized as the dynamic quantizer does, with min/max qparams as
// PyTorch's weight observers compute.
//
// `smoothquant_alpha` > 0: SmoothQuant (Xiao et al. 2023) first, for the llama family's
// names (mq::smoothing_groups). For the Linears behind one norm (q/k/v behind
// input_layernorm; gate/up, or a MoE block's router and experts' w1/w3, behind
// post_attention_layernorm; down_proj behind up_proj, whose output rows carry its input's
// channels), each input
// channel j gets s_j = max|X_j|^α / max|W[:, j]|^(1-α) (X over the calibration batches,
// W over those Linears); the norm's weight is divided by s and the Linears' columns
// multiplied by it, so the float model computes the same while the Linears' inputs hand
// their outlier channels to the weights (quantized per output channel). Their inputs are
// observed divided by s; the artifact holds the smoothed norms and weights.

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <set>

#include "mq/error.hpp"
#include "mq/layer_selection.hpp"
#include "mq/quantizer.hpp"
#include "mq/smoothing.hpp"

namespace {

class StaticQuantizer final : public mq::Quantizer {
 public:
  explicit StaticQuantizer(const mq::Options& options)
      : selector_(options, {mq::LayerKind::kLinear, mq::LayerKind::kConv1d, mq::LayerKind::kConv2d}) {
    activation_.dtype = *mq::parse_dtype(options.get_string("activation_dtype"));
    activation_.scheme = *mq::parse_scheme(options.get_string("activation_scheme"));
    activation_.granularity = mq::Granularity::kPerTensor;
    activation_.reduce_range = options.get_bool("activation_reduce_range");
    alpha_ = options.get_float("smoothquant_alpha");
    if (!(alpha_ >= 0 && alpha_ <= 1))
      throw mq::RecipeError(options.where("smoothquant_alpha") + ": smoothquant_alpha must be in [0, 1] (0: off)");
  }

  // Activations are observed with the recipe's observer (weights with min/max, as
  // PyTorch's weight observers): it must fit the activation specs.
  std::vector<mq::PlanRow> plan(const mq::Model& model, const mq::QuantizeContext& context) const override {
    if (!model.runnable)
      throw mq::RecipeError("static quantization runs calibration batches through the model, and this "
                            "model cannot run: mq runs TorchScript models, and Hugging Face directories of a "
                            "family an architecture plugin runs (mq-pipeline plugins lists them; llama, mistral "
                            "and qwen2 are built in); or use the dynamic quantizer");
    if (context.calibration.empty())
      throw mq::RecipeError("static quantization needs calibration data: set calibration.path or "
                            "calibration.random in the recipe");
    for (const mq::QuantSpec& spec : {activation_, output_}) context.make_observer()->check_spec(spec);
    if (alpha_ > 0 && mq::smoothing_groups(model).empty()) throw mq::RecipeError(kNoGroups);
    std::vector<mq::PlanRow> rows = selector_.plan(model);
    for (const mq::PlanRow& row : rows)
      if (row.spec && row.spec->is_block())
        throw mq::RecipeError("static quantization needs integer weights; " + row.spec->to_string() + " (" +
                              row.tensor + ") is llama.cpp's weight-only type: use the dynamic quantizer");
    return rows;
  }

  mq::QuantizedModel quantize(const mq::Model& model, mq::QuantizeContext& context) override {
    mq::QuantizedModel out;
    out.mode = "static";
    out.plan = planned(model, context);
    out.activation_spec = activation_;

    // The layers whose inputs are observed: Linear and Conv layers whose weight gets an
    // integer spec (an Embedding's input is token ids: it is weight-only).
    std::vector<std::string> layers;
    for (size_t i = 0; i < model.tensors.size(); ++i) {
      if (!out.plan[i].spec || !out.plan[i].spec->is_integer()) continue;
      for (const mq::Layer& l : model.layers)
        if (l.weight == model.tensors[i].name && has_activations(l.kind)) layers.push_back(l.name);
    }
    // Each layer's input, and its output as it is and through a ReLU, for the formats
    // whose kernels produce quantized outputs (observed on the float model, as
    // PyTorch's static flow does).
    struct Observed {
      std::unique_ptr<mq::Observer> input, output, relu_output;
    };
    std::map<std::string, Observed> observed;
    for (const std::string& layer : layers)
      observed[layer] = {context.make_observer(), context.make_observer(), context.make_observer()};
    // SmoothQuant: the model as the Linears will see it, and each smoothed layer's s.
    const mq::Model* source = &model;
    mq::Model smoothed;
    std::map<std::string, at::Tensor> divide_by;
    if (alpha_ > 0) {
      smoothed = smooth(model, out, context, divide_by);
      source = &smoothed;
    }
    std::set<std::string> seen;
    int64_t calibration_bytes = 0;
    for (const at::Tensor& batch : context.calibration) calibration_bytes += batch.nbytes();
    context.progress->begin("calibrate", static_cast<int64_t>(context.calibration.size()),
                            calibration_bytes);
    size_t reported = 0;  // batches the progress has counted: visits may come a layer at a time
    const auto report_until = [&](size_t b) {
      for (; reported < b; ++reported)
        context.progress->advance("batch " + std::to_string(reported), context.calibration[reported].nbytes());
    };
    model.runnable->record_layers(context.calibration, layers, [&](size_t b, const auto& activity) {
      report_until(b);
      for (const auto& [layer, a] : activity) {
        seen.insert(layer);
        Observed& o = observed.at(layer);
        const auto s = divide_by.find(layer);
        o.input->observe(s == divide_by.end() ? a.input : a.input / s->second, activation_);
        o.output->observe(a.output, output_);
        o.relu_output->observe(a.output.relu(), output_);
      }
    });
    report_until(context.calibration.size());
    context.progress->end();
    for (const std::string& layer : layers) {
      if (!seen.count(layer)) {
        context.warn("layer " + layer + " saw no input during calibration; its weight is quantized, "
                     "its activations are not");
        continue;
      }
      const Observed& o = observed.at(layer);
      out.activation_qparams[layer] = o.input->qparams(activation_);
      out.output_qparams[layer] = o.output->qparams(output_);
      out.relu_output_qparams[layer] = o.relu_output->qparams(output_);
    }

    out.entries = mq::quantize_planned(*source, out.plan, context, /*observe_weights=*/false);
    return out;
  }

 private:
  static constexpr const char* kNoGroups =
      "smoothquant_alpha: no norm feeding Linears found by the llama family's names (input_layernorm -> "
      "self_attn.q/k/v_proj, post_attention_layernorm -> mlp.gate/up_proj or a MoE block)";

  // `model` with SmoothQuant applied (see the top of the file); `divide_by` gets each
  // smoothed Linear's s, out.transformed and the plan's rules what changed.
  mq::Model smooth(const mq::Model& model, mq::QuantizedModel& out, const mq::QuantizeContext& context,
                   std::map<std::string, at::Tensor>& divide_by) const {
    const std::vector<mq::SmoothingGroup> groups = mq::smoothing_groups(model);
    if (groups.empty()) throw mq::RecipeError(kNoGroups);
    std::vector<std::string> first;
    for (const mq::SmoothingGroup& g : groups) first.push_back(g.layers.front());
    std::map<std::string, at::Tensor> absmax;  // per input channel, float32
    mq::record_inputs(model, context, first, [&](const std::string& layer, const at::Tensor& input) {
      const at::Tensor m = input.reshape({-1, input.size(-1)}).abs().amax(0).to(at::kFloat);
      at::Tensor& a = absmax[layer];
      a = a.defined() ? at::maximum(a, m) : m;
    });
    const auto scale_of = [&](const mq::SmoothingGroup& g, const std::function<at::Tensor(const std::string&)>& current) {
      const auto a = absmax.find(g.layers.front());
      if (a == absmax.end()) {
        context.warn("smoothquant: " + g.layers.front() + " saw no input during calibration; " + g.front +
                     " is not smoothed");
        return at::Tensor();
      }
      at::Tensor w_max;
      for (const std::string& l : g.layers) {
        const at::Tensor m = current(l + ".weight").to(at::kFloat).abs().amax(0);
        w_max = w_max.defined() ? at::maximum(w_max, m) : m;
      }
      at::Tensor s = (a->second.pow(alpha_) / w_max.pow(1 - alpha_)).clamp_min(1e-5);
      s = at::where(a->second.gt(0).logical_and(w_max.gt(0)), s, at::ones_like(s));
      for (const std::string& l : g.layers) divide_by[l] = s;
      return s;
    };
    return mq::fold_scales(model, groups, scale_of, out.plan, out.transformed,
                           fmt::format("; smoothed (SmoothQuant alpha {:g})", alpha_));
  }

  static bool has_activations(mq::LayerKind kind) {
    return kind == mq::LayerKind::kLinear || kind == mq::LayerKind::kConv1d || kind == mq::LayerKind::kConv2d;
  }

  mq::LayerSelector selector_;
  mq::QuantSpec activation_;
  double alpha_ = 0;
  mq::QuantSpec output_ = [] {
    mq::QuantSpec s;
    s.dtype = mq::DType::kUInt8;
    s.scheme = mq::Scheme::kAsymmetric;
    s.granularity = mq::Granularity::kPerTensor;
    return s;
  }();
};

}  // namespace

MQ_PLUGIN(StaticQuantizer, mq::PluginKind::kQuantizer, "static", "1.3.0",
          "Calibrated: weights ahead of time, activation qparams from the observer over calibration batches",
          MQ_SPEC_OPTIONS,
          {"activation_dtype", mq::OptionType::kString, "int8", "activation dtype", "int8|uint8"},
          {"activation_scheme", mq::OptionType::kString, "symmetric",
           "symmetric (what vLLM's static W8A8 kernels take) or asymmetric", "symmetric|asymmetric"},
          {"activation_reduce_range", mq::OptionType::kBool, "false", "fit activations to one bit less"},
          {"smoothquant_alpha", mq::OptionType::kFloat, "0",
           "SmoothQuant's migration strength in [0, 1] (0: off; 0.5 its paper's default), llama family"})
