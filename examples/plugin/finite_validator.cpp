// finite: rejects an artifact with a NaN or infinite value anywhere (float tensors,
// dequantized weights, scales). Written only against the installed mq SDK.

#include <ATen/ATen.h>

#include <string>

#include "mq/validator.hpp"

namespace {

class FiniteValidator final : public mq::Validator {
 public:
  explicit FiniteValidator(const mq::Options&) {}

  mq::Check validate(const mq::ValidateContext& context) override {
    mq::Check check;
    int64_t bad_tensors = 0;
    for (const mq::QuantizedEntry& e : context.quantized.entries) {
      const at::Tensor values = e.quantized ? e.quantized->dequantize() : e.tensor;
      if (!values.is_floating_point() || at::isfinite(values).all().item<bool>()) continue;
      if (bad_tensors++ == 0) check.message = "non-finite values in " + e.name;
    }
    check.passed = bad_tensors == 0;
    check.metrics = {{"non_finite_tensors", static_cast<double>(bad_tensors)}};
    if (check.passed) check.message = "all values finite";
    return check;
  }
};

}  // namespace

MQ_PLUGIN(FiniteValidator, mq::PluginKind::kValidator, "finite", "1.0.0",
          "Rejects artifacts holding NaN or infinite values")
