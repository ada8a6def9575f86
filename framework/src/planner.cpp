#include "planner.hpp"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "hash.hpp"
#include "mq/error.hpp"
#include "mq/layer_selection.hpp"
#include "mq/mixed_precision.hpp"
#include "mq/quantized_tensor.hpp"
#include "mq/version.hpp"
#include "output_file.hpp"

namespace fs = std::filesystem;

namespace mq::detail {
namespace {

// What the estimates depend on besides the weights' names: the model's files as they
// are (path, size, modification time), the calibration batches, the candidates.
std::string cache_key(const Model& model, const QuantizeContext& context, const Target& target) {
  std::string key = std::string("mq ") + MQ_VERSION_STRING + "\n";
  for (const fs::path& source : model.sources) {
    struct stat st{};
    if (stat(source.c_str(), &st) != 0) return "";  // nothing to key on: do not cache
    key += fmt::format("{} {} {}.{}\n", fs::absolute(source).string(), st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  }
  if (model.sources.empty()) return "";
  for (const at::Tensor& batch : context.calibration) {
    const at::Tensor b = batch.contiguous();
    key += c10::toString(b.scalar_type()) + c10::str(b.sizes()) + " " +
           hash_bytes({static_cast<const char*>(b.data_ptr()), b.nbytes()}) + "\n";
  }
  for (const QuantSpec& c : target.candidates) key += c.to_string() + "\n";
  key += "sensitivity " + std::to_string(static_cast<int>(target.sensitivity)) + "\n";
  return hash_bytes(key);
}

// The cached estimates of each unit, one per candidate, when `cache` holds them for `key`.
std::map<std::string, std::vector<double>> read_cache(const fs::path& cache, const std::string& key, size_t candidates) {
  std::map<std::string, std::vector<double>> out;
  std::ifstream in(cache);
  if (key.empty() || !in) return out;
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (!j.is_object() || j.value("key", "") != key || !j.contains("units") || !j["units"].is_object()) return out;
  for (const auto& [unit, errors] : j["units"].items()) {
    if (!errors.is_array() || errors.size() != candidates) return {};
    std::vector<double> e;
    for (const auto& v : errors) {
      if (!v.is_number()) return {};
      e.push_back(v.get<double>());
    }
    out[unit] = std::move(e);
  }
  return out;
}

// `w` as `spec` stores it, read back in float32.
at::Tensor dequantized(const at::Tensor& w, const QuantSpec& spec) {
  return spec.is_integer() ? quantize_weight(w, spec, nullptr).dequantize() : w.to(spec.stored_type()).to(at::kFloat);
}

// Σ_j d_j ‖W[:, j] − Ŵ[:, j]‖²: the output error inputs of mean squares d would see, were
// they independent.
double weighted_error(const at::Tensor& w, const QuantSpec& spec, const at::Tensor& importance) {
  const at::Tensor diff = (dequantized(w, spec) - w.to(at::kFloat)).to(at::kDouble);
  return (diff.pow(2).sum(0) * importance).sum().item<double>();
}

using Layers = std::map<std::string, size_t>;                     // layer -> plan row
using Members = std::map<std::string, std::vector<std::string>>;  // unit -> layers
using Errors = std::map<std::string, std::vector<double>>;        // unit -> per candidate

// The weight estimate of each of `missing`'s units: its layers' weighted_error() over
// the same weighting of the weight itself (the layer's relative output error, were its
// inputs independent), summed.
void estimate_weights(const Model& model, const std::vector<PlanRow>& plan, const Layers& layers, const Members& members,
                      const std::vector<std::string>& missing, const Target& target, const QuantizeContext& context,
                      Errors& errors) {
  std::vector<std::string> wanted;
  for (const std::string& u : missing) wanted.insert(wanted.end(), members.at(u).begin(), members.at(u).end());
  std::map<std::string, std::pair<at::Tensor, int64_t>> squares;  // float64 sum per input, count
  const bool calibrated = model.runnable && !context.calibration.empty();
  if (calibrated)
    record_inputs(model, context, wanted, [&](const std::string& layer, const at::Tensor& input) {
      const at::Tensor x = input.reshape({-1, input.size(-1)}).to(at::kDouble);
      auto& [sum, count] = squares[layer];
      sum = sum.defined() ? sum + x.pow(2).sum(0) : x.pow(2).sum(0);
      count += x.size(0);
    });
  int64_t bytes = 0;
  for (const std::string& layer : wanted) bytes += plan[layers.at(layer)].bytes_before;
  context.progress->begin("sensitivity", static_cast<int64_t>(wanted.size()), bytes);
  at::Tensor buffer;
  for (const std::string& u : missing) {
    std::vector<double>& e = errors[u];
    e.assign(target.candidates.size(), 0.0);
    for (const std::string& layer : members.at(u)) {
      const size_t row = layers.at(layer);
      const at::Tensor& weight = model.tensors[row].tensor;
      const at::Tensor w = read_staged(model, weight, buffer);
      at::Tensor importance = at::ones({w.size(1)}, at::kDouble);
      if (const auto s = squares.find(layer); s != squares.end())
        importance = s->second.first / static_cast<double>(s->second.second);
      else if (calibrated)
        context.warn("target: layer " + layer + " saw no input during calibration; its estimate counts every input alike");
      const double signal = (w.to(at::kDouble).pow(2).sum(0) * importance).sum().item<double>();
      if (signal > 0)  // an all-zero weight loses nothing, whatever stores it
        for (size_t c = 0; c < target.candidates.size(); ++c) e[c] += weighted_error(w, target.candidates[c], importance) / signal;
      model.release(weight);
      context.progress->advance(layer, plan[row].bytes_before);
    }
  }
  context.progress->end();
}

// The output estimate of each of `missing`'s units, with only that unit's weights
// quantized with the candidate (dequantized), over the calibration batches: the mean
// per-token KL divergence of the output distribution (softmax over the last dimension)
// from the float model's, or (kOutputSqnr) the output's noise energy over its energy.
void measure_outputs(const Model& model, const std::vector<PlanRow>&, const Layers& layers, const Members& members,
                     const std::vector<std::string>& missing, const Target& target, const QuantizeContext& context,
                     Errors& errors) {
  const bool kl = target.sensitivity == Target::Sensitivity::kOutput;
  std::vector<at::Tensor> reference;  // log-probabilities or outputs, float32
  double tokens = 0, energy = 0;
  for (const at::Tensor& batch : context.calibration) {
    const at::Tensor y = model.runnable->forward(batch).to(at::kFloat);
    reference.push_back(kl ? at::log_softmax(y, -1) : y);
    tokens += static_cast<double>(y.numel() / std::max<int64_t>(1, y.size(-1)));
    energy += y.to(at::kDouble).pow(2).sum().item<double>();
  }
  const double scale = kl ? tokens : energy;
  if (!(scale > 0)) throw InputError("target: the model's output on the calibration batches is all zeros");
  context.progress->begin("sensitivity", static_cast<int64_t>(missing.size() * target.candidates.size()), 0);
  for (const std::string& u : missing) {
    std::vector<double>& e = errors[u];
    e.assign(target.candidates.size(), 0.0);
    std::vector<at::Tensor> weights;  // the unit's, as read (small next to the log-probabilities)
    for (const std::string& layer : members.at(u)) weights.push_back(model.tensors[layers.at(layer)].tensor.to(at::kFloat));
    for (size_t c = 0; c < target.candidates.size(); ++c) {
      std::map<std::string, at::Tensor> replaced;
      for (size_t i = 0; i < weights.size(); ++i)
        replaced[model.tensors[layers.at(members.at(u)[i])].name] = dequantized(weights[i], target.candidates[c]);
      double sum = 0;
      for (size_t b = 0; b < context.calibration.size(); ++b) {
        const at::Tensor y = model.runnable->forward_with(context.calibration[b], replaced).to(at::kFloat);
        sum += kl ? (reference[b].exp() * (reference[b] - at::log_softmax(y, -1))).sum().item<double>()
                  : (y - reference[b]).to(at::kDouble).pow(2).sum().item<double>();
      }
      e[c] = std::max(0.0, sum / scale);
      context.progress->advance(u + " " + target.candidates[c].to_string(), 0);
    }
    for (const std::string& layer : members.at(u)) model.release(model.tensors[layers.at(layer)].tensor);
  }
  context.progress->end();
}

std::string spec_counts(const std::vector<PlanRow>& plan, const std::set<size_t>& rows) {
  std::map<std::string, int> counts;
  for (size_t r : rows) ++counts[plan[r].spec->to_string()];
  std::string out;
  for (const auto& [spec, n] : counts) out += fmt::format("{}{} {}", out.empty() ? "" : ", ", n, spec);
  return out;
}

}  // namespace

fs::path sensitivity_cache(const fs::path& output) {
  return output.parent_path() / (output.filename().string() + ".sensitivity.json");
}

std::string plan_to_target(const Model& model, std::vector<PlanRow>& plan, const Target& target,
                           const QuantizeContext& context, const fs::path& cache, bool write) {
  const auto start = std::chrono::steady_clock::now();
  const bool output = target.sensitivity != Target::Sensitivity::kWeight;
  const bool sqnr = target.sensitivity == Target::Sensitivity::kOutputSqnr;
  // The Linears the target chooses for (planned by their type, 2-D), in units.
  std::map<std::string, size_t> layers;
  for (const auto& [layer, row] : planned_linears(model, plan, [](const QuantSpec&) { return true; }))
    if (plan[row].rule.rfind("type ", 0) == 0) layers.emplace(layer, row);
  if (layers.empty())
    throw RecipeError("target: no Linear weight is planned by its type, so there is nothing to choose specs for "
                      "(overrides, excludes and skips stay as they are)");
  for (const QuantSpec& c : target.candidates)
    if (c.is_integer()) context.make_observer()->check_spec(c);
  std::map<std::string, std::vector<std::string>> members;  // unit -> its layers
  for (const auto& [layer, row] : layers) members[fused_unit(layer)].push_back(layer);
  std::vector<std::string> order;  // units in model order
  for (const auto& [unit, m] : members) order.push_back(unit);
  std::sort(order.begin(), order.end(),
            [&](const std::string& a, const std::string& b) { return layers[members[a][0]] < layers[members[b][0]]; });

  std::vector<std::vector<Choice>> units;
  int64_t numel = 0, fixed = 0, least = 0, most = 0;
  std::set<size_t> chosen_rows;
  for (const auto& [layer, row] : layers) {
    chosen_rows.insert(row);
    numel += model.tensors[row].tensor.numel();
  }
  for (size_t r = 0; r < plan.size(); ++r)
    if (!chosen_rows.count(r)) fixed += plan[r].bytes_after;
  for (const std::string& u : order) {
    std::vector<Choice> choices(target.candidates.size());
    for (size_t c = 0; c < target.candidates.size(); ++c) {
      for (const std::string& layer : members[u]) {
        const at::Tensor& t = model.tensors[layers[layer]].tensor;
        choices[c].bytes += storage_bytes(target.candidates[c], t.sizes().vec(), t.scalar_type());
      }
    }
    least += std::min_element(choices.begin(), choices.end(), [](auto& a, auto& b) { return a.bytes < b.bytes; })->bytes;
    most += std::max_element(choices.begin(), choices.end(), [](auto& a, auto& b) { return a.bytes < b.bytes; })->bytes;
    units.push_back(std::move(choices));
  }
  // A size the smallest candidates exceed is refused before anything is measured.
  const int64_t budget = target.max_bytes > 0        ? target.max_bytes - fixed
                         : target.bits_per_weight > 0 ? static_cast<int64_t>(target.bits_per_weight * static_cast<double>(numel) / 8)
                                                      : most;
  const std::string goal = target.max_bytes > 0        ? fmt::format("max_bytes {}", target.max_bytes)
                           : target.bits_per_weight > 0 ? fmt::format("bits_per_weight {:g}", target.bits_per_weight)
                           : target.max_kl > 0          ? fmt::format("max_kl {:g}", target.max_kl)
                                                        : fmt::format("min_output_sqnr_db {:g}", target.min_output_sqnr_db);
  if (least > budget)
    throw RecipeError("target " + goal + " cannot be met: the smallest candidates give " +
                      (target.max_bytes > 0 ? fmt::format("{} bytes", least + fixed)
                                            : fmt::format("{:.3f} bits a weight", 8.0 * least / numel)) +
                      " (add smaller candidates, or exclude fewer layers)");

  const bool calibrated = model.runnable && !context.calibration.empty();
  if (output && !calibrated)
    throw RecipeError("target.sensitivity: output and output_sqnr run the calibration batches through the model: " +
                      std::string(model.runnable ? "set calibration in the recipe" : "this model cannot run"));
  const std::string key = cache.empty() ? "" : cache_key(model, context, target);
  std::map<std::string, std::vector<double>> errors = read_cache(cache, key, target.candidates.size());
  std::vector<std::string> missing;
  for (const std::string& u : order)
    if (!errors.count(u)) missing.push_back(u);
  const bool reused = missing.empty();
  if (!missing.empty()) {
    (output ? measure_outputs : estimate_weights)(model, plan, layers, members, missing, target, context, errors);
    if (write && !key.empty()) {
      nlohmann::ordered_json j = {{"key", key}, {"candidates", nlohmann::ordered_json::array()}, {"units", {}}};
      for (const QuantSpec& c : target.candidates) j["candidates"].push_back(c.to_string());
      for (const std::string& u : order) j["units"][u] = errors[u];
      write_file_atomically(cache, j.dump(1) + "\n");
    }
  }
  for (size_t u = 0; u < order.size(); ++u)
    for (size_t c = 0; c < target.candidates.size(); ++c) units[u][c].error = errors[order[u]][c];

  const auto summed = [&](const std::vector<size_t>& pick) {
    double e = 0;
    for (size_t u = 0; u < units.size(); ++u) e += units[u][pick[u]].error;
    return e;
  };

  std::vector<size_t> pick = allocate(units, budget);
  // What an estimate means to a reader: output SQNR in dB from summed noise.
  const auto shown = [&](double e) { return sqnr ? -10 * std::log10(std::max(e, 1e-300)) : e; };
  const double bound = target.max_kl > 0 ? target.max_kl : target.min_output_sqnr_db > 0 ? std::pow(10.0, -target.min_output_sqnr_db / 10) : 0;
  if (bound > 0) {  // the smallest budget whose plan stays within the bound
    if (summed(pick) > bound)
      throw RecipeError(fmt::format("target {} cannot be met: the largest candidates give an estimated {} of {:.4g}",
                                    goal, sqnr ? "output SQNR (dB)" : "KL", shown(summed(pick))));
    for (int64_t lo = least, hi = most; lo < hi;) {
      const int64_t mid = lo + (hi - lo) / 2;
      std::vector<size_t> p = allocate(units, mid);
      if (summed(p) <= bound) {
        pick = std::move(p);
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
  }
  int64_t bytes = 0;
  for (size_t u = 0; u < order.size(); ++u) {
    const QuantSpec& spec = target.candidates[pick[u]];
    bytes += units[u][pick[u]].bytes;
    for (const std::string& layer : members[order[u]]) {
      PlanRow& r = plan[layers[layer]];
      const at::Tensor& t = model.tensors[layers[layer]].tensor;
      r.spec = spec;
      r.bytes_after = storage_bytes(spec, t.sizes().vec(), t.scalar_type());
      r.rule += fmt::format("; target: est. {} {:.3g}{}", sqnr ? "noise" : output ? "KL" : "error", units[u][pick[u]].error,
                            members[order[u]].size() > 1 ? " (" + order[u] + ")" : "");
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return fmt::format("{}: {} bytes, {:.3f} bits a weight over {} Linears ({}); estimated {} {:.4g}; sensitivity: {}, "
                     "{} in {:.2f} s",
                     goal, bytes + fixed, 8.0 * bytes / numel, layers.size(), spec_counts(plan, chosen_rows),
                     sqnr ? "output SQNR (dB)" : output ? "output KL" : "error", shown(summed(pick)),
                     sqnr                 ? "each unit's output noise on the calibration batches"
                     : output             ? "each unit's output KL on the calibration batches"
                     : calibrated         ? "relative weight error weighted by the calibration inputs' mean squares"
                                          : "relative plain weight error (no calibration)",
                     reused ? "read from " + cache.filename().string() : "measured", seconds);
}

}  // namespace mq::detail
