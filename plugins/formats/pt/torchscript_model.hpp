#pragma once
// A TorchScript module as an mq::Runnable, and the module surgery that quantization
// needs: replacing a submodule with one of a new type defined in the module's own
// compilation unit. Graphs compiled before a swap still call the old type's methods,
// so anything that runs a rewritten module saves and re-loads it first (the saved code
// recompiles against the new types), exactly as a user's torch.jit.load will.

#include <torch/script.h>

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "mq/model.hpp"

namespace mq::pt {

class TorchScriptModel final : public Runnable {
 public:
  explicit TorchScriptModel(torch::jit::Module module) : module_(std::move(module)) {}
  at::Tensor forward(const at::Tensor& input) override;
  void record_layers(const std::vector<at::Tensor>& batches, const std::vector<std::string>& layers,
                     const ActivityVisitor& visit) override;
  // A fresh copy (save + load) that can be rewritten without touching this one.
  torch::jit::Module copy() const;
  const torch::jit::Module& module() const { return module_; }

 private:
  torch::jit::Module module_;
};

// How the code of other modules uses a submodule: the attributes it reads on it, the
// methods it calls, and whether the module value goes anywhere else (passed to a
// function, returned, stored). A replacement must offer all of them.
struct OutsideUses {
  std::set<std::string> attributes, methods;
  bool escapes = false;
};
// By submodule path ("enc.layers.0.linear1"), from the graphs of every method of every
// module of `root`.
std::map<std::string, OutsideUses> outside_uses(const torch::jit::Module& root);

// The kind of a submodule from its class name (mangled names included).
LayerKind layer_kind(const torch::jit::Module& module);

// Replaces the submodule at dotted `path` of `root` with `replacement`.
void replace_submodule(torch::jit::Module& root, const std::string& path, const torch::jit::Module& replacement);

// A module of a new type in `root`'s compilation unit with `forward` from `source`;
// `quantized.*` calls resolve to the quantized ops.
torch::jit::Module new_module(torch::jit::Module& root, const std::string& name);
void define(torch::jit::Module& module, const std::string& source);

torch::jit::Module reload(const torch::jit::Module& module);

// Calls a registered op by name ("quantized::linear_prepack"); the stack comes back
// holding its outputs.
std::vector<c10::IValue> call_op(const char* name, std::vector<c10::IValue> stack);

// Makes onednn the quantized engine (where LibTorch has it): the one our quantized
// modules' packed weights are made for and run on.
void use_onednn();

// One line saying why a LibTorch or TorchScript call failed.
std::string reason(const std::exception& e);

}  // namespace mq::pt
