#pragma once
// A model as the framework sees it: named tensors in file order and a layer table.

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mq/export.hpp"
#include "mq/files.hpp"

namespace mq {

// kOther last: the kinds before it are every kind there is, in order.
enum class LayerKind { kLinear, kConv1d, kConv2d, kEmbedding, kLayerNorm, kLSTM, kGRU, kLSTMCell, kGRUCell, kOther };

MQ_API const char* to_string(LayerKind kind);

// Recurrent layers (LSTM, GRU and their cells): several weight matrices each, which
// PyTorch's dynamic int8 kernels take together.
MQ_API bool is_recurrent(LayerKind kind);

// One weight of a layer: a layer with several (an LSTM's weight_ih_l0, weight_hh_l0, ...)
// has a row for each, under the same name.
struct Layer {
  std::string name;    // module path, e.g. "encoder.fc1"
  LayerKind kind = LayerKind::kOther;
  std::string weight;  // tensor names; empty when absent
  std::string bias;
};

struct NamedTensor {
  std::string name;
  at::Tensor tensor;
};

// A tensor of a dtype LibTorch has no type for (safetensors' F8_E4M3, U16, F4, ...):
// read as its bytes, a 1-D uint8 tensor, and passed through untouched. A format that
// can store the dtype writes the bytes back as this says; one that cannot refuses the
// model in Format::check_plan.
struct ForeignDType {
  std::string dtype;  // as the file names it, e.g. "F8_E4M3"
  std::vector<int64_t> shape;
};

// A model that can run (a TorchScript module): forward passes for calibration,
// validation and output SQNR.
class MQ_API Runnable {
 public:
  virtual ~Runnable();
  // The output; a model that returns several tensors (a tuple, list or dict of them)
  // gives them flattened and concatenated in order, as float32.
  virtual at::Tensor forward(const at::Tensor& input) = 0;
  // What one of `layers` saw in a forward pass: its input and its output, each
  // flattened to [-1, last dimension] (a layer called twice: both calls, concatenated).
  struct Activity {
    at::Tensor input, output;
  };
  using ActivityVisitor = std::function<void(size_t batch, const std::map<std::string, Activity>& seen)>;
  // Runs the batches in order and calls `visit` with what each of `layers` saw in each
  // batch (a layer the batch did not reach is absent), each layer once a batch: after the
  // batch, or (TensorRunnable) right after the layer ran, one layer at a time, so that a
  // model of hundreds of Linears holds one layer's activity, not all; visits come in
  // batch order either way. Nothing is kept between visits.
  virtual void record_layers(const std::vector<at::Tensor>& batches, const std::vector<std::string>& layers,
                             const ActivityVisitor& visit) = 0;
  // Sequential recording (GPTQ's): the batches run a stage at a time (a block of a
  // transformer), every batch through a stage before any goes on. `visit` gets what
  // `layers` saw in a stage as record_layers() gives it; after the stage's last batch,
  // `done(layers the stage recorded)` returns weights (by tensor name, each the shape it
  // replaces, e.g. the stage's quantized weights) with which the stage runs again to make
  // the next stage's inputs. A stage that records nothing runs once. Only the stage's
  // weights and each batch's hidden state are resident. The default, for models that
  // cannot run a stage at a time (TorchScript): record_layers(), then one done() for every
  // layer recorded, whose weights are not used.
  using StageDone = std::function<std::map<std::string, at::Tensor>(const std::vector<std::string>& layers)>;
  virtual void record_sequential(const std::vector<at::Tensor>& batches, const std::vector<std::string>& layers,
                                 const ActivityVisitor& visit, const StageDone& done);
  // forward() with some weights replaced by others of the same shape (by tensor name),
  // for measuring what quantizing them alone costs (mixed precision's output
  // sensitivity). The default throws RecipeError: the model cannot.
  virtual at::Tensor forward_with(const at::Tensor& input, const std::map<std::string, at::Tensor>& weights);
  // From now on, quantize each named layer's input per tensor before it runs (x ->
  // (clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale), as a static
  // W8A8 artifact's kernels do, so that its whole-model checks see the activations'
  // error too. False (the default) where the model cannot.
  struct InputQuantization {
    double scale = 1;
    int64_t zero_point = 0, qmin = -128, qmax = 127;
  };
  virtual bool quantize_inputs(const std::map<std::string, InputQuantization>& layers);
};

// Model::metadata's key for the Hugging Face model directory (an absolute path) a
// format's reader read the model from: a writer of HF directories gives one back, with
// that directory's config.json and other files. No writer stores it in an artifact.
inline constexpr const char* kHfDirectoryKey = "mq.hf_dir";

struct MQ_API Model {
  std::vector<NamedTensor> tensors;  // file order
  std::vector<Layer> layers;
  std::vector<std::filesystem::path> sources;
  // The file's own metadata, and kHfDirectoryKey where the model was read from an HF
  // model directory.
  std::map<std::string, std::string> metadata;
  std::map<std::string, ForeignDType> foreign;  // by tensor name: tensors held as bytes
  std::shared_ptr<Runnable> runnable;  // null for checkpoints that cannot run
  // What the reader changed in the model as read, one line each ("folded BatchNorm
  // 'bn' into Conv2d 'stem'"): the report lists them.
  std::vector<std::string> changes;
  // Set by formats that map files: where `tensors` lie, for release() and read_into().
  std::vector<std::shared_ptr<const TensorSource>> files;

  // Searches the list: for many lookups, a TensorIndex.
  const at::Tensor* find(const std::string& name) const;
  // Bytes of all tensors as stored in memory.
  int64_t nbytes() const;
  // Drops one of `tensors`' pages from the process once the caller is done with it, where
  // one of `files` holds it (TensorSource::release), so that streaming a model keeps one
  // tensor resident, not all.
  void release(const at::Tensor& tensor) const;
  // Copies one of `tensors` into `into` from the file one of `files` reads it from
  // (TensorSource::read_into); false where none holds it.
  bool read_into(const at::Tensor& tensor, const at::Tensor& into) const;
};

// `tensor`, one of `model`'s, read into memory of the caller's where the model's format
// can (Model::read_into; `tensor` contiguous): into `buffer`, made or grown as needed and
// used again while nothing else holds it. `tensor` itself otherwise. For code that reads
// a model's tensors one after another: faulting a mapping in costs more than the copy.
MQ_API at::Tensor read_staged(const Model& model, const at::Tensor& tensor, at::Tensor& buffer);

// A model's tensors by name, for code that looks many up (a model may have 100,000).
// Valid while the model's tensor list is unchanged.
class MQ_API TensorIndex {
 public:
  explicit TensorIndex(const Model& model);
  const at::Tensor* find(const std::string& name) const;  // null when absent

 private:
  std::unordered_map<std::string_view, const at::Tensor*> by_name_;
};

// The layer table of a checkpoint without module structure: each "<prefix>.weight" is
// layer <prefix> (bias "<prefix>.bias" when present); 2-D weights are Linear, or
// Embedding when the prefix names one ("embed", "wte"); 1-D "norm" weights LayerNorm.
// PyTorch's recurrent weights, "<prefix>.weight_ih_l0" etc. (bias "<prefix>.bias_ih_l0"),
// are LSTM or GRU layers <prefix> (LSTMCell, GRUCell for "weight_ih" without a layer
// suffix) by their gates: weight_hh has 4 (LSTM) or 3 (GRU) times as many rows as columns.
MQ_API std::vector<Layer> layers_from_names(const Model& model);

// Why a checkpoint's tensors show that another tool quantized it already: a tensor
// named as compressed-tensors, GPTQ/AWQ or bitsandbytes name quantized weights
// ("'fc.qweight' is a GPTQ/AWQ name"), or an integer weight matrix ("'fc.weight' is
// int8"); "" when none does. Formats refuse such a file as a model to quantize.
MQ_API std::string quantized_checkpoint_sign(const std::vector<NamedTensor>& tensors);

// The message formats give when they refuse a quantized file as a model to quantize,
// after "FILE: ": "is quantized already (WHY; mq-pipeline inspect lists it): give the
// float model it was made from".
MQ_API std::string quantized_already(const std::string& why);

// An input shape for a forward pass, from the first layer: [batch, in] for Linear,
// [batch, in, 32, 32] for Conv2d, [batch, in, 64] for Conv1d, [batch, 8, in] for LSTM and
// GRU, [batch, in] for their cells; empty when unknown.
MQ_API std::vector<int64_t> sample_input_shape(const Model& model, int64_t batch);

}  // namespace mq
