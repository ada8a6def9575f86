#include "init_recipe.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "mq/error.hpp"
#include "mq/model.hpp"
#include "mq/quantize.hpp"
#include "mq/recipe.hpp"

namespace fs = std::filesystem;

namespace mq::cli {
namespace {

struct Preset {
  const char* name;
  const char* summary;
};

constexpr Preset kPresets[] = {
    {"w8a8-dynamic",
     "int8 weights (per channel, symmetric), activations quantized as they come: PyTorch's quantize_dynamic, "
     "vLLM's W8A8 dynamic (the default)"},
    {"w8a8-static",
     "int8 weights and activations, the activations' scales calibrated by running the model (TorchScript models)"},
    {"int4-weight-only", "int4 weights in groups of 128 (symmetric), activations in float: W4A16, for vLLM"},
    {"fp16", "float16 weights"},
    {"gguf-q8_0", "GGUF for llama.cpp (Llama-family HF directories): every weight in q8_0, as llama-quantize Q8_0"},
    {"gguf-q4_k_m",
     "GGUF for llama.cpp: q4_k, with attn_v and ffn_down in q6_k in the first and last eighth of blocks and every "
     "third between, and the head in q6_k, as llama-quantize Q4_K_M"},
    {"gguf-q5_k_m", "GGUF for llama.cpp: as gguf-q4_k_m around q5_k, as llama-quantize Q5_K_M"},
};

bool is_gguf(const Preset& preset) { return std::string(preset.name).rfind("gguf-", 0) == 0; }

// llama.cpp's use_more_bits (llama-quant.cpp): the blocks whose attn_v and ffn_down a
// _K_M type stores in q6_k.
bool more_bits(int layer, int layers) {
  return layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;
}

// The quantizer options of a gguf preset for a model of `layers` blocks, `tied` when it
// has no lm_head (its embedding is the head).
std::string gguf_options(const std::string& preset, int layers, bool tied) {
  const std::string type = preset.substr(5, 4);  // q8_0, q4_k, q5_k
  std::string out = "    dtype: " + type + "\n    layers: {types: [Linear, Embedding], replace: true}" +
                    "  # every weight, as llama.cpp (norms stay F32)\n";
  if (type == "q8_0") return out;
  out += "    overrides:  # llama.cpp's _K_M mix: more bits where errors cost most\n";
  out += std::string("      ") + (tied ? "model.embed_tokens" : "lm_head") + ": {dtype: q6_k}\n";
  for (int i = 0; i < layers; ++i)
    if (more_bits(i, layers))
      out += fmt::format("      model.layers.{0}.self_attn.v_proj: {{dtype: q6_k}}\n"
                         "      model.layers.{0}.mlp.down_proj: {{dtype: q6_k}}\n", i);
  return out;
}

// How many "model.layers.N." blocks `model` has.
int block_count(const Model& model) {
  int blocks = 0;
  for (const NamedTensor& t : model.tensors)
    if (t.name.rfind("model.layers.", 0) == 0) blocks = std::max(blocks, std::atoi(t.name.c_str() + 13) + 1);
  return blocks;
}

enum class Kind { kTorchScript, kHfDirectory, kSafetensors, kStateDict };

const char* describe(Kind kind) {
  switch (kind) {
    case Kind::kTorchScript: return "a TorchScript model";
    case Kind::kHfDirectory: return "a Hugging Face model directory";
    case Kind::kSafetensors: return "a safetensors checkpoint";
    case Kind::kStateDict: return "a PyTorch state dict";
  }
  return "";
}

Kind kind_of(const Model& model, const fs::path& path) {
  if (model.metadata.count(kHfDirectoryKey)) return Kind::kHfDirectory;
  if (model.runnable) return Kind::kTorchScript;
  const std::string name = path.filename().string();
  return name.find(".safetensors") != std::string::npos ? Kind::kSafetensors : Kind::kStateDict;
}

// "3 Linear, 2 Conv2d" (a recurrent layer once, not once per weight).
std::string layer_counts(const Model& model) {
  std::map<std::string, int> counts;
  std::set<std::string> seen;
  for (const Layer& l : model.layers)
    if (seen.insert(l.name).second) ++counts[to_string(l.kind)];
  std::string out;
  for (const auto& [kind, n] : counts) out += fmt::format("{}{} {}", out.empty() ? "" : ", ", n, kind);
  return out.empty() ? "no layers" : out;
}

// What forward passes feed a model mq runs: the request's shape (token ids where the
// model takes them), or a guess (mq::token_input, else from the first layer).
std::optional<ModelInput> model_input(const Model& model, const std::vector<int64_t>& shape) {
  const std::optional<ModelInput> tokens = token_input(model, 8);
  if (!shape.empty()) return ModelInput{shape, tokens ? tokens->vocab_size : 0};
  if (tokens) return tokens;
  std::vector<int64_t> guess = sample_input_shape(model, 8);
  if (guess.empty()) return std::nullopt;
  return ModelInput{guess, 0};
}

std::string yaml_list(const std::vector<int64_t>& values) {
  std::string out;
  for (const int64_t v : values) out += (out.empty() ? "" : ", ") + std::to_string(v);
  return "[" + out + "]";
}

std::string quoted(const std::string& s) { return nlohmann::json(s).dump(); }

struct Facts {
  Kind kind;
  int blocks = 0;     // HF decoders: model.layers.N
  bool tied = false;  // no lm_head: the embedding is the head
  std::string model_path;  // as the recipe writes it: relative to the recipe
  std::string stem;        // the output's name
  std::string summary;     // one line on the model
  std::optional<ModelInput> input;
  bool input_guessed = false;
};

std::string model_section(const Facts& f) {
  std::string out = "model:\n  path: " + quoted(f.model_path) +
                    (fs::path(f.model_path).is_absolute() ? "\n" : "  # relative to this file\n");
  if (f.kind == Kind::kTorchScript)
    out += "  options: {trust_torchscript: true}  # loading a TorchScript archive runs its code\n";
  if (f.input) {
    out += "  input: {shape: " + yaml_list(f.input->shape) +
           (f.input->vocab_size ? fmt::format(", vocab_size: {}", f.input->vocab_size) : "") + "}";
    out += f.input_guessed ? "  # guessed from the first layer: set what the model takes\n"
                           : "  # what forward passes (validators, checks) feed the model\n";
  }
  return out;
}

std::string recipe_text(const Preset& preset, const Facts& f, const std::string& command, const std::string& recipe) {
  const std::string name = preset.name;
  // Where each preset's artifact goes: TorchScript in, TorchScript out where PyTorch has
  // kernels for it (int8); safetensors (compressed-tensors, an HF directory for one) for
  // the rest and for checkpoints; a state dict stays a state dict.
  const bool torchscript_out = f.kind == Kind::kTorchScript && (name == "w8a8-dynamic" || name == "w8a8-static");
  const bool pt_out = torchscript_out || f.kind == Kind::kStateDict;
  const std::string output = "out/" + f.stem + "." + name +
                             (is_gguf(preset)                 ? ".gguf"
                              : f.kind == Kind::kHfDirectory ? ""
                              : pt_out                        ? ".pt"
                                                              : ".safetensors");
  std::string out = fmt::format(
      "# {}\n# Written by `{}` for {}.\n#   mq-pipeline check {}   # the plan; nothing written\n"
      "#   mq-pipeline run {}\nversion: 1\n",
      preset.summary, command, f.summary, recipe, recipe);
  out += model_section(f);
  double min_db = 30;
  if (name == "w8a8-static") {
    out += "calibration:\n"
           "  # A placeholder: random inputs calibrate activation scales poorly. Give real ones:\n"
           "  # path: calibration.safetensors (one batch per tensor, or a torch.save'd list)\n"
           "  random: {shape: " + yaml_list(f.input->shape) + ", batches: 4, seed: 0" +
           (f.input->vocab_size ? fmt::format(", vocab_size: {}", f.input->vocab_size) : "") + "}\n"
           "observer:\n  plugin: histogram  # PyTorch's default for activations; minmax, percentile, moving_average\n"
           "quantizer:\n  plugin: static\n  options:\n    dtype: int8\n    granularity: per_channel\n"
           "    scheme: symmetric\n";
  } else {
    out += "quantizer:\n  plugin: dynamic\n  options:\n";
    if (is_gguf(preset)) {
      out += gguf_options(name, f.blocks, f.tied);
      min_db = name == "gguf-q8_0" ? 30 : 15;
    } else if (name == "w8a8-dynamic") {
      out += "    dtype: int8\n    granularity: per_channel  # a scale per output channel\n    scheme: symmetric\n";
    } else if (name == "int4-weight-only") {
      out += "    dtype: int4\n    granularity: per_group\n    group_size: 128\n    scheme: symmetric\n";
      min_db = 15;
    } else {
      out += "    dtype: fp16\n";
      min_db = 60;
    }
  }
  if (!is_gguf(preset))
    out += "    # layers: {types: [Linear], exclude: [\"*.gate\"]}  # which layers; lm_head stays float by default\n"
           "    # overrides: {fc1: {dtype: int8}}                 # per layer or glob\n";
  out += fmt::format("format:\n  plugin: {}\n  output: {}{}\n", is_gguf(preset) ? "gguf" : pt_out ? "pt" : "safetensors",
                     quoted(output),
                     torchscript_out ? "  # TorchScript running PyTorch's int8 kernels" : "");
  out += fmt::format(
      "validators:  # each runs on the written artifact before it is moved into place\n"
      "  - {{plugin: sqnr, options: {{min_db: {}}}}}  # mean weight SQNR; min_layer_db, min_output_db too\n"
      "  - {{plugin: size}}                        # options: {{min_ratio: 3.0}} to gate on it\n"
      "  - {{plugin: load_run}}\n  - {{plugin: range}}\n"
      "on_failure: error  # a failed validator stops the run (exit 5) and nothing is written\n"
      "report: {}\n",
      min_db, quoted("out/" + f.stem + "." + name + ".report.json"));
  return out;
}

const Preset& find_preset(const std::string& name) {
  for (const Preset& p : kPresets)
    if (name == p.name) return p;
  std::string names;
  for (const Preset& p : kPresets) names += std::string(names.empty() ? "" : ", ") + p.name;
  throw RecipeError("unknown preset '" + name + "'; presets are " + names + " (mq-pipeline init --list)");
}

// `to` relative to directory `from` where it lies below it or its parent (the recipe
// moves with the repository they are in), else absolute.
std::string relative_to(const fs::path& to, const fs::path& from) {
  std::error_code ec;
  const fs::path rel = fs::relative(fs::absolute(to), fs::absolute(from), ec);
  const std::string text = rel.string();
  if (ec || rel.empty() || text.rfind("../..", 0) == 0 || text == "..") return fs::absolute(to).lexically_normal().string();
  return text;
}

}  // namespace

Value reader_options(const fs::path& path, bool trust_torchscript) {
  Value options = Value::map();
  const fs::path ext = path.extension();
  if (trust_torchscript && (ext == ".pt" || ext == ".pth")) options.set("trust_torchscript", Value::boolean(true));
  return options;
}

int list_presets(bool json) {
  if (json) {
    auto out = nlohmann::ordered_json::array();
    for (const Preset& p : kPresets) out.push_back({{"name", p.name}, {"summary", p.summary}});
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  for (const Preset& p : kPresets) fmt::print("{:<18} {}\n", p.name, p.summary);
  return 0;
}

int init_recipe(const InitRequest& request) {
  const Preset& preset = find_preset(request.preset);
  std::error_code ec;
  if (fs::exists(request.recipe, ec) && !request.force)
    throw RecipeError(request.recipe.string() + " exists; give another -o or --force to replace it");
  const Model model = load_model(request.model, "", reader_options(request.model, request.trust_torchscript));

  Facts f;
  f.kind = kind_of(model, request.model);
  fs::path recipe_dir = request.recipe.parent_path();
  if (recipe_dir.empty()) recipe_dir = ".";
  f.model_path = relative_to(request.model, recipe_dir);
  const fs::path model_name = fs::absolute(request.model).lexically_normal();
  f.stem = (model_name.has_filename() ? model_name : model_name.parent_path()).stem().string();
  f.summary = fmt::format("{} ({} tensors; {})", describe(f.kind), model.tensors.size(), layer_counts(model));
  if (model.runnable) {
    f.input = model_input(model, request.input_shape);
    f.input_guessed = f.input && request.input_shape.empty();
  } else if (!request.input_shape.empty()) {
    throw RecipeError("--input-shape is for models mq runs (TorchScript, HF directories of a family it runs); " +
                      request.model.string() + " is " + describe(f.kind));
  }
  f.blocks = block_count(model);
  f.tied = !model.find("lm_head.weight");
  if (is_gguf(preset) && (f.kind != Kind::kHfDirectory || !f.blocks))
    throw RecipeError("preset '" + std::string(preset.name) + "' writes GGUF of Hugging Face Llama-family "
                      "directories (config.json, tokenizer.json, model.layers.N weights): " + request.model.string() +
                      " is " + describe(f.kind) + (f.blocks ? "" : " without model.layers.N blocks"));
  if (std::string(preset.name) == "w8a8-static") {
    if (!model.runnable)
      throw RecipeError("preset 'w8a8-static' calibrates by running the model, and mq runs TorchScript models and "
                        "HF directories of the families its architecture plugins run: " + request.model.string() +
                        " is " + describe(f.kind) + " it does not run (w8a8-dynamic and int4-weight-only need no "
                        "calibration)");
    if (!f.input)
      throw RecipeError("preset 'w8a8-static' needs the model's input shape, which its first layer does not tell: "
                        "give --input-shape, e.g. --input-shape 8,3,224,224");
  }

  const std::string command = "mq-pipeline init " + request.model.string() + " --preset " + preset.name;
  const std::string text = recipe_text(preset, f, command, request.recipe.string());
  const fs::path temporary = request.recipe.string() + ".mq-tmp";
  {
    std::ofstream file(temporary, std::ios::binary | std::ios::trunc);
    file << text;
    file.close();
    if (!file) {
      fs::remove(temporary, ec);
      throw OutputError(request.recipe.string() + ": cannot write the recipe");
    }
  }
  fs::rename(temporary, request.recipe, ec);
  if (ec) {
    fs::remove(temporary, ec);
    throw OutputError(request.recipe.string() + ": cannot write the recipe");
  }
  fmt::print("wrote {}: preset {} for {}\n  next: mq-pipeline check {} && mq-pipeline run {}\n",
             request.recipe.string(), preset.name, f.summary, request.recipe.string(), request.recipe.string());
  return 0;
}

}  // namespace mq::cli
