#pragma once
// Per-input-channel scales that leave a model's function unchanged, for the transforms
// that move quantization difficulty between activations and weights (SmoothQuant, AWQ):
// for Linears that share one input, the op in front of them (a norm, or a Linear whose
// output rows are that input's channels) is divided by s and their columns multiplied.

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "mq/model.hpp"
#include "mq/quantized_model.hpp"

namespace mq {

// Linears that share their input, and the op in front that makes it.
struct SmoothingGroup {
  std::string front;                // a norm (its weight, and bias where it has one), or a Linear (its rows)
  std::vector<std::string> layers;  // the Linears behind it
};

// The llama family's groups, by name, in order: input_layernorm -> self_attn.q/k/v_proj;
// mlp.up_proj -> mlp.down_proj (down's input is silu(gate) * up), then
// post_attention_layernorm -> mlp.gate/up_proj, or -> a MoE block's router and experts'
// w1/w3. A group needs every member in the model. Empty for other models.
MQ_API std::vector<SmoothingGroup> smoothing_groups(const Model& model);

// `model` with the groups' scales folded in, in order: `scale_of(group, current)` gives a
// group's s (float32, one per input channel; undefined: leave it), `current(name)` the
// tensor as earlier groups left it. Replaced tensors keep their dtype; they go to
// `transformed`, and `rule` is appended to their rows of `plan`.
MQ_API Model fold_scales(
    const Model& model, const std::vector<SmoothingGroup>& groups,
    const std::function<at::Tensor(const SmoothingGroup&, const std::function<at::Tensor(const std::string&)>&)>& scale_of,
    std::vector<PlanRow>& plan, std::map<std::string, at::Tensor>& transformed, const std::string& rule);

}  // namespace mq
