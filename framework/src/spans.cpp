// The spans and float reads of spans.hpp: how a tensor splits into runs that share
// qparams, and 16-bit input widened to float32 a piece at a time.
#include "spans.hpp"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include <string>

#include "hot.hpp"
#include "mq/error.hpp"

namespace mq {

namespace {

MQ_HOT void widen(const c10::BFloat16* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(in[i]);
}

MQ_HOT void widen_exact(const c10::Half* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = c10::detail::fp16_ieee_to_fp32_value(in[i].x);
}

#if defined(__x86_64__)
// F16C's conversion is exact (subnormals included; NaN stays NaN, quieted).
__attribute__((target("avx,f16c"))) void widen_f16c(const c10::Half* in, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  for (; i < n; ++i) out[i] = c10::detail::fp16_ieee_to_fp32_value(in[i].x);
}
#endif

// float16 rows go through F16C where the CPU has it (chosen here: the cloned kernels'
// baseline clone cannot hold it, and GCC 12 widens _Float16 vectors an element at a
// time): 5.4 -> 7.4 G elements/s in cache on an AMD EPYC, about bfloat16's speed.
void widen(const c10::Half* in, float* out, int64_t n) {
#if defined(__x86_64__)
  static const bool f16c = [] {  // "avx" checks that the OS saves YMM registers too
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
  }();
  if (f16c) return widen_f16c(in, out, n);
#endif
  widen_exact(in, out, n);
}

}  // namespace

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

void check_floating(const at::Tensor& x) {
  if (!x.is_floating_point())
    throw InputError(std::string("cannot quantize a tensor of dtype ") +
                     std::string(c10::toString(x.scalar_type())));
}

at::Tensor as_float_contiguous(const at::Tensor& x) {
  check_floating(x);
  return x.to(at::kFloat).contiguous();
}

at::Tensor as_readable(const at::Tensor& x) {
  check_floating(x);
  const at::ScalarType t = x.scalar_type();
  if (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf) return x.contiguous();
  return x.to(at::kFloat).contiguous();
}

const float* as_float(const at::Tensor& x, int64_t offset, int64_t n, std::vector<float>& buffer) {
  const at::ScalarType dtype = x.scalar_type();
  if (dtype == at::kFloat) return x.data_ptr<float>() + offset;
  if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(static_cast<size_t>(n));
  if (dtype == at::kBFloat16)
    widen(x.data_ptr<c10::BFloat16>() + offset, buffer.data(), n);
  else
    widen(x.data_ptr<c10::Half>() + offset, buffer.data(), n);
  return buffer.data();
}

}  // namespace mq
