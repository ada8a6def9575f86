// pt: PyTorch files. TorchScript archives in (their code runs on load, so the recipe
// must say trust_torchscript: true) and out, with quantized Linear (and, static, Conv)
// layers replaced by modules that run PyTorch's int8 kernels (dynamic, or static with
// the calibrated input and output qparams). State dicts in (torch.save of a dict or an
// OrderedDict, read by a restricted unpickler that runs nothing, also for reading our
// own back) and out, as native quantized tensors that torch.load reads, static qparams
// as LAYER.input_scale etc. Hugging Face model directories whose weights are
// pytorch_model.bin, or shards of it listed by pytorch_model.bin.index.json, are read
// as one state dict.

#include <ATen/ATen.h>
#include <ATen/quantized/Quantizer.h>
#include <caffe2/serialize/inline_container.h>
#include <nlohmann/json.hpp>
#include <torch/script.h>

#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string_view>

#include "mq/error.hpp"
#include "mq/files.hpp"
#include "mq/format.hpp"
#include "mq/hf_checkpoint.hpp"
#include "mq/pack.hpp"
#include "batchnorm.hpp"
#include "recurrent.hpp"
#include "state_dict_reader.hpp"
#include "state_dict_writer.hpp"
#include "torchscript_model.hpp"
#include "torchscript_writer.hpp"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;  // what we write: keys in our order
using Json = nlohmann::json;          // what we read: an ordered_json finds a key by a linear search

namespace {

constexpr const char* kMetadataFile = "mq.json";   // TorchScript extra file
constexpr const char* kMetadataKey = "__metadata__";  // state dict entry of files mq wrote before
constexpr const char* kBinName = "pytorch_model.bin";  // an HF model directory's weights
constexpr const char* kBinIndexName = "pytorch_model.bin.index.json";  // ... in shards

// The first line of a LibTorch error, which may quote bytes of the file.
std::string first_line(const std::string& s) { return mq::pt::printable(s.substr(0, s.find('\n'))); }

[[noreturn]] void bad(const fs::path& path, const std::string& problem) {
  throw mq::InputError(path.string() + ": " + problem);
}

bool is_zip(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in && magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4;
}

bool is_torchscript(const fs::path& path) {
  try {
    caffe2::serialize::PyTorchStreamReader reader(path.string());
    return reader.hasRecord("constants.pkl");
  } catch (const c10::Error& e) {
    bad(path, "not a readable PyTorch archive (" + first_line(e.what_without_backtrace()) + ")");
  }
}

json spec_json(const mq::QuantSpec& s) { return json::parse(s.to_json()); }

mq::QuantSpec spec_from(const fs::path& path, const Json& j, const char* key = mq::kSpecsKey) {
  return mq::spec_from_metadata(path.string(), key, j.dump());
}

// A state dict's metadata: our JSON, in its archive's kMetadataRecord (or, in files mq
// wrote before, its __metadata__ entry; any other entry that is not a tensor is
// refused); an empty object when there is none.
Json state_dict_metadata(const fs::path& path, const std::map<std::string, std::string>& strings) {
  for (const auto& [name, text] : strings)
    if (name != kMetadataKey && name != mq::pt::kMetadataRecord) bad(path, "entry '" + name + "' is not a tensor");
  auto it = strings.find(mq::pt::kMetadataRecord);
  if (it == strings.end()) it = strings.find(kMetadataKey);
  const Json meta = it == strings.end() ? Json::object() : Json::parse(it->second, nullptr, false);
  return meta.is_object() ? meta : Json::object();
}

// The metadata's specs by tensor name (an empty object when it has none).
Json specs_in(const Json& meta) {
  const auto it = meta.find(mq::kSpecsKey);
  return it != meta.end() && it->is_object() ? *it : Json::object();
}

mq::QuantizedTensor from_torch(const at::Tensor& t, const std::optional<mq::QuantSpec>& spec) {
  mq::QuantizedTensor q;
  q.data = t.int_repr();
  q.shape = t.sizes().vec();
  const bool per_channel = t.qscheme() == at::kPerChannelAffine || t.qscheme() == at::kPerChannelSymmetric;
  if (per_channel) {
    q.qparams = {t.q_per_channel_scales().to(at::kFloat), t.q_per_channel_zero_points().to(at::kInt)};
  } else {
    q.qparams = {at::full({1}, static_cast<float>(t.q_scale())), at::full({1}, t.q_zero_point(), at::kInt)};
  }
  if (spec) {
    q.spec = *spec;
  } else {  // a file not of ours: symmetric when every zero point is the middle of the range
    q.spec.dtype = t.scalar_type() == at::kQUInt8 ? mq::DType::kUInt8 : mq::DType::kInt8;
    q.spec.granularity = per_channel ? mq::Granularity::kPerChannel : mq::Granularity::kPerTensor;
    q.spec.axis = per_channel ? static_cast<int>(t.q_per_channel_axis()) : 0;
    const int middle = q.spec.dtype == mq::DType::kUInt8 ? 128 : 0;
    q.spec.scheme = (q.qparams.zero_point == middle).all().item<bool>() ? mq::Scheme::kSymmetric
                                                                          : mq::Scheme::kAsymmetric;
  }
  return q;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// An HF model directory whose weights are transformers' pytorch_model.bin, whole or in
// shards. One that has safetensors weights is the safetensors format's: transformers
// prefers those too.
bool bin_directory(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir / "model.safetensors", ec) || fs::exists(dir / "model.safetensors.index.json", ec)) return false;
  return fs::is_regular_file(dir / kBinIndexName, ec) || fs::is_regular_file(dir / kBinName, ec);
}

class PtFormat final : public mq::Format {
 public:
  explicit PtFormat(const mq::Options& options)
      : trust_(options.get_bool("trust_torchscript")), fold_batchnorm_(options.get_bool("fold_batchnorm")) {}

  // A .pt, .pth or .bin state dict or TorchScript archive; an HF model directory of
  // pytorch_model.bin weights, or their index.
  bool can_read(const fs::path& path) const override {
    std::error_code ec;
    if (fs::is_directory(path, ec)) return bin_directory(path);
    if (ends_with(path.filename().string(), ".bin.index.json")) return fs::is_regular_file(path, ec);
    const auto ext = path.extension();
    // .bin: transformers' pytorch_model.bin, a torch.save'd state dict
    return (ext == ".pt" || ext == ".pth" || ext == ".bin") && fs::is_regular_file(path) && is_zip(path);
  }

  mq::Model read(const fs::path& path) override {
    std::error_code ec;
    if (fs::is_directory(path, ec) || ends_with(path.filename().string(), ".bin.index.json"))
      return read_bin_directory(path);
    if (!is_zip(path)) bad(path, "not a PyTorch zip archive (legacy torch.save files are not read)");
    if (!is_torchscript(path)) {
      mq::Model model;  // a state dict: read without running anything
      model.sources.push_back(path);
      model.tensors = read_float_state_dict(path, model);
      model.layers = mq::layers_from_names(model);
      return model;
    }
    return read_script(path, false, mq::Origin::kUser);
  }

  // Our TorchScript output runs; a state dict does not (the model is read only to run it).
  mq::Model read_artifact(const fs::path& path, mq::Origin origin) override {
    std::error_code ec;
    if (!fs::is_directory(path, ec) && is_zip(path) && is_torchscript(path)) return read_script(path, true, origin);
    mq::Model model;
    model.sources.push_back(path);
    return model;
  }

  void write(const mq::QuantizedModel& model, const fs::path& path) override {
    refuse_foreign(model.foreign);
    json specs = json::object();
    for (const auto& e : model.entries)
      if (e.quantized)  // names are unique: appended without operator[]'s linear search
        specs.get_ref<json::object_t&>().emplace_back(e.name, spec_json(e.quantized->spec));
    json meta(model.metadata);
    meta.erase(mq::kHfDirectoryKey);  // a local path; a state dict is one file, not a directory
    meta[mq::kSpecsKey] = specs;
    meta[mq::kModeKey] = model.mode;
    if (!model.activation_qparams.empty()) meta[mq::kActivationSpecKey] = spec_json(*model.activation_spec);
    auto* source = dynamic_cast<mq::pt::TorchScriptModel*>(model.source.get());
    if (source)
      save_torchscript(mq::pt::quantized_torchscript(model, *source), meta, path);
    else
      mq::pt::write_state_dict(model, meta.dump(), path);
  }

  // Tensors no PyTorch file holds, and for TorchScript output mq::pt::check_torchscript_plan.
  void check_plan(const mq::Model& source, std::vector<mq::PlanRow>& plan) const override {
    refuse_foreign(source.foreign);
    mq::refuse_block_types(plan, "pt");
    if (const auto* script = dynamic_cast<const mq::pt::TorchScriptModel*>(source.runnable.get()))
      mq::pt::check_torchscript_plan(*script, source, plan);
  }

  mq::QuantizedModel read_quantized(const fs::path& path, mq::Origin origin) override {
    std::error_code ec;
    if (fs::is_directory(path, ec) || ends_with(path.filename().string(), ".bin.index.json"))
      return read_quantized_bin_directory(path);
    if (!is_zip(path)) bad(path, "not a PyTorch zip archive");
    if (is_torchscript(path)) {
      refuse_untrusted(path, origin);
      return read_torchscript(path);
    }
    return read_state_dict(path);
  }

 private:
  // A TorchScript model, to quantize or (`artifact`) one we wrote, to run.
  mq::Model read_script(const fs::path& path, bool artifact, mq::Origin origin) {
    refuse_untrusted(path, origin);
    mq::pt::use_onednn();  // the engine our quantized modules' packed weights run on
    mq::Model model;
    torch::jit::Module module = load(path);
    if (fold_batchnorm_ && !artifact) {
      std::vector<mq::pt::Fold> folds;
      module = mq::pt::fold_batchnorm(module, folds);
      for (const mq::pt::Fold& f : folds)
        model.changes.push_back("folded BatchNorm '" + f.batchnorm + "' into Conv '" + f.conv + "'");
    }
    model.sources.push_back(path);
    for (const auto& p : module.named_parameters(true)) model.tensors.push_back({p.name, p.value.detach()});
    for (const auto& b : module.named_buffers(true)) model.tensors.push_back({b.name, b.value.detach()});
    for (const auto& m : module.named_modules()) {
      if (m.name.empty()) continue;
      if (mq::pt::is_quantized_module(m.value) && !artifact)
        refuse_quantized(path, "'" + m.name + "' is " + m.value.type()->name()->name());
      mq::Layer layer{m.name, mq::pt::layer_kind(m.value), "", ""};
      if (mq::is_recurrent(layer.kind)) {  // a row per weight matrix
        for (const auto& [weight, bias] : mq::pt::recurrent_weights(m.value))
          model.layers.push_back({m.name, layer.kind, m.name + "." + weight, bias.empty() ? "" : m.name + "." + bias});
        continue;
      }
      if (m.value.hasattr("weight") && m.value.attr("weight").isTensor()) layer.weight = m.name + ".weight";
      if (m.value.hasattr("bias") && m.value.attr("bias").isTensor()) layer.bias = m.name + ".bias";
      if (!layer.weight.empty()) model.layers.push_back(layer);
    }
    model.runnable = std::make_shared<mq::pt::TorchScriptModel>(module);
    return model;
  }

  // Loading a TorchScript archive runs its code: only when the user said so, or the file
  // is the one this run wrote.
  void refuse_untrusted(const fs::path& path, mq::Origin origin) const {
    if (!trust_ && origin != mq::Origin::kThisRun)
      bad(path,
          "is a TorchScript archive, and loading it runs the code inside; if you trust it, say so: "
          "--trust-torchscript (inspect, validate, init), or model.options.trust_torchscript: true in a recipe");
  }

  static torch::jit::Module load(const fs::path& path, torch::jit::ExtraFilesMap* extra = nullptr) {
    try {
      torch::jit::ExtraFilesMap none;
      torch::jit::Module m = torch::jit::load(path.string(), c10::nullopt, extra ? *extra : none);
      m.eval();
      return m;
    } catch (const c10::Error& e) {
      bad(path, "cannot load the TorchScript archive: " + first_line(e.what_without_backtrace()));
    }
  }

  // Tensors of a dtype LibTorch 1.13 lacks: a state dict or archive cannot hold them.
  static void refuse_foreign(const std::map<std::string, mq::ForeignDType>& foreign) {
    if (foreign.empty()) return;
    const auto& [name, f] = *foreign.begin();
    throw mq::RecipeError(
        "pt cannot store '" + name + "' (" + f.dtype +
        ", a dtype LibTorch 1.13 lacks): use the safetensors format, which keeps it as it is");
  }

  // Saved to a stream, not to `path`: an archive saved to a file is named after the
  // file (here the runner's temporary name), and the same recipe must give the same bytes.
  static void save_torchscript(const torch::jit::Module& m, const json& meta, const fs::path& path) {
    torch::jit::ExtraFilesMap extra{{kMetadataFile, meta.dump()}};
    std::ostringstream archive;
    try {
      m.save(archive, extra);
    } catch (const c10::Error& e) {
      throw mq::OutputError(path.string() + ": " + first_line(e.what_without_backtrace()));
    }
    mq::pt::write_file(archive.str(), path);
  }

  [[noreturn]] static void refuse_quantized(const fs::path& path, const std::string& why) {
    bad(path, mq::quantized_already(why));
  }

  // A state dict's tensors, refused if any is quantized (by us or by another tool); the
  // file's mapping added to `model`'s hooks.
  static std::vector<mq::NamedTensor> read_float_state_dict(const fs::path& path, mq::Model& model) {
    if (!is_zip(path)) bad(path, "not a PyTorch zip archive (legacy torch.save files are not read)");
    std::map<std::string, std::string> strings;
    std::shared_ptr<const mq::MappedFile> mapped;
    std::vector<mq::NamedTensor> tensors = mq::pt::read_state_dict(path, &strings, &mapped);
    for (const mq::NamedTensor& t : tensors)
      if (t.tensor.is_quantized()) refuse_quantized(path, "'" + t.name + "' is " + c10::toString(t.tensor.scalar_type()));
    const Json specs = specs_in(state_dict_metadata(path, strings));  // ours: int4 is stored as plain tensors
    for (auto it = specs.begin(); it != specs.end(); ++it)
      if (const mq::QuantSpec spec = spec_from(path, it.value()); spec.is_integer())
        refuse_quantized(path, "'" + it.key() + "' is " + spec.to_string());
    if (const std::string sign = mq::quantized_checkpoint_sign(tensors); !sign.empty())
      refuse_quantized(path, sign);  // another tool's
    if (mapped) model.files.push_back(mapped);
    return tensors;
  }

  // An HF model directory of pytorch_model.bin weights, or the index of its shards:
  // which shards hold which tensors (none listed: all of the one file).
  struct BinShards {
    fs::path index;
    bool hf_dir = false;
    std::vector<mq::hf::Shard> shards;  // in the order the index first names them
  };
  static BinShards bin_shards_of(const fs::path& path) {
    std::error_code ec;
    BinShards s;
    s.hf_dir = fs::is_directory(path, ec);
    s.index = s.hf_dir ? path / kBinIndexName : path;
    if (s.hf_dir && !fs::is_regular_file(s.index, ec) && !fs::is_regular_file(path / kBinName, ec))
      bad(path, "holds neither " + std::string(kBinName) + " nor " + kBinIndexName);
    if (!s.hf_dir || fs::exists(s.index, ec))
      s.shards = mq::hf::read_index(s.index);
    else
      s.shards.push_back({path / kBinName, {}});
    return s;
  }

  // The shards' tensors (NamedTensor) or entries (QuantizedEntry) in shard order, each
  // shard holding what the index lists (as the safetensors format reads
  // model.safetensors.index.json).
  template <class Item, class ReadShard>
  static std::vector<Item> read_shards(const BinShards& s, ReadShard read_shard) {
    std::vector<Item> out;
    std::set<std::string> names;
    for (const mq::hf::Shard& shard : s.shards) {
      const std::set<std::string> listed(shard.tensors.begin(), shard.tensors.end());
      for (Item& item : read_shard(shard.path)) {
        if (!listed.empty() && !listed.count(item.name)) continue;
        if (!names.insert(item.name).second) bad(shard.path, "holds '" + item.name + "', which another shard holds too");
        out.push_back(std::move(item));
      }
      for (const std::string& name : listed)
        if (!names.count(name)) throw mq::hf::not_in_shard(s.index, name, shard.path);
    }
    return out;
  }

  static mq::Model read_bin_directory(const fs::path& path) {
    const BinShards s = bin_shards_of(path);
    const fs::path dir = s.index.parent_path();
    std::error_code ec;
    if (const std::string sign = mq::hf::quantized_config(dir); !sign.empty()) refuse_quantized(path, sign);
    mq::Model model;
    model.tensors = read_shards<mq::NamedTensor>(s, [&](const fs::path& shard) { return read_float_state_dict(shard, model); });
    for (const mq::hf::Shard& shard : s.shards) model.sources.push_back(shard.path);
    if (s.hf_dir) model.metadata[mq::kHfDirectoryKey] = fs::absolute(dir).lexically_normal().string();
    model.layers = mq::layers_from_names(model);
    return model;
  }

  static mq::QuantizedModel read_quantized_bin_directory(const fs::path& path) {
    mq::QuantizedModel model;
    model.entries = read_shards<mq::QuantizedEntry>(bin_shards_of(path), [&](const fs::path& shard) {
      if (!is_zip(shard)) bad(shard, "not a PyTorch zip archive (legacy torch.save files are not read)");
      mq::QuantizedModel part = read_state_dict(shard);
      model.metadata.insert(part.metadata.begin(), part.metadata.end());
      return std::move(part.entries);
    });
    return model;
  }

  static std::optional<mq::QuantSpec> spec_of(const fs::path& path, const Json& specs, const std::string& name) {
    if (specs.contains(name)) return spec_from(path, specs[name]);
    return std::nullopt;
  }

  mq::QuantizedModel read_torchscript(const fs::path& path) const {
    torch::jit::ExtraFilesMap extra{{kMetadataFile, ""}};
    torch::jit::Module m = load(path, &extra);
    mq::QuantizedModel model;
    const Json meta = Json::parse(extra[kMetadataFile].empty() ? "{}" : extra[kMetadataFile], nullptr, false);
    if (!meta.is_object()) bad(path, "malformed mq.json");
    const Json specs = specs_in(meta);
    for (auto it = meta.begin(); it != meta.end(); ++it)
      if (it.value().is_string()) model.metadata[it.key()] = it.value().get<std::string>();
    read_mode(path, meta, model);
    // Parameters in named_parameters() order, the quantized layers' weight and bias in
    // place of the parameters of the layers they replaced; then buffers.
    for (const auto& nm : m.named_modules()) {
      const std::string prefix = nm.name.empty() ? "" : nm.name + ".";
      if (const std::optional<mq::pt::UnpackedLayer> layer = mq::pt::unpack_quantized_module(nm.value)) {
        model.entries.push_back({prefix + "weight", at::Tensor(), from_torch(layer->weight, spec_of(path, specs, prefix + "weight"))});
        if (layer->bias.defined()) model.entries.push_back({prefix + "bias", layer->bias, std::nullopt});
        if (layer->is_static) {
          if (!model.activation_spec) bad(path, "has static layers but no " + std::string(mq::kActivationSpecKey));
          const auto qparams = [&](const char* scale, const char* zero_point, int64_t shift) {
            return mq::QParams{at::full({1}, static_cast<float>(nm.value.attr(scale).toDouble())),
                               at::full({1}, nm.value.attr(zero_point).toInt() - shift, at::kInt)};
          };
          model.activation_qparams[nm.name] =
              qparams("input_scale", "input_zero_point", model.activation_spec->qmin() < 0 ? 128 : 0);
          model.output_qparams[nm.name] = qparams("output_scale", "output_zero_point", 0);
          if (nm.value.hasattr("relu_output_scale"))
            model.relu_output_qparams[nm.name] = qparams("relu_output_scale", "relu_output_zero_point", 0);
        }
        continue;
      }
      for (const auto& [name, t] : mq::pt::unpack_recurrent(nm.value)) {
        if (t.is_quantized())
          model.entries.push_back({prefix + name, at::Tensor(), from_torch(t, spec_of(path, specs, prefix + name))});
        else
          model.entries.push_back({prefix + name, t, std::nullopt});
      }
      for (const auto& p : nm.value.named_parameters(false)) model.entries.push_back({prefix + p.name, p.value.detach(), std::nullopt});
    }
    for (const auto& b : m.named_buffers(true)) model.entries.push_back({b.name, b.value.detach(), std::nullopt});
    return model;
  }

  // mq.mode and, for static models, the activation spec, from our metadata.
  static void read_mode(const fs::path& path, const Json& meta, mq::QuantizedModel& model) {
    if (meta.contains(mq::kModeKey) && meta[mq::kModeKey].is_string()) model.mode = meta[mq::kModeKey].get<std::string>();
    if (meta.contains(mq::kActivationSpecKey))
      model.activation_spec = spec_from(path, meta[mq::kActivationSpecKey], mq::kActivationSpecKey);
  }

  // A static model's LAYER.input_scale (input_zero_point, output_scale,
  // output_zero_point) entry into its qparams; false for other names.
  static bool read_activation(const std::string& name, const at::Tensor& t, mq::QuantizedModel& model,
                              const fs::path& path) {
    static const std::pair<const char*, bool> kSuffixes[] = {
        {".input_scale", true}, {".input_zero_point", true}, {".output_scale", false}, {".output_zero_point", false}};
    for (const auto& [suffix, input] : kSuffixes) {
      const size_t n = std::strlen(suffix);
      if (name.size() <= n || name.compare(name.size() - n, n, suffix) != 0) continue;
      if (t.numel() != 1) bad(path, "'" + name + "' holds " + std::to_string(t.numel()) + " values, not one");
      mq::QParams& qp = (input ? model.activation_qparams : model.output_qparams)[name.substr(0, name.size() - n)];
      if (std::strstr(suffix, "scale"))
        qp.scale = t.reshape({1}).to(at::kFloat);
      else
        qp.zero_point = t.reshape({1}).to(at::kInt);
      return true;
    }
    return false;
  }

  // An entry write_state_dict stored as plain tensors (int4/uint4 packed, per-group int8).
  static mq::QuantizedTensor read_stored(const std::map<std::string, at::Tensor>& dict, const std::string& name,
                                         const mq::QuantSpec& spec, const fs::path& path) {
    const auto get = [&](const std::string& key) {
      const auto it = dict.find(key);
      if (it == dict.end()) bad(path, "quantized entry '" + name + "' needs '" + key + "', which is missing");
      return it->second;
    };
    mq::QuantizedTensor q;
    q.spec = spec;
    const auto dtype = spec.stored_type();
    if (spec.packed()) {
      const at::Tensor shape = get(name + "_shape").to(at::kLong).contiguous();
      q.shape.assign(shape.data_ptr<int64_t>(), shape.data_ptr<int64_t>() + shape.numel());
      const at::Tensor packed = get(name + "_packed");
      const int64_t rows = packed.dim() == 2 ? packed.size(0) : -1;
      int64_t numel = 1;
      for (int64_t d : q.shape) numel *= d;
      if (q.shape.empty() || q.shape.back() <= 0 || rows < 0 || rows * q.shape.back() != numel ||
          packed.size(1) != (q.shape.back() + 7) / 8)
        bad(path, "'" + name + "_packed' does not hold a tensor of '" + name + "_shape'");
      q.data = mq::unpack_int4(packed, q.shape.back(), mq::nibble_offset(spec), dtype).reshape(q.shape);
    } else {
      q.data = get(name).to(dtype);
      q.shape = q.data.sizes().vec();
    }
    const at::Tensor scale = get(name + "_scale");
    const at::Tensor zero_point = get(name + "_zero_point");
    if (scale.sizes() != zero_point.sizes()) bad(path, "'" + name + "_scale' and '" + name + "_zero_point' differ in shape");
    if (scale.numel() != mq::qparam_count(spec, q.shape))
      bad(path, "'" + name + "_scale' holds " + std::to_string(scale.numel()) + " values; " + spec.to_string() +
                    " of this shape has " + std::to_string(mq::qparam_count(spec, q.shape)));
    q.original_dtype = scale.scalar_type();
    q.qparams = {scale.to(at::kFloat), zero_point.to(at::kInt)};
    if (const auto g_idx = dict.find(name + "_g_idx"); g_idx != dict.end()) {
      q.g_idx = g_idx->second;
      try {
        mq::group_order(q);
      } catch (const mq::InputError& e) {
        bad(path, "'" + name + "_g_idx': " + e.what());
      }
    }
    return q;
  }

  static mq::QuantizedModel read_state_dict(const fs::path& path) {
    std::map<std::string, std::string> strings;
    const std::vector<mq::NamedTensor> tensors = mq::pt::read_state_dict(path, &strings);
    std::map<std::string, at::Tensor> dict;
    for (const mq::NamedTensor& t : tensors) dict[t.name] = t.tensor;
    mq::QuantizedModel model;
    const Json meta = state_dict_metadata(path, strings);
    const Json specs = specs_in(meta);
    for (auto m = meta.begin(); m != meta.end(); ++m)
      if (m.value().is_string()) model.metadata[m.key()] = m.value().get<std::string>();
    read_mode(path, meta, model);
    // Entries PyTorch has no quantized type for, stored under the names write_state_dict
    // gives them: the key that marks an entry's place, and the keys that only belong to it.
    std::map<std::string, std::string> primary;  // key -> entry
    std::set<std::string> auxiliary;
    for (auto it = specs.begin(); it != specs.end(); ++it) {
      const mq::QuantSpec spec = spec_from(path, it.value());
      if (!spec.is_integer() || mq::pt::native(spec)) continue;
      primary[spec.packed() ? it.key() + "_packed" : it.key()] = it.key();
      for (const char* suffix : {"_shape", "_scale", "_zero_point", "_g_idx"}) auxiliary.insert(it.key() + suffix);
    }
    for (const auto& [name, t] : tensors) {
      if (auxiliary.count(name)) continue;
      if (model.activation_spec && read_activation(name, t, model, path)) continue;
      if (const auto p = primary.find(name); p != primary.end()) {
        model.entries.push_back({p->second, at::Tensor(), read_stored(dict, p->second, *spec_of(path, specs, p->second), path)});
        continue;
      }
      const auto spec = spec_of(path, specs, name);
      if (t.is_quantized()) {
        model.entries.push_back({name, at::Tensor(), from_torch(t, spec)});
      } else if (spec && !spec->is_integer()) {
        if (t.scalar_type() != spec->stored_type())
          bad(path, "entry '" + name + "' is stored as " + c10::toString(t.scalar_type()) + ", not as " +
                        spec->to_string());
        mq::QuantizedTensor q;
        q.data = t;
        q.spec = *spec;
        q.shape = t.sizes().vec();
        model.entries.push_back({name, at::Tensor(), q});
      } else {
        model.entries.push_back({name, t, std::nullopt});
      }
    }
    for (const auto* table : {&model.activation_qparams, &model.output_qparams})
      for (const auto& [layer, qp] : *table)
        if (!qp.scale.defined() || !qp.zero_point.defined())
          bad(path, "layer '" + layer + "' has a scale or a zero point for its activations, not both");
    return model;
  }

  bool trust_;
  bool fold_batchnorm_;
};

}  // namespace

MQ_PLUGIN(PtFormat, mq::PluginKind::kFormat, "pt", "1.6.2",
          "PyTorch: TorchScript in and out (int8 Linear and Conv kernels), state dicts (and HF directories of "
          "pytorch_model.bin shards) in, state dicts of quantized tensors out",
          {"trust_torchscript", mq::OptionType::kBool, "false",
           "allow loading TorchScript archives, which runs their code"},
          {"fold_batchnorm", mq::OptionType::kBool, "true",
           "fold a TorchScript model's BatchNorm2d into the Conv2d before it on reading, as PyTorch's fusion does"})
