// Fuzz target: a safetensors file's length field, header and buffer size.
#include <cstddef>
#include <cstdint>

#include "mq/error.hpp"
#include "safetensors_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > size - 8) return 0;
  std::vector<mq::safetensors::TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  try {
    mq::safetensors::parse_header("fuzz", reinterpret_cast<const char*>(data + 8), n, size - 8 - n, tensors,
                                  metadata);
  } catch (const mq::InputError&) {
  }
  return 0;
}
