#include "torchscript_writer.hpp"

#include <ATen/ATen.h>
#include <ATen/quantized/Quantizer.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "mq/error.hpp"
#include "recurrent.hpp"
#include "static_graph.hpp"

namespace mq::pt {
namespace {

// The int8 kernels PyTorch has for a layer kind: how its weight is packed and the op
// that runs it. Our modules are named after them: StaticQuantizedConv2d etc.
struct Kernel {
  mq::LayerKind kind;
  const char* name;
  const char* prepack;
  const char* unpack;
  const char* op;          // static: quantized input to quantized output ("_relu": fused)
  const char* dynamic_op;  // float in, float out; none for Conv: LibTorch 1.13's
                           // conv2d_dynamic clips its output to the input's range
};
constexpr Kernel kKernels[] = {
    {mq::LayerKind::kLinear, "Linear", "quantized::linear_prepack", "quantized::linear_unpack", "linear",
     "linear_dynamic"},
    {mq::LayerKind::kConv1d, "Conv1d", "quantized::conv1d_prepack", "quantized::conv1d_unpack", "conv1d", nullptr},
    {mq::LayerKind::kConv2d, "Conv2d", "quantized::conv2d_prepack", "quantized::conv2d_unpack", "conv2d", nullptr},
};
constexpr const char* kStaticPrefix = "StaticQuantized";
constexpr const char* kDynamicPrefix = "DynamicQuantized";

std::string layer_of(const std::string& tensor) {
  return tensor.size() > 7 && tensor.compare(tensor.size() - 7, 7, ".weight") == 0
             ? tensor.substr(0, tensor.size() - 7) : "";
}

// Keeps `rows` in float for reason `why` (nothing when it is empty).
void keep_float(const std::vector<mq::PlanRow*>& rows, const std::string& why) {
  if (why.empty()) return;
  for (mq::PlanRow* row : rows) {
    row->rule += "; kept in float: " + why;
    row->spec.reset();
    row->bytes_after = row->bytes_before;
  }
}

// What code outside a recurrent layer uses of it that its quantized module lacks, or "".
std::string beyond_recurrent(const OutsideUses& uses) {
  if (uses.escapes) return "other code passes the module itself around";
  for (const std::string& m : uses.methods)
    if (m != "forward" && m != "forward__0") return "other code calls its method '" + m + "' (a PackedSequence input?)";
  for (const std::string& a : uses.attributes)
    if (a != "training") return "other code reads its '" + a + "'";
  return "";
}

// What code outside a layer uses of it that its quantized module lacks, or "".
std::string beyond_replacement(const Kernel& kernel, const OutsideUses& uses) {
  if (uses.escapes) return "TorchScript code passes the module itself around";
  for (const std::string& m : uses.methods)
    if (m != "forward") return "TorchScript code calls its method '" + m + "'";
  std::string read;
  for (const std::string& a : uses.attributes)
    if (a != "training" && (kernel.kind != mq::LayerKind::kLinear || (a != "in_features" && a != "out_features")))
      read += (read.empty() ? "'" : ", '") + a + "'";
  return read.empty() ? "" : "TorchScript code reads its " + read;
}

// A Conv module's stride, padding, dilation and groups (the constants TorchScript keeps
// for nn.Conv1d/Conv2d), appended to `args` as quantized::conv*_prepack takes them.
void conv_geometry(const torch::jit::Module& conv, const std::string& layer,
                          const std::vector<int64_t>& weight_shape, std::vector<c10::IValue>& args) {
  const auto refuse = [&](const std::string& why) {
    throw mq::RecipeError("Conv layer '" + layer + "': " + why + "; write it with the safetensors format");
  };
  const auto constant = [&](const char* name) {
    if (!conv.type()->hasConstant(name))
      refuse(std::string("its module does not record its ") + name + " (a traced model?)");
    return conv.type()->getConstant(name);
  };
  const auto ints = [](const c10::IValue& v) {
    return c10::fmap(v.toTupleRef().elements(), [](const c10::IValue& i) { return i.toInt(); });
  };
  if (constant("padding_mode").toStringRef() != "zeros")
    refuse("PyTorch's quantized Conv pads with zeros only, not '" + constant("padding_mode").toStringRef() + "'");
  const std::vector<int64_t> dilation = ints(constant("dilation"));
  std::vector<int64_t> padding;
  if (const c10::IValue p = constant("padding"); p.isString()) {  // 'valid' or 'same'
    for (size_t i = 0; i < dilation.size(); ++i) {
      const int64_t total = p.toStringRef() == "valid" ? 0 : dilation[i] * (weight_shape.at(2 + i) - 1);
      if (total % 2) refuse("padding 'same' pads this kernel unevenly, which PyTorch's quantized Conv cannot");
      padding.push_back(total / 2);
    }
  } else {
    padding = ints(p);
  }
  args.insert(args.end(), {ints(constant("stride")), padding, dilation, constant("groups").toInt()});
}

const Kernel* kernel_for(mq::LayerKind kind) {
  for (const Kernel& k : kKernels)
    if (k.kind == kind) return &k;
  return nullptr;
}

// Whether PyTorch's int8 kernels take a weight of `s`.
bool runs_int8(const mq::QuantSpec& s) {
  return s.dtype == mq::DType::kInt8 && s.scheme == mq::Scheme::kSymmetric &&
         s.granularity != mq::Granularity::kPerGroup && (s.granularity != mq::Granularity::kPerChannel || s.axis == 0);
}

[[noreturn]] void refuse_torchscript(const std::string& tensor, const mq::QuantSpec& s) {
  throw mq::RecipeError("tensor '" + tensor + "' (" + s.to_string() + "): TorchScript output runs "
                        "PyTorch's int8 kernels for symmetric int8 weights (per channel: of output "
                        "channels) of Linear layers, and of Conv1d/Conv2d layers in a static recipe "
                        "(LibTorch 1.13's dynamic Conv clips its output); write other layers or "
                        "dtypes with the safetensors format");
}

// The recurrent layers of `m` whose weights `model` quantized, replaced by modules that
// run PyTorch's dynamic int8 kernels; returns those weights' names.
std::set<std::string> write_recurrent(const mq::QuantizedModel& model, torch::jit::Module& m) {
  std::set<std::string> written;
  const std::map<std::string, OutsideUses> uses = outside_uses(m);
  std::vector<std::pair<std::string, torch::jit::Module>> modules;
  for (const auto& nm : m.named_modules())
    if (!nm.name.empty() && mq::is_recurrent(layer_kind(nm.value))) modules.emplace_back(nm.name, nm.value);
  for (const auto& [name, module] : modules) {
    std::map<std::string, at::Tensor> weights;
    for (const auto& [weight, bias] : recurrent_weights(module)) {
      const mq::QuantizedEntry* e = model.find(name + "." + weight);
      if (!e || !e->quantized) continue;
      if (!runs_int8(e->quantized->spec)) refuse_torchscript(e->name, e->quantized->spec);
      weights[weight] = to_torch(*e->quantized);
      written.insert(e->name);
    }
    if (weights.empty()) continue;
    const auto u = uses.find(name);
    const torch::jit::Module q = quantized_recurrent(m, module, layer_kind(module), weights,
                                                             u == uses.end() ? std::set<std::string>() : u->second.methods);
    replace_submodule(m, name, q);
  }
  return written;
}

}  // namespace

at::Tensor to_torch(const mq::QuantizedTensor& q) {
  const at::Tensor data = q.data.contiguous();
  const at::TensorOptions options(data.scalar_type() == at::kChar ? at::kQInt8 : at::kQUInt8);
  auto keep = [data](void*) {};  // the integers live as long as the quantized tensor
  if (q.spec.granularity == mq::Granularity::kPerChannel)
    return at::from_blob_quantized_per_channel_affine(
        data.data_ptr(), q.shape, keep, q.qparams.scale.reshape(-1).to(at::kDouble),
        q.qparams.zero_point.reshape(-1).to(at::kLong), q.spec.axis, options);
  return at::from_blob_quantized_per_tensor_affine(data.data_ptr(), q.shape, keep, q.qparams.scale.item<float>(),
                                                   q.qparams.zero_point.item<int64_t>(), options);
}

bool is_quantized_module(const torch::jit::Module& m) {
  const auto type = m.type()->name();
  return type && (type->name().rfind(kStaticPrefix, 0) == 0 || type->name().rfind(kDynamicPrefix, 0) == 0);
}


std::optional<UnpackedLayer> unpack_quantized_module(const torch::jit::Module& m) {
  const auto type = m.type()->name();
  if (!type) return std::nullopt;
  for (const Kernel& k : kKernels)
    for (const char* prefix : {kStaticPrefix, kDynamicPrefix})
      if (type->name().rfind(prefix + std::string(k.name), 0) == 0) {
        const auto elements = call_op(k.unpack, {m.attr("_packed_params")});
        return UnpackedLayer{elements[0].toTensor(), elements[1].isNone() ? at::Tensor() : elements[1].toTensor(),
                             prefix == std::string(kStaticPrefix)};
      }
  return std::nullopt;
}

void check_torchscript_plan(const TorchScriptModel& script_model, const Model& source, std::vector<PlanRow>& plan) {
  const TorchScriptModel* script = &script_model;
  std::map<std::string, const mq::Layer*> by_weight;
  for (const mq::Layer& l : source.layers) by_weight.emplace(l.weight, &l);
  const std::map<std::string, OutsideUses> uses = outside_uses(script->module());
  std::map<std::string, std::vector<mq::PlanRow*>> recurrent;  // by layer: its weights' rows
  for (mq::PlanRow& row : plan) {
    const auto found = by_weight.find(row.tensor);
    const mq::Layer* layer = found == by_weight.end() ? nullptr : found->second;
    if (layer && mq::is_recurrent(layer->kind)) {
      recurrent[layer->name].push_back(&row);
      continue;
    }
    if (!row.spec) continue;
    const Kernel* kernel = layer ? kernel_for(layer->kind) : nullptr;
    if (!kernel || !runs_int8(*row.spec)) refuse_torchscript(row.tensor, *row.spec);
    if (const auto u = uses.find(layer->name); u != uses.end())
      keep_float({&row}, beyond_replacement(*kernel, u->second));
  }
  for (const auto& [layer, rows] : recurrent) {
    const auto planned = std::count_if(rows.begin(), rows.end(), [](const mq::PlanRow* r) { return r->spec.has_value(); });
    if (planned == 0) continue;
    for (const mq::PlanRow* r : rows)
      if (!r->spec || !runs_int8(*r->spec))
        throw mq::RecipeError("recurrent layer '" + layer + "': TorchScript output runs PyTorch's dynamic int8 "
                              "kernels on all its weights together, as symmetric int8; '" + r->tensor + "' is " +
                              (r->spec ? r->spec->to_string() : "kept in float") +
                              " (select or exclude the layer whole, or write it with the safetensors format)");
    torch::jit::Module module = script->module();
    std::stringstream path(layer);
    for (std::string part; std::getline(path, part, '.');) module = module.attr(part).toModule();
    std::string why = recurrent_unsupported(module, layer_kind(module));
    if (const auto u = uses.find(layer); why.empty() && u != uses.end()) why = beyond_recurrent(u->second);
    keep_float(rows, why.empty() ? why : "TorchScript: " + why);
  }
}


torch::jit::Module quantized_torchscript(const QuantizedModel& model, const TorchScriptModel& source) {
  torch::jit::Module m = source.copy();
  use_onednn();
  const std::set<std::string> recurrent = write_recurrent(model, m);
  for (const auto& e : model.entries) {
    if (!e.quantized || recurrent.count(e.name)) continue;
    const std::string layer = layer_of(e.name);
    const mq::QuantSpec& s = e.quantized->spec;
    std::optional<torch::jit::Module> sub;
    for (const auto& nm : m.named_modules())
      if (nm.name == layer) sub = nm.value;
    const Kernel* kernel = kernel_for(sub ? layer_kind(*sub) : mq::LayerKind::kOther);
    const auto input = model.activation_qparams.find(layer);
    const auto output = model.output_qparams.find(layer);
    const bool static_layer = input != model.activation_qparams.end() && output != model.output_qparams.end();
    if (!kernel || (!static_layer && !kernel->dynamic_op) || !runs_int8(s)) refuse_torchscript(e.name, s);
    const mq::LayerKind kind = kernel->kind;
    const mq::QuantizedEntry* bias_entry = model.find(layer + ".bias");
    const c10::IValue bias = bias_entry ? c10::IValue(bias_entry->tensor) : c10::IValue();
    std::vector<c10::IValue> pack_args{to_torch(*e.quantized), bias};
    if (kind != mq::LayerKind::kLinear) conv_geometry(*sub, layer, e.quantized->shape, pack_args);
    const c10::IValue packed = call_op(kernel->prepack, std::move(pack_args)).at(0);
    torch::jit::Module q =
        new_module(m, std::string(static_layer ? kStaticPrefix : kDynamicPrefix) + kernel->name);
    q.register_attribute("_packed_params", packed.type(), packed);
    if (kind == mq::LayerKind::kLinear) {
      q.register_attribute("in_features", c10::IntType::get(), e.quantized->shape.at(1));
      q.register_attribute("out_features", c10::IntType::get(), e.quantized->shape.at(0));
    }
    if (static_layer) {
      // The input quantized with the calibrated qparams as quint8 (an int8 zero point
      // moves by 128: the same integers, shifted), the kernel to the calibrated
      // output qparams, and back to float for the float layers around it.
      const int64_t shift = model.activation_spec->qmin() < 0 ? 128 : 0;
      q.register_attribute("input_scale", c10::FloatType::get(), input->second.scale.item<double>());
      q.register_attribute("input_zero_point", c10::IntType::get(), input->second.zero_point.item<int64_t>() + shift);
      q.register_attribute("output_scale", c10::FloatType::get(), output->second.scale.item<double>());
      q.register_attribute("output_zero_point", c10::IntType::get(), output->second.zero_point.item<int64_t>());
      // For the kernel with a following ReLU fused (chain_static_layers).
      const auto relu = model.relu_output_qparams.find(layer);
      const mq::QParams& relu_output = relu != model.relu_output_qparams.end() ? relu->second : output->second;
      q.register_attribute("relu_output_scale", c10::FloatType::get(), relu_output.scale.item<double>());
      q.register_attribute("relu_output_zero_point", c10::IntType::get(), relu_output.zero_point.item<int64_t>());
      define(q, std::string("def forward(self, x: Tensor) -> Tensor:\n"  // dtype 13: torch.quint8
                                    "    qx = torch.quantize_per_tensor(x, self.input_scale, self.input_zero_point, 13)\n"
                                    "    qy = quantized.") + kernel->op + "(qx, self._packed_params, self.output_scale,\n"
                                    "                          self.output_zero_point)\n"
                                    "    return qy.dequantize()\n");
    } else {
      // LibTorch 1.13's onednn linear_dynamic keeps a primitive for the input shape of
      // its first call, and that primitive takes the input's zero point at run time,
      // summing the weights again on every call (half the time at batch 64, measured:
      // docs/PERFORMANCE.md): the first call is a dummy of kPrimeRows rows made where the
      // module is loaded (__setstate__: also when it is saved again after it ran), so the
      // calls that matter take the other path, which builds a primitive for their
      // qparams. That path caches primitives without their zero point (intel/ideep#152):
      // two inputs of the same scale and different zero points share one, and the
      // second's output is noise. So every call has zero point 0: a negative input is
      // shifted to start at 0 (the same range: the same scale), and W * shift is added
      // back from the weights' row sums (dequantized, as the kernel sees them).
      constexpr int kPrimeRows = 97;
      const mq::QuantizedTensor& w = *e.quantized;
      const at::Tensor row_sums =
          (w.data.sum(1, false, at::kLong).to(at::kDouble) * w.qparams.scale.reshape(-1).to(at::kDouble)).to(at::kFloat);
      q.register_attribute("weight_row_sums", c10::TensorType::get(), row_sums);
      q.register_attribute("training", c10::BoolType::get(), false);
      const std::string op = std::string("quantized.") + kernel->dynamic_op;
      define(q, "def __getstate__(self):\n"
                        "    return (self._packed_params, self.in_features, self.out_features, self.weight_row_sums,\n"
                        "            self.training)\n"
                        "def __setstate__(self, state: Tuple[__torch__.torch.classes.quantized.LinearPackedParamsBase,\n"
                        "                                    int, int, Tensor, bool]):\n"
                        "    self._packed_params = state[0]\n"
                        "    self.in_features = state[1]\n"
                        "    self.out_features = state[2]\n"
                        "    self.weight_row_sums = state[3]\n"
                        "    self.training = state[4]\n"
                        "    dummy = torch.zeros([" + std::to_string(kPrimeRows) + ", self.in_features])\n"
                        "    primed = " + op + "(dummy, self._packed_params, False)\n"
                        "    assert primed.size(1) == self.out_features\n"  // used, so not compiled away
                        "def forward(self, x: Tensor) -> Tensor:\n"
                        "    if x.numel() > 0:\n"
                        "        low = float(torch.min(x))\n"
                        "        if low < 0.0:\n"
                        "            return " + op + "(x - low, self._packed_params, False).add_(self.weight_row_sums, alpha=low)\n"
                        "    return " + op + "(x, self._packed_params, False)\n");
    }
    replace_submodule(m, layer, q);
  }
  if (!model.output_qparams.empty()) {
    m = reload(m);  // the graphs compiled before the swap call the float layers
    chain_static_layers(m);
  }
  return m;
}

}  // namespace mq::pt
