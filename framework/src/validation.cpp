#include "validation.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <unordered_set>

#include "mq/format.hpp"
#include "mq/pipeline.hpp"
#include "output_paths.hpp"
#include "report_files.hpp"

namespace fs = std::filesystem;

namespace mq {
namespace detail {

at::Tensor forward_input(const Model& model, const std::optional<ModelInput>& given,
                         const std::vector<at::Tensor>& calibration,
                         const std::function<void(const std::string&)>& warn) {
  if (!model.runnable) return {};
  const auto random = [](const std::vector<int64_t>& shape, int64_t vocab_size) {
    const at::Generator gen = at::detail::createCPUGenerator(0);
    return vocab_size ? at::randint(vocab_size, shape, gen, at::kLong) : at::randn(shape, gen);
  };
  enum class Source { kGiven, kCalibration, kGuessed } source = Source::kGiven;
  at::Tensor x;
  if (given) {
    x = random(given->shape, given->vocab_size);
  } else if (!calibration.empty()) {
    x = calibration.front();
    source = Source::kCalibration;
  } else if (const std::optional<ModelInput> tokens = token_input(model, 8)) {
    x = random(tokens->shape, tokens->vocab_size);
    source = Source::kGuessed;
  } else {
    const std::vector<int64_t> shape = sample_input_shape(model, 8);
    if (shape.empty()) return {};
    x = random(shape, 0);
    source = Source::kGuessed;
    if (shape.size() > 2 && warn)
      warn("forward passes run on random inputs of shape " + c10::str(x.sizes()) +
           ", guessed from the first layer; set model.input.shape to what the model takes");
  }
  try {
    model.runnable->forward(x);
  } catch (const std::exception& e) {
    const std::string shape = c10::str(x.sizes()), why = first_line(e.what());
    if (source == Source::kCalibration)
      throw InputError("calibration batch 0 of shape " + shape + " does not fit the model: " + why);
    if (source == Source::kGiven) throw RecipeError("model.input of shape " + shape + " does not fit the model: " + why);
    throw RecipeError("the model does not run on random inputs of shape " + shape + ", guessed from its first layer (" +
                      why + "): set model.input: {shape: [...]} (with vocab_size: N for token ids)");
  }
  return x;
}

// `written` when it runs on `input` (or there is none); null with `failure` saying why
// otherwise.
std::shared_ptr<Runnable> runs_on(std::shared_ptr<Runnable> written, const at::Tensor& input, std::string& failure) {
  if (!written || !input.defined()) return written;
  try {
    written->forward(input);
  } catch (const std::exception& e) {
    failure = "the written model does not run where the original runs: " + first_line(e.what());
    return nullptr;
  }
  return written;
}

std::shared_ptr<Runnable> load_artifact(Format& format, const fs::path& written, Origin origin,
                                        const at::Tensor& input, std::string& failure) {
  Model artifact;
  try {
    artifact = format.read_artifact(written, origin);
  } catch (const std::exception& e) {
    failure = "the written model does not load: " + first_line(e.what());
    return nullptr;
  }
  return runs_on(artifact.runnable, input, failure);
}

std::shared_ptr<Runnable> dequantized_artifact(const PluginHost& host, const Model& original,
                                               const QuantizedModel& written, const Format& format,
                                               const at::Tensor& input, std::string& failure) {
  if (!original.runnable || !original.metadata.count(kHfDirectoryKey) || dynamic_cast<const ArtifactsDoNotRun*>(&format))
    return nullptr;
  Model artifact;
  artifact.metadata = original.metadata;  // the directory whose config.json describes the model
  for (const QuantizedEntry& e : written.entries)
    artifact.tensors.push_back({e.name, e.quantized ? e.quantized->dequantize() : e.tensor});
  std::string problem;
  host.attach_architecture(artifact, [&](const std::string& m) { problem = m; });
  if (!artifact.runnable) {
    failure = "the written model does not run on the original's architecture" + (problem.empty() ? "" : ": " + first_line(problem));
    return nullptr;
  }
  if (written.mode == "static" && written.activation_spec && !written.activation_qparams.empty()) {
    std::map<std::string, Runnable::InputQuantization> inputs;
    for (const auto& [layer, q] : written.activation_qparams)
      inputs[layer] = {q.scale.item<double>(), q.zero_point.defined() ? q.zero_point.item<int64_t>() : 0,
                       written.activation_spec->qmin(), written.activation_spec->qmax()};
    if (!artifact.runnable->quantize_inputs(inputs)) {
      failure = "the written model's activations cannot be quantized on the original's architecture";
      return nullptr;
    }
  }
  return runs_on(artifact.runnable, input, failure);
}

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : "; ") + p;
  return out;
}

std::vector<std::string> run_validators(const PluginHost& host, const ValidatorSteps& steps,
                                        const ValidateContext& context, Report& report,
                                        const std::function<void(const std::string&)>& warn) {
  const std::vector<Resolved>& validators = steps.validators;
  std::vector<std::unique_ptr<Validator>> instances;
  std::vector<size_t> per_entry;
  for (const Resolved& v : validators) {
    instances.push_back(host.make<Validator>(v));
    if (instances.back()->per_entry()) per_entry.push_back(instances.size() - 1);
  }
  // One read of each original for all the validators that look at them: run_validator's
  // pass, shared.
  if (!per_entry.empty())
    for_each_entry(context, [&](const QuantizedEntry& e, const at::Tensor* original) {
      for (size_t i : per_entry)
        guarded(validators[i].label(), "validating", [&] { instances[i]->entry(context, e, original); });
    });
  std::vector<std::string> blocking;
  for (size_t i = 0; i < validators.size(); ++i) {
    Check check = guarded(validators[i].label(), "validating", [&] { return instances[i]->validate(context); });
    const std::string name = validators[i].descriptor().name;
    const OnFailure policy = steps.policies[i];
    if (!check.passed) {
      if (policy == OnFailure::kError) blocking.push_back(name + ": " + check.message);
      if (policy == OnFailure::kWarn) {
        report.warnings.push_back("validator " + name + " failed: " + check.message);
        if (warn) warn(report.warnings.back());
      }
    }
    report.validators.push_back({name, policy, std::move(check)});
  }
  return blocking;
}

namespace {

void validate_existing(const ValidateRequest& request, const RunOptions& options, ReportFiles& files,
                       Report& report, bool& paths_checked) {
  std::vector<NamedPath> writes;
  if (request.report) writes.push_back({"the report", *request.report});
  if (request.html_report) writes.push_back({"the HTML report", *request.html_report});
  check_paths_apart({{"the artifact", request.artifact}, {"the reference", request.reference}}, writes);
  check_output_places(writes, writes);
  paths_checked = true;
  report.output.path = request.artifact.string();
  files.arm(report);
  const PluginHost host(options.plugin_paths);
  ValidatorSteps steps;
  for (const ValidatorStep& v : request.validators.empty() ? default_validators() : request.validators) {
    steps.validators.push_back(host.resolve(PluginKind::kValidator, v.step));
    steps.policies.push_back(v.on_failure.value_or(request.on_failure));
  }
  for (const fs::path& p : {request.reference, request.artifact}) {
    std::error_code ec;
    if (!fs::exists(p, ec)) throw InputError(p.string() + ": no such file or directory");
  }
  const Resolved artifact_format = host.reader_for(request.artifact, request.format, request.format_options);
  const Resolved reference_format = host.reader_for(request.reference, "", request.format_options);

  Model model = guarded(reference_format.label(), "reading the reference model",
                        [&] { return host.make<Format>(reference_format)->read(request.reference); });
  // An HF directory a family runs: whole-model checks run it, and the artifact on it.
  host.attach_architecture(model, [&](const std::string& m) {
    report.warnings.push_back(m);
    if (options.warn) options.warn(m);
  });
  std::unique_ptr<Format> format = host.make<Format>(artifact_format);
  const QuantizedModel quantized = guarded(artifact_format.label(), "reading the artifact",
                                           [&] { return format->read_quantized(request.artifact, Origin::kUser); });
  report.inputs = {file_info(request.reference)};
  report.output = file_info(request.artifact);
  report.promoted = true;  // it is where it is; validate never moves it
  report.original_bytes = model.nbytes();
  report.quantized_bytes = quantized.nbytes();
  // The artifact must hold the reference's tensors, by name and shape: validators look
  // only at what they compare, and a tensor missing on either side went unnoticed.
  const auto not_made_from = [&](const std::string& why) {
    throw InputError(request.artifact.string() + " is not a quantization of " + request.reference.string() + ": " + why);
  };
  const TensorIndex originals(model);
  for (const QuantizedEntry& e : quantized.entries) {
    const at::Tensor* original = originals.find(e.name);
    if (!original) not_made_from("its tensor '" + e.name + "' is not in the reference");
    const std::vector<int64_t> shape = e.quantized ? e.quantized->shape : e.tensor.sizes().vec();
    if (original->sizes() != c10::IntArrayRef(shape))
      not_made_from("its tensor '" + e.name + "' has shape " + c10::str(c10::IntArrayRef(shape)) +
                    ", the reference's " + c10::str(original->sizes()));
    report.plan.push_back({e.name, e.quantized ? "quantized in the artifact" : "float in the artifact",
                           e.quantized ? std::optional<QuantSpec>(e.quantized->spec) : std::nullopt,
                           static_cast<int64_t>(original->nbytes()),
                           e.quantized ? e.quantized->nbytes() : static_cast<int64_t>(e.tensor.nbytes())});
  }
  if (quantized.entries.size() != model.tensors.size()) {  // names are unique on both sides
    std::unordered_set<std::string_view> held;
    for (const QuantizedEntry& e : quantized.entries) held.insert(e.name);
    for (const NamedTensor& t : model.tensors)
      if (!held.count(t.name)) not_made_from("the reference's tensor '" + t.name + "' is not in it");
  }
  ValidateContext context{model, quantized, request.artifact, *format, true, {}, {}, nullptr, Origin::kUser};
  if (!dynamic_cast<const ArtifactsDoNotRun*>(format.get()))
    context.input = forward_input(model, request.input, {}, [&](const std::string& m) {
      report.warnings.push_back(m);
      if (options.warn) options.warn(m);
    });
  std::string failure;
  if (model.runnable) context.artifact = load_artifact(*format, request.artifact, Origin::kUser, context.input, failure);
  if (failure.empty() && !context.artifact)
    context.artifact = dequantized_artifact(host, model, quantized, *format, context.input, failure);
  std::vector<std::string> blocking;
  if (!failure.empty())
    blocking.push_back(failure);
  else
    blocking = run_validators(host, steps, context, report, options.warn);
  if (blocking.empty()) {
    report.message = request.artifact.string() + ": all validators passed";
  } else {
    report.status = ExitCode::kValidationFailed;
    report.message = "validation failed (" + join(blocking) + ")";
  }
}

}  // namespace
}  // namespace detail

Report validate_artifact(const ValidateRequest& request, RunOptions options) {
  detail::ReportFiles files(request.report, request.html_report);
  bool paths_checked = false;
  return files.run(paths_checked, [&](Report& report) {
    detail::validate_existing(request, options, files, report, paths_checked);
  });
}

}  // namespace mq
