#pragma once
// Observers watch tensors (weights, or activations over calibration batches) and turn
// what they saw into qparams. One instance per observed tensor.

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <utility>

#include "mq/error.hpp"
#include "mq/plugin.hpp"
#include "mq/qparams.hpp"
#include "mq/quant_spec.hpp"

namespace mq {

class MQ_API Observer : public Plugin {
 public:
  ~Observer() override;
  // Throws RecipeError when this observer cannot fit `spec` (the histogram observer is
  // per tensor), as observe() would: quantizers ask while planning, before any work.
  virtual void check_spec(const QuantSpec& spec) const;
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

// The running range an observer keeps, one (min, max) per channel or one per tensor:
// the first batch's range is taken as it is; a later one must have as many channels
// (an InputError naming the observer) and is folded in by fold(min, max, batch_min,
// batch_max). Undefined until something was observed (qparams_from_min_max() gives
// unit scales for that, as PyTorch's observers do).
class RunningRange {
 public:
  explicit RunningRange(std::string observer) : observer_(std::move(observer)) {}

  template <class Fold>
  void add(const std::pair<at::Tensor, at::Tensor>& batch, Fold&& fold) {
    if (!min_.defined()) {
      std::tie(min_, max_) = batch;
      return;
    }
    if (batch.first.numel() != min_.numel())
      throw InputError(observer_ + " observer saw " + std::to_string(batch.first.numel()) + " channels after " +
                       std::to_string(min_.numel()));
    fold(min_, max_, batch.first, batch.second);
  }
  const at::Tensor& min() const { return min_; }
  const at::Tensor& max() const { return max_; }

 private:
  std::string observer_;
  at::Tensor min_, max_;
};

}  // namespace mq
