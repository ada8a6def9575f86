#pragma once
// llama.cpp's block types (DType::kQ8_0, kQ4_0, kQ4_1, kQ5_0, kQ5_1): each row of a
// weight cut in blocks of 32 values, each block its bytes as ggml's `block_q8_0`, ...
// hold them, made as ggml-quants.c's reference quantizer (quantize_row_*_ref) makes them,
// byte for byte:
//   q8_0  d = amax/127,             q = roundf(x/d)                        [d, 32 x int8]
//   q4_0  d = (signed max)/-8,      q = min(15, trunc(x/d + 8.5))          [d, 16 nibble pairs]
//   q4_1  d = (max-min)/15, m=min,  q = min(15, trunc((x-m)/d + 0.5))     [d, m, 16 pairs]
//   q5_0  d = (signed max)/-16,     q = min(31, trunc(x/d + 16.5))         [d, qh, 16 pairs]
//   q5_1  d = (max-min)/31, m=min,  q = trunc((x-m)/d + 0.5)              [d, m, qh, 16 pairs]
// (x/d as x times the float reciprocal of d; d and m stored as fp16). A pair packs value
// j in its low nibble and j + 16 in its high one; qh holds the fifth bits, bit j value j.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "mq/export.hpp"
#include "mq/quant_spec.hpp"

namespace mq::blocks {

// Bytes a row of `cols` values takes in `dtype` (cols a multiple of its block).
MQ_API int64_t row_bytes(DType dtype, int64_t cols);

// The rows of `x` (a 2-D tensor of any floating dtype, its columns a multiple of the
// block), as uint8 [rows, row_bytes]. Rows in parallel; the same bytes as quantize_ref.
// `importance` (every type but q8_0: one weight per column, e.g. the mean square of each
// input over calibration, llama.cpp's imatrix) weights the scale search as llama.cpp's
// quantize_row_*_impl does; undefined: the reference search.
MQ_API at::Tensor quantize(const at::Tensor& x, DType dtype, at::Tensor importance = {});
MQ_API at::Tensor quantize_ref(const at::Tensor& x, DType dtype, at::Tensor importance = {});

// One row: `n` values (a multiple of the block) of `data` into `out`, float32.
MQ_API void dequantize_row(const uint8_t* data, DType dtype, int64_t n, float* out);

// uint8 [rows, row_bytes] as float32 [rows, cols].
MQ_API at::Tensor dequantize(const at::Tensor& data, DType dtype, int64_t cols);

}  // namespace mq::blocks
