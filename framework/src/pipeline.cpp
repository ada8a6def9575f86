#include "mq/pipeline.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#define BOOST_DLL_USE_STD_FS
#include <boost/dll/runtime_symbol_info.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <map>
#include <optional>
#include <sstream>
#include <unordered_set>

#include "hash.hpp"
#include "mq/error.hpp"
#include "mq/files.hpp"
#include "mq/format.hpp"
#include "mq/observer.hpp"
#include "mq/quantize.hpp"
#include "mq/quantizer.hpp"
#include "mq/validator.hpp"
#include "option_check.hpp"
#include "output_file.hpp"
#include "plugin_registry.hpp"
#include "suggest.hpp"

namespace fs = std::filesystem;

namespace mq {
namespace {

// The first non-empty line (LibTorch messages start with a newline and carry backtraces).
std::string first_line(const std::string& text) {
  const size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return "";
  return text.substr(begin, text.find('\n', begin) - begin);
}

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

using NamedPath = std::pair<std::string, fs::path>;

// Every file a run writes has its own path, and none is a file it reads or lies in a
// directory it reads (a report named like the artifact replaced it; an output inside
// an HF model directory would join the input); a RecipeError before any work otherwise.
void check_paths_apart(const std::vector<NamedPath>& reads, const std::vector<NamedPath>& writes) {
  const auto same = [](const fs::path& a, const fs::path& b) {
    std::error_code ec;
    return a.lexically_normal() == b.lexically_normal() || fs::equivalent(a, b, ec);
  };
  const auto inside = [](const fs::path& path, const fs::path& dir) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return false;
    const fs::path relative = fs::weakly_canonical(path, ec).lexically_relative(fs::weakly_canonical(dir, ec));
    return !ec && !relative.empty() && *relative.begin() != "..";
  };
  for (size_t i = 0; i < writes.size(); ++i) {
    const auto& [key, path] = writes[i];
    for (const NamedPath& input : reads) {
      if (same(path, input.second))
        throw RecipeError(key + " " + path.string() + " is " + input.first + "; refusing to overwrite an input");
      if (inside(path, input.second))
        throw RecipeError(key + " " + path.string() + " lies inside " + input.first + " (" + input.second.string() +
                          "), whose files are all read; write it elsewhere");
    }
    for (size_t j = 0; j < i; ++j)
      if (same(path, writes[j].second))
        throw RecipeError(key + " " + path.string() + " is also " + writes[j].first +
                          "; each output needs a path of its own");
  }
}

// Every output can be written where it goes, checked before any work: a report in a
// directory's place, a file where a directory must be, or a directory this process
// cannot write in (a report's failed at the end of a run, after the artifact had been
// promoted). `reports` are files, a subset of `writes`.
void check_output_places(const std::vector<NamedPath>& writes, const std::vector<NamedPath>& reports) {
  std::error_code ec;
  for (const auto& [key, path] : reports)
    if (fs::is_directory(path, ec))
      throw RecipeError(key + " " + path.string() + " is a directory; a report is written as a file");
  for (const auto& [key, path] : writes) {
    if (const char* kind = detail::special_file(path))
      throw OutputError(key + " " + path.string() + " is " + kind + ", which a written file would replace" +
                        (key == "report" || key == "html_report" ? " (" + key + ": null writes none)" : ""));
    fs::path dir = path.parent_path();  // the nearest that exists: the run creates the rest
    while (!dir.empty() && fs::status(dir, ec).type() == fs::file_type::not_found) dir = dir.parent_path();
    if (dir.empty()) dir = ".";
    const char* why = !fs::is_directory(dir, ec)                                 ? "not a directory"
                      : faccessat(AT_FDCWD, dir.c_str(), W_OK | X_OK, AT_EACCESS) ? std::strerror(errno)
                                                                                  : nullptr;
    if (why) throw OutputError(key + " " + path.string() + ": cannot write in " + dir.string() + " (" + why + ")");
  }
}

// Runs one stage of a plugin, so that every failure names the plugin and the stage.
template <class F>
auto guarded(const std::string& who, const std::string& stage, F&& fn) -> decltype(fn()) {
  const std::string prefix = who + ", " + stage + ": ";
  try {
    return fn();
  } catch (const RecipeError& e) {  // the same type again, so callers can catch it by type
    throw RecipeError(prefix + e.what());
  } catch (const InputError& e) {
    throw InputError(prefix + e.what());
  } catch (const PluginError& e) {
    throw PluginError(prefix + e.what());
  } catch (const OutputError& e) {
    throw OutputError(prefix + e.what());
  } catch (const Error& e) {
    throw Error(e.code(), prefix + e.what());
  } catch (const std::exception& e) {
    throw PluginError(who + " failed while " + stage + ": " + first_line(e.what()));
  } catch (...) {
    throw PluginError(who + " failed while " + stage + ": unknown exception");
  }
}

fs::path builtin_plugin_dir() {
  // libmq's own location, so embedding programs find the plugins installed beside it.
  return boost::dll::this_line_location().parent_path() / "mono-quant" / "plugins";
}

struct Resolved {
  const detail::LoadedPlugin* plugin = nullptr;
  Options options;

  std::string label() const {
    return std::string(to_string(plugin->descriptor->kind)) + " '" + plugin->descriptor->name + "'";
  }
};

template <class T>
std::unique_ptr<T> instantiate(const Resolved& r) {
  std::unique_ptr<Plugin> p =
      guarded(r.label(), "creating it", [&] { return r.plugin->descriptor->factory->create(r.options); });
  T* typed = dynamic_cast<T*>(p.get());
  if (!typed)
    throw PluginError(r.label() + " from " + r.plugin->file.string() +
                      " created an object of the wrong kind");
  p.release();
  return std::unique_ptr<T>(typed);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

FileInfo file_info(const fs::path& p) { return {p.string(), path_bytes(p), detail::hash_path(p)}; }

// A file's hash, computed on a thread beside other work: the input's beside quantization
// (it is needed only for the output's provenance, at the end), the artifact's beside its
// fsync. A run that ends early does not wait for the rest of the file: the destructor
// cancels before the future's waits.
class BackgroundHash {
 public:
  explicit BackgroundHash(fs::path path)
      : result_(std::async(std::launch::async,
                           [this, path = std::move(path)] { return detail::hash_path(path, &cancel_); })) {}
  ~BackgroundHash() { cancel_ = true; }
  std::string get() { return result_.get(); }

 private:
  std::atomic<bool> cancel_{false};
  std::future<std::string> result_;
};

// Writes streamed entries one behind the quantizer, on a thread of their own, so that an
// entry's copy into the page cache overlaps the quantizing of the next (on a 2-vCPU VM
// the copy of fresh pages costs as much as the quantizing). Entries keep their order; a
// write's error comes out of the next push() or of drain(). Small entries are written
// at once: a thread for each would cost more than it saves.
class WriteBehind {
 public:
  explicit WriteBehind(std::function<void(const QuantizedEntry&)> write) : write_(std::move(write)) {}
  ~WriteBehind() {
    if (pending_.valid()) pending_.wait();
  }
  void push(QuantizedEntry e) {
    drain();
    const at::Tensor& data = e.quantized ? e.quantized->data : e.tensor;
    if (!data.defined() || data.nbytes() < (size_t{1} << 20)) return write_(e);
    pending_ = std::async(std::launch::async, [this, e = std::move(e)] { write_(e); });
  }
  void drain() {
    if (pending_.valid()) pending_.get();
  }

 private:
  std::function<void(const QuantizedEntry&)> write_;
  std::future<void> pending_;
};

}  // namespace

std::vector<fs::path> plugin_search_path(const std::vector<fs::path>& first,
                                         const std::vector<fs::path>& extra) {
  std::vector<fs::path> out;
  const auto add = [&](const fs::path& p, bool must_exist) {
    std::error_code ec;
    if (!fs::exists(p, ec)) {
      if (must_exist) throw RecipeError("plugin path '" + p.string() + "' does not exist");
      return;
    }
    const fs::path canonical = fs::canonical(p, ec);
    if (std::find(out.begin(), out.end(), canonical) == out.end()) out.push_back(canonical);
  };
  for (const fs::path& p : first) add(p, true);
  for (const fs::path& p : extra) add(p, true);
  if (const char* env = std::getenv("MQ_PLUGIN_PATH")) {
    std::stringstream ss(env);
    for (std::string p; std::getline(ss, p, ':');)
      if (!p.empty()) add(p, false);
  }
  add(builtin_plugin_dir(), false);
  return out;
}

std::vector<PluginInfo> discover_plugins(const std::vector<fs::path>& first,
                                         const std::vector<fs::path>& extra) {
  detail::PluginRegistry registry;
  for (const fs::path& p : plugin_search_path(first, extra)) registry.add_path(p);
  std::vector<PluginInfo> out;
  for (const detail::LoadedPlugin& p : registry.plugins()) {
    const PluginDescriptor& d = *p.descriptor;
    out.push_back({d.kind, d.name, d.version ? d.version : "", d.description ? d.description : "",
                   p.file, std::vector<OptionDecl>(d.options, d.options + d.option_count), &d});
  }
  return out;
}

struct Pipeline::Impl {
  Recipe recipe;
  bool output_names_directory = false;  // format.output was "out/", now "out"
  RunOptions options;
  detail::PluginRegistry registry;
  bool checked = false;
  std::unique_ptr<detail::WrittenOnInterrupt> on_interrupt;  // the reports of a run stopped
  Resolved observer, quantizer, format, model_format;
  std::vector<Resolved> validators;

  Resolved resolve(PluginKind kind, const PluginStep& step) {
    const detail::LoadedPlugin* p = registry.find(kind, step.plugin);
    if (!p) {
      std::string where = step.location.to_string();
      throw RecipeError((where.empty() ? "" : where + ": ") + "no " + to_string(kind) +
                        " plugin named '" + step.plugin + "'" +
                        detail::did_you_mean(step.plugin, registry.names(kind)) +
                        "; available: " + detail::quoted_list(registry.names(kind)));
    }
    return {p, detail::check_options(step, *p->descriptor)};
  }

  void load_registry() {
    if (!registry.plugins().empty()) return;
    for (const fs::path& p : plugin_search_path(options.plugin_paths, recipe.plugin_paths))
      registry.add_path(p);
  }

  void check() {
    if (checked) return;
    load_registry();
    observer = resolve(PluginKind::kObserver, recipe.observer);
    quantizer = resolve(PluginKind::kQuantizer, recipe.quantizer);
    format = resolve(PluginKind::kFormat, recipe.format);
    if (!recipe.model_format.empty())
      model_format = resolve(PluginKind::kFormat, PluginStep{recipe.model_format, recipe.model_options, {}});
    validators.clear();
    for (const ValidatorStep& v : recipe.validators)
      validators.push_back(resolve(PluginKind::kValidator, v.step));
    // Factories reject option values the declarations cannot express; do it now so
    // `check` catches them without doing any work.
    instantiate<Observer>(observer);
    instantiate<Quantizer>(quantizer);
    instantiate<Format>(format);
    for (const Resolved& v : validators) instantiate<Validator>(v);

    // A model file's artifact is a file, which "out/" cannot name.
    std::error_code ec;
    if (output_names_directory && !fs::is_directory(recipe.model_path, ec))
      throw RecipeError("format.output " + recipe.output.string() +
                        "/ names a directory, and a model file gives a file: name the file");
    std::vector<NamedPath> reads{{"the input model", recipe.model_path}}, reports;
    if (recipe.calibration && !recipe.calibration->path.empty())
      reads.push_back({"the calibration data", recipe.calibration->path});
    if (!recipe.file.empty()) reads.push_back({"the recipe", recipe.file});
    if (recipe.report) reports.push_back({"report", *recipe.report});
    if (recipe.html_report) reports.push_back({"html_report", *recipe.html_report});
    std::vector<NamedPath> writes{{"format.output", recipe.output}};
    writes.insert(writes.end(), reports.begin(), reports.end());
    check_paths_apart(reads, writes);
    check_output_places(writes, reports);
    // A model file gives a file artifact: a directory in its place was refused only when
    // the artifact was promoted, after all the work.
    if (fs::is_regular_file(recipe.model_path, ec) && fs::is_directory(recipe.output, ec))
      throw OutputError("format.output " + recipe.output.string() +
                        " exists as a directory; refusing to replace it with a file");
    checked = true;
  }

  // The format named by model.format, or the first (by name) that can read `path`.
  Resolved reader_for(const fs::path& path) {
    if (model_format.plugin) return model_format;
    std::vector<std::string> tried;
    for (const std::string& name : registry.names(PluginKind::kFormat)) {
      const detail::LoadedPlugin* p = registry.find(PluginKind::kFormat, name);
      Resolved r{p, detail::check_options(PluginStep{name, Value::map(), {}}, *p->descriptor)};
      std::unique_ptr<Format> f = instantiate<Format>(r);
      if (guarded(r.label(), "probing the model", [&] { return f->can_read(path); })) {
        if (path == recipe.model_path)  // the model's own options, checked against this format
          r.options = detail::check_options(PluginStep{name, recipe.model_options, {}}, *p->descriptor);
        return r;
      }
      tried.push_back(name);
    }
    std::error_code ec;
    throw InputError(path.string() + ": no format plugin can read this " +
                     (fs::is_directory(path, ec) ? "directory" : "file") + " (tried " + detail::quoted_list(tried) + ")");
  }

  void warn(Report& report, const std::string& message) {
    report.warnings.push_back(message);
    if (options.warn) options.warn(message);
  }

  std::string plugin_list() const {
    std::string out;
    const auto add = [&](const Resolved& r) {
      if (!r.plugin) return;
      if (!out.empty()) out += ",";
      out += std::string(to_string(r.plugin->descriptor->kind)) + "/" + r.plugin->descriptor->name +
             "@" + (r.plugin->descriptor->version ? r.plugin->descriptor->version : "");
    };
    add(observer);
    add(quantizer);
    add(format);
    for (const Resolved& v : validators) add(v);
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
    if (writing) report_if_interrupted(report, recipe.report, recipe.html_report);
    if (options.threads > 0) at::set_num_threads(options.threads);
    report.timings.push_back({"check", seconds_since(start)});

    start = std::chrono::steady_clock::now();
    std::error_code ec;
    if (!fs::exists(recipe.model_path, ec))
      throw InputError(recipe.model_path.string() + ": no such file or directory");
    const Resolved reader_plugin = reader_for(recipe.model_path);
    std::unique_ptr<Format> reader = instantiate<Format>(reader_plugin);
    Model model = guarded(reader_plugin.label(), "reading the model",
                          [&] { return reader->read(recipe.model_path); });
    report.inputs.push_back(writing ? FileInfo{recipe.model_path.string(), path_bytes(recipe.model_path), ""}
                                    : file_info(recipe.model_path));
    report.original_bytes = model.nbytes();
    report.timings.push_back({"read", seconds_since(start)});
    if (writing) report_if_interrupted(report, recipe.report, recipe.html_report);
    return model;
  }

  // Runs `validators` (policies alongside); returns the failures that block.
  std::vector<std::string> validate(const Model& model, const QuantizedModel& quantized,
                                    const fs::path& written, Format& format, bool read_back,
                                    const std::vector<OnFailure>& policies, Report& report,
                                    const std::vector<at::Tensor>& calibration = {}) {
    std::vector<std::string> blocking;
    const ValidateContext context{model, quantized, written, format, read_back, calibration};
    std::vector<std::unique_ptr<Validator>> instances;
    std::vector<size_t> per_entry;
    for (const Resolved& v : validators) {
      instances.push_back(instantiate<Validator>(v));
      if (instances.back()->per_entry()) per_entry.push_back(instances.size() - 1);
    }
    // One read of each original for all the validators that look at them: run_validator's
    // pass, shared.
    if (!per_entry.empty())
      for_each_entry(context, [&](const QuantizedEntry& e, const at::Tensor* original) {
        for (size_t i : per_entry)
          guarded(validators[i].label(), "validating",
                  [&] { instances[i]->entry(context, e, original); });
      });
    for (size_t i = 0; i < validators.size(); ++i) {
      Check check = guarded(validators[i].label(), "validating",
                            [&] { return instances[i]->validate(context); });
      const std::string name = validators[i].plugin->descriptor->name;
      if (!check.passed) {
        if (policies[i] == OnFailure::kError) blocking.push_back(name + ": " + check.message);
        if (policies[i] == OnFailure::kWarn) warn(report, "validator " + name + " failed: " + check.message);
      }
      report.validators.push_back({name, policies[i], std::move(check)});
    }
    return blocking;
  }

  static std::string join(const std::vector<std::string>& parts) {
    std::string out;
    for (const std::string& p : parts) out += (out.empty() ? "" : "; ") + p;
    return out;
  }

  // Runs `stages` into a report and writes the reports asked for, a failed run's too
  // (its status and message, and what it got to), so that a report left from an
  // earlier run never stands for this one. `paths_checked` says the report paths are
  // known not to be an input (a failure before that writes nothing).
  template <class F>
  Report reported(const std::optional<fs::path>& json, const std::optional<fs::path>& html,
                  const bool& paths_checked, F&& stages) {
    Report report;
    const auto write = [&] {
      for (const auto& [path, text] : report_files(report, json, html)) detail::write_file_atomically(path, text);
    };
    struct Disarm {  // once the reports are written, whatever happened
      std::unique_ptr<detail::WrittenOnInterrupt>& armed;
      ~Disarm() { armed.reset(); }
    } disarm{on_interrupt};
    try {
      stages(report);
    } catch (const std::exception& e) {
      if (!paths_checked) throw;
      const auto* error = dynamic_cast<const Error*>(&e);
      report.status = error ? error->code() : ExitCode::kInternal;
      report.message = error ? e.what() : std::string("internal error: ") + first_line(e.what());
      try {
        write();
      } catch (const std::exception&) {  // the run's own error is the one to report
      }
      throw;
    }
    write();
    return report;
  }

  // The reports asked for, as texts.
  static detail::WrittenOnInterrupt::Files report_files(Report& report, const std::optional<fs::path>& json,
                                                        const std::optional<fs::path>& html) {
    detail::WrittenOnInterrupt::Files files;
    if (json) {
      report.report_path = json->string();
      files.emplace_back(*json, report.to_json());
    }
    if (html) files.emplace_back(*html, report.to_html());
    return files;
  }

  // From now until reported() has written the reports, an interrupt writes them as
  // `report` stands, with status 130 (the run's own writing needs the main thread).
  void report_if_interrupted(Report report, const std::optional<fs::path>& json, const std::optional<fs::path>& html) {
    report.status = ExitCode::kInterrupted;
    report.message = "interrupted by a signal";
    on_interrupt = std::make_unique<detail::WrittenOnInterrupt>(report_files(report, json, html));
  }

  Report validate_existing(const ValidateRequest& request) {
    bool paths_checked = false;
    return reported(request.report, request.html_report, paths_checked,
                    [&](Report& report) { validate_existing(request, report, paths_checked); });
  }

  void validate_existing(const ValidateRequest& request, Report& report, bool& paths_checked) {
    std::vector<NamedPath> writes;
    if (request.report) writes.push_back({"the report", *request.report});
    if (request.html_report) writes.push_back({"the HTML report", *request.html_report});
    check_paths_apart({{"the artifact", request.artifact}, {"the reference", request.reference}}, writes);
    check_output_places(writes, writes);
    paths_checked = true;
    report.output.path = request.artifact.string();
    report_if_interrupted(report, request.report, request.html_report);
    load_registry();
    std::vector<ValidatorStep> steps = request.validators;
    if (steps.empty())
      for (const char* name : {"sqnr", "size", "load_run", "range"})
        steps.push_back({{name, Value::map(), {}}, std::nullopt});
    std::vector<OnFailure> policies;
    for (const ValidatorStep& v : steps) {
      validators.push_back(resolve(PluginKind::kValidator, v.step));
      policies.push_back(v.on_failure.value_or(request.on_failure));
    }
    for (const fs::path& p : {request.reference, request.artifact}) {
      std::error_code ec;
      if (!fs::exists(p, ec)) throw InputError(p.string() + ": no such file or directory");
    }
    const auto with_options = [&](Resolved r) {
      r.options = detail::check_options({r.plugin->descriptor->name, request.format_options, {}}, *r.plugin->descriptor);
      return r;
    };
    const Resolved artifact_format =
        request.format.empty() ? with_options(reader_for(request.artifact))
                               : resolve(PluginKind::kFormat, PluginStep{request.format, request.format_options, {}});
    const Resolved reference_format = with_options(reader_for(request.reference));

    std::unique_ptr<Format> reader = instantiate<Format>(reference_format);
    const Model model = guarded(reference_format.label(), "reading the reference model",
                                [&] { return reader->read(request.reference); });
    std::unique_ptr<Format> format = instantiate<Format>(artifact_format);
    const QuantizedModel quantized = guarded(artifact_format.label(), "reading the artifact",
                                             [&] { return format->read_quantized(request.artifact); });
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
    const std::vector<std::string> blocking =
        validate(model, quantized, request.artifact, *format, true, policies, report);
    if (blocking.empty()) {
      report.message = request.artifact.string() + ": all validators passed";
    } else {
      report.status = ExitCode::kValidationFailed;
      report.message = "validation failed (" + join(blocking) + ")";
    }
  }

  // The recipe's calibration batches: seeded random ones, or every tensor of a file
  // that a format plugin reads (a safetensors file of batches, ...), in file order.
  std::vector<at::Tensor> calibration_batches(Report& report) {
    std::vector<at::Tensor> batches;
    if (!recipe.calibration) return batches;
    if (const auto& random = recipe.calibration->random) {
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(random->seed));
      try {
        for (int64_t b = 0; b < random->batches; ++b)
          batches.push_back(random->vocab_size ? at::randint(random->vocab_size, random->shape, gen, at::kLong)
                                               : at::randn(random->shape, gen));
      } catch (const c10::Error&) {
        throw RecipeError("calibration.random: cannot allocate " + std::to_string(random->batches) +
                          " batches of shape " + c10::str(c10::IntArrayRef(random->shape)));
      }
      return batches;
    }
    const fs::path& path = recipe.calibration->path;
    std::error_code ec;
    if (!fs::exists(path, ec)) throw InputError(path.string() + ": no such file or directory (calibration)");
    const Resolved r = reader_for(path);
    std::unique_ptr<Format> reader = instantiate<Format>(r);
    const Model data = guarded(r.label(), "reading calibration data", [&] { return reader->read(path); });
    for (const NamedTensor& t : data.tensors) {
      // Floating point (as float32), or integers as they are: token ids for a model
      // that starts with an Embedding.
      if (const auto foreign = data.foreign.find(t.name); foreign != data.foreign.end())
        throw InputError(path.string() + ": calibration batch '" + t.name + "' is " +
                         foreign->second.dtype + ", which LibTorch cannot represent");
      if (t.tensor.is_floating_point())
        batches.push_back(t.tensor.to(at::kFloat));
      else if (at::isIntegralType(t.tensor.scalar_type(), /*includeBool=*/false))
        batches.push_back(t.tensor);
      else
        throw InputError(path.string() + ": calibration batch '" + t.name + "' is " +
                         c10::toString(t.tensor.scalar_type()) + ", neither floating point nor integer");
    }
    if (batches.empty()) throw InputError(path.string() + ": holds no calibration batches");
    report.inputs.push_back(file_info(path));
    return batches;
  }

  Report plan() {
    Report report;
    const Model model = begin(report);
    std::unique_ptr<Quantizer> q = instantiate<Quantizer>(quantizer);
    report.plan = guarded(quantizer.label(), "planning", [&] { return q->plan(model); });
    guarded(format.label(), "checking the plan", [&] { instantiate<Format>(format)->check_plan(model, report.plan); });
    for (const PlanRow& row : report.plan) report.quantized_bytes += row.bytes_after;
    report.output.path = recipe.output.string();
    report.message = "dry run: nothing quantized or written";
    return report;
  }

  Report run() {
    return reported(recipe.report, recipe.html_report, checked, [&](Report& report) { run(report); });
  }

  void run(Report& report) {
    using clock = std::chrono::steady_clock;
    report.output.path = recipe.output.string();
    const Model model = begin(report, true);
    BackgroundHash input_hash(recipe.model_path);
    std::error_code ec;

    NullProgress silent;
    QuantizeContext context;
    context.make_observer = [&] { return instantiate<Observer>(observer); };
    context.progress = options.progress ? options.progress : &silent;
    context.warn = [&](const std::string& m) { warn(report, m); };
    context.calibration = calibration_batches(report);
    std::unique_ptr<Quantizer> q = instantiate<Quantizer>(quantizer);

    // Formats that write entry by entry get each one as it is quantized, so that the
    // quantized model is never in memory whole.
    std::unique_ptr<Format> writer = instantiate<Format>(format);
    {  // a plan the format would refuse is refused before the work
      const std::vector<PlanRow> plan = guarded(quantizer.label(), "planning", [&] { return q->plan(model); });
      guarded(format.label(), "checking the plan", [&] { writer->check_plan(model, plan); });
    }
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
    WriteBehind behind([&](const QuantizedEntry& e) { guarded(format.label(), writing, [&] { add(e); }); });
    if (stream) context.emit = [&](QuantizedEntry e) { behind.push(std::move(e)); };

    auto start = clock::now();
    QuantizedModel quantized =
        guarded(quantizer.label(), "quantizing", [&] { return q->quantize(model, context); });
    behind.drain();
    quantized.source = model.runnable;
    quantized.foreign = model.foreign;
    for (const auto& [key, value] : model.metadata) quantized.metadata.emplace(key, value);
    quantized.metadata["mq.version"] = MQ_VERSION_STRING;
    quantized.metadata["mq.recipe_hash"] = report.recipe_hash;
    report.inputs.front().hash = input_hash.get();
    quantized.metadata["mq.input_hash"] = report.inputs.front().hash;
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
                        [&] { return writer->read_quantized(out.temp()); });
      written->plan = quantized.plan;
      written->source = quantized.source;
      check_reads_back(*written, digests, recipe.output);
    }
    std::vector<OnFailure> policies;
    for (const ValidatorStep& v : recipe.validators) policies.push_back(v.on_failure.value_or(recipe.on_failure));
    const std::vector<std::string> blocking =
        validate(model, written ? *written : quantized, out.temp(), *writer, written.has_value(), policies, report,
                 context.calibration);
    report.timings.push_back({"validate", seconds_since(start)});

    if (blocking.empty()) {
      std::string hash;
      {  // taken while the disk flushes the artifact, before it is renamed into place
        BackgroundHash hashing(out.temp());
        out.sync();
        hash = hashing.get();
      }
      out.promote();
      report.promoted = true;
      if (!guarded(format.label(), "probing " + recipe.output.string(), [&] { return writer->can_read(recipe.output); }))
        warn(report, format.label() + " wrote " + recipe.output.string() + ", a name it does not take for its own: " +
                         "tools that go by the name (mq-pipeline inspect included) will not read it as such");
      report.output = {recipe.output.string(), path_bytes(recipe.output), hash};
      report.message = "wrote " + recipe.output.string();
    } else {
      report.status = ExitCode::kValidationFailed;
      report.message = "validation failed (" + join(blocking) + "); " + recipe.output.string() +
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

Report validate_artifact(const ValidateRequest& request, RunOptions options) {
  Pipeline::Impl host;
  host.options = std::move(options);
  return host.validate_existing(request);
}
const Recipe& Pipeline::recipe() const { return impl_->recipe; }

}  // namespace mq

// The original's entry points. Each builds a plugin host (a Pipeline::Impl without a
// recipe) and goes through the same plugins as the runner.
namespace mq {
namespace {

std::unique_ptr<Pipeline::Impl> plugin_host() {
  auto host = std::make_unique<Pipeline::Impl>();
  host->load_registry();
  return host;
}

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

}  // namespace

namespace {

QuantizeResult quantize_with(const std::string& plugin, const Model& model, std::vector<at::Tensor> calibration,
                             const QuantizationConfig& config, OnFailure on_failure, bool run_validation) {
  auto host = plugin_host();
  const Resolved quantizer = host->resolve(PluginKind::kQuantizer, {plugin, config_options(config), {}});
  const Resolved observer = host->resolve(PluginKind::kObserver, {config.observer, Value::map(), {}});
  NullProgress silent;
  QuantizeContext context;
  context.make_observer = [&] { return instantiate<Observer>(observer); };
  context.progress = &silent;
  context.calibration = std::move(calibration);
  context.warn = [](const std::string& m) { std::fprintf(stderr, "mq: warning: %s\n", m.c_str()); };
  std::unique_ptr<Quantizer> q = instantiate<Quantizer>(quantizer);
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

}  // namespace

QuantizeResult dynamic_quantize(const Model& model, const QuantizationConfig& config, OnFailure on_failure,
                                bool run_validation) {
  return quantize_with("dynamic", model, {}, config, on_failure, run_validation);
}

QuantizeResult static_quantize(const Model& model, const std::vector<at::Tensor>& calibration,
                               const QuantizationConfig& config, OnFailure on_failure, bool run_validation) {
  return quantize_with("static", model, calibration, config, on_failure, run_validation);
}

ValidationResult validate_quantization(const Model& original, const QuantizedModel& quantized,
                                       OnFailure on_failure) {
  auto host = plugin_host();
  const Resolved format_plugin = host->resolve(PluginKind::kFormat, {"safetensors", Value::map(), {}});
  std::vector<OnFailure> policies;
  for (const char* name : {"sqnr", "size", "load_run", "range"}) {
    host->validators.push_back(host->resolve(PluginKind::kValidator, {name, Value::map(), {}}));
    policies.push_back(OnFailure::kWarn);  // collected here, the policy applies below
  }
  static std::atomic<int> calls{0};
  std::error_code ec;
  const fs::path dir = fs::temp_directory_path(ec) /
                       ("mq-validate-" + std::to_string(getpid()) + "-" + std::to_string(calls++));
  fs::create_directories(dir, ec);
  detail::OutputFile temp(dir / "model.safetensors");
  std::unique_ptr<Format> format = instantiate<Format>(format_plugin);
  guarded(format_plugin.label(), "saving for validation", [&] { format->write(quantized, temp.temp()); });
  Report report;
  host->validate(original, quantized, temp.temp(), *format, false, policies, report);
  fs::remove(temp.temp(), ec);
  fs::remove(dir, ec);

  ValidationResult result;
  result.original_size_mb = original.nbytes() / 1e6;
  result.quantized_size_mb = quantized.nbytes() / 1e6;
  result.compression_ratio = quantized.nbytes() ? double(original.nbytes()) / quantized.nbytes() : 0.0;
  for (const ValidatorResult& v : report.validators) {
    if (v.plugin == "sqnr") result.sqnr_db = v.check.metrics.at(0).second;
    if (v.plugin == "load_run") result.load_test_passed = v.check.passed;
    if (v.plugin == "range") result.weight_range_valid = v.check.passed;
    if (!v.check.passed) result.errors.push_back(v.plugin + ": " + v.check.message);
  }
  if (!result.passed()) {
    const std::string message = "validation failed (" + Pipeline::Impl::join(result.errors) + ")";
    if (on_failure == OnFailure::kError) throw Error(ExitCode::kValidationFailed, message);
    if (on_failure == OnFailure::kWarn) std::fprintf(stderr, "mq: warning: %s\n", message.c_str());
  }
  return result;
}

namespace {

Resolved format_for(Pipeline::Impl& host, const fs::path& path, const std::string& name, const Value& options) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError(path.string() + ": no such file or directory");
  if (!name.empty()) return host.resolve(PluginKind::kFormat, {name, options, {}});
  Resolved r = host.reader_for(path);
  r.options = detail::check_options({r.plugin->descriptor->name, options, {}}, *r.plugin->descriptor);
  return r;
}

}  // namespace

Model load_model(const fs::path& path, const std::string& format, const Value& options) {
  auto host = plugin_host();
  const Resolved r = format_for(*host, path, format, options);
  std::unique_ptr<Format> f = instantiate<Format>(r);
  return guarded(r.label(), "reading " + path.string(), [&] { return f->read(path); });
}

namespace {

QuantizedModel read_quantized_with(const fs::path& path, const std::string& format, const Value& options,
                                   QuantizedModel (Format::*read)(const fs::path&)) {
  auto host = plugin_host();
  const Resolved r = format_for(*host, path, format, options);
  std::unique_ptr<Format> f = instantiate<Format>(r);
  return guarded(r.label(), "reading " + path.string(), [&] { return ((*f).*read)(path); });
}

}  // namespace

QuantizedModel load_quantized_model(const fs::path& path, const std::string& format, const Value& options) {
  return read_quantized_with(path, format, options, &Format::read_quantized);
}

QuantizedModel describe_quantized_model(const fs::path& path, const std::string& format, const Value& options) {
  return read_quantized_with(path, format, options, &Format::describe);
}

void save_model(const QuantizedModel& model, const fs::path& path, const std::string& format) {
  auto host = plugin_host();
  const Resolved r = host->resolve(PluginKind::kFormat, {format, Value::map(), {}});
  std::unique_ptr<Format> f = instantiate<Format>(r);
  detail::OutputFile out(path);
  guarded(r.label(), "writing " + path.string(), [&] { f->write(model, out.temp()); });
  out.promote();
}

}  // namespace mq
