// Fuzz target: a recipe's YAML, with one --set override taken from its first line.
#include <cstddef>
#include <cstdint>
#include <string>

#include "mq/error.hpp"
#include "mq/recipe.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string first = text.substr(0, text.find('\n'));
  try {
    mq::parse_recipe(text, "fuzz.yaml");
    if (first.find('=') != std::string::npos) mq::parse_recipe(text, "fuzz.yaml", {first});
  } catch (const mq::Error&) {
  }
  return 0;
}
