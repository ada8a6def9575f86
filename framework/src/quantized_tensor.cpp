#include "mq/quantized_tensor.hpp"

#include <ATen/ATen.h>

namespace mq {

at::Tensor QuantizedTensor::dequantize() const {
  const at::Tensor q = data.to(at::kFloat);
  at::Tensor scale = qparams.scale.to(at::kFloat);
  at::Tensor zp = qparams.zero_point.to(at::kFloat);
  if (spec.granularity == Granularity::kPerChannel && q.dim() > 0) {
    const int64_t axis = spec.axis < 0 ? spec.axis + q.dim() : spec.axis;
    std::vector<int64_t> shape(q.dim(), 1);
    shape[axis] = q.size(axis);
    scale = scale.reshape(shape);
    zp = zp.reshape(shape);
  }
  return (q - zp) * scale;
}

int64_t QuantizedTensor::nbytes() const {
  const int64_t element_bits = spec.is_integer() ? spec.bits() : 16;
  int64_t bytes = (data.numel() * element_bits + 7) / 8;
  if (spec.is_integer()) {
    bytes += qparams.scale.numel() * static_cast<int64_t>(c10::elementSize(original_dtype));
    if (spec.scheme == Scheme::kAsymmetric) bytes += qparams.zero_point.numel();
  }
  return bytes;
}

}  // namespace mq
