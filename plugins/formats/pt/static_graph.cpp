#include "static_graph.hpp"

#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/subgraph_rewrite.h>

#include <initializer_list>
#include <string>
#include <vector>

namespace mq::pt {
namespace {

using torch::jit::Node;
using torch::jit::Value;

// The static layers' kernels: quantized input, quantized output to (scale, zero point)
// given as their third and fourth inputs.
const char* const kKernels[] = {"quantized::linear", "quantized::conv1d", "quantized::conv2d"};

bool is_kernel(const Node* n) {
  for (const char* k : kKernels)
    for (const std::string& name : {std::string(k), std::string(k) + "_relu"})
      if (n->kind() == c10::Symbol::fromQualString(name)) return true;
  return false;
}

bool one_of(const Node* n, std::initializer_list<c10::Symbol> ops) {
  for (const c10::Symbol op : ops)
    if (n->kind() == op) return n->outputs().size() == 1;
  return false;
}

// Ops that PyTorch runs on a quantized tensor, keeping its qparams, with the result of
// quantizing their result on the float values: exactly (they select or move values,
// and clipping commutes with them), or within rounding (average pools). The tensor is
// their first input.
bool exact(const Node* n) {
  return one_of(n, {c10::aten::relu, c10::aten::relu_, c10::aten::max_pool1d, c10::aten::max_pool2d,
                    c10::aten::flatten, c10::aten::reshape});
}
bool keeps_qparams(const Node* n) {
  return exact(n) || one_of(n, {c10::aten::avg_pool2d, c10::aten::adaptive_avg_pool2d});
}

std::vector<Node*> nodes_of(torch::jit::Block* block, c10::Symbol kind) {
  std::vector<Node*> out;
  for (Node* n : block->nodes()) {
    if (n->kind() == kind) out.push_back(n);
    for (torch::jit::Block* b : n->blocks())
      for (Node* inner : nodes_of(b, kind)) out.push_back(inner);
  }
  return out;
}

// Moves dequantize past the ops that keep qparams, as far as it goes: a dequantized
// value read by one such op alone (and by size or dim queries, which read the quantized
// tensor as well) is dequantized after it instead. Quantized tensors are a quarter of
// the bytes, and PyTorch 1.13 dequantizes the channels-last outputs of quantized Conv
// slowly.
void sink_dequantize(torch::jit::Graph& graph) {
  for (bool moved = true; moved;) {
    moved = false;
    for (Node* dq : nodes_of(graph.block(), c10::aten::dequantize)) {
      Value* q = dq->input(0);
      Value* y = dq->output();
      for (const torch::jit::Use& use : std::vector<torch::jit::Use>(y->uses()))
        if (use.user->kind() == c10::aten::size || use.user->kind() == c10::aten::dim)
          use.user->replaceInput(use.offset, q);
      if (y->uses().size() != 1) continue;
      Node* op = y->uses()[0].user;
      if (!keeps_qparams(op) || y->uses()[0].offset != 0 || op->owningBlock() != dq->owningBlock() ||
          (op->kind() == c10::aten::relu_ && q->uses().size() != 1))
        continue;
      op->replaceInput(0, q);
      Node* after = graph.create(c10::aten::dequantize, {op->output()});
      after->insertAfter(op);
      op->output()->replaceAllUsesAfterNodeWith(after, after->output());
      dq->destroy();
      moved = true;
    }
  }
}

// Moves the nodes that compute `v` (attribute reads and constants only) before `before`;
// false when something else computes it.
bool hoist(Value* v, Node* before) {
  Node* n = v->node();
  if (n->kind() == c10::prim::Param || n->isBefore(before)) return true;
  if ((n->kind() != c10::prim::GetAttr && n->kind() != c10::prim::Constant) ||
      n->owningBlock() != before->owningBlock())
    return false;
  for (Value* input : n->inputs())
    if (!hoist(input, before)) return false;
  n->moveBefore(before);
  return true;
}

// quantize_per_tensor(dequantize(v)) to float qparams, where v comes from a static
// kernel through exact ops, each value read by the next alone: the kernel writes the
// quantize's qparams itself and both conversions go. Not through average pools: the
// next layer's range fits the averages, and an average of clipped values is not the
// clipped average.
void chain_kernels(torch::jit::Graph& graph) {
  for (Node* quantize : nodes_of(graph.block(), c10::aten::quantize_per_tensor)) {
    if (quantize->inputs().size() != 4 || quantize->input(1)->type()->kind() != c10::TypeKind::FloatType) continue;
    const auto dtype = torch::jit::toIValue(quantize->input(3));
    if (!dtype || *dtype != c10::IValue(13)) continue;  // torch.quint8
    Node* dq = quantize->input(0)->node();
    if (dq->kind() != c10::aten::dequantize || dq->output()->uses().size() != 1) continue;
    Value* v = dq->input(0);
    while (exact(v->node()) && v->uses().size() == 1) v = v->node()->input(0);
    Node* kernel = v->node();
    if (!is_kernel(kernel) || v->uses().size() != 1 || kernel->owningBlock() != quantize->owningBlock() ||
        !hoist(quantize->input(1), kernel) || !hoist(quantize->input(2), kernel))
      continue;
    kernel->replaceInput(2, quantize->input(1));
    kernel->replaceInput(3, quantize->input(2));
    quantize->output()->replaceAllUsesWith(dq->input(0));
    quantize->destroy();
    dq->destroy();
  }
}

// A kernel whose output goes to a ReLU alone writes the layer's qparams for its output
// through a ReLU (relu_output_scale) where it wrote its own output's, and runs with the
// ReLU fused (the same integers: quantizing is monotone and maps 0 to the zero point).
// conv1d keeps its ReLU op: LibTorch 1.13's quantized::conv1d_relu on onednn returns
// conv1d's output, the ReLU left out.
void fuse_relu(std::shared_ptr<torch::jit::Graph>& graph) {
  const auto pattern = [](const std::string& params, const std::string& body) {
    return "graph(%qx, %packed, " + params + "):\n" + body + "  return (%r)";
  };
  const auto attrs = [](const std::string& prefix) {
    return "  %scale : float = prim::GetAttr[name=\"" + prefix + "output_scale\"](%layer)\n"
           "  %zp : int = prim::GetAttr[name=\"" + prefix + "output_zero_point\"](%layer)\n";
  };
  torch::jit::SubgraphRewriter rewriter;
  for (const std::string kernel : kKernels)
    for (const std::string relu : {"aten::relu", "aten::relu_"}) {
      const std::string unfused = "  %qy = " + kernel + "(%qx, %packed, %scale, %zp)\n  %r = " + relu + "(%qy)\n";
      const std::string fused =
          kernel == "quantized::conv1d" ? unfused : "  %r = " + kernel + "_relu(%qx, %packed, %scale, %zp)\n";
      rewriter.RegisterRewritePattern(pattern("%layer", attrs("") + unfused), pattern("%layer", attrs("relu_") + fused));
      if (fused != unfused) rewriter.RegisterRewritePattern(pattern("%scale, %zp", unfused), pattern("%scale, %zp", fused));
    }
  rewriter.runOnGraph(graph);
}

// PyTorch's quantized Conv writes channels-last tensors, which dequantize keeps: the
// float layers after it would get strides the float model never gave them (x.view()
// fails on them). Each dequantize reads a contiguous tensor (a no-op for one already).
void dequantize_contiguous(torch::jit::Graph& graph) {
  for (Node* dq : nodes_of(graph.block(), c10::aten::dequantize)) {
    torch::jit::WithInsertPoint here(dq);
    dq->replaceInput(0, graph.insert(c10::aten::contiguous, {dq->input(0)}));
  }
}

}  // namespace

void chain_static_layers(torch::jit::Module& module) {
  std::shared_ptr<torch::jit::Graph> graph = module.get_method("forward").graph();
  torch::jit::Inline(*graph);
  sink_dequantize(*graph);
  chain_kernels(*graph);
  fuse_relu(graph);
  dequantize_contiguous(*graph);
  torch::jit::EliminateDeadCode(graph);
}

}  // namespace mq::pt
