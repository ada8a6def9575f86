#pragma once
// The result of quantization: every tensor of the model, either kept in float or
// quantized, plus the plan that decided which.

#include <ATen/core/Tensor.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "mq/export.hpp"
#include "mq/model.hpp"
#include "mq/quantized_tensor.hpp"

namespace mq {

// The metadata keys every format of ours records a quantized model under, for reading
// it back: each quantized tensor's QuantSpec (QuantSpec::to_json), by tensor name in
// model order; QuantizedModel::mode; a static model's activation_spec.
inline constexpr const char* kSpecsKey = "mq.specs";
inline constexpr const char* kModeKey = "mq.mode";
inline constexpr const char* kActivationSpecKey = "mq.activation_spec";
// The recipe that made the artifact (Recipe::resolved_json), which `verify` runs again.
inline constexpr const char* kRecipeKey = "mq.recipe";

// QuantSpec::from_json(json) of a spec that `file`'s metadata records under `key`;
// InputError "FILE: malformed KEY metadata (...)" where it is not one.
MQ_API QuantSpec spec_from_metadata(const std::string& file, const std::string& key, const std::string& json);

struct QuantizedEntry {
  std::string name;
  at::Tensor tensor;                        // set when kept as it was
  std::optional<QuantizedTensor> quantized;  // set when quantized
};

// One row of the resolved plan: what happened to a tensor and why.
struct PlanRow {
  std::string tensor;
  std::string rule;               // the rule that decided, e.g. "type Linear", "exclude 'lm_head'"
  std::optional<QuantSpec> spec;  // empty when the tensor stays in float
  int64_t bytes_before = 0;       // as read
  int64_t bytes_after = 0;        // as stored with `spec` (predicted before quantizing)
  int64_t elements = 0;           // the tensor's values (bits a weight: 8 * bytes_after / elements)
};

struct MQ_API QuantizedModel {
  std::vector<QuantizedEntry> entries;  // same order as the model's tensors
  std::vector<PlanRow> plan;
  // Free-form provenance and configuration, written by formats that keep metadata
  // (keys like "mq.version", "mq.recipe_hash").
  std::map<std::string, std::string> metadata;
  // "dynamic" or "static": how activations are quantized at run time.
  std::string mode = "dynamic";
  // Kept entries of a dtype LibTorch has no type for, as the model's (Model::foreign).
  std::map<std::string, ForeignDType> foreign;
  // Static mode: per layer name, the qparams of its input activations.
  std::map<std::string, QParams> activation_qparams;
  std::optional<QuantSpec> activation_spec;
  // Static mode, Linear and Conv layers: the qparams of their outputs (uint8 affine per
  // tensor, as PyTorch's static quantization has them), for formats whose int8 kernels
  // produce quantized outputs (TorchScript's quantized::linear, conv2d), and of their
  // outputs through a ReLU, for a kernel with the ReLU fused (PyTorch observes a fused
  // Conv+ReLU after the ReLU).
  std::map<std::string, QParams> output_qparams;
  std::map<std::string, QParams> relu_output_qparams;
  // Tensors a function-preserving transform (SmoothQuant) changed before quantizing, by
  // name: what the entries of these names were made from. Validators compare entries
  // with these rather than with the model as read.
  std::map<std::string, at::Tensor> transformed;
  // The model it came from, when that can run (formats that rewrite modules use it).
  std::shared_ptr<Runnable> source;

  const QuantizedEntry* find(const std::string& name) const;
  // Bytes of all entries as stored (quantized data, scales, zero points, float tensors).
  int64_t nbytes() const;
};

}  // namespace mq
