#pragma once
// A format reads models and writes quantized models.

#include <filesystem>

#include "mq/model.hpp"
#include "mq/plugin.hpp"
#include "mq/quantized_model.hpp"

namespace mq {

class MQ_API Format : public Plugin {
 public:
  ~Format() override;
  // Cheap check (extension, magic bytes) whether read() applies to `path`.
  virtual bool can_read(const std::filesystem::path& path) const = 0;
  // Reads an input model. Throws InputError on a malformed or unsafe file.
  virtual Model read(const std::filesystem::path& path) = 0;
  // Writes `model` to `path` (a temporary file the runner promotes later).
  // Throws OutputError when it cannot be written.
  virtual void write(const QuantizedModel& model, const std::filesystem::path& path) = 0;
  // Reads back a file written by write(); the result compares bit-exactly.
  virtual QuantizedModel read_quantized(const std::filesystem::path& path) = 0;
};

}  // namespace mq
