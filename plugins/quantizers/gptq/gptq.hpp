#pragma once
// GPTQ (Frantar et al., 2022) for one Linear weight: columns quantized left to right,
// each one's rounding error spread over the columns not yet quantized through the
// inverse Hessian of the layer's inputs, so that the layer's output on the calibration
// inputs moves as little as it can (the reference implementation's fasterquant, with
// lazy block updates and the scales of a group taken from the weights as they are when
// the group starts), or in activation order (its act_order with static groups).

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "mq/quant_spec.hpp"
#include "mq/quantized_tensor.hpp"

namespace mq::gptq {

// The order columns are quantized in: as they come, or by falling H diagonal with each
// group's scales set before any update (compressed-tensors' actorder "weight"/"static").
enum class ActOrder { kNone, kWeight };

struct Settings {
  int64_t block_size = 128;       // columns updated together (lazy batch updates)
  double dampening_frac = 0.01;   // of the mean of H's diagonal, added to it
  ActOrder actorder = ActOrder::kNone;
};

// The sum of x^T x over the rows of `inputs` (a layer's inputs, [tokens, in]), added to
// `hessian` ([in, in], float64; made when undefined). Rows are summed in order.
void accumulate(at::Tensor& hessian, const at::Tensor& inputs);

// `weight` ([out, in], any float dtype) quantized with `spec` (integer; per tensor, per
// channel on axis 0, or per group) against `hessian`. The scales are min/max's over what
// they cover (rounded to the weight's dtype, which stores them). RecipeError where H
// stays singular after ten times the dampening.
QuantizedTensor quantize(const at::Tensor& weight, const at::Tensor& hessian, const QuantSpec& spec,
                         const Settings& settings);

// ‖(W − Ŵ) X^T‖² / ‖W X^T‖² from H = Σ x^T x: how much of the layer's output on the
// calibration inputs the quantization error is.
double output_error(const at::Tensor& weight, const at::Tensor& dequantized, const at::Tensor& hessian);

}  // namespace mq::gptq
