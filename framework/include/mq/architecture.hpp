#pragma once
// Architecture plugins: a model family that runs a Hugging Face checkpoint. Given the
// model's config.json and the tensors a format read, one builds a Runnable (forward
// passes for calibration and validation, each Linear's input and output recorded on
// request). The runner asks each architecture plugin in turn about a model directory
// that does not run by itself; the first that runs() it builds it.

#include <memory>
#include <string>

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

}  // namespace mq
