// The comparison math validators use: the dequantized values against the original
// (compare_dequantized) and linear layers on float or quantized weights (linear).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <limits>
#include <type_traits>

#include "hot.hpp"
#include "lanes.hpp"
#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "spans.hpp"

namespace mq {
namespace {

// compare_dequantized() over a piece: x_hat = (float(q) - zp) * scale as dequantize()
// computes it (or the widened values of a float cast, scale 1 and zp 0), in lanes of
// eight: float for x_hat, double for the sums (folded in lane order at the end).

typedef float Floats8 __attribute__((vector_size(32)));
typedef double Doubles8 __attribute__((vector_size(64)));
typedef int32_t Ints8 __attribute__((vector_size(32)));

template <class Q>
inline __attribute__((always_inline)) void compare_body(const float* x, const Q* q, int64_t n, float scale,
                                                        float zp, DequantizedComparison* out) {
  typedef Q Values8 __attribute__((vector_size(8 * sizeof(Q))));
  Doubles8 signal = {}, noise = {};
  Floats8 lo = out->min - Floats8{}, hi = out->max - Floats8{};
  Ints8 finite = {};  // -1 a lane for each finite x_hat
  // Lanes past the end of a short last step are zero in x and ignored for x_hat.
  auto step = [&](const Floats8& xv, const Floats8& qv, const Ints8& valid, auto partial) {
    Floats8 h = (qv - zp) * scale;
    if constexpr (decltype(partial)::value) h = valid ? h : xv;  // (x - x) is 0 there
    const Doubles8 xd = __builtin_convertvector(xv, Doubles8), d = xd - __builtin_convertvector(h, Doubles8);
    signal += xd * xd;
    noise += d * d;
    const Floats8 h_lo = valid ? h : lo, h_hi = valid ? h : hi;
    lo = h_lo < lo ? h_lo : lo;
    hi = h_hi > hi ? h_hi : hi;
    const Floats8 magnitude = h < 0 ? -h : h;
    finite += (magnitude <= std::numeric_limits<float>::max()) & valid;
  };
  const Ints8 all = Ints8{} - 1;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    Floats8 xv;
    Values8 qv;
    std::memcpy(&xv, x + i, sizeof xv);
    std::memcpy(&qv, q + i, sizeof qv);
    if constexpr (std::is_same_v<Q, float>)
      step(xv, qv, all, std::false_type{});
    else  // through int32 lanes: GCC 12 converts int8 lanes to float one at a time
      step(xv, __builtin_convertvector(__builtin_convertvector(qv, Ints8), Floats8), all, std::false_type{});
  }
  if (i < n) {  // the last few, in the first lanes
    Floats8 xv = {}, qv = {};
    Ints8 valid = {};
    for (int j = 0; i + j < n; ++j) {
      xv[j] = x[i + j];
      qv[j] = static_cast<float>(q[i + j]);
      valid[j] = -1;
    }
    step(xv, qv, valid, std::true_type{});
  }
  for (int j = 0; j < 8; ++j) {
    out->signal += signal[j];
    out->noise += noise[j];
    out->min = lo[j] < out->min ? lo[j] : out->min;
    out->max = hi[j] > out->max ? hi[j] : out->max;
    out->non_finite += finite[j];  // minus the finite ones
  }
  out->non_finite += n;
}

MQ_HOT void compare_span(const float* x, const int8_t* q, int64_t n, float scale, float zp,
                         DequantizedComparison* out) {
  compare_body(x, q, n, scale, zp, out);
}
MQ_HOT void compare_span(const float* x, const uint8_t* q, int64_t n, float scale, float zp,
                         DequantizedComparison* out) {
  compare_body(x, q, n, scale, zp, out);
}
MQ_HOT void compare_span(const float* x, const float* h, int64_t n, float scale, float zp,
                         DequantizedComparison* out) {
  compare_body(x, h, n, scale, zp, out);
}

}  // namespace

namespace {

// y[m * ldy] = x[m] . w for R rows of x (`k` apart): lane j of each sum takes the
// elements j mod 16 in order, the lanes are then added in order, then the tail. R
// rows at once share each load of w (and keep R sums in flight).
template <int R>
inline __attribute__((always_inline)) void dot_rows_body(const float* x, int64_t k, const float* w, float* y,
                                                         int64_t ldy) {
  Lanes acc[R] = {};
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    Lanes v;
    std::memcpy(&v, w + i, sizeof v);
    for (int r = 0; r < R; ++r) {
      Lanes u;
      std::memcpy(&u, x + r * k + i, sizeof u);
      acc[r] += u * v;
    }
  }
  for (int r = 0; r < R; ++r) {
    float s = 0;
    for (int j = 0; j < 16; ++j) s += acc[r][j];
    for (int64_t t = i; t < k; ++t) s += x[r * k + t] * w[t];
    y[r * ldy] = s;
  }
}

MQ_HOT void dot_rows8(const float* x, int64_t k, const float* w, float* y, int64_t ldy) {
  dot_rows_body<8>(x, k, w, y, ldy);
}
MQ_HOT void dot_rows1(const float* x, int64_t k, const float* w, float* y, int64_t ldy) {
  dot_rows_body<1>(x, k, w, y, ldy);
}

// linear() over weight rows that `rows(first, count, buffer)` hands out in float32.
template <class Rows>
at::Tensor linear_rows(const at::Tensor& input, int64_t n, int64_t k, Rows&& rows) {
  if (input.dim() != 2 || input.size(1) != k)
    throw InputError("linear: an input of shape " + c10::str(input.sizes()) + " does not fit a weight of " +
                     std::to_string(k) + " columns");
  const at::Tensor x = input.to(at::kFloat).contiguous();
  const int64_t m = x.size(0);
  at::Tensor y = at::empty({m, n}, at::kFloat);
  const float* xs = x.data_ptr<float>();
  float* ys = y.data_ptr<float>();
  constexpr int64_t kBlock = 16;  // weight rows widened or dequantized at a time (in cache)
  at::parallel_for(0, (n + kBlock - 1) / kBlock, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buffer;
    for (int64_t b = begin; b < end; ++b) {
      const int64_t first = b * kBlock, count = std::min(kBlock, n - first);
      const float* w = rows(first, count, buffer);
      for (int64_t r = 0; r < count; ++r) {
        int64_t i = 0;
        for (; i + 8 <= m; i += 8) dot_rows8(xs + i * k, k, w + r * k, ys + i * n + first + r, n);
        for (; i < m; ++i) dot_rows1(xs + i * k, k, w + r * k, ys + i * n + first + r, n);
      }
    }
  });
  return y;
}

}  // namespace

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight) {
  if (weight.dim() != 2) throw InputError("linear: the weight must be 2-D, not " + c10::str(weight.sizes()));
  const at::Tensor w = as_readable(weight);
  const int64_t k = w.size(1);
  return linear_rows(x, w.size(0), k, [&](int64_t first, int64_t count, std::vector<float>& buffer) {
    return as_float(w, first * k, count * k, buffer);
  });
}

at::Tensor linear(const at::Tensor& x, const QuantizedTensor& weight) {
  if (weight.shape.size() != 2)
    throw InputError("linear: the weight must be 2-D, not " + c10::str(c10::IntArrayRef(weight.shape)));
  const bool bytes = weight.data.scalar_type() == at::kChar || weight.data.scalar_type() == at::kByte;
  if (!weight.spec.is_integer() && !weight.spec.is_block())
    return mq::linear(x, weight.data);  // a cast: its values, widened
  if (!bytes || weight.spec.is_block()) return mq::linear(x, weight.dequantize());
  if (weight.g_idx.defined() && x.dim() == 2 && x.size(1) == weight.shape[1]) {  // x's columns in group order
    const at::Tensor order = group_order(weight);
    return mq::linear(x.index_select(1, order), in_group_order(weight, order));
  }
  const at::Tensor q = weight.data.contiguous();
  const Spans v = spans_of(q, weight.spec);
  const std::pair<at::Tensor, at::Tensor> qp = float_qparams(weight.qparams, v);
  const float* scale = qp.first.data_ptr<float>();
  const float* zp = qp.second.data_ptr<float>();
  const int64_t k = q.size(1);
  return linear_rows(x, q.size(0), k, [&](int64_t first, int64_t count, std::vector<float>& buffer) {
    buffer.resize(static_cast<size_t>(count * k));
    dequantize_range(q, v, scale, zp, first * k, (first + count) * k, buffer.data());
    return static_cast<const float*>(buffer.data());
  });
}

DequantizedComparison compare_dequantized(const at::Tensor& original, const QuantizedTensor& q) {
  if (q.spec.is_block()) {  // its values, as a float32 "cast"
    QuantizedTensor values;
    values.data = q.dequantize();
    values.spec.dtype = DType::kFloat16;
    values.shape = q.shape;
    return compare_dequantized(original, values);
  }
  const at::Tensor x = as_readable(original);
  if (x.sizes() != q.data.sizes())
    throw InputError("cannot compare a quantized tensor of shape " + c10::str(q.data.sizes()) +
                     " with an original of shape " + c10::str(x.sizes()));
  if (q.g_idx.defined()) {  // the same sums, over the columns in the tensor's group order
    const at::Tensor order = group_order(q);
    return compare_dequantized(original.index_select(1, order), in_group_order(q, order));
  }
  // A float cast is one span of scale 1 and zero point 0 over its widened values.
  const bool integer = q.spec.is_integer();
  const at::ScalarType bytes = q.spec.stored_type();
  const at::Tensor data = integer ? q.data.to(bytes).contiguous() : as_readable(q.data);
  QuantSpec whole;
  whole.granularity = Granularity::kPerTensor;
  const Spans v = spans_of(data, integer ? q.spec : whole);
  const Pieces pieces(v);
  const std::pair<at::Tensor, at::Tensor> qp =
      integer ? float_qparams(q.qparams, v) : std::pair<at::Tensor, at::Tensor>{at::ones({1}), at::zeros({1})};
  const float* scale = qp.first.data_ptr<float>();
  const float* zp = qp.second.data_ptr<float>();
  DequantizedComparison none;
  none.min = std::numeric_limits<float>::infinity();
  none.max = -none.min;
  std::vector<DequantizedComparison> parts(static_cast<size_t>(pieces.count()), none);
  at::parallel_for(0, pieces.count(), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buffer, hats;
    for (int64_t p = begin; p < end; ++p) {
      const int64_t at = pieces.offset(p), n = pieces.length(p), param = pieces.v.param(pieces.span(p));
      const float* xs = as_float(x, at, n, buffer);
      const float sc = scale[param], z = zp[param];
      if (!integer)
        compare_span(xs, as_float(data, at, n, hats), n, sc, z, &parts[p]);
      else if (data.scalar_type() == at::kChar)
        compare_span(xs, data.data_ptr<int8_t>() + at, n, sc, z, &parts[p]);
      else
        compare_span(xs, data.data_ptr<uint8_t>() + at, n, sc, z, &parts[p]);
    }
  });
  DequantizedComparison out = none;
  for (const DequantizedComparison& c : parts) {
    out.signal += c.signal;
    out.noise += c.noise;
    out.min = c.min < out.min ? c.min : out.min;
    out.max = c.max > out.max ? c.max : out.max;
    out.non_finite += c.non_finite;
  }
  return out;
}

}  // namespace mq
