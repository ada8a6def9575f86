#pragma once
// Four-bit packing as compressed-tensors stores it (pack_to_int32), shared by the formats.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "mq/export.hpp"
#include "mq/quant_spec.hpp"

namespace mq {

// The nibble offset for `spec`: 8 for signed (int4), 0 for unsigned (uint4).
inline int nibble_offset(const QuantSpec& spec) { return spec.qmin() < 0 ? 8 : 0; }

// Values packed eight to an int32 along the last dimension, element 0 in the lowest
// bits, each row padded to a whole word; the nibble is value + offset (8 for int4, so
// that -8..7 becomes 0..15; 0 for uint4). A 1-D input is one row.
MQ_API at::Tensor pack_int4(const at::Tensor& values, int offset);

// The inverse: `cols` values per row of `packed`, as `dtype`. Throws
// std::invalid_argument when a row of `packed` has fewer than cols / 8 words.
MQ_API at::Tensor unpack_int4(const at::Tensor& packed, int64_t cols, int offset, at::ScalarType dtype);

// Whether `packed` is what pack_int4() makes of a tensor of `shape`: int32, [rows,
// ceil(shape.back() / 8)] with rows the product of the other dimensions (none negative,
// the last positive, no overflow). Formats check what they read with it.
MQ_API bool packs_shape(const at::Tensor& packed, const std::vector<int64_t>& shape);

}  // namespace mq
