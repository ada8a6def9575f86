// dynamic: weights quantized ahead of time, activations (if at all) at run time by the
// kernels that load the artifact: int8/uint8 W8A8-dynamic, int4/uint4 weight-only
// (group-wise by default), fp16/bf16 casts. Layer selection: mq/layer_selection.hpp.

#include <ATen/ATen.h>

#include <set>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/layer_selection.hpp"
#include "mq/quantizer.hpp"

namespace {

class DynamicQuantizer final : public mq::Quantizer {
 public:
  // PyTorch's quantize_dynamic default set: Linear and the recurrent layers.
  explicit DynamicQuantizer(const mq::Options& options)
      : selector_(options, {mq::LayerKind::kLinear, mq::LayerKind::kLSTM, mq::LayerKind::kGRU,
                            mq::LayerKind::kLSTMCell, mq::LayerKind::kGRUCell}) {}

  // Weights are observed with the recipe's observer: it must fit every spec planned.
  std::vector<mq::PlanRow> plan(const mq::Model& model, const mq::QuantizeContext& context) const override {
    std::vector<mq::PlanRow> rows = selector_.plan(model);
    std::set<std::string> checked;
    for (const mq::PlanRow& row : rows)
      if (row.spec && row.spec->is_integer() && checked.insert(row.spec->to_string()).second)
        context.make_observer()->check_spec(*row.spec);
    return rows;
  }

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

MQ_PLUGIN(DynamicQuantizer, mq::PluginKind::kQuantizer, "dynamic", "1.2.0",
          "Weights ahead of time (int8/uint8, int4/uint4 group-wise, fp16/bf16, llama.cpp block types), "
          "activations at run time",
          MQ_SPEC_OPTIONS)
