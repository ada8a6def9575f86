#include "mq/report.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <string_view>
#include <unordered_map>

#include "json_text.hpp"

namespace mq {
namespace {

nlohmann::ordered_json number(double v) {
  if (std::isfinite(v)) return v;
  return std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");  // JSON has no inf/nan
}

nlohmann::ordered_json file_json(const FileInfo& f) {
  return {{"path", f.path}, {"bytes", f.bytes}, {"hash", f.hash}, {"sha256", f.sha256}};
}

std::string megabytes(int64_t bytes) { return fmt::format("{:.2f} MB", bytes / 1e6); }

}  // namespace

std::string Report::to_json() const {
  nlohmann::ordered_json j;
  j["status"] = static_cast<int>(status);
  j["message"] = message;
  j["mq_version"] = MQ_VERSION_STRING;
  j["recipe_hash"] = recipe_hash;
  j["recipe"] = nlohmann::ordered_json::parse(canonical_recipe.empty() ? "null" : canonical_recipe);
  j["inputs"] = nlohmann::ordered_json::array();
  for (const FileInfo& f : inputs) j["inputs"].push_back(file_json(f));
  j["output"] = file_json(output);
  j["output"]["promoted"] = promoted;
  j["size"] = {{"original_bytes", original_bytes},
               {"quantized_bytes", quantized_bytes},
               {"ratio", number(quantized_bytes ? double(original_bytes) / quantized_bytes : 0.0)}};
  std::unordered_map<std::string_view, std::vector<const TensorMetric*>> metrics_of;
  for (const ValidatorResult& v : validators)
    for (const TensorMetric& m : v.check.tensor_metrics) metrics_of[m.tensor].push_back(&m);
  j["layers"] = nlohmann::ordered_json::array();
  for (const PlanRow& row : plan) {
    nlohmann::ordered_json layer = {{"tensor", row.tensor},
                                    {"rule", row.rule},
                                    {"spec", row.spec ? nlohmann::ordered_json(row.spec->to_string())
                                                      : nlohmann::ordered_json(nullptr)},
                                    {"bytes_before", row.bytes_before},
                                    {"bytes_after", row.bytes_after}};
    if (const auto found = metrics_of.find(row.tensor); found != metrics_of.end())
      for (const TensorMetric* m : found->second) layer[m->name] = number(m->value);
    j["layers"].push_back(layer);
  }
  j["validators"] = nlohmann::ordered_json::array();
  for (const ValidatorResult& v : validators) {
    nlohmann::ordered_json metrics = nlohmann::ordered_json::object();
    for (const auto& [name, value] : v.check.metrics) metrics[name] = number(value);
    j["validators"].push_back({{"plugin", v.plugin},
                               {"passed", v.check.passed},
                               {"on_failure", to_string(v.policy)},
                               {"message", v.check.message},
                               {"metrics", metrics}});
  }
  nlohmann::ordered_json timings = nlohmann::ordered_json::object();
  for (const auto& [stage, seconds] : this->timings) timings[stage] = seconds;
  j["timings_s"] = timings;
  j["warnings"] = warnings;
  j["model_changes"] = model_changes;
  if (!calibration.empty()) j["calibration"] = calibration;
  if (!target.empty()) j["target"] = target;
  return detail::json_text(j, 2) + "\n";
}

std::string Report::plan_table() const {
  size_t name_width = 6, rule_width = 4;
  for (const PlanRow& row : plan) {
    name_width = std::max(name_width, row.tensor.size());
    rule_width = std::max(rule_width, row.rule.size());
  }
  std::string out = fmt::format("{:<{}}  {:<{}}  {:<34}  {:>12}  {:>12}\n", "tensor", name_width,
                                "rule", rule_width, "spec", "bytes", "predicted");
  for (const PlanRow& row : plan)
    out += fmt::format("{:<{}}  {:<{}}  {:<34}  {:>12}  {:>12}\n", row.tensor, name_width, row.rule,
                       rule_width, row.spec ? row.spec->to_string() : "float (kept)",
                       row.bytes_before, row.bytes_after);
  out += fmt::format("total: {} -> {} bytes ({:.2f}x)\n", original_bytes, quantized_bytes,
                     quantized_bytes ? double(original_bytes) / quantized_bytes : 0.0);
  for (const std::string& change : model_changes) out += "model: " + change + "\n";  // e.g. the architecture it runs on
  if (!calibration.empty()) out += "calibration: " + calibration + "\n";
  if (!target.empty()) out += "target: " + target + "\n";
  return out;
}

std::string Report::summary() const {
  std::string out;
  int quantized = 0;
  for (const PlanRow& row : plan) quantized += row.spec.has_value();
  out += fmt::format("  tensors     {} quantized, {} kept\n", quantized, plan.size() - quantized);
  if (!calibration.empty()) out += fmt::format("  calibration {}\n", calibration);
  if (!target.empty()) out += fmt::format("  target      {}\n", target);
  if (!model_changes.empty())
    out += fmt::format("  model       {}{}\n", model_changes.front(),
                       model_changes.size() > 1 ? fmt::format(" and {} more", model_changes.size() - 1) : "");
  out += fmt::format("  size        {} -> {} ({:.2f}x)\n", megabytes(original_bytes),
                     megabytes(quantized_bytes),
                     quantized_bytes ? double(original_bytes) / quantized_bytes : 0.0);
  for (const ValidatorResult& v : validators) {
    const char* verdict = v.check.passed ? "pass" : (v.policy == OnFailure::kError ? "FAIL" : v.policy == OnFailure::kWarn ? "warn" : "ignored");
    out += fmt::format("  {:<11} {:<7} {}\n", v.plugin, verdict, v.check.message);
  }
  out += fmt::format("  artifact    {}{}\n", output.path,
                     promoted ? "" : " (not written by this run)");
  if (!report_path.empty()) out += fmt::format("  report      {}\n", report_path);
  return out;
}

}  // namespace mq
