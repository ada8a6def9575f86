#include <ATen/ATen.h>

#include "mq/architecture.hpp"
#include "mq/error.hpp"

namespace mq {

TensorRunnable::TensorRunnable(const Model& model) {
  for (const NamedTensor& t : model.tensors) tensors_.emplace(t.name, t.tensor);
}

at::Tensor TensorRunnable::forward(const at::Tensor& input) { return run(input, nullptr); }

at::Tensor TensorRunnable::forward_with(const at::Tensor& input, const std::map<std::string, at::Tensor>& weights) {
  for (const auto& [name, w] : weights)
    if (tensor(name).sizes() != w.sizes())
      throw InputError("'" + name + "' replaced by a tensor of shape " + c10::str(w.sizes()) + ", not " +
                       c10::str(tensor(name).sizes()));
  replaced_ = &weights;
  struct Restore {
    const std::map<std::string, at::Tensor>*& p;
    ~Restore() { p = nullptr; }
  } restore{replaced_};
  return run(input, nullptr);
}

bool TensorRunnable::quantize_inputs(const std::map<std::string, InputQuantization>& layers) {
  quantized_inputs_ = layers;
  return true;
}

void TensorRunnable::record_layers(const std::vector<at::Tensor>& batches, const std::vector<std::string>& layers,
                                   const ActivityVisitor& visit) {
  const std::set<std::string> wanted(layers.begin(), layers.end());
  for (size_t b = 0; b < batches.size(); ++b) {
    std::map<std::string, Activity> seen;
    Recording r{wanted, seen};
    run(batches[b], &r);
    visit(b, seen);
  }
}

const at::Tensor& TensorRunnable::tensor(const std::string& name) const {
  if (replaced_)
    if (const auto r = replaced_->find(name); r != replaced_->end()) return r->second;
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) throw InputError("the model has no '" + name + "', which its config.json implies");
  return it->second;
}

at::Tensor TensorRunnable::f32(const std::string& name) const { return tensor(name).to(at::kFloat); }

void TensorRunnable::expect(const std::string& name, const std::vector<int64_t>& shape) const {
  if (tensor(name).sizes() != c10::IntArrayRef(shape))
    throw InputError("'" + name + "' has shape " + c10::str(tensor(name).sizes()) + ", config.json implies " +
                     c10::str(c10::IntArrayRef(shape)));
}

at::Tensor TensorRunnable::linear(const std::string& layer, const at::Tensor& in, Recording* r) const {
  at::Tensor x = in;
  if (const auto q = quantized_inputs_.find(layer); q != quantized_inputs_.end())
    x = at::fake_quantize_per_tensor_affine(in.contiguous(), q->second.scale, q->second.zero_point, q->second.qmin,
                                            q->second.qmax);
  const at::Tensor y = at::linear(x, f32(layer + ".weight"), has(layer + ".bias") ? f32(layer + ".bias") : at::Tensor());
  if (r && r->wanted.count(layer)) {
    Activity& a = r->seen[layer];
    const at::Tensor i = x.reshape({-1, x.size(-1)}), o = y.reshape({-1, y.size(-1)});
    a.input = a.input.defined() ? at::cat({a.input, i}) : i;
    a.output = a.output.defined() ? at::cat({a.output, o}) : o;
  }
  return y;
}

}  // namespace mq
