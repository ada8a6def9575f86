#pragma once
// The forward graph of a static TorchScript output, rewritten so that quantized tensors
// stay quantized between layers, as PyTorch's converted models do. Each static layer
// module quantizes its input, runs its kernel to its output qparams and dequantizes;
// after this pass:
// - a dequantize moves past the ops that run on quantized tensors (ReLU, max and
//   average pools, flatten, reshape) where nothing else reads the float value;
// - where a layer's quantized output reaches the next layer's quantize through such
//   ops alone, the layer writes the next layer's input qparams, and neither the
//   dequantize nor the quantize remains (one rounding instead of two);
// - a ReLU right after a kernel is fused into it (quantized::linear_relu, conv2d_relu);
// - what is dequantized is made contiguous first, as the float layers made it.
// A value used anywhere else keeps its float path.

#include <torch/script.h>

namespace mq::pt {

void chain_static_layers(torch::jit::Module& module);

}  // namespace mq::pt
