#pragma once
// GPTQ (Frantar et al., 2022) for one Linear weight: columns quantized left to right,
// each one's rounding error spread over the columns not yet quantized through the
// inverse Hessian of the layer's inputs, so that the layer's output on the calibration
// inputs moves as little as it can (the reference implementation's fasterquant, with
// lazy block updates and the scales of a group taken from the weights as they are when
// the group starts), or in activation order (its act_order with static groups). The
// gptq quantizer runs it on each Linear, and the awq one after its scales (rounding: gptq).

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "mq/export.hpp"
#include "mq/quant_spec.hpp"
#include "mq/quantized_tensor.hpp"

namespace mq::gptq {

// The order columns are quantized in: as they come, or by falling H diagonal with each
// group's scales set before any update, the groups being runs of the original columns
// (compressed-tensors' actorder "weight"/"static") or of columns in that order (its
// "group": the tensor gets a g_idx).
enum class ActOrder { kNone, kWeight, kGroup };

struct Settings {
  int64_t block_size = 128;       // columns updated together (lazy batch updates)
  double dampening_frac = 0.01;   // of the mean of H's diagonal, added to it
  ActOrder actorder = ActOrder::kNone;
};

// The sum of x^T x over the rows of `inputs` (a layer's inputs, [tokens, in]), added to
// `hessian` ([in, in], float64; made when undefined): a float32 product for the batch
// (the reference accumulates everything in float32; a float64 one took twice as long),
// summed in float64 across batches, in order.
MQ_API void accumulate(at::Tensor& hessian, const at::Tensor& inputs);

// The Hessians of a model's Linears over the calibration batches, one for the layers
// fed the very same input tensor in a batch (q/k/v, gate/up, a MoE block's experts while
// recorded): the same sums, computed and held once. Inputs come as record_layers() gives
// them, each layer once a batch, batches in order.
class MQ_API Hessians {
 public:
  void add(const std::string& layer, const at::Tensor& input);
  // The layer's Hessian; null when it saw no input.
  const at::Tensor* find(const std::string& layer) const;
  // The layer's Hessian, handed over for its quantization (recording is over for it):
  // the set lets go of it once every layer that shares it has taken it.
  at::Tensor take(const std::string& layer);

 private:
  std::map<std::string, std::string> owner_;     // layer -> the layer whose Hessian it uses
  std::map<std::string, at::Tensor> hessians_;   // by owner
  std::map<std::string, int> users_;             // by owner: layers not done
  // The current batch's inputs so far, held so that no other tensor takes their memory
  // while they are compared with.
  std::map<std::string, at::Tensor> batch_;
};

// `weight` ([out, in], any float dtype) quantized with `spec` (integer; per tensor, per
// channel on axis 0, or per group) against `hessian`. The scales are min/max's over what
// they cover (rounded to the weight's dtype, which stores them). RecipeError where H
// stays singular after ten times the dampening.
// `hessian` is let go once used, before the solve's largest temporaries are made.
MQ_API QuantizedTensor quantize(const at::Tensor& weight, at::Tensor hessian, const QuantSpec& spec,
                                const Settings& settings);

// quantize(), with `rule` (the layer's plan row's) told the layer-output error of the
// result and of round to nearest (min/max scales) on the inputs `hessian` sums (from a
// float32 copy of it: the float64 one goes before the solve's largest temporaries).
MQ_API QuantizedTensor quantize_reported(const at::Tensor& weight, at::Tensor hessian, const QuantSpec& spec,
                                         const Settings& settings, std::string& rule);

// ‖(W − Ŵ) X^T‖² / ‖W X^T‖² from H = Σ x^T x for each Ŵ of `dequantized`: how much of the
// layer's output on the calibration inputs the quantization error is (in float32: a
// figure for the report).
MQ_API std::vector<double> output_errors(const at::Tensor& weight, const std::vector<at::Tensor>& dequantized,
                                  const at::Tensor& hessian);

}  // namespace mq::gptq
