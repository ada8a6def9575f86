#include <ATen/ATen.h>

#include "mq/architecture.hpp"
#include "mq/error.hpp"

#include <algorithm>

namespace mq {

TensorRunnable::TensorRunnable(const Model& model) : files_(model.files) {
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
    Recording r{wanted, visit, b};
    run(batches[b], &r);
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
  const bool bias = has(layer + ".bias");
  const at::Tensor& w = tensor(layer + ".weight");
  const at::Tensor b = bias ? f32(layer + ".bias") : at::Tensor();
  // A weight stored in another dtype is converted to float32 a slice of rows at a time
  // (each output column is its own dot product: the same values), so that a large one (a
  // vocabulary head) never has a whole float32 copy beside its stored bytes.
  constexpr int64_t kSliceBytes = int64_t{64} << 20;
  const int64_t rows = w.dim() == 2 && w.scalar_type() != at::kFloat
                           ? std::max<int64_t>(1, kSliceBytes / std::max<int64_t>(1, w.size(1) * 4))
                           : w.size(0);
  at::Tensor y;
  if (rows >= w.size(0)) {
    y = at::linear(x, w.to(at::kFloat), b);
  } else {
    std::vector<at::Tensor> parts;
    for (int64_t r0 = 0; r0 < w.size(0); r0 += rows) {
      const int64_t n = std::min(rows, w.size(0) - r0);
      parts.push_back(at::linear(x, w.narrow(0, r0, n).to(at::kFloat), b.defined() ? b.narrow(0, r0, n) : at::Tensor()));
    }
    y = at::cat(parts, -1);
  }
  release(layer + ".weight");
  if (bias) release(layer + ".bias");
  if (r && r->wanted.count(layer))
    r->visit(r->batch, {{layer, Activity{x.reshape({-1, x.size(-1)}), y.reshape({-1, y.size(-1)})}}});
  return y;
}

void TensorRunnable::release(const std::string& name) const {
  if (replaced_ && replaced_->count(name)) return;
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) return;
  for (const auto& file : files_)
    if (file->release(it->second)) return;
}

}  // namespace mq
