#pragma once
// A quantizer turns a model into a quantized model.

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mq/model.hpp"
#include "mq/observer.hpp"
#include "mq/plugin.hpp"
#include "mq/progress.hpp"
#include "mq/quantized_model.hpp"

namespace mq {

struct QuantizeContext {
  // Creates a fresh observer of the recipe's observer plugin.
  std::function<std::unique_ptr<Observer>()> make_observer;
  // Calibration batches (static mode); empty for dynamic quantization.
  std::vector<at::Tensor> calibration;
  Progress* progress = nullptr;  // never null when the runner calls
  std::function<void(const std::string&)> warn;
  // Set when the runner streams: hand each entry here, in model order, as soon as it is
  // made, instead of keeping it in QuantizedModel::entries (quantize_planned does). A
  // quantizer that ignores it still works; its entries are written after quantize().
  std::function<void(QuantizedEntry)> emit;
  // The plan to follow: this quantizer's plan() as the runner settled it with the format
  // (Format::check_plan keeps in float what the format cannot store quantized). Empty
  // when nobody planned for the quantizer (the C++ API): it plans itself (planned()).
  std::vector<PlanRow> plan;
};

class MQ_API Quantizer : public Plugin {
 public:
  ~Quantizer() override;
  // What quantize() would do to every tensor, with predicted sizes, without doing it
  // (`mq-pipeline run --dry-run`, `check`, and every run before its work). Throws
  // RecipeError for what quantize() would refuse that is known before any work: a model
  // that cannot run, missing calibration, an observer that cannot fit a spec
  // (Observer::check_spec). `context` is quantize()'s, without `plan` and `emit`.
  virtual std::vector<PlanRow> plan(const Model& model, const QuantizeContext& context) const = 0;
  virtual QuantizedModel quantize(const Model& model, QuantizeContext& context) = 0;

 protected:
  // The plan quantize() follows: context.plan, or this quantizer's own plan().
  std::vector<PlanRow> planned(const Model& model, const QuantizeContext& context) const {
    return context.plan.empty() ? plan(model, context) : context.plan;
  }
};

}  // namespace mq
