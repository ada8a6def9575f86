#pragma once
// Histograms for calibration observers.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "mq/export.hpp"

namespace mq {

// at::histc(x, bins, min, max) bit for bit: `bins` equal bins over [min, max] (the last
// one closed), values outside skipped, and NaN too (LibTorch 1.13 counts it in bin 0), min == max widened to the data's range
// or by 1 either side as at::histc does; float32 counts. One vectorized pass, threads
// over chunks, integer counting (at::histc's float counters stop at 2^24 per bin and
// thread; these do not). Throws InputError for a non-finite range.
MQ_API at::Tensor histc(const at::Tensor& x, int64_t bins, float min, float max);

// histc() and x's min and max (NaN skipped; +inf and -inf when x holds no number) from
// the same pass over memory.
struct RangeHistogram {
  at::Tensor counts;
  float min = 0, max = 0;
};
MQ_API RangeHistogram histc_min_max(const at::Tensor& x, int64_t bins, float min, float max);

}  // namespace mq
