#pragma once
// Recurrent layers (LSTM, GRU, LSTMCell, GRUCell) in TorchScript: the module replaced by
// one running PyTorch's dynamic int8 kernels (torch.quantized_lstm / quantized_gru, and
// quantized::quantized_lstm_cell_dynamic / gru_cell_dynamic for the cells), as
// torch.ao's quantize_dynamic does, and its parameters read back from it.

#include <torch/script.h>

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "mq/model.hpp"

namespace mq::pt {

// The module types quantized_recurrent() makes: "DynamicQuantizedLSTM", ...
inline constexpr const char* kRecurrentPrefix = "DynamicQuantized";

// A recurrent module's weights, each with its bias ("" when it has none), by parameter
// name (weight_ih_l0, weight_hh_l0, weight_ih_l0_reverse, ...; weight_ih, weight_hh for
// a cell), in parameter order.
std::vector<std::pair<std::string, std::string>> recurrent_weights(const torch::jit::Module& module);

// Why PyTorch's dynamic kernels cannot run `module` as it is (an LSTM with proj_size),
// or "".
std::string recurrent_unsupported(const torch::jit::Module& module, LayerKind kind);

// A module for `root`'s compilation unit that replaces `module`: the same computation on
// `weights` (native qint8 tensors by parameter name, every weight of the module), with
// the module's own biases, defining `forward` and each of `methods` (those that code
// outside calls: "forward__0", the Tensor overload TorchScript gives LSTM and GRU).
torch::jit::Module quantized_recurrent(torch::jit::Module& root, const torch::jit::Module& module, LayerKind kind,
                                       const std::map<std::string, at::Tensor>& weights,
                                       const std::set<std::string>& methods);

// The parameters of a module quantized_recurrent() made, as the original had them
// (weights as native quantized tensors, biases in float), in the original's order;
// empty for any other module.
std::vector<std::pair<std::string, at::Tensor>> unpack_recurrent(const torch::jit::Module& module);

}  // namespace mq::pt
