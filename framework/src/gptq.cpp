#include "mq/gptq.hpp"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/layer_selection.hpp"

namespace mq::gptq {

void accumulate(at::Tensor& hessian, const at::Tensor& inputs) {
  const at::Tensor x = inputs.reshape({-1, inputs.size(-1)}).to(at::kFloat);
  if (!hessian.defined()) hessian = at::zeros({x.size(1), x.size(1)}, at::kDouble);
  hessian.add_(x.t().mm(x).to(at::kDouble));
}

void Hessians::add(const std::string& layer, const at::Tensor& input) {
  if (batch_.count(layer)) batch_.clear();  // the layer again: the next batch
  std::string owner = layer;
  for (const auto& [other, x] : batch_)
    if (x.data_ptr() == input.data_ptr() && x.sizes() == input.sizes() && x.strides() == input.strides() &&
        x.scalar_type() == input.scalar_type()) {
      owner = owner_.at(other);
      break;
    }
  const auto [it, fresh] = owner_.emplace(layer, owner);
  if (fresh) ++users_[owner];
  if (it->second != owner)
    throw std::logic_error("GPTQ: " + layer + " shared its input with " + it->second + " in one batch, not in another");
  batch_[layer] = input;
  if (owner == layer) accumulate(hessians_[layer], input);
}

const at::Tensor* Hessians::find(const std::string& layer) const {
  const auto o = owner_.find(layer);
  if (o == owner_.end()) return nullptr;
  const auto h = hessians_.find(o->second);
  return h == hessians_.end() ? nullptr : &h->second;
}

at::Tensor Hessians::take(const std::string& layer) {
  const auto o = owner_.find(layer);
  const auto h = o == owner_.end() ? hessians_.end() : hessians_.find(o->second);
  if (h == hessians_.end()) return {};
  batch_.clear();  // recording is over for the layer's batches
  at::Tensor hessian = h->second;
  if (--users_.at(o->second) == 0) hessians_.erase(h);
  return hessian;
}

namespace {

// The inverse Hessian's upper Cholesky factor U (H^-1 = U^T U) in float32, of H with its
// inputs taken in `order` (P H P^T), dead inputs' diagonal (0) set to 1 (the caller
// zeroes their weights), after dampening. With J the order-reversing permutation and
// J P H P^T J = L L^T, U = J L^-1 J: one Cholesky factorization and one triangular solve,
// not the reference's three factorizations (cholesky, cholesky_inverse, cholesky again),
// the same factor up to rounding. Of n x n float64 matrices (242 MiB at n = 5632) two at
// a time are made.
at::Tensor inverse_factor(at::Tensor hessian, const at::Tensor& order, const at::Tensor& dead,
                          double dampening_frac) {
  const int64_t n = hessian.size(0);
  const at::Tensor reversed = order.flip(0);
  at::Tensor a = hessian.index({reversed.unsqueeze(1), reversed.unsqueeze(0)});
  hessian.reset();
  a.diagonal().masked_fill_(dead.index_select(0, reversed), 1.0);
  const double damp = dampening_frac * a.diagonal().mean().item<double>();
  double added = 0;
  for (const double factor : {1.0, 10.0, 100.0}) {
    a.diagonal().add_(damp * factor - added);
    added = damp * factor;
    auto [lower, info] = at::linalg_cholesky_ex(a);
    if (info.item<int>() != 0) continue;
    a.reset();
    at::Tensor inverse = at::eye(n, lower.options());
    at::linalg_solve_triangular_out(inverse, lower, inverse, /*upper=*/false);
    lower.reset();
    return inverse.to(at::kFloat).flip({0, 1});
  }
  throw RecipeError("GPTQ: the inputs' Hessian stays singular after dampening 100 times dampening_frac; "
                    "raise dampening_frac or calibrate on more tokens");
}

}  // namespace

QuantizedTensor quantize(const at::Tensor& weight, at::Tensor hessian, const QuantSpec& spec,
                         const Settings& settings) {
  const int64_t rows = weight.size(0), cols = weight.size(1);
  at::Tensor w = weight.to(at::kFloat).clone();
  const at::Tensor dead = hessian.diagonal() == 0;
  w.index_put_({at::indexing::Slice(), dead}, 0.0f);

  const bool grouped = spec.granularity == Granularity::kPerGroup;
  const int64_t group = grouped ? spec.group_size : cols;
  const int64_t groups = (cols + group - 1) / group;
  // Per row (per tensor: one for all) and group, min/max qparams with scales as stored.
  QuantSpec rows_spec = spec;
  rows_spec.granularity = Granularity::kPerChannel;
  rows_spec.axis = 0;
  at::Tensor scales = at::empty({rows, groups}, at::kFloat);
  at::Tensor zeros = at::empty({rows, groups}, at::kFloat);  // integers, as the kernel takes them
  const auto set_params = [&](const at::Tensor& columns, int64_t g) {
    at::Tensor mn = std::get<0>(columns.min(1)), mx = std::get<0>(columns.max(1));
    if (spec.granularity == Granularity::kPerTensor) mn = mn.min().expand({rows}), mx = mx.max().expand({rows});
    const QParams qp = qparams_from_min_max(mn.contiguous(), mx.contiguous(), rows_spec);
    scales.select(1, g).copy_(qp.scale.reshape({rows}).to(weight.scalar_type()));  // as dequantization will use it
    zeros.select(1, g).copy_(qp.zero_point.reshape({rows}));
  };

  // Activation order: columns taken in order of falling H diagonal (the inputs of most
  // energy first, while the most columns remain to take up their error), each group's
  // scales set from the weights before any update: the groups are the original columns'
  // ("weight": the layout is unchanged), or runs of columns in that order ("group": each
  // group's columns have inputs of like energy; the tensor records which group each
  // column is in). Without it, in column order, a group's scales come from its columns as
  // they are when the group starts.
  const bool ordered = settings.actorder != ActOrder::kNone;
  const bool regrouped = settings.actorder == ActOrder::kGroup && grouped;
  at::Tensor order = at::arange(cols, at::kLong);
  const auto set_all_params = [&] {
    for (int64_t g = 0; g < groups; ++g) set_params(w.narrow(1, g * group, std::min(group, cols - g * group)), g);
  };
  if (ordered) {
    if (!regrouped) set_all_params();
    const at::Tensor energy = hessian.diagonal().masked_fill(dead, 1.0);
    order = std::get<1>(energy.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
    w = w.index_select(1, order);
    if (regrouped) set_all_params();
  }
  // By position: the column's group.
  const at::Tensor group_of = at::div(regrouped ? at::arange(cols, at::kLong) : order, group, "floor").contiguous();
  const int64_t* const G = group_of.data_ptr<int64_t>();
  const at::Tensor hinv = inverse_factor(std::move(hessian), order, dead, settings.dampening_frac).contiguous();
  const float qmin = static_cast<float>(spec.qmin()), qmax = static_cast<float>(spec.qmax());

  // Columns left to right, a block of block_size at a time: within the block each row
  // is its own sequence of (round, spread the error over the block's later columns),
  // rows in parallel; between blocks the block's errors reach the columns after it in
  // one matrix product. A row's arithmetic does not depend on how rows are split.
  at::Tensor q = at::empty_like(w);  // dequantized values
  at::Tensor err = at::empty({rows, std::min(settings.block_size, cols)}, at::kFloat);
  float* const W = w.data_ptr<float>();
  float* const Q = q.data_ptr<float>();
  float* const E = err.data_ptr<float>();
  const float* const U = hinv.data_ptr<float>();
  for (int64_t i1 = 0; i1 < cols; i1 += settings.block_size) {
    const int64_t i2 = std::min(i1 + settings.block_size, cols), count = i2 - i1;
    for (int64_t s = i1; s < i2;) {
      if (!ordered && s % group == 0) set_params(w.narrow(1, s, std::min(group, cols - s)), s / group);
      const int64_t e = ordered ? i2 : std::min(i2, (s / group + 1) * group);
      const float* const S = scales.data_ptr<float>();
      const float* const Z = zeros.data_ptr<float>();
      at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          float* const wr = W + r * cols;
          for (int64_t c = s; c < e; ++c) {
            const float x = wr[c], scale = S[r * groups + G[c]], zero = Z[r * groups + G[c]];
            const float level = std::min(std::max(std::nearbyint(x / scale) + zero, qmin), qmax);
            const float dq = (level - zero) * scale;
            Q[r * cols + c] = dq;
            const float* const u = U + c * cols;
            const float error = (x - dq) / u[c];
            E[r * count + (c - i1)] = error;
            for (int64_t j = c + 1; j < i2; ++j) wr[j] -= error * u[j];
          }
        }
      });
      s = e;
    }
    if (i2 < cols) {
      at::Tensor rest = w.narrow(1, i2, cols - i2);
      rest.addmm_(err.view({-1}).narrow(0, 0, rows * count).view({rows, count}),
                  hinv.narrow(0, i1, count).narrow(1, i2, cols - i2), 1, -1);
    }
  }
  if (ordered && !regrouped) q = q.index_select(1, at::argsort(order));
  zeros = zeros.to(at::kInt);
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
  return regrouped ? with_group_index(std::move(out), order) : out;
}

QuantizedTensor quantize_reported(const at::Tensor& weight, at::Tensor hessian, const QuantSpec& spec,
                                  const Settings& settings, std::string& rule) {
  const at::Tensor h32 = hessian.to(at::kFloat);
  QuantizedTensor q = quantize(weight, std::move(hessian), spec, settings);
  const std::vector<double> errors =
      output_errors(weight, {q.dequantize(), quantize_weight(weight, spec, nullptr).dequantize()}, h32);
  rule += fmt::format("; GPTQ: layer-output error {:.3g} (round to nearest {:.3g})", errors[0], errors[1]);
  return q;
}

std::vector<double> output_errors(const at::Tensor& weight, const std::vector<at::Tensor>& dequantized,
                                  const at::Tensor& hessian) {
  const at::Tensor h = hessian.to(at::kFloat), w = weight.to(at::kFloat);
  const auto energy = [&](const at::Tensor& x) { return (x.mm(h) * x).sum(at::kDouble).item<double>(); };
  const double signal = energy(w);
  std::vector<double> out;
  for (const at::Tensor& d : dequantized) out.push_back(signal > 0 ? energy(w - d.to(at::kFloat)) / signal : 0.0);
  return out;
}

}  // namespace mq::gptq
