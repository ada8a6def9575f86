#include "mq/histogram.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <vector>

#include "hot.hpp"
#include "lanes.hpp"
#include "mq/error.hpp"

namespace mq {
namespace {

constexpr int64_t kChunk = int64_t{1} << 13;  // elements binned, then counted, while in cache

// Each element's bin, as at::histc's linear-interpolation kernel computes it in float:
// (x - left) * bins / (right - left), truncated, the right edge in the last bin; `skip`
// for values outside [left, right] and NaN. With `lo`, also the chunk's min and max
// (NaN skipped, into *lo and *hi), so that an observer reads its batch once.
MQ_HOT void bin_of(const float* in, int32_t* bin, int64_t n, float left, float right, int32_t bins, int32_t skip,
                   float* lo, float* hi) {
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
  if (lo) min_max_body(in, n, lo, hi);
}

// Four interleaved count arrays, so that runs of one bin do not wait on each other;
// 32-bit, so that they stay in the first-level cache (flushed into 64-bit sums every
// 4096 chunks).
void count(const int32_t* bin, int64_t n, int64_t stride, uint32_t* counts) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    ++counts[bin[i]];
    ++counts[stride + bin[i + 1]];
    ++counts[2 * stride + bin[i + 2]];
    ++counts[3 * stride + bin[i + 3]];
  }
  for (; i < n; ++i) ++counts[bin[i]];
}

// The histogram over [left, right] (already widened and checked); with `lo`/`hi`, x's
// min and max too.
at::Tensor histc_pass(const at::Tensor& x, int64_t bins, float left, float right, float* lo, float* hi) {
  // The extra slot takes skipped values; the padding keeps the four arrays' busy middle
  // bins apart modulo 4 KiB (loads that alias a pending store there wait for it).
  const int64_t stride = (bins + 1 + 255) / 256 * 256 + 64;
  std::vector<int64_t> total(static_cast<size_t>(stride), 0);
  float all_lo = std::numeric_limits<float>::infinity(), all_hi = -all_lo;
  std::mutex merge;
  const float* data = x.data_ptr<float>();
  const int64_t chunks = (x.numel() + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> bin(static_cast<size_t>(kChunk));
    std::vector<uint32_t> counts(static_cast<size_t>(4 * stride), 0);
    std::vector<int64_t> sums(static_cast<size_t>(stride), 0);
    float chunk_lo = all_lo, chunk_hi = all_hi;
    for (int64_t c = begin; c < end; ++c) {
      const int64_t n = std::min(kChunk, x.numel() - c * kChunk);
      bin_of(data + c * kChunk, bin.data(), n, left, right, static_cast<int32_t>(bins), static_cast<int32_t>(bins),
             lo ? &chunk_lo : nullptr, &chunk_hi);
      count(bin.data(), n, stride, counts.data());
      if ((c - begin) % 4096 == 4095 || c + 1 == end) {  // 2^25 values: far from 32-bit overflow
        for (int64_t k = 0; k < 4; ++k)
          for (int64_t b = 0; b < stride; ++b) sums[b] += counts[k * stride + b];
        std::fill(counts.begin(), counts.end(), 0u);
      }
    }
    std::lock_guard<std::mutex> lock(merge);  // integer sums and exact min/max: order does not matter
    for (int64_t b = 0; b < stride; ++b) total[b] += sums[b];
    all_lo = std::min(all_lo, chunk_lo);
    all_hi = std::max(all_hi, chunk_hi);
  });
  if (lo) {
    *lo = all_lo;
    *hi = all_hi;
  }
  at::Tensor hist = at::empty({bins}, at::kFloat);
  float* out = hist.data_ptr<float>();
  for (int64_t b = 0; b < bins; ++b) out[b] = static_cast<float>(total[b]);
  return hist;
}

// at::histc's range: min == max widens to the data's range, or by 1 either side.
std::pair<float, float> histc_range(const at::Tensor& x, int64_t bins, float min, float max) {
  if (bins <= 0 || bins > (int64_t{1} << 30))
    throw RecipeError("histogram bins must be in [1, 2^30], got " + std::to_string(bins));
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
  return {static_cast<float>(left), static_cast<float>(right)};
}

}  // namespace

at::Tensor histc(const at::Tensor& input, int64_t bins, float min, float max) {
  const at::Tensor x = input.to(at::kFloat).contiguous();
  const auto [left, right] = histc_range(x, bins, min, max);
  return histc_pass(x, bins, left, right, nullptr, nullptr);
}

RangeHistogram histc_min_max(const at::Tensor& input, int64_t bins, float min, float max) {
  const at::Tensor x = input.to(at::kFloat).contiguous();
  const auto [left, right] = histc_range(x, bins, min, max);
  RangeHistogram result;
  result.counts = histc_pass(x, bins, left, right, &result.min, &result.max);
  return result;
}

}  // namespace mq
