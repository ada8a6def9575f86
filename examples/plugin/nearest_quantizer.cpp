// nearest: a quantizer skeleton. Weights of the selected layers rounded to the nearest
// step of the recipe observer's qparams; activations left to the kernels (dynamic
// mode). The SDK's layer selection (mq/layer_selection.hpp) gives it the recipe options
// every built-in quantizer takes: dtype, granularity, layers, overrides, ...
// Written only against the installed mq SDK.

#include "mq/layer_selection.hpp"
#include "mq/quantizer.hpp"

namespace {

class NearestQuantizer final : public mq::Quantizer {
 public:
  explicit NearestQuantizer(const mq::Options& options) : selector_(options, {mq::LayerKind::kLinear}) {}

  // Required: what quantize() would do to every tensor, before any work; throw
  // mq::RecipeError for what it would refuse.
  std::vector<mq::PlanRow> plan(const mq::Model& model, const mq::QuantizeContext& context) const override {
    std::vector<mq::PlanRow> rows = selector_.plan(model);
    for (const mq::PlanRow& row : rows)
      if (row.spec && row.spec->is_integer()) context.make_observer()->check_spec(*row.spec);
    return rows;
  }

  // Required: follow the plan as the runner settled it with the format (planned());
  // quantize_planned() observes each weight, quantizes it and hands it on as it goes.
  mq::QuantizedModel quantize(const mq::Model& model, mq::QuantizeContext& context) override {
    mq::QuantizedModel out;
    out.mode = "dynamic";
    out.plan = planned(model, context);
    out.entries = mq::quantize_planned(model, out.plan, context, /*observe_weights=*/true);
    return out;
  }

 private:
  mq::LayerSelector selector_;
};

}  // namespace

MQ_PLUGIN(NearestQuantizer, mq::PluginKind::kQuantizer, "nearest", "1.0.0",
          "Weights rounded to the nearest step of the observer's qparams", MQ_SPEC_OPTIONS)
