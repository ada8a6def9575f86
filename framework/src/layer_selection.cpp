#include "mq/layer_selection.hpp"

#include <ATen/ATen.h>
#include <fnmatch.h>

#include <algorithm>
#include <array>
#include <string_view>
#include <unordered_map>

#include "mq/affine.hpp"
#include "mq/blocks.hpp"
#include "mq/error.hpp"
#include "mq/observer.hpp"
#include "mq/quantizer.hpp"
#include "suggest.hpp"

namespace mq {
namespace {

const std::vector<std::string> kSpecKeys{"dtype", "granularity", "group_size", "scheme",
                                         "reduce_range"};
// Every kind's name, in the enum's order.
const std::vector<std::string> kLayerKinds = [] {
  std::vector<std::string> names;
  for (int k = 0; k <= static_cast<int>(LayerKind::kOther); ++k) names.push_back(to_string(static_cast<LayerKind>(k)));
  return names;
}();

[[noreturn]] void fail(const SourceLocation& at, const std::string& message) {
  const std::string where = at.to_string();
  throw RecipeError(where.empty() ? message : where + ": " + message);
}

const Value& expect(const Value& v, Value::Kind kind, const std::string& what) {
  if (v.kind() != kind)
    fail(v.location, "'" + what + "' must be " + to_string(kind) + ", got " + to_string(v.kind()));
  return v;
}

template <class E>
E parse_enum(const Value& v, const std::string& what, std::optional<E> (*parse)(std::string_view),
             const std::vector<std::string>& names) {
  const std::string& text = expect(v, Value::Kind::kString, what).as_string();
  if (auto e = parse(text)) return *e;
  fail(v.location, "'" + what + "' must be one of " + detail::quoted_list(names) + ", got '" +
                       text + "'" + detail::did_you_mean(text, names));
}

std::vector<std::string> dtype_names() {
  std::vector<std::string> names;
  for (const DTypeTraits& t : kDTypeTraits) names.emplace_back(t.name);
  return names;
}

// Applies spec fields from `fields` (a map of kSpecKeys) on top of `spec`.
QuantSpec apply(QuantSpec spec, const Value& fields, const std::string& section) {
  bool granularity_set = false;
  for (const MapEntry& e : fields.as_map()) {
    const std::string what = section + "." + e.key;
    if (e.key == "dtype") {
      spec.dtype = parse_enum<DType>(e.value, what, parse_dtype, dtype_names());
    } else if (e.key == "granularity") {
      if (e.value.kind() == Value::Kind::kString && e.value.as_string() == "auto") continue;
      spec.granularity = parse_enum<Granularity>(e.value, what, parse_granularity,
                                                 {"auto", "per_tensor", "per_channel", "per_group"});
      granularity_set = true;
    } else if (e.key == "group_size") {
      spec.group_size = expect(e.value, Value::Kind::kInt, what).as_int();
      if (spec.group_size <= 0) fail(e.value.location, "'" + what + "' must be positive");
    } else if (e.key == "scheme") {
      spec.scheme = parse_enum<Scheme>(e.value, what, parse_scheme, {"symmetric", "asymmetric"});
    } else if (e.key == "reduce_range") {
      spec.reduce_range = expect(e.value, Value::Kind::kBool, what).as_bool();
    } else {
      fail(e.key_location.line ? e.key_location : e.value.location,
           "unknown key '" + e.key + "' in '" + section + "'" + detail::did_you_mean(e.key, kSpecKeys) +
               "; it takes " + detail::quoted_list(kSpecKeys));
    }
  }
  if (spec.dtype == DType::kUInt8 && spec.scheme == Scheme::kSymmetric && spec.reduce_range)
    fail(fields.location, "'" + section + "': reduce_range with symmetric uint8 is not a valid "
                          "combination (PyTorch refuses it too)");
  // "auto": group-wise for 4-bit targets, per output channel otherwise.
  if (!granularity_set && fields.find("dtype"))
    spec.granularity = spec.bits() == 4 ? Granularity::kPerGroup : Granularity::kPerChannel;
  if (const DTypeTraits& t = traits(spec.dtype); t.block) {  // the type fixes the rest
    const Value* size = fields.find("group_size");  // as written, not defaulted
    if ((granularity_set && spec.granularity != Granularity::kPerGroup) ||
        (size && size->location.line && spec.group_size != t.block) ||
        spec.reduce_range)
      fail(fields.location, "'" + section + "': " + std::string(t.name) + " is per_group(" +
                                std::to_string(t.block) + ") by definition; drop granularity, group_size and reduce_range");
    spec.granularity = Granularity::kPerGroup;
    spec.group_size = t.block;
    spec.scheme = t.is_signed ? Scheme::kSymmetric : Scheme::kAsymmetric;
  }
  return spec;
}

bool matches(const std::string& pattern, const std::string& name) {
  return fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

// Why the default skip set keeps `layer` in float for a target of `bits`, or "".
std::string default_skip(const Layer& layer, int bits) {
  if (matches("lm_head", layer.name) || matches("*.lm_head", layer.name)) return "default skip: lm_head";
  // vLLM builds MoE routers unquantized (and so does every recipe of llm-compressor).
  if (matches("*.block_sparse_moe.gate", layer.name) || matches("*.mlp.gate", layer.name))
    return "default skip: MoE router";
  if (bits != 4) return "";
  if (layer.kind == LayerKind::kEmbedding) return "default low-bit skip: embedding";
  if (layer.kind == LayerKind::kLayerNorm || layer.name.find("norm") != std::string::npos)
    return "default low-bit skip: norm";
  return "";
}

}  // namespace

QuantSpec spec_from_fields(const Value& fields, const std::string& section) {
  expect(fields, Value::Kind::kMap, section);
  if (!fields.find("dtype")) fail(fields.location, "'" + section + "' needs 'dtype'");
  return apply(QuantSpec{}, fields, section);
}

LayerSelector::LayerSelector(const Options& options, std::vector<LayerKind> default_types)
    : types_(std::move(default_types)) {
  Value fields = Value::map();
  for (const std::string& key : kSpecKeys) fields.set(key, options.get(key));
  base_ = apply(QuantSpec{}, fields, "options");

  const Value& layers = expect(options.get("layers"), Value::Kind::kMap, "options.layers");
  for (const MapEntry& e : layers.as_map()) {
    if (e.key == "types") {
      types_.clear();
      for (const Value& t : expect(e.value, Value::Kind::kList, "layers.types").as_list()) {
        const std::string& name = expect(t, Value::Kind::kString, "layers.types[]").as_string();
        const auto it = std::find(kLayerKinds.begin(), kLayerKinds.end(), name);
        if (it == kLayerKinds.end())
          fail(t.location, "unknown layer type '" + name + "'" + detail::did_you_mean(name, kLayerKinds) +
                               "; types are " + detail::quoted_list(kLayerKinds));
        types_.push_back(static_cast<LayerKind>(it - kLayerKinds.begin()));
      }
    } else if (e.key == "exclude") {
      for (const Value& p : expect(e.value, Value::Kind::kList, "layers.exclude").as_list())
        exclude_.push_back(expect(p, Value::Kind::kString, "layers.exclude[]").as_string());
    } else if (e.key == "replace") {
      replace_skips_ = expect(e.value, Value::Kind::kBool, "layers.replace").as_bool();
    } else {
      fail(e.key_location.line ? e.key_location : e.value.location,
           "unknown key '" + e.key + "' in 'layers'" +
               detail::did_you_mean(e.key, {"types", "exclude", "replace"}) +
               "; it takes 'types', 'exclude', 'replace'");
    }
  }
  for (const MapEntry& e : expect(options.get("overrides"), Value::Kind::kMap, "options.overrides").as_map()) {
    expect(e.value, Value::Kind::kMap, "overrides." + e.key);
    apply(base_, e.value, "overrides." + e.key);  // reject bad fields now, not mid-run
    overrides_.emplace_back(e.key, e.value);
  }
}

std::vector<PlanRow> LayerSelector::plan(const Model& model) const {
  std::unordered_map<std::string_view, const Layer*> by_weight;
  for (const Layer& l : model.layers) by_weight[l.weight] = &l;  // the last, where two share one
  std::vector<PlanRow> rows;
  for (const NamedTensor& t : model.tensors) {
    PlanRow row{t.name, "", std::nullopt, static_cast<int64_t>(t.tensor.nbytes()), 0, t.tensor.numel()};
    const auto found = by_weight.find(t.name);
    const Layer* layer = found == by_weight.end() ? nullptr : found->second;
    std::optional<QuantSpec> spec;
    if (!layer) {
      row.rule = "not a layer weight";
    } else if (!t.tensor.is_floating_point()) {
      row.rule = "not a floating-point tensor";
    } else if (t.tensor.numel() == 0) {
      row.rule = "empty tensor, nothing to quantize";
    } else {
      const auto exact = std::find_if(overrides_.begin(), overrides_.end(), [&](const auto& o) {
        return o.first == layer->name || o.first == t.name;
      });
      const auto excluded = std::find_if(exclude_.begin(), exclude_.end(), [&](const std::string& p) {
        return matches(p, layer->name) || matches(p, t.name);
      });
      const auto pattern = std::find_if(overrides_.begin(), overrides_.end(), [&](const auto& o) {
        return matches(o.first, layer->name) || matches(o.first, t.name);
      });
      const bool typed = std::find(types_.begin(), types_.end(), layer->kind) != types_.end();
      if (exact != overrides_.end()) {
        spec = apply(base_, exact->second, "overrides." + exact->first);
        row.rule = "override '" + exact->first + "'";
      } else if (excluded != exclude_.end()) {
        row.rule = "exclude '" + *excluded + "'";
      } else {
        QuantSpec candidate = base_;
        if (pattern != overrides_.end()) {
          candidate = apply(base_, pattern->second, "overrides." + pattern->first);
          row.rule = "override '" + pattern->first + "'";
        } else if (typed) {
          row.rule = std::string("type ") + to_string(layer->kind);
        } else {
          row.rule = std::string("type ") + to_string(layer->kind) + " not in layers.types";
        }
        const std::string skip = default_skip(*layer, candidate.bits());
        if (pattern != overrides_.end() || typed) {
          if (!replace_skips_ && !skip.empty())
            row.rule = skip;
          else
            spec = candidate;
        }
      }
    }
    if (spec && spec->is_integer() && spec->granularity == Granularity::kPerGroup) {
      if (t.tensor.dim() != 2) {
        row.rule += "; per_group needs a 2-D weight, kept in float";
        spec.reset();
      } else if (t.tensor.size(1) % spec->group_size != 0) {
        row.rule += "; last group partial (" + std::to_string(t.tensor.size(1)) + " % " +
                    std::to_string(spec->group_size) + ")";
      }
    }
    if (spec && spec->is_block()) {
      if (t.tensor.dim() != 2) {
        row.rule += "; " + std::string(to_string(spec->dtype)) + " needs a 2-D weight, kept in float";
        spec.reset();
      } else if (t.tensor.size(1) % spec->group_size != 0) {
        throw RecipeError(t.name + ": " + std::string(to_string(spec->dtype)) + " needs rows of a multiple of " +
                          std::to_string(spec->group_size) + " values, it has " + std::to_string(t.tensor.size(1)) +
                          " (exclude it, or give it another dtype in overrides)");
      }
    }
    if (spec && spec->is_integer() && spec->granularity == Granularity::kPerChannel &&
        t.tensor.dim() == 0) {
      row.rule += "; per_channel needs a tensor of rank >= 1, kept in float";
      spec.reset();
    }
    row.spec = spec;
    row.bytes_after = spec ? storage_bytes(*spec, t.tensor.sizes().vec(), t.tensor.scalar_type())
                           : row.bytes_before;
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace mq

namespace mq {

QuantizedTensor quantize_weight(const at::Tensor& w, const QuantSpec& spec, Observer* observer, at::Tensor out) {
  if (!spec.is_integer()) {
    QuantizedTensor q;
    q.data = spec.is_block() ? blocks::quantize(w, spec.dtype) : w.to(spec.stored_type());
    q.spec = spec;
    q.shape = w.sizes().vec();
    q.original_dtype = w.scalar_type();
    return q;
  }
  const std::optional<float> eps = observer ? observer->min_max_eps() : kScaleEps;
  if (eps) return quantize_min_max(w, spec, *eps, std::move(out));
  observer->observe(w, spec);
  QParams qp = observer->qparams(spec);
  if (w.scalar_type() != at::kFloat) {
    qp.scale = qp.scale.to(at::kFloat).contiguous().clone();
    float* scale = qp.scale.data_ptr<float>();
    for (int64_t i = 0; i < qp.scale.numel(); ++i) scale[i] = stored_scale(scale[i], w.scalar_type());
  }
  return quantize(w, qp, spec);
}

std::vector<QuantizedEntry> quantize_planned(const Model& model, const std::vector<PlanRow>& plan,
                                             QuantizeContext& context, bool observe_weights) {
  // The integers of the last two entries made, each written into again once nothing else
  // holds it (a streamed entry, written and dropped; the writer may still hold the last
  // one): fresh buffers cost a page fault every 4 KiB, and whether glibc hands a freed
  // one back depends on the heap's layout.
  std::array<at::Tensor, 2> spares;
  size_t made = 0;  // integer entries
  return quantize_planned_with(model, plan, context, [&](size_t i, const at::Tensor& w) {
    const QuantSpec& spec = *plan[i].spec;
    std::unique_ptr<Observer> observer = observe_weights && spec.is_integer() ? context.make_observer() : nullptr;
    at::Tensor& spare = spares[made % spares.size()];
    // Ours alone: no other handle on this tensor, no other tensor on its storage.
    const bool fits = spare.defined() && spare.use_count() == 1 && spare.storage().use_count() == 1 &&
                      spare.sizes() == w.sizes() && spare.scalar_type() == spec.stored_type();
    QuantizedTensor q;
    try {
      q = quantize_weight(w, spec, observer.get(), fits ? spare : at::Tensor());
    } catch (const InputError& e) {
      throw InputError(model.tensors[i].name + ": " + e.what());
    }
    if (spec.is_integer()) {
      spare = q.data;
      ++made;
    }
    return q;
  });
}

void require_calibration(const Model& model, const QuantizeContext& context, const std::string& who) {
  if (!model.runnable)
    throw RecipeError(who + " runs calibration batches through the model, and this model cannot run: mq runs "
                      "TorchScript models, and Hugging Face directories of a family an architecture plugin runs "
                      "(mq-pipeline plugins lists them); or use the dynamic quantizer (round to nearest)");
  if (context.calibration.empty())
    throw RecipeError(who + " needs calibration data: set calibration.text (or path, or random) in the recipe");
}

void record_inputs(const Model& model, const QuantizeContext& context, const std::vector<std::string>& layers,
                   const std::function<void(const std::string& layer, const at::Tensor& input)>& visit) {
  int64_t bytes = 0;
  for (const at::Tensor& batch : context.calibration) bytes += batch.nbytes();
  context.progress->begin("calibrate", static_cast<int64_t>(context.calibration.size()), bytes);
  size_t reported = 0;  // batches the progress has counted: visits may come a layer at a time
  const auto report_until = [&](size_t b) {
    for (; reported < b; ++reported)
      context.progress->advance("batch " + std::to_string(reported), context.calibration[reported].nbytes());
  };
  model.runnable->record_layers(context.calibration, layers, [&](size_t b, const auto& activity) {
    report_until(b);
    for (const auto& [layer, a] : activity) visit(layer, a.input);
  });
  report_until(context.calibration.size());
  context.progress->end();
}

std::map<std::string, size_t> planned_linears(const Model& model, const std::vector<PlanRow>& plan,
                                              const std::function<bool(const QuantSpec&)>& takes) {
  std::unordered_map<std::string_view, size_t> row_of;
  for (size_t i = 0; i < model.tensors.size(); ++i) row_of[model.tensors[i].name] = i;
  std::map<std::string, size_t> out;
  for (const Layer& l : model.layers) {
    const auto it = row_of.find(l.weight);
    if (l.kind == LayerKind::kLinear && it != row_of.end() && plan.at(it->second).spec &&
        takes(*plan[it->second].spec) && model.tensors[it->second].tensor.dim() == 2)
      out[l.name] = it->second;
  }
  return out;
}

PlannedRows::PlannedRows(const Model& model, const std::vector<PlanRow>& plan, QuantizeContext& context, Make make,
                         bool progress)
    : model_(model), plan_(plan), context_(context), make_(std::move(make)), progress_(progress) {
  int64_t total_bytes = 0;
  for (const NamedTensor& t : model.tensors) total_bytes += t.tensor.nbytes();
  if (progress_) context.progress->begin("quantize", static_cast<int64_t>(model.tensors.size()), total_bytes);
}

void PlannedRows::make_while(const std::function<bool(size_t row)>& ready) {
  for (; next_ < model_.tensors.size() && ready(next_); ++next_) {
    const NamedTensor& t = model_.tensors[next_];
    QuantizedEntry entry{t.name, t.tensor, std::nullopt};
    if (plan_.at(next_).spec) entry = {t.name, at::Tensor(), make_(next_, read_staged(model_, t.tensor, staging_))};
    if (context_.emit)  // streaming: written now
      context_.emit(std::move(entry));
    else
      entries_.push_back(std::move(entry));
    // The input's pages let go either way (a float entry kept for the writer faults its
    // pages back in when read): a model held for a non-streaming format is its output,
    // not its output plus the whole float input.
    model_.release(t.tensor);
    if (progress_) context_.progress->advance(t.name, t.tensor.nbytes());
  }
}

std::vector<QuantizedEntry> PlannedRows::finish() {
  make_while([](size_t) { return true; });
  if (progress_) context_.progress->end();
  return std::move(entries_);
}

std::vector<QuantizedEntry> quantize_planned_with(const Model& model, const std::vector<PlanRow>& plan,
                                                  QuantizeContext& context, const PlannedRows::Make& make) {
  return PlannedRows(model, plan, context, make).finish();
}

}  // namespace mq
