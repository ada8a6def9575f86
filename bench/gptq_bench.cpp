// GPTQ on one Linear: a ROWS x COLS weight against TOKENS calibration tokens (issue 28's
// case: 4096 x 4096, 64 x 512 tokens), int4 groups of 128. Prints the seconds of the
// Hessian accumulation and of the quantization, and the GFLOP/s of each beside a plain
// float32 and float64 matrix product of the accumulation's size on the same threads
// (the machine's BLAS floor), as JSON.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "mq/gptq.hpp"

namespace {

template <class F>
double seconds(F&& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? std::stoll(argv[1]) : 4096, cols = argc > 2 ? std::stoll(argv[2]) : 4096;
  const int64_t tokens = argc > 3 ? std::stoll(argv[3]) : 64 * 512;
  at::manual_seed(0);
  const at::Tensor weight = at::randn({rows, cols});
  const at::Tensor x = at::randn({tokens, cols});
  at::Tensor h;
  const double accumulate = seconds([&] { mq::gptq::accumulate(h, x); });
  mq::QuantSpec spec;
  spec.dtype = mq::DType::kInt4;
  spec.granularity = mq::Granularity::kPerGroup;
  spec.group_size = 128;
  const double quantize = seconds([&] { mq::gptq::quantize(weight, h, spec, {}); });
  at::Tensor sink;
  const double mm32 = seconds([&] { sink = x.t().mm(x); });
  const at::Tensor x64 = x.to(at::kDouble);
  const double mm64 = seconds([&] { sink = x64.t().mm(x64); });
  const double flops = 2.0 * double(tokens) * double(cols) * double(cols);
  // fasterquant's work: the trailing BLAS-3 updates (~rows x cols^2) and the in-block ones.
  const double quantize_flops = double(rows) * double(cols) * double(cols);
  std::printf("{\"accumulate_s\": %.3f, \"accumulate_gflops\": %.1f, \"quantize_s\": %.3f, "
              "\"quantize_gflops\": %.1f, \"blas_fp32_gflops\": %.1f, \"blas_fp64_gflops\": %.1f}\n",
              accumulate, flops / accumulate / 1e9, quantize, quantize_flops / quantize / 1e9,
              flops / mm32 / 1e9, flops / mm64 / 1e9);
  return 0;
}
