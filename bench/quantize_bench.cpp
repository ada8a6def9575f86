// Throughput of the hot loops on inputs large enough (512 MiB of fp32 by default) that
// caches do not flatter them: GB/s of float input read.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <cstdlib>

#include "mq/affine.hpp"

namespace {

int64_t rows() {
  const char* env = std::getenv("MQ_BENCH_ROWS");
  return env ? std::atoll(env) : 16384;  // x 8192 columns x 4 B = 512 MiB
}
constexpr int64_t kCols = 8192;

const at::Tensor& weights(at::ScalarType dtype) {
  static std::map<at::ScalarType, at::Tensor> cache;
  auto it = cache.find(dtype);
  if (it == cache.end()) {
    at::manual_seed(0);
    it = cache.emplace(dtype, at::randn({rows(), kCols}).to(dtype)).first;
  }
  return it->second;
}

mq::QuantSpec spec(mq::DType dtype, mq::Granularity g) {
  mq::QuantSpec s;
  s.dtype = dtype;
  s.granularity = g;
  s.group_size = 128;
  return s;
}

void run_quantize(benchmark::State& state, at::ScalarType input, mq::DType dtype, mq::Granularity g) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  const at::Tensor& w = weights(input);
  const mq::QuantSpec s = spec(dtype, g);
  auto [mn, mx] = mq::min_max(w, s);
  const mq::QParams qp = mq::qparams_from_min_max(mn, mx, s);
  for (auto _ : state) benchmark::DoNotOptimize(mq::quantize(w, qp, s).data.data_ptr());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.nbytes()));
  state.counters["elements/s"] = benchmark::Counter(static_cast<double>(state.iterations() * w.numel()),
                                                    benchmark::Counter::kIsRate);
}

void BM_QuantizeInt8PerChannelFp32(benchmark::State& s) {
  run_quantize(s, at::kFloat, mq::DType::kInt8, mq::Granularity::kPerChannel);
}
void BM_QuantizeInt4Group128Fp32(benchmark::State& s) {
  run_quantize(s, at::kFloat, mq::DType::kInt4, mq::Granularity::kPerGroup);
}
void BM_QuantizeInt8PerChannelBf16(benchmark::State& s) {
  run_quantize(s, at::kBFloat16, mq::DType::kInt8, mq::Granularity::kPerChannel);
}

void BM_MinMaxPerChannelFp32(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  const at::Tensor& w = weights(at::kFloat);
  const mq::QuantSpec s = spec(mq::DType::kInt8, mq::Granularity::kPerChannel);
  for (auto _ : state) benchmark::DoNotOptimize(mq::min_max(w, s).first.data_ptr());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.nbytes()));
}

// The stream the targets are measured against: read fp32, write int8, nothing else.
void BM_StreamFp32ToInt8(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  const at::Tensor& w = weights(at::kFloat);
  at::Tensor out = at::empty(w.sizes(), at::kChar);
  out.zero_();
  const float* in = w.data_ptr<float>();
  int8_t* o = out.data_ptr<int8_t>();
  for (auto _ : state) {
    at::parallel_for(0, w.size(0), 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b * kCols; i < e * kCols; ++i) o[i] = static_cast<int8_t>(in[i]);
    });
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.nbytes()));
}

}  // namespace

BENCHMARK(BM_StreamFp32ToInt8)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_QuantizeInt8PerChannelFp32)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_QuantizeInt4Group128Fp32)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_QuantizeInt8PerChannelBf16)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MinMaxPerChannelFp32)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
