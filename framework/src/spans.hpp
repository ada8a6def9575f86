#pragma once
// What the affine kernels (affine.cpp) and the comparison math (comparison.cpp) share:
// a tensor as spans that share qparams, cut into pieces for threads, read as float32.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "mq/qparams.hpp"
#include "mq/quant_spec.hpp"

namespace mq {

// The tensor as spans of contiguous elements that share one (scale, zero point):
// per channel, [outer, channels, inner] around the axis (span = one inner run);
// per group, [rows, cols] with each row cut into groups of group_size (the last one
// partial when group_size does not divide cols).
struct Spans {
  bool grouped = false;
  int64_t outer = 1, channels = 1, inner = 1;  // per tensor / per channel
  int64_t rows = 1, cols = 1, group = 1, groups = 1;  // per group

  int64_t count() const { return grouped ? rows * groups : outer * channels; }
  int64_t params() const { return grouped ? rows * groups : channels; }
  int64_t offset(int64_t s) const {
    return grouped ? (s / groups) * cols + (s % groups) * group : s * inner;
  }
  int64_t length(int64_t s) const {
    return grouped ? std::min(group, cols - (s % groups) * group) : inner;
  }
  int64_t param(int64_t s) const { return grouped ? s : s % channels; }
  // The span holding element e (spans tile the tensor in order).
  int64_t span_at(int64_t e) const { return grouped ? (e / cols) * groups + (e % cols) / group : e / inner; }
  std::vector<int64_t> param_shape() const {
    return grouped ? std::vector<int64_t>{rows, groups} : std::vector<int64_t>{channels};
  }
};

Spans spans_of(const at::Tensor& x, const QuantSpec& spec);

void check_floating(const at::Tensor& x);
at::Tensor as_float_contiguous(const at::Tensor& x);
// `x` as the fast kernels read it: contiguous float32, bfloat16 or float16, widened
// piece by piece (other floating dtypes are converted to float32 first).
at::Tensor as_readable(const at::Tensor& x);

// The fast kernels' unit of work: a span, or a piece of at most kPiece elements of a
// longer one, so that one large span (per tensor) still spreads over threads and the
// buffer that 16-bit input is widened into stays in cache.
constexpr int64_t kPiece = int64_t{1} << 16;

struct Pieces {
  const Spans& v;
  int64_t per_span;

  explicit Pieces(const Spans& spans)
      : v(spans), per_span(std::max<int64_t>(1, ((spans.grouped ? spans.group : spans.inner) + kPiece - 1) / kPiece)) {}
  int64_t count() const { return v.count() * per_span; }
  int64_t span(int64_t p) const { return p / per_span; }
  int64_t offset(int64_t p) const { return v.offset(span(p)) + (p % per_span) * kPiece; }
  int64_t length(int64_t p) const {
    return std::clamp<int64_t>(v.length(span(p)) - (p % per_span) * kPiece, 0, kPiece);
  }
};

// `n` elements of `x` (as_readable()) from `offset` as float32: in place for float32
// input, widened into `buffer` otherwise.
const float* as_float(const at::Tensor& x, int64_t offset, int64_t n, std::vector<float>& buffer);

// Calls f(p, data) for pieces [begin, end) of `x`, `data` being the piece in float32.
template <class F>
void for_pieces(const at::Tensor& x, const Pieces& pieces, int64_t begin, int64_t end, F&& f) {
  std::vector<float> buffer;
  for (int64_t p = begin; p < end; ++p) f(p, as_float(x, pieces.offset(p), pieces.length(p), buffer));
}

template <class F>
void parallel_pieces(const at::Tensor& x, const Pieces& pieces, F&& f) {
  at::parallel_for(0, pieces.count(), 1, [&](int64_t begin, int64_t end) {
    for_pieces(x, pieces, begin, end, f);
  });
}

// Elements [a, b) of `q` (int8 or uint8 integers over spans `v`, float qparams per span
// parameter) dequantized into `out`, span by span.
void dequantize_range(const at::Tensor& q, const Spans& v, const float* scale, const float* zp, int64_t a,
                      int64_t b, float* out);

// A stored tensor's scales and zero points as float32, one per span parameter; an
// InputError when their count does not fit (a file edited or damaged).
std::pair<at::Tensor, at::Tensor> float_qparams(const QParams& qp, const Spans& v);

}  // namespace mq
