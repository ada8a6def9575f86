// tpkl: a format skeleton. A model as one pickled dict of tensors (LibTorch's
// pickle_save): a quantized weight NAME as its integers NAME, NAME.scale and
// NAME.zero_point, its spec in the metadata entry. LibTorch's unpickler reads it back;
// use it for files you trust only. Written only against the installed mq SDK.

#include <ATen/ATen.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

#include "mq/error.hpp"
#include "mq/format.hpp"

namespace fs = std::filesystem;

namespace {

constexpr const char* kMetadata = "__mq__";  // the entry holding the mode and the specs

class PickleFormat final : public mq::Format {
 public:
  explicit PickleFormat(const mq::Options&) {}

  // Required: whether `path` is a file of this format (by name here).
  bool can_read(const fs::path& path) const override { return path.extension() == ".tpkl"; }

  // Required: a float model to quantize, or the original to validate against.
  mq::Model read(const fs::path& path) override {
    mq::Model model;
    for (const mq::QuantizedEntry& e : read_quantized(path, mq::Origin::kUser).entries) {
      if (e.quantized) throw mq::InputError(path.string() + ": is quantized already; give the float model");
      model.tensors.push_back({e.name, e.tensor});
    }
    model.sources = {path};
    model.layers = mq::layers_from_names(model);
    return model;
  }

  // Required: write `model` to `path` (a temporary file the runner promotes after the
  // validators pass).
  void write(const mq::QuantizedModel& model, const fs::path& path) override {
    c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
    std::string specs;
    for (const mq::QuantizedEntry& e : model.entries) {
      if (!e.quantized) {
        dict.insert(e.name, e.tensor);
        continue;
      }
      const mq::QuantizedTensor& q = *e.quantized;
      dict.insert(e.name, q.data);
      dict.insert(e.name + ".scale", q.qparams.scale);
      dict.insert(e.name + ".zero_point", q.qparams.zero_point);
      specs += e.name + "\t" + q.spec.to_json() + "\n";
    }
    dict.insert(kMetadata, model.mode + "\n" + specs);
    const std::vector<char> bytes = torch::jit::pickle_save(dict);
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out.flush()) throw mq::OutputError(path.string() + ": write failed");
  }

  // Required: the file as written, quantized tensors with their specs (validators and
  // `inspect` read artifacts this way).
  mq::QuantizedModel read_quantized(const fs::path& path, mq::Origin) override {
    std::ifstream in(path, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    c10::IValue value;
    try {
      value = torch::jit::pickle_load(bytes);
    } catch (const std::exception&) {
      throw mq::InputError(path.string() + ": not a pickled dict of tensors");
    }
    if (!value.isGenericDict()) throw mq::InputError(path.string() + ": not a pickled dict of tensors");
    const c10::impl::GenericDict dict = value.toGenericDict();
    mq::QuantizedModel model;
    std::map<std::string, mq::QuantSpec> specs;
    if (dict.contains(kMetadata)) {
      std::istringstream lines(dict.at(kMetadata).toStringRef());
      std::getline(lines, model.mode);
      for (std::string line; std::getline(lines, line);)
        specs[line.substr(0, line.find('\t'))] = mq::QuantSpec::from_json(line.substr(line.find('\t') + 1));
    }
    for (const auto& item : dict) {
      const std::string name = item.key().toStringRef();
      if (name == kMetadata || !item.value().isTensor()) continue;
      const auto spec = specs.find(name);
      if (spec == specs.end()) {
        if (!specs.count(name.substr(0, name.rfind('.'))))  // not a scale or zero point
          model.entries.push_back({name, item.value().toTensor(), std::nullopt});
        continue;
      }
      mq::QuantizedTensor q;
      q.data = item.value().toTensor();
      q.shape = q.data.sizes().vec();
      q.spec = spec->second;
      q.qparams = {dict.at(name + ".scale").toTensor(), dict.at(name + ".zero_point").toTensor()};
      q.original_dtype = q.qparams.scale.scalar_type();  // scales are kept in the weight's dtype
      model.entries.push_back({name, at::Tensor(), q});
    }
    return model;
  }
  // Optional: check_plan (refuse or keep float what write() cannot store), stream()
  // (write entries as they are quantized), describe() (a cheaper read_quantized for
  // `inspect`): docs/plugins/format.md.
};

}  // namespace

MQ_PLUGIN(PickleFormat, mq::PluginKind::kFormat, "tpkl", "1.0.0",
          "A pickled dict of tensors (LibTorch's pickler): a format skeleton")
