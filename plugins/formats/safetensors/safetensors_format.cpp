// safetensors: strict reader of plain checkpoints, and a writer of the
// compressed-tensors layout that vLLM and transformers load.

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "mq/error.hpp"
#include "mq/files.hpp"
#include "mq/format.hpp"
#include "mq/hf_checkpoint.hpp"
#include "mq/pack.hpp"
#include "safetensors_file.hpp"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;  // what we write: keys in our order
using Json = nlohmann::json;          // what we read: keys found in log time, not linearly

namespace {

// mq::kSpecsKey, as files of ours written before it was the same in every format
// named it (still read).
constexpr const char* kOldSpecsKey = "mq.quantized";
constexpr const char* kOldActivationsKey = "mq.activations";  // before kActivationSpecKey: a spec per layer
using mq::safetensors::kIndexName;
using mq::safetensors::kSingleName;
using mq::safetensors::TensorSet;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

json spec_json(const mq::QuantSpec& s) { return json::parse(s.to_json()); }

mq::QuantSpec spec_from_json(const std::string& file, const Json& j) {
  return mq::spec_from_metadata(file, mq::kSpecsKey, j.dump());
}

// Our per-tensor specs metadata, under its name now or before; end() when absent.
std::map<std::string, std::string>::const_iterator specs_metadata(const std::map<std::string, std::string>& metadata) {
  const auto it = metadata.find(mq::kSpecsKey);
  return it != metadata.end() ? it : metadata.find(kOldSpecsKey);
}

// Our per-tensor specs metadata: an object, in model order.
mq::safetensors::ParsedJson parse_specs(const std::string& file, const std::string& text) {
  mq::safetensors::ParsedJson specs = mq::safetensors::parse_json(file, std::string("malformed ") + mq::kSpecsKey + " metadata", text, 2);
  if (!specs.value.is_object()) throw mq::InputError(file + ": malformed " + std::string(mq::kSpecsKey) + " metadata");
  return specs;
}

bool stores_zero_point(const mq::QuantSpec& spec) {
  return spec.scheme == mq::Scheme::kAsymmetric || spec.qmin() == 0;
}

// compressed-tensors' scale layout: (1,) per tensor, (C, 1) per channel, (rows, groups).
std::vector<int64_t> stored_qparam_shape(const mq::QuantizedTensor& q) {
  switch (q.spec.granularity) {
    case mq::Granularity::kPerTensor: return {1};
    case mq::Granularity::kPerChannel: return {q.qparams.scale.numel(), 1};
    case mq::Granularity::kPerGroup: return q.qparams.scale.sizes().vec();
  }
  return {1};
}

std::string layer_of(const std::string& tensor) {
  return ends_with(tensor, ".weight") ? tensor.substr(0, tensor.size() - 7) : tensor;
}

// What quantization_config needs of an entry, kept while the entries stream past.
struct EntrySummary {
  std::string name;
  std::optional<mq::QuantSpec> spec;  // set when quantized
  int64_t dim = 0;
  bool g_idx = false;  // its groups are not runs of columns (actorder "group")
};

// compressed-tensors' quantization_config: one config group per distinct spec.
json quantization_config(const std::vector<EntrySummary>& entries, const mq::QuantizedModel& model) {
  std::vector<std::pair<std::string, json>> groups;  // spec text -> group
  json ignore = json::array();
  std::set<std::string> formats;
  for (const EntrySummary& e : entries) {
    if (!e.spec || !e.spec->is_integer()) {
      if (ends_with(e.name, ".weight") && (e.spec || e.dim == 2)) ignore.push_back(layer_of(e.name));
      continue;
    }
    const mq::QuantSpec& s = *e.spec;
    const std::string key = s.to_string() + (e.g_idx ? " g_idx" : "");
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == key; });
    if (it == groups.end()) {
      const char* format = s.packed() ? "pack-quantized" : "int-quantized";
      formats.insert(format);
      const char* strategy = s.granularity == mq::Granularity::kPerGroup     ? "group"
                             : s.granularity == mq::Granularity::kPerChannel ? "channel"
                                                                             : "tensor";
      json activations = nullptr;
      if (model.mode == "dynamic" && s.bits() == 8)
        activations = {{"num_bits", 8}, {"type", "int"}, {"symmetric", true},
                       {"strategy", "token"}, {"dynamic", true}};
      if (model.mode == "static" && model.activation_spec)
        activations = {{"num_bits", model.activation_spec->bits()}, {"type", "int"},
                       {"symmetric", model.activation_spec->scheme == mq::Scheme::kSymmetric},
                       {"strategy", "tensor"}, {"dynamic", false}};
      json group = {{"targets", json::array()},
                    {"format", format},
                    {"weights",
                     {{"num_bits", s.bits()},
                      {"type", "int"},
                      {"symmetric", s.scheme == mq::Scheme::kSymmetric},
                      {"strategy", strategy},
                      {"group_size", s.granularity == mq::Granularity::kPerGroup ? json(s.group_size) : json(nullptr)},
                      {"dynamic", false},
                      {"actorder", e.g_idx ? json("group") : json(nullptr)},
                      {"observer", "minmax"},
                      {"observer_kwargs", json::object()},
                      {"block_structure", nullptr}}},
                    {"input_activations", activations},
                    {"output_activations", nullptr}};
      groups.emplace_back(key, group);
      it = groups.end() - 1;
    }
    it->second["targets"].push_back(layer_of(e.name));
  }
  if (groups.empty()) return nullptr;
  json config_groups = json::object();
  for (size_t i = 0; i < groups.size(); ++i) config_groups["group_" + std::to_string(i)] = groups[i].second;
  return {{"quant_method", "compressed-tensors"},
          {"format", formats.size() == 1 ? *formats.begin() : "mixed-precision"},
          {"quantization_status", "compressed"},
          {"config_groups", config_groups},
          {"ignore", ignore},
          {"kv_cache_scheme", nullptr},
          {"sparsity_config", json::object()},
          {"global_compression_ratio", nullptr}};
}

// An HF model directory's config.json (an empty object when it has none).
json read_hf_config(const fs::path& dir) {
  const fs::path file = dir / "config.json";
  std::error_code ec;
  if (!fs::exists(file, ec)) return json::object();
  std::ifstream in(file);
  const json config = json::parse(in, nullptr, false);
  if (!config.is_object()) throw mq::InputError(file.string() + ": not a JSON object");
  return config;
}

// Writes entries as they come (mq::safetensors::Writer keeps only the current one in
// memory): compressed-tensors names for quantized weights, float tensors as they are;
// finish() adds static activation qparams and the metadata. An HF model directory in
// gives one out: the weights (in shards of at most `max_shard_bytes` of tensor data,
// with model.safetensors.index.json, when they need more than one), config.json with
// the quantization_config, and the directory's other files (tokenizer, ...) copied.
class SafetensorsStream final : public mq::EntryWriter {
 public:
  SafetensorsStream(const fs::path& path, const std::map<std::string, std::string>& source_metadata,
                    std::map<std::string, mq::ForeignDType> foreign, int64_t max_shard_bytes,
                    uint64_t reserve)
      : path_(path),
        hf_dir_(hf_dir_of(source_metadata)),
        foreign_(std::move(foreign)),
        max_shard_bytes_(max_shard_bytes),
        reserve_(reserve) {
    shards_.push_back(std::make_unique<mq::safetensors::Writer>(file_for(path, hf_dir_), reserve_));
  }

  // Room for the header in front of the tensors, so that a large output is written in
  // place rather than copied behind its header at the end: per source tensor, its
  // output entries (up to five: int4 with a group index), its line in the metadata's spec table and
  // quantization_config's lists; the source metadata twice; 16 KiB for the rest. A
  // header that does not fit is written compactly, with the copy. Small outputs are
  // not padded (only where the room is at most 1/1024 of the tensor bytes).
  static uint64_t header_reserve(const mq::Model& source) {
    uint64_t room = 16 << 10;
    for (const mq::NamedTensor& t : source.tensors) room += 8 * (t.name.size() + 64);
    for (const auto& [key, value] : source.metadata) room += 2 * (key.size() + value.size() + 8);
    return room <= static_cast<uint64_t>(source.nbytes()) / 1024 ? room : 0;
  }

  void add(const mq::QuantizedEntry& e) override {
    summaries_.push_back({e.name, e.quantized ? std::optional<mq::QuantSpec>(e.quantized->spec) : std::nullopt,
                          e.quantized ? static_cast<int64_t>(e.quantized->shape.size()) : e.tensor.dim(),
                          e.quantized && e.quantized->g_idx.defined()});
    if (!e.quantized) {
      const auto foreign = foreign_.find(e.name);
      put(e.name, e.tensor, foreign == foreign_.end() ? nullptr : &foreign->second);
      return;
    }
    const mq::QuantizedTensor& q = *e.quantized;
    mq::safetensors::append_new(specs_, e.name, spec_json(q.spec));
    if (!q.spec.is_integer()) {
      put(e.name, q.data);
      return;
    }
    const std::vector<int64_t> qshape = stored_qparam_shape(q);
    if (q.spec.packed()) {
      const int offset = mq::nibble_offset(q.spec);
      put(e.name + "_packed", mq::pack_int4(q.data, offset));
      put(e.name + "_shape", at::tensor(q.shape, at::kLong).to(at::kInt));
      put(e.name + "_scale", q.qparams.scale.reshape(qshape).to(q.original_dtype));
      if (stores_zero_point(q.spec)) {
        const at::Tensor zp = q.qparams.zero_point.reshape(qshape);  // packed along dim 0
        put(e.name + "_zero_point", mq::pack_int4(zp.t(), offset).t().contiguous());
      }
    } else {
      put(e.name, q.data);
      put(e.name + "_scale", q.qparams.scale.reshape(qshape).to(q.original_dtype));
      if (stores_zero_point(q.spec))
        put(e.name + "_zero_point", q.qparams.zero_point.reshape(qshape).to(q.spec.stored_type()));
    }
    if (q.g_idx.defined()) put(e.name + "_g_idx", q.g_idx.to(at::kInt).contiguous());
  }

  void finish(const mq::QuantizedModel& model) override {
    // Static activations: P.input_scale (+ P.input_zero_point), float32 per tensor.
    for (const auto& [layer, qp] : model.activation_qparams) {
      put(layer + ".input_scale", qp.scale.reshape({1}).to(at::kFloat));
      if (stores_zero_point(*model.activation_spec))
        put(layer + ".input_zero_point", qp.zero_point.reshape({1}).to(model.activation_spec->stored_type()));
    }
    std::map<std::string, std::string> metadata = model.metadata;
    metadata.erase(mq::kHfDirectoryKey);
    metadata["format"] = "pt";  // transformers refuses files without it
    metadata[mq::kModeKey] = model.mode;
    if (!model.activation_qparams.empty()) metadata[mq::kActivationSpecKey] = model.activation_spec->to_json();
    if (!specs_.empty()) metadata[mq::kSpecsKey] = specs_.dump();
    const json config = quantization_config(summaries_, model);
    if (!config.is_null()) metadata["quantization_config"] = config.dump();
    if (shards_.size() == 1) {
      shards_[0]->finish(metadata);
    } else {  // every shard carries the metadata; the index maps tensors to shards
      json weight_map = json::object();
      uint64_t total = 0;
      for (const auto& [tensor, shard] : placed_) mq::safetensors::append_new(weight_map, tensor, shard_name(shard));
      for (size_t i = 0; i < shards_.size(); ++i) {
        shards_[i]->finish(metadata, path_ / shard_name(i));
        total += shards_[i]->bytes();
      }
      const json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
      std::ofstream out(path_ / kIndexName);
      out << index.dump(2) << "\n";
      if (!out.flush()) throw mq::OutputError((path_ / kIndexName).string() + ": write failed");
    }
    if (hf_dir_) write_hf_directory(*hf_dir_, config, path_);
  }

 private:
  static std::optional<std::string> hf_dir_of(const std::map<std::string, std::string>& metadata) {
    const auto it = metadata.find(mq::kHfDirectoryKey);
    return it == metadata.end() ? std::nullopt : std::optional<std::string>(it->second);
  }

  static fs::path file_for(const fs::path& path, const std::optional<std::string>& hf_dir) {
    if (!hf_dir) return path;
    std::error_code ec;
    fs::create_directories(path, ec);
    if (ec) throw mq::OutputError(path.string() + ": " + ec.message());
    return path / kSingleName;
  }

  // Weights in any format (transformers' pytorch_model*.bin, tf_model*.h5,
  // flax_model*.msgpack, rust_model.ot, model.ckpt.*, their indexes; .pt, .pth, .gguf)
  // are the unquantized model again: copied, they would be loaded by whatever prefers
  // them (from_pretrained(use_safetensors=False), a TF or Flax class) against a config
  // that says compressed-tensors, and would make the artifact as large as its input.
  static bool weights_file(const std::string& name) {
    for (const char* ext : {".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ot", ".gguf", ".index.json"})
      if (ends_with(name, ext)) return true;
    return name.rfind("model.ckpt", 0) == 0;
  }

  static void write_hf_directory(const std::string& input_dir, const json& config, const fs::path& out) {
    std::error_code ec;
    json hf_config = read_hf_config(input_dir);
    if (!config.is_null()) hf_config["quantization_config"] = config;
    std::ofstream file(out / "config.json");
    file << hf_config.dump(2) << "\n";
    file.close();
    if (!file) throw mq::OutputError((out / "config.json").string() + ": cannot be written");
    for (const auto& entry : fs::directory_iterator(input_dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (!entry.is_regular_file() || name == "config.json" || weights_file(name)) continue;
      fs::copy_file(entry.path(), out / name, fs::copy_options::overwrite_existing, ec);
      if (ec) throw mq::OutputError((out / name).string() + ": " + ec.message());
    }
  }

  // A new shard starts where a tensor would take an HF directory's current one past
  // the limit; a tensor larger than the limit gets a shard of its own.
  void put(const std::string& name, const at::Tensor& tensor,
           const mq::ForeignDType* as = nullptr) {
    const uint64_t bytes = tensor.nbytes();
    if (hf_dir_ && shards_.back()->bytes() > 0 &&
        shards_.back()->bytes() + bytes > static_cast<uint64_t>(max_shard_bytes_))
      shards_.push_back(std::make_unique<mq::safetensors::Writer>(path_ / kSingleName, reserve_));
    shards_.back()->add(name, tensor, as);
    placed_.emplace_back(name, shards_.size() - 1);
  }

  std::string shard_name(size_t shard) const {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", shard + 1, shards_.size());
    return name;
  }

  fs::path path_;
  std::optional<std::string> hf_dir_;
  std::map<std::string, mq::ForeignDType> foreign_;
  int64_t max_shard_bytes_;
  uint64_t reserve_;
  std::vector<std::unique_ptr<mq::safetensors::Writer>> shards_;
  std::vector<std::pair<std::string, size_t>> placed_;  // tensor, shard
  json specs_ = json::object();
  std::vector<EntrySummary> summaries_;
};

// A model to quantize (or to validate against) must be float. A quantized checkpoint is
// known by our metadata (an artifact of ours: integers and their scales under other
// names), by the quantization_config transformers reads from an HF directory's
// config.json, or by its tensors (mq::quantized_checkpoint_sign; a layer weight of a
// foreign dtype: FP8, FP4 and FP6 checkpoints).
void refuse_quantized(const std::string& file, const TensorSet& set, const std::optional<fs::path>& hf_dir,
                      const mq::Model& model) {
  const auto refuse = [&](const std::string& why) { throw mq::InputError(file + ": " + mq::quantized_already(why)); };
  if (const auto it = specs_metadata(set.metadata()); it != set.metadata().end()) {
    const mq::safetensors::ParsedJson specs = parse_specs(file, it->second);
    for (const std::string& entry : specs.keys)  // the first in model order
      if (const mq::QuantSpec spec = spec_from_json(file, specs.value.at(entry)); spec.is_integer())
        refuse("'" + entry + "' is " + spec.to_string());
  }
  if (hf_dir)
    if (const std::string sign = mq::hf::quantized_config(*hf_dir); !sign.empty()) refuse(sign);
  if (const std::string sign = mq::quantized_checkpoint_sign(model.tensors); !sign.empty())
    refuse(sign);
  for (const mq::NamedTensor& t : model.tensors)  // the first in file order
    if (const auto f = model.foreign.find(t.name);
        f != model.foreign.end() && ends_with(t.name, ".weight") && f->second.shape.size() >= 2)
      refuse("'" + t.name + "' is " + f->second.dtype);
}

class SafetensorsFormat final : public mq::Format {
 public:
  explicit SafetensorsFormat(const mq::Options& options) : max_shard_bytes_(options.get_int("max_shard_bytes")) {
    if (max_shard_bytes_ <= 0)
      throw mq::RecipeError(options.where("max_shard_bytes") + ": max_shard_bytes must be positive");
  }

  // A .safetensors file, a model.safetensors.index.json, or a Hugging Face model
  // directory holding either.
  bool can_read(const fs::path& path) const override {
    std::error_code ec;
    if (fs::is_directory(path, ec))
      return fs::exists(path / kIndexName, ec) || fs::exists(path / kSingleName, ec);
    if (ends_with(path.filename().string(), ".safetensors.index.json")) return fs::is_regular_file(path, ec);
    return path.extension() == ".safetensors" && fs::is_regular_file(path, ec);
  }

  mq::Model read(const fs::path& path) override { return read_model(path, false); }
  // The artifact's tensors, quantized ones as stored (nothing runs them yet).
  mq::Model read_artifact(const fs::path& path, mq::Origin) override { return read_model(path, true); }

  void check_plan(const mq::Model&, std::vector<mq::PlanRow>& plan) const override {
    mq::refuse_block_types(plan, "safetensors");
  }

  std::unique_ptr<mq::EntryWriter> stream(const mq::Model& source, const fs::path& path) override {
    return std::make_unique<SafetensorsStream>(path, source.metadata, source.foreign,
                                               max_shard_bytes_,
                                               SafetensorsStream::header_reserve(source));
  }

  mq::QuantizedModel read_quantized(const fs::path& input, mq::Origin) override { return read_back(input, true); }
  mq::QuantizedModel describe(const fs::path& input) override { return read_back(input, false); }

 private:
  // A model to quantize, or (`artifact`) one we wrote, quantized tensors and all.
  mq::Model read_model(const fs::path& path, bool artifact) {
    const TensorSet set = TensorSet::open(path);
    std::error_code ec;
    const bool hf_dir = fs::is_directory(path, ec);
    // The directory's config.json, also where the path is the file that directory reads
    // (its index or model.safetensors): refused now, not after the work.
    const fs::path dir = hf_dir ? path : path.parent_path();
    const bool dir_file = hf_dir || TensorSet::model_file(dir).filename() == path.filename();
    const std::optional<fs::path> config_dir = dir_file ? std::optional<fs::path>(dir) : std::nullopt;
    mq::Model model;
    for (const auto& t : set.tensors()) {
      model.tensors.push_back({t.name, set.tensor(t)});
      if (mq::safetensors::File::foreign(*t.info))
        model.foreign[t.name] = {t.info->dtype, t.info->shape};
    }
    if (!artifact) refuse_quantized(path.string(), set, config_dir, model);
    model.sources = set.sources();
    model.metadata = set.metadata();
    for (const auto& f : set.files()) model.files.push_back(f->mapped());
    if (hf_dir) model.metadata[mq::kHfDirectoryKey] = fs::absolute(path).lexically_normal().string();
    model.layers = mq::layers_from_names(model);
    return model;
  }

  // read_quantized(), leaving int4 data packed and undefined unless `unpack`. An ATen
  // error on what the file holds (a check this reader lacks) is still a bad input file.
  mq::QuantizedModel read_back(const fs::path& input, bool unpack) {
    try {
      return read_entries(input, unpack);
    } catch (const c10::Error& e) {
      const std::string what = e.what_without_backtrace();
      throw mq::InputError(input.string() + ": " + what.substr(0, what.find('\n')));
    }
  }

  // A static model's layers with calibrated inputs (their LAYER.input_scale tensors),
  // its activation_spec set from the metadata; none for a dynamic model. Files written
  // before mq.activation_spec name the layers in mq.activations, with a spec each.
  static std::vector<std::string> static_layers(const std::string& name, const TensorSet& file,
                                                mq::QuantizedModel& model) {
    std::vector<std::string> layers;
    if (auto it = model.metadata.find(mq::kActivationSpecKey); it != model.metadata.end()) {
      model.activation_spec = mq::spec_from_metadata(name, mq::kActivationSpecKey, it->second);
      for (const auto& t : file.tensors())
        if (ends_with(t.name, ".input_scale")) layers.push_back(t.name.substr(0, t.name.size() - 12));
    } else if (auto old = model.metadata.find(kOldActivationsKey); old != model.metadata.end()) {
      const Json activations = Json::parse(old->second, nullptr, false);
      if (!activations.is_object()) throw mq::InputError(name + ": malformed " + kOldActivationsKey + " metadata");
      for (auto a = activations.begin(); a != activations.end(); ++a) {
        model.activation_spec = spec_from_json(name, a.value());
        layers.push_back(a.key());
      }
    }
    return layers;
  }

  mq::QuantizedModel read_entries(const fs::path& input, bool unpack) {
    const TensorSet file = TensorSet::open(input);
    const std::string name = input.string();
    mq::QuantizedModel model;
    model.metadata = file.metadata();
    Json specs = Json::object();
    if (auto it = specs_metadata(model.metadata); it != model.metadata.end()) specs = parse_specs(name, it->second).value;
    if (auto it = model.metadata.find(mq::kModeKey); it != model.metadata.end()) model.mode = it->second;

    // Tensors that belong to a quantized entry, and the one that marks its position.
    std::map<std::string, std::string> primary;  // file tensor -> entry
    std::set<std::string> auxiliary;
    for (auto it = specs.begin(); it != specs.end(); ++it) {
      const std::string& entry = it.key();
      const mq::QuantSpec spec = spec_from_json(name, it.value());
      const bool packed = spec.packed();
      primary[packed ? entry + "_packed" : entry] = entry;
      for (const char* suffix : {"_scale", "_zero_point", "_shape", "_g_idx"}) auxiliary.insert(entry + suffix);
    }
    for (const std::string& layer : static_layers(name, file, model)) {
      const auto* scale = file.find(layer + ".input_scale");
      if (!scale) throw mq::InputError(name + ": missing " + layer + ".input_scale");
      const auto* zp = file.find(layer + ".input_zero_point");
      model.activation_qparams[layer] = {file.tensor(*scale).to(at::kFloat),
                                         zp ? file.tensor(*zp).to(at::kInt) : at::zeros({1}, at::kInt)};
      auxiliary.insert(layer + ".input_scale");
      auxiliary.insert(layer + ".input_zero_point");
    }
    const auto require = [&](const std::string& tensor) {
      const TensorSet::Tensor* info = file.find(tensor);
      if (!info) throw mq::InputError(name + ": quantized tensor needs '" + tensor + "', which is missing");
      return file.tensor(*info);
    };
    for (const auto& info : file.tensors()) {
      const auto p = primary.find(info.name);
      if (p == primary.end()) {
        if (auxiliary.count(info.name)) continue;
        model.entries.push_back({info.name, file.tensor(info), std::nullopt});
        if (mq::safetensors::File::foreign(*info.info))
          model.foreign[info.name] = {info.info->dtype, info.info->shape};
        continue;
      }
      const std::string& entry = p->second;
      mq::QuantizedTensor q;
      q.spec = spec_from_json(name, specs[entry]);
      // What each entry's tensors must be stored as (a file of ours edited or made by
      // hand could say otherwise; the kernels read the bytes as this type).
      const auto stored_as = [&](const at::Tensor& t, const std::string& tensor, bool ok, const std::string& want) {
        if (!ok)
          throw mq::InputError(name + ": '" + tensor + "' is stored as " + c10::toString(t.scalar_type()) + "; " +
                               q.spec.to_string() + " stores it as " + want);
        return t;
      };
      if (!q.spec.is_integer()) {
        const at::ScalarType cast = q.spec.stored_type();
        q.data = file.tensor(info);
        stored_as(q.data, info.name, q.data.scalar_type() == cast, c10::toString(cast));
        q.shape = q.data.sizes().vec();
        q.original_dtype = q.data.scalar_type();
        model.entries.push_back({entry, at::Tensor(), std::move(q)});
        continue;
      }
      const at::Tensor scale = require(entry + "_scale");
      stored_as(scale, entry + "_scale", at::isFloatingType(scale.scalar_type()), "a floating type");
      q.original_dtype = scale.scalar_type();
      const bool packed = q.spec.packed();
      const auto data_dtype = q.spec.stored_type();
      if (packed) {
        const at::Tensor shape = require(entry + "_shape").to(at::kLong);
        q.shape.assign(shape.data_ptr<int64_t>(), shape.data_ptr<int64_t>() + shape.numel());
        const at::Tensor data = file.tensor(info);
        if (!mq::packs_shape(data, q.shape))
          throw mq::InputError(name + ": '" + info.name + "' (" + c10::toString(data.scalar_type()) + " " +
                               c10::str(data.sizes()) + ") is not int4 values of '" + entry + "_shape' " +
                               c10::str(c10::IntArrayRef(q.shape)) + " packed eight to an int32");
        if (unpack)
          q.data = mq::unpack_int4(data, q.shape.back(), mq::nibble_offset(q.spec), data_dtype).reshape(q.shape);
      } else {
        q.data = stored_as(file.tensor(info), info.name, file.tensor(info).scalar_type() == data_dtype,
                           c10::toString(data_dtype));
        q.shape = q.data.sizes().vec();
      }
      if (scale.numel() != mq::qparam_count(q.spec, q.shape))
        throw mq::InputError(name + ": '" + entry + "_scale' holds " + std::to_string(scale.numel()) +
                             " values; " + q.spec.to_string() + " of this shape has " +
                             std::to_string(mq::qparam_count(q.spec, q.shape)));
      std::vector<int64_t> param_shape{scale.numel()};
      if (q.spec.granularity == mq::Granularity::kPerGroup) param_shape = scale.sizes().vec();
      q.qparams.scale = scale.to(at::kFloat).reshape(param_shape);
      if (file.find(entry + "_zero_point")) {
        at::Tensor zp = require(entry + "_zero_point");
        stored_as(zp, entry + "_zero_point", at::isIntegralType(zp.scalar_type(), false), "an integer type");
        if (packed) {  // [rows, groups] of scales, zero points packed along the rows
          const int64_t rows = scale.dim() ? scale.size(0) : 1, groups = rows ? scale.numel() / rows : 0;
          if (zp.dim() != 2 || !mq::packs_shape(zp.t(), {groups, rows}))
            throw mq::InputError(name + ": '" + entry + "_zero_point' is not " + std::to_string(scale.numel()) +
                                 " int4 zero points packed eight to an int32 along the rows");
          zp = mq::unpack_int4(zp.t().contiguous(), rows, mq::nibble_offset(q.spec), at::kInt).t();
        }
        if (zp.numel() != scale.numel())
          throw mq::InputError(name + ": '" + entry + "_zero_point' holds " + std::to_string(zp.numel()) +
                               " values for " + std::to_string(scale.numel()) + " scales");
        q.qparams.zero_point = zp.to(at::kInt).contiguous().reshape(param_shape);
      } else {
        q.qparams.zero_point = at::zeros(param_shape, at::kInt);
      }
      if (file.find(entry + "_g_idx")) {
        q.g_idx = require(entry + "_g_idx");
        stored_as(q.g_idx, entry + "_g_idx", at::isIntegralType(q.g_idx.scalar_type(), false), "an integer type");
        try {
          mq::group_order(q);
        } catch (const mq::InputError& e) {
          throw mq::InputError(name + ": '" + entry + "_g_idx': " + e.what());
        }
      }
      model.entries.push_back({entry, at::Tensor(), std::move(q)});
    }
    return model;
  }

  int64_t max_shard_bytes_;
};

}  // namespace

MQ_PLUGIN(
    SafetensorsFormat, mq::PluginKind::kFormat, "safetensors", "1.3.0",
    "safetensors files: strict reader; compressed-tensors writer (vLLM, transformers)",
    {"max_shard_bytes", mq::OptionType::kInt, "5000000000",
     "HF directory output: tensor bytes per shard before a new one starts (transformers: 5GB)"})
