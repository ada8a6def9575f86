// moving_average: PyTorch's MovingAverageMinMaxObserver and its per-channel variant.
// The first observation sets min/max; each later one moves them by
// averaging_constant * (batch value - current), in float32 as PyTorch computes it.

#include <ATen/ATen.h>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/observer.hpp"

namespace {

class MovingAverageObserver final : public mq::Observer {
 public:
  explicit MovingAverageObserver(const mq::Options& options)
      : constant_(static_cast<float>(options.get_float("averaging_constant"))),
        eps_(static_cast<float>(options.get_float("eps"))),
        range_("moving_average") {
    if (!(constant_ > 0.0f && constant_ <= 1.0f))
      throw mq::RecipeError(options.where("averaging_constant") + ": averaging_constant must be in (0, 1]");
    if (!(eps_ > 0.0f)) throw mq::RecipeError(options.where("eps") + ": eps must be positive");
  }

  void observe(const at::Tensor& tensor, const mq::QuantSpec& spec) override {
    if (tensor.numel() == 0) return;
    range_.add(mq::min_max(tensor, spec), [&](at::Tensor& mn, at::Tensor& mx, const at::Tensor& lo, const at::Tensor& hi) {
      mn = mn + constant_ * (lo - mn);
      mx = mx + constant_ * (hi - mx);
    });
  }

  mq::QParams qparams(const mq::QuantSpec& spec) const override {
    return mq::qparams_from_min_max(range_.min(), range_.max(), spec, eps_);
  }

 private:
  float constant_, eps_;
  mq::RunningRange range_;
};

}  // namespace

MQ_PLUGIN(MovingAverageObserver, mq::PluginKind::kObserver, "moving_average", "1.0.0",
          "Moving average of per-batch min/max (torch.ao MovingAverage[PerChannel]MinMaxObserver)",
          {"averaging_constant", mq::OptionType::kFloat, "0.01", "weight of each new batch"},
          {"eps", mq::OptionType::kFloat, "1.1920928955078125e-07", "smallest scale allowed"})
