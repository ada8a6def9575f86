// percentile: clips outliers. Per batch (and per channel when the spec is per channel)
// the range is [value of rank N - k + 1, value of rank k] with k = ceil(p / 100 * N)
// (nearest rank; p = 100 is min/max); over batches the bounds are averaged. qparams
// then follow PyTorch's calculate_qparams as for minmax. PyTorch has no such observer.

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/observer.hpp"

namespace {

class PercentileObserver final : public mq::Observer {
 public:
  explicit PercentileObserver(const mq::Options& options)
      : percentile_(options.get_float("percentile")), eps_(static_cast<float>(options.get_float("eps"))) {
    if (!(percentile_ > 50.0 && percentile_ <= 100.0))
      throw mq::RecipeError(options.where("percentile") + ": percentile must be in (50, 100]");
  }

  void observe(const at::Tensor& tensor, const mq::QuantSpec& spec) override {
    if (tensor.numel() == 0) return;
    if (spec.granularity == mq::Granularity::kPerGroup)
      throw mq::RecipeError("the percentile observer works per tensor or per channel, not per group");
    at::Tensor x = tensor.to(at::kFloat);
    if (spec.granularity == mq::Granularity::kPerChannel && x.dim() > 0)
      x = x.movedim(spec.axis, 0).reshape({x.size(spec.axis), -1});
    else
      x = x.reshape({1, -1});
    const int64_t n = x.size(1);
    const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(percentile_ / 100.0 * n)));
    const at::Tensor hi = std::get<0>(x.kthvalue(std::min(k, n), 1));
    const at::Tensor lo = std::get<0>(x.kthvalue(std::max<int64_t>(1, n - k + 1), 1));
    if (!sum_lo_.defined()) {
      sum_lo_ = lo.to(at::kDouble);
      sum_hi_ = hi.to(at::kDouble);
    } else {
      if (lo.numel() != sum_lo_.numel())
        throw mq::InputError("percentile observer saw " + std::to_string(lo.numel()) +
                             " channels after " + std::to_string(sum_lo_.numel()));
      sum_lo_ += lo;
      sum_hi_ += hi;
    }
    ++batches_;
  }

  mq::QParams qparams(const mq::QuantSpec& spec) const override {
    if (!batches_) {
      const float inf = std::numeric_limits<float>::infinity();
      return mq::qparams_from_min_max(at::full({1}, inf), at::full({1}, -inf), spec, eps_);
    }
    return mq::qparams_from_min_max((sum_lo_ / batches_).to(at::kFloat), (sum_hi_ / batches_).to(at::kFloat),
                                    spec, eps_);
  }

 private:
  double percentile_;
  float eps_;
  int64_t batches_ = 0;
  at::Tensor sum_lo_, sum_hi_;
};

}  // namespace

MQ_PLUGIN(PercentileObserver, mq::PluginKind::kObserver, "percentile", "1.0.0",
          "Clip to the p-th percentile (nearest rank), per tensor or per channel",
          {"percentile", mq::OptionType::kFloat, "99.99", "percentile of the upper bound, in (50, 100]"},
          {"eps", mq::OptionType::kFloat, "1.1920928955078125e-07", "smallest scale allowed"})
