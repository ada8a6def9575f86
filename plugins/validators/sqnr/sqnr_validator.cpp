// sqnr: signal-to-quantization-noise ratio of every quantized tensor against its
// original, 10 log10(mean x^2 / mean (x - x_hat)^2) dB. Noise power below 1e-10 is
// infinite SQNR (an exact tensor, including an all-zero one); an all-zero signal with
// noise is -infinite. The model figure is the mean over tensors with a finite SQNR
// (exact tensors do not pull it up; it is infinite when all are exact, and -infinite
// when any tensor is), reported beside the worst tensor. When the original model runs
// and the written artifact loads as a runnable model, also the output SQNR of the
// artifact against the original on the model's input (ValidateContext::input); option
// min_output_db. An artifact that fails where the original runs fails the check.

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <utility>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/validator.hpp"

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// From the mean signal and noise powers.
double sqnr_db(double signal, double noise) {
  if (!(noise >= 1e-10)) return std::isnan(noise) ? -kInf : kInf;
  if (signal <= 0.0) return -kInf;
  return 10.0 * std::log10(signal / noise);
}

double sqnr_db(const at::Tensor& x, const at::Tensor& x_hat) {
  const at::Tensor xd = x.to(at::kDouble), yd = x_hat.to(at::kDouble);
  return sqnr_db(xd.pow(2).mean().item<double>(), (xd - yd).pow(2).mean().item<double>());
}

// A quantized tensor against its original in one pass (no dequantized copy).
double sqnr_db(const at::Tensor& x, const mq::QuantizedTensor& q) {
  const mq::DequantizedComparison c = mq::compare_dequantized(x, q);
  const double n = static_cast<double>(x.numel());
  if (n == 0) return kInf;  // nothing to lose
  return sqnr_db(c.signal / n, c.noise / n);
}

std::string db(double v) { return std::isinf(v) ? (v > 0 ? "inf dB" : "-inf dB") : fmt::format("{:.2f} dB", v); }

class SqnrValidator final : public mq::Validator {
 public:
  explicit SqnrValidator(const mq::Options& options)
      : min_db_(options.get_float("min_db")),
        min_layer_db_(options.get_float("min_layer_db")),
        min_output_db_(options.get_float("min_output_db")) {}

  bool per_entry() const override { return true; }

  void entry(const mq::ValidateContext&, const mq::QuantizedEntry& e,
             const at::Tensor* original) override {
    if (!e.quantized) return;
    if (!original)
      throw mq::InputError("quantized tensor '" + e.name +
                           "' has no counterpart in the original model");
    const double v = sqnr_db(*original, *e.quantized);
    per_tensor_.push_back({e.name, "sqnr_db", v});
    if (std::isfinite(v)) {
      sum_ += v;
      ++finite_;
    }
    if (v < worst_ || per_tensor_.size() == 1) {
      worst_ = v;
      worst_name_ = e.name;
    }
  }

  mq::Check validate(const mq::ValidateContext& context) override {
    mq::Check check;
    const auto tensors = static_cast<int>(per_tensor_.size());
    check.tensor_metrics = std::move(per_tensor_);  // a row a tensor: up to 100,000
    double mean = finite_ ? sum_ / finite_ : (tensors ? kInf : 0.0);
    if (worst_ == -kInf) mean = -kInf;
    check.metrics = {{"mean_db", mean},
                     {"worst_db", tensors ? worst_ : 0.0},
                     {"tensors", static_cast<double>(tensors)},
                     {"min_db", min_db_},
                     {"min_layer_db", min_layer_db_}};
    if (tensors == 0) {
      check.message = "no quantized tensors to compare";
      return check;
    }
    check.message = fmt::format("mean {} over {} tensors, worst {} ({})", db(mean), tensors,
                                db(worst_), worst_name_);
    output_sqnr(context, check);
    if (mean < min_db_) {
      check.passed = false;
      check.message = fmt::format("mean SQNR {} is below min_db {}; worst tensor {} at {}",
                                  db(mean), db(min_db_), worst_name_, db(worst_));
    } else if (worst_ < min_layer_db_) {
      check.passed = false;
      check.message = fmt::format("tensor {} has SQNR {}, below min_layer_db {} (mean {})",
                                  worst_name_, db(worst_), db(min_layer_db_), db(mean));
    }
    if (check.passed && !check.metrics.empty() && check.metrics.back().first == "output_sqnr_db" &&
        check.metrics.back().second < min_output_db_) {
      check.passed = false;
      check.message = fmt::format("output SQNR {} is below min_output_db {}", db(check.metrics.back().second),
                                  db(min_output_db_));
    }
    return check;
  }

 private:
  // The whole model's output SQNR, when both the original and the artifact can run.
  void output_sqnr(const mq::ValidateContext& context, mq::Check& check) const {
    if (!context.input.defined() || !context.artifact) return;
    const auto [reference, y] = mq::forward_both(context.original, *context.artifact, context.input, check);
    if (!y.defined()) return;
    const double v = sqnr_db(reference, y);
    check.metrics.push_back({"output_sqnr_db", v});
    check.message += "; output " + db(v);
  }

  double min_db_, min_layer_db_, min_output_db_;
  // Summed by entry().
  std::vector<mq::TensorMetric> per_tensor_;
  double sum_ = 0.0, worst_ = kInf;
  int finite_ = 0;
  std::string worst_name_;
};

}  // namespace

MQ_PLUGIN(SqnrValidator, mq::PluginKind::kValidator, "sqnr", "1.2.0",
          "Signal-to-quantization-noise ratio per tensor, mean and worst",
          {"min_db", mq::OptionType::kFloat, "-.inf", "fail when the mean SQNR is below this"},
          {"min_layer_db", mq::OptionType::kFloat, "-.inf", "fail when any tensor is below this"},
          {"min_output_db", mq::OptionType::kFloat, "-.inf",
           "fail when the model's output SQNR (runnable models) is below this"})
