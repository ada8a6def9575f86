#include "mq/pipeline.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <optional>

#include "background.hpp"
#include "hash.hpp"
#include "mq/files.hpp"
#include "mq/format.hpp"
#include "mq/observer.hpp"
#include "mq/quantizer.hpp"
#include "output_file.hpp"
#include "output_paths.hpp"
#include "planner.hpp"
#include "plugin_host.hpp"
#include "report_files.hpp"
#include "validation.hpp"

namespace fs = std::filesystem;

namespace mq {
namespace {

// --threads, else OMP_NUM_THREADS (LibTorch reads it), else every CPU this process may
// run on: LibTorch's own default is its count of physical cores, which on some VMs is
// one of two (and halved every kernel's speed there).
int threads_to_use(int requested) {
  if (requested > 0) return requested;
  if (std::getenv("OMP_NUM_THREADS")) return at::get_num_threads();
  cpu_set_t cpus;
  return sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? std::max(1, CPU_COUNT(&cpus)) : at::get_num_threads();
}

using detail::guarded;
using detail::NamedPath;
using detail::Resolved;

// A streamed file read back holds what was handed to its writer, tensor for tensor
// (`written`: each entry's digest as it was written); an OutputError otherwise, before
// anything is validated or promoted.
void check_reads_back(const QuantizedModel& back, const std::map<std::string, uint64_t>& written,
                      const fs::path& output) {
  const std::string problem = output.string() + ": the written file does not read back as written";
  if (back.entries.size() != written.size())
    throw OutputError(problem + " (" + std::to_string(written.size()) + " tensors written, " +
                      std::to_string(back.entries.size()) + " read back)");
  for (const QuantizedEntry& e : back.entries) {
    const auto it = written.find(e.name);
    if (it == written.end() || it->second != detail::entry_digest(e))
      throw OutputError(problem + " (tensor '" + e.name + "')");
  }
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

struct Pipeline::Impl {
  Recipe recipe;
  bool output_names_directory = false;  // format.output was "out/", now "out"
  RunOptions options;
  std::unique_ptr<detail::PluginHost> host;
  std::unique_ptr<detail::ReportFiles> reports;
  bool checked = false;
  Resolved observer, quantizer, format;
  detail::ValidatorSteps validators;

  void check() {
    if (checked) return;
    host = std::make_unique<detail::PluginHost>(options.plugin_paths, recipe.plugin_paths);
    observer = host->resolve(PluginKind::kObserver, recipe.observer);
    quantizer = host->resolve(PluginKind::kQuantizer, recipe.quantizer);
    format = host->resolve(PluginKind::kFormat, recipe.format);
    if (!recipe.model_format.empty()) host->resolve(PluginKind::kFormat, {recipe.model_format, recipe.model_options, {}});
    validators = {};
    for (const ValidatorStep& v : recipe.validators) {
      validators.validators.push_back(host->resolve(PluginKind::kValidator, v.step));
      validators.policies.push_back(v.on_failure.value_or(recipe.on_failure));
    }
    // Factories reject option values the declarations cannot express; do it now so
    // `check` catches them without doing any work.
    host->make<Observer>(observer);
    host->make<Quantizer>(quantizer);
    host->make<Format>(format);
    for (const Resolved& v : validators.validators) host->make<Validator>(v);

    // A model file's artifact is a file, which "out/" cannot name.
    std::error_code ec;
    if (output_names_directory && !fs::is_directory(recipe.model_path, ec))
      throw RecipeError("format.output " + recipe.output.string() +
                        "/ names a directory, and a model file gives a file: name the file");
    std::vector<NamedPath> reads{{"the input model", recipe.model_path}}, report_paths;
    if (recipe.calibration && !recipe.calibration->path.empty())
      reads.push_back({"the calibration data", recipe.calibration->path});
    if (recipe.evaluation && !recipe.evaluation->path.empty())
      reads.push_back({"the evaluation data", recipe.evaluation->path});
    if (!recipe.file.empty()) reads.push_back({"the recipe", recipe.file});
    if (recipe.report) report_paths.push_back({"report", *recipe.report});
    if (recipe.html_report) report_paths.push_back({"html_report", *recipe.html_report});
    std::vector<NamedPath> writes{{"format.output", recipe.output}};
    writes.insert(writes.end(), report_paths.begin(), report_paths.end());
    detail::check_paths_apart(reads, writes);
    detail::check_output_places(writes, report_paths);
    // A model file gives a file artifact: a directory in its place was refused only when
    // the artifact was promoted, after all the work.
    if (fs::is_regular_file(recipe.model_path, ec) && fs::is_directory(recipe.output, ec))
      throw OutputError("format.output " + recipe.output.string() +
                        " exists as a directory; refusing to replace it with a file");
    checked = true;
  }

  void warn(Report& report, const std::string& message) {
    report.warnings.push_back(message);
    if (options.warn) options.warn(message);
  }

  std::string plugin_list() const {
    std::string out = observer.tag() + "," + quantizer.tag() + "," + format.tag();
    for (const Resolved& v : validators.validators) out += "," + v.tag();
    return out;
  }

  // The stages every run shares: check, then read the model. A run that writes
  // (`writing`) has an interrupt write its reports from the check on (with the model's
  // figures once it is read), and leaves the input's hash to the caller
  // (report.inputs.front().hash stays empty).
  Model begin(Report& report, bool writing = false) {
    auto start = std::chrono::steady_clock::now();
    report.recipe_hash = recipe.hash();
    report.canonical_recipe = recipe.canonical_json();
    check();
    if (writing) reports->arm(report);
    at::set_num_threads(threads_to_use(options.threads));
    report.timings.push_back({"check", seconds_since(start)});

    start = std::chrono::steady_clock::now();
    std::error_code ec;
    if (!fs::exists(recipe.model_path, ec))
      throw InputError(recipe.model_path.string() + ": no such file or directory (model)");
    const Resolved reader_plugin = host->reader_for(recipe.model_path, recipe.model_format, recipe.model_options);
    Model model = guarded(reader_plugin.label(), "reading the model",
                          [&] { return host->make<Format>(reader_plugin)->read(recipe.model_path); });
    report.inputs.push_back(writing ? FileInfo{recipe.model_path.string(), path_bytes(recipe.model_path), ""}
                                    : detail::file_info(recipe.model_path));
    report.original_bytes = model.nbytes();
    const std::string runs_on = host->attach_architecture(model, [&](const std::string& m) { warn(report, m); },
                                                          recipe.calibration.has_value() || recipe.evaluation.has_value());
    if (!runs_on.empty()) model.changes.push_back("runs on " + runs_on);
    report.model_changes = model.changes;
    report.timings.push_back({"read", seconds_since(start)});
    if (writing) reports->arm(report);
    return model;
  }

  // The batches of the recipe's `calibration` or `evaluation` (`what`): seeded random
  // ones, text tokenized, or every tensor of a file that a format plugin reads (a
  // safetensors file of batches, ...), in file order.
  std::vector<at::Tensor> batches_of(Report& report, const Calibration& source, const std::string& what) {
    std::vector<at::Tensor> batches;
    if (const auto& random = source.random) {
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(random->seed));
      try {
        for (int64_t b = 0; b < random->batches; ++b)
          batches.push_back(random->vocab_size ? at::randint(random->vocab_size, random->shape, gen, at::kLong)
                                               : at::randn(random->shape, gen));
      } catch (const c10::Error&) {
        throw RecipeError(what + ".random: cannot allocate " + std::to_string(random->batches) +
                          " batches of shape " + c10::str(c10::IntArrayRef(random->shape)));
      }
      return batches;
    }
    if (const auto& text = source.text) {
      const std::unique_ptr<Tokenizer> tokenizer = Tokenizer::load(text->tokenizer);
      TokenSamples samples = token_samples(*tokenizer, *text);
      if (what == "calibration") report.calibration = samples.summary();
      report.inputs.push_back(detail::file_info(text->source.path));
      return std::move(samples.batches);
    }
    const fs::path& path = source.path;
    std::error_code ec;
    if (!fs::exists(path, ec)) throw InputError(path.string() + ": no such file or directory (" + what + ")");
    const Resolved r = host->reader_for(path);
    const Model data = guarded(r.label(), "reading " + what + " data", [&] { return host->make<Format>(r)->read(path); });
    for (const NamedTensor& t : data.tensors) {
      // Floating point (as float32), or integers as they are: token ids for a model
      // that starts with an Embedding.
      if (const auto foreign = data.foreign.find(t.name); foreign != data.foreign.end())
        throw InputError(path.string() + ": " + what + " batch '" + t.name + "' is " + foreign->second.dtype +
                         ", which LibTorch cannot represent");
      if (t.tensor.is_floating_point())
        batches.push_back(t.tensor.to(at::kFloat));
      else if (at::isIntegralType(t.tensor.scalar_type(), /*includeBool=*/false))
        batches.push_back(t.tensor);
      else
        throw InputError(path.string() + ": " + what + " batch '" + t.name + "' is " +
                         c10::toString(t.tensor.scalar_type()) + ", neither floating point nor integer");
    }
    if (batches.empty()) throw InputError(path.string() + ": holds no " + what + " batches");
    report.inputs.push_back(detail::file_info(path));
    return batches;
  }

  // The context quantize() gets (plan() too), with the calibration batches read.
  QuantizeContext quantize_context(Report& report, NullProgress& silent) {
    QuantizeContext context;
    context.make_observer = [this] { return host->make<Observer>(observer); };
    context.progress = options.progress ? options.progress : &silent;
    context.warn = [this, &report](const std::string& m) { warn(report, m); };
    if (recipe.calibration) context.calibration = batches_of(report, *recipe.calibration, "calibration");
    return context;
  }

  // The plan settled before any work: the quantizer's, checked by the format (which may
  // keep in float what it cannot store as planned).
  // With a `target`, the planner then chooses the specs of the Linears planned by type;
  // a run (`writing`) keeps its estimates beside the output for the next.
  std::vector<PlanRow> settle_plan(const Quantizer& q, const Format& writer, const Model& model,
                                   const QuantizeContext& context, Report& report, bool writing) {
    std::vector<PlanRow> plan = guarded(quantizer.label(), "planning", [&] { return q.plan(model, context); });
    if (recipe.target)
      report.target = detail::plan_to_target(model, plan, *recipe.target, context,
                                             detail::sensitivity_cache(recipe.output), writing);
    guarded(format.label(), "checking the plan", [&] { writer.check_plan(model, plan); });
    if (std::none_of(plan.begin(), plan.end(), [](const PlanRow& row) { return row.spec.has_value(); }))
      warn(report, "nothing is quantized: every tensor is kept as it is (the rules that kept them: " +
                       std::string("mq-pipeline run --dry-run)"));
    return plan;
  }

  // The input forward passes feed the model (checked to fit by running it), or none
  // where the format's artifacts do not run: nothing would compare their outputs.
  at::Tensor forward_input(const Model& model, const QuantizeContext& context, Report& report) {
    if (dynamic_cast<const ArtifactsDoNotRun*>(host->make<Format>(format).get())) return {};
    return detail::forward_input(model, recipe.model_input, context.calibration,
                                 [&](const std::string& m) { warn(report, m); });
  }

  // What a run would do, with every refusal known before the work: no quantizing, nothing
  // written (`run --dry-run`, `check`).
  Report plan() {
    Report report;
    const Model model = begin(report);
    NullProgress silent;
    const QuantizeContext context = quantize_context(report, silent);
    if (recipe.evaluation) batches_of(report, *recipe.evaluation, "evaluation");  // refused now, not after the work
    report.plan = settle_plan(*host->make<Quantizer>(quantizer), *host->make<Format>(format), model, context, report,
                              /*writing=*/false);
    forward_input(model, context, report);
    for (const PlanRow& row : report.plan) report.quantized_bytes += row.bytes_after;
    report.output.path = recipe.output.string();
    report.message = "dry run: nothing quantized or written";
    return report;
  }

  Report run() {
    reports = std::make_unique<detail::ReportFiles>(recipe.report, recipe.html_report);
    return reports->run(checked, [&](Report& report) { run(report); });
  }

  void run(Report& report) {
    using clock = std::chrono::steady_clock;
    report.output.path = recipe.output.string();
    const Model model = begin(report, true);
    detail::BackgroundHash input_hash(recipe.model_path);
    std::error_code ec;

    NullProgress silent;
    QuantizeContext context = quantize_context(report, silent);
    const std::vector<at::Tensor> evaluation =
        recipe.evaluation ? batches_of(report, *recipe.evaluation, "evaluation") : std::vector<at::Tensor>{};
    std::unique_ptr<Quantizer> q = host->make<Quantizer>(quantizer);
    std::unique_ptr<Format> writer = host->make<Format>(format);
    context.plan = settle_plan(*q, *writer, model, context, report, /*writing=*/true);
    const at::Tensor input = forward_input(model, context, report);

    // Formats that write entry by entry get each one as it is quantized, so that the
    // quantized model is never in memory whole.
    detail::OutputFile out(recipe.output);
    const std::string writing = "writing " + recipe.output.string();
    std::unique_ptr<EntryWriter> stream =
        guarded(format.label(), writing, [&] { return writer->stream(model, out.temp()); });
    // A streamed file is validated as read back; each entry's digest, taken as it is
    // handed to the writer, checks that it reads back as it was written.
    std::map<std::string, uint64_t> digests;
    auto add = [&](const QuantizedEntry& e) {
      if (!recipe.validators.empty()) digests[e.name] = detail::entry_digest(e);
      stream->add(e);
    };
    detail::WriteBehind behind([&](const QuantizedEntry& e) { guarded(format.label(), writing, [&] { add(e); }); });
    if (stream) context.emit = [&](QuantizedEntry e) { behind.push(std::move(e)); };

    auto start = clock::now();
    QuantizedModel quantized = guarded(quantizer.label(), "quantizing", [&] { return q->quantize(model, context); });
    behind.drain();
    quantized.source = model.runnable;
    quantized.foreign = model.foreign;
    for (const auto& [key, value] : model.metadata) quantized.metadata.emplace(key, value);
    quantized.metadata["mq.version"] = MQ_VERSION_STRING;
    quantized.metadata["mq.recipe_hash"] = report.recipe_hash;
    quantized.metadata[kRecipeKey] = recipe.resolved_json();
    const detail::Digests model_digests = input_hash.get();
    report.inputs.front().hash = model_digests.xxh3;
    report.inputs.front().sha256 = model_digests.sha256;
    quantized.metadata["mq.input_hash"] = model_digests.xxh3;
    quantized.metadata["mq.input_sha256"] = model_digests.sha256;
    quantized.metadata["mq.plugins"] = plugin_list();
    report.plan = quantized.plan;
    int64_t planned_bytes = 0;
    for (const PlanRow& row : quantized.plan) planned_bytes += row.bytes_after;
    report.quantized_bytes = stream ? planned_bytes : quantized.nbytes();
    report.timings.push_back({stream ? "quantize and write" : "quantize", seconds_since(start)});

    start = clock::now();
    guarded(format.label(), writing, [&] {
      if (!stream) return writer->write(quantized, out.temp());
      for (const QuantizedEntry& e : quantized.entries) add(e);  // a quantizer that does not stream
      stream->finish(quantized);
    });
    report.timings.push_back({"write", seconds_since(start)});

    start = clock::now();
    // A streamed model is validated as written (read back, mapped) rather than held.
    std::optional<QuantizedModel> written;
    if (stream && !recipe.validators.empty()) {
      written = guarded(format.label(), "reading back " + recipe.output.string(),
                        [&] { return writer->read_quantized(out.temp(), Origin::kThisRun); });
      written->plan = quantized.plan;
      written->source = quantized.source;
      check_reads_back(*written, digests, recipe.output);
    }
    // Entries a transform changed (SmoothQuant) are compared with what they were made from.
    Model reference;
    if (!quantized.transformed.empty()) {
      reference = model;
      for (NamedTensor& t : reference.tensors)
        if (const auto it = quantized.transformed.find(t.name); it != quantized.transformed.end()) t.tensor = it->second;
    }
    ValidateContext validate_context{quantized.transformed.empty() ? model : reference,
                                     written ? *written : quantized, out.temp(), *writer,
                                     written.has_value(), context.calibration, input, nullptr};
    validate_context.evaluation = evaluation;
    // A runnable model's artifact loads and runs before it is promoted, validators or not.
    std::string failure;
    if (model.runnable) validate_context.artifact = detail::load_artifact(*writer, out.temp(), Origin::kThisRun, input, failure);
    if (failure.empty() && !validate_context.artifact && !recipe.validators.empty())
      validate_context.artifact =
          detail::dequantized_artifact(*host, model, validate_context.quantized, *writer, input, failure);
    std::vector<std::string> blocking{failure};
    if (failure.empty()) blocking = detail::run_validators(*host, validators, validate_context, report, options.warn);
    report.timings.push_back({"validate", seconds_since(start)});

    if (blocking.empty()) {
      detail::Digests hash;
      {  // taken while the disk flushes the artifact, before it is renamed into place
        detail::BackgroundHash hashing(out.temp());
        out.sync();
        hash = hashing.get();
      }
      out.promote();
      report.promoted = true;
      if (!guarded(format.label(), "probing " + recipe.output.string(), [&] { return writer->can_read(recipe.output); }))
        warn(report, format.label() + " wrote " + recipe.output.string() + ", a name it does not take for its own: " +
                         "tools that go by the name (mq-pipeline inspect included) will not read it as such");
      report.output = {recipe.output.string(), path_bytes(recipe.output), hash.xxh3, hash.sha256};
      report.message = "wrote " + recipe.output.string();
    } else {
      report.status = ExitCode::kValidationFailed;
      report.message = "validation failed (" + detail::join(blocking) + "); " + recipe.output.string() +
                       (fs::exists(recipe.output, ec) ? " left as it was" : " not written");
    }
  }
};

Pipeline::Pipeline(Recipe recipe, RunOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->recipe = std::move(recipe);
  impl_->options = std::move(options);
  // "out/" names a directory: where an HF model directory's artifact goes, as "out" (the
  // same recipe, and the same hash, as "out").
  fs::path& output = impl_->recipe.output;
  while (output.filename().empty() && output.has_relative_path()) {
    output = output.parent_path();
    impl_->output_names_directory = true;
  }
}
Pipeline::~Pipeline() = default;
Pipeline::Pipeline(Pipeline&&) noexcept = default;
Pipeline& Pipeline::operator=(Pipeline&&) noexcept = default;

void Pipeline::check() { impl_->check(); }
Report Pipeline::run() { return impl_->run(); }
Report Pipeline::plan() { return impl_->plan(); }
const Recipe& Pipeline::recipe() const { return impl_->recipe; }

}  // namespace mq
