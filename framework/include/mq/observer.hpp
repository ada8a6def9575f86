#pragma once
// Observers watch tensors (weights, or activations over calibration batches) and turn
// what they saw into qparams. One instance per observed tensor.

#include <ATen/core/Tensor.h>

#include <optional>

#include "mq/plugin.hpp"
#include "mq/qparams.hpp"
#include "mq/quant_spec.hpp"

namespace mq {

class MQ_API Observer : public Plugin {
 public:
  ~Observer() override;
  // Records statistics of `tensor`; called once per weight or calibration batch.
  // For per-channel specs the channel axis is the spec's axis.
  virtual void observe(const at::Tensor& tensor, const QuantSpec& spec) = 0;
  // qparams for `spec` from everything observed so far, with the semantics of
  // torch.ao.quantization's calculate_qparams.
  virtual QParams qparams(const QuantSpec& spec) const = 0;
  // For an observer whose qparams after one tensor are qparams_from_min_max(min_max(
  // tensor), eps) (minmax), that eps: quantizers then observe and quantize a weight in
  // one pass (quantize_min_max). Empty for every other observer.
  virtual std::optional<float> min_max_eps() const { return std::nullopt; }
};

}  // namespace mq
