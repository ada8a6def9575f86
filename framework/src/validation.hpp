#pragma once
// Running validators on an artifact: for a run, for `mq-pipeline validate` and for the
// C++ API's validate_quantization.

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mq/report.hpp"
#include "mq/validator.hpp"
#include "plugin_host.hpp"

namespace mq::detail {

// The validators of a run, each with the on_failure policy that applies to it.
struct ValidatorSteps {
  std::vector<Resolved> validators;
  std::vector<OnFailure> policies;
};

// Runs every validator on `context` (one shared read of the originals for those that
// look at each entry), adds their results to `report` and hands warnings to `warn`.
// Returns the failures that block ("name: message").
std::vector<std::string> run_validators(const PluginHost& host, const ValidatorSteps& steps,
                                        const ValidateContext& context, Report& report,
                                        const std::function<void(const std::string&)>& warn);

// The input of a runnable model's forward passes outside calibration: `given`
// (model.input), else the first calibration batch, else seeded random values of a shape
// guessed from the first layer; the original runs on it once here, so that a shape that
// does not fit is a usage error before any work (RecipeError naming model.input; an
// InputError for a calibration batch). Undefined when `model` cannot run or nothing
// says what it takes. `warn` hears of a guess that invents dimensions (a Conv's).
at::Tensor forward_input(const Model& model, const std::optional<ModelInput>& given,
                         const std::vector<at::Tensor>& calibration,
                         const std::function<void(const std::string&)>& warn);

// The written model, loaded with `format` to run, for a runnable original: it must load
// and run on `input` (when defined), or `failure` says why and the result is null (the
// artifact must not be promoted). Null with no failure when the format writes no
// runnable model.
std::shared_ptr<Runnable> load_artifact(Format& format, const std::filesystem::path& written, Origin origin,
                                        const at::Tensor& input, std::string& failure);

// For an original that runs on an architecture plugin (an HF directory) and an artifact
// its format loads as no runnable model: the written tensors, dequantized to float32,
// on the original's architecture (its config.json), with a static artifact's layer
// inputs quantized as its input scales say (Runnable::quantize_inputs), so that
// whole-model checks run what was written. It must run on `input` (when defined), or `failure` says why. Null with
// no failure otherwise (and for formats whose artifacts mq never runs). Holds the
// artifact in float32: the original's size in fp32.
std::shared_ptr<Runnable> dequantized_artifact(const PluginHost& host, const Model& original,
                                               const QuantizedModel& written, const Format& format,
                                               const at::Tensor& input, std::string& failure);

// "a; b; c".
std::string join(const std::vector<std::string>& parts);

}  // namespace mq::detail
