// range: every stored value is one the artifact's readers can use. Integers inside
// their range (int4 checked unpacked), scales finite and > 0, zero points in range,
// float tensors finite (an fp16/bf16 cast that overflowed names its tensor), no NaN in
// the original of an integer tensor (it would be stored as the lowest integer), and every
// dequantized value inside the original tensor's range (widened to include zero, as
// the qparams are) plus one quantization step; optionally |x_hat| <= max_abs.

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/validator.hpp"

namespace {

class RangeValidator final : public mq::Validator {
 public:
  explicit RangeValidator(const mq::Options& options) : max_abs_(options.get_float("max_abs")) {
    if (!(max_abs_ > 0.0))
      throw mq::RecipeError(options.where("max_abs") + ": max_abs must be positive");
  }

  bool per_entry() const override { return true; }

  void entry(const mq::ValidateContext&, const mq::QuantizedEntry& e,
             const at::Tensor* original) override {
    ++checked_;
    if (e.quantized)
      check_tensor(e.name, *e.quantized, original, problems_);
    else if (e.tensor.is_floating_point() && !at::isfinite(e.tensor).all().item<bool>())
      problems_.push_back(e.name + " holds NaN or infinite values");
  }

  mq::Check validate(const mq::ValidateContext&) override {
    mq::Check check;
    check.passed = problems_.empty();
    check.metrics = {{"tensors", static_cast<double>(checked_)},
                     {"violations", static_cast<double>(problems_.size())}};
    if (check.passed)
      check.message = fmt::format("{} tensors in range", checked_);
    else
      check.message =
          problems_.front() +
          (problems_.size() > 1 ? fmt::format(" (and {} more)", problems_.size() - 1) : "");
    return check;
  }

 private:
  void check_tensor(const std::string& name, const mq::QuantizedTensor& q, const at::Tensor* original,
                    std::vector<std::string>& problems) const {
    const size_t before = problems.size();
    if (q.spec.is_integer()) {
      // PyTorch's reduce_range narrows the fit but rounds extremes to the full storage range.
      mq::QuantSpec storage = q.spec;
      storage.reduce_range = false;
      const int64_t qmin = q.spec.reduce_range ? storage.qmin() : q.spec.qmin();
      const int64_t qmax = q.spec.reduce_range ? storage.qmax() : q.spec.qmax();
      if (q.data.numel()) {
        const int64_t lo = q.data.min().item<int64_t>(), hi = q.data.max().item<int64_t>();
        if (lo < qmin || hi > qmax)
          problems.push_back(fmt::format("{} has integers in [{}, {}], outside [{}, {}]", name, lo, hi, qmin, qmax));
      }
      const at::Tensor scale = q.qparams.scale.to(at::kFloat);
      if (!at::isfinite(scale).all().item<bool>() || !(scale > 0).all().item<bool>())
        problems.push_back(fmt::format("{} has a scale that is not finite and positive (min {})", name,
                                       scale.min().item<float>()));
      const at::Tensor zp = q.qparams.zero_point.to(at::kLong);
      if (zp.numel() && (zp.min().item<int64_t>() < storage.qmin() || zp.max().item<int64_t>() > storage.qmax()))
        problems.push_back(fmt::format("{} has a zero point outside [{}, {}]", name, storage.qmin(), storage.qmax()));
      if (problems.size() != before) return;
    }
    // x_hat = q.dequantize(), seen in one pass without making it (a tensor without an
    // original is compared with itself: only x_hat's figures are used).
    const mq::DequantizedComparison x_hat = mq::compare_dequantized(original ? *original : q.dequantize(), q);
    if (x_hat.non_finite) {
      if (original && !at::isfinite(*original).all().item<bool>())
        problems.push_back(name + " holds NaN or infinite values, as the original does");
      else
        problems.push_back(name + (q.spec.is_integer()
                                       ? " dequantizes to NaN or infinite values"
                                       : " overflows " + q.spec.to_string() +
                                             " (values beyond its range became infinite)"));
      return;
    }
    // An integer has no NaN: rounding (PyTorch's and ours) stores one as the lowest, a value
    // the original never had there. (The sum of x^2 is NaN exactly when x holds a NaN.)
    if (original && std::isnan(x_hat.signal)) {
      problems.push_back(name + ": the original holds NaN, stored as the lowest integer");
      return;
    }
    const double reach = std::max(std::abs(double{x_hat.min}), std::abs(double{x_hat.max}));
    if (q.data.numel() && reach > max_abs_)
      problems.push_back(fmt::format("{} reaches |x| = {:.6g}, above max_abs {:.6g}", name, reach, max_abs_));
    if (!original || !original->numel()) return;
    mq::QuantSpec whole;
    whole.granularity = mq::Granularity::kPerTensor;
    const auto [min, max] = mq::min_max(*original, whole);
    const double lo = std::min(min.item<double>(), 0.0);
    const double hi = std::max(max.item<double>(), 0.0);
    // One step: the largest scale, or one unit in the last place of a float cast.
    const double ulp = std::ldexp(1.0, -mq::traits(q.spec.dtype).mantissa);
    const double step = q.spec.is_integer() ? q.qparams.scale.to(at::kDouble).max().item<double>()
                                            : ulp * std::max(std::abs(lo), std::abs(hi));
    const double tolerance = step + 1e-6 * std::max(std::abs(lo), std::abs(hi));
    const double got_lo = x_hat.min, got_hi = x_hat.max;
    if (got_lo < lo - tolerance || got_hi > hi + tolerance)
      problems.push_back(fmt::format("{} dequantizes to [{:.6g}, {:.6g}], outside the original [{:.6g}, {:.6g}] "
                                     "widened by one step ({:.6g})", name, got_lo, got_hi, lo, hi, step));
  }

  double max_abs_;
  // Gathered by entry().
  std::vector<std::string> problems_;
  int64_t checked_ = 0;
};

}  // namespace

MQ_PLUGIN(RangeValidator, mq::PluginKind::kValidator, "range", "1.2.0",
          "Integers, scales, zero points and dequantized values inside their ranges",
          {"max_abs", mq::OptionType::kFloat, ".inf", "largest |dequantized value| allowed"})
