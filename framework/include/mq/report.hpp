#pragma once
// What a run did, as a value: the CLI prints it, --json and the recipe's `report`
// serialize it.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "mq/error.hpp"
#include "mq/export.hpp"
#include "mq/quantized_model.hpp"
#include "mq/recipe.hpp"
#include "mq/validator.hpp"

namespace mq {

struct ValidatorResult {
  std::string plugin;
  OnFailure policy = OnFailure::kError;
  Check check;
};

struct FileInfo {
  std::string path;
  int64_t bytes = 0;
  std::string hash;    // XXH3-128, hex
  std::string sha256;  // hex; of a directory: its sha256sum manifest's (mq's hash.hpp)
};

struct MQ_API Report {
  ExitCode status = ExitCode::kOk;
  std::string message;  // one line: what happened
  std::string recipe_hash;
  std::string canonical_recipe;
  std::vector<FileInfo> inputs;
  FileInfo output;
  bool promoted = false;  // the artifact is at its destination
  std::string report_path;  // where the JSON report was written, if anywhere
  int64_t original_bytes = 0;
  int64_t quantized_bytes = 0;
  std::vector<std::string> model_changes;  // Model::changes
  std::string calibration;  // what text calibration used ("128 samples of 512 tokens ..."), or ""
  std::string target;  // what the recipe's target chose (planned bits or bytes, error, specs), or ""
  std::vector<PlanRow> plan;
  std::vector<ValidatorResult> validators;
  std::vector<std::pair<std::string, double>> timings;  // stage, seconds
  std::vector<std::string> warnings;

  std::string to_json() const;  // pretty-printed, stable key order
  std::string summary() const;  // the human table printed at the end of a run
  std::string plan_table() const;  // per tensor: rule, spec, bytes now and predicted
  // One self-contained page (inline SVG, no scripts): per-tensor SQNR chart, size
  // breakdown, validators, tensors.
  std::string to_html() const;
};

}  // namespace mq
