#pragma once
// YAML text to mq::Value, with locations, bounded depth and size, duplicate keys
// rejected, and YAML 1.2 core-schema typing of plain scalars.

#include <string>

#include "mq/value.hpp"

namespace mq::detail {

constexpr int kMaxYamlDepth = 32;
constexpr int kMaxYamlNodes = 100000;

// Throws RecipeError "file:line:col: ..." on malformed YAML.
Value parse_yaml(const std::string& text, const std::string& file);

}  // namespace mq::detail
