#pragma once
// A quantized tensor: integer data plus the qparams and spec that give it meaning.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "mq/export.hpp"
#include "mq/qparams.hpp"
#include "mq/quant_spec.hpp"

namespace mq {

struct MQ_API QuantizedTensor {
  at::Tensor data;  // int8 / uint8 in the original shape
  QParams qparams;
  QuantSpec spec;
  std::vector<int64_t> shape;            // original shape
  at::ScalarType original_dtype = at::kFloat;

  // x_hat = (q - zero_point) * scale, in float32, in the original shape.
  at::Tensor dequantize() const;
  // Bytes it takes stored: data, scales (in the original float dtype) and zero points.
  int64_t nbytes() const;
};

}  // namespace mq
