// histogram: PyTorch's HistogramObserver, op for op in ATen so that the results match
// torch.ao.quantization to float precision: a 2048-bin histogram whose range grows by
// upsampling and re-binning, then the L2-error search over (start, end) bins that
// drops outliers. Per tensor only, as in PyTorch.
//
// One deliberate difference: PyTorch 1.13 passes int(min) and int(max) to histc (a
// bug fixed in later releases), which drops values outside the truncated range; we
// use the float range as the fixed releases do. For data whose extremes are integers
// the two agree, and the parity test (tests/interop/observer_parity.py) uses such data.
// The hot parts are mq's kernels (mq::min_max, mq::histc, equal to aminmax and histc
// bin for bin), not ATen's; NaN in a batch is skipped rather than propagated.

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/histogram.hpp"
#include "mq/observer.hpp"

namespace {

class HistogramObserver final : public mq::Observer {
 public:
  explicit HistogramObserver(const mq::Options& options)
      : bins_(options.get_int("bins")),
        upsample_rate_(options.get_int("upsample_rate")),
        eps_(static_cast<float>(options.get_float("eps"))) {
    if (bins_ < 2 || bins_ > (1 << 20))
      throw mq::RecipeError(options.where("bins") + ": bins must be in [2, 1048576]");
    if (upsample_rate_ < 1) throw mq::RecipeError(options.where("upsample_rate") + ": upsample_rate must be >= 1");
    if (!(eps_ > 0.0f)) throw mq::RecipeError(options.where("eps") + ": eps must be positive");
    histogram_ = at::zeros({bins_});
    min_val_ = at::scalar_tensor(std::numeric_limits<float>::infinity());
    max_val_ = at::scalar_tensor(-std::numeric_limits<float>::infinity());
  }

  void check_spec(const mq::QuantSpec& spec) const override {
    if (spec.granularity != mq::Granularity::kPerTensor)
      throw mq::RecipeError("the histogram observer is per tensor (as PyTorch's); use minmax, "
                            "moving_average or percentile for " + std::string(mq::to_string(spec.granularity)));
  }

  void observe(const at::Tensor& input, const mq::QuantSpec& spec) override {
    check_spec(spec);
    if (input.numel() == 0) return;
    const at::Tensor x = input.detach().to(at::kFloat).contiguous();
    if (uninitialized() || min_val_.item<float>() == max_val_.item<float>()) {
      auto [new_min, new_max] = observed_range(x);
      min_val_ = new_min;
      max_val_ = new_max;
      histogram_ = mq::histc(x, bins_, new_min.item<float>(), new_max.item<float>());
      return;
    }
    // Most batches fall inside the range seen so far, where the combined range is the
    // old one adjusted: bin into that while finding the batch's range, in one pass, and
    // bin again only when the batch reaches outside it.
    Adjusted range = adjust(min_val_, max_val_);
    mq::RangeHistogram pass = mq::histc_min_max(x, bins_, range.min.item<float>(), range.max.item<float>());
    at::Tensor combined = std::move(pass.counts);
    if (pass.min < min_val_.item<float>() || pass.max > max_val_.item<float>()) {
      range = adjust(at::minimum(at::scalar_tensor(pass.min), min_val_),
                     at::maximum(at::scalar_tensor(pass.max), max_val_));
      combined = mq::histc(x, bins_, range.min.item<float>(), range.max.item<float>());
    }
    if (range.min.item<float>() == min_val_.item<float>() && range.max.item<float>() == max_val_.item<float>()) {
      combined += histogram_;
    } else {
      combined = combine(combined, range.downsample_rate, range.start_idx);
    }
    histogram_ = combined;
    min_val_ = range.min;
    max_val_ = range.max;
  }

  mq::QParams qparams(const mq::QuantSpec& spec) const override {
    if (uninitialized()) return {at::ones({1}), at::zeros({1}, at::kInt)};
    const auto [new_min, new_max] = search(int64_t{1} << spec.bits());
    return mq::qparams_from_min_max(new_min.reshape({1}), new_max.reshape({1}), spec, eps_);
  }

 private:
  // aminmax's result as scalar tensors, from mq's vectorized min/max (NaN is ignored
  // where aminmax would return it and poison the histogram).
  static std::pair<at::Tensor, at::Tensor> observed_range(const at::Tensor& x) {
    mq::QuantSpec per_tensor;
    per_tensor.granularity = mq::Granularity::kPerTensor;
    auto [mn, mx] = mq::min_max(x, per_tensor);
    return {mn.reshape({}), mx.reshape({})};
  }

  bool uninitialized() const {
    return std::isinf(min_val_.item<float>()) && min_val_.item<float>() > 0 &&
           std::isinf(max_val_.item<float>()) && max_val_.item<float>() < 0;
  }

  struct Adjusted {
    at::Tensor min, max;
    int64_t downsample_rate, start_idx;
  };

  // _adjust_min_max: the combined range widened to a whole number of the old, upsampled
  // bins.
  Adjusted adjust(const at::Tensor& combined_min, const at::Tensor& combined_max) const {
    const at::Tensor hist_bin_width = (max_val_ - min_val_) / (bins_ * upsample_rate_);
    const int64_t downsample_rate = static_cast<int64_t>(
        at::ceil((combined_max - combined_min) / (bins_ * hist_bin_width)).item<float>());
    const at::Tensor e = downsample_rate * (bins_ * hist_bin_width) - (combined_max - combined_min);
    const int64_t start_idx =
        static_cast<int64_t>(at::round((min_val_ - combined_min) / hist_bin_width).item<float>());
    return {combined_min, combined_max + e, downsample_rate, start_idx};
  }

  // _combine_histograms: the old histogram upsampled into the new range.
  at::Tensor combine(const at::Tensor& orig, int64_t downsample_rate, int64_t start_idx) const {
    const at::Tensor upsampled = histogram_.repeat_interleave(upsample_rate_);
    at::Tensor with_range = at::zeros({bins_ * downsample_rate});
    with_range.slice(0, start_idx, bins_ * upsample_rate_ + start_idx).copy_(upsampled);
    const at::Tensor integral =
        at::cumsum(with_range, 0, at::kDouble).slice(0, downsample_rate - 1, c10::nullopt, downsample_rate);
    at::Tensor shifted = at::zeros({bins_});
    shifted.slice(0, 1, bins_).copy_(integral.slice(0, 0, -1));
    const at::Tensor interpolated = (integral - shifted) / upsample_rate_;
    return orig + interpolated.to(at::kFloat);
  }

  static at::Tensor norm_of(const at::Tensor& begin, const at::Tensor& end, const at::Tensor& density) {
    return density * ((end * end * end - begin * begin * begin) / 3);
  }

  // _compute_quantization_error
  double error(int64_t start_bin, int64_t end_bin, int64_t dst_nbins) const {
    const double bin_width =
        (static_cast<double>(max_val_.item<float>()) - static_cast<double>(min_val_.item<float>())) / bins_;
    const double dst_bin_width = bin_width * static_cast<double>(end_bin - start_bin + 1) / dst_nbins;
    if (dst_bin_width == 0.0) return 0.0;
    const at::Tensor src_bin = at::arange(bins_);
    const at::Tensor src_bin_begin = (src_bin - start_bin) * bin_width;
    const at::Tensor src_bin_end = src_bin_begin + bin_width;
    const at::Tensor dst_bin_of_begin = at::clamp(at::div(src_bin_begin, dst_bin_width, "floor"), 0, dst_nbins - 1);
    const at::Tensor dst_bin_of_begin_center = (dst_bin_of_begin + 0.5) * dst_bin_width;
    const at::Tensor dst_bin_of_end = at::clamp(at::div(src_bin_end, dst_bin_width, "floor"), 0, dst_nbins - 1);
    const at::Tensor density = histogram_ / bin_width;
    at::Tensor norm = at::zeros({bins_});
    norm += norm_of(src_bin_begin - dst_bin_of_begin_center, at::ones({bins_}) * (dst_bin_width / 2), density);
    norm += (dst_bin_of_end - dst_bin_of_begin - 1) *
            norm_of(at::scalar_tensor(-dst_bin_width / 2, at::kFloat),
                    at::scalar_tensor(dst_bin_width / 2, at::kFloat), density);
    const at::Tensor dst_bin_of_end_center = dst_bin_of_end * dst_bin_width + dst_bin_width / 2;
    norm += norm_of(at::scalar_tensor(-dst_bin_width / 2, at::kFloat), src_bin_end - dst_bin_of_end_center, density);
    return norm.sum().item<float>();
  }

  // _non_linear_param_search: the (min, max) that minimizes the L2 quantization error.
  std::pair<at::Tensor, at::Tensor> search(int64_t dst_nbins) const {
    const at::Tensor bin_width = (max_val_ - min_val_) / bins_;
    const double total = histogram_.sum().item<float>();
    const at::Tensor csum_tensor = at::cumsum(histogram_, 0).contiguous();
    const float* csum = csum_tensor.data_ptr<float>();
    const double stepsize = 1e-5;
    double alpha = 0.0, beta = 1.0;
    int64_t start_bin = 0, end_bin = bins_ - 1;
    double norm_min = std::numeric_limits<double>::infinity();
    while (alpha < beta) {
      const double next_alpha = alpha + stepsize;
      const double next_beta = beta - stepsize;
      int64_t l = start_bin, r = end_bin;
      while (l < end_bin && csum[l] < static_cast<float>(next_alpha * total)) ++l;
      while (r > start_bin && csum[r] > static_cast<float>(next_beta * total)) --r;
      int64_t next_start_bin = start_bin, next_end_bin = end_bin;
      if ((l - start_bin) > (end_bin - r)) {
        next_start_bin = l;
        alpha = next_alpha;
      } else {
        next_end_bin = r;
        beta = next_beta;
      }
      if (next_start_bin == start_bin && next_end_bin == end_bin) continue;
      const double norm = error(next_start_bin, next_end_bin, dst_nbins);
      if (norm > norm_min) break;
      norm_min = norm;
      start_bin = next_start_bin;
      end_bin = next_end_bin;
    }
    return {min_val_ + bin_width * start_bin, min_val_ + bin_width * (end_bin + 1)};
  }

  int64_t bins_, upsample_rate_;
  float eps_;
  at::Tensor histogram_, min_val_, max_val_;
};

}  // namespace

MQ_PLUGIN(HistogramObserver, mq::PluginKind::kObserver, "histogram", "1.0.0",
          "Histogram with PyTorch's L2-error range search (torch.ao HistogramObserver), per tensor",
          {"bins", mq::OptionType::kInt, "2048", "histogram bins"},
          {"upsample_rate", mq::OptionType::kInt, "128", "upsampling when the range grows"},
          {"eps", mq::OptionType::kFloat, "1.1920928955078125e-07", "smallest scale allowed"})
