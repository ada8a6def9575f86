// GPTQ's numerics against a plain fp64 reference of the algorithm (one column at a
// time, no lazy blocks), and what the quantizer refuses. (That transformers finds its
// artifacts closer to the float model than round-to-nearest is
// tests/interop/check_gptq.py's.)
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/gptq.hpp"
#include "mq/quantizer.hpp"
#include "test_support.hpp"

namespace {

mq::QuantSpec int4_groups(int64_t group) {
  mq::QuantSpec s;
  s.dtype = mq::DType::kInt4;
  s.granularity = mq::Granularity::kPerGroup;
  s.group_size = group;
  return s;
}

// Inputs whose features are correlated (as a network's are): what GPTQ exploits.
at::Tensor correlated_inputs(int64_t tokens, int64_t features) {
  const at::Tensor mix = at::randn({features, features}, at::kDouble) / std::sqrt(double(features));
  return (at::randn({tokens, features}, at::kDouble).mm(mix + at::eye(features, at::kDouble))).to(at::kFloat);
}

// The algorithm written out in fp64, a column at a time (symmetric min/max scales of
// the weights as they are when each group starts, rounded half to even). In activation
// order: columns by falling H diagonal, each group's scales from the weights before any
// update, the groups being runs of the original columns ("weight") or of the columns in
// that order ("group"). The integers in the weight's column order.
at::Tensor reference_integers(const at::Tensor& weight, const at::Tensor& hessian, const mq::QuantSpec& spec,
                              double dampening_frac, mq::gptq::ActOrder actorder = mq::gptq::ActOrder::kNone) {
  const bool ordered = actorder != mq::gptq::ActOrder::kNone, regrouped = actorder == mq::gptq::ActOrder::kGroup;
  const int64_t rows = weight.size(0), cols = weight.size(1), groups = (cols + spec.group_size - 1) / spec.group_size;
  const auto scales_of = [&](const at::Tensor& w, int64_t first, int64_t r) {
    const at::Tensor g = w[r].narrow(0, first, std::min(spec.group_size, cols - first));
    const double mx = std::max(-g.min().item<double>(), g.max().item<double>());
    return static_cast<double>(static_cast<float>(std::max(mx / 7.5, 1.1920928955078125e-07)));
  };
  at::Tensor scale = at::empty({rows, groups}, at::kDouble);
  at::Tensor order = at::arange(cols, at::kLong);
  at::Tensor w = weight.to(at::kDouble).clone(), h = hessian.clone();
  const auto set_scales = [&] {
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t r = 0; r < rows; ++r) scale[r][g] = scales_of(w, g * spec.group_size, r);
  };
  if (ordered) {
    if (!regrouped) set_scales();
    order = std::get<1>(h.diagonal().sort(true, 0, true));
    w = w.index_select(1, order);
    h = h.index_select(0, order).index_select(1, order);
    if (regrouped) set_scales();
  }
  h += at::eye(cols, at::kDouble) * dampening_frac * h.diagonal().mean().item<double>();
  const at::Tensor u = at::linalg_cholesky(at::cholesky_inverse(at::linalg_cholesky(h)), /*upper=*/true);
  at::Tensor q = at::empty({rows, cols}, at::kLong);
  for (int64_t c = 0; c < cols; ++c) {
    const int64_t g = (regrouped ? c : order[c].item<int64_t>()) / spec.group_size;
    if (!ordered && c % spec.group_size == 0)
      for (int64_t r = 0; r < rows; ++r) scale[r][g] = scales_of(w, c, r);
    for (int64_t r = 0; r < rows; ++r) {
      const double x = w[r][c].item<double>(), s = scale[r][g].item<double>();
      const double level = std::clamp(std::nearbyint(x / s), -8.0, 7.0);
      q[r][c] = static_cast<int64_t>(level);
      const double e = (x - level * s) / u[c][c].item<double>();
      for (int64_t k = c; k < cols; ++k) w[r][k] -= e * u[c][k].item<double>();
    }
  }
  return q.index_select(1, at::argsort(order));
}

TEST(Gptq, MatchesAnFp64ReferenceColumnByColumn) {
  at::manual_seed(3);
  const at::Tensor x = correlated_inputs(256, 16);
  const at::Tensor weight = at::randn({6, 16});
  at::Tensor h;
  mq::gptq::accumulate(h, x.narrow(0, 0, 100));
  mq::gptq::accumulate(h, x.narrow(0, 100, 156));  // in two batches: the same sum
  const at::Tensor exact = x.to(at::kDouble).t().mm(x.to(at::kDouble));  // float32 products: within their rounding
  EXPECT_TRUE(at::allclose(h, exact, 1e-6, 1e-6 * exact.abs().max().item<double>()));
  const mq::QuantSpec spec = int4_groups(8);
  mq::gptq::Settings settings;
  settings.block_size = 4;  // lazy updates across blocks and groups
  const mq::QuantizedTensor q = mq::gptq::quantize(weight, h, spec, settings);
  EXPECT_TRUE(at::equal(q.data.to(at::kLong), reference_integers(weight, h, spec, settings.dampening_frac)));
  EXPECT_EQ(q.qparams.scale.sizes(), at::IntArrayRef({6, 2}));
  EXPECT_EQ(q.spec.to_string(), spec.to_string());

  // In activation order: the integers in the weight's own column order, its groups' scales.
  settings.actorder = mq::gptq::ActOrder::kWeight;
  const mq::QuantizedTensor ordered = mq::gptq::quantize(weight, h, spec, settings);
  const at::Tensor expected = reference_integers(weight, h, spec, settings.dampening_frac, settings.actorder);
  EXPECT_TRUE(at::equal(ordered.data.to(at::kLong), expected));
  EXPECT_FALSE(at::equal(expected, reference_integers(weight, h, spec, settings.dampening_frac)));
  EXPECT_TRUE(at::equal(ordered.qparams.scale, mq::quantize_min_max(weight, spec).qparams.scale));
  EXPECT_FALSE(ordered.g_idx.defined());

  // Groups of columns in activation order: the tensor says which group each column is in.
  settings.actorder = mq::gptq::ActOrder::kGroup;
  const mq::QuantizedTensor regrouped = mq::gptq::quantize(weight, h, spec, settings);
  EXPECT_TRUE(at::equal(regrouped.data.to(at::kLong),
                        reference_integers(weight, h, spec, settings.dampening_frac, settings.actorder)));
  const at::Tensor order = std::get<1>(h.diagonal().sort(true, 0, true));
  ASSERT_TRUE(regrouped.g_idx.defined());
  EXPECT_TRUE(at::equal(regrouped.g_idx.to(at::kLong), at::div(at::argsort(order), 8, "floor")));
  EXPECT_TRUE(at::equal(regrouped.qparams.scale,
                        mq::quantize_min_max(weight.index_select(1, order), spec).qparams.scale));
  EXPECT_FALSE(at::equal(regrouped.data, ordered.data));
}

// With uncorrelated inputs of one scale there is nothing to compensate: GPTQ rounds as
// round-to-nearest does. With correlated ones it moves the layer's output less.
TEST(Gptq, IsRoundToNearestForADiagonalHessianAndBetterOtherwise) {
  at::manual_seed(4);
  const at::Tensor weight = at::randn({8, 32});
  const mq::QuantSpec spec = int4_groups(16);
  const mq::QuantizedTensor rtn = mq::quantize_min_max(weight, spec);
  const at::Tensor identity = at::eye(32, at::kDouble) * 5;
  const mq::QuantizedTensor same = mq::gptq::quantize(weight, identity, spec, {});
  EXPECT_TRUE(at::equal(same.data, rtn.data));
  EXPECT_TRUE(at::equal(same.qparams.scale, rtn.qparams.scale));

  at::Tensor h;
  mq::gptq::accumulate(h, correlated_inputs(512, 32));
  const mq::QuantizedTensor gptq = mq::gptq::quantize(weight, h, spec, {});
  const std::vector<double> errors = mq::gptq::output_errors(weight, {gptq.dequantize(), rtn.dequantize()}, h);
  const double ours = errors[0], nearest = errors[1];
  EXPECT_LT(ours, 0.8 * nearest) << ours << " vs " << nearest;
}

// An input no calibration token ever reached (a zero column of X): its weights do not
// matter to the output, and the Hessian stays invertible.
TEST(Gptq, DeadInputsAreZeroed) {
  at::manual_seed(5);
  at::Tensor x = correlated_inputs(64, 8);
  x.select(1, 3).zero_();
  at::Tensor h;
  mq::gptq::accumulate(h, x);
  mq::QuantSpec spec;
  spec.dtype = mq::DType::kInt8;
  spec.granularity = mq::Granularity::kPerChannel;
  const mq::QuantizedTensor q = mq::gptq::quantize(at::randn({4, 8}), h, spec, {});
  EXPECT_EQ(q.data.select(1, 3).abs().sum().item<int>(), 0);
  EXPECT_EQ(q.qparams.scale.sizes(), at::IntArrayRef({4}));
}

// Layers fed the very same tensor (q/k/v) share one Hessian, the sum separate ones
// would have; a tensor of equal values elsewhere in memory is another input.
TEST(Gptq, LayersFedOneTensorShareOneHessian) {
  at::manual_seed(6);
  mq::gptq::Hessians hessians;
  at::Tensor expected, other;
  for (int batch = 0; batch < 2; ++batch) {
    const at::Tensor x = at::randn({5, 4});
    hessians.add("q", x);
    hessians.add("k", x.reshape({-1, 4}));  // a view of it, as TensorRunnable hands over
    hessians.add("o", x.clone());
    mq::gptq::accumulate(expected, x);
  }
  ASSERT_TRUE(hessians.find("q") && hessians.find("k") && hessians.find("o"));
  EXPECT_EQ(hessians.find("q"), hessians.find("k"));
  EXPECT_NE(hessians.find("q"), hessians.find("o"));
  EXPECT_TRUE(at::equal(*hessians.find("k"), expected));
  EXPECT_TRUE(at::equal(*hessians.find("o"), expected));
  EXPECT_TRUE(at::equal(hessians.take("q"), expected));
  EXPECT_TRUE(hessians.find("k"));  // still k's
  EXPECT_TRUE(at::equal(hessians.take("k"), expected));
  EXPECT_FALSE(hessians.find("k"));
  EXPECT_FALSE(hessians.find("unseen"));
}

TEST(Gptq, NeedsARunnableModelAndCalibration) {
  auto gptq = mq::test::make_plugin<mq::Quantizer>();
  mq::Model checkpoint;
  checkpoint.tensors = {{"fc.weight", at::randn({4, 8})}};
  checkpoint.layers = {{"fc", mq::LayerKind::kLinear, "fc.weight", ""}};
  mq::QuantizeContext context;
  try {
    gptq->plan(checkpoint, context);
    ADD_FAILURE() << "planned";
  } catch (const mq::RecipeError& e) {
    EXPECT_NE(std::string(e.what()).find("this model cannot run"), std::string::npos) << e.what();
  }
}

}  // namespace
