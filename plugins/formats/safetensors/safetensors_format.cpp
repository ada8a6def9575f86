// safetensors: strict reader of plain checkpoints, and a writer of the
// compressed-tensors layout that vLLM and transformers load.

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "mq/error.hpp"
#include "mq/format.hpp"
#include "safetensors_file.hpp"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

constexpr const char* kSpecsKey = "mq.quantized";  // per-tensor QuantSpec, for read_quantized

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A checkpoint has no module structure: 2-D "<prefix>.weight" tensors are Linear-like,
// except embeddings, which are named so in every common architecture.
std::vector<mq::Layer> infer_layers(const mq::Model& model) {
  std::vector<mq::Layer> layers;
  for (const mq::NamedTensor& t : model.tensors) {
    if (!ends_with(t.name, ".weight")) continue;
    mq::Layer layer;
    layer.name = t.name.substr(0, t.name.size() - 7);
    layer.weight = t.name;
    if (model.find(layer.name + ".bias")) layer.bias = layer.name + ".bias";
    const bool embedding = layer.name.find("embed") != std::string::npos ||
                           layer.name.find("wte") != std::string::npos;
    if (t.tensor.dim() == 2) layer.kind = embedding ? mq::LayerKind::kEmbedding : mq::LayerKind::kLinear;
    else if (t.tensor.dim() == 1 && layer.name.find("norm") != std::string::npos)
      layer.kind = mq::LayerKind::kLayerNorm;
    layers.push_back(std::move(layer));
  }
  return layers;
}

json spec_json(const mq::QuantSpec& s) {
  return {{"dtype", std::string(mq::to_string(s.dtype))},
          {"granularity", std::string(mq::to_string(s.granularity))},
          {"axis", s.axis},
          {"group_size", s.group_size},
          {"scheme", std::string(mq::to_string(s.scheme))},
          {"reduce_range", s.reduce_range}};
}

mq::QuantSpec spec_from_json(const std::string& file, const json& j) {
  mq::QuantSpec s;
  try {
    const auto dtype = mq::parse_dtype(j.at("dtype").get<std::string>());
    const auto granularity = mq::parse_granularity(j.at("granularity").get<std::string>());
    const auto scheme = mq::parse_scheme(j.at("scheme").get<std::string>());
    if (!dtype || !granularity || !scheme) throw std::runtime_error("unknown enum value");
    s.dtype = *dtype;
    s.granularity = *granularity;
    s.scheme = *scheme;
    s.axis = j.at("axis").get<int>();
    s.group_size = j.at("group_size").get<int64_t>();
    s.reduce_range = j.at("reduce_range").get<bool>();
  } catch (const std::exception& e) {
    throw mq::InputError(file + ": malformed " + kSpecsKey + " metadata (" + e.what() + ")");
  }
  return s;
}

// compressed-tensors' quantization_config for what was quantized.
json quantization_config(const mq::QuantizedModel& model) {
  const mq::QuantSpec* spec = nullptr;
  json ignore = json::array();
  for (const mq::QuantizedEntry& e : model.entries) {
    if (e.quantized) spec = &e.quantized->spec;
    else if (ends_with(e.name, ".weight") && e.tensor.dim() == 2)
      ignore.push_back(e.name.substr(0, e.name.size() - 7));
  }
  if (!spec) return nullptr;
  const bool dynamic = model.mode == "dynamic";
  json weights = {{"num_bits", spec->bits()},
                  {"type", "int"},
                  {"symmetric", spec->scheme == mq::Scheme::kSymmetric},
                  {"strategy", spec->granularity == mq::Granularity::kPerChannel ? "channel" : "tensor"},
                  {"group_size", nullptr},
                  {"dynamic", false},
                  {"actorder", nullptr},
                  {"observer", "minmax"},
                  {"observer_kwargs", json::object()},
                  {"block_structure", nullptr}};
  json activations = nullptr;
  if (dynamic)
    activations = {{"num_bits", 8}, {"type", "int"}, {"symmetric", true},
                   {"strategy", "token"}, {"dynamic", true}};
  return {{"quant_method", "compressed-tensors"},
          {"format", "int-quantized"},
          {"quantization_status", "compressed"},
          {"config_groups",
           {{"group_0", {{"targets", {"Linear"}}, {"format", "int-quantized"}, {"weights", weights},
                         {"input_activations", activations}, {"output_activations", nullptr}}}}},
          {"ignore", ignore},
          {"kv_cache_scheme", nullptr},
          {"sparsity_config", json::object()},
          {"global_compression_ratio", nullptr}};
}

class SafetensorsFormat final : public mq::Format {
 public:
  explicit SafetensorsFormat(const mq::Options&) {}

  bool can_read(const fs::path& path) const override {
    return path.extension() == ".safetensors" && fs::is_regular_file(path);
  }

  mq::Model read(const fs::path& path) override {
    const auto file = mq::safetensors::File::open(path);
    mq::Model model;
    model.sources.push_back(path);
    model.metadata = file->metadata();
    for (const auto& info : file->tensors()) model.tensors.push_back({info.name, file->tensor(info)});
    model.layers = infer_layers(model);
    return model;
  }

  void write(const mq::QuantizedModel& model, const fs::path& path) override {
    std::vector<mq::safetensors::OutTensor> out;
    json specs = json::object();
    for (const mq::QuantizedEntry& e : model.entries) {
      if (!e.quantized) {
        out.push_back({e.name, e.tensor});
        continue;
      }
      const mq::QuantizedTensor& q = *e.quantized;
      if (q.spec.granularity == mq::Granularity::kPerGroup || !q.spec.is_integer())
        throw mq::InputError("tensor '" + e.name + "': the safetensors writer stores int8/uint8 "
                             "per-tensor and per-channel quantization; " + q.spec.to_string() +
                             " is not supported by it");
      // compressed-tensors shapes: (1,) per tensor, (out, 1) per channel.
      const std::vector<int64_t> qshape =
          q.spec.granularity == mq::Granularity::kPerChannel ? std::vector<int64_t>{q.qparams.scale.numel(), 1}
                                                             : std::vector<int64_t>{1};
      out.push_back({e.name, q.data});
      out.push_back({e.name + "_scale", q.qparams.scale.reshape(qshape).to(q.original_dtype)});
      if (q.spec.scheme == mq::Scheme::kAsymmetric || q.spec.qmin() == 0)
        out.push_back({e.name + "_zero_point",
                       q.qparams.zero_point.reshape(qshape).to(q.spec.qmin() < 0 ? at::kChar : at::kByte)});
      specs[e.name] = spec_json(q.spec);
    }
    std::map<std::string, std::string> metadata = model.metadata;
    metadata["format"] = "pt";  // transformers refuses files without it
    metadata["mq.mode"] = model.mode;
    if (!specs.empty()) {
      metadata[kSpecsKey] = specs.dump();
      metadata["quantization_config"] = quantization_config(model).dump();
    }
    mq::safetensors::write(path, out, metadata);
  }

  mq::QuantizedModel read_quantized(const fs::path& path) override {
    const auto file = mq::safetensors::File::open(path);
    const std::string name = path.string();
    mq::QuantizedModel model;
    model.metadata = file->metadata();
    json specs = json::object();
    if (auto it = model.metadata.find(kSpecsKey); it != model.metadata.end()) {
      specs = json::parse(it->second, nullptr, false);
      if (!specs.is_object()) throw mq::InputError(name + ": malformed " + kSpecsKey + " metadata");
    }
    if (auto it = model.metadata.find("mq.mode"); it != model.metadata.end()) model.mode = it->second;
    for (const auto& info : file->tensors()) {
      const std::string& t = info.name;
      const bool is_qparam = (ends_with(t, "_scale") && file->find(t.substr(0, t.size() - 6)) &&
                              specs.contains(t.substr(0, t.size() - 6))) ||
                             (ends_with(t, "_zero_point") && specs.contains(t.substr(0, t.size() - 11)));
      if (is_qparam) continue;
      if (!specs.contains(t)) {
        model.entries.push_back({t, file->tensor(info), std::nullopt});
        continue;
      }
      const mq::safetensors::TensorInfo* scale = file->find(t + "_scale");
      if (!scale) throw mq::InputError(name + ": quantized tensor '" + t + "' has no " + t + "_scale");
      mq::QuantizedTensor q;
      q.spec = spec_from_json(name, specs[t]);
      q.data = file->tensor(info);
      q.shape = q.data.sizes().vec();
      const at::Tensor s = file->tensor(*scale);
      q.original_dtype = s.scalar_type();
      q.qparams.scale = s.to(at::kFloat).reshape({-1});
      if (const auto* zp = file->find(t + "_zero_point"))
        q.qparams.zero_point = file->tensor(*zp).to(at::kInt).reshape({-1});
      else
        q.qparams.zero_point = at::zeros({q.qparams.scale.numel()}, at::kInt);
      model.entries.push_back({t, at::Tensor(), std::move(q)});
    }
    return model;
  }
};

}  // namespace

MQ_PLUGIN(SafetensorsFormat, mq::PluginKind::kFormat, "safetensors", "1.0.0",
          "safetensors files: strict reader; compressed-tensors writer (vLLM, transformers)")
