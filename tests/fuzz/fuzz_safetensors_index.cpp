// Fuzz target: model.safetensors.index.json.
#include <cstddef>
#include <cstdint>

#include "mq/error.hpp"
#include "mq/hf_checkpoint.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    mq::hf::parse_index("fuzz", std::string(reinterpret_cast<const char*>(data), size));
  } catch (const mq::InputError&) {
  }
  return 0;
}
