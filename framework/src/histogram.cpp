#include "mq/histogram.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <mutex>
#include <vector>

#include "hot.hpp"
#include "mq/error.hpp"

namespace mq {
namespace {

constexpr int64_t kChunk = int64_t{1} << 14;

// Each element's bin, as at::histc's linear-interpolation kernel computes it in float:
// (x - left) * bins / (right - left), truncated, the right edge in the last bin; `skip`
// for values outside [left, right] and NaN.
MQ_HOT void bin_of(const float* in, int32_t* bin, int64_t n, float left, float right, int32_t bins,
                   int32_t skip) {
  const float width = right - left;
  const float count = static_cast<float>(bins);
  for (int64_t i = 0; i < n; ++i) {
    const float e = in[i];
    const bool inside = e >= left && e <= right;
    const float at = inside ? (e - left) * count / width : 0.0f;
    int32_t b = static_cast<int32_t>(at);
    b = b == bins ? bins - 1 : b;
    bin[i] = inside ? b : skip;
  }
}

// Four interleaved count arrays, so that runs of one bin do not wait on each other.
void count(const int32_t* bin, int64_t n, int64_t stride, int64_t* counts) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    ++counts[bin[i]];
    ++counts[stride + bin[i + 1]];
    ++counts[2 * stride + bin[i + 2]];
    ++counts[3 * stride + bin[i + 3]];
  }
  for (; i < n; ++i) ++counts[bin[i]];
}

}  // namespace

at::Tensor histc(const at::Tensor& input, int64_t bins, float min, float max) {
  if (bins <= 0 || bins > (int64_t{1} << 30))
    throw RecipeError("histogram bins must be in [1, 2^30], got " + std::to_string(bins));
  const at::Tensor x = input.to(at::kFloat).contiguous();
  double left = min, right = max;
  if (left == right && x.numel() > 0) {
    auto [lo, hi] = at::aminmax(x);
    left = lo.item<double>();
    right = hi.item<double>();
  }
  if (left == right) {
    left -= 1;
    right += 1;
  }
  if (!std::isfinite(left) || !std::isfinite(right) || left > right)
    throw InputError("histogram range [" + std::to_string(left) + ", " + std::to_string(right) +
                     "] is not finite or not increasing");
  const float l = static_cast<float>(left), r = static_cast<float>(right);
  const int64_t stride = bins + 1;  // the extra slot takes skipped values
  std::vector<int64_t> total(static_cast<size_t>(stride), 0);
  std::mutex merge;
  const float* data = x.data_ptr<float>();
  const int64_t chunks = (x.numel() + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> bin(static_cast<size_t>(kChunk));
    std::vector<int64_t> counts(static_cast<size_t>(4 * stride), 0);
    for (int64_t c = begin; c < end; ++c) {
      const int64_t n = std::min(kChunk, x.numel() - c * kChunk);
      bin_of(data + c * kChunk, bin.data(), n, l, r, static_cast<int32_t>(bins), static_cast<int32_t>(bins));
      count(bin.data(), n, stride, counts.data());
    }
    std::lock_guard<std::mutex> lock(merge);  // integer sums: the order does not matter
    for (int64_t k = 0; k < 4; ++k)
      for (int64_t b = 0; b < stride; ++b) total[b] += counts[k * stride + b];
  });
  at::Tensor hist = at::empty({bins}, at::kFloat);
  float* out = hist.data_ptr<float>();
  for (int64_t b = 0; b < bins; ++b) out[b] = static_cast<float>(total[b]);
  return hist;
}

}  // namespace mq
