#pragma once
// A recipe: what to quantize, how, and how to check it (schema version 1).
// Build one in code or load it from YAML with load_recipe().

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "mq/export.hpp"
#include "mq/quant_spec.hpp"
#include "mq/text.hpp"
#include "mq/value.hpp"

namespace mq {

struct Model;

enum class OnFailure { kError, kWarn, kIgnore };
MQ_API const char* to_string(OnFailure policy);

struct PluginStep {
  std::string plugin;
  Value options = Value::map();
  SourceLocation location;  // where the step was written, for messages
};

struct ValidatorStep {
  PluginStep step;
  std::optional<OnFailure> on_failure;  // the recipe's default when empty
};

struct RandomCalibration {
  std::vector<int64_t> shape;
  int64_t batches = 1;
  int64_t seed = 0;
  int64_t vocab_size = 0;  // > 0: token ids in [0, vocab_size) instead of normal floats
};

// What a runnable model takes: random normal values of `shape`, or token ids in
// [0, vocab_size) when vocab_size > 0 (seeded). Forward passes outside calibration
// (validation, the check that a written model runs) use it.
struct ModelInput {
  std::vector<int64_t> shape;
  int64_t vocab_size = 0;
};

// Random token ids for a model that takes them, [batch, 16] in [0, vocab): one that
// starts with an Embedding, or a Hugging Face directory with one (its layers are in
// file order); none otherwise.
MQ_API std::optional<ModelInput> token_input(const Model& model, int64_t batch);

// Exactly one of the three.
struct Calibration {
  std::filesystem::path path;               // tensors, one per batch
  std::optional<RandomCalibration> random;
  std::optional<TextSamples> text;          // tokenized with the model's tokenizer
};

// `target:`: the spec of each Linear weight the quantizer plans, chosen among
// `candidates` for the least estimated error within a size, or the smallest plan within
// an estimated output quality (docs/mixed-precision.md). Exactly one of bits_per_weight,
// max_bytes, max_kl and min_output_sqnr_db is set (> 0).
struct Target {
  // How each candidate's cost is estimated: the layer's relative weight error weighted by
  // the calibration inputs' mean squares; or, measured with the model run, the output's
  // KL divergence (kOutput: logits) or its relative noise energy (kOutputSqnr: any output).
  enum class Sensitivity { kWeight, kOutput, kOutputSqnr };
  // The Linear weights the target chooses for, scales and zero points included.
  double bits_per_weight = 0;
  // Every tensor as stored (the report's quantized bytes; file headers not counted).
  int64_t max_bytes = 0;
  // The summed per-unit output KL estimates (kOutput only).
  double max_kl = 0;
  // The output SQNR the summed per-unit noise estimates give (kOutputSqnr only).
  double min_output_sqnr_db = 0;
  std::vector<QuantSpec> candidates;  // distinct
  Sensitivity sensitivity = Sensitivity::kWeight;
};

struct MQ_API Recipe {
  int version = 1;
  std::filesystem::path file;  // the recipe file; empty when built in code
  std::filesystem::path model_path;
  std::string model_format;  // format plugin reading the model; "" = first that can
  Value model_options = Value::map();  // that format's options (e.g. trust_torchscript)
  // model.input; when absent, the first calibration batch, else a shape guessed from the
  // first layer.
  std::optional<ModelInput> model_input;
  std::optional<Calibration> calibration;
  // What model-level validators (logits) run on instead of the calibration batches: a
  // held-out set, in the same three forms.
  std::optional<Calibration> evaluation;
  PluginStep observer{"minmax", Value::map(), {}};
  PluginStep quantizer;
  std::optional<Target> target;
  PluginStep format;
  std::filesystem::path output;
  std::vector<ValidatorStep> validators;
  OnFailure on_failure = OnFailure::kError;
  std::optional<std::filesystem::path> report;       // JSON
  std::optional<std::filesystem::path> html_report;  // one self-contained page
  std::vector<std::filesystem::path> plugin_paths;

  // Canonical JSON of everything that affects the result, and its hash (XXH3-128,
  // hex). Paths appear as written relative to the recipe, so moving a checkout does
  // not change the hash.
  std::string canonical_json() const;
  std::string hash() const;
  // The same with every path absolute and the plugin paths: a recipe `mq-pipeline run`
  // takes from anywhere (artifacts record it; `inspect --recipe`, `verify`).
  std::string resolved_json() const;
};

// What `mq-pipeline validate` and validate_quantization() run when no validators are
// named: sqnr, size, load_run and range, with their defaults and no policy of their own.
MQ_API std::vector<ValidatorStep> default_validators();

// Loads and checks a recipe. `overrides` are "dotted.key=yaml-value" strings applied
// before checking, as `--set` does. Relative paths resolve against the recipe's
// directory. Throws RecipeError naming file:line:col.
MQ_API Recipe load_recipe(const std::filesystem::path& file,
                          const std::vector<std::string>& overrides = {});
// Same, from text; `file` names it in messages and anchors relative paths.
MQ_API Recipe parse_recipe(const std::string& text, const std::filesystem::path& file,
                           const std::vector<std::string>& overrides = {});

}  // namespace mq
