#pragma once
// Scale and zero point of an affine quantization.

#include <ATen/core/Tensor.h>

namespace mq {

// Shapes follow the granularity: [1] per tensor, [C] per channel, [C, ceil(K/G)] per
// group. scale is float32, zero_point int32.
struct QParams {
  at::Tensor scale;
  at::Tensor zero_point;
};

}  // namespace mq
