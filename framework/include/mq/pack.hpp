#pragma once
// Four-bit packing as compressed-tensors stores it (pack_to_int32), shared by the formats.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "mq/export.hpp"
#include "mq/quant_spec.hpp"

namespace mq {

// The nibble offset for `spec`: 8 for signed (int4), 0 for unsigned (uint4).
inline int nibble_offset(const QuantSpec& spec) { return spec.qmin() < 0 ? 8 : 0; }

// Values packed eight to an int32 along the last dimension, element 0 in the lowest
// bits, each row padded to a whole word; the nibble is value + offset (8 for int4, so
// that -8..7 becomes 0..15; 0 for uint4). A 1-D input is one row.
MQ_API at::Tensor pack_int4(const at::Tensor& values, int offset);

// The inverse: `cols` values per row of `packed`, as `dtype`.
MQ_API at::Tensor unpack_int4(const at::Tensor& packed, int64_t cols, int offset, at::ScalarType dtype);

}  // namespace mq
