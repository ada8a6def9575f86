#include "mq/affine.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "mq/error.hpp"

namespace mq {
namespace {

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
  std::vector<int64_t> param_shape() const {
    return grouped ? std::vector<int64_t>{rows, groups} : std::vector<int64_t>{channels};
  }
};

Spans spans_of(const at::Tensor& x, const QuantSpec& spec) {
  Spans v;
  v.inner = x.numel();
  const int64_t rank = x.dim();
  if (spec.granularity == Granularity::kPerTensor) return v;
  if (rank == 0)
    throw RecipeError(std::string(to_string(spec.granularity)) + " needs a tensor of rank >= 1");
  if (spec.granularity == Granularity::kPerGroup) {
    if (spec.group_size <= 0)
      throw RecipeError("group_size must be positive, got " + std::to_string(spec.group_size));
    v.grouped = true;
    v.cols = x.size(rank - 1);
    v.rows = v.cols ? x.numel() / v.cols : 0;
    v.group = spec.group_size;
    v.groups = (v.cols + v.group - 1) / v.group;
    return v;
  }
  const int64_t axis = spec.axis < 0 ? spec.axis + rank : spec.axis;
  if (axis < 0 || axis >= rank)
    throw RecipeError("channel axis " + std::to_string(spec.axis) + " is out of range for a " +
                      std::to_string(rank) + "-D tensor");
  v.outer = 1;
  for (int64_t d = 0; d < axis; ++d) v.outer *= x.size(d);
  v.channels = x.size(axis);
  v.inner = 1;
  for (int64_t d = axis + 1; d < rank; ++d) v.inner *= x.size(d);
  return v;
}

at::Tensor as_float_contiguous(const at::Tensor& x) {
  if (!x.is_floating_point())
    throw InputError(std::string("cannot quantize a tensor of dtype ") +
                     std::string(c10::toString(x.scalar_type())));
  return x.to(at::kFloat).contiguous();
}

void check_integer(const QuantSpec& spec) {
  if (!spec.is_integer())
    throw RecipeError("affine quantization needs an integer dtype, not " + spec.to_string());
}

// Rounds half to even like std::nearbyint for |v| < 2^22, in a form compilers vectorize.
inline float round_half_even(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (v + kMagic) - kMagic;
}

// Hot loops are written so the compiler vectorizes them, and cloned for AVX2, picked at
// load time where the CPU has it (same results: the operations are exact or correctly
// rounded). target_clones cannot take templates (clang), hence the overloads.
#if defined(__clang__)
#define MQ_HOT __attribute__((target_clones("avx2", "default")))
#else
#define MQ_HOT __attribute__((target_clones("avx2", "default"), optimize("O3")))
#endif

template <class Q>
inline __attribute__((always_inline)) void quantize_span_body(const float* in, Q* out, int64_t n, float inv,
                                                              float lo, float hi, int32_t zp) {
  for (int64_t i = 0; i < n; ++i) {
    float r = in[i] * inv;
    r = r >= lo ? r : lo;  // NaN goes to qmin, as PyTorch's x86 build does
    r = r <= hi ? r : hi;
    out[i] = static_cast<Q>(static_cast<int32_t>(round_half_even(r)) + zp);
  }
}

MQ_HOT void quantize_span(const float* in, int8_t* out, int64_t n, float inv, float lo, float hi, int32_t zp) {
  quantize_span_body(in, out, n, inv, lo, hi, zp);
}

MQ_HOT void quantize_span(const float* in, uint8_t* out, int64_t n, float inv, float lo, float hi, int32_t zp) {
  quantize_span_body(in, out, n, inv, lo, hi, zp);
}

template <class Q>
void quantize_spans(const float* x, Q* q, const Spans& v, const float* scale,
                    const int32_t* zero_point, int64_t qmin, int64_t qmax) {
  at::parallel_for(0, v.count(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      const int64_t p = v.param(s);
      const int32_t zp = zero_point[p];
      quantize_span(x + v.offset(s), q + v.offset(s), v.length(s), 1.0f / scale[p],
                    static_cast<float>(qmin - zp), static_cast<float>(qmax - zp), zp);
    }
  });
}

// Min and max of a span in eight independent lanes (vectorizable; min and max are
// exact, so the lane order does not change the result).
MQ_HOT void min_max_span(
    const float* in, int64_t n, float* lo, float* hi) {
  float mn[8], mx[8];
  for (int j = 0; j < 8; ++j) {
    mn[j] = *lo;
    mx[j] = *hi;
  }
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) {
      mn[j] = in[i + j] < mn[j] ? in[i + j] : mn[j];
      mx[j] = in[i + j] > mx[j] ? in[i + j] : mx[j];
    }
  for (; i < n; ++i) {
    mn[0] = in[i] < mn[0] ? in[i] : mn[0];
    mx[0] = in[i] > mx[0] ? in[i] : mx[0];
  }
  for (int j = 0; j < 8; ++j) {
    *lo = mn[j] < *lo ? mn[j] : *lo;
    *hi = mx[j] > *hi ? mx[j] : *hi;
  }
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

template <bool kRef>
QuantizedTensor quantize_impl(const at::Tensor& input, const QParams& qparams,
                              const QuantSpec& spec) {
  check_integer(spec);
  const at::Tensor x = as_float_contiguous(input);
  const Spans v = spans_of(x, spec);
  const at::Tensor scale = qparams.scale.to(at::kFloat).contiguous();
  const at::Tensor zp = qparams.zero_point.to(at::kInt).contiguous();
  if (scale.numel() != v.params() || zp.numel() != v.params())
    throw RecipeError("qparams have " + std::to_string(scale.numel()) + " scales for " +
                      std::to_string(v.params()) + " channels or groups");
  const bool is_signed = spec.qmin() < 0;
  // reduce_range narrows the range the observer fits, not the clamp: PyTorch rounds
  // the observed extremes to the storage type's full range (e.g. 64 under [-64, 63]).
  QuantSpec storage = spec;
  storage.reduce_range = false;
  QuantizedTensor out;
  out.data = at::empty(x.sizes(), at::TensorOptions(is_signed ? at::kChar : at::kByte));
  auto run = [&](auto* q) {
    if constexpr (kRef)
      quantize_spans_ref(x.data_ptr<float>(), q, v, scale.data_ptr<float>(),
                         zp.data_ptr<int32_t>(), storage.qmin(), storage.qmax());
    else
      quantize_spans(x.data_ptr<float>(), q, v, scale.data_ptr<float>(), zp.data_ptr<int32_t>(),
                     storage.qmin(), storage.qmax());
  };
  if (is_signed)
    run(out.data.data_ptr<int8_t>());
  else
    run(out.data.data_ptr<uint8_t>());
  out.qparams = {scale.reshape(v.param_shape()), zp.reshape(v.param_shape())};
  out.spec = spec;
  out.shape = input.sizes().vec();
  out.original_dtype = input.scalar_type();
  return out;
}

template <bool kRef>
std::pair<at::Tensor, at::Tensor> min_max_impl(const at::Tensor& input, const QuantSpec& spec) {
  const at::Tensor x = as_float_contiguous(input);
  const Spans v = spans_of(x, spec);
  at::Tensor mins = at::full(v.param_shape(), std::numeric_limits<float>::infinity(), at::kFloat);
  at::Tensor maxs = at::full(v.param_shape(), -std::numeric_limits<float>::infinity(), at::kFloat);
  float* lo = mins.data_ptr<float>();
  float* hi = maxs.data_ptr<float>();
  const float* data = x.data_ptr<float>();
  auto reduce_span = [&](int64_t s) {
    const float* span = data + v.offset(s);
    const int64_t p = v.param(s);
    if constexpr (kRef) {
      float mn = lo[p], mx = hi[p];
      for (int64_t i = 0; i < v.length(s); ++i) {
        mn = span[i] < mn ? span[i] : mn;
        mx = span[i] > mx ? span[i] : mx;
      }
      lo[p] = mn;
      hi[p] = mx;
    } else {
      min_max_span(span, v.length(s), &lo[p], &hi[p]);
    }
  };
  if (kRef || v.count() != v.params()) {
    // Spans sharing a parameter (per channel with leading dims) reduce in order.
    for (int64_t s = 0; s < v.count(); ++s) reduce_span(s);
  } else {
    // One span per parameter: threads own spans, so results do not depend on them.
    at::parallel_for(0, v.count(), 1, [&](int64_t begin, int64_t end) {
      for (int64_t s = begin; s < end; ++s) reduce_span(s);
    });
  }
  return {mins, maxs};
}

}  // namespace

std::pair<at::Tensor, at::Tensor> min_max(const at::Tensor& x, const QuantSpec& spec) {
  return min_max_impl<false>(x, spec);
}

std::pair<at::Tensor, at::Tensor> min_max_ref(const at::Tensor& x, const QuantSpec& spec) {
  return min_max_impl<true>(x, spec);
}

QParams qparams_from_min_max(const at::Tensor& min_in, const at::Tensor& max_in,
                             const QuantSpec& spec, float eps) {
  check_integer(spec);
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
  const int64_t qmin = spec.qmin(), qmax = spec.qmax();
  for (int64_t i = 0; i < n; ++i) {
    const float min_neg = std::min(mn[i], 0.0f);
    const float max_pos = std::max(mx[i], 0.0f);
    if (spec.scheme == Scheme::kSymmetric) {
      const float bound = std::max(-min_neg, max_pos);
      scale[i] = std::max(bound / (static_cast<float>(qmax - qmin) / 2.0f), eps);
      // PyTorch: quint8 symmetric uses 128 whatever the range (reduce_range included).
      zero_point[i] = spec.qmin() < 0 ? 0 : 128;
      if (spec.dtype == DType::kUInt4) zero_point[i] = 8;
    } else {
      scale[i] = std::max((max_pos - min_neg) / static_cast<float>(qmax - qmin), eps);
      const int64_t zp = qmin - static_cast<int64_t>(std::nearbyint(min_neg / scale[i]));
      zero_point[i] = static_cast<int32_t>(std::clamp(zp, qmin, qmax));
    }
  }
  return qp;
}

QuantizedTensor quantize(const at::Tensor& x, const QParams& qparams, const QuantSpec& spec) {
  return quantize_impl<false>(x, qparams, spec);
}

QuantizedTensor quantize_ref(const at::Tensor& x, const QParams& qparams, const QuantSpec& spec) {
  return quantize_impl<true>(x, qparams, spec);
}

}  // namespace mq
