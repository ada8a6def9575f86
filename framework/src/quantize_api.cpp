// The Python original's entry points, over the same plugins as the runner.

#include "mq/quantize.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <functional>

#include "mq/format.hpp"
#include "mq/quantizer.hpp"
#include "output_file.hpp"
#include "plugin_host.hpp"
#include "validation.hpp"

namespace fs = std::filesystem;

namespace mq {
namespace {

using detail::guarded;
using detail::PluginHost;
using detail::Resolved;

Value config_options(const QuantizationConfig& c) {
  std::vector<Value> types, exclude;
  for (const std::string& t : c.layer_types) types.push_back(Value::string(t));
  for (const std::string& e : c.exclude) exclude.push_back(Value::string(e));
  Value layers = Value::map();
  layers.set("types", Value::list(types));
  layers.set("exclude", Value::list(exclude));
  Value v = Value::map();
  v.set("dtype", Value::string(std::string(to_string(c.dtype))));
  v.set("granularity", Value::string(c.granularity));
  v.set("group_size", Value::integer(c.group_size));
  v.set("scheme", Value::string(std::string(to_string(c.scheme))));
  v.set("reduce_range", Value::boolean(c.reduce_range));
  v.set("layers", layers);
  return v;
}

QuantizeResult quantize_with(const std::string& plugin, const Model& model, std::vector<at::Tensor> calibration,
                             const QuantizationConfig& config, OnFailure on_failure, bool run_validation) {
  const PluginHost host;
  const Resolved quantizer = host.resolve(PluginKind::kQuantizer, {plugin, config_options(config), {}});
  const Resolved observer = host.resolve(PluginKind::kObserver, {config.observer, Value::map(), {}});
  NullProgress silent;
  QuantizeContext context;
  context.make_observer = [&] { return host.make<Observer>(observer); };
  context.progress = &silent;
  context.calibration = std::move(calibration);
  context.warn = [](const std::string& m) { std::fprintf(stderr, "mq: warning: %s\n", m.c_str()); };
  std::unique_ptr<Quantizer> q = host.make<Quantizer>(quantizer);
  QuantizeResult result;
  result.model = guarded(quantizer.label(), "quantizing", [&] { return q->quantize(model, context); });
  result.info.plan = result.model.plan;
  result.model.source = model.runnable;
  result.model.foreign = model.foreign;
  if (run_validation) {
    result.info.validation = validate_quantization(model, result.model, on_failure);
    result.info.validated = true;
  }
  return result;
}

double metric(const Check& check, const std::string& name) {
  for (const auto& [key, value] : check.metrics)
    if (key == name) return value;
  return 0.0;
}

}  // namespace

QuantizeResult dynamic_quantize(const Model& model, const QuantizationConfig& config, OnFailure on_failure,
                                bool run_validation) {
  return quantize_with("dynamic", model, {}, config, on_failure, run_validation);
}

QuantizeResult static_quantize(const Model& model, const std::vector<at::Tensor>& calibration,
                               const QuantizationConfig& config, OnFailure on_failure, bool run_validation) {
  return quantize_with("static", model, calibration, config, on_failure, run_validation);
}

ValidationResult validate_quantization(const Model& original, const QuantizedModel& quantized, OnFailure on_failure) {
  const PluginHost host;
  const Resolved format_plugin = host.resolve(PluginKind::kFormat, {kApiFormat, Value::map(), {}});
  detail::ValidatorSteps steps;
  for (const ValidatorStep& v : default_validators()) {
    steps.validators.push_back(host.resolve(PluginKind::kValidator, v.step));
    steps.policies.push_back(OnFailure::kWarn);  // collected here, the policy applies below
  }
  static std::atomic<int> calls{0};
  std::error_code ec;
  const fs::path dir =
      fs::temp_directory_path(ec) / ("mq-validate-" + std::to_string(getpid()) + "-" + std::to_string(calls++));
  fs::create_directories(dir, ec);
  detail::OutputFile temp(dir / ("model." + std::string(kApiFormat)));
  std::unique_ptr<Format> format = host.make<Format>(format_plugin);
  guarded(format_plugin.label(), "saving for validation", [&] { format->write(quantized, temp.temp()); });
  Report report;
  const ValidateContext context{original, quantized, temp.temp(), *format, false, {}, {}, nullptr};
  detail::run_validators(host, steps, context, report, nullptr);
  fs::remove(temp.temp(), ec);
  fs::remove(dir, ec);

  ValidationResult result;
  result.original_size_mb = original.nbytes() / 1e6;
  result.quantized_size_mb = quantized.nbytes() / 1e6;
  result.compression_ratio = quantized.nbytes() ? double(original.nbytes()) / quantized.nbytes() : 0.0;
  for (const ValidatorResult& v : report.validators) {
    if (v.plugin == "sqnr") result.sqnr_db = metric(v.check, "mean_db");
    if (v.plugin == "load_run") result.load_test_passed = v.check.passed;
    if (v.plugin == "range") result.weight_range_valid = v.check.passed;
    if (!v.check.passed) result.errors.push_back(v.plugin + ": " + v.check.message);
  }
  if (!result.passed()) {
    const std::string message = "validation failed (" + detail::join(result.errors) + ")";
    if (on_failure == OnFailure::kError) throw Error(ExitCode::kValidationFailed, message);
    if (on_failure == OnFailure::kWarn) std::fprintf(stderr, "mq: warning: %s\n", message.c_str());
  }
  return result;
}

Model load_model(const fs::path& path, const std::string& format, const Value& options) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError(path.string() + ": no such file or directory");
  const PluginHost host;
  const Resolved r = host.reader_for(path, format, options);
  Model model = guarded(r.label(), "reading the model", [&] { return host.make<Format>(r)->read(path); });
  host.attach_architecture(model, nullptr);  // an HF directory a family runs, as in a run
  return model;
}

namespace {

QuantizedModel read_quantized_with(const fs::path& path, const std::string& format, const Value& options,
                                   const std::function<QuantizedModel(Format&, const fs::path&)>& read) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError(path.string() + ": no such file or directory");
  const PluginHost host;
  const Resolved r = host.reader_for(path, format, options);
  std::unique_ptr<Format> f = host.make<Format>(r);
  return guarded(r.label(), "reading the file", [&] { return read(*f, path); });
}

}  // namespace

QuantizedModel load_quantized_model(const fs::path& path, const std::string& format, const Value& options) {
  return read_quantized_with(path, format, options,
                             [](Format& f, const fs::path& p) { return f.read_quantized(p, Origin::kUser); });
}

QuantizedModel describe_quantized_model(const fs::path& path, const std::string& format, const Value& options) {
  return read_quantized_with(path, format, options, [](Format& f, const fs::path& p) { return f.describe(p); });
}

ArchitectureInfo describe_architecture(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return {};
  const detail::ArchitectureMatch m = detail::PluginHost().match_architecture(path);
  return {m.plugin.has_value(), m.config.empty() ? "" : m.summary};
}

void save_model(const QuantizedModel& model, const fs::path& path, const std::string& format) {
  const PluginHost host;
  const Resolved r = host.resolve(PluginKind::kFormat, {format, Value::map(), {}});
  std::unique_ptr<Format> f = host.make<Format>(r);
  detail::OutputFile out(path);
  guarded(r.label(), "writing " + path.string(), [&] { f->write(model, out.temp()); });
  out.promote();
}

}  // namespace mq
