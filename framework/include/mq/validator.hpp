#pragma once
// A validator checks a written artifact against the original model. Rejecting a
// model is a normal outcome (passed = false), not an exception.

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "mq/format.hpp"
#include "mq/model.hpp"
#include "mq/plugin.hpp"
#include "mq/quantized_model.hpp"

namespace mq {

struct ValidateContext {
  const Model& original;
  const QuantizedModel& quantized;
  const std::filesystem::path& written;  // the file as written, before promotion
  Format& format;                        // the format that wrote it
  // True when `quantized` already is the written file read back with
  // format.read_quantized(): a streamed run (the runner checked the read-back against
  // what was written) or `mq-pipeline validate`. Reading it again gives the same tensors.
  bool read_back = false;
};

// A figure about one tensor (e.g. its SQNR), shown in the report's per-layer rows.
struct TensorMetric {
  std::string tensor;
  std::string name;
  double value = 0.0;
};

struct Check {
  bool passed = true;
  std::vector<std::pair<std::string, double>> metrics;  // name, value
  std::string message;  // one line: the figure, the threshold, the worst tensor
  std::vector<TensorMetric> tensor_metrics;
};

class MQ_API Validator : public Plugin {
 public:
  ~Validator() override;
  virtual Check validate(const ValidateContext& context) = 0;
};

}  // namespace mq
