#include "mq/quantized_tensor.hpp"

#include <ATen/ATen.h>

#include "mq/affine.hpp"
#include "mq/blocks.hpp"
#include "mq/error.hpp"

namespace mq {

at::Tensor group_order(const QuantizedTensor& q) {
  const int64_t cols = q.shape.empty() ? 0 : q.shape.back();
  if (q.spec.granularity != Granularity::kPerGroup || q.shape.size() != 2 || q.g_idx.dim() != 1 ||
      q.g_idx.numel() != cols || !at::isIntegralType(q.g_idx.scalar_type(), /*includeBool=*/false))
    throw InputError("a group index (g_idx) must hold one integer for each of the " + std::to_string(cols) +
                     " columns of a 2-D tensor quantized per group");
  const auto [sorted, order] = q.g_idx.to(at::kLong).sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
  if (!at::equal(sorted, at::div(at::arange(cols, at::kLong), q.spec.group_size, "floor")))
    throw InputError("the group index (g_idx) does not give each group " + std::to_string(q.spec.group_size) +
                     " columns");
  return order;
}

QuantizedTensor in_group_order(const QuantizedTensor& q, const at::Tensor& order) {
  if (!q.g_idx.defined()) return q;
  QuantizedTensor out = q;
  out.data = q.data.index_select(1, order);
  out.g_idx = at::Tensor();
  return out;
}

QuantizedTensor with_group_index(QuantizedTensor ordered, const at::Tensor& order) {
  const at::Tensor position = at::argsort(order);  // of each original column
  ordered.data = ordered.data.index_select(1, position);
  ordered.g_idx = at::div(position, ordered.spec.group_size, "floor").to(at::kInt);
  return ordered;
}

bool same_group_index(const QuantizedTensor& a, const QuantizedTensor& b) {
  if (a.g_idx.defined() != b.g_idx.defined()) return false;
  return !a.g_idx.defined() || (a.g_idx.sizes() == b.g_idx.sizes() && at::equal(a.g_idx.to(at::kLong), b.g_idx.to(at::kLong)));
}

// QuantizedTensor::dequantize() is in affine.cpp (a kernel over the spans); this is its
// oracle, composed of ATen ops.
at::Tensor dequantize_ref(const QuantizedTensor& t) {
  if (t.g_idx.defined()) {
    const at::Tensor order = group_order(t);
    return dequantize_ref(in_group_order(t, order)).index_select(1, at::argsort(order));
  }
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

int64_t QuantizedTensor::nbytes() const {
  return storage_bytes(spec, shape, original_dtype) + (g_idx.defined() ? g_idx.numel() * 4 : 0);
}

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
