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

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>

#include "mq/error.hpp"
#include "mq/layer_selection.hpp"
#include "mq/quantizer.hpp"
#include "mq/smoothing.hpp"

namespace {

class AwqQuantizer final : public mq::Quantizer {
 public:
  explicit AwqQuantizer(const mq::Options& options)
      : selector_(options, {mq::LayerKind::kLinear}),
        grid_(options.get_int("grid")),
        max_tokens_(options.get_int("max_tokens")),
        duo_(options.get_bool("duo_scaling")),
        clip_(options.get_bool("clip")) {
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
    return rows;
  }

  mq::QuantizedModel quantize(const mq::Model& model, mq::QuantizeContext& context) override {
    mq::QuantizedModel out;
    out.mode = "dynamic";
    out.plan = planned(model, context);
    const std::vector<mq::SmoothingGroup> groups = mq::smoothing_groups(model);
    std::map<std::string, size_t> row_of;
    for (size_t i = 0; i < model.tensors.size(); ++i) row_of[model.tensors[i].name] = i;

    struct Inputs {
      at::Tensor samples;  // the first max_tokens rows, float32
      at::Tensor abs_sum;  // per channel, float64
      int64_t count = 0;
    };
    std::map<std::string, Inputs> inputs;
    std::vector<std::string> first;
    for (const mq::SmoothingGroup& g : groups) first.push_back(g.layers.front());
    mq::record_inputs(model, context, first, [&](const std::string& layer, const at::Tensor& input) {
      const at::Tensor x = input.reshape({-1, input.size(-1)}).to(at::kFloat);
      Inputs& in = inputs[layer];
      const at::Tensor sum = x.abs().sum(0).to(at::kDouble);
      in.abs_sum = in.abs_sum.defined() ? in.abs_sum + sum : sum;
      in.count += x.size(0);
      const int64_t have = in.samples.defined() ? in.samples.size(0) : 0;
      if (have < max_tokens_) {
        const at::Tensor take = x.narrow(0, 0, std::min<int64_t>(x.size(0), max_tokens_ - have));
        in.samples = in.samples.defined() ? at::cat({in.samples, take}) : take.clone();
      }
    });

    std::map<std::string, at::Tensor> clipped;  // by weight name: scaled and clipped, float32
    const auto scale_of = [&](const mq::SmoothingGroup& g, const std::function<at::Tensor(const std::string&)>& current) {
      const auto in = inputs.find(g.layers.front());
      if (in == inputs.end()) {
        context.warn("awq: " + g.layers.front() + " saw no input during calibration; its group is rounded as it is");
        return at::Tensor();
      }
      std::vector<at::Tensor> weights;
      std::vector<const mq::QuantSpec*> specs;
      int64_t group_size = 0;
      for (const std::string& l : g.layers) {
        weights.push_back(current(l + ".weight").to(at::kFloat));
        const mq::PlanRow& row = out.plan[row_of.at(l + ".weight")];
        specs.push_back(row.spec && row.spec->is_integer() ? &*row.spec : nullptr);
        if (specs.back() && !group_size)
          group_size = specs.back()->granularity == mq::Granularity::kPerGroup ? specs.back()->group_size : weights.back().size(1);
      }
      if (!group_size) return at::Tensor();  // nothing in the group is quantized to integers
      const at::Tensor& x = in->second.samples;
      const at::Tensor x_mean = (in->second.abs_sum / static_cast<double>(in->second.count)).to(at::kFloat);
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
      for (const std::string& l : g.layers)
        out.plan[row_of.at(l + ".weight")].rule +=
            fmt::format("; AWQ ratio {:.2f}: group output error {:.3g}x plain rounding's", ratio, plain > 0 ? best / plain : 1.0);
      if (clip_ && chosen.defined())
        for (size_t i = 0; i < weights.size(); ++i)
          if (specs[i] && clips(g.layers[i], *specs[i]))
            clipped[g.layers[i] + ".weight"] = clip(weights[i] * chosen.unsqueeze(0), x / chosen, *specs[i]);
      return chosen;
    };
    mq::Model scaled = mq::fold_scales(model, groups, scale_of, out.plan, out.transformed, "; AWQ-scaled");
    for (auto& [name, w] : clipped) {
      const size_t i = row_of.at(name);
      scaled.tensors[i].tensor = w.to(model.tensors[i].tensor.scalar_type()).contiguous();
      out.plan[i].rule += "; AWQ-clipped";
    }
    out.entries = mq::quantize_planned(scaled, out.plan, context, /*observe_weights=*/true);
    return out;
  }

 private:
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
  bool duo_, clip_;
};

}  // namespace

MQ_PLUGIN(AwqQuantizer, mq::PluginKind::kQuantizer, "awq", "0.1.0",
          "Activation-aware scales searched per group of Linears, folded into the norms, then round to nearest",
          MQ_SPEC_OPTIONS,
          {"grid", mq::OptionType::kInt, "20", "ratios tried in [0, 1)"},
          {"duo_scaling", mq::OptionType::kBool, "true", "scales from activations and weights (else activations only)"},
          {"max_tokens", mq::OptionType::kInt, "512", "calibration tokens each group's search runs on"},
          {"clip", mq::OptionType::kBool, "true", "search each group's clipping of the weights (not q/k projections)"})
