// dynamic: weights quantized ahead of time, activations (if at all) at run time by the
// kernels that load the artifact: int8/uint8 W8A8-dynamic, int4/uint4 weight-only
// (group-wise by default), fp16/bf16 casts. Layer selection: mq/layer_selection.hpp.

#include <ATen/ATen.h>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/layer_selection.hpp"
#include "mq/quantizer.hpp"

namespace {

class DynamicQuantizer final : public mq::Quantizer {
 public:
  explicit DynamicQuantizer(const mq::Options& options) : selector_(options) {}

  std::vector<mq::PlanRow> plan(const mq::Model& model) const override {
    return selector_.plan(model);
  }

  mq::QuantizedModel quantize(const mq::Model& model, mq::QuantizeContext& context) override {
    mq::QuantizedModel out;
    out.mode = "dynamic";
    out.plan = plan(model);
    int64_t total_bytes = 0;
    for (const mq::NamedTensor& t : model.tensors) total_bytes += t.tensor.nbytes();
    context.progress->begin("quantize", static_cast<int64_t>(model.tensors.size()), total_bytes);
    for (size_t i = 0; i < model.tensors.size(); ++i) {
      const mq::NamedTensor& t = model.tensors[i];
      const auto& spec = out.plan[i].spec;
      if (spec)
        out.entries.push_back({t.name, at::Tensor(), mq::quantize_weight(t.tensor, *spec, observer(*spec, context).get())});
      else
        out.entries.push_back({t.name, t.tensor, std::nullopt});
      context.progress->advance(t.name, t.tensor.nbytes());
    }
    context.progress->end();
    return out;
  }

 private:
  static std::unique_ptr<mq::Observer> observer(const mq::QuantSpec& spec, mq::QuantizeContext& context) {
    return spec.is_integer() ? context.make_observer() : nullptr;
  }

  mq::LayerSelector selector_;
};

}  // namespace

MQ_PLUGIN(DynamicQuantizer, mq::PluginKind::kQuantizer, "dynamic", "1.1.0",
          "Weights ahead of time (int8/uint8, int4/uint4 group-wise, fp16/bf16), "
          "activations at run time",
          MQ_SPEC_OPTIONS)
