#pragma once
// Error types thrown across the SDK. Each carries the process exit code the CLI uses
// for it, so a plugin that throws InputError on a malformed file makes the run exit
// with the "bad input" code without the runner having to guess.

#include <stdexcept>
#include <string>

#include "mq/export.hpp"

namespace mq {

// Process exit codes of mq-pipeline; also documented in the README.
enum class ExitCode : int {
  kOk = 0,
  kInternal = 1,          // a bug: an unexpected exception reached the top
  kUsage = 2,             // bad command line or recipe
  kBadInput = 3,          // an input file is malformed, unsafe or unsupported
  kPlugin = 4,            // a plugin failed to load or failed while running
  kValidationFailed = 5,  // a validator with on_failure: error rejected the artifact
  kOutput = 6,            // the artifact or report could not be written
  kInterrupted = 130,     // SIGINT, SIGTERM, SIGHUP
};

class MQ_API Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& message);
  ~Error() override;
  ExitCode code() const noexcept { return code_; }

 private:
  ExitCode code_;
};

// A recipe, option or command-line value is wrong.
class MQ_API RecipeError : public Error {
 public:
  explicit RecipeError(const std::string& message);
  ~RecipeError() override;
};

// An input file cannot be used as it is.
class MQ_API InputError : public Error {
 public:
  explicit InputError(const std::string& message);
  ~InputError() override;
};

// A plugin could not be loaded, or failed in an unexpected way.
class MQ_API PluginError : public Error {
 public:
  explicit PluginError(const std::string& message);
  ~PluginError() override;
};

// An output file could not be written or promoted.
class MQ_API OutputError : public Error {
 public:
  explicit OutputError(const std::string& message);
  ~OutputError() override;
};

}  // namespace mq
