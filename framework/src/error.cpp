#include "mq/error.hpp"

namespace mq {

Error::Error(ExitCode code, const std::string& message)
    : std::runtime_error(message), code_(code) {}
Error::~Error() = default;

RecipeError::RecipeError(const std::string& message) : Error(ExitCode::kUsage, message) {}
RecipeError::~RecipeError() = default;

InputError::InputError(const std::string& message) : Error(ExitCode::kBadInput, message) {}
InputError::~InputError() = default;

PluginError::PluginError(const std::string& message) : Error(ExitCode::kPlugin, message) {}
PluginError::~PluginError() = default;

OutputError::OutputError(const std::string& message) : Error(ExitCode::kOutput, message) {}
OutputError::~OutputError() = default;

}  // namespace mq
