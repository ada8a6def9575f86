#pragma once
// BatchNorm folded into the convolution before it, as PyTorch's fusion does before
// static quantization (torch.ao's fuse_modules; torch::jit::FoldConvBatchNorm for
// TorchScript): the Conv's weight and bias absorb the BatchNorm's scale and shift, the
// BatchNorm's call leaves the graph and its module leaves the model. Exact in eval mode
// up to float rounding, and the quantized Conv then sees the values the next layer
// reads.

#include <torch/script.h>

#include <string>
#include <vector>

namespace mq::pt {

struct Fold {
  std::string conv, batchnorm;  // submodule paths
};

// `module` with each Conv2d -> BatchNorm2d pair folded (the BatchNorm reading the
// Conv's output alone, both the caller's attributes); `folds` names them. The pairs
// LibTorch 1.13 does not fold (Conv1d -> BatchNorm1d) stay as they are.
torch::jit::Module fold_batchnorm(const torch::jit::Module& module, std::vector<Fold>& folds);

}  // namespace mq::pt
