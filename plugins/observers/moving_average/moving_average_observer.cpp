// moving_average: PyTorch's MovingAverageMinMaxObserver and its per-channel variant.
// The first observation sets min/max; each later one moves them by
// averaging_constant * (batch value - current), in float32 as PyTorch computes it.

#include <ATen/ATen.h>

#include <limits>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/observer.hpp"

namespace {

class MovingAverageObserver final : public mq::Observer {
 public:
  explicit MovingAverageObserver(const mq::Options& options)
      : constant_(static_cast<float>(options.get_float("averaging_constant"))),
        eps_(static_cast<float>(options.get_float("eps"))) {
    if (!(constant_ > 0.0f && constant_ <= 1.0f))
      throw mq::RecipeError(options.where("averaging_constant") + ": averaging_constant must be in (0, 1]");
    if (!(eps_ > 0.0f)) throw mq::RecipeError(options.where("eps") + ": eps must be positive");
  }

  void observe(const at::Tensor& tensor, const mq::QuantSpec& spec) override {
    if (tensor.numel() == 0) return;
    auto [mn, mx] = mq::min_max(tensor, spec);
    if (!min_.defined()) {
      min_ = mn;
      max_ = mx;
      return;
    }
    if (mn.numel() != min_.numel())
      throw mq::InputError("moving_average observer saw " + std::to_string(mn.numel()) +
                           " channels after " + std::to_string(min_.numel()));
    min_ = min_ + constant_ * (mn - min_);
    max_ = max_ + constant_ * (mx - max_);
  }

  mq::QParams qparams(const mq::QuantSpec& spec) const override {
    if (!min_.defined()) {
      const float inf = std::numeric_limits<float>::infinity();
      return mq::qparams_from_min_max(at::full({1}, inf), at::full({1}, -inf), spec, eps_);
    }
    return mq::qparams_from_min_max(min_, max_, spec, eps_);
  }

 private:
  float constant_, eps_;
  at::Tensor min_, max_;
};

}  // namespace

MQ_PLUGIN(MovingAverageObserver, mq::PluginKind::kObserver, "moving_average", "1.0.0",
          "Moving average of per-batch min/max (torch.ao MovingAverage[PerChannel]MinMaxObserver)",
          {"averaging_constant", mq::OptionType::kFloat, "0.01", "weight of each new batch"},
          {"eps", mq::OptionType::kFloat, "1.1920928955078125e-07", "smallest scale allowed"})
