#pragma once
// The pipeline as a C++ API: what `mq-pipeline run` does, for embedding.
//
//   mq::Pipeline pipeline(mq::load_recipe("recipe.yaml"));
//   mq::Report report = pipeline.run();
//   if (report.status != mq::ExitCode::kOk) ...
//
// Errors (bad recipe, bad input, plugin failures, I/O) throw mq::Error subclasses; a
// validator rejecting the artifact is a Report with status kValidationFailed.

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mq/export.hpp"
#include "mq/options.hpp"
#include "mq/plugin.hpp"
#include "mq/progress.hpp"
#include "mq/recipe.hpp"
#include "mq/report.hpp"

namespace mq {

struct RunOptions {
  // Searched first, before the recipe's plugins.paths, MQ_PLUGIN_PATH and the
  // directory installed beside libmq.
  std::vector<std::filesystem::path> plugin_paths;
  int threads = 0;                // 0: OMP_NUM_THREADS, else every CPU the process may run on
  Progress* progress = nullptr;   // nullptr: no progress
  std::function<void(const std::string&)> warn;  // nullptr: warnings only in the report
};

// A plugin found on the search path.
struct PluginInfo {
  PluginKind kind;
  std::string name;
  std::string version;
  std::string description;
  std::filesystem::path file;
  std::vector<OptionDecl> options;
  const PluginDescriptor* descriptor;  // valid for the life of the process
};

// Loads every plugin on the search path (RunOptions::plugin_paths, then `extra`, then
// MQ_PLUGIN_PATH, then the built-in directory). Throws PluginError on a refused
// library or a duplicate (kind, name).
MQ_API std::vector<PluginInfo> discover_plugins(
    const std::vector<std::filesystem::path>& first,
    const std::vector<std::filesystem::path>& extra = {});

// The search path in order, for messages and `mq-pipeline plugins`.
MQ_API std::vector<std::filesystem::path> plugin_search_path(
    const std::vector<std::filesystem::path>& first,
    const std::vector<std::filesystem::path>& extra = {});

// Validating an artifact that already exists against its original model
// (`mq-pipeline validate`).
struct ValidateRequest {
  std::filesystem::path artifact;   // the quantized file
  std::filesystem::path reference;  // the original model
  // Empty: sqnr, size, load_run and range with their defaults.
  std::vector<ValidatorStep> validators;
  OnFailure on_failure = OnFailure::kError;
  std::string format;  // the artifact's format plugin; "" = the first that can read it
  Value format_options = Value::map();  // for reading both files, e.g. {trust_torchscript: true}
  // What a runnable reference takes; a shape guessed from its first layer when empty.
  std::optional<ModelInput> input;
  std::optional<std::filesystem::path> report;       // JSON
  std::optional<std::filesystem::path> html_report;  // one self-contained page
};

// Runs the validators; a blocking failure is a Report with status kValidationFailed.
// Throws mq::Error subclasses like Pipeline::run().
MQ_API Report validate_artifact(const ValidateRequest& request, RunOptions options = {});

// `mq-pipeline verify`: the recipe `artifact` records (kRecipeKey) run again on `model`
// (default: the recorded input) into a scratch directory beside it, without validators
// or reports, and what it makes compared with the artifact tensor by tensor.
struct VerifyRequest {
  std::filesystem::path artifact;
  std::filesystem::path model;        // empty: the recorded one
  std::filesystem::path calibration;  // empty: the recorded one (a file or text path)
  bool strict = false;                // plugin versions other than those recorded fail it
  Value format_options = Value::map();  // reading the artifact (e.g. trust_torchscript)
};
struct VerifyResult {
  // kOk: identical; kValidationFailed: the first tensor that differs and by how much (or,
  // strict, the plugins); kBadInput: the model is not the input recorded.
  ExitCode status = ExitCode::kOk;
  std::string message;
  std::vector<std::string> warnings;  // plugins other than those recorded
};
// Throws InputError for an artifact that records no recipe, and what a run throws.
MQ_API VerifyResult verify_artifact(const VerifyRequest& request, RunOptions options = {});

class MQ_API Pipeline {
 public:
  struct Impl;  // opaque; defined in libmq
  explicit Pipeline(Recipe recipe, RunOptions options = {});
  ~Pipeline();
  Pipeline(Pipeline&&) noexcept;
  Pipeline& operator=(Pipeline&&) noexcept;

  // Resolves every plugin and checks every step's options; no work.
  void check();
  // Runs every stage. Only promotes the artifact when no blocking validator failed.
  // Throws mq::Error on errors, after writing the recipe's reports with the error as
  // their status and message (once the paths are checked). Where
  // install_interrupt_cleanup() is in place, an interrupt after that writes them with
  // status 130.
  Report run();
  // Reads the model and asks the quantizer what it would do to every tensor, with
  // predicted sizes; quantizes and writes nothing (`run --dry-run`).
  Report plan();

  const Recipe& recipe() const;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace mq
