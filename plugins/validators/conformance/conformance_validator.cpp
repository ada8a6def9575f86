// conformance: every Linear's scheme resolved from the written compressed-tensors
// quantization_config the way its loaders resolve it, against what was written. A layer
// in `ignore` (its exact name, or a "re:" pattern matched at its start) is not
// quantized; otherwise the first config group target naming it (exact or "re:"), or,
// failing that, naming its class ("Linear"), gives its scheme. Two groups naming one
// layer, or the layers vLLM loads as one (q/k/v, gate/up: mq::fused_unit) resolving
// to different schemes, fail too: loaders would load the model otherwise than written.

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <regex>

#include "mq/error.hpp"
#include "mq/mixed_precision.hpp"
#include "mq/validator.hpp"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;  // config groups in file order, as Python reads them

namespace {

// The quantization_config of an HF directory's config.json, or of a safetensors file's
// metadata; null when there is none (another format, or nothing quantized).
json read_config(const fs::path& written) {
  std::error_code ec;
  if (fs::is_directory(written, ec)) {
    std::ifstream in(written / "config.json");
    const json config = json::parse(in, nullptr, false);
    return config.is_object() && config.contains("quantization_config") ? config["quantization_config"] : json();
  }
  std::ifstream in(written, std::ios::binary);
  unsigned char size[8] = {};
  if (!in.read(reinterpret_cast<char*>(size), 8)) return nullptr;
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | size[i];
  if (n == 0 || n > (uint64_t{100} << 20) || n > fs::file_size(written, ec)) return nullptr;  // not safetensors
  std::string header(n, '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(n))) return nullptr;
  const json h = json::parse(header, nullptr, false);
  if (!h.is_object() || !h.contains("__metadata__") || !h["__metadata__"].contains("quantization_config"))
    return nullptr;
  const json& text = h["__metadata__"]["quantization_config"];
  return text.is_string() ? json::parse(text.get<std::string>(), nullptr, false) : json();
}

bool name_matches(const std::string& name, const std::string& target) {
  if (target.rfind("re:", 0) != 0) return target == name;
  try {
    return std::regex_search(name, std::regex(target.substr(3)), std::regex_constants::match_continuous);
  } catch (const std::regex_error&) {
    throw mq::InputError("quantization_config: target '" + target + "' is not a regular expression");
  }
}

// A scheme as the weights' arguments say it, comparable with a written spec's.
std::string scheme_of(const json& weights) {
  if (!weights.is_object()) return "not quantized";
  const std::string strategy = weights.value("strategy", "tensor");
  const json actorder = weights.value("actorder", json());
  return fmt::format("int{} {}{} {}{}", weights.value("num_bits", 0), strategy,
                     strategy == "group" ? fmt::format("({})", weights.value("group_size", 0)) : "",
                     weights.value("symmetric", true) ? "symmetric" : "asymmetric",
                     strategy == "group" && actorder == "group" ? " with g_idx" : "");
}

// A loader reads a weight's g_idx only where its group says actorder "group".
std::string scheme_of(const mq::QuantizedTensor& q) {
  const mq::QuantSpec& s = q.spec;
  if (!s.is_integer()) return "not quantized";
  const char* strategy = s.granularity == mq::Granularity::kPerGroup     ? "group"
                         : s.granularity == mq::Granularity::kPerChannel ? "channel"
                                                                         : "tensor";
  return fmt::format("int{} {}{} {}{}", s.bits(), strategy,
                     s.granularity == mq::Granularity::kPerGroup ? fmt::format("({})", s.group_size) : "",
                     s.scheme == mq::Scheme::kSymmetric ? "symmetric" : "asymmetric", q.g_idx.defined() ? " with g_idx" : "");
}

class ConformanceValidator final : public mq::Validator {
 public:
  explicit ConformanceValidator(const mq::Options&) {}

  mq::Check validate(const mq::ValidateContext& context) override {
    mq::Check check;
    const json config = read_config(context.written);
    if (!config.is_object()) {
      check.message = "nothing to check: the artifact has no compressed-tensors quantization_config";
      return check;
    }
    const json groups = config.value("config_groups", json::object());
    const json ignore = config.value("ignore", json::array());

    std::map<std::string, std::string> resolved;  // layer -> scheme, for the fused check
    std::vector<std::string> problems;
    int checked = 0;
    for (const mq::Layer& layer : context.original.layers) {
      if (layer.kind != mq::LayerKind::kLinear) continue;
      const mq::QuantizedEntry* entry = context.quantized.find(layer.weight);
      if (!entry) continue;
      const std::string written = entry->quantized ? scheme_of(*entry->quantized) : "not quantized";
      std::string how = "not quantized (no group targets it)";
      std::string scheme = "not quantized";
      bool ignored = false;
      for (const auto& t : ignore) ignored = ignored || (t.is_string() && name_matches(layer.name, t.get<std::string>()));
      if (ignored) {
        how = "not quantized (ignore)";
      } else {
        std::vector<std::string> by_name, by_class;
        for (const auto& [group, g] : groups.items())
          for (const auto& t : g.value("targets", json::array())) {
            if (!t.is_string()) continue;
            if (name_matches(layer.name, t.get<std::string>())) by_name.push_back(group);
            else if (t.get<std::string>() == "Linear") by_class.push_back(group);
          }
        if (by_name.size() > 1)
          problems.push_back(fmt::format("{} is targeted by {} and {}", layer.name, by_name[0], by_name[1]));
        const std::vector<std::string>& found = by_name.empty() ? by_class : by_name;
        if (!found.empty()) {
          scheme = scheme_of(groups[found[0]].value("weights", json()));
          how = scheme + " (" + found[0] + ")";
        }
      }
      ++checked;
      resolved[layer.name] = scheme;
      if (scheme != written) problems.push_back(fmt::format("{}: written {}, loaders resolve {}", layer.name, written, how));
    }
    std::map<std::string, std::pair<std::string, std::string>> units;  // unit -> first layer, its scheme
    for (const auto& [layer, scheme] : resolved) {
      const std::string unit = mq::fused_unit(layer);
      if (unit == layer) continue;
      const auto [it, first] = units.emplace(unit, std::make_pair(layer, scheme));
      if (!first && it->second.second != scheme)
        problems.push_back(fmt::format("vLLM loads {} and {} as one {} with one scheme, and they resolve to {} and {}",
                                       it->second.first, layer, unit, it->second.second, scheme));
    }
    check.passed = problems.empty();
    check.metrics = {{"layers", checked}, {"mismatches", static_cast<double>(problems.size())}};
    check.message = check.passed ? fmt::format("{} Linears resolve from quantization_config as written ({} config groups)",
                                               checked, groups.size())
                                 : fmt::format("{} of {} checks fail; first: {}", problems.size(), checked, problems[0]);
    return check;
  }
};

}  // namespace

MQ_PLUGIN(ConformanceValidator, mq::PluginKind::kValidator, "conformance", "1.0.0",
          "Each Linear's scheme as compressed-tensors and vLLM resolve it from config_groups/ignore, against what was written")
