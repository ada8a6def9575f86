#pragma once
// A quantized tensor: integer data plus the qparams and spec that give it meaning.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "mq/export.hpp"
#include "mq/qparams.hpp"
#include "mq/quant_spec.hpp"

namespace mq {

// A quantized tensor. Integer targets keep one integer per element (int4 values in an
// int8 tensor; formats pack them); fp16/bf16 targets keep the cast tensor and no
// qparams.
struct MQ_API QuantizedTensor {
  at::Tensor data;  // int8 / uint8 (int4 / uint4 unpacked), or float16 / bfloat16
  QParams qparams;
  QuantSpec spec;
  std::vector<int64_t> shape;            // original shape
  at::ScalarType original_dtype = at::kFloat;

  // x_hat = (q - zero_point) * scale, in float32, in the original shape.
  at::Tensor dequantize() const;
  // Bytes it takes stored: see storage_bytes().
  int64_t nbytes() const;
};

// How many (scale, zero point) pairs a tensor of `shape` quantized with `spec` has: one
// per tensor, shape[axis] per channel, rows x groups per group (the last one partial).
MQ_API int64_t qparam_count(const QuantSpec& spec, const std::vector<int64_t>& shape);

// Bytes a tensor of `shape` takes stored with `spec`: data (int4 packed eight to an
// int32, rows padded to a whole word, plus its 2-int32 shape, as compressed-tensors
// stores it), scales in the original float dtype, and zero points when asymmetric.
MQ_API int64_t storage_bytes(const QuantSpec& spec, const std::vector<int64_t>& shape,
                             at::ScalarType original_dtype);

}  // namespace mq
