#pragma once
// TorchScript output: a copy of the source module with each quantized layer replaced by
// a module of our own that runs PyTorch's int8 kernels (dynamic, or static between its
// calibrated input and output qparams), recurrent layers by PyTorch's quantized LSTM/GRU
// (recurrent.hpp), and static layers chained (static_graph.hpp).

#include <torch/script.h>

#include <optional>
#include <vector>

#include "mq/format.hpp"
#include "mq/quantized_model.hpp"
#include "torchscript_model.hpp"

namespace mq::pt {

// What TorchScript output refuses in `plan` whatever the calibration (a dynamic Conv,
// a dtype PyTorch's kernels do not take, part of a recurrent layer; a static layer that
// calibration never reached is refused only when written), and the rows it keeps in
// float: a layer whose module other code uses beyond what its replacement offers
// (TransformerEncoderLayer reads linear1.weight, MultiheadAttention its out_proj's),
// as PyTorch keeps it.
void check_torchscript_plan(const TorchScriptModel& script, const Model& source, std::vector<PlanRow>& plan);

// `source`'s module with `model`'s quantized layers swapped in, ready to save.
torch::jit::Module quantized_torchscript(const QuantizedModel& model, const TorchScriptModel& source);

// Whether `m` is one of the modules quantized_torchscript() puts in.
bool is_quantized_module(const torch::jit::Module& m);

// What one of the Linear and Conv modules quantized_torchscript() puts in holds: its
// weight (a PyTorch quantized tensor) and bias (undefined when none); nothing for any
// other module. Their qparams are attributes of the module (input_scale, ...).
struct UnpackedLayer {
  at::Tensor weight, bias;
  bool is_static = false;
};
std::optional<UnpackedLayer> unpack_quantized_module(const torch::jit::Module& m);

// A native PyTorch quantized tensor holding exactly `q`'s integers (shared, not copied:
// a large model's state dict would be held twice) and qparams.
at::Tensor to_torch(const QuantizedTensor& q);

}  // namespace mq::pt
