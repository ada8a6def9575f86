#pragma once

#include "mq/options.hpp"
#include "mq/plugin.hpp"
#include "mq/recipe.hpp"

namespace mq::detail {

// Checks a step's options against the plugin's declarations (unknown names with a
// suggestion, types, choices, required ones) and fills in defaults.
// Throws RecipeError "file:line:col: ...".
Options check_options(const PluginStep& step, const PluginDescriptor& descriptor);

}  // namespace mq::detail
