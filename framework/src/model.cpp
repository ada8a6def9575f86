#include "mq/model.hpp"

#include <cctype>
#include <set>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "mq/error.hpp"
#include "mq/quantized_model.hpp"
#include "mq/recipe.hpp"
#include "mq/validator.hpp"

namespace mq {

const char* to_string(LayerKind kind) {
  switch (kind) {
    case LayerKind::kLinear: return "Linear";
    case LayerKind::kConv1d: return "Conv1d";
    case LayerKind::kConv2d: return "Conv2d";
    case LayerKind::kEmbedding: return "Embedding";
    case LayerKind::kLayerNorm: return "LayerNorm";
    case LayerKind::kLSTM: return "LSTM";
    case LayerKind::kGRU: return "GRU";
    case LayerKind::kLSTMCell: return "LSTMCell";
    case LayerKind::kGRUCell: return "GRUCell";
    case LayerKind::kOther: return "Other";
  }
  return "Other";
}

bool is_recurrent(LayerKind kind) {
  return kind == LayerKind::kLSTM || kind == LayerKind::kGRU || kind == LayerKind::kLSTMCell ||
         kind == LayerKind::kGRUCell;
}

Runnable::~Runnable() = default;

bool Runnable::quantize_inputs(const std::map<std::string, InputQuantization>&) { return false; }

at::Tensor Runnable::forward_with(const at::Tensor&, const std::map<std::string, at::Tensor>&) {
  throw RecipeError("this model cannot run with replaced weights (Hugging Face directories of the llama family can): "
                    "use target.sensitivity: weight");
}

void Runnable::record_sequential(const std::vector<at::Tensor>& batches, const std::vector<std::string>& layers,
                                 const ActivityVisitor& visit, const StageDone& done) {
  std::set<std::string> seen;
  record_layers(batches, layers, [&](size_t b, const std::map<std::string, Activity>& activity) {
    for (const auto& [layer, a] : activity) seen.insert(layer);
    visit(b, activity);
  });
  if (!seen.empty()) done({seen.begin(), seen.end()});
}

const at::Tensor* Model::find(const std::string& name) const {
  for (const NamedTensor& t : tensors)
    if (t.name == name) return &t.tensor;
  return nullptr;
}

TensorIndex::TensorIndex(const Model& model) {
  for (const NamedTensor& t : model.tensors) by_name_.emplace(t.name, &t.tensor);  // the first, as Model::find
}

const at::Tensor* TensorIndex::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

namespace {

// "<prefix>.weight_ih_l0_reverse" -> {prefix, "ih", "_l0_reverse"}; false for other names.
bool recurrent_weight(const std::string& name, std::string& prefix, std::string& gate, std::string& suffix) {
  for (const char* g : {".weight_ih", ".weight_hh"}) {
    const size_t at = name.rfind(g);
    if (at == std::string::npos || at == 0) continue;
    suffix = name.substr(at + 10);
    const bool layered = suffix.size() > 2 && suffix.compare(0, 2, "_l") == 0 &&
                         std::isdigit(static_cast<unsigned char>(suffix[2]));
    if (!suffix.empty() && !layered) continue;
    prefix = name.substr(0, at);
    gate = g + 8;
    return true;
  }
  return false;
}

}  // namespace

std::vector<Layer> layers_from_names(const Model& model) {
  const TensorIndex index(model);
  std::vector<Layer> layers;
  const std::string suffix = ".weight";
  for (const NamedTensor& t : model.tensors) {
    std::string prefix, gate, layer_suffix;
    if (t.tensor.dim() == 2 && recurrent_weight(t.name, prefix, gate, layer_suffix)) {
      const at::Tensor* hh = index.find(prefix + ".weight_hh" + layer_suffix);
      const int64_t gates = hh && hh->dim() == 2 && hh->size(1) > 0 && hh->size(0) % hh->size(1) == 0
                                ? hh->size(0) / hh->size(1) : 0;
      Layer layer{prefix, LayerKind::kOther, t.name, ""};
      if (gates == 4) layer.kind = layer_suffix.empty() ? LayerKind::kLSTMCell : LayerKind::kLSTM;
      if (gates == 3) layer.kind = layer_suffix.empty() ? LayerKind::kGRUCell : LayerKind::kGRU;
      if (index.find(prefix + ".bias_" + gate + layer_suffix)) layer.bias = prefix + ".bias_" + gate + layer_suffix;
      layers.push_back(std::move(layer));
      continue;
    }
    if (t.name.size() <= suffix.size() || t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    Layer layer;
    layer.name = t.name.substr(0, t.name.size() - suffix.size());
    layer.weight = t.name;
    if (index.find(layer.name + ".bias")) layer.bias = layer.name + ".bias";
    const bool embedding = layer.name.find("embed") != std::string::npos || layer.name.find("wte") != std::string::npos;
    if (t.tensor.dim() == 2)
      layer.kind = embedding ? LayerKind::kEmbedding : LayerKind::kLinear;
    else if (t.tensor.dim() == 1 && layer.name.find("norm") != std::string::npos)
      layer.kind = LayerKind::kLayerNorm;
    layers.push_back(std::move(layer));
  }
  return layers;
}

std::string quantized_checkpoint_sign(const std::vector<NamedTensor>& tensors) {
  static const std::pair<const char*, const char*> kNames[] = {
      {".weight_packed", "compressed-tensors"}, {".weight_scale", "compressed-tensors"},
      {".weight_zero_point", "compressed-tensors"}, {".qweight", "GPTQ/AWQ"}, {".qzeros", "GPTQ/AWQ"},
      {".weight.SCB", "bitsandbytes"}, {".weight.absmax", "bitsandbytes"}};
  const auto ends_with = [](const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  for (const NamedTensor& t : tensors) {
    for (const auto& [suffix, library] : kNames)
      if (ends_with(t.name, suffix)) return "'" + t.name + "' is a " + library + " name";
    const at::ScalarType type = t.tensor.scalar_type();
    if (ends_with(t.name, ".weight") && t.tensor.dim() >= 2 && at::isIntegralType(type, /*includeBool=*/false))
      return "'" + t.name + "' is " + (type == at::kChar ? "int8" : type == at::kByte ? "uint8" : c10::toString(type));
  }
  return "";
}

std::string quantized_already(const std::string& why) {
  return "is quantized already (" + why + "; mq-pipeline inspect lists it): give the float model it was made from";
}

std::optional<ModelInput> token_input(const Model& model, int64_t batch) {
  const bool hf = model.metadata.count(kHfDirectoryKey) > 0;
  for (const Layer& layer : model.layers) {
    if (layer.kind == LayerKind::kEmbedding)
      if (const at::Tensor* w = model.find(layer.weight); w && w->dim() == 2) return ModelInput{{batch, 16}, w->size(0)};
    if (!hf) break;  // only the first layer tells for a module in definition order
  }
  return std::nullopt;
}

std::vector<int64_t> sample_input_shape(const Model& model, int64_t batch) {
  for (const Layer& layer : model.layers) {
    const at::Tensor* w = model.find(layer.weight);
    if (!w || w->dim() < 2) continue;
    if (layer.kind == LayerKind::kLinear) return {batch, w->size(1)};
    if (layer.kind == LayerKind::kConv2d) return {batch, w->size(1), 32, 32};
    if (layer.kind == LayerKind::kConv1d) return {batch, w->size(1), 64};
    // [sequence, batch, features] or batch first: either way 8 steps of 8 rows.
    if (layer.kind == LayerKind::kLSTM || layer.kind == LayerKind::kGRU) return {batch, 8, w->size(1)};
    if (layer.kind == LayerKind::kLSTMCell || layer.kind == LayerKind::kGRUCell) return {batch, w->size(1)};
    return {};
  }
  return {};
}

std::pair<at::Tensor, at::Tensor> forward_both(const Model& original, Runnable& written, const at::Tensor& x,
                                               Check& check) {
  at::Tensor reference = original.runnable->forward(x);
  try {
    return {reference, written.forward(x)};
  } catch (const Error& e) {
    check.passed = false;
    check.message = std::string("the written model fails where the original runs: ") + e.what();
    return {reference, at::Tensor()};
  }
}

void Model::release(const at::Tensor& tensor) const {
  for (const auto& file : files)
    if (file->release(tensor)) return;
}

bool Model::read_into(const at::Tensor& tensor, const at::Tensor& into) const {
  for (const auto& file : files)
    if (file->read_into(tensor, into)) return true;
  return false;
}

at::Tensor read_staged(const Model& model, const at::Tensor& tensor, at::Tensor& buffer) {
  if (model.files.empty() || !tensor.defined() || !tensor.is_contiguous()) return tensor;
  const auto bytes = static_cast<int64_t>(tensor.nbytes());
  if (!buffer.defined() || buffer.storage().use_count() > 1 || buffer.numel() < bytes)
    buffer = at::empty({bytes}, at::kByte);
  const at::Tensor into = buffer.narrow(0, 0, bytes).view(tensor.scalar_type()).view(tensor.sizes());
  return model.read_into(tensor, into) ? into : tensor;
}

void for_each_entry(
    const ValidateContext& context,
    const std::function<void(const QuantizedEntry&, const at::Tensor* original)>& visit) {
  const TensorIndex originals(context.original);
  at::Tensor staging;
  for (const QuantizedEntry& e : context.quantized.entries) {
    const at::Tensor* original = e.quantized ? originals.find(e.name) : nullptr;
    if (!original) {
      visit(e, nullptr);
      continue;
    }
    const at::Tensor staged = read_staged(context.original, *original, staging);
    visit(e, &staged);
    context.original.release(*original);  // one resident at a time
  }
}

Check run_validator(Validator& validator, const ValidateContext& context) {
  if (validator.per_entry())
    for_each_entry(context, [&](const QuantizedEntry& e, const at::Tensor* o) {
      validator.entry(context, e, o);
    });
  return validator.validate(context);
}

int64_t Model::nbytes() const {
  int64_t total = 0;
  for (const NamedTensor& t : tensors) total += t.tensor.nbytes();
  return total;
}

QuantSpec spec_from_metadata(const std::string& file, const std::string& key, const std::string& json) {
  try {
    return QuantSpec::from_json(json);
  } catch (const std::invalid_argument& e) {
    throw InputError(file + ": malformed " + key + " metadata (" + e.what() + ")");
  }
}

const QuantizedEntry* QuantizedModel::find(const std::string& name) const {
  for (const QuantizedEntry& e : entries)
    if (e.name == name) return &e;
  return nullptr;
}

int64_t QuantizedModel::nbytes() const {
  int64_t total = 0;
  for (const QuantizedEntry& e : entries)
    total += e.quantized ? e.quantized->nbytes() : static_cast<int64_t>(e.tensor.nbytes());
  return total;
}

}  // namespace mq
