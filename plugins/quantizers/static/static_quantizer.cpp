// static: calibrated quantization. Calibration batches run through the model with the
// input of every selected layer recorded (the model's results do not change); the
// recipe's observer turns those inputs into per-tensor activation qparams, stored
// beside the weights (compressed-tensors' input_scale), and the outputs of Linear
// layers into uint8 output qparams (for TorchScript's quantized::linear). Weights are
// quantized as the dynamic quantizer does, with min/max qparams as PyTorch's weight
// observers compute.

#include <ATen/ATen.h>

#include "mq/error.hpp"
#include "mq/layer_selection.hpp"
#include "mq/quantizer.hpp"

namespace {

class StaticQuantizer final : public mq::Quantizer {
 public:
  explicit StaticQuantizer(const mq::Options& options) : selector_(options) {
    activation_.dtype = *mq::parse_dtype(options.get_string("activation_dtype"));
    activation_.scheme = *mq::parse_scheme(options.get_string("activation_scheme"));
    activation_.granularity = mq::Granularity::kPerTensor;
    activation_.reduce_range = options.get_bool("activation_reduce_range");
  }

  std::vector<mq::PlanRow> plan(const mq::Model& model) const override { return selector_.plan(model); }

  mq::QuantizedModel quantize(const mq::Model& model, mq::QuantizeContext& context) override {
    if (!model.runnable)
      throw mq::RecipeError("static quantization runs calibration batches through the model, and this "
                            "model cannot run (use a TorchScript model, or the dynamic quantizer)");
    if (context.calibration.empty())
      throw mq::RecipeError("static quantization needs calibration data: set calibration.path or "
                            "calibration.random in the recipe");
    mq::QuantizedModel out;
    out.mode = "static";
    out.plan = plan(model);
    out.activation_spec = activation_;

    // The layers whose inputs are observed: those whose weight gets an integer spec.
    std::vector<std::string> layers;
    for (size_t i = 0; i < model.tensors.size(); ++i) {
      if (!out.plan[i].spec || !out.plan[i].spec->is_integer()) continue;
      for (const mq::Layer& l : model.layers)
        if (l.weight == model.tensors[i].name) layers.push_back(l.name);
    }
    context.progress->begin("calibrate", static_cast<int64_t>(context.calibration.size()), 0);
    const auto inputs = model.runnable->layer_inputs(context.calibration, layers);
    std::map<std::string, std::unique_ptr<mq::Observer>> observers, output_observers;
    for (const std::string& layer : layers) observers[layer] = context.make_observer();
    // A Linear layer's output is its float result on the recorded input (what PyTorch's
    // static flow observes), for the formats whose kernels produce quantized outputs.
    std::map<std::string, const mq::Layer*> linear;
    for (const mq::Layer& l : model.layers)
      if (l.kind == mq::LayerKind::kLinear && observers.count(l.name) && model.find(l.weight)) {
        linear[l.name] = &l;
        output_observers[l.name] = context.make_observer();
      }
    for (size_t b = 0; b < inputs.size(); ++b) {
      for (const auto& [layer, x] : inputs[b]) {
        observers.at(layer)->observe(x, activation_);
        if (const auto it = linear.find(layer); it != linear.end())
          output_observers.at(layer)->observe(linear_output(model, *it->second, x), output_);
      }
      context.progress->advance("batch " + std::to_string(b), context.calibration[b].nbytes());
    }
    context.progress->end();
    for (const std::string& layer : layers) {
      bool seen = false;
      for (const auto& batch : inputs) seen = seen || batch.count(layer);
      if (!seen) {
        context.warn("layer " + layer + " saw no input during calibration; its weight is quantized, "
                     "its activations are not");
        continue;
      }
      out.activation_qparams[layer] = observers.at(layer)->qparams(activation_);
      if (linear.count(layer)) out.output_qparams[layer] = output_observers.at(layer)->qparams(output_);
    }

    out.entries = mq::quantize_planned(model, out.plan, context, /*observe_weights=*/false);
    return out;
  }

 private:
  static at::Tensor linear_output(const mq::Model& model, const mq::Layer& layer, const at::Tensor& x) {
    const at::Tensor* weight = model.find(layer.weight);
    const at::Tensor* bias = layer.bias.empty() ? nullptr : model.find(layer.bias);
    const at::Tensor w = weight->to(at::kFloat);
    if (x.size(-1) != w.size(1))
      throw mq::InputError("layer " + layer.name + " saw an input of " + std::to_string(x.size(-1)) +
                           " features during calibration; its weight takes " + std::to_string(w.size(1)));
    return at::linear(x.to(at::kFloat), w, bias ? c10::optional<at::Tensor>(bias->to(at::kFloat)) : c10::nullopt);
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

MQ_PLUGIN(StaticQuantizer, mq::PluginKind::kQuantizer, "static", "1.1.0",
          "Calibrated: weights ahead of time, activation qparams from the observer over calibration batches",
          MQ_SPEC_OPTIONS,
          {"activation_dtype", mq::OptionType::kString, "int8", "activation dtype", "int8|uint8"},
          {"activation_scheme", mq::OptionType::kString, "symmetric",
           "symmetric (what vLLM's static W8A8 kernels take) or asymmetric", "symmetric|asymmetric"},
          {"activation_reduce_range", mq::OptionType::kBool, "false", "fit activations to one bit less"})
