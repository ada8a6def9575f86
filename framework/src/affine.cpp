#include "mq/affine.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "hot.hpp"
#include "lanes.hpp"
#include "spans.hpp"
#include "mq/error.hpp"

namespace mq {

float stored_scale(float scale, at::ScalarType dtype) {
  float rounded = scale;
  if (dtype == at::kBFloat16) rounded = static_cast<float>(c10::BFloat16(scale));
  if (dtype == at::kHalf) rounded = static_cast<float>(c10::Half(scale));
  return rounded > 0 && std::isfinite(rounded) ? rounded : scale;
}

namespace {

void check_integer(const QuantSpec& spec) {
  if (!spec.is_integer())
    throw RecipeError("affine quantization needs an integer dtype, not " + spec.to_string());
}

// PyTorch's _calculate_qparams for one channel.
void qparams_one(float mn, float mx, const QuantSpec& spec, float eps, float* scale,
                 int32_t* zero_point) {
  const int64_t qmin = spec.qmin(), qmax = spec.qmax();
  const float min_neg = std::min(mn, 0.0f);
  const float max_pos = std::max(mx, 0.0f);
  if (spec.scheme == Scheme::kSymmetric) {
    const float bound = std::max(-min_neg, max_pos);
    *scale = std::max(bound / (static_cast<float>(qmax - qmin) / 2.0f), eps);
    // PyTorch: quint8 symmetric uses 128 whatever the range (reduce_range included).
    *zero_point = traits(spec.dtype).symmetric_zero_point;
  } else {
    *scale = std::max((max_pos - min_neg) / static_cast<float>(qmax - qmin), eps);
    const int64_t zp = qmin - static_cast<int64_t>(std::nearbyint(min_neg / *scale));
    *zero_point = static_cast<int32_t>(std::clamp(zp, qmin, qmax));
  }
}

[[noreturn]] void refuse_infinite() {
  throw InputError("cannot quantize inf, or a channel or group of NaN only: its scale would be infinite");
}

void check_finite(float mn, float mx) {
  if (std::isinf(mn) || std::isinf(mx)) refuse_infinite();
}

// Rounds half to even like std::nearbyint for |v| < 2^22, in a form compilers vectorize.
inline float round_half_even(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (v + kMagic) - kMagic;
}

// round_half_even(r) + zp as the bits of r + 1.5 * 2^23 (whose last bit is one unit
// there) less the bits of 1.5 * 2^23 and zp, in one integer step; the clamps are
// strict so that they compile to min/max instructions (NaN still goes to qmin, as
// PyTorch's x86 build does; r == lo or hi gives the same integer either way).
template <class T, class Q>
inline __attribute__((always_inline)) void quantize_span_body(const T* in, Q* out, int64_t n, float inv,
                                                              float lo, float hi, int32_t zp) {
  constexpr float kMagic = 12582912.0f;
  int32_t magic_bits;
  std::memcpy(&magic_bits, &kMagic, sizeof magic_bits);
  const int32_t offset = magic_bits - zp;
  for (int64_t i = 0; i < n; ++i) {
    float r = to_float(in[i]) * inv;
    r = r > lo ? r : lo;
    r = r < hi ? r : hi;
    const float shifted = r + kMagic;
    int32_t bits;
    std::memcpy(&bits, &shifted, sizeof bits);
    out[i] = static_cast<Q>(bits - offset);
  }
}

MQ_HOT void quantize_span(const float* in, int8_t* out, int64_t n, float inv, float lo, float hi, int32_t zp) {
  quantize_span_body(in, out, n, inv, lo, hi, zp);
}

MQ_HOT void quantize_span(const float* in, uint8_t* out, int64_t n, float inv, float lo, float hi, int32_t zp) {
  quantize_span_body(in, out, n, inv, lo, hi, zp);
}

// Fetches a range into the second-level cache, a line at a time.
inline __attribute__((always_inline)) void prefetch(const char* p, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b, 0, 2);
}

// In blocks, each fetching the next one into L2 first: the hardware prefetcher stops at
// every 4 KiB page, and a read-only loop has nothing else to hide that behind.
MQ_HOT void min_max_span(const float* in, int64_t n, float* lo, float* hi) {
  constexpr int64_t kBlock = 1024;  // 4 KiB
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t next = std::min(n, b + kBlock);
    prefetch(reinterpret_cast<const char*>(in + next), (std::min(n, next + kBlock) - next) * 4);
    min_max_body(in + b, next - b, lo, hi);
  }
}

// A row's spans (a channel, or the groups of a row) get their min and max, qparams and
// quantization in one cloned call, so that the row is read from memory once and the
// qparams of its groups are computed in vector lanes, not one scalar chain per group.
struct RowRule {
  const QuantSpec& spec;
  float eps;
  at::ScalarType dtype;  // of the input: scales are rounded to it
  int64_t qmin, qmax;    // of the storage type
};

// qparams_one() for every span, written so that it vectorizes: std::min/max spelled out
// in their own operand order, and nearbyint as round_half_even (|min_neg / scale| is at
// most qmax - qmin here). The composed reference checks that the two agree bit for bit.
inline __attribute__((always_inline)) void qparams_row(const float* lo, const float* hi, int64_t count,
                                                       const RowRule& rule, float* scale,
                                                       int32_t* zero_point) {
  const int64_t qmin = rule.spec.qmin(), qmax = rule.spec.qmax();
  const float levels = static_cast<float>(qmax - qmin);
  const float eps = rule.eps;
  if (rule.spec.scheme == Scheme::kSymmetric) {
    const int32_t zp = traits(rule.spec.dtype).symmetric_zero_point;
    const float half = levels / 2.0f;
    for (int64_t s = 0; s < count; ++s) {
      const float min_neg = 0.0f < lo[s] ? 0.0f : lo[s];
      const float max_pos = hi[s] < 0.0f ? 0.0f : hi[s];
      const float bound = -min_neg < max_pos ? max_pos : -min_neg;
      const float sc = bound / half;
      scale[s] = sc < eps ? eps : sc;
      zero_point[s] = zp;
    }
  } else {
    const float fmin = static_cast<float>(qmin), fmax = static_cast<float>(qmax);
    for (int64_t s = 0; s < count; ++s) {
      const float min_neg = 0.0f < lo[s] ? 0.0f : lo[s];
      const float max_pos = hi[s] < 0.0f ? 0.0f : hi[s];
      float sc = (max_pos - min_neg) / levels;
      sc = sc < eps ? eps : sc;
      scale[s] = sc;
      float zp = fmin - round_half_even(min_neg / sc);
      zp = zp < fmin ? fmin : zp;
      zp = zp > fmax ? fmax : zp;
      zero_point[s] = static_cast<int32_t>(zp);
    }
  }
}

// Returns false, quantizing nothing, when a span's bounds are infinite (the caller
// throws: exceptions do not leave the cloned kernels). While the row is quantized (from
// cache), the next row's input (`next`, or null) is fetched a block at a time, so that
// memory keeps streaming through the compute and the next row's min/max finds it in
// cache.
template <class T, class Q>
inline __attribute__((always_inline)) bool min_max_quantize_row_body(const T* in, const char* next, Q* out,
                                                                     int64_t n, int64_t span, const RowRule& rule,
                                                                     float* scale, int32_t* zero_point,
                                                                     float* lo, float* hi) {
  const int64_t count = (n + span - 1) / span;
  constexpr int64_t width = sizeof(T);
  // A channel's row: the first half of the next row is fetched while this one's min/max
  // runs (from cache), the second while it is quantized, so that memory waits on
  // neither (+3-15%). Rows of groups fetch it all while quantizing.
  const int64_t half = n / 2;
  if (count == 1) {
    constexpr int64_t kStep = 1024;
    lo[0] = std::numeric_limits<float>::infinity();
    hi[0] = -lo[0];
    for (int64_t b = 0; b < n; b += kStep) {
      const int64_t m = std::min(kStep, n - b);
      if (next) prefetch(next + (b / 2) * width, (m / 2) * width);
      min_max_body(in + b, m, &lo[0], &hi[0]);
    }
  }
  int64_t s = count == 1 ? 1 : 0;
  if (span % 16 == 0)  // groups, sixteen at a time while they are whole
    for (; s + 16 <= count && (s + 16) * span <= n; s += 16) min_max_16_spans(in + s * span, span, lo + s, hi + s);
  for (; s < count; ++s) {
    lo[s] = std::numeric_limits<float>::infinity();
    hi[s] = -lo[s];
    min_max_body(in + s * span, std::min(span, n - s * span), &lo[s], &hi[s]);
  }
  for (int64_t s = 0; s < count; ++s)
    if (std::isinf(lo[s]) || std::isinf(hi[s])) return false;
  qparams_row(lo, hi, count, rule, scale, zero_point);
  if (rule.dtype != at::kFloat)
    for (int64_t s = 0; s < count; ++s) scale[s] = stored_scale(scale[s], rule.dtype);
  constexpr int64_t kBlock = 512;
  for (int64_t s = 0; s < count; ++s) {
    const int32_t zp = zero_point[s];
    const float inv = 1.0f / scale[s];
    const float qlo = static_cast<float>(rule.qmin - zp), qhi = static_cast<float>(rule.qmax - zp);
    const int64_t length = std::min(span, n - s * span);
    for (int64_t b = 0; b < length; b += kBlock) {
      const int64_t at = s * span + b, m = std::min(kBlock, length - b);
      if (next && count == 1) prefetch(next + (half + at / 2) * width, (m / 2 + 1) * width);
      else if (next) prefetch(next + at * width, m * width);
      quantize_span_body(in + at, out + at, m, inv, qlo, qhi, zp);
    }
  }
  return true;
}

#define MQ_MIN_MAX_QUANTIZE_ROW(T, Q)                                                                      \
  MQ_HOT bool min_max_quantize_row(const T* in, const char* next, Q* out, int64_t n, int64_t span,          \
                                   const RowRule& rule, float* scale, int32_t* zero_point, float* lo,       \
                                   float* hi) {                                                             \
    return min_max_quantize_row_body(in, next, out, n, span, rule, scale, zero_point, lo, hi);              \
  }
MQ_MIN_MAX_QUANTIZE_ROW(float, int8_t)
MQ_MIN_MAX_QUANTIZE_ROW(float, uint8_t)
MQ_MIN_MAX_QUANTIZE_ROW(c10::BFloat16, int8_t)
MQ_MIN_MAX_QUANTIZE_ROW(c10::BFloat16, uint8_t)
#undef MQ_MIN_MAX_QUANTIZE_ROW

at::Tensor empty_quantized(const at::Tensor& x, const QuantSpec& spec, at::Tensor out) {
  const at::ScalarType dtype = spec.stored_type();
  if (!out.defined()) return at::empty(x.sizes(), at::TensorOptions(dtype));
  if (out.scalar_type() != dtype || out.numel() != x.numel() || !out.is_contiguous())
    throw RecipeError(std::string("quantize output buffer must be a contiguous ") +
                      c10::toString(dtype) + " tensor of " + std::to_string(x.numel()) + " elements");
  return out.sizes() == x.sizes() ? out : out.view(x.sizes());  // a view would keep `out` alive
}

QuantizedTensor make_quantized(const at::Tensor& input, at::Tensor data, QParams qparams,
                               const Spans& v, const QuantSpec& spec) {
  QuantizedTensor out;
  out.data = std::move(data);
  out.qparams = {qparams.scale.reshape(v.param_shape()), qparams.zero_point.reshape(v.param_shape())};
  out.spec = spec;
  out.shape = input.sizes().vec();
  out.original_dtype = input.scalar_type();
  return out;
}

template <class Q>
void quantize_pieces(const at::Tensor& x, Q* q, const Pieces& pieces, const float* scale,
                     const int32_t* zero_point, int64_t qmin, int64_t qmax) {
  parallel_pieces(x, pieces, [&](int64_t p, const float* data) {
    const int64_t param = pieces.v.param(pieces.span(p));
    const int32_t zp = zero_point[param];
    quantize_span(data, q + pieces.offset(p), pieces.length(p), 1.0f / scale[param],
                  static_cast<float>(qmin - zp), static_cast<float>(qmax - zp), zp);
  });
}

template <class Q>
void quantize_spans_ref(const float* x, Q* q, const Spans& v, const float* scale,
                        const int32_t* zero_point, int64_t qmin, int64_t qmax) {
  for (int64_t s = 0; s < v.count(); ++s) {
    const int64_t p = v.param(s);
    const float inv = 1.0f / scale[p];
    for (int64_t i = v.offset(s); i < v.offset(s) + v.length(s); ++i) {
      const float r = x[i] * inv;
      int64_t value = qmin;
      if (!std::isnan(r)) {
        const float clamped = std::min(std::max(r, static_cast<float>(qmin - zero_point[p])),
                                       static_cast<float>(qmax - zero_point[p]));
        value = static_cast<int64_t>(std::nearbyint(clamped)) + zero_point[p];
      }
      q[i] = static_cast<Q>(value);
    }
  }
}

// reduce_range narrows the range the observer fits, not the clamp: PyTorch rounds
// the observed extremes to the storage type's full range (e.g. 64 under [-64, 63]).
QuantSpec storage_of(const QuantSpec& spec) {
  QuantSpec storage = spec;
  storage.reduce_range = false;
  return storage;
}

template <bool kRef>
QuantizedTensor quantize_impl(const at::Tensor& input, const QParams& qparams,
                              const QuantSpec& spec, at::Tensor out = {}) {
  check_integer(spec);
  const at::Tensor x = kRef ? as_float_contiguous(input) : as_readable(input);
  const Spans v = spans_of(x, spec);
  const at::Tensor scale = qparams.scale.to(at::kFloat).contiguous();
  const at::Tensor zp = qparams.zero_point.to(at::kInt).contiguous();
  if (scale.numel() != v.params() || zp.numel() != v.params())
    throw RecipeError("qparams have " + std::to_string(scale.numel()) + " scales for " +
                      std::to_string(v.params()) + " channels or groups");
  const QuantSpec storage = storage_of(spec);
  at::Tensor data = empty_quantized(x, spec, std::move(out));
  auto run = [&](auto* q) {
    if constexpr (kRef)
      quantize_spans_ref(x.data_ptr<float>(), q, v, scale.data_ptr<float>(),
                         zp.data_ptr<int32_t>(), storage.qmin(), storage.qmax());
    else
      quantize_pieces(x, q, Pieces(v), scale.data_ptr<float>(), zp.data_ptr<int32_t>(),
                      storage.qmin(), storage.qmax());
  };
  if (data.scalar_type() == at::kChar)
    run(data.data_ptr<int8_t>());
  else
    run(data.data_ptr<uint8_t>());
  return make_quantized(input, std::move(data), {scale, zp}, v, spec);
}

std::pair<at::Tensor, at::Tensor> min_max_ref_impl(const at::Tensor& input, const QuantSpec& spec) {
  const at::Tensor x = as_float_contiguous(input);
  const Spans v = spans_of(x, spec);
  at::Tensor mins = at::full(v.param_shape(), std::numeric_limits<float>::infinity(), at::kFloat);
  at::Tensor maxs = at::full(v.param_shape(), -std::numeric_limits<float>::infinity(), at::kFloat);
  float* lo = mins.data_ptr<float>();
  float* hi = maxs.data_ptr<float>();
  const float* data = x.data_ptr<float>();
  for (int64_t s = 0; s < v.count(); ++s) {
    const float* span = data + v.offset(s);
    const int64_t p = v.param(s);
    for (int64_t i = 0; i < v.length(s); ++i) {
      lo[p] = span[i] < lo[p] ? span[i] : lo[p];
      hi[p] = span[i] > hi[p] ? span[i] : hi[p];
    }
  }
  return {mins, maxs};
}

// Min and max per piece in parallel, then per parameter in piece order (min and max
// are exact, so the result does not depend on the threads either way).
std::pair<at::Tensor, at::Tensor> min_max_fast(const at::Tensor& input, const QuantSpec& spec) {
  const at::Tensor x = as_readable(input);
  const Spans v = spans_of(x, spec);
  const Pieces pieces(v);
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> piece_lo(static_cast<size_t>(pieces.count()), inf);
  std::vector<float> piece_hi(static_cast<size_t>(pieces.count()), -inf);
  parallel_pieces(x, pieces, [&](int64_t p, const float* data) {
    min_max_span(data, pieces.length(p), &piece_lo[p], &piece_hi[p]);
  });
  at::Tensor mins = at::full(v.param_shape(), inf, at::kFloat);
  at::Tensor maxs = at::full(v.param_shape(), -inf, at::kFloat);
  float* lo = mins.data_ptr<float>();
  float* hi = maxs.data_ptr<float>();
  for (int64_t p = 0; p < pieces.count(); ++p) {
    const int64_t param = v.param(pieces.span(p));
    lo[param] = std::min(lo[param], piece_lo[p]);
    hi[param] = std::max(hi[param], piece_hi[p]);
  }
  return {mins, maxs};
}

// min_max -> qparams_from_min_max -> scale as stored -> quantize, as the reference
// composes it.
template <bool kRef>
QuantizedTensor quantize_min_max_composed(const at::Tensor& x, const QuantSpec& spec, float eps,
                                          at::Tensor out = {}) {
  auto [mn, mx] = kRef ? min_max_ref_impl(x, spec) : min_max_fast(x, spec);
  if (x.numel() == 0)  // nothing to fit: unit scales, as PyTorch gives when nothing was observed
    return quantize_impl<kRef>(x, {at::ones(mn.sizes()), at::zeros(mn.sizes(), at::kInt)}, spec, std::move(out));
  const float* lo = mn.data_ptr<float>();
  const float* hi = mx.data_ptr<float>();
  for (int64_t i = 0; i < mn.numel(); ++i) check_finite(lo[i], hi[i]);
  QParams qp = qparams_from_min_max(mn, mx, spec, eps);
  float* scale = qp.scale.data_ptr<float>();
  for (int64_t i = 0; i < qp.scale.numel(); ++i) scale[i] = stored_scale(scale[i], x.scalar_type());
  return quantize_impl<kRef>(x, qp, spec, std::move(out));
}

// One pass over memory: rows of `cols` elements, each cut into spans of `span` with
// their own qparams (a channel: one span; a row of groups), quantized row by row.
template <class Q>
void quantize_min_max_rows(const at::Tensor& x, Q* q, int64_t rows, int64_t cols, int64_t span,
                           const QuantSpec& spec, float eps, float* scale, int32_t* zero_point) {
  const QuantSpec storage = storage_of(spec);
  const RowRule rule{spec, eps, x.scalar_type(), storage.qmin(), storage.qmax()};
  const int64_t per_row = (cols + span - 1) / span;
  const char* data = static_cast<const char*>(x.data_ptr());
  const int64_t row_bytes = cols * x.element_size();
  // bfloat16 is read as it is (widened in registers, once for min/max and once to
  // quantize: 2.3 -> 3.0 G elements/s); float16 is widened a row at a time into a
  // buffer in cache (its exact widening in registers, twice, was slower than that).
  const c10::BFloat16* bf16 = x.scalar_type() == at::kBFloat16 ? x.data_ptr<c10::BFloat16>() : nullptr;
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buffer, bounds(static_cast<size_t>(2 * per_row));
    for (int64_t r = begin; r < end; ++r) {
      const char* next = r + 1 < end ? data + (r + 1) * row_bytes : nullptr;
      float* lo = bounds.data();
      float* hi = bounds.data() + per_row;
      const bool finite =
          bf16 ? min_max_quantize_row(bf16 + r * cols, next, q + r * cols, cols, span, rule,
                                      scale + r * per_row, zero_point + r * per_row, lo, hi)
               : min_max_quantize_row(as_float(x, r * cols, cols, buffer), next, q + r * cols, cols, span, rule,
                                      scale + r * per_row, zero_point + r * per_row, lo, hi);
      if (!finite) refuse_infinite();
    }
  });
}

template <class Q>
inline __attribute__((always_inline)) void dequantize_body(const Q* q, float* out, int64_t n, float scale, float zp) {
  for (int64_t i = 0; i < n; ++i) out[i] = (static_cast<float>(q[i]) - zp) * scale;
}

MQ_HOT void dequantize_span(const int8_t* q, float* out, int64_t n, float scale, float zp) {
  dequantize_body(q, out, n, scale, zp);
}
MQ_HOT void dequantize_span(const uint8_t* q, float* out, int64_t n, float scale, float zp) {
  dequantize_body(q, out, n, scale, zp);
}

}  // namespace

void dequantize_range(const at::Tensor& q, const Spans& v, const float* scale, const float* zp, int64_t a,
                      int64_t b, float* out) {
  for (int64_t e = a, s = a < b ? v.span_at(a) : 0; e < b; ++s) {
    const int64_t stop = std::min(b, v.offset(s) + v.length(s));
    if (q.scalar_type() == at::kChar)
      dequantize_span(q.data_ptr<int8_t>() + e, out + (e - a), stop - e, scale[v.param(s)], zp[v.param(s)]);
    else
      dequantize_span(q.data_ptr<uint8_t>() + e, out + (e - a), stop - e, scale[v.param(s)], zp[v.param(s)]);
    e = stop;
  }
}

std::pair<at::Tensor, at::Tensor> float_qparams(const QParams& qp, const Spans& v) {
  const at::Tensor scale = qp.scale.to(at::kFloat).contiguous();
  const at::Tensor zp = qp.zero_point.to(at::kFloat).contiguous();
  if (scale.numel() != v.params() || zp.numel() != v.params())
    throw InputError("qparams have " + std::to_string(scale.numel()) + " scales for " +
                     std::to_string(v.params()) + " channels or groups");
  return {scale, zp};
}

std::pair<at::Tensor, at::Tensor> min_max(const at::Tensor& x, const QuantSpec& spec) {
  return min_max_fast(x, spec);
}

std::pair<at::Tensor, at::Tensor> min_max_ref(const at::Tensor& x, const QuantSpec& spec) {
  return min_max_ref_impl(x, spec);
}

QParams qparams_from_min_max(const at::Tensor& min_in, const at::Tensor& max_in,
                             const QuantSpec& spec, float eps) {
  check_integer(spec);
  if (!min_in.defined() || !max_in.defined()) return {at::ones({1}, at::kFloat), at::zeros({1}, at::kInt)};
  const at::Tensor min_val = min_in.to(at::kFloat).contiguous();
  const at::Tensor max_val = max_in.to(at::kFloat).contiguous();
  const int64_t n = min_val.numel();
  QParams qp{at::ones(min_val.sizes(), at::kFloat), at::zeros(min_val.sizes(), at::kInt)};
  const float* mn = min_val.data_ptr<float>();
  const float* mx = max_val.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i)
    if (std::isinf(mn[i]) || std::isinf(mx[i])) return {at::ones({1}, at::kFloat),
                                                        at::zeros({1}, at::kInt)};
  float* scale = qp.scale.data_ptr<float>();
  int32_t* zero_point = qp.zero_point.data_ptr<int32_t>();
  for (int64_t i = 0; i < n; ++i) qparams_one(mn[i], mx[i], spec, eps, &scale[i], &zero_point[i]);
  return qp;
}

QuantizedTensor quantize(const at::Tensor& x, const QParams& qparams, const QuantSpec& spec) {
  return quantize_impl<false>(x, qparams, spec);
}

QuantizedTensor quantize_ref(const at::Tensor& x, const QParams& qparams, const QuantSpec& spec) {
  return quantize_impl<true>(x, qparams, spec);
}

QuantizedTensor quantize_min_max(const at::Tensor& input, const QuantSpec& spec, float eps,
                                 at::Tensor out) {
  check_integer(spec);
  const at::Tensor x = as_readable(input);
  const Spans v = spans_of(x, spec);
  // Rows that fit in cache, each with its own qparams: per tensor (small), per channel
  // on axis 0, per group. Anything else reads the tensor twice.
  const int64_t rows = v.grouped ? v.rows : v.channels;
  const int64_t cols = v.grouped ? v.cols : v.inner;
  if (v.outer != 1 || cols > kPiece || cols == 0 || rows * cols != x.numel())
    return quantize_min_max_composed<false>(input, spec, eps, std::move(out));
  QParams qp{at::empty({v.params()}, at::kFloat), at::empty({v.params()}, at::kInt)};
  at::Tensor data = empty_quantized(x, spec, std::move(out));
  auto run = [&](auto* q) {
    quantize_min_max_rows(x, q, rows, cols, v.grouped ? v.group : cols, spec, eps,
                          qp.scale.data_ptr<float>(), qp.zero_point.data_ptr<int32_t>());
  };
  if (data.scalar_type() == at::kChar)
    run(data.data_ptr<int8_t>());
  else
    run(data.data_ptr<uint8_t>());
  return make_quantized(input, std::move(data), std::move(qp), v, spec);
}

QuantizedTensor quantize_min_max_ref(const at::Tensor& x, const QuantSpec& spec, float eps) {
  check_integer(spec);
  return quantize_min_max_composed<true>(x, spec, eps);
}

// (q - zp) * scale in float, span by span, into one tensor: the ATen composition
// (dequantize_ref) made three full-size temporaries, each page faulted in.
at::Tensor QuantizedTensor::dequantize() const {
  if (g_idx.defined()) {
    const at::Tensor order = group_order(*this);
    return in_group_order(*this, order).dequantize().index_select(1, at::argsort(order));
  }
  const bool bytes = data.scalar_type() == at::kChar || data.scalar_type() == at::kByte;
  if (!spec.is_integer() || !bytes || data.dim() == 0) return dequantize_ref(*this);
  const at::Tensor q = data.contiguous();
  const Spans v = spans_of(q, spec);
  const Pieces pieces(v);
  const std::pair<at::Tensor, at::Tensor> qp = float_qparams(qparams, v);
  const float* scale = qp.first.data_ptr<float>();
  const float* zp = qp.second.data_ptr<float>();
  at::Tensor out = at::empty(q.sizes(), at::kFloat);
  float* o = out.data_ptr<float>();
  at::parallel_for(0, pieces.count(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      dequantize_range(q, v, scale, zp, pieces.offset(p), pieces.offset(p) + pieces.length(p), o + pieces.offset(p));
  });
  return out;
}

}  // namespace mq
