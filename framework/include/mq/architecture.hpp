#pragma once
// Architecture plugins: a model family that runs a Hugging Face checkpoint. Given the
// model's config.json and the tensors a format read, one builds a Runnable (forward
// passes for calibration and validation, each Linear's input and output recorded on
// request). The runner asks each architecture plugin in turn about a model directory
// that does not run by itself; the first that runs() it builds it.

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "mq/model.hpp"
#include "mq/plugin.hpp"

namespace mq {

class MQ_API Architecture : public Plugin {
 public:
  ~Architecture() override;
  // Whether this plugin runs a model of this config.json (its text): by `architectures`
  // or `model_type`.
  virtual bool runs(const std::string& config_json) const = 0;
  // A runnable model over `model`'s tensors as `config_json` describes it. Throws
  // InputError naming the config field or the tensor where they disagree (a missing or
  // misshapen weight, heads that do not divide the hidden size), RecipeError for a
  // config this plugin does not implement (naming the field and value).
  virtual std::shared_ptr<Runnable> build(const Model& model, const std::string& config_json) const = 0;
};

// A base for families that run a checkpoint's tensors by name: forward(), forward_with()
// (weights replaced by name), quantize_inputs(), record_layers() and record_sequential()
// come with it; a family writes its stages, embed(), block() and head(), calling linear()
// for each Linear so that those work.
class MQ_API TensorRunnable : public Runnable {
 public:
  explicit TensorRunnable(const Model& model);
  at::Tensor forward(const at::Tensor& input) override;
  at::Tensor forward_with(const at::Tensor& input, const std::map<std::string, at::Tensor>& weights) override;
  bool quantize_inputs(const std::map<std::string, InputQuantization>& layers) override;
  void record_layers(const std::vector<at::Tensor>& batches, const std::vector<std::string>& layers,
                     const ActivityVisitor& visit) override;
  // Stages: the blocks, then the head where a layer asked for is still unseen. Stops once
  // every layer asked for was recorded.
  void record_sequential(const std::vector<at::Tensor>& batches, const std::vector<std::string>& layers,
                         const ActivityVisitor& visit, const StageDone& done) override;

 protected:
  // What record_layers() asked for, while a batch runs: linear() hands each wanted
  // layer's activity to `visit` as soon as it has it.
  struct Recording {
    const std::set<std::string>& wanted;
    const ActivityVisitor& visit;
    size_t batch;
  };
  // A forward pass in stages: embed() makes a batch's hidden state from the model's
  // input (checking it), each of blocks() block()s takes it to the next, head() makes the
  // output from the last. A block's work depends on the hidden state alone (a transformer
  // derives positions and masks from its shape). `recording` (null outside
  // record_layers() and record_sequential()) goes to linear().
  virtual at::Tensor embed(const at::Tensor& input) const = 0;
  virtual int64_t blocks() const = 0;
  virtual at::Tensor block(int64_t index, const at::Tensor& hidden, Recording* recording) const = 0;
  virtual at::Tensor head(const at::Tensor& hidden, Recording* recording) const = 0;

  // A tensor by name (a replaced one while forward_with() runs); InputError naming it
  // when the model has none, as its config.json implies it should.
  const at::Tensor& tensor(const std::string& name) const;
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  at::Tensor f32(const std::string& name) const;
  // InputError unless `name` has `shape` (config.json's implication).
  void expect(const std::string& name, const std::vector<int64_t>& shape) const;
  // The Linear `layer` on `x`: LAYER.weight, and LAYER.bias where the checkpoint has one;
  // its input quantized where quantize_inputs() said, and recorded when asked. Then
  // release()s them.
  at::Tensor linear(const std::string& layer, const at::Tensor& x, Recording* recording) const;
  // Done with `name` for this pass: where the format mapped it, its pages leave the
  // process (the page cache keeps them; the next pass faults them back), so a forward
  // holds about one block's weights, not the model's.
  void release(const std::string& name) const;

 private:
  class Replacing;
  at::Tensor run(const at::Tensor& input, Recording* recording) const;

  std::map<std::string, at::Tensor> tensors_;
  std::vector<std::shared_ptr<const TensorSource>> files_;  // the model's mapped files
  // By forward_with() and record_sequential(), while they run.
  const std::map<std::string, at::Tensor>* replaced_ = nullptr;
  std::map<std::string, InputQuantization> quantized_inputs_;     // by quantize_inputs()
};

}  // namespace mq
