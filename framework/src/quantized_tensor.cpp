#include "mq/quantized_tensor.hpp"

#include <ATen/ATen.h>

#include "mq/affine.hpp"
#include "mq/blocks.hpp"

namespace mq {

// QuantizedTensor::dequantize() is in affine.cpp (a kernel over the spans); this is its
// oracle, composed of ATen ops.
at::Tensor dequantize_ref(const QuantizedTensor& t) {
  const QuantSpec& spec = t.spec;
  if (spec.is_block()) {
    const int64_t cols = t.shape.empty() ? 1 : t.shape.back();
    return blocks::dequantize(t.data, spec.dtype, cols).reshape(t.shape);
  }
  if (!spec.is_integer()) return t.data.to(at::kFloat);
  const at::Tensor q = t.data.to(at::kFloat);
  at::Tensor scale = t.qparams.scale.to(at::kFloat);
  at::Tensor zp = t.qparams.zero_point.to(at::kFloat);
  if (spec.granularity == Granularity::kPerChannel && q.dim() > 0) {
    const int64_t axis = spec.axis < 0 ? spec.axis + q.dim() : spec.axis;
    std::vector<int64_t> shape(q.dim(), 1);
    shape[axis] = q.size(axis);
    scale = scale.reshape(shape);
    zp = zp.reshape(shape);
  } else if (spec.granularity == Granularity::kPerGroup && q.dim() > 0) {
    const int64_t cols = q.size(-1);
    const auto expand = [&](const at::Tensor& t) {
      return t.reshape({-1, t.size(-1)})
          .repeat_interleave(spec.group_size, 1)
          .narrow(1, 0, cols)
          .reshape(q.sizes());
    };
    scale = expand(scale);
    zp = expand(zp);
  }
  return (q - zp) * scale;
}

int64_t QuantizedTensor::nbytes() const { return storage_bytes(spec, shape, original_dtype); }

int64_t qparam_count(const QuantSpec& spec, const std::vector<int64_t>& shape) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  const int64_t cols = shape.empty() ? 1 : shape.back();
  const int64_t rows = cols ? numel / cols : 0;
  if (spec.granularity == Granularity::kPerChannel && !shape.empty()) {
    const int64_t axis = spec.axis < 0 ? spec.axis + static_cast<int64_t>(shape.size()) : spec.axis;
    return axis >= 0 && axis < static_cast<int64_t>(shape.size()) ? shape[axis] : 0;
  }
  if (spec.granularity == Granularity::kPerGroup) return rows * ((cols + spec.group_size - 1) / spec.group_size);
  return 1;
}

int64_t storage_bytes(const QuantSpec& spec, const std::vector<int64_t>& shape,
                      at::ScalarType original_dtype) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  const int64_t cols_ = shape.empty() ? 1 : shape.back();
  if (spec.is_block()) return cols_ ? numel / cols_ * blocks::row_bytes(spec.dtype, cols_) : 0;
  if (!spec.is_integer()) return numel * 2;
  const int64_t cols = shape.empty() ? 1 : shape.back();
  const int64_t rows = cols ? numel / cols : 0;
  const int64_t params = qparam_count(spec, shape);
  const bool asymmetric = spec.scheme == Scheme::kAsymmetric || spec.qmin() == 0;
  int64_t bytes = params * static_cast<int64_t>(c10::elementSize(original_dtype));
  if (spec.packed()) {
    const int64_t per_word = traits(spec.dtype).per_word;
    bytes += rows * ((cols + per_word - 1) / per_word) * 4 + 8;
    if (asymmetric) {  // packed into int32 words along dim 0
      const int64_t zp_rows = spec.granularity == Granularity::kPerTensor ? 1 : rows;
      const int64_t zp_cols = zp_rows ? params / zp_rows : 0;
      bytes += (zp_rows + per_word - 1) / per_word * zp_cols * 4;
    }
  } else {
    bytes += numel;
    if (asymmetric) bytes += params;
  }
  return bytes;
}

}  // namespace mq
