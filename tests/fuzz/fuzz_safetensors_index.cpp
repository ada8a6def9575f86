// Fuzz target: model.safetensors.index.json.
#include <cstddef>
#include <cstdint>

#include "mq/error.hpp"
#include "safetensors_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    mq::safetensors::parse_index("fuzz", std::string(reinterpret_cast<const char*>(data), size));
  } catch (const mq::InputError&) {
  }
  return 0;
}
