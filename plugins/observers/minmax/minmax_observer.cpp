// minmax: running minimum and maximum, PyTorch's MinMaxObserver (per tensor) and
// PerChannelMinMaxObserver (per channel), with its calculate_qparams semantics.

#include <ATen/ATen.h>

#include <limits>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/observer.hpp"

namespace {

class MinMaxObserver final : public mq::Observer {
 public:
  explicit MinMaxObserver(const mq::Options& options) : eps_(options.get_float("eps")) {
    if (!(eps_ > 0.0) || eps_ > 1.0)
      throw mq::RecipeError(options.where("eps") + ": eps must be in (0, 1], got " +
                            std::to_string(eps_));
  }

  void observe(const at::Tensor& tensor, const mq::QuantSpec& spec) override {
    auto [mn, mx] = mq::min_max(tensor, spec);
    if (!min_.defined()) {
      min_ = mn;
      max_ = mx;
      return;
    }
    if (mn.numel() != min_.numel())
      throw mq::InputError("minmax observer saw " + std::to_string(mn.numel()) +
                           " channels after " + std::to_string(min_.numel()));
    min_ = at::minimum(min_, mn);
    max_ = at::maximum(max_, mx);
  }

  std::optional<float> min_max_eps() const override { return static_cast<float>(eps_); }

  mq::QParams qparams(const mq::QuantSpec& spec) const override {
    if (!min_.defined()) {
      const float inf = std::numeric_limits<float>::infinity();
      return mq::qparams_from_min_max(at::full({1}, inf), at::full({1}, -inf), spec,
                                      static_cast<float>(eps_));
    }
    return mq::qparams_from_min_max(min_, max_, spec, static_cast<float>(eps_));
  }

 private:
  double eps_;
  at::Tensor min_, max_;
};

}  // namespace

MQ_PLUGIN(MinMaxObserver, mq::PluginKind::kObserver, "minmax", "1.0.0",
          "Running min/max per tensor or per channel (torch.ao MinMaxObserver semantics)",
          {"eps", mq::OptionType::kFloat, "1.1920928955078125e-07",
           "smallest scale allowed (PyTorch: float32 eps)"})
