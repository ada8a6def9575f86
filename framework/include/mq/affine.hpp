#pragma once
// Affine quantization math shared by observers, quantizers and validators.
//
// q = clamp(nearbyint(x * (1/s)) + zp, storage min, storage max) and x_hat = (q - zp) * s, with
// qparams computed as torch.ao.quantization's calculate_qparams does, so integer
// outputs equal torch.quantize_per_channel / quantize_per_tensor bit for bit.
// (PyTorch multiplies by the float reciprocal of the scale rather than dividing; so
// do we, because parity with it is the contract.)
//
// Each optimized kernel has a scalar `_ref` twin that tests use as the oracle.

#include <ATen/core/Tensor.h>

#include <utility>

#include "mq/export.hpp"
#include "mq/qparams.hpp"
#include "mq/quant_spec.hpp"
#include "mq/quantized_tensor.hpp"

namespace mq {

// float32 machine epsilon, PyTorch observers' default lower bound for a scale.
constexpr float kScaleEps = 1.1920928955078125e-07f;

// Running min and max of `x` per channel of `spec` (a [C] pair, or [1] per tensor).
// The input may be any floating dtype and layout.
MQ_API std::pair<at::Tensor, at::Tensor> min_max(const at::Tensor& x, const QuantSpec& spec);
MQ_API std::pair<at::Tensor, at::Tensor> min_max_ref(const at::Tensor& x, const QuantSpec& spec);

// PyTorch's _calculate_qparams for `spec`. min/max of +-inf, or undefined tensors
// (nothing observed), give scale 1 and zero point 0, as PyTorch does.
MQ_API QParams qparams_from_min_max(const at::Tensor& min, const at::Tensor& max,
                                    const QuantSpec& spec, float eps = kScaleEps);

// `scale` as it is stored in `dtype` (formats keep scales in the weight's dtype, so
// weights are quantized with the stored value): rounded to bf16/fp16 where that stays
// positive and finite, else as it is.
MQ_API float stored_scale(float scale, at::ScalarType dtype);

// Quantizes `x` with `qparams` (int8 data for signed dtypes, uint8 for unsigned).
MQ_API QuantizedTensor quantize(const at::Tensor& x, const QParams& qparams, const QuantSpec& spec);
MQ_API QuantizedTensor quantize_ref(const at::Tensor& x, const QParams& qparams,
                                    const QuantSpec& spec);

// quantize(x, qparams_from_min_max(min_max(x)), spec) with each scale rounded to x's
// dtype as it will be stored, in one pass over memory where every channel or group
// has its own qparams (per channel on axis 0, per group). Writes into `out` when given
// (a contiguous int8/uint8 tensor of x's size: reused buffers spare page faults).
// Throws InputError when x holds inf.
MQ_API QuantizedTensor quantize_min_max(const at::Tensor& x, const QuantSpec& spec,
                                        float eps = kScaleEps, at::Tensor out = {});
MQ_API QuantizedTensor quantize_min_max_ref(const at::Tensor& x, const QuantSpec& spec,
                                            float eps = kScaleEps);

// q.dequantize() composed of ATen ops: the oracle of its kernel.
MQ_API at::Tensor dequantize_ref(const QuantizedTensor& q);

// `q` dequantized (x_hat, the values of q.dequantize(), bit for bit) against `original`
// (x, q's shape, any floating dtype) in one pass, without the float tensor: the sums of
// x^2 and (x - x_hat)^2 in double (a NaN or infinite x_hat makes noise NaN or
// infinite), x_hat's extremes (NaN skipped) and how many x_hat are not finite. Threads
// over fixed pieces summed in order: the same figures for any thread count.
struct DequantizedComparison {
  double signal = 0, noise = 0;
  float min = 0, max = 0;  // of x_hat; +inf and -inf when it holds no number
  int64_t non_finite = 0;
};
MQ_API DequantizedComparison compare_dequantized(const at::Tensor& original, const QuantizedTensor& q);

// x w^T (PyTorch's linear() without bias) for a few rows of input: x [M, K] float32,
// the weight [N, K] in any floating dtype, or quantized and dequantized as dequantize()
// gives it a few rows at a time, never whole. The weight is read once, in parallel over
// its rows; every output is summed in one order (sixteen lanes over K, folded in lane
// order, then the tail), so the result does not depend on the thread count. For
// validators that run layers on a few inputs: BLAS would pack the whole weight.
MQ_API at::Tensor linear(const at::Tensor& x, const at::Tensor& weight);
MQ_API at::Tensor linear(const at::Tensor& x, const QuantizedTensor& weight);

}  // namespace mq
