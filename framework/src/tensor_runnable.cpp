#include <ATen/ATen.h>

#include "mq/architecture.hpp"
#include "mq/error.hpp"

#include <malloc.h>

#include <algorithm>
#include <stdexcept>

namespace mq {

TensorRunnable::TensorRunnable(const Model& model) : files_(model.files) {
  for (const NamedTensor& t : model.tensors) tensors_.emplace(t.name, t.tensor);
}

at::Tensor TensorRunnable::forward(const at::Tensor& input) { return run(input, nullptr); }

// The model's tensors replaced by `weights` (each of the shape it replaces) while it lives.
class TensorRunnable::Replacing {
 public:
  Replacing(TensorRunnable& model, const std::map<std::string, at::Tensor>& weights) : model_(model) {
    for (const auto& [name, w] : weights)
      if (model.tensor(name).sizes() != w.sizes())
        throw InputError("'" + name + "' replaced by a tensor of shape " + c10::str(w.sizes()) + ", not " +
                         c10::str(model.tensor(name).sizes()));
    model_.replaced_ = &weights;
  }
  ~Replacing() { model_.replaced_ = nullptr; }

 private:
  TensorRunnable& model_;
};

at::Tensor TensorRunnable::forward_with(const at::Tensor& input, const std::map<std::string, at::Tensor>& weights) {
  const Replacing replacing(*this, weights);
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

at::Tensor TensorRunnable::run(const at::Tensor& input, Recording* r) const {
  at::Tensor h = embed(input);
  for (int64_t i = 0; i < blocks(); ++i) h = block(i, h, r);
  return head(h, r);
}

void TensorRunnable::record_sequential(const std::vector<at::Tensor>& batches, const std::vector<std::string>& layers,
                                       const ActivityVisitor& visit, const StageDone& done) {
  const std::set<std::string> wanted(layers.begin(), layers.end());
  std::set<std::string> unseen = wanted;
  std::vector<at::Tensor> hidden;
  for (const at::Tensor& batch : batches) hidden.push_back(embed(batch));
  // A stage over every batch. Where it records, its outputs are made again with the
  // weights done() gives; where it does not (as the first batch shows), they go on.
  const auto stage = [&](const std::function<at::Tensor(const at::Tensor&, Recording*)>& run_stage, bool last) {
    std::set<std::string> seen;
    const ActivityVisitor note = [&](size_t b, const std::map<std::string, Activity>& activity) {
      for (const auto& [layer, a] : activity) seen.insert(layer);
      visit(b, activity);
    };
    bool passes_on = true;
    for (size_t b = 0; b < hidden.size(); ++b) {
      Recording r{wanted, note, b};
      at::Tensor out = run_stage(hidden[b], &r);
      if (b == 0) passes_on = seen.empty();
      if (!passes_on) continue;
      if (!seen.empty()) throw std::logic_error("a stage recorded layers in a later batch, none in the first");
      hidden[b] = std::move(out);
    }
    if (passes_on) return;
    for (const std::string& layer : seen) unseen.erase(layer);
    const std::map<std::string, at::Tensor> weights = done({seen.begin(), seen.end()});
    if (last) return;
    {
      const Replacing replacing(*this, weights);
      for (at::Tensor& h : hidden) h = run_stage(h, nullptr);
    }
#ifdef __GLIBC__
    // What the stage freed goes back to the system: glibc keeps freed blocks of up to 32
    // MiB (activations, a caller's Hessians) in its heaps once its mmap threshold has
    // risen, and a run of many stages grew by them (2.0 GB instead of 1.5 at 10 blocks).
    malloc_trim(0);
#endif
  };
  for (int64_t i = 0; i < blocks() && !unseen.empty(); ++i)
    stage([&](const at::Tensor& h, Recording* r) { return block(i, h, r); }, false);
  if (!unseen.empty()) stage([&](const at::Tensor& h, Recording* r) { return head(h, r); }, true);
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
