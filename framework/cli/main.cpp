// mq-pipeline: the command line over the mq::Pipeline API.

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "console_progress.hpp"
#include "init_recipe.hpp"
#include "mq/error.hpp"
#include "mq/files.hpp"
#include "mq/interrupt.hpp"
#include "mq/pipeline.hpp"
#include "mq/quantize.hpp"
#include "mq/text.hpp"
#include "mq/tokenizer.hpp"
#include "mq/version.hpp"

namespace fs = std::filesystem;

const char* mq_build_commit();  // build_info.cpp, generated

namespace {

// Paths need not be UTF-8 (Linux file names are bytes): invalid bytes print as U+FFFD.
void print_json(const nlohmann::ordered_json& out) {
  fmt::print("{}\n", out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
}

std::string one_line(std::string text) {
  for (char& c : text)
    if (c == '\n' || c == '\r') c = ' ';
  return text;
}

int fail(mq::ExitCode code, const std::string& message) {
  fmt::print(stderr, "mq-pipeline: error: {}\n", one_line(message));
  return static_cast<int>(code);
}

// A run's or a validation's report on stdout, and its status as the exit code.
int finish(const mq::Report& report, bool json, bool quiet) {
  if (json)
    fmt::print("{}", report.to_json());
  else if (!quiet)
    fmt::print("{}", report.summary());
  if (report.status != mq::ExitCode::kOk) return fail(report.status, report.message);
  return 0;
}

std::string option_default(const mq::OptionDecl& o) {
  return o.default_value ? o.default_value : "(required)";
}

int list_plugins(const std::vector<fs::path>& paths, bool json) {
  const std::vector<mq::PluginInfo> plugins = mq::discover_plugins(paths);
  if (json) {
    auto out = nlohmann::ordered_json::array();
    for (const mq::PluginInfo& p : plugins) {
      auto options = nlohmann::ordered_json::array();
      for (const mq::OptionDecl& o : p.options)
        options.push_back({{"name", o.name},
                           {"type", mq::to_string(o.type)},
                           {"default", o.default_value ? nlohmann::ordered_json(o.default_value)
                                                       : nlohmann::ordered_json(nullptr)},
                           {"help", o.help ? o.help : ""}});
      out.push_back({{"kind", mq::to_string(p.kind)},
                     {"name", p.name},
                     {"version", p.version},
                     {"description", p.description},
                     {"file", p.file.string()},
                     {"options", options}});
    }
    print_json(out);
    return 0;
  }
  fmt::print("search path:\n");
  for (const fs::path& p : mq::plugin_search_path(paths)) fmt::print("  {}\n", p.string());
  for (const mq::PluginInfo& p : plugins) {
    fmt::print("\n{:<10} {:<16} {:<8} {}\n", mq::to_string(p.kind), p.name, p.version, p.description);
    fmt::print("           from {}\n", p.file.string());
    for (const mq::OptionDecl& o : p.options)
      fmt::print("           {}: {} = {}  {}\n", o.name, mq::to_string(o.type), option_default(o),
                 o.help ? o.help : "");
  }
  return 0;
}

std::string dtype_name(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return "float32";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kDouble: return "float64";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kInt: return "int32";
    case at::kLong: return "int64";
    case at::kBool: return "bool";
    default: return c10::toString(t.scalar_type());
  }
}

// --plugin-path for the commands that read models through mq's API, which searches
// MQ_PLUGIN_PATH: the paths go first in it.
void search_first(const std::vector<fs::path>& plugin_paths) {
  if (plugin_paths.empty()) return;
  std::string joined;
  for (const fs::path& p : plugin_paths) joined += (joined.empty() ? "" : ":") + p.string();
  const char* env = std::getenv("MQ_PLUGIN_PATH");
  setenv("MQ_PLUGIN_PATH", (joined + (env ? std::string(":") + env : "")).c_str(), 1);
}

int inspect_file(const std::string& path, const std::string& format, bool trust, bool json, bool recipe,
                 const std::vector<fs::path>& plugin_paths) {
  search_first(plugin_paths);
  const mq::QuantizedModel model = mq::describe_quantized_model(path, format, mq::cli::reader_options(path, trust));
  if (recipe) {  // as `mq-pipeline run` takes it (JSON is YAML)
    const auto it = model.metadata.find(mq::kRecipeKey);
    if (it == model.metadata.end())
      throw mq::InputError(path + " records no recipe (made by another tool, or by mq before it recorded them)");
    fmt::print("{}\n", it->second);
    return 0;
  }
  auto out = nlohmann::ordered_json::object();
  out["file"] = path;
  out["bytes"] = mq::path_bytes(path);
  out["mode"] = model.mode;
  out["metadata"] = model.metadata;
  auto tensors = nlohmann::ordered_json::array();
  int64_t total = 0, quantized = 0;
  for (const mq::QuantizedEntry& e : model.entries) {
    const at::Tensor& t = e.quantized ? e.quantized->data : e.tensor;
    const int64_t bytes = e.quantized ? e.quantized->nbytes() : static_cast<int64_t>(e.tensor.nbytes());
    total += bytes;
    const auto foreign = model.foreign.find(e.name);
    const bool raw = !e.quantized && foreign != model.foreign.end();
    auto row = nlohmann::ordered_json{
        {"name", e.name},
        {"dtype", e.quantized ? std::string(mq::to_string(e.quantized->spec.dtype))
                  : raw       ? foreign->second.dtype
                              : dtype_name(t)},
        {"shape", e.quantized ? e.quantized->shape
                  : raw       ? foreign->second.shape
                              : t.sizes().vec()},
        {"bytes", bytes}};
    if (e.quantized) {
      ++quantized;
      row["quantization"] = e.quantized->spec.to_string() + (e.quantized->g_idx.defined() ? ", g_idx" : "");
      if (e.quantized->spec.is_integer()) row["scale_shape"] = e.quantized->qparams.scale.sizes().vec();
    }
    tensors.push_back(row);
  }
  out["tensors"] = tensors;
  out["total_bytes"] = total;
  out["activations"] = model.activation_qparams.size();
  const mq::ArchitectureInfo architecture = mq::describe_architecture(path);
  if (!architecture.summary.empty())
    out["architecture"] = {{"runs", architecture.runs}, {"summary", architecture.summary}};
  if (!quantized) out["mode"] = nullptr;  // a float model has no mode
  if (json) {
    print_json(out);
    return 0;
  }
  fmt::print("{}: {} bytes, {} tensors ({} quantized{})\n", path, out["bytes"].get<int64_t>(), model.entries.size(),
             quantized, quantized ? ", mode " + model.mode : std::string());
  if (!architecture.summary.empty())
    fmt::print("  {} {}\n", architecture.runs ? "runs on" : "does not run:", architecture.summary);
  for (const auto& [key, value] : model.metadata)
    if (key.rfind("mq.", 0) == 0 && key != mq::kSpecsKey && key != mq::kActivationSpecKey && key != "mq.quantized" &&
        key != "mq.activations")  // the last two: what files written before the first two had
      fmt::print("  {:<16} {}\n", key, value);
  if (!model.activation_qparams.empty())
    fmt::print("  static activation scales for {} layers ({})\n", model.activation_qparams.size(),
               model.activation_spec ? model.activation_spec->to_string() : "no spec");
  size_t width = 6;
  for (const auto& row : tensors) width = std::max(width, row["name"].get<std::string>().size());
  fmt::print("\n{:<{}}  {:<10}  {:<16}  {:>12}  {}\n", "tensor", width, "stored", "shape", "bytes", "quantization");
  for (const auto& row : tensors)
    fmt::print("{:<{}}  {:<10}  {:<16}  {:>12}  {}\n", row["name"].get<std::string>(), width,
               row["dtype"].get<std::string>(), row["shape"].dump(), row["bytes"].get<int64_t>(),
               row.contains("quantization") ? row["quantization"].get<std::string>() : "");
  fmt::print("total {} bytes\n", total);
  return 0;
}

int verify_file(mq::VerifyRequest request, bool strict, bool trust, bool json, const std::vector<fs::path>& plugin_paths) {
  search_first(plugin_paths);
  mq::RunOptions options;
  options.plugin_paths = plugin_paths;
  request.strict = strict;
  request.format_options = mq::cli::reader_options(request.artifact, trust);
  const mq::VerifyResult r = mq::verify_artifact(request, options);
  if (json) {
    print_json({{"artifact", request.artifact.string()}, {"status", static_cast<int>(r.status)},
                {"message", r.message}, {"warnings", r.warnings}});
    return static_cast<int>(r.status);
  }
  for (const std::string& w : r.warnings) fmt::print(stderr, "mq-pipeline: warning: {}\n", one_line(w));
  if (r.status != mq::ExitCode::kOk) return fail(r.status, request.artifact.string() + ": " + r.message);
  fmt::print("{}: {}\n", request.artifact.string(), r.message);
  return 0;
}

// `check`'s answer: the recipe would run (what it would quantize, in figures).
int print_check(const std::string& recipe, const mq::Report& plan, bool json) {
  int64_t quantized = 0;
  for (const mq::PlanRow& row : plan.plan) quantized += row.spec.has_value();
  if (json) {
    print_json({{"recipe", recipe},
                {"status", 0},
                {"recipe_hash", plan.recipe_hash},
                {"tensors", plan.plan.size()},
                {"quantized", quantized},
                {"original_bytes", plan.original_bytes},
                {"quantized_bytes", plan.quantized_bytes},
                {"warnings", plan.warnings}});
    return 0;
  }
  fmt::print("{}: ok: {} of {} tensors quantized, {} -> {} bytes (recipe hash {})\n", recipe, quantized,
             plan.plan.size(), plan.original_bytes, plan.quantized_bytes, plan.recipe_hash);
  return 0;
}

// `mq-pipeline tokenize`: the ids (and tokens) of a text file, whole or (`lines`) each
// line on its own, as the model's tokenizer gives them.
int tokenize_file(const std::string& model, const std::string& file, bool json, bool lines, bool add_special) {
  const std::unique_ptr<mq::Tokenizer> tokenizer = mq::Tokenizer::load(model);
  const std::string text = mq::read_text_file(file);
  std::vector<std::string_view> texts;
  if (!lines) texts.push_back(text);
  for (size_t at = 0; lines && at < text.size();) {
    const size_t end = std::min(text.find('\n', at), text.size());
    texts.push_back(std::string_view(text).substr(at, end - at));
    at = end + 1;
  }
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  int64_t count = 0;
  for (std::string_view t : texts) {
    const std::vector<int32_t> ids = tokenizer->encode(t, add_special);
    count += static_cast<int64_t>(ids.size());
    if (json && lines) {
      all.push_back(ids);
    } else if (json) {
      std::vector<std::string> tokens;
      for (int32_t id : ids) tokens.push_back(tokenizer->token(id));
      print_json({{"ids", ids}, {"tokens", tokens}});
    } else {
      for (int32_t id : ids) fmt::print("{}\t{}\n", id, tokenizer->token(id));
      if (lines) fmt::print("\n");
    }
  }
  if (json && lines) print_json(all);
  if (!json) fmt::print(stderr, "{}: {} tokens\n", file, count);
  return 0;
}

// The request `mq-pipeline validate` describes; options are "validator.key=yaml".
mq::ValidateRequest validation_request(const std::string& artifact, const std::string& reference,
                                       const std::vector<std::string>& names,
                                       const std::vector<std::string>& options,
                                       const std::string& on_failure, const std::string& format,
                                       const std::string& report, const std::string& html) {
  mq::ValidateRequest request;
  request.artifact = artifact;
  request.reference = reference;
  request.format = format;
  request.on_failure = on_failure == "warn"     ? mq::OnFailure::kWarn
                       : on_failure == "ignore" ? mq::OnFailure::kIgnore
                                                : mq::OnFailure::kError;
  if (!report.empty()) request.report = report;
  if (!html.empty()) request.html_report = html;
  std::vector<std::string> chosen = names;
  if (chosen.empty())
    for (const mq::ValidatorStep& v : mq::default_validators()) chosen.push_back(v.step.plugin);
  // The validators' options go through the recipe parser, so they are typed and checked
  // the same way: "validators.<i>.options.<key>=<value>".
  std::string yaml = "version: 1\nmodel: {path: x}\nquantizer: {plugin: x}\nformat: {plugin: x, output: y}\nvalidators:\n";
  for (const std::string& n : chosen) yaml += "  - {plugin: '" + n + "'}\n";
  std::vector<std::string> sets;
  for (const std::string& o : options) {
    const size_t dot = o.find('.');
    const auto it = dot == std::string::npos ? chosen.end()
                                             : std::find(chosen.begin(), chosen.end(), o.substr(0, dot));
    if (it == chosen.end())
      throw mq::RecipeError("--option '" + o + "': expected VALIDATOR.KEY=VALUE naming one of the validators");
    sets.push_back("validators." + std::to_string(it - chosen.begin()) + ".options." + o.substr(dot + 1));
  }
  request.validators = mq::parse_recipe(yaml, "", sets).validators;
  return request;
}

}  // namespace

namespace {

int command(int argc, char** argv) {
  mq::install_interrupt_cleanup();
  CLI::App app{"mq-pipeline: post-training quantization of PyTorch models from a YAML recipe"};
  app.require_subcommand(0, 1);
  bool version = false;
  app.add_flag("--version", version, "Print the version and exit");

  std::string recipe_path;
  std::vector<std::string> overrides;
  std::vector<std::string> plugin_paths;
  bool json = false, quiet = false, dry_run = false;
  int threads = 0;

  CLI::App* run = app.add_subcommand("run", "Run a recipe: quantize, write, validate, report");
  CLI::App* check = app.add_subcommand("check", "Check a recipe as a run would before its work (plugins, options, the model, the plan); nothing quantized or written");
  CLI::App* plugins = app.add_subcommand("plugins", "List the plugins found on the search path");
  CLI::App* validate = app.add_subcommand(
      "validate", "Run validators on an existing artifact against its original model");
  std::string artifact, reference, on_failure = "error", report_path, html_path, artifact_format;
  std::vector<std::string> validator_names, validator_options;
  validate->add_option("artifact", artifact, "The quantized file")->required();
  validate->add_option("--reference", reference, "The original model")->required();
  validate->add_option("--validators", validator_names,
                       "Comma-separated validators (default: sqnr,size,load_run,range)")
      ->delimiter(',');
  validate->add_option("--option", validator_options,
                       "A validator option: --option sqnr.min_db=30 (YAML value)");
  validate->add_option("--on-failure", on_failure, "error | warn | ignore")
      ->check(CLI::IsMember({"error", "warn", "ignore"}));
  validate->add_option("--format", artifact_format, "The artifact's format plugin");
  validate->add_option("--report", report_path, "Write the JSON report here");
  bool validate_trust = false;
  validate->add_flag("--trust-torchscript", validate_trust, "Allow loading TorchScript archives (runs their code)");
  validate->add_option("--html", html_path, "Write the HTML report here");
  std::vector<int64_t> input_shape;
  int64_t vocab_size = 0;
  validate->add_option("--input-shape", input_shape, "What a runnable reference takes: --input-shape 1,3,224,224")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  validate->add_option("--vocab-size", vocab_size, "With --input-shape: token ids in [0, N) instead of floats")
      ->check(CLI::PositiveNumber);
  validate->add_flag("--json", json, "Print the JSON report on stdout");
  validate->add_flag("--quiet,-q", quiet, "No summary");
  CLI::App* init = app.add_subcommand("init", "Write a commented recipe for a model from a preset; it runs as written");
  mq::cli::InitRequest init_request;
  bool list_presets = false;
  init->add_option("model", init_request.model, "The model: an HF directory, TorchScript, a state dict, safetensors");
  init->add_option("--preset", init_request.preset, "What to make (default w8a8-dynamic; --list shows them)");
  init->add_option("-o,--output", init_request.recipe, "Where to write the recipe (default recipe.yaml)");
  init->add_flag("--force", init_request.force, "Replace an existing recipe file");
  init->add_flag("--trust-torchscript", init_request.trust_torchscript,
                 "Allow loading a TorchScript archive (runs its code); the recipe says so too");
  init->add_option("--input-shape", init_request.input_shape, "What a TorchScript model takes: --input-shape 8,3,224,224")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  init->add_flag("--list", list_presets, "List the presets");
  init->add_flag("--json", json, "With --list: machine-readable");
  CLI::App* tokenize = app.add_subcommand("tokenize", "Print the token ids of a text file, as calibration from text gets them");
  std::string tokenize_model, tokenize_path;
  bool tokenize_lines = false, no_special = false;
  tokenize->add_option("file", tokenize_path, "A UTF-8 text file")->required();
  tokenize->add_option("--model", tokenize_model, "An HF model directory (its tokenizer.json), or a tokenizer.json")
      ->required();
  tokenize->add_flag("--lines", tokenize_lines, "Each line on its own (without its newline)");
  tokenize->add_flag("--no-special", no_special, "Without the special tokens the tokenizer adds (a bos)");
  tokenize->add_flag("--json", json, "JSON: {ids, tokens}; with --lines, a list of id lists");
  CLI::App* inspect = app.add_subcommand("inspect", "List a model file's tensors, quantization and provenance");
  std::string inspect_path, inspect_format;
  bool trust = false;
  inspect->add_option("file", inspect_path, "The file to inspect")->required();
  inspect->add_option("--format", inspect_format, "The file's format plugin (default: the first that reads it)");
  inspect->add_flag("--trust-torchscript", trust, "Allow loading a TorchScript archive (runs its code)");
  inspect->add_flag("--json", json, "Machine-readable output");
  bool inspect_recipe = false;
  inspect->add_flag("--recipe", inspect_recipe, "Print the recipe the artifact records, as mq-pipeline run takes it");
  CLI::App* verify = app.add_subcommand(
      "verify", "Run the recipe an artifact records again: identical, or the first tensor that differs (exit 5)");
  mq::VerifyRequest verify_request;
  bool strict = false;
  verify->add_option("artifact", verify_request.artifact, "An artifact mq wrote")->required();
  verify->add_option("--model", verify_request.model, "The input model (default: the one recorded)");
  verify->add_option("--calibration", verify_request.calibration, "The calibration file (default: the one recorded)");
  verify->add_flag("--strict", strict, "Plugin versions other than those recorded fail it (exit 5)");
  verify->add_flag("--trust-torchscript", trust, "Allow loading a TorchScript archive (runs its code)");
  verify->add_flag("--json", json, "Machine-readable result");
  check->add_flag("--json", json, "Machine-readable result");
  for (CLI::App* sub : {run, check}) {
    sub->add_option("recipe", recipe_path, "Recipe file (YAML)")->required();
    sub->add_option("--set", overrides, "Override a recipe key: --set quantizer.options.dtype=int8");
  }
  for (CLI::App* sub : {run, check, plugins, validate, inspect, init, verify})
    sub->add_option("--plugin-path", plugin_paths, "Directory or library searched first for plugins");
  run->add_flag("--json", json, "Print the JSON report on stdout");
  run->add_flag("--dry-run", dry_run,
                "Print, per tensor, the rule that matched, its spec and predicted bytes; write nothing");
  run->add_flag("--quiet,-q", quiet, "No progress and no summary");
  run->add_option("--threads", threads, "Worker threads (default: all cores)")->check(CLI::Range(1, 1024));
  plugins->add_flag("--json", json, "Machine-readable list");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return fail(mq::ExitCode::kUsage, std::string(e.what()) + " (see mq-pipeline --help)");
  }

  if (version) {
    fmt::print("mq-pipeline {} (commit {}, {} build; plugin API {}, ABI {})\n", MQ_VERSION_STRING,
               mq_build_commit(), MQ_BUILD_TYPE, MQ_API_VERSION, mq::abi_tag());
    return 0;
  }

  std::vector<fs::path> paths(plugin_paths.begin(), plugin_paths.end());
  try {
    if (plugins->parsed()) return list_plugins(paths, json);
    if (init->parsed()) {
      if (list_presets) return mq::cli::list_presets(json);
      if (init_request.model.empty()) return fail(mq::ExitCode::kUsage, "init: give a model, or --list");
      search_first(paths);
      return mq::cli::init_recipe(init_request);
    }
    if (tokenize->parsed()) return tokenize_file(tokenize_model, tokenize_path, json, tokenize_lines, !no_special);
    if (inspect->parsed()) return inspect_file(inspect_path, inspect_format, trust, json, inspect_recipe, paths);
    if (verify->parsed()) return verify_file(verify_request, strict, trust, json, paths);
    if (validate->parsed()) {
      mq::RunOptions options;
      options.plugin_paths = paths;
      options.warn = [](const std::string& m) { fmt::print(stderr, "mq-pipeline: warning: {}\n", one_line(m)); };
      mq::ValidateRequest request = validation_request(artifact, reference, validator_names, validator_options,
                                                       on_failure, artifact_format, report_path, html_path);
      if (validate_trust) request.format_options.set("trust_torchscript", mq::Value::boolean(true));
      if (!input_shape.empty()) request.input = mq::ModelInput{input_shape, vocab_size};
      return finish(mq::validate_artifact(request, options), json, quiet);
    }
    if (!run->parsed() && !check->parsed()) {
      std::cout << app.help();
      return static_cast<int>(mq::ExitCode::kUsage);
    }
    mq::cli::ConsoleProgress progress(stderr);
    mq::RunOptions options;
    options.plugin_paths = paths;
    options.threads = threads;
    options.progress = quiet || check->parsed() ? nullptr : &progress;
    options.warn = [](const std::string& m) { fmt::print(stderr, "mq-pipeline: warning: {}\n", one_line(m)); };
    mq::Pipeline pipeline(mq::load_recipe(recipe_path, overrides), options);
    if (check->parsed()) {  // the dry run's checks, quietly
      const mq::Report plan = pipeline.plan();
      return print_check(recipe_path, plan, json);
    }
    if (dry_run) {
      const mq::Report plan = pipeline.plan();
      fmt::print("{}", json ? plan.to_json() : plan.plan_table());
      return 0;
    }
    return finish(pipeline.run(), json, quiet);
  } catch (const mq::Error& e) {
    return fail(e.code(), e.what());
  } catch (const c10::Error& e) {  // its what() carries a backtrace
    return fail(mq::ExitCode::kInternal, std::string("internal error: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return fail(mq::ExitCode::kInternal, std::string("internal error: ") + e.what());
  }
}

}  // namespace

// A finished command leaves at once: its files are written, flushed and closed, and
// LibTorch's static destructors would unregister each of its thousands of operators
// first (0.1 s a run). Sanitized builds exit normally, for LeakSanitizer's check.
int main(int argc, char** argv) {
  // A sharded model keeps a descriptor open per shard (its tensors are read through it):
  // the soft limit on open files, often 1024, goes up to the hard one, as systemd advises
  // programs that need many (nothing here uses select()).
  if (rlimit files{}; getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  const int code = command(argc, argv);
#if defined(__SANITIZE_ADDRESS__)
  return code;
#else
  std::fflush(nullptr);
  std::_Exit(code);
#endif
}
