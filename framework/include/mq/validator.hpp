#pragma once
// A validator checks a written artifact against the original model. Rejecting a
// model is a normal outcome (passed = false), not an exception.

#include <filesystem>
#include <functional>
#include <memory>
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
  // The recipe's calibration batches (none for a dynamic recipe or `mq-pipeline validate`).
  std::vector<at::Tensor> calibration;
  // For a runnable original: the input of whole-model forward passes (model.input, else
  // the first calibration batch, else random values of a shape guessed from the first
  // layer), which the original runs on; undefined when nothing says what it takes.
  at::Tensor input;
  // The written model, loaded to run (the runner checked that it loads and runs on
  // `input`); null when the original cannot run or the format writes no runnable model.
  std::shared_ptr<Runnable> artifact;
  // Where `written` comes from: this run, or the user (`mq-pipeline validate`).
  Origin origin = Origin::kThisRun;
  // The recipe's `evaluation` batches (held out from calibration), for whole-model checks
  // that prefer them; empty when the recipe has none.
  std::vector<at::Tensor> evaluation;
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

// The original's and the written model's outputs on `x`. When the written model throws
// where the original runs, `check` fails saying so and the second output is undefined;
// the original's own failure is thrown.
MQ_API std::pair<at::Tensor, at::Tensor> forward_both(const Model& original, Runnable& written, const at::Tensor& x,
                                                      Check& check);

class MQ_API Validator : public Plugin {
 public:
  ~Validator() override;
  // Validators that look at each entry beside its original return true: the runner then
  // reads every original once for all of them (for_each_entry) and hands each entry to
  // their entry(), in model order, before it calls validate(), which sums up. Reading a
  // multi-GB model once instead of once a validator is most of what validation costs.
  virtual bool per_entry() const;
  virtual void entry(const ValidateContext& context, const QuantizedEntry& entry,
                     const at::Tensor* original);
  virtual Check validate(const ValidateContext& context) = 0;
};

// Calls `visit` with each of context.quantized's entries, in order, and the original of a
// quantized one, read into a buffer used again for the next (read_staged; copy what you
// keep) and released after the visit; null for an entry kept in float, or one the
// original model lacks.
MQ_API void for_each_entry(
    const ValidateContext& context,
    const std::function<void(const QuantizedEntry&, const at::Tensor* original)>& visit);

// A validator's check as the runner makes it: for_each_entry() into entry() when it is
// per_entry(), then validate().
MQ_API Check run_validator(Validator& validator, const ValidateContext& context);

}  // namespace mq
