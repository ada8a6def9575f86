#include "mq/plugin.hpp"

#include "mq/architecture.hpp"
#include "mq/error.hpp"
#include "mq/format.hpp"
#include "mq/observer.hpp"
#include "mq/progress.hpp"
#include "mq/quantizer.hpp"
#include "mq/validator.hpp"

namespace mq {

// Out-of-line destructors give each interface its typeinfo and vtable in libmq, so
// dynamic_cast and exceptions work across plugins loaded with RTLD_LOCAL.
Plugin::~Plugin() = default;
PluginFactory::~PluginFactory() = default;
Progress::~Progress() = default;
Observer::~Observer() = default;
Quantizer::~Quantizer() = default;
Format::~Format() = default;
ArtifactsDoNotRun::~ArtifactsDoNotRun() = default;
EntryWriter::~EntryWriter() = default;
Validator::~Validator() = default;
Architecture::~Architecture() = default;

bool Validator::per_entry() const { return false; }
void Validator::entry(const ValidateContext&, const QuantizedEntry&, const at::Tensor*) {}

const char* to_string(PluginKind kind) {
  switch (kind) {
    case PluginKind::kObserver: return "observer";
    case PluginKind::kQuantizer: return "quantizer";
    case PluginKind::kFormat: return "format";
    case PluginKind::kValidator: return "validator";
    case PluginKind::kArchitecture: return "architecture";
  }
  return "unknown";
}

std::unique_ptr<EntryWriter> Format::stream(const Model&, const std::filesystem::path&) { return nullptr; }

void Format::write(const QuantizedModel& model, const std::filesystem::path& path) {
  Model source;  // what a writer may want of the model read: its metadata and foreign dtypes
  source.metadata = model.metadata;
  source.foreign = model.foreign;
  const std::unique_ptr<EntryWriter> out = stream(source, path);
  if (!out) throw PluginError("a format that does not stream must implement write()");
  for (const QuantizedEntry& e : model.entries) out->add(e);
  out->finish(model);
}
void Format::check_plan(const Model&, std::vector<PlanRow>&) const {}
void Observer::check_spec(const QuantSpec&) const {}
QuantizedModel Format::describe(const std::filesystem::path& path) { return read_quantized(path, Origin::kUser); }
Model Format::read_artifact(const std::filesystem::path& path, Origin) { return read(path); }

void refuse_block_types(const std::vector<PlanRow>& plan, const std::string& format) {
  for (const PlanRow& row : plan)
    if (row.spec && row.spec->is_block())
      throw RecipeError("format '" + format + "' cannot store " + std::string(to_string(row.spec->dtype)) +
                        " (planned for " + row.tensor + "): llama.cpp's block types are written by format 'gguf'");
}

const char* abi_tag() { return MQ_ABI_TAG; }

}  // namespace mq
