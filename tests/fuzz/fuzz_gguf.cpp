// Fuzz target: a file read back by the gguf format as a quantized model
// (read_quantized, describe, then each entry dequantized): the GGUF file layer
// and the checks above it (mq.specs, llama.cpp names, Q/K rows). Bad input
// may only raise mq::InputError.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "mq/error.hpp"
#include "mq/format.hpp"
#include "mq/plugin.hpp"

extern "C" const mq::PluginDescriptor* mq_plugin_descriptor() noexcept;  // the linked format

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path file =
      std::filesystem::temp_directory_path() / ("mq-fuzz-gguf-" + std::to_string(getpid()) + ".gguf");
  static const std::unique_ptr<mq::Format> format = [] {
    std::atexit([] { std::remove(file.c_str()); });
    const mq::PluginDescriptor* d = mq_plugin_descriptor();
    std::unique_ptr<mq::Plugin> p = d->factory->create(mq::resolve_options(*d, mq::Value::map()));
    return std::unique_ptr<mq::Format>(dynamic_cast<mq::Format*>(p.release()));
  }();
  std::ofstream(file, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data),
                                                                 static_cast<std::streamsize>(size));
  try {
    format->describe(file);
    for (const mq::QuantizedEntry& e : format->read_quantized(file, mq::Origin::kUser).entries)
      if (e.quantized) e.quantized->dequantize();
  } catch (const mq::InputError&) {
  }
  return 0;
}
