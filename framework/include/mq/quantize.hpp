#pragma once
// The Python original's entry points, over the same plugins as the runner:
//
//   mq::Model model = mq::load_model("mlp.safetensors");
//   auto [quantized, info] = mq::dynamic_quantize(model, {.dtype = mq::DType::kInt4});
//   mq::save_model(quantized, "mlp.int4.safetensors");
//   mq::ValidationResult v = mq::validate_quantization(model, quantized, mq::OnFailure::kWarn);
//

#include <filesystem>
#include <string>
#include <vector>

#include "mq/export.hpp"
#include "mq/model.hpp"
#include "mq/quant_spec.hpp"
#include "mq/quantized_model.hpp"
#include "mq/recipe.hpp"

namespace mq {

// The format save_model() writes by default, and validate_quantization() validates with.
inline constexpr const char* kApiFormat = "safetensors";

struct QuantizationConfig {
  DType dtype = DType::kInt8;
  std::string granularity = "auto";  // auto | per_tensor | per_channel | per_group
  int64_t group_size = 128;
  Scheme scheme = Scheme::kSymmetric;
  bool reduce_range = false;
  std::vector<std::string> layer_types{"Linear"};
  std::vector<std::string> exclude;  // globs over layer or tensor names
  std::string observer = "minmax";
};

struct ValidationResult {
  double sqnr_db = 0.0;           // mean over quantized tensors
  double original_size_mb = 0.0;  // parameters and buffers
  double quantized_size_mb = 0.0;
  double compression_ratio = 0.0;
  bool load_test_passed = false;   // saved, re-read bit-exactly and run
  bool weight_range_valid = false;
  std::vector<std::string> errors;  // one line per failed check
  bool passed() const { return errors.empty(); }
};

struct QuantizationInfo {
  std::vector<PlanRow> plan;
  bool validated = false;
  ValidationResult validation;
};

struct QuantizeResult {
  QuantizedModel model;
  QuantizationInfo info;
};

// Quantizes weights ahead of time with the `dynamic` quantizer plugin. With
// run_validation, also validate_quantization(model, result, on_failure).
MQ_API QuantizeResult dynamic_quantize(const Model& model, const QuantizationConfig& config = {},
                                       OnFailure on_failure = OnFailure::kError,
                                       bool run_validation = true);

// Calibrated quantization with the `static` quantizer plugin: `model` must be runnable
// (load a TorchScript model with options {trust_torchscript: true}); `calibration` holds
// one input batch per tensor. Activation qparams come from config.observer.
MQ_API QuantizeResult static_quantize(const Model& model, const std::vector<at::Tensor>& calibration,
                                      const QuantizationConfig& config = {},
                                      OnFailure on_failure = OnFailure::kError,
                                      bool run_validation = true);

// Saves to a temporary file with the safetensors format, re-reads and checks it with
// the sqnr, size, load_run and range validators. On failure, kError throws mq::Error
// with ExitCode::kValidationFailed, kWarn prints a warning on stderr, kIgnore returns.
MQ_API ValidationResult validate_quantization(const Model& original, const QuantizedModel& quantized,
                                              OnFailure on_failure = OnFailure::kError);

// What runs the Hugging Face model directory `path` (an architecture plugin, by its
// config.json): `runs` and "architecture 'llama' (LlamaForCausalLM, 2 blocks)", or not and
// why ("config.json: GPT2LMHeadModel (model_type 'gpt2') is no family an architecture
// plugin runs (the plugins run: ...)"); an empty summary when `path` has no config.json.
struct ArchitectureInfo {
  bool runs = false;
  std::string summary;
};
MQ_API ArchitectureInfo describe_architecture(const std::filesystem::path& path);

// Through the format plugin named `format`, or the first that can read the file, with
// that format's `options` (e.g. {trust_torchscript: true}); a Hugging Face directory of
// a family an architecture plugin runs comes back runnable, as in a run.
MQ_API Model load_model(const std::filesystem::path& path, const std::string& format = "",
                        const Value& options = Value::map());
MQ_API QuantizedModel load_quantized_model(const std::filesystem::path& path,
                                           const std::string& format = "",
                                           const Value& options = Value::map());
// load_quantized_model() for listing: a quantized tensor's `data` may be undefined
// (Format::describe()); everything else is read and checked.
MQ_API QuantizedModel describe_quantized_model(const std::filesystem::path& path,
                                               const std::string& format = "",
                                               const Value& options = Value::map());
// Writes to a temporary file beside `path` and renames it into place.
MQ_API void save_model(const QuantizedModel& model, const std::filesystem::path& path,
                       const std::string& format = kApiFormat);

}  // namespace mq
