#include "mq/smoothing.hpp"

#include <ATen/ATen.h>

#include <set>

namespace mq {
namespace {

bool ends(const std::string& s, const std::string& end) {
  return s.size() >= end.size() && s.compare(s.size() - end.size(), end.size(), end) == 0;
}

}  // namespace

std::vector<SmoothingGroup> smoothing_groups(const Model& model) {
  std::set<std::string> linears;
  for (const Layer& l : model.layers)
    if (l.kind == LayerKind::kLinear) linears.insert(l.name);
  std::vector<SmoothingGroup> groups;
  const auto add = [&](SmoothingGroup g) {
    const bool front = linears.count(g.front) || model.find(g.front + ".weight");
    bool complete = front && !g.layers.empty();
    for (const std::string& m : g.layers) complete = complete && linears.count(m);
    if (complete) groups.push_back(std::move(g));
  };
  for (const std::string& l : linears) {
    if (ends(l, "self_attn.q_proj")) {
      const std::string p = l.substr(0, l.size() - 16);
      add({p + "input_layernorm", {p + "self_attn.q_proj", p + "self_attn.k_proj", p + "self_attn.v_proj"}});
    } else if (ends(l, "mlp.gate_proj")) {
      const std::string p = l.substr(0, l.size() - 13);
      add({p + "mlp.up_proj", {p + "mlp.down_proj"}});
      add({p + "post_attention_layernorm", {p + "mlp.gate_proj", p + "mlp.up_proj"}});
    } else if (ends(l, "block_sparse_moe.gate")) {
      const std::string p = l.substr(0, l.size() - 21);
      SmoothingGroup g{p + "post_attention_layernorm", {l}};
      for (const std::string& e : linears)
        if (e.rfind(p + "block_sparse_moe.experts.", 0) == 0 && (ends(e, ".w1") || ends(e, ".w3"))) g.layers.push_back(e);
      add(std::move(g));
    }
  }
  return groups;
}

Model fold_scales(
    const Model& model, const std::vector<SmoothingGroup>& groups,
    const std::function<at::Tensor(const SmoothingGroup&, const std::function<at::Tensor(const std::string&)>&)>& scale_of,
    std::vector<PlanRow>& plan, std::map<std::string, at::Tensor>& transformed, const std::string& rule) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < model.tensors.size(); ++i) index[model.tensors[i].name] = i;
  Model folded = model;  // handles: only what folding replaces is new
  const std::function<at::Tensor(const std::string&)> current = [&](const std::string& name) {
    return folded.tensors[index.at(name)].tensor;
  };
  const auto replace = [&](const std::string& name, const at::Tensor& value) {
    const size_t i = index.at(name);
    const at::Tensor v = value.to(model.tensors[i].tensor.scalar_type()).contiguous();
    if (!transformed.count(name)) plan[i].rule += rule;
    folded.tensors[i].tensor = v;
    transformed[name] = v;
  };
  for (const SmoothingGroup& g : groups) {
    const at::Tensor s = scale_of(g, current);
    if (!s.defined()) continue;
    const at::Tensor front = current(g.front + ".weight").to(at::kFloat);
    replace(g.front + ".weight", front.dim() == 2 ? front / s.unsqueeze(1) : front / s);
    if (index.count(g.front + ".bias")) replace(g.front + ".bias", current(g.front + ".bias").to(at::kFloat) / s);
    for (const std::string& l : g.layers) replace(l + ".weight", current(l + ".weight").to(at::kFloat) * s.unsqueeze(0));
  }
  return folded;
}

}  // namespace mq
