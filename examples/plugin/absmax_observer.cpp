// absmax: an observer skeleton. The largest |x| seen over all batches (per tensor, or
// per channel), as a symmetric range: qparams that never clip what was observed.
// Written only against the installed mq SDK.

#include <ATen/ATen.h>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/observer.hpp"

namespace {

class AbsMaxObserver final : public mq::Observer {
 public:
  explicit AbsMaxObserver(const mq::Options& options) : eps_(static_cast<float>(options.get_float("eps"))) {}

  // Required: fold one batch into what was seen (a spec says per tensor or per channel).
  void observe(const at::Tensor& tensor, const mq::QuantSpec& spec) override {
    if (tensor.numel() == 0) return;
    const auto [lo, hi] = mq::min_max(tensor, spec);
    const at::Tensor bound = at::maximum(lo.abs(), hi.abs());
    range_.add({-bound, bound}, [](at::Tensor& mn, at::Tensor& mx, const at::Tensor& l, const at::Tensor& h) {
      mn = at::minimum(mn, l);
      mx = at::maximum(mx, h);
    });
  }

  // Required: the qparams for a spec (undefined ranges give PyTorch's default).
  mq::QParams qparams(const mq::QuantSpec& spec) const override {
    return mq::qparams_from_min_max(range_.min(), range_.max(), spec, eps_);
  }

  // Optional: refuse a spec this observer cannot fit, before any work.
  void check_spec(const mq::QuantSpec& spec) const override {
    if (spec.granularity == mq::Granularity::kPerGroup)
      throw mq::RecipeError("the absmax observer fits per-tensor or per-channel ranges, not per-group ones");
  }

 private:
  float eps_;
  mq::RunningRange range_{"absmax"};  // the per-channel check across batches
};

}  // namespace

MQ_PLUGIN(AbsMaxObserver, mq::PluginKind::kObserver, "absmax", "1.0.0",
          "Largest |x| seen, as a symmetric range",
          {"eps", mq::OptionType::kFloat, "1.1920928955078125e-07", "smallest scale allowed"})
