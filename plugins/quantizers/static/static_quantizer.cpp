// static: calibrated quantization. Calibration batches (floats, or token ids) run
// through the model with the input of every selected Linear and Conv layer recorded
// (the model's results do not change; Embeddings are weight-only); the
// recipe's observer turns those inputs into per-tensor activation qparams, stored
// beside the weights (compressed-tensors' input_scale), and the outputs of Linear and
// Conv layers into uint8 output qparams (for TorchScript's quantized::linear and
// conv2d). Weights are quantized as the dynamic quantizer does, with min/max qparams as
// PyTorch's weight observers compute.

#include <ATen/ATen.h>

#include <set>

#include "mq/error.hpp"
#include "mq/layer_selection.hpp"
#include "mq/quantizer.hpp"

namespace {

class StaticQuantizer final : public mq::Quantizer {
 public:
  explicit StaticQuantizer(const mq::Options& options)
      : selector_(options, {mq::LayerKind::kLinear, mq::LayerKind::kConv1d, mq::LayerKind::kConv2d}) {
    activation_.dtype = *mq::parse_dtype(options.get_string("activation_dtype"));
    activation_.scheme = *mq::parse_scheme(options.get_string("activation_scheme"));
    activation_.granularity = mq::Granularity::kPerTensor;
    activation_.reduce_range = options.get_bool("activation_reduce_range");
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
    std::set<std::string> seen;
    int64_t calibration_bytes = 0;
    for (const at::Tensor& batch : context.calibration) calibration_bytes += batch.nbytes();
    context.progress->begin("calibrate", static_cast<int64_t>(context.calibration.size()),
                            calibration_bytes);
    model.runnable->record_layers(context.calibration, layers, [&](size_t b, const auto& activity) {
      for (const auto& [layer, a] : activity) {
        seen.insert(layer);
        Observed& o = observed.at(layer);
        o.input->observe(a.input, activation_);
        o.output->observe(a.output, output_);
        o.relu_output->observe(a.output.relu(), output_);
      }
      context.progress->advance("batch " + std::to_string(b), context.calibration[b].nbytes());
    });
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

    out.entries = mq::quantize_planned(model, out.plan, context, /*observe_weights=*/false);
    return out;
  }

 private:
  static bool has_activations(mq::LayerKind kind) {
    return kind == mq::LayerKind::kLinear || kind == mq::LayerKind::kConv1d || kind == mq::LayerKind::kConv2d;
  }

  mq::LayerSelector selector_;
  mq::QuantSpec activation_;
  mq::QuantSpec output_ = [] {
    mq::QuantSpec s;
    s.dtype = mq::DType::kUInt8;
    s.scheme = mq::Scheme::kAsymmetric;
    s.granularity = mq::Granularity::kPerTensor;
    return s;
  }();
};

}  // namespace

MQ_PLUGIN(StaticQuantizer, mq::PluginKind::kQuantizer, "static", "1.2.0",
          "Calibrated: weights ahead of time, activation qparams from the observer over calibration batches",
          MQ_SPEC_OPTIONS,
          {"activation_dtype", mq::OptionType::kString, "int8", "activation dtype", "int8|uint8"},
          {"activation_scheme", mq::OptionType::kString, "symmetric",
           "symmetric (what vLLM's static W8A8 kernels take) or asymmetric", "symmetric|asymmetric"},
          {"activation_reduce_range", mq::OptionType::kBool, "false", "fit activations to one bit less"})
