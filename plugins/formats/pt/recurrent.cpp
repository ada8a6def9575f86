#include "recurrent.hpp"

#include <ATen/ATen.h>

#include "mq/error.hpp"
#include "torchscript_model.hpp"

namespace mq::pt {
namespace {

// A setting of an nn.LSTM, GRU or cell: TorchScript keeps their __constants__ on the type.
c10::IValue setting(const torch::jit::Module& m, const char* name) {
  if (m.type()->hasConstant(name)) return m.type()->getConstant(name);
  if (m.hasattr(name)) return m.attr(name);
  throw PluginError(std::string("a recurrent module without its '") + name + "'");
}

std::string literal(bool b) { return b ? "True" : "False"; }

// The bias of `weight` ("weight_ih_l0" -> "bias_ih_l0"), zeros where the module has none
// (the kernels take a bias; adding zeros changes nothing).
at::Tensor bias_of(const torch::jit::Module& m, const std::string& weight, int64_t rows) {
  const std::string name = "bias" + weight.substr(6);
  return m.hasattr(name) && m.attr(name).isTensor() ? m.attr(name).toTensor().detach().to(at::kFloat)
                                                     : at::zeros({rows});
}

c10::IValue prepack(const at::Tensor& weight, const at::Tensor& bias) {
  return call_op("quantized::linear_prepack", {weight, bias}).at(0);
}

// The source of a recurrent module's methods: each of `methods` with the Tensor
// overload's signature, batched (3-D, or 2-D for a cell) and unbatched inputs alike.
std::string source(LayerKind kind, const std::set<std::string>& methods, const torch::jit::Module& m) {
  const bool cell = kind == LayerKind::kLSTMCell || kind == LayerKind::kGRUCell;
  const bool lstm = kind == LayerKind::kLSTM || kind == LayerKind::kLSTMCell;
  const std::string hidden = std::to_string(setting(m, "hidden_size").toInt());
  std::string body;
  if (cell) {
    body = "    batched = input.dim() == 2\n"
           "    x = input if batched else input.unsqueeze(0)\n";
    if (lstm)
      body += "    if hx is None:\n"
              "        h0 = torch.zeros([x.size(0), " + hidden + "], dtype=x.dtype, device=x.device)\n"
              "        c0 = h0\n"
              "    else:\n"
              "        h0, c0 = hx\n"
              "        if not batched:\n"
              "            h0 = h0.unsqueeze(0)\n"
              "            c0 = c0.unsqueeze(0)\n"
              "    h, c = quantized.quantized_lstm_cell_dynamic(x, [h0, c0], self._packed_ih, self._packed_hh,\n"
              "                                                  self.bias_ih, self.bias_hh)\n"
              "    if not batched:\n"
              "        return h.squeeze(0), c.squeeze(0)\n"
              "    return h, c\n";
    else
      body += "    if hx is None:\n"
              "        h0 = torch.zeros([x.size(0), " + hidden + "], dtype=x.dtype, device=x.device)\n"
              "    else:\n"
              "        h0 = hx if batched else hx.unsqueeze(0)\n"
              "    h = quantized.quantized_gru_cell_dynamic(x, h0, self._packed_ih, self._packed_hh, self.bias_ih,\n"
              "                                             self.bias_hh)\n"
              "    return h if batched else h.squeeze(0)\n";
  } else {
    const bool batch_first = setting(m, "batch_first").toBool();
    const bool bidirectional = setting(m, "bidirectional").toBool();
    const int64_t layers = setting(m, "num_layers").toInt();
    const std::string batch_dim = batch_first ? "0" : "1";
    const std::string states = std::to_string(layers * (bidirectional ? 2 : 1));
    const std::string flags = std::to_string(layers) + ", " + std::to_string(setting(m, "dropout").toDouble()) +
                              ", False, " + literal(bidirectional) + ", " + literal(batch_first);
    body = "    batched = input.dim() == 3\n"
           "    x = input if batched else input.unsqueeze(" + batch_dim + ")\n";
    if (lstm)
      body += "    if hx is None:\n"
              "        h0 = torch.zeros([" + states + ", x.size(" + batch_dim + "), " + hidden + "], dtype=x.dtype, device=x.device)\n"
              "        c0 = h0\n"
              "    else:\n"
              "        h0, c0 = hx\n"
              "        if not batched:\n"
              "            h0 = h0.unsqueeze(1)\n"
              "            c0 = c0.unsqueeze(1)\n"
              "    out, h, c = torch.quantized_lstm(x, [h0, c0], self._all_params, True, " + flags + ",\n"
              "                                     dtype=12, use_dynamic=True)\n"  // 12: torch.qint8
              "    if not batched:\n"
              "        return out.squeeze(" + batch_dim + "), (h.squeeze(1), c.squeeze(1))\n"
              "    return out, (h, c)\n";
    else
      body += "    if hx is None:\n"
              "        h0 = torch.zeros([" + states + ", x.size(" + batch_dim + "), " + hidden + "], dtype=x.dtype, device=x.device)\n"
              "    else:\n"
              "        h0 = hx if batched else hx.unsqueeze(1)\n"
              "    out, h = torch.quantized_gru(x, h0, self._all_params, True, " + flags + ")\n"
              "    if not batched:\n"
              "        return out.squeeze(" + batch_dim + "), h.squeeze(1)\n"
              "    return out, h\n";
  }
  const std::string state = lstm ? "Optional[Tuple[Tensor, Tensor]]" : "Optional[Tensor]";
  const std::string result = cell ? (lstm ? "Tuple[Tensor, Tensor]" : "Tensor")
                                  : (lstm ? "Tuple[Tensor, Tuple[Tensor, Tensor]]" : "Tuple[Tensor, Tensor]");
  // `forward` too: a Python user can call the layer itself, which the scripted float
  // layer (forward__0 and forward__1 only) does not allow.
  std::set<std::string> names = methods;
  names.insert("forward");
  std::string out;
  for (const std::string& name : names)
    out += "def " + name + "(self, input: Tensor, hx: " + state + " = None) -> " + result + ":\n" + body;
  return out;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> recurrent_weights(const torch::jit::Module& module) {
  std::set<std::string> names;
  for (const auto& p : module.named_parameters(false)) names.insert(p.name);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& p : module.named_parameters(false)) {
    if (p.name.rfind("weight_", 0) != 0) continue;
    const std::string bias = "bias" + p.name.substr(6);
    out.emplace_back(p.name, names.count(bias) ? bias : "");
  }
  return out;
}

std::string recurrent_unsupported(const torch::jit::Module& module, LayerKind kind) {
  if (kind == LayerKind::kLSTM && setting(module, "proj_size").toInt() > 0)
    return "it has a proj_size, which PyTorch's quantized LSTM lacks";
  for (const auto& p : module.named_parameters(false))
    if (p.value.scalar_type() != at::kFloat) return "its parameters are not float32";
  return "";
}

torch::jit::Module quantized_recurrent(torch::jit::Module& root, const torch::jit::Module& module, LayerKind kind,
                                       const std::map<std::string, at::Tensor>& weights,
                                       const std::set<std::string>& methods) {
  torch::jit::Module q = new_module(root, std::string(kRecurrentPrefix) + to_string(kind));
  std::vector<std::string> names;
  for (const auto& p : module.named_parameters(false)) names.push_back(p.name);
  q.register_attribute("_param_names", c10::ListType::ofStrings(), c10::List<std::string>(names));
  q.register_attribute("training", c10::BoolType::get(), false);
  const auto packed = [&](const std::string& weight) {
    const at::Tensor& w = weights.at(weight);
    const at::Tensor bias = bias_of(module, weight, w.size(0));
    return std::make_pair(prepack(w, bias), bias);
  };
  if (kind == LayerKind::kLSTMCell || kind == LayerKind::kGRUCell) {
    const auto [ih, bias_ih] = packed("weight_ih");
    const auto [hh, bias_hh] = packed("weight_hh");
    q.register_attribute("_packed_ih", ih.type(), ih);
    q.register_attribute("_packed_hh", hh.type(), hh);
    q.register_attribute("bias_ih", c10::TensorType::get(), bias_ih);
    q.register_attribute("bias_hh", c10::TensorType::get(), bias_hh);
  } else {
    // One CellParamsBase a layer and direction, in that order, as torch.ao builds them.
    std::vector<c10::IValue> cells;
    const int64_t layers = setting(module, "num_layers").toInt();
    const int directions = setting(module, "bidirectional").toBool() ? 2 : 1;
    for (int64_t l = 0; l < layers; ++l)
      for (int d = 0; d < directions; ++d) {
        const std::string suffix = "_l" + std::to_string(l) + (d ? "_reverse" : "");
        const auto [ih, bias_ih] = packed("weight_ih" + suffix);
        const auto [hh, bias_hh] = packed("weight_hh" + suffix);
        cells.push_back(
            call_op("quantized::make_quantized_cell_params_dynamic", {ih, hh, bias_ih, bias_hh, false}).at(0));
      }
    c10::impl::GenericList list(cells.front().type());
    for (const c10::IValue& c : cells) list.push_back(c);
    q.register_attribute("_all_params", c10::ListType::create(cells.front().type()), list);
  }
  define(q, source(kind, methods, module));
  return q;
}

std::vector<std::pair<std::string, at::Tensor>> unpack_recurrent(const torch::jit::Module& module) {
  const auto type = module.type()->name();
  if (!type || type->name().rfind(kRecurrentPrefix, 0) != 0 || !module.hasattr("_param_names")) return {};
  // Every weight by its parameter name, and its bias, packed with it ("_ih_l0" -> the
  // packed weight_ih_l0 and bias_ih_l0).
  std::map<std::string, at::Tensor> params;
  const auto add = [&](const c10::IValue& packed, const std::string& suffix) {
    const std::vector<c10::IValue> wb = call_op("quantized::linear_unpack", {packed});
    params["weight" + suffix] = wb.at(0).toTensor();
    if (!wb.at(1).isNone()) params["bias" + suffix] = wb.at(1).toTensor();
  };
  const c10::List<c10::IValue> names = module.attr("_param_names").toList();
  if (module.hasattr("_all_params")) {
    // A CellParamsBase per layer and direction, in the order of the weight_ih names.
    const c10::List<c10::IValue> cells = module.attr("_all_params").toList();
    size_t i = 0;
    for (const c10::IValue& name : names) {
      const std::string& n = name.toStringRef();
      if (n.rfind("weight_ih", 0) != 0) continue;
      if (i >= cells.size()) throw InputError("a quantized recurrent module with fewer cells than weights");
      torch::jit::Object cell(cells.get(i++).toObject());
      const c10::IValue state = cell.run_method("__getstate__");
      // (kind, biases, doubles, longs, [packed w_ih, packed w_hh])
      const c10::ArrayRef<c10::IValue> fields = state.toTupleRef().elements().asArrayRef();
      if (fields.size() != 5) throw InputError("a quantized recurrent cell of an unknown layout");
      const auto& packed = fields[4].toListRef();
      const std::string suffix = n.substr(9);  // "_l0", "_l0_reverse"
      add(packed.at(0), "_ih" + suffix);
      add(packed.at(1), "_hh" + suffix);
    }
  } else {
    add(module.attr("_packed_ih"), "_ih");
    add(module.attr("_packed_hh"), "_hh");
  }
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const c10::IValue& name : names) {
    const auto it = params.find(name.toStringRef());
    if (it == params.end()) throw InputError("a quantized recurrent module that does not hold its '" + name.toStringRef() + "'");
    out.emplace_back(it->first, it->second);
  }
  return out;
}

}  // namespace mq::pt
