// dynamic: weights quantized ahead of time, activations quantized at run time by the
// kernels that load the artifact (PyTorch's quantize_dynamic, vLLM's W8A8 dynamic).

#include <ATen/ATen.h>
#include <fnmatch.h>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/quantizer.hpp"

namespace {

class DynamicQuantizer final : public mq::Quantizer {
 public:
  explicit DynamicQuantizer(const mq::Options& options)
      : exclude_(options.get_string_list("exclude")) {
    spec_.dtype = *mq::parse_dtype(options.get_string("dtype"));
    spec_.granularity = *mq::parse_granularity(options.get_string("granularity"));
    spec_.scheme = *mq::parse_scheme(options.get_string("scheme"));
    spec_.reduce_range = options.get_bool("reduce_range");
    spec_.axis = 0;
  }

  mq::QuantizedModel quantize(const mq::Model& model, mq::QuantizeContext& context) override {
    mq::QuantizedModel out;
    out.mode = "dynamic";
    int64_t total_bytes = 0;
    for (const mq::NamedTensor& t : model.tensors) total_bytes += t.tensor.nbytes();
    context.progress->begin("quantize", static_cast<int64_t>(model.tensors.size()), total_bytes);
    for (const mq::NamedTensor& t : model.tensors) {
      mq::QuantizedEntry entry{t.name, t.tensor, std::nullopt};
      mq::PlanRow row{t.name, decide(model, t), std::nullopt};
      if (row.rule == kQuantizeRule) {
        entry.quantized = quantize_weight(t.tensor, context);
        entry.tensor = at::Tensor();
        row.spec = spec_;
      }
      out.entries.push_back(std::move(entry));
      out.plan.push_back(std::move(row));
      context.progress->advance(t.name, t.tensor.nbytes());
    }
    context.progress->end();
    return out;
  }

 private:
  static constexpr const char* kQuantizeRule = "Linear weight";

  // The rule that decides what happens to a tensor; kQuantizeRule quantizes it.
  std::string decide(const mq::Model& model, const mq::NamedTensor& t) const {
    const mq::Layer* layer = nullptr;
    for (const mq::Layer& l : model.layers)
      if (l.weight == t.name) layer = &l;
    if (!layer) return "not a layer weight";
    if (layer->kind != mq::LayerKind::kLinear)
      return std::string(mq::to_string(layer->kind)) + " weight (dynamic quantizes Linear only)";
    if (t.tensor.dim() != 2) return "Linear weight is not 2-D";
    if (!t.tensor.is_floating_point()) return "not a floating-point tensor";
    for (const std::string& pattern : exclude_)
      if (fnmatch(pattern.c_str(), layer->name.c_str(), 0) == 0 ||
          fnmatch(pattern.c_str(), t.name.c_str(), 0) == 0)
        return "exclude: " + pattern;
    return kQuantizeRule;
  }

  mq::QuantizedTensor quantize_weight(const at::Tensor& w, mq::QuantizeContext& context) const {
    std::unique_ptr<mq::Observer> observer = context.make_observer();
    observer->observe(w, spec_);
    mq::QParams qp = observer->qparams(spec_);
    // Scales are stored in the weight's dtype (compressed-tensors); quantize with the
    // rounded scale so that what is stored is exactly what was used.
    if (w.scalar_type() != at::kFloat) {
      const at::Tensor rounded = qp.scale.to(w.scalar_type()).to(at::kFloat);
      qp.scale = at::where(rounded > 0, rounded, qp.scale);
    }
    return mq::quantize(w, qp, spec_);
  }

  mq::QuantSpec spec_;
  std::vector<std::string> exclude_;
};

}  // namespace

MQ_PLUGIN(DynamicQuantizer, mq::PluginKind::kQuantizer, "dynamic", "1.0.0",
          "Weight-only ahead of time, activations at run time (int8 Linear weights)",
          {"dtype", mq::OptionType::kString, "int8", "weight dtype", "int8"},
          {"granularity", mq::OptionType::kString, "per_channel", "scale per output channel or per tensor",
           "per_channel|per_tensor"},
          {"scheme", mq::OptionType::kString, "symmetric", "zero point fixed at 0 or fitted",
           "symmetric|asymmetric"},
          {"reduce_range", mq::OptionType::kBool, "false",
           "use 7 bits (PyTorch's x86 default; costs ~6 dB SQNR)"},
          {"exclude", mq::OptionType::kStringList, "[]",
           "glob patterns of layer or tensor names to keep in float"})
