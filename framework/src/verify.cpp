// `mq-pipeline verify`: the recipe an artifact records, run again into a scratch
// directory, and the two compared tensor by tensor.

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "hash.hpp"
#include "mq/error.hpp"
#include "mq/pipeline.hpp"
#include "mq/quantize.hpp"

namespace mq {
namespace {

namespace fs = std::filesystem;

// A directory of our own, removed with what is in it.
class ScratchDirectory {
 public:
  explicit ScratchDirectory(const fs::path& near) {
    std::error_code ec;
    for (int i = 0; i < 100; ++i) {
      path_ = near / fmt::format(".mq-verify-{}-{}", getpid(), i);
      if (fs::create_directory(path_, ec)) return;
    }
    path_ = fs::temp_directory_path() / fmt::format("mq-verify-{}", getpid());
    fs::create_directories(path_, ec);
    if (ec) throw OutputError(path_.string() + ": cannot create a directory to verify in (" + ec.message() + ")");
  }
  ~ScratchDirectory() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string quoted(const fs::path& p) { return nlohmann::json(fs::absolute(p).lexically_normal().string()).dump(); }

// Why entry `b` (made now) is not `a` (recorded), or "".
std::string difference(const QuantizedEntry& a, const QuantizedEntry& b) {
  if (a.name != b.name) return "the artifact's tensor " + a.name + " is " + b.name + " in the run";
  if (a.quantized.has_value() != b.quantized.has_value())
    return a.name + " is " + (a.quantized ? "quantized" : "float") + " in the artifact, not in the run";
  const at::Tensor x = a.quantized ? a.quantized->data : a.tensor;
  const at::Tensor y = b.quantized ? b.quantized->data : b.tensor;
  if (a.quantized && a.quantized->spec.to_string() != b.quantized->spec.to_string())
    return fmt::format("{} is {} in the artifact, {} in the run", a.name, a.quantized->spec.to_string(),
                       b.quantized->spec.to_string());
  if (x.scalar_type() != y.scalar_type() || x.sizes() != y.sizes())
    return fmt::format("{} is {} {} in the artifact, {} {} in the run", a.name, c10::toString(x.scalar_type()),
                       c10::str(x.sizes()), c10::toString(y.scalar_type()), c10::str(y.sizes()));
  const bool same_params = !a.quantized || !a.quantized->spec.is_integer() ||
                           (at::equal(a.quantized->qparams.scale, b.quantized->qparams.scale) &&
                            at::equal(a.quantized->qparams.zero_point, b.quantized->qparams.zero_point) &&
                            same_group_index(*a.quantized, *b.quantized));
  if (at::equal(x, y) && same_params) return "";
  const at::Tensor u = a.quantized ? a.quantized->dequantize() : a.tensor.to(at::kFloat);
  const at::Tensor v = b.quantized ? b.quantized->dequantize() : b.tensor.to(at::kFloat);
  const int64_t differ = at::ne(u, v).sum().item<int64_t>();
  return fmt::format("{} differs: {} of {} values, by up to {:.6g}", a.name, differ, u.numel(),
                     (u - v).abs().max().item<double>());
}

}  // namespace

VerifyResult verify_artifact(const VerifyRequest& request, RunOptions options) {
  const QuantizedModel recorded = load_quantized_model(request.artifact, "", request.format_options);
  const auto recipe_text = recorded.metadata.find(kRecipeKey);
  if (recipe_text == recorded.metadata.end())
    throw InputError(request.artifact.string() + " records no recipe (made by another tool, or by mq before it "
                     "recorded them): nothing to verify against");
  const auto input_hash = recorded.metadata.find("mq.input_hash");
  if (input_hash == recorded.metadata.end())
    throw InputError(request.artifact.string() + " records a recipe but not the hash of its input");

  const fs::path artifact = fs::absolute(request.artifact).lexically_normal();
  ScratchDirectory scratch(artifact.parent_path());
  std::vector<std::string> overrides = {"format.output=" + quoted(scratch.path() / artifact.filename()),
                                        "validators=[]", "report=null", "html_report=null"};
  if (!request.model.empty()) overrides.push_back("model.path=" + quoted(request.model));
  Recipe recipe = parse_recipe(recipe_text->second, scratch.path() / "recorded-recipe.yaml", overrides);
  if (!request.calibration.empty()) {
    if (!recipe.calibration || recipe.calibration->random)
      throw RecipeError("--calibration: the recorded recipe " +
                        std::string(recipe.calibration ? "calibrates on seeded random batches" : "has no calibration"));
    if (recipe.calibration->text)
      recipe.calibration->text->source.path = fs::absolute(request.calibration);
    else
      recipe.calibration->path = fs::absolute(request.calibration);
  }

  VerifyResult result;
  const std::string hash = detail::hash_path(recipe.model_path);
  if (hash != input_hash->second) {
    result.status = ExitCode::kBadInput;
    result.message = fmt::format("{} is not the input recorded (hash {}, recorded {})", recipe.model_path.string(),
                                 hash, input_hash->second);
    return result;
  }

  Pipeline(recipe, options).run();
  const QuantizedModel made = load_quantized_model(recipe.output, "", request.format_options);

  // The plugins that made the tensors (validators, which verify does not run, left out).
  const auto plugins = [](const QuantizedModel& m) {
    const auto it = m.metadata.find("mq.plugins");
    std::string out;
    std::string_view list = it == m.metadata.end() ? std::string_view() : std::string_view(it->second);
    while (!list.empty()) {
      const std::string_view item = list.substr(0, list.find(','));
      list.remove_prefix(std::min(list.size(), item.size() + 1));
      if (item.rfind("validator/", 0) != 0) out += (out.empty() ? "" : ",") + std::string(item);
    }
    return out;
  };
  if (plugins(recorded) != plugins(made)) {
    const std::string what = "plugins differ from those recorded (" + plugins(recorded) + " then, " + plugins(made) + " now)";
    if (request.strict) {
      result.status = ExitCode::kValidationFailed;
      result.message = what;
      return result;
    }
    result.warnings.push_back(what);
  }
  for (size_t i = 0; i < std::min(recorded.entries.size(), made.entries.size()); ++i)
    if (const std::string why = difference(recorded.entries[i], made.entries[i]); !why.empty()) {
      result.status = ExitCode::kValidationFailed;
      result.message = why;
      return result;
    }
  if (recorded.entries.size() != made.entries.size()) {
    result.status = ExitCode::kValidationFailed;
    result.message = fmt::format("the artifact has {} tensors, the run made {}", recorded.entries.size(), made.entries.size());
    return result;
  }
  for (const auto& [layer, qp] : recorded.activation_qparams) {
    const auto other = made.activation_qparams.find(layer);
    if (other == made.activation_qparams.end() || !at::equal(qp.scale, other->second.scale) ||
        !at::equal(qp.zero_point, other->second.zero_point)) {
      result.status = ExitCode::kValidationFailed;
      result.message = "the activation qparams of " + layer + " differ";
      return result;
    }
  }
  result.message = fmt::format("identical: {} tensors as the recorded recipe makes them from {}", made.entries.size(),
                               recipe.model_path.string());
  return result;
}

}  // namespace mq
