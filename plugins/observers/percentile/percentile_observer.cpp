// percentile: clips outliers. Per batch (and per channel when the spec is per channel)
// the range is [value of rank N - k + 1, value of rank k] with k = ceil(p / 100 * N)
// (nearest rank; p = 100 is min/max); over batches the bounds are averaged. qparams
// then follow PyTorch's calculate_qparams as for minmax. PyTorch has no such observer.

#include <ATen/ATen.h>

#include <cmath>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/observer.hpp"

namespace {

class PercentileObserver final : public mq::Observer {
 public:
  explicit PercentileObserver(const mq::Options& options)
      : percentile_(options.get_float("percentile")),
        eps_(static_cast<float>(options.get_float("eps"))),
        sums_("percentile") {
    if (!(percentile_ > 50.0 && percentile_ <= 100.0))
      throw mq::RecipeError(options.where("percentile") + ": percentile must be in (50, 100]");
  }

  void check_spec(const mq::QuantSpec& spec) const override {
    if (spec.granularity == mq::Granularity::kPerGroup)
      throw mq::RecipeError("the percentile observer works per tensor or per channel, not per group");
  }

  void observe(const at::Tensor& tensor, const mq::QuantSpec& spec) override {
    check_spec(spec);
    if (tensor.numel() == 0) return;
    at::Tensor x = tensor.to(at::kFloat);
    if (spec.granularity == mq::Granularity::kPerChannel && x.dim() > 0)
      x = x.movedim(spec.axis, 0).reshape({x.size(spec.axis), -1});
    else
      x = x.reshape({1, -1});
    const int64_t n = x.size(1);
    const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(percentile_ / 100.0 * n)));
    const at::Tensor hi = std::get<0>(x.kthvalue(std::min(k, n), 1));
    const at::Tensor lo = std::get<0>(x.kthvalue(std::max<int64_t>(1, n - k + 1), 1));
    sums_.add({lo.to(at::kDouble), hi.to(at::kDouble)},
              [](at::Tensor& sum_lo, at::Tensor& sum_hi, const at::Tensor& batch_lo, const at::Tensor& batch_hi) {
                sum_lo += batch_lo;
                sum_hi += batch_hi;
              });
    ++batches_;
  }

  mq::QParams qparams(const mq::QuantSpec& spec) const override {
    if (!batches_) return mq::qparams_from_min_max({}, {}, spec, eps_);
    return mq::qparams_from_min_max((sums_.min() / batches_).to(at::kFloat), (sums_.max() / batches_).to(at::kFloat),
                                    spec, eps_);
  }

 private:
  double percentile_;
  float eps_;
  mq::RunningRange sums_;  // of the batches' bounds
  int64_t batches_ = 0;
};

}  // namespace

MQ_PLUGIN(PercentileObserver, mq::PluginKind::kObserver, "percentile", "1.0.0",
          "Clip to the p-th percentile (nearest rank), per tensor or per channel",
          {"percentile", mq::OptionType::kFloat, "99.99", "percentile of the upper bound, in (50, 100]"},
          {"eps", mq::OptionType::kFloat, "1.1920928955078125e-07", "smallest scale allowed"})
