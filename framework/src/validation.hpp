#pragma once
// Running validators on an artifact: for a run, for `mq-pipeline validate` and for the
// C++ API's validate_quantization.

#include <functional>
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

// "a; b; c".
std::string join(const std::vector<std::string>& parts);

}  // namespace mq::detail
