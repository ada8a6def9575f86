// awq: activation-aware weight quantization (Lin et al. 2024, as AutoAWQ's auto_scale
// searches it), then round to nearest. For each group of Linears that share an input
// (mq::smoothing_groups: q/k/v behind input_layernorm, gate/up behind
// post_attention_layernorm, down behind up_proj), per-input-channel scales
//   s = x_mean^r / w_mean^(1-r)  (duo_scaling; else x_mean^r), normalized to a geometric mean of 1,
// are tried for r on a grid of `grid` points in [0, 1): x_mean is each input channel's
// mean |x| over the calibration tokens, w_mean its mean of |w| / max|w| of its group.
// The s whose quantized Linears give the least output error on the calibration inputs
// (up to `max_tokens` of them), Σ ‖X Wᵀ − (X / s) Q(W·s)ᵀ‖², is folded into the front
// op (mq::fold_scales: the float model computes the same) and the Linears are quantized
// as the dynamic quantizer does. Each group's rule says its ratio and its error against
// plain rounding's.
//
// Then (`clip`, AutoAWQ's auto_clip) each Linear of a group but q/k projections (whose
// error the attention scores would show, not their outputs) has its weights clipped to
// the max |w| of each row's group, shrunk by the factor of 1, 0.95, ..., 0.55 that
// gives the least mean squared error of the group's part of the output on the (scaled)
// calibration inputs once quantized. Validators compare with the unclipped weights.
//
// `rounding: gptq`: GPTQ (mq/gptq.hpp, the gptq quantizer's defaults) instead of rounding
// to nearest, sequential as the gptq quantizer runs: the calibration batches go through
// the model a block at a time; a block's groups are searched on what the blocks before
// it, quantized, made of the batches, and folded; its Linears are quantized by GPTQ
// against the Hessians of their inputs in the folded model (H / s sᵀ: the inputs are
// divided by s); and the block runs again to make the next block's inputs, with each
// quantized weight as it acts in the unfolded model the runtime runs (Ŵ / s where the
// front is a norm; a front Linear's own output already carries 1 / s). No clipping
// search: GPTQ picks each weight's rounding from the inputs.

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>

#include "mq/error.hpp"
#include "mq/gptq.hpp"
#include "mq/layer_selection.hpp"
#include "mq/quantizer.hpp"
#include "mq/smoothing.hpp"

namespace {

// What a group's search needs of its shared input over the calibration batches.
struct InputStats {
  at::Tensor samples;  // the first max_tokens rows, float32
  at::Tensor abs_sum;  // per channel, float64
  int64_t count = 0;

  void add(const at::Tensor& input, int64_t max_tokens) {
    const at::Tensor x = input.reshape({-1, input.size(-1)}).to(at::kFloat);
    const at::Tensor sum = x.abs().sum(0).to(at::kDouble);
    abs_sum = abs_sum.defined() ? abs_sum + sum : sum;
    count += x.size(0);
    const int64_t have = samples.defined() ? samples.size(0) : 0;
    if (have < max_tokens) {
      const at::Tensor take = x.narrow(0, 0, std::min<int64_t>(x.size(0), max_tokens - have));
      samples = samples.defined() ? at::cat({samples, take}) : take.clone();
    }
  }
};

using Current = std::function<at::Tensor(const std::string&)>;

class AwqQuantizer final : public mq::Quantizer {
 public:
  explicit AwqQuantizer(const mq::Options& options)
      : selector_(options, {mq::LayerKind::kLinear}),
        grid_(options.get_int("grid")),
        max_tokens_(options.get_int("max_tokens")),
        duo_(options.get_bool("duo_scaling")),
        clip_(options.get_bool("clip")),
        gptq_(options.get_string("rounding") == "gptq") {
    if (grid_ < 1) throw mq::RecipeError(options.where("grid") + ": grid must be at least 1");
    if (max_tokens_ < 1) throw mq::RecipeError(options.where("max_tokens") + ": max_tokens must be at least 1");
  }

  std::vector<mq::PlanRow> plan(const mq::Model& model, const mq::QuantizeContext& context) const override {
    mq::require_calibration(model, context, "awq");
    if (mq::smoothing_groups(model).empty())
      throw mq::RecipeError("awq: no norm feeding Linears found by the llama family's names (input_layernorm -> "
                            "self_attn.q/k/v_proj, post_attention_layernorm -> mlp.gate/up_proj)");
    std::vector<mq::PlanRow> rows = selector_.plan(model);
    for (const mq::PlanRow& row : rows)
      if (row.spec && row.spec->is_block())
        throw mq::RecipeError("awq writes compressed-tensors' integer types; " + row.spec->to_string() + " (" + row.tensor +
                              ") is llama.cpp's: use the imatrix quantizer");
    for (const mq::PlanRow& row : rows)
      if (gptq_ && row.spec && row.spec->granularity == mq::Granularity::kPerChannel && row.spec->axis != 0)
        throw mq::RecipeError("awq with rounding: gptq quantizes Linear weights by rows: '" + row.tensor +
                              "' is planned per channel on axis " + std::to_string(row.spec->axis) + ", not 0");
    return rows;
  }

  mq::QuantizedModel quantize(const mq::Model& model, mq::QuantizeContext& context) override {
    mq::QuantizedModel out;
    out.mode = "dynamic";
    out.plan = planned(model, context);
    if (gptq_) return with_gptq(model, context, std::move(out));
    const std::vector<mq::SmoothingGroup> groups = mq::smoothing_groups(model);
    std::map<std::string, InputStats> inputs;
    std::vector<std::string> first;
    for (const mq::SmoothingGroup& g : groups) first.push_back(g.layers.front());
    mq::record_inputs(model, context, first,
                      [&](const std::string& layer, const at::Tensor& input) { inputs[layer].add(input, max_tokens_); });

    std::map<std::string, at::Tensor> clipped;  // by weight name: scaled and clipped, float32
    const auto scale_of = [&](const mq::SmoothingGroup& g, const Current& current) {
      const auto in = inputs.find(g.layers.front());
      return search(g, in == inputs.end() ? nullptr : &in->second, current, out.plan, context, clip_ ? &clipped : nullptr);
    };
    mq::Model scaled = mq::fold_scales(model, groups, scale_of, out.plan, out.transformed, "; AWQ-scaled");
    for (auto& [name, w] : clipped) {
      const size_t i = row_of(model, name);
      scaled.tensors[i].tensor = w.to(model.tensors[i].tensor.scalar_type()).contiguous();
      out.plan[i].rule += "; AWQ-clipped";
    }
    out.entries = mq::quantize_planned(scaled, out.plan, context, /*observe_weights=*/true);
    return out;
  }

 private:
  static size_t row_of(const mq::Model& model, const std::string& tensor) {
    for (size_t i = 0; i < model.tensors.size(); ++i)
      if (model.tensors[i].name == tensor) return i;
    throw mq::InputError("awq: the model has no tensor '" + tensor + "'");
  }

  // The scales of group `g` from its input statistics `in` (null: it saw no input) and
  // its weights as `current` gives them (undefined: leave the group as it is); the
  // members' plan rows get the ratio and the error against plain rounding's. With
  // `clipped`, the clipped scaled weights of the members that clip go there.
  at::Tensor search(const mq::SmoothingGroup& g, const InputStats* in, const Current& current,
                    std::vector<mq::PlanRow>& plan, mq::QuantizeContext& context,
                    std::map<std::string, at::Tensor>* clipped) const {
    if (!in) {
      context.warn("awq: " + g.layers.front() + " saw no input during calibration; its group is rounded as it is");
      return at::Tensor();
    }
    std::vector<at::Tensor> weights;
    std::vector<mq::PlanRow*> rows;
    std::vector<const mq::QuantSpec*> specs;
    int64_t group_size = 0;
    for (const std::string& l : g.layers) {
      weights.push_back(current(l + ".weight").to(at::kFloat));
      rows.push_back(&*std::find_if(plan.begin(), plan.end(), [&](const mq::PlanRow& r) { return r.tensor == l + ".weight"; }));
      specs.push_back(rows.back()->spec && rows.back()->spec->is_integer() ? &*rows.back()->spec : nullptr);
      if (specs.back() && !group_size)
        group_size = specs.back()->granularity == mq::Granularity::kPerGroup ? specs.back()->group_size : weights.back().size(1);
    }
    if (!group_size) return at::Tensor();  // nothing in the group is quantized to integers
    const at::Tensor& x = in->samples;
    const at::Tensor x_mean = (in->abs_sum / static_cast<double>(in->count)).to(at::kFloat);
    const at::Tensor w_mean = weight_mean(at::cat(weights), group_size);
    // Σ over the group of ‖X Wᵀ − (X / s) Q(W·s)ᵀ‖².
    const auto loss = [&](const at::Tensor& s) {
      double total = 0;
      for (size_t i = 0; i < weights.size(); ++i) {
        if (!specs[i]) continue;
        const at::Tensor q = mq::quantize_weight(weights[i] * s.unsqueeze(0), *specs[i], nullptr).dequantize();
        total += (at::matmul(x, weights[i].t()) - at::matmul(x / s, q.t())).to(at::kDouble).pow(2).sum().item<double>();
      }
      return total;
    };
    const double plain = loss(at::ones_like(x_mean));
    double best = std::numeric_limits<double>::infinity(), ratio = 0;
    at::Tensor chosen;
    for (int64_t i = 0; i < grid_; ++i) {
      const double r = static_cast<double>(i) / static_cast<double>(grid_);
      at::Tensor s = duo_ ? (x_mean.pow(r) / (w_mean.pow(1 - r) + 1e-4)).clamp_min(1e-4) : x_mean.pow(r).clamp_min(1e-4);
      s = s / (s.max() * s.min()).sqrt();
      const double e = loss(s);
      if (e < best) {
        best = e;
        ratio = r;
        chosen = s;
      }
    }
    for (mq::PlanRow* row : rows)
      row->rule += fmt::format("; AWQ ratio {:.2f}: group output error {:.3g}x plain rounding's", ratio,
                               plain > 0 ? best / plain : 1.0);
    if (clipped && chosen.defined())
      for (size_t i = 0; i < weights.size(); ++i)
        if (specs[i] && clips(g.layers[i], *specs[i]))
          (*clipped)[g.layers[i] + ".weight"] = clip(weights[i] * chosen.unsqueeze(0), x / chosen, *specs[i]);
    return chosen;
  }

  // rounding: gptq (see the top of the file).
  mq::QuantizedModel with_gptq(const mq::Model& model, mq::QuantizeContext& context, mq::QuantizedModel out) const {
    const std::vector<mq::SmoothingGroup> groups = mq::smoothing_groups(model);
    const std::map<std::string, size_t> linears =
        mq::planned_linears(model, out.plan, [](const mq::QuantSpec& s) { return s.is_integer(); });
    std::set<std::string> wanted, firsts;  // recorded: the Linears GPTQ solves, the inputs groups search on
    for (const auto& [layer, row] : linears) wanted.insert(layer);
    for (const mq::SmoothingGroup& g : groups) firsts.insert(g.layers.front());
    wanted.insert(firsts.begin(), firsts.end());
    // Rows written only once their block is done: the Linears solved, the tensors folded.
    std::set<size_t> pending;
    std::map<std::string, std::string> front_of;  // member layer -> its group's front
    for (const auto& [layer, row] : linears) pending.insert(row);
    for (const mq::SmoothingGroup& g : groups) {
      for (const char* part : {".weight", ".bias"})
        if (model.find(g.front + part)) pending.insert(row_of(model, g.front + part));
      for (const std::string& l : g.layers) {
        pending.insert(row_of(model, l + ".weight"));
        front_of[l] = g.front;
      }
    }

    mq::gptq::Settings settings;
    settings.actorder = mq::gptq::ActOrder::kWeight;
    mq::gptq::Hessians hessians;
    std::map<std::string, InputStats> inputs;
    std::map<size_t, mq::QuantizedTensor> solved;  // by plan row, until written
    mq::Model scaled = model;  // the tensors folded so far
    mq::PlannedRows rows(
        scaled, out.plan, context,
        [&](size_t i, const at::Tensor& w) {
          if (const auto s = solved.find(i); s != solved.end()) {
            mq::QuantizedTensor q = std::move(s->second);
            solved.erase(s);
            return q;
          }
          return mq::quantize_weight(w, *out.plan[i].spec, nullptr);  // not a Linear, or one no input reached
        },
        /*progress=*/false);
    context.progress->begin("awq+gptq", static_cast<int64_t>(linears.size()), 0);
    model.runnable->record_sequential(
        context.calibration, std::vector<std::string>(wanted.begin(), wanted.end()),
        [&](size_t, const std::map<std::string, mq::Runnable::Activity>& activity) {
          for (const auto& [layer, a] : activity) {
            if (linears.count(layer)) hessians.add(layer, a.input);
            if (firsts.count(layer)) inputs[layer].add(a.input, max_tokens_);
          }
        },
        [&](const std::vector<std::string>& stage) {
          const std::set<std::string> seen(stage.begin(), stage.end());
          std::vector<mq::SmoothingGroup> block;
          for (const mq::SmoothingGroup& g : groups)
            if (seen.count(g.layers.front())) block.push_back(g);
          std::map<std::string, at::Tensor> scale_of_member;
          scaled = mq::fold_scales(
              scaled, block,
              [&](const mq::SmoothingGroup& g, const Current& current) {
                const auto in = inputs.find(g.layers.front());
                const at::Tensor s = search(g, in == inputs.end() ? nullptr : &in->second, current, out.plan, context, nullptr);
                if (s.defined())
                  for (const std::string& l : g.layers) scale_of_member[l] = s;
                return s;
              },
              out.plan, out.transformed, "; AWQ-scaled");
          for (const mq::SmoothingGroup& g : block) {
            inputs.erase(g.layers.front());
            for (const char* part : {".weight", ".bias"})
              if (model.find(g.front + part)) pending.erase(row_of(model, g.front + part));
            for (const std::string& l : g.layers) pending.erase(row_of(model, l + ".weight"));
          }
          std::map<std::string, at::Tensor> replaced;  // as each quantized weight acts in the unfolded model
          for (const std::string& layer : stage) {
            const auto linear = linears.find(layer);
            if (linear == linears.end() || !hessians.find(layer)) continue;
            const size_t row = linear->second;
            at::Tensor h = hessians.take(layer);
            const auto s = scale_of_member.find(layer);
            if (s != scale_of_member.end()) {
              const at::Tensor inverse = s->second.reciprocal().to(at::kDouble);
              h = h * at::outer(inverse, inverse);
            }
            mq::PlanRow& plan_row = out.plan[row];
            mq::QuantizedTensor q = mq::gptq::quantize_reported(scaled.tensors[row].tensor, std::move(h), *plan_row.spec,
                                                                settings, plan_row.rule);
            at::Tensor acting = q.dequantize();
            if (s != scale_of_member.end() && !linears.count(front_of.at(layer))) acting = acting / s->second.unsqueeze(0);
            replaced[model.tensors[row].name] = acting;
            solved.emplace(row, std::move(q));
            pending.erase(row);
            model.release(model.tensors[row].tensor);
            context.progress->advance(layer, 0);
          }
          rows.make_while([&](size_t i) { return !pending.count(i); });
          return replaced;
        });
    context.progress->end();
    for (const auto& [layer, row] : linears)
      if (pending.count(row) && !solved.count(row))
        context.warn("layer " + layer + " saw no input during calibration; its weight is rounded to nearest");
    out.entries = rows.finish();
    return out;
  }

  // Whether `layer`'s weights are searched for clipping: not q/k projections (AutoAWQ's
  // rule), and only where each row's groups are quantized on their own.
  static bool clips(const std::string& layer, const mq::QuantSpec& spec) {
    for (const char* skipped : {"q_proj", "k_proj", "query", "key"})
      if (layer.size() >= std::strlen(skipped) && layer.compare(layer.size() - std::strlen(skipped), std::string::npos, skipped) == 0)
        return false;
    return spec.granularity == mq::Granularity::kPerGroup || spec.granularity == mq::Granularity::kPerChannel;
  }

  // `w` ([out, in], float32) with each row's groups clipped to the shrink of their max |w|
  // whose quantized group gives the least mean squared error of its part of the output
  // on the inputs `x` ([tokens, in]), output rows 256 at a time.
  static at::Tensor clip(const at::Tensor& w, const at::Tensor& x, const mq::QuantSpec& spec) {
    const int64_t rows = w.size(0), cols = w.size(1);
    const int64_t size = spec.granularity == mq::Granularity::kPerGroup ? spec.group_size : cols;
    if (cols % size) return w;  // a partial last group: left as it is
    const int64_t groups = cols / size;
    const at::Tensor xg = x.reshape({-1, groups, size}).permute({1, 0, 2});  // [groups, tokens, size]
    at::Tensor out = w.clone();
    for (int64_t r0 = 0; r0 < rows; r0 += 256) {
      const at::Tensor chunk = w.narrow(0, r0, std::min<int64_t>(256, rows - r0));
      const int64_t n = chunk.size(0);
      const auto outputs = [&](const at::Tensor& v) {  // [groups, tokens, n]: each group's part
        return at::bmm(xg, v.reshape({n, groups, size}).permute({1, 2, 0}));
      };
      const at::Tensor reference = outputs(chunk);
      const at::Tensor max = chunk.reshape({n, groups, size}).abs().amax(-1, true);  // [n, groups, 1]
      at::Tensor best = max.clone();
      at::Tensor least = at::full({n, groups, 1}, std::numeric_limits<float>::infinity());
      for (int step = 0; step < 10; ++step) {  // shrink 1 - step / 20
        const at::Tensor limit = max * (1.0 - step / 20.0);
        const at::Tensor clamped = at::min(at::max(chunk.reshape({n, groups, size}), -limit), limit).reshape({n, cols});
        const at::Tensor q = mq::quantize_weight(clamped, spec, nullptr).dequantize();
        const at::Tensor error = (outputs(q) - reference).pow(2).mean(1).t().unsqueeze(-1);  // [n, groups, 1]
        const at::Tensor better = error < least;
        least = at::where(better, error, least);
        best = at::where(better, limit, best);
      }
      out.narrow(0, r0, n).copy_(at::min(at::max(chunk.reshape({n, groups, size}), -best), best).reshape({n, cols}));
    }
    return out;
  }

  // AutoAWQ's get_weight_scale: |w| over its group's max |w|, averaged over rows, per input.
  static at::Tensor weight_mean(const at::Tensor& w, int64_t group_size) {
    const int64_t cols = w.size(1);
    if (cols % group_size) return (w.abs() / (w.abs().amax(1, true) + 1e-6)).mean(0);
    const at::Tensor g = w.abs().reshape({-1, group_size});
    return (g / (g.amax(1, true) + 1e-6)).reshape(w.sizes()).mean(0);
  }

  mq::LayerSelector selector_;
  int64_t grid_, max_tokens_;
  bool duo_, clip_, gptq_;
};

}  // namespace

MQ_PLUGIN(AwqQuantizer, mq::PluginKind::kQuantizer, "awq", "0.1.0",
          "Activation-aware scales searched per group of Linears, folded into the norms, then round to nearest",
          MQ_SPEC_OPTIONS,
          {"grid", mq::OptionType::kInt, "20", "ratios tried in [0, 1)"},
          {"duo_scaling", mq::OptionType::kBool, "true", "scales from activations and weights (else activations only)"},
          {"max_tokens", mq::OptionType::kInt, "512", "calibration tokens each group's search runs on"},
          {"clip", mq::OptionType::kBool, "true",
           "search each group's clipping of the weights (not q/k projections; rounding nearest only)"},
          {"rounding", mq::OptionType::kString, "nearest",
           "of the scaled weights: to nearest, or by GPTQ, block by block on quantized inputs", "nearest|gptq"})
