#pragma once
// A format reads models and writes quantized models.

#include <filesystem>
#include <memory>
#include <vector>

#include "mq/model.hpp"
#include "mq/plugin.hpp"
#include "mq/quantized_model.hpp"

namespace mq {

// Writes a quantized model entry by entry, so that it is never in memory whole.
class MQ_API EntryWriter {
 public:
  virtual ~EntryWriter();
  // The model's entries, in model order, each once.
  virtual void add(const QuantizedEntry& entry) = 0;
  // Completes the file from what add() saw and `model`'s plan, metadata, mode and
  // activation qparams (its entries are not read).
  virtual void finish(const QuantizedModel& model) = 0;
};

// Where a file a format reads back comes from. The runner reads back what this run wrote
// (kThisRun): a format may skip the checks it makes of files from elsewhere (pt loads
// its own TorchScript without trust_torchscript). Anything else is kUser.
enum class Origin { kUser, kThisRun };

class MQ_API Format : public Plugin {
 public:
  ~Format() override;
  // Cheap check (extension, magic bytes) whether read() applies to `path`.
  virtual bool can_read(const std::filesystem::path& path) const = 0;
  // Reads an input model. Throws InputError on a malformed or unsafe file.
  virtual Model read(const std::filesystem::path& path) = 0;
  // Writes `model` to `path` (a temporary file the runner promotes later).
  // Throws OutputError when it cannot be written. The default hands every entry to
  // stream()'s writer: a format implements one of the two.
  virtual void write(const QuantizedModel& model, const std::filesystem::path& path);
  // Formats that can write entry by entry return a writer to `path` for a model read
  // from `source`, and the runner streams: each entry is written as soon as it is
  // quantized. The default, null, has the runner call write() with the whole model.
  virtual std::unique_ptr<EntryWriter> stream(const Model& source, const std::filesystem::path& path);
  // Settles the plan for a model read from `source` before any work (every run,
  // `run --dry-run` and `check`): refuses a plan this format could not write, as write()
  // would (RecipeError), and keeps in float a tensor it cannot store as planned where
  // that is what users expect (a row's spec reset, its rule saying why). The quantizer
  // then follows the plan as settled. The default accepts any plan as it is.
  virtual void check_plan(const Model& source, std::vector<PlanRow>& plan) const;
  // Reads back a file written by write(); the result compares bit-exactly.
  virtual QuantizedModel read_quantized(const std::filesystem::path& path, Origin origin) = 0;
  // A file write() made, as a model to run (load_run runs the artifact where the
  // original runs): read() refuses quantized tensors in an input, this takes them. The
  // default calls read().
  virtual Model read_artifact(const std::filesystem::path& path, Origin origin);
  // read_quantized() for listing a file (`mq-pipeline inspect`): the same entries,
  // specs, shapes and qparams, checked the same way, but a quantized tensor's `data`
  // may be left undefined where reading it costs work (unpacking int4). The default
  // calls read_quantized(path, Origin::kUser).
  virtual QuantizedModel describe(const std::filesystem::path& path);
};

// Also derived from by a format whose files mq does not run (gguf: llama.cpp runs them;
// its read_artifact() gives a model without `runnable`): the runner then skips the
// forward pass of the original that exists to check model.input and feed the artifact's
// (a whole forward pass: the model's size in memory traffic, for nothing). Found with
// dynamic_cast, so formats built before it keep loading.
class MQ_API ArtifactsDoNotRun {
 public:
  virtual ~ArtifactsDoNotRun();
};

// For formats that store no block type (DType::kQ8_0, ...): RecipeError naming the first
// tensor `plan` gives one, and `format`.
MQ_API void refuse_block_types(const std::vector<PlanRow>& plan, const std::string& format);

}  // namespace mq
