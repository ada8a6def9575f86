// minmax: running minimum and maximum, PyTorch's MinMaxObserver (per tensor) and
// PerChannelMinMaxObserver (per channel), with its calculate_qparams semantics.

#include <ATen/ATen.h>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/observer.hpp"

namespace {

class MinMaxObserver final : public mq::Observer {
 public:
  explicit MinMaxObserver(const mq::Options& options) : eps_(options.get_float("eps")), range_("minmax") {
    if (!(eps_ > 0.0) || eps_ > 1.0)
      throw mq::RecipeError(options.where("eps") + ": eps must be in (0, 1], got " +
                            std::to_string(eps_));
  }

  void observe(const at::Tensor& tensor, const mq::QuantSpec& spec) override {
    range_.add(mq::min_max(tensor, spec), [](at::Tensor& mn, at::Tensor& mx, const at::Tensor& lo, const at::Tensor& hi) {
      mn = at::minimum(mn, lo);
      mx = at::maximum(mx, hi);
    });
  }

  std::optional<float> min_max_eps() const override { return static_cast<float>(eps_); }

  mq::QParams qparams(const mq::QuantSpec& spec) const override {
    return mq::qparams_from_min_max(range_.min(), range_.max(), spec, static_cast<float>(eps_));
  }

 private:
  double eps_;
  mq::RunningRange range_;
};

}  // namespace

MQ_PLUGIN(MinMaxObserver, mq::PluginKind::kObserver, "minmax", "1.0.0",
          "Running min/max per tensor or per channel (torch.ao MinMaxObserver semantics)",
          {"eps", mq::OptionType::kFloat, "1.1920928955078125e-07",
           "smallest scale allowed (PyTorch: float32 eps)"})
