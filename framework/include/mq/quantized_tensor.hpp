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
  // Per group only, and only when a group's columns are not a run of group_size columns
  // (GPTQ's activation order "group"): int32 [cols], the group of each column
  // (compressed-tensors' weight_g_idx). Each group still has group_size columns (the
  // last one the rest). Undefined otherwise.
  at::Tensor g_idx;

  // x_hat = (q - zero_point) * scale, in float32, in the original shape.
  at::Tensor dequantize() const;
  // Bytes it takes stored: see storage_bytes().
  int64_t nbytes() const;
};

// The columns of a tensor with g_idx, group by group (a stable sort of g_idx: int64
// [cols]); an InputError when g_idx does not give each group its group_size columns.
MQ_API at::Tensor group_order(const QuantizedTensor& q);
// `q` with its columns in group_order() (so that groups are runs of columns again, and
// the span kernels apply) and no g_idx; `q` itself when it has none.
MQ_API QuantizedTensor in_group_order(const QuantizedTensor& q, const at::Tensor& order);
// The inverse: a tensor quantized with its columns in `order` (groups are runs of
// columns there), put back in the original column order with the g_idx that says so.
MQ_API QuantizedTensor with_group_index(QuantizedTensor ordered, const at::Tensor& order);

// Whether both have no g_idx, or equal ones.
MQ_API bool same_group_index(const QuantizedTensor& a, const QuantizedTensor& b);

// How many (scale, zero point) pairs a tensor of `shape` quantized with `spec` has: one
// per tensor, shape[axis] per channel, rows x groups per group (the last one partial).
MQ_API int64_t qparam_count(const QuantSpec& spec, const std::vector<int64_t>& shape);

// Bytes a tensor of `shape` takes stored with `spec`: data (int4 packed eight to an
// int32, rows padded to a whole word, plus its 2-int32 shape, as compressed-tensors
// stores it), scales in the original float dtype, and zero points when asymmetric.
MQ_API int64_t storage_bytes(const QuantSpec& spec, const std::vector<int64_t>& shape,
                             at::ScalarType original_dtype);

}  // namespace mq
