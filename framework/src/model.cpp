#include "mq/model.hpp"

#include "mq/quantized_model.hpp"

namespace mq {

const char* to_string(LayerKind kind) {
  switch (kind) {
    case LayerKind::kLinear: return "Linear";
    case LayerKind::kConv1d: return "Conv1d";
    case LayerKind::kConv2d: return "Conv2d";
    case LayerKind::kEmbedding: return "Embedding";
    case LayerKind::kLayerNorm: return "LayerNorm";
    case LayerKind::kOther: return "Other";
  }
  return "Other";
}

Runnable::~Runnable() = default;

const at::Tensor* Model::find(const std::string& name) const {
  for (const NamedTensor& t : tensors)
    if (t.name == name) return &t.tensor;
  return nullptr;
}

int64_t Model::nbytes() const {
  int64_t total = 0;
  for (const NamedTensor& t : tensors) total += t.tensor.nbytes();
  return total;
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
