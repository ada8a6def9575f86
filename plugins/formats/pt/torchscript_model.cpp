#include "torchscript_model.hpp"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/frontend/sugared_value.h>

#include <algorithm>
#include <functional>
#include <sstream>

#include "mq/error.hpp"

namespace mq::pt {
namespace {

// define()'s default resolver only knows `torch`; quantized ops live in `quantized`.
struct QuantizedResolver : torch::jit::Resolver {
  std::shared_ptr<torch::jit::SugaredValue> resolveValue(const std::string& name, torch::jit::GraphFunction& m,
                                                         const torch::jit::SourceRange& loc) override {
    if (name == "quantized") return std::make_shared<torch::jit::BuiltinModule>("quantized");
    return torch::jit::nativeResolver()->resolveValue(name, m, loc);
  }
  c10::TypePtr resolveType(const std::string& name, const torch::jit::SourceRange& loc) override {
    return torch::jit::nativeResolver()->resolveType(name, loc);
  }
};

torch::jit::Module child(const torch::jit::Module& root, const std::string& path, std::string* last) {
  torch::jit::Module parent = root;
  std::stringstream ss(path);
  std::vector<std::string> parts;
  for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
  for (size_t i = 0; i + 1 < parts.size(); ++i) parent = parent.attr(parts[i]).toModule();
  *last = parts.back();
  return parent;
}

}  // namespace

std::string reason(const std::exception& e) {
  // TorchScript errors carry the interpreter's traceback; the cause is its last line.
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  std::stringstream lines(c10_error ? c10_error->what_without_backtrace() : e.what());
  std::string line, last;
  while (std::getline(lines, line))
    if (line.find_first_not_of(" \t") != std::string::npos) last = line;
  const size_t start = last.find_first_not_of(" \t");
  return start == std::string::npos ? "unknown error" : last.substr(start);
}

void use_onednn() {
  for (at::QEngine e : at::globalContext().supportedQEngines())
    if (e == at::QEngine::ONEDNN) at::globalContext().setQEngine(e);
}

std::vector<c10::IValue> call_op(const char* name, std::vector<c10::IValue> stack) {
  const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
  op.callBoxed(&stack);
  return stack;
}

torch::jit::Module reload(const torch::jit::Module& module) {
  std::stringstream buffer;
  module.save(buffer);
  return torch::jit::load(buffer);
}

at::Tensor TorchScriptModel::forward(const at::Tensor& input) {
  torch::NoGradGuard no_grad;
  c10::IValue out;
  try {
    out = module_.forward({input.clone()});  // see record_layers()
  } catch (const std::exception& e) {
    throw InputError(reason(e));  // callers say which input
  }
  if (out.isTensor()) return out.toTensor();
  // Tuples, lists and dicts (e.g. (logits, hidden)): their tensors, flattened, in order.
  std::vector<at::Tensor> leaves;
  const std::function<void(const c10::IValue&)> collect = [&](const c10::IValue& v) {
    if (v.isTensor()) leaves.push_back(v.toTensor().reshape(-1).to(at::kFloat));
    if (v.isTuple())
      for (const c10::IValue& e : v.toTupleRef().elements()) collect(e);
    if (v.isList())
      for (const c10::IValue& e : v.toListRef()) collect(e);
    if (v.isGenericDict())
      for (const auto& kv : v.toGenericDict()) collect(kv.value());
  };
  collect(out);
  if (leaves.empty()) throw InputError("the model's forward returns " + out.tagKind() + " holding no tensor");
  return at::cat(leaves);
}

torch::jit::Module TorchScriptModel::copy() const { return reload(module_); }

void TorchScriptModel::record_layers(const std::vector<at::Tensor>& batches, const std::vector<std::string>& layers,
                                     const ActivityVisitor& visit) {
  // Each layer becomes a recorder that runs the original layer and appends its input and
  // output to lists, so the model's results do not change. What other code reads of the
  // layer (MultiheadAttention reads its out_proj's weight and runs the matmul itself) the
  // recorder holds too; a layer whose other methods are called is left as it is, and
  // records nothing.
  torch::jit::Module m = copy();
  const std::map<std::string, OutsideUses> uses = outside_uses(m);
  std::vector<std::string> recorded;
  for (const std::string& name : layers) {
    const auto used = uses.find(name);
    if (used != uses.end() &&
        (used->second.escapes || std::any_of(used->second.methods.begin(), used->second.methods.end(),
                                             [](const std::string& m) { return m != "forward"; })))
      continue;
    recorded.push_back(name);
    std::string last;
    torch::jit::Module parent = child(m, name, &last);
    torch::jit::Module original = parent.attr(last).toModule();
    torch::jit::Module recorder = new_module(m, "Recorder");
    recorder.register_module("inner", original);
    if (used != uses.end())
      for (const std::string& a : used->second.attributes) {
        const c10::ClassTypePtr type = original.type();
        if (!type->hasAttribute(a)) continue;
        const size_t slot = type->getAttributeSlot(a);
        recorder.register_attribute(a, type->getAttribute(slot), original.attr(a), type->is_parameter(slot));
      }
    for (const char* list : {"inputs", "outputs"})
      recorder.register_attribute(list, c10::ListType::ofTensors(), c10::impl::GenericList(c10::TensorType::get()));
    define(recorder, "def forward(self, x: Tensor) -> Tensor:\n"
                     "    y = self.inner.forward(x)\n"
                     "    self.inputs.append(x)\n"
                     "    self.outputs.append(y)\n"
                     "    return y\n");
    replace_submodule(m, name, recorder);
  }
  torch::jit::Module run = reload(m);
  torch::NoGradGuard no_grad;
  // A recorder's list, flattened and concatenated, and emptied for the next batch.
  const auto take = [](torch::jit::Module& recorder, const char* list) {
    const c10::List<c10::IValue> seen = recorder.attr(list).toList();
    recorder.setattr(list, c10::impl::GenericList(c10::TensorType::get()));
    return at::cat(c10::fmap(seen.vec(), [](const c10::IValue& v) {
      return v.toTensor().reshape({-1, v.toTensor().size(-1)});
    }));
  };
  for (size_t b = 0; b < batches.size(); ++b) {
    try {
      // A copy: a model may change its input in place, and a batch may lie in a
      // read-only mapped file (a calibration .safetensors or .pt) or be used again.
      run.forward({batches[b].clone()});
    } catch (const std::exception& e) {
      throw InputError("calibration batch " + std::to_string(b) + " of shape " +
                       c10::str(batches[b].sizes()) + " does not fit the model: " + reason(e));
    }
    std::map<std::string, Activity> seen;
    for (const std::string& name : recorded) {
      std::string last;
      torch::jit::Module recorder = child(run, name, &last).attr(last).toModule();
      if (recorder.attr("inputs").toList().size() > 0) seen[name] = {take(recorder, "inputs"), take(recorder, "outputs")};
    }
    visit(b, seen);
  }
}

std::map<std::string, OutsideUses> outside_uses(const torch::jit::Module& root) {
  std::map<std::string, OutsideUses> uses;
  for (const auto& owner : root.named_modules()) {
    for (const torch::jit::Method& method : owner.value.get_methods()) {
      const std::shared_ptr<torch::jit::Graph> graph = method.graph();
      // Values that are submodules of `owner`, by path: self, then GetAttr chains from it.
      std::map<const torch::jit::Value*, std::string> modules{{graph->inputs().at(0), owner.name}};
      const std::function<void(torch::jit::Block*)> walk = [&](torch::jit::Block* block) {
        for (torch::jit::Node* node : block->nodes()) {
          if (node->kind() == c10::prim::GetAttr) {
            const auto base = modules.find(node->input(0));
            const auto type = node->output()->type()->cast<c10::ClassType>();
            if (base != modules.end() && type && type->is_module())
              modules[node->output()] = (base->second.empty() ? "" : base->second + ".") + node->s(c10::attr::name);
          }
          for (size_t i = 0; i < node->inputs().size(); ++i) {
            const auto found = modules.find(node->input(i));
            if (found == modules.end() || found->second == owner.name) continue;
            OutsideUses& u = uses[found->second];
            if (i == 0 && node->kind() == c10::prim::GetAttr) {
              if (!modules.count(node->output())) u.attributes.insert(node->s(c10::attr::name));
            } else if (i == 0 && node->kind() == c10::prim::CallMethod) {
              u.methods.insert(node->s(c10::attr::name));
            } else {
              u.escapes = true;
            }
          }
          for (torch::jit::Block* b : node->blocks()) walk(b);
        }
      };
      walk(graph->block());
    }
  }
  return uses;
}

LayerKind layer_kind(const torch::jit::Module& module) {
  const auto name = module.type()->name();
  if (!name) return LayerKind::kOther;
  const std::string n = name->name();
  // MultiheadAttention's out_proj is a NonDynamicallyQuantizableLinear: a Linear whose
  // weight the attention reads itself (check_plan keeps such layers float in TorchScript).
  if (n == "Linear" || n == "NonDynamicallyQuantizableLinear") return LayerKind::kLinear;
  if (n == "Conv1d") return LayerKind::kConv1d;
  if (n == "Conv2d") return LayerKind::kConv2d;
  if (n == "Embedding") return LayerKind::kEmbedding;
  if (n == "LayerNorm") return LayerKind::kLayerNorm;
  if (n == "LSTM") return LayerKind::kLSTM;
  if (n == "GRU") return LayerKind::kGRU;
  if (n == "LSTMCell") return LayerKind::kLSTMCell;
  if (n == "GRUCell") return LayerKind::kGRUCell;
  return LayerKind::kOther;
}

void replace_submodule(torch::jit::Module& root, const std::string& path, const torch::jit::Module& replacement) {
  std::string last;
  torch::jit::Module parent = child(root, path, &last);
  parent.type()->unsafeChangeAttributeType(last, replacement.type());
  parent._ivalue()->setAttr(last, replacement._ivalue());
}

torch::jit::Module new_module(torch::jit::Module& root, const std::string& name) {
  return torch::jit::Module(c10::QualifiedName("__torch__.mq." + name), root._ivalue()->compilation_unit(),
                            /*shouldMangle=*/true);
}

void define(torch::jit::Module& module, const std::string& source) {
  module.define(source, std::make_shared<QuantizedResolver>());
}

}  // namespace mq::pt
