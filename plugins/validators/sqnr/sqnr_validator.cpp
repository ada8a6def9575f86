// sqnr: signal-to-quantization-noise ratio of every quantized tensor against its
// original, 10 log10(mean x^2 / mean (x - x_hat)^2) dB. Noise power below 1e-10 is
// infinite SQNR (an exact tensor, including an all-zero one); an all-zero signal with
// noise is -infinite. The model figure is the mean over tensors with a finite SQNR
// (exact tensors do not pull it up; it is infinite when all are exact, and -infinite
// when any tensor is), reported beside the worst tensor.

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "mq/error.hpp"
#include "mq/validator.hpp"

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

double sqnr_db(const at::Tensor& x, const at::Tensor& x_hat) {
  const at::Tensor xd = x.to(at::kDouble), yd = x_hat.to(at::kDouble);
  const double signal = xd.pow(2).mean().item<double>();
  const double noise = (xd - yd).pow(2).mean().item<double>();
  if (!(noise >= 1e-10)) return std::isnan(noise) ? -kInf : kInf;
  if (signal <= 0.0) return -kInf;
  return 10.0 * std::log10(signal / noise);
}

std::string db(double v) { return std::isinf(v) ? (v > 0 ? "inf dB" : "-inf dB") : fmt::format("{:.2f} dB", v); }

class SqnrValidator final : public mq::Validator {
 public:
  explicit SqnrValidator(const mq::Options& options)
      : min_db_(options.get_float("min_db")), min_layer_db_(options.get_float("min_layer_db")) {}

  mq::Check validate(const mq::ValidateContext& context) override {
    mq::Check check;
    double sum = 0.0, worst = kInf;
    int finite = 0, tensors = 0;
    std::string worst_name;
    for (const mq::QuantizedEntry& e : context.quantized.entries) {
      if (!e.quantized) continue;
      const at::Tensor* original = context.original.find(e.name);
      if (!original)
        throw mq::InputError("quantized tensor '" + e.name + "' has no counterpart in the original model");
      const double v = sqnr_db(*original, e.quantized->dequantize());
      check.tensor_metrics.push_back({e.name, "sqnr_db", v});
      ++tensors;
      if (std::isfinite(v)) {
        sum += v;
        ++finite;
      }
      if (v < worst || worst_name.empty()) {
        worst = v;
        worst_name = e.name;
      }
    }
    double mean = finite ? sum / finite : (tensors ? kInf : 0.0);
    if (worst == -kInf) mean = -kInf;
    check.metrics = {{"mean_db", mean}, {"worst_db", tensors ? worst : 0.0},
                     {"tensors", static_cast<double>(tensors)},
                     {"min_db", min_db_}, {"min_layer_db", min_layer_db_}};
    if (tensors == 0) {
      check.message = "no quantized tensors to compare";
      return check;
    }
    check.message = fmt::format("mean {} over {} tensors, worst {} ({})", db(mean), tensors, db(worst),
                                worst_name);
    if (mean < min_db_) {
      check.passed = false;
      check.message = fmt::format("mean SQNR {} is below min_db {}; worst tensor {} at {}", db(mean),
                                  db(min_db_), worst_name, db(worst));
    } else if (worst < min_layer_db_) {
      check.passed = false;
      check.message = fmt::format("tensor {} has SQNR {}, below min_layer_db {} (mean {})", worst_name,
                                  db(worst), db(min_layer_db_), db(mean));
    }
    return check;
  }

 private:
  double min_db_, min_layer_db_;
};

}  // namespace

MQ_PLUGIN(SqnrValidator, mq::PluginKind::kValidator, "sqnr", "1.0.0",
          "Signal-to-quantization-noise ratio per tensor, mean and worst",
          {"min_db", mq::OptionType::kFloat, "-.inf", "fail when the mean SQNR is below this"},
          {"min_layer_db", mq::OptionType::kFloat, "-.inf", "fail when any tensor is below this"})
