// AWQ's scale search and clipping search against a plain fp64 reference of each, on a
// tiny Llama with outlier channels that the llama architecture runs. (That transformers
// finds its artifacts closer to the float model than round to nearest is
// tests/interop/check_awq.py's.)
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "mq/layer_selection.hpp"
#include "mq/progress.hpp"
#include "mq/quantize.hpp"
#include "mq/quantizer.hpp"
#include "test_support.hpp"

namespace {

constexpr int64_t kGroup = 16, kGrid = 20;

// Round to nearest, int4 symmetric in groups of kGroup, in fp64 (min/max scales as mq
// stores them: float32).
at::Tensor rtn(const at::Tensor& w) {
  const at::Tensor g = w.reshape({-1, kGroup});
  const at::Tensor scale = (g.abs().amax(1, true) / 7.5).clamp_min(1.1920928955078125e-07).to(at::kFloat).to(at::kDouble);
  return ((g / scale).round().clamp(-8, 7) * scale).reshape(w.sizes());
}

// AWQ's group output error for scales s: Σ_i ‖X W_iᵀ − (X / s) Q(W_i s)ᵀ‖².
double loss(const at::Tensor& x, const std::vector<at::Tensor>& weights, const at::Tensor& s) {
  double total = 0;
  for (const at::Tensor& w : weights)
    total += (x.mm(w.t()) - (x / s).mm(rtn(w * s).t())).pow(2).sum().item<double>();
  return total;
}

// Each ratio's scales, as AutoAWQ's duo scaling makes them from the inputs' mean |x| and
// the weights' mean |w| over their group's max.
at::Tensor scales(const at::Tensor& x, const std::vector<at::Tensor>& weights, double r) {
  const at::Tensor x_mean = x.abs().mean(0);
  const at::Tensor g = at::cat(weights).abs().reshape({-1, kGroup});
  const at::Tensor w_mean = (g / (g.amax(1, true) + 1e-6)).reshape({-1, x.size(1)}).mean(0);
  const at::Tensor s = (x_mean.pow(r) / (w_mean.pow(1 - r) + 1e-4)).clamp_min(1e-4);
  return s / (s.max() * s.min()).sqrt();
}

TEST(Awq, SearchesScalesAndClipsAsAnFp64ReferenceDoes) {
  mq::test::ScratchDir dir("awq-reference");
  const int64_t hidden = 32;
  at::Tensor norm = at::ones({hidden});
  norm[3] = 12.0;  // outlier channels in front of q/k/v
  norm[20] = 12.0;
  mq::test::write_tiny_llama(dir.path(), hidden, 1, {{"model.layers.0.input_layernorm.weight", norm}});
  const mq::Model model = mq::load_model(dir.path());
  at::manual_seed(2);
  mq::NullProgress progress;
  mq::QuantizeContext context;
  context.calibration = {at::randint(20, {2, 24}, at::kLong), at::randint(20, {1, 40}, at::kLong)};
  context.progress = &progress;
  context.warn = [](const std::string& w) { ADD_FAILURE() << w; };
  context.make_observer = [] { return std::unique_ptr<mq::Observer>(); };  // min/max, as the default observer
  auto awq = mq::test::make_plugin<mq::Quantizer>(
      {mq::test::opt("dtype", mq::Value::string("int4")), mq::test::opt("group_size", mq::Value::integer(kGroup))});
  const mq::QuantizedModel out = awq->quantize(model, context);

  const std::string p = "model.layers.0.";
  at::Tensor x;  // q/k/v's input over every calibration token (fewer than max_tokens)
  model.runnable->record_layers(context.calibration, {p + "self_attn.q_proj"}, [&](size_t, const auto& seen) {
    const at::Tensor batch = seen.at(p + "self_attn.q_proj").input.reshape({-1, hidden}).to(at::kDouble);
    x = x.defined() ? at::cat({x, batch}) : batch;
  });
  std::vector<at::Tensor> qkv;
  for (const char* l : {"q_proj", "k_proj", "v_proj"})
    qkv.push_back(model.find(p + "self_attn." + l + ".weight")->to(at::kDouble));

  // The search: mq's scales (the float norm over the folded one) are the grid's best.
  const auto written = [&](const std::string& name) -> const mq::QuantizedEntry& {
    for (const mq::QuantizedEntry& e : out.entries)
      if (e.name == name) return e;
    throw std::runtime_error("no " + name);
  };
  const at::Tensor s = norm.to(at::kDouble) / written(p + "input_layernorm.weight").tensor.to(at::kDouble);
  double best = std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < kGrid; ++i) best = std::min(best, loss(x, qkv, scales(x, qkv, double(i) / kGrid)));
  const double plain = loss(x, qkv, at::ones({hidden}, at::kDouble));
  EXPECT_LE(loss(x, qkv, s), best * (1 + 1e-5));
  EXPECT_LT(best, 0.9 * plain);  // the outliers make scaling worth it
  EXPECT_GT((s - 1).abs().max().item<double>(), 0.1);

  // The clipping search (v_proj, not q/k): each row's group is the clamp, of 1 - k/20
  // (k < 10) of its max |w|, whose rounding moves its part of the output on the scaled
  // inputs least; mq's does no worse than the best of them. The candidates are made as
  // mq makes them (float32, from the scaled weights it reports), so that a value at the
  // clamp rounds as there: it lies half a step from two levels.
  mq::QuantSpec spec;
  spec.dtype = mq::DType::kInt4;
  spec.granularity = mq::Granularity::kPerGroup;
  spec.group_size = kGroup;
  const at::Tensor v = out.transformed.at(p + "self_attn.v_proj.weight"), xs = x / s;
  const at::Tensor ours = written(p + "self_attn.v_proj.weight").quantized->dequantize().to(at::kDouble);
  int64_t clipped = 0;
  for (int64_t r = 0; r < v.size(0); ++r)
    for (int64_t g = 0; g < hidden / kGroup; ++g) {
      const at::Tensor w = v[r].narrow(0, g * kGroup, kGroup).unsqueeze(0), xg = xs.narrow(1, g * kGroup, kGroup);
      const auto error = [&](const at::Tensor& q) { return xg.mv(q.to(at::kDouble) - w[0].to(at::kDouble)).pow(2).mean().item<double>(); };
      const at::Tensor max = w.abs().max();
      double least = std::numeric_limits<double>::infinity(), unclipped = 0;
      for (int step = 0; step < 10; ++step) {
        const at::Tensor limit = max * (1.0 - step / 20.0);
        const double e = error(mq::quantize_weight(at::min(at::max(w, -limit), limit), spec, nullptr).dequantize()[0]);
        if (step == 0) unclipped = e;
        least = std::min(least, e);
      }
      EXPECT_LE(error(ours[r].narrow(0, g * kGroup, kGroup)), least * (1 + 1e-4)) << r << ", " << g;
      clipped += least < unclipped;
    }
  EXPECT_GT(clipped, 0);
  for (const mq::PlanRow& row : out.plan)
    if (row.tensor == p + "self_attn.v_proj.weight") EXPECT_NE(row.rule.find("AWQ-clipped"), std::string::npos);
}

}  // namespace
