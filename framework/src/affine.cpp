#include "mq/affine.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "mq/error.hpp"

namespace mq {
namespace {

// x viewed as [outer, channels, inner] around the spec's channel axis.
struct ChannelView {
  int64_t outer = 1;
  int64_t channels = 1;
  int64_t inner = 1;
};

ChannelView channel_view(const at::Tensor& x, const QuantSpec& spec) {
  ChannelView v;
  v.inner = x.numel();
  if (spec.granularity != Granularity::kPerChannel) return v;
  const int64_t rank = x.dim();
  if (rank == 0) return v;
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

void check_granularity(const QuantSpec& spec) {
  if (spec.granularity == Granularity::kPerGroup)
    throw RecipeError("per_group granularity needs a group-wise kernel; this build's affine "
                      "kernels handle per_tensor and per_channel only");
  if (!spec.is_integer()) throw RecipeError("affine quantization needs an integer dtype");
}

// Rounds half to even like std::nearbyint for |v| < 2^22, in a form compilers vectorize.
inline float round_half_even(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (v + kMagic) - kMagic;
}

template <class Q>
void quantize_rows(const float* x, Q* q, const ChannelView& v, const float* scale,
                   const int32_t* zero_point, int64_t qmin, int64_t qmax) {
  const int64_t rows = v.outer * v.channels;
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t c = r % v.channels;
      const float inv = 1.0f / scale[c];
      const int32_t zp = zero_point[c];
      const float lo = static_cast<float>(qmin - zp);
      const float hi = static_cast<float>(qmax - zp);
      const float* in = x + r * v.inner;
      Q* out = q + r * v.inner;
      for (int64_t i = 0; i < v.inner; ++i) {
        float s = in[i] * inv;
        s = s >= lo ? s : lo;  // NaN goes to qmin, as PyTorch's x86 build does
        s = s <= hi ? s : hi;
        out[i] = static_cast<Q>(static_cast<int32_t>(round_half_even(s)) + zp);
      }
    }
  });
}

template <class Q>
void quantize_rows_ref(const float* x, Q* q, const ChannelView& v, const float* scale,
                       const int32_t* zero_point, int64_t qmin, int64_t qmax) {
  for (int64_t o = 0; o < v.outer; ++o) {
    for (int64_t c = 0; c < v.channels; ++c) {
      const float inv = 1.0f / scale[c];
      for (int64_t i = 0; i < v.inner; ++i) {
        const int64_t idx = (o * v.channels + c) * v.inner + i;
        const float s = x[idx] * inv;
        int64_t value;
        if (std::isnan(s)) {
          value = qmin;
        } else {
          const float clamped = std::min(std::max(s, static_cast<float>(qmin - zero_point[c])),
                                         static_cast<float>(qmax - zero_point[c]));
          value = static_cast<int64_t>(std::nearbyint(clamped)) + zero_point[c];
        }
        q[idx] = static_cast<Q>(value);
      }
    }
  }
}

template <bool kRef>
QuantizedTensor quantize_impl(const at::Tensor& input, const QParams& qparams,
                              const QuantSpec& spec) {
  check_granularity(spec);
  const at::Tensor x = as_float_contiguous(input);
  const ChannelView v = channel_view(x, spec);
  const at::Tensor scale = qparams.scale.to(at::kFloat).contiguous();
  const at::Tensor zp = qparams.zero_point.to(at::kInt).contiguous();
  if (scale.numel() != v.channels || zp.numel() != v.channels)
    throw RecipeError("qparams have " + std::to_string(scale.numel()) + " scales for " +
                      std::to_string(v.channels) + " channels");
  const bool is_signed = spec.qmin() < 0;
  // reduce_range narrows the range the observer fits, not the clamp: PyTorch rounds
  // the observed extremes to the storage type's full range (e.g. 64 under [-64, 63]).
  QuantSpec storage = spec;
  storage.reduce_range = false;
  QuantizedTensor out;
  out.data = at::empty(x.sizes(), at::TensorOptions(is_signed ? at::kChar : at::kByte));
  auto run = [&](auto* q) {
    if constexpr (kRef)
      quantize_rows_ref(x.data_ptr<float>(), q, v, scale.data_ptr<float>(), zp.data_ptr<int32_t>(),
                        storage.qmin(), storage.qmax());
    else
      quantize_rows(x.data_ptr<float>(), q, v, scale.data_ptr<float>(), zp.data_ptr<int32_t>(),
                    storage.qmin(), storage.qmax());
  };
  if (is_signed)
    run(out.data.data_ptr<int8_t>());
  else
    run(out.data.data_ptr<uint8_t>());
  out.qparams = {scale, zp};
  out.spec = spec;
  out.shape = input.sizes().vec();
  out.original_dtype = input.scalar_type();
  return out;
}

template <bool kRef>
std::pair<at::Tensor, at::Tensor> min_max_impl(const at::Tensor& input, const QuantSpec& spec) {
  const at::Tensor x = as_float_contiguous(input);
  const ChannelView v = channel_view(x, spec);
  at::Tensor mins = at::full({v.channels}, std::numeric_limits<float>::infinity(), at::kFloat);
  at::Tensor maxs = at::full({v.channels}, -std::numeric_limits<float>::infinity(), at::kFloat);
  float* lo = mins.data_ptr<float>();
  float* hi = maxs.data_ptr<float>();
  const float* data = x.data_ptr<float>();
  auto reduce_row = [&](int64_t o, int64_t c) {
    const float* row = data + (o * v.channels + c) * v.inner;
    float mn = lo[c], mx = hi[c];
    for (int64_t i = 0; i < v.inner; ++i) {
      mn = row[i] < mn ? row[i] : mn;
      mx = row[i] > mx ? row[i] : mx;
    }
    lo[c] = mn;
    hi[c] = mx;
  };
  if constexpr (kRef) {
    for (int64_t o = 0; o < v.outer; ++o)
      for (int64_t c = 0; c < v.channels; ++c) reduce_row(o, c);
  } else {
    // Threads own channels, so results do not depend on the thread count.
    at::parallel_for(0, v.channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t o = 0; o < v.outer; ++o)
        for (int64_t c = begin; c < end; ++c) reduce_row(o, c);
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
  check_granularity(spec);
  const at::Tensor min_val = min_in.to(at::kFloat).contiguous();
  const at::Tensor max_val = max_in.to(at::kFloat).contiguous();
  const int64_t n = min_val.numel();
  QParams qp{at::ones({n}, at::kFloat), at::zeros({n}, at::kInt)};
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
