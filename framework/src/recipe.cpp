#include "mq/recipe.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include "hash.hpp"
#include "json_text.hpp"
#include "mq/error.hpp"
#include "mq/layer_selection.hpp"
#include "suggest.hpp"
#include "yaml_value.hpp"

namespace fs = std::filesystem;

namespace mq {
namespace {

constexpr std::uintmax_t kMaxRecipeBytes = 1 << 20;

[[noreturn]] void fail(const SourceLocation& location, const std::string& message) {
  const std::string where = location.to_string();
  throw RecipeError(where.empty() ? message : where + ": " + message);
}

[[noreturn]] void fail(const Value& at, const std::string& message) {
  const std::string where = at.location.to_string();
  throw RecipeError(where.empty() ? message : where + ": " + message);
}

// Rejects keys outside `allowed`, with a suggestion.
void check_keys(const Value& map, const std::string& section,
                const std::vector<std::string>& allowed) {
  for (const MapEntry& e : map.as_map()) {
    if (std::find(allowed.begin(), allowed.end(), e.key) != allowed.end()) continue;
    fail(e.key_location.line ? e.key_location : e.value.location, "unknown key '" + e.key + "'" + (section.empty() ? "" : " in '" + section + "'") +
                 detail::did_you_mean(e.key, allowed));
  }
}

const Value& expect(const Value& v, Value::Kind kind, const std::string& name) {
  const bool ok = v.kind() == kind || (kind == Value::Kind::kFloat && v.kind() == Value::Kind::kInt);
  if (!ok) fail(v, "'" + name + "' must be " + to_string(kind) + ", got " + to_string(v.kind()));
  return v;
}

// A key set to null counts as absent, so `--set report=null` drops an optional key.
const Value* present(const Value& map, const std::string& key) {
  const Value* v = map.find(key);
  return v && !v->is_null() ? v : nullptr;
}

const Value* optional_field(const Value& map, const std::string& key, Value::Kind kind,
                            const std::string& section) {
  const Value* v = present(map, key);
  if (!v) return nullptr;
  expect(*v, kind, section.empty() ? key : section + "." + key);
  return v;
}

const Value& required_field(const Value& map, const std::string& key, Value::Kind kind,
                            const std::string& section) {
  const Value* v = optional_field(map, key, kind, section);
  if (!v) fail(map, "'" + section + "' needs '" + key + "'");
  return *v;
}

fs::path resolve(const fs::path& base, const std::string& text) {
  const fs::path p(text);
  return (p.is_absolute() ? p : base / p).lexically_normal();
}

OnFailure parse_on_failure(const Value& v, const std::string& name) {
  const std::string& text = expect(v, Value::Kind::kString, name).as_string();
  if (text == "error") return OnFailure::kError;
  if (text == "warn") return OnFailure::kWarn;
  if (text == "ignore") return OnFailure::kIgnore;
  fail(v, "'" + name + "' must be one of 'error', 'warn', 'ignore', got '" + text + "'" +
              detail::did_you_mean(text, {"error", "warn", "ignore"}));
}

PluginStep parse_step(const Value& v, const std::string& section,
                      const std::vector<std::string>& extra_keys = {}) {
  expect(v, Value::Kind::kMap, section);
  std::vector<std::string> allowed{"plugin", "options"};
  allowed.insert(allowed.end(), extra_keys.begin(), extra_keys.end());
  check_keys(v, section, allowed);
  PluginStep step;
  step.plugin = required_field(v, "plugin", Value::Kind::kString, section).as_string();
  if (const Value* options = v.find("options")) {
    if (!options->is_null()) step.options = expect(*options, Value::Kind::kMap, section + ".options");
  }
  step.location = v.location;
  return step;
}

// Applies one "a.b.c=value" override to the document.
void apply_override(Value& root, const std::string& assignment) {
  const auto usage = [&](const std::string& why) {
    throw RecipeError("--set '" + assignment + "': " + why +
                      " (expected KEY=VALUE with a dotted key, e.g. quantizer.options.dtype=int8)");
  };
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos) usage("no '='");
  const std::string key = assignment.substr(0, eq);
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
  if (key.empty() || key.back() == '.' || parts.empty()) usage("empty key");
  for (const std::string& p : parts)
    if (p.empty()) usage("empty key segment");

  Value value = detail::parse_yaml(assignment.substr(eq + 1), "--set " + key);
  value.location = {"--set " + key, 0, 0};

  Value* node = &root;
  std::string walked;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    const bool last = i + 1 == parts.size();
    if (node->kind() == Value::Kind::kList) {
      char* end = nullptr;
      const long index = std::strtol(part.c_str(), &end, 10);
      auto& items = const_cast<std::vector<Value>&>(node->as_list());
      if (*end != '\0' || index < 0 || static_cast<size_t>(index) >= items.size())
        usage("'" + walked + "' is a list of " + std::to_string(items.size()) +
              " items; '" + part + "' is not an index into it");
      node = &items[static_cast<size_t>(index)];
    } else {
      if (node->is_null()) *node = Value::map();
      if (node->kind() != Value::Kind::kMap)
        usage("'" + walked + "' is " + to_string(node->kind()) + ", not a map");
      if (!node->find(part)) node->set(part, last ? Value() : Value::map());
      for (MapEntry& e : node->as_map())
        if (e.key == part) node = &e.value;
    }
    if (last) *node = value;
    walked += (walked.empty() ? "" : ".") + part;
  }
}

// calibration.text (or evaluation.text: `section`). The tokenizer defaults to the model's: its directory, or the
// directory of the file (model.safetensors, an index) it was read from.
TextSamples parse_text(const Value& text, const fs::path& base, const fs::path& model, const std::string& section) {
  check_keys(text, section, {"path", "field", "tokenizer", "samples", "seq_len", "seed", "shuffle", "cut"});
  TextSamples t;
  t.source.path = resolve(base, required_field(text, "path", Value::Kind::kString, section).as_string());
  if (const Value* f = optional_field(text, "field", Value::Kind::kString, section)) {
    if (t.source.path.extension() != ".jsonl") fail(*f, section + ".field is for a .jsonl file");
    t.source.field = f->as_string();
  }
  std::error_code ec;
  t.tokenizer = fs::is_directory(model, ec) || model.empty() ? model : model.parent_path();
  if (const Value* k = optional_field(text, "tokenizer", Value::Kind::kString, section))
    t.tokenizer = resolve(base, k->as_string());
  for (auto [key, field] : {std::pair{"samples", &t.samples}, {"seq_len", &t.seq_len}})
    if (const Value* v = optional_field(text, key, Value::Kind::kInt, section)) {
      if (v->as_int() <= 0) fail(*v, section + "." + key + " must be positive");
      *field = v->as_int();
    }
  if (const Value* v = optional_field(text, "seed", Value::Kind::kInt, section)) t.seed = v->as_int();
  if (const Value* v = optional_field(text, "shuffle", Value::Kind::kBool, section)) t.shuffle = v->as_bool();
  if (const Value* v = optional_field(text, "cut", Value::Kind::kString, section)) {
    if (v->as_string() != "concatenate" && v->as_string() != "document")
      fail(*v, section + ".cut must be concatenate or document, not '" + v->as_string() + "'");
    t.cut = v->as_string() == "document" ? TextCut::kDocument : TextCut::kConcatenate;
  }
  return t;
}

// What mixed precision chooses from when the recipe names no candidates.
const char* const kDefaultCandidates[][3] = {
    {"int4", "per_group", "128"}, {"int4", "per_group", "32"}, {"int8", "per_channel", ""}, {"bf16", "", ""}};

Target parse_target(const Value& v) {
  expect(v, Value::Kind::kMap, "target");
  check_keys(v, "target", {"bits_per_weight", "max_bytes", "max_kl", "min_output_sqnr_db", "candidates", "sensitivity"});
  Target t;
  if (const Value* s = optional_field(v, "sensitivity", Value::Kind::kString, "target")) {
    if (s->as_string() == "output") t.sensitivity = Target::Sensitivity::kOutput;
    else if (s->as_string() == "output_sqnr") t.sensitivity = Target::Sensitivity::kOutputSqnr;
    else if (s->as_string() != "weight")
      fail(*s, "target.sensitivity must be 'weight', 'output' or 'output_sqnr', got '" + s->as_string() + "'" +
                   detail::did_you_mean(s->as_string(), {"weight", "output", "output_sqnr"}));
  }
  const Value* bits = optional_field(v, "bits_per_weight", Value::Kind::kFloat, "target");
  const Value* bytes = optional_field(v, "max_bytes", Value::Kind::kInt, "target");
  const Value* kl = optional_field(v, "max_kl", Value::Kind::kFloat, "target");
  const Value* sqnr = optional_field(v, "min_output_sqnr_db", Value::Kind::kFloat, "target");
  if ((bits != nullptr) + (bytes != nullptr) + (kl != nullptr) + (sqnr != nullptr) != 1)
    fail(v, "'target' needs exactly one of 'bits_per_weight', 'max_bytes', 'max_kl' or 'min_output_sqnr_db'");
  if (bits) {
    t.bits_per_weight = bits->as_float();
    if (!(t.bits_per_weight > 0 && t.bits_per_weight <= 64)) fail(*bits, "target.bits_per_weight must be in (0, 64]");
  } else if (bytes) {
    t.max_bytes = bytes->as_int();
    if (t.max_bytes <= 0) fail(*bytes, "target.max_bytes must be positive");
  } else if (kl) {
    t.max_kl = kl->as_float();
    if (!(t.max_kl > 0)) fail(*kl, "target.max_kl must be positive");
    if (t.sensitivity != Target::Sensitivity::kOutput)
      fail(*kl, "target.max_kl bounds the measured output KL: set target.sensitivity: output");
  } else {
    t.min_output_sqnr_db = sqnr->as_float();
    if (!(t.min_output_sqnr_db > 0)) fail(*sqnr, "target.min_output_sqnr_db must be positive");
    if (t.sensitivity != Target::Sensitivity::kOutputSqnr)
      fail(*sqnr, "target.min_output_sqnr_db bounds the measured output noise: set target.sensitivity: output_sqnr");
  }
  const auto add = [&](QuantSpec spec, const Value& at) {
    if (spec.is_block()) fail(at, "target.candidates: " + std::string(to_string(spec.dtype)) + " is a llama.cpp block "
                                  "type; mixed precision chooses among compressed-tensors' types");
    for (const QuantSpec& c : t.candidates)
      if (c.to_string() == spec.to_string()) fail(at, "target.candidates: " + spec.to_string() + " is listed twice");
    t.candidates.push_back(spec);
  };
  if (const Value* list = optional_field(v, "candidates", Value::Kind::kList, "target")) {
    for (const Value& c : list->as_list()) add(spec_from_fields(c, "target.candidates[]"), c);
    if (t.candidates.size() < 2) fail(*list, "target.candidates: give at least two specs to choose from");
  } else {
    for (const auto& [dtype, granularity, group] : kDefaultCandidates) {
      Value fields = Value::map();
      fields.set("dtype", Value::string(dtype));
      if (*granularity) fields.set("granularity", Value::string(granularity));
      if (*group) fields.set("group_size", Value::integer(std::stoll(group)));
      add(spec_from_fields(fields, "target.candidates"), v);
    }
  }
  return t;
}

// A list of positive integers, not empty.
std::vector<int64_t> positive_shape(const Value& list, const std::string& what) {
  std::vector<int64_t> shape;
  for (const Value& d : list.as_list()) {
    const int64_t n = expect(d, Value::Kind::kInt, what + "[]").as_int();
    if (n <= 0) fail(d, what + " dimensions must be positive");
    shape.push_back(n);
  }
  if (shape.empty()) fail(list, what + " must not be empty");
  return shape;
}

// `calibration:` or `evaluation:` (`section`): one of a tensor file, random batches, text.
Calibration parse_batches(const Value& cal, const std::string& section, const fs::path& base, const fs::path& model) {
  expect(cal, Value::Kind::kMap, section);
  check_keys(cal, section, {"path", "random", "text"});
  Calibration c;
  const Value* path = optional_field(cal, "path", Value::Kind::kString, section);
  const Value* random = optional_field(cal, "random", Value::Kind::kMap, section);
  const Value* text = optional_field(cal, "text", Value::Kind::kMap, section);
  if ((path != nullptr) + (random != nullptr) + (text != nullptr) != 1)
    fail(cal, "'" + section + "' needs exactly one of 'path', 'random' or 'text'");
  if (path) c.path = resolve(base, path->as_string());
  if (text) c.text = parse_text(*text, base, model, section + ".text");
  if (random) {
    check_keys(*random, section + ".random", {"shape", "batches", "seed", "vocab_size"});
    RandomCalibration rc;
    const Value& shape = required_field(*random, "shape", Value::Kind::kList, section + ".random");
    rc.shape = positive_shape(shape, section + ".random.shape");
    if (const Value* b = optional_field(*random, "batches", Value::Kind::kInt, section + ".random")) {
      if (b->as_int() <= 0) fail(*b, section + ".random.batches must be positive");
      rc.batches = b->as_int();
    }
    if (const Value* s = optional_field(*random, "seed", Value::Kind::kInt, section + ".random"))
      rc.seed = s->as_int();
    if (const Value* v = optional_field(*random, "vocab_size", Value::Kind::kInt, section + ".random")) {
      if (v->as_int() <= 0) fail(*v, section + ".random.vocab_size must be positive");
      rc.vocab_size = v->as_int();
    }
    int64_t elements = rc.batches;  // all batches are made up front
    for (int64_t d : rc.shape)
      if (__builtin_mul_overflow(elements, d, &elements) || elements > (int64_t{1} << 40))
        fail(shape, section + ".random: " + std::to_string(rc.batches) + " batches of this shape are more than "
                    "2^40 values (4 TiB of float32)");
    c.random = rc;
  }
  return c;
}

Recipe build(const Value& root, const fs::path& file, const std::string& name) {
  const fs::path base = file.empty() ? fs::current_path() : file.parent_path();
  if (root.is_null()) throw RecipeError(name + ": recipe is empty");
  expect(root, Value::Kind::kMap, "recipe");
  check_keys(root, "",
             {"version", "model", "calibration", "evaluation", "observer", "quantizer", "target", "format", "validators",
              "on_failure", "report", "html_report", "plugins"});
  Recipe r;
  r.file = file;

  const Value* version = present(root, "version");
  if (!version) throw RecipeError(name + ": 'version' is required (this mq reads version: 1)");
  r.version = static_cast<int>(expect(*version, Value::Kind::kInt, "version").as_int());
  if (version->as_int() != 1)
    fail(*version, "unsupported recipe version " + std::to_string(version->as_int()) +
                       " (this mq reads version: 1)");

  const Value* model = present(root, "model");
  if (!model) throw RecipeError(name + ": 'model' is required");
  expect(*model, Value::Kind::kMap, "model");
  check_keys(*model, "model", {"path", "format", "options", "input"});
  r.model_path = resolve(base, required_field(*model, "path", Value::Kind::kString, "model").as_string());
  if (const Value* f = optional_field(*model, "format", Value::Kind::kString, "model"))
    r.model_format = f->as_string();
  if (const Value* o = optional_field(*model, "options", Value::Kind::kMap, "model")) r.model_options = *o;
  if (const Value* input = optional_field(*model, "input", Value::Kind::kMap, "model")) {
    check_keys(*input, "model.input", {"shape", "vocab_size"});
    ModelInput in;
    in.shape = positive_shape(required_field(*input, "shape", Value::Kind::kList, "model.input"), "model.input.shape");
    if (const Value* v = optional_field(*input, "vocab_size", Value::Kind::kInt, "model.input")) {
      if (v->as_int() <= 0) fail(*v, "model.input.vocab_size must be positive");
      in.vocab_size = v->as_int();
    }
    int64_t elements = 1;
    for (int64_t d : in.shape)
      if (__builtin_mul_overflow(elements, d, &elements) || elements > (int64_t{1} << 32))
        fail(*input, "model.input: more than 2^32 values");
    r.model_input = in;
  }

  if (const Value* cal = present(root, "calibration")) r.calibration = parse_batches(*cal, "calibration", base, r.model_path);
  if (const Value* ev = present(root, "evaluation")) r.evaluation = parse_batches(*ev, "evaluation", base, r.model_path);

  if (const Value* obs = present(root, "observer")) r.observer = parse_step(*obs, "observer");

  const Value* quantizer = present(root, "quantizer");
  if (!quantizer) throw RecipeError(name + ": 'quantizer' is required");
  r.quantizer = parse_step(*quantizer, "quantizer");

  if (const Value* target = present(root, "target")) r.target = parse_target(*target);

  const Value* format = present(root, "format");
  if (!format) throw RecipeError(name + ": 'format' is required");
  r.format = parse_step(*format, "format", {"output"});
  r.output = resolve(base, required_field(*format, "output", Value::Kind::kString, "format").as_string());

  if (const Value* on_failure = present(root, "on_failure"))
    r.on_failure = parse_on_failure(*on_failure, "on_failure");

  if (const Value* validators = present(root, "validators")) {
    if (!validators->is_null()) {
      for (const Value& v : expect(*validators, Value::Kind::kList, "validators").as_list()) {
        ValidatorStep step{parse_step(v, "validators[]", {"on_failure"}), std::nullopt};
        if (const Value* policy = present(v, "on_failure"))
          step.on_failure = parse_on_failure(*policy, "on_failure");
        r.validators.push_back(std::move(step));
      }
    }
  }

  if (const Value* report = optional_field(root, "report", Value::Kind::kString, ""))
    r.report = resolve(base, report->as_string());
  if (const Value* html = optional_field(root, "html_report", Value::Kind::kString, ""))
    r.html_report = resolve(base, html->as_string());

  if (const Value* plugins = optional_field(root, "plugins", Value::Kind::kMap, "")) {
    check_keys(*plugins, "plugins", {"paths"});
    if (const Value* paths = optional_field(*plugins, "paths", Value::Kind::kList, "plugins")) {
      for (const Value& p : paths->as_list()) {
        const fs::path dir = resolve(base, expect(p, Value::Kind::kString, "plugins.paths[]").as_string());
        if (!fs::exists(dir)) fail(p, "plugin path '" + dir.string() + "' does not exist");
        r.plugin_paths.push_back(dir);
      }
    }
  }
  return r;
}

nlohmann::ordered_json step_json(const PluginStep& step) {
  return {{"plugin", step.plugin}, {"options", nlohmann::ordered_json::parse(step.options.to_json())}};
}

}  // namespace

const char* to_string(OnFailure policy) {
  switch (policy) {
    case OnFailure::kError: return "error";
    case OnFailure::kWarn: return "warn";
    case OnFailure::kIgnore: return "ignore";
  }
  return "error";
}

namespace {

// The recipe as JSON: paths relative to the recipe (the hash's), or absolute.
nlohmann::ordered_json recipe_json(const Recipe& r, bool absolute) {
  const fs::path base = r.file.empty() ? fs::path() : r.file.parent_path();
  const auto rel = [&](const fs::path& p) {
    if (absolute) return p.empty() ? std::string() : fs::absolute(p).lexically_normal().generic_string();
    return base.empty() ? p.generic_string() : p.lexically_relative(base).generic_string();
  };
  nlohmann::ordered_json j;
  j["version"] = r.version;
  j["model"] = {{"path", rel(r.model_path)}, {"format", r.model_format},
                {"options", nlohmann::ordered_json::parse(r.model_options.to_json())}};
  if (r.model_input) {
    j["model"]["input"] = {{"shape", r.model_input->shape}};
    if (r.model_input->vocab_size) j["model"]["input"]["vocab_size"] = r.model_input->vocab_size;
  }
  const auto batches = [&](const Calibration& c) {
    nlohmann::ordered_json out;
    if (const auto& random = c.random) {
      out = {{"random", {{"shape", random->shape}, {"batches", random->batches}, {"seed", random->seed}}}};
      if (random->vocab_size) out["random"]["vocab_size"] = random->vocab_size;
    } else if (const auto& text = c.text) {
      out = {{"text",
              {{"path", rel(text->source.path)},
               {"field", text->source.field},
               {"tokenizer", rel(text->tokenizer)},
               {"samples", text->samples},
               {"seq_len", text->seq_len},
               {"seed", text->seed},
               {"shuffle", text->shuffle},
               {"cut", text->cut == TextCut::kConcatenate ? "concatenate" : "document"}}}};
      if (absolute) {  // as a recipe takes it: no empty field or tokenizer
        if (text->source.path.extension() != ".jsonl") out["text"].erase("field");
        if (text->tokenizer.empty()) out["text"].erase("tokenizer");
      }
    } else {
      out = {{"path", rel(c.path)}};
    }
    return out;
  };
  if (r.calibration) j["calibration"] = batches(*r.calibration);
  if (r.evaluation) j["evaluation"] = batches(*r.evaluation);
  j["observer"] = step_json(r.observer);
  j["quantizer"] = step_json(r.quantizer);
  if (r.target) {
    auto& t = j["target"];
    if (r.target->bits_per_weight > 0) t["bits_per_weight"] = r.target->bits_per_weight;
    else if (r.target->max_bytes > 0) t["max_bytes"] = r.target->max_bytes;
    else if (r.target->max_kl > 0) t["max_kl"] = r.target->max_kl;
    else t["min_output_sqnr_db"] = r.target->min_output_sqnr_db;
    t["sensitivity"] = r.target->sensitivity == Target::Sensitivity::kOutput       ? "output"
                       : r.target->sensitivity == Target::Sensitivity::kOutputSqnr ? "output_sqnr"
                                                                                   : "weight";
    t["candidates"] = nlohmann::ordered_json::array();
    for (const QuantSpec& c : r.target->candidates) {  // as the recipe takes them
      nlohmann::ordered_json spec = {{"dtype", to_string(c.dtype)}, {"granularity", to_string(c.granularity)}};
      if (c.granularity == Granularity::kPerGroup) spec["group_size"] = c.group_size;
      spec["scheme"] = to_string(c.scheme);
      spec["reduce_range"] = c.reduce_range;
      t["candidates"].push_back(spec);
    }
  }
  j["format"] = step_json(r.format);
  j["format"]["output"] = rel(r.output);
  j["validators"] = nlohmann::ordered_json::array();
  for (const ValidatorStep& v : r.validators) {
    auto step = step_json(v.step);
    step["on_failure"] = to_string(v.on_failure.value_or(r.on_failure));
    j["validators"].push_back(step);
  }
  j["on_failure"] = to_string(r.on_failure);
  return j;
}

}  // namespace

std::string Recipe::canonical_json() const { return detail::json_text(recipe_json(*this, false)); }

std::string Recipe::resolved_json() const {
  nlohmann::ordered_json j = recipe_json(*this, true);
  if (!plugin_paths.empty()) {
    j["plugins"] = {{"paths", nlohmann::ordered_json::array()}};
    for (const fs::path& p : plugin_paths) j["plugins"]["paths"].push_back(fs::absolute(p).lexically_normal().generic_string());
  }
  return detail::json_text(j, 2);  // a path that is not UTF-8 shows U+FFFD: verify it with --model
}

std::vector<ValidatorStep> default_validators() {
  std::vector<ValidatorStep> steps;
  for (const char* name : {"sqnr", "size", "load_run", "range"}) steps.push_back({{name, Value::map(), {}}, std::nullopt});
  return steps;
}

std::string Recipe::hash() const { return detail::hash_bytes(canonical_json()); }

Recipe parse_recipe(const std::string& text, const fs::path& file,
                    const std::vector<std::string>& overrides) {
  Value root = detail::parse_yaml(text, file.string());
  if (!overrides.empty() && root.is_null()) root = Value::map();
  for (const std::string& o : overrides) apply_override(root, o);
  return build(root, file.empty() ? fs::path() : fs::absolute(file).lexically_normal(),
               file.empty() ? "recipe" : file.string());
}

Recipe load_recipe(const fs::path& file, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (fs::is_directory(file, ec)) throw RecipeError(file.string() + ": is a directory, not a recipe");
  const auto size = fs::file_size(file, ec);
  if (ec) throw RecipeError(file.string() + ": cannot read recipe (" + ec.message() + ")");
  if (size > kMaxRecipeBytes)
    throw RecipeError(file.string() + ": recipe is " + std::to_string(size) +
                      " bytes; the limit is " + std::to_string(kMaxRecipeBytes));
  std::ifstream in(file, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) throw RecipeError(file.string() + ": cannot read recipe");
  return parse_recipe(text.str(), file, overrides);
}

}  // namespace mq
