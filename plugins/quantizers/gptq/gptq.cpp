#include "gptq.hpp"

#include <ATen/ATen.h>

#include <string>

#include "mq/affine.hpp"
#include "mq/error.hpp"

namespace mq::gptq {

void accumulate(at::Tensor& hessian, const at::Tensor& inputs) {
  const at::Tensor x = inputs.reshape({-1, inputs.size(-1)}).to(at::kDouble);
  if (!hessian.defined()) hessian = at::zeros({x.size(1), x.size(1)}, at::kDouble);
  hessian.addmm_(x.t(), x);
}

namespace {

// The inverse Hessian's upper Cholesky factor, after dampening (and dead inputs, whose
// diagonal is 0, set to 1: their weights are zeroed by the caller).
at::Tensor inverse_factor(at::Tensor h, double dampening_frac) {
  const at::Tensor diagonal = h.diagonal();
  const double damp = dampening_frac * diagonal.mean().item<double>();
  for (int attempt = 0; attempt < 3; ++attempt) {
    const double factor = attempt == 0 ? 1.0 : attempt == 1 ? 10.0 : 100.0;
    const at::Tensor damped = h + at::eye(h.size(0), h.options()) * (damp * factor + (damp == 0 ? 1e-8 : 0));
    const auto [lower, info] = at::linalg_cholesky_ex(damped);
    if (info.item<int>() != 0) continue;
    const auto [inverse_upper, info2] = at::linalg_cholesky_ex(at::cholesky_inverse(lower), /*upper=*/true);
    if (info2.item<int>() == 0) return inverse_upper;
  }
  throw RecipeError("GPTQ: the inputs' Hessian stays singular after dampening 100 times dampening_frac; "
                    "raise dampening_frac or calibrate on more tokens");
}

}  // namespace

QuantizedTensor quantize(const at::Tensor& weight, const at::Tensor& hessian, const QuantSpec& spec,
                         const Settings& settings) {
  const int64_t rows = weight.size(0), cols = weight.size(1);
  at::Tensor w = weight.to(at::kFloat).clone();
  at::Tensor h = hessian.clone();
  const at::Tensor dead = h.diagonal() == 0;
  h.diagonal().masked_fill_(dead, 1.0);
  w.index_put_({at::indexing::Slice(), dead}, 0.0f);
  const at::Tensor hinv = inverse_factor(h, settings.dampening_frac).to(at::kFloat);

  const bool grouped = spec.granularity == Granularity::kPerGroup;
  const int64_t group = grouped ? spec.group_size : cols;
  const int64_t groups = (cols + group - 1) / group;
  // Per row (per tensor: one for all) and group, min/max qparams with scales as stored.
  QuantSpec rows_spec = spec;
  rows_spec.granularity = Granularity::kPerChannel;
  rows_spec.axis = 0;
  const auto params_of = [&](const at::Tensor& columns) {
    at::Tensor mn = std::get<0>(columns.min(1)), mx = std::get<0>(columns.max(1));
    if (spec.granularity == Granularity::kPerTensor) mn = mn.min().expand({rows}), mx = mx.max().expand({rows});
    QParams qp = qparams_from_min_max(mn.contiguous(), mx.contiguous(), rows_spec);
    qp.scale = qp.scale.to(weight.scalar_type()).to(at::kFloat);  // what dequantization will use
    return qp;
  };
  at::Tensor scales = at::empty({rows, groups}, at::kFloat);
  at::Tensor zeros = at::empty({rows, groups}, at::kInt);
  QParams current;
  if (!grouped) current = params_of(w);
  const double qmin = spec.qmin(), qmax = spec.qmax();

  at::Tensor q = at::empty_like(w);  // dequantized values
  for (int64_t i1 = 0; i1 < cols; i1 += settings.block_size) {
    const int64_t i2 = std::min(i1 + settings.block_size, cols), count = i2 - i1;
    at::Tensor w1 = w.narrow(1, i1, count).clone();
    at::Tensor err1 = at::zeros({rows, count}, at::kFloat);
    const at::Tensor hinv1 = hinv.narrow(0, i1, count).narrow(1, i1, count);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t col = i1 + i;
      if (grouped && col % group == 0) {
        // The group's columns as they are now: those of this block updated so far.
        const int64_t end = std::min(col + group, cols);
        at::Tensor columns = w.narrow(1, col, end - col).clone();
        const int64_t in_block = std::min(end, i2) - col;
        columns.narrow(1, 0, in_block).copy_(w1.narrow(1, i, in_block));
        current = params_of(columns);
      }
      if (col % group == 0 || !grouped) {
        scales.select(1, col / group).copy_(current.scale.reshape({rows}));
        zeros.select(1, col / group).copy_(current.zero_point.reshape({rows}));
      }
      const at::Tensor wc = w1.select(1, i);
      const at::Tensor zp = current.zero_point.reshape({rows}).to(at::kFloat);
      const at::Tensor sc = current.scale.reshape({rows});
      const at::Tensor dq = ((wc / sc).round() + zp).clamp(qmin, qmax).sub(zp).mul(sc);
      q.select(1, col).copy_(dq);
      const at::Tensor e = (wc - dq) / hinv1[i][i];
      w1.narrow(1, i, count - i).sub_(at::outer(e, hinv1[i].narrow(0, i, count - i)));
      err1.select(1, i).copy_(e);
    }
    if (i2 < cols) w.narrow(1, i2, cols - i2).sub_(at::mm(err1, hinv.narrow(0, i1, count).narrow(1, i2, cols - i2)));
  }
  QParams qparams;
  if (grouped) {
    qparams = {scales, zeros};
  } else if (spec.granularity == Granularity::kPerChannel) {
    qparams = {scales.select(1, 0).contiguous(), zeros.select(1, 0).contiguous()};
  } else {
    qparams = {scales[0].narrow(0, 0, 1).contiguous(), zeros[0].narrow(0, 0, 1).contiguous()};
  }
  QuantizedTensor out = mq::quantize(q, qparams, spec);  // the integers of q, which is on the grid
  out.original_dtype = weight.scalar_type();
  return out;
}

double output_error(const at::Tensor& weight, const at::Tensor& dequantized, const at::Tensor& hessian) {
  const at::Tensor w = weight.to(at::kDouble), d = w - dequantized.to(at::kDouble);
  const double signal = (w.mm(hessian) * w).sum().item<double>();
  return signal > 0 ? (d.mm(hessian) * d).sum().item<double>() / signal : 0.0;
}

}  // namespace mq::gptq
