#include "batchnorm.hpp"

#include <torch/csrc/jit/passes/fold_conv_bn.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>

namespace mq::pt {
namespace {

using torch::jit::Node;

// Every node of `block` and of the blocks in it.
void for_each_node(const torch::jit::Block* block, const std::function<void(const Node*)>& f) {
  for (const Node* n : block->nodes()) {
    f(n);
    for (const torch::jit::Block* b : n->blocks()) for_each_node(b, f);
  }
}

// The attribute of the method's `self` that `v` reads, or "".
std::string self_attribute(const torch::jit::Value* v, const torch::jit::Graph& graph) {
  const Node* n = v->node();
  if (n->kind() != c10::prim::GetAttr || n->input(0) != graph.inputs()[0]) return "";
  return n->s(c10::attr::name);
}

// The submodules `graph` (a method of their parent) calls forward on: the call's node by
// attribute name.
std::map<std::string, const Node*> forward_calls(const torch::jit::Graph& graph) {
  std::map<std::string, const Node*> calls;
  for (const Node* n : graph.nodes())
    if (n->kind() == c10::prim::CallMethod && n->s(c10::attr::name) == "forward")
      if (const std::string child = self_attribute(n->input(0), graph); !child.empty()) calls.emplace(child, n);
  return calls;
}

// Whether a method of `type` still reads attribute `name` of its self.
bool reads_attribute(const c10::ClassType& type, const std::string& name) {
  for (torch::jit::Function* method : type.methods()) {
    const auto graph = torch::jit::toGraphFunction(*method).graph();
    bool reads = false;
    for_each_node(graph->block(), [&](const Node* n) {
      reads |= n->kind() == c10::prim::GetAttr && self_attribute(n->output(), *graph) == name;
    });
    if (reads) return true;
  }
  return false;
}

std::string join(const std::string& parent, const std::string& child) {
  return parent.empty() ? child : parent + "." + child;
}

}  // namespace

torch::jit::Module fold_batchnorm(const torch::jit::Module& module, std::vector<Fold>& folds) {
  // The candidates: a BatchNorm called on what a Conv call returned, in the forward of
  // their parent.
  struct Pair {
    std::string parent, conv, batchnorm;
  };
  std::vector<Pair> pairs;
  for (const auto& m : module.named_modules()) {
    const auto forward = m.value.find_method("forward");
    if (!forward) continue;
    const auto graph = forward->graph();
    for (const auto& [child, call] : forward_calls(*graph)) {
      if (m.value.attr(child).toModule().type()->name()->name().find("BatchNorm") == std::string::npos) continue;
      const Node* producer = call->input(1)->node();
      if (producer->kind() != c10::prim::CallMethod) continue;
      const std::string conv = self_attribute(producer->input(0), *graph);
      if (!conv.empty()) pairs.push_back({m.name, conv, child});
    }
  }
  if (pairs.empty()) return module;
  torch::jit::Module folded = torch::jit::FoldConvBatchNorm(module);
  // Those whose BatchNorm call left the graph were folded: the module goes too, from
  // every instance of the parent's type (they share the graph).
  std::map<c10::ClassTypePtr, std::set<std::string>> dead;
  std::map<std::string, torch::jit::Module> by_path;
  for (const auto& m : folded.named_modules()) by_path.emplace(m.name, m.value);
  for (const Pair& p : pairs) {
    const torch::jit::Module& parent = by_path.at(p.parent);
    if (forward_calls(*parent.get_method("forward").graph()).count(p.batchnorm)) continue;
    folds.push_back({join(p.parent, p.conv), join(p.parent, p.batchnorm)});
    if (!reads_attribute(*parent.type(), p.batchnorm)) dead[parent.type()].insert(p.batchnorm);
  }
  for (const auto& [type, names] : dead) {
    std::vector<size_t> slots;  // last first: removing one moves those after it
    for (const std::string& name : names) slots.push_back(type->getAttributeSlot(name));
    std::sort(slots.rbegin(), slots.rend());
    for (const auto& [path, m] : by_path)
      if (m.type() == type)
        for (const size_t slot : slots) m._ivalue()->unsafeRemoveSlot(slot);
    for (const size_t slot : slots) type->unsafeRemoveAttribute(type->getAttributeName(slot));
  }
  return folded;
}

}  // namespace mq::pt
