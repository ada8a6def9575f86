// Throughput of the hot loops on inputs large enough (512 MiB of fp32 by default) that
// caches do not flatter them: GB/s of float input read.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <cstdlib>

#include "mq/affine.hpp"
#include "mq/observer.hpp"
#include "mq/plugin.hpp"
#include "mq/value.hpp"

// The histogram observer plugin, linked in as objects.
extern "C" const mq::PluginDescriptor* mq_plugin_descriptor() noexcept;

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

// An output buffer of the weights' shape, made once for the whole run: freeing one
// unmaps it, and on a VM with shadow page tables (session 11's PVM guest) any large
// unmap drops the mappings of the whole process, so that the next pass over the 512 MiB
// input faults every page in again (0.5-0.7 s, 5-20x a pass).
const at::Tensor& output(at::ScalarType dtype) {
  static std::map<at::ScalarType, at::Tensor> cache;
  auto it = cache.find(dtype);
  if (it == cache.end()) it = cache.emplace(dtype, at::zeros({rows(), kCols}, at::TensorOptions(dtype))).first;
  return it->second;
}

// What quantizing one weight costs: min/max, qparams and quantization in one pass
// (mq::quantize_min_max), into an output buffer faulted in once, as a streaming writer
// reuses it; `fresh` allocates the output every time instead. One untimed pass first
// maps the pages back in (see output()).
void run_quantize(benchmark::State& state, at::ScalarType input, mq::DType dtype,
                  mq::Granularity g, bool fresh = false) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  const at::Tensor& w = weights(input);
  const mq::QuantSpec s = spec(dtype, g);
  const at::Tensor out = fresh ? at::Tensor() : output(s.qmin() < 0 ? at::kChar : at::kByte);
  mq::quantize_min_max(w, s, mq::kScaleEps, out);
  for (auto _ : state)
    benchmark::DoNotOptimize(mq::quantize_min_max(w, s, mq::kScaleEps, out).data.data_ptr());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.nbytes()));
  state.counters["elements/s"] = benchmark::Counter(static_cast<double>(state.iterations() * w.numel()),
                                                    benchmark::Counter::kIsRate);
}

void BM_QuantizeInt8PerChannelFp32(benchmark::State& s) {
  run_quantize(s, at::kFloat, mq::DType::kInt8, mq::Granularity::kPerChannel);
}
void BM_QuantizeInt8PerChannelFp32FreshOutput(benchmark::State& s) {
  run_quantize(s, at::kFloat, mq::DType::kInt8, mq::Granularity::kPerChannel, true);
}
void BM_QuantizeInt4Group128Fp32(benchmark::State& s) {
  run_quantize(s, at::kFloat, mq::DType::kInt4, mq::Granularity::kPerGroup);
}
void BM_QuantizeInt8PerChannelBf16(benchmark::State& s) {
  run_quantize(s, at::kBFloat16, mq::DType::kInt8, mq::Granularity::kPerChannel);
}
void BM_QuantizeInt8PerChannelFp16(benchmark::State& s) {
  run_quantize(s, at::kHalf, mq::DType::kInt8, mq::Granularity::kPerChannel);
}

void run_min_max(benchmark::State& state, mq::Granularity g) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  const at::Tensor& w = weights(at::kFloat);
  const mq::QuantSpec s = spec(mq::DType::kInt8, g);
  mq::min_max(w, s);  // untimed: maps the pages back in
  for (auto _ : state) benchmark::DoNotOptimize(mq::min_max(w, s).first.data_ptr());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.nbytes()));
}

void BM_MinMaxPerChannelFp32(benchmark::State& s) { run_min_max(s, mq::Granularity::kPerChannel); }
void BM_MinMaxPerTensorFp32(benchmark::State& s) { run_min_max(s, mq::Granularity::kPerTensor); }

// The histogram observer plugin (linked in) over batches of 2048 rows, taking the
// weights' batches in turn (so the range may still grow), as bench/torch_quantize.py
// feeds PyTorch's HistogramObserver.
void BM_HistogramObserver(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  const at::Tensor& w = weights(at::kFloat);
  const int64_t batch = 2048, batches = w.size(0) / batch;
  const mq::PluginDescriptor* d = mq_plugin_descriptor();
  std::unique_ptr<mq::Plugin> plugin = d->factory->create(mq::resolve_options(*d, mq::Value::map({})));
  auto* observer = dynamic_cast<mq::Observer*>(plugin.get());
  const mq::QuantSpec s = spec(mq::DType::kUInt8, mq::Granularity::kPerTensor);
  observer->observe(w.narrow(0, 0, batch), s);
  mq::min_max(w, spec(mq::DType::kInt8, mq::Granularity::kPerTensor));  // untimed: maps the pages back in
  int64_t next = 1;
  for (auto _ : state) observer->observe(w.narrow(0, (next++ % batches) * batch, batch), s);
  state.SetBytesProcessed(state.iterations() * batch * w.size(1) * 4);
  state.counters["rows/s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * batch), benchmark::Counter::kIsRate);
}

// The bound the kernels are measured against: read fp32, write int8, nothing else,
// vectorized the way the kernels are, into a buffer faulted in once.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), optimize("O3"))) void stream_fp32_to_int8(
    const float* in, int8_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int8_t>(static_cast<int32_t>(in[i]));
}

void BM_StreamFp32ToInt8(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  const at::Tensor& w = weights(at::kFloat);
  const float* in = w.data_ptr<float>();
  int8_t* o = output(at::kChar).data_ptr<int8_t>();
  auto pass = [&] {
    at::parallel_for(0, w.size(0), 1, [&](int64_t b, int64_t e) {
      stream_fp32_to_int8(in + b * kCols, o + b * kCols, (e - b) * kCols);
    });
    benchmark::ClobberMemory();
  };
  pass();  // untimed: maps the pages back in
  for (auto _ : state) pass();
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.nbytes()));
}

// The bound for observation: read fp32, nothing written (an integer OR of the bits,
// so nothing else limits it).
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), optimize("O3"))) uint32_t stream_read(
    const uint32_t* in, int64_t n) {
  uint32_t acc = 0;
  for (int64_t i = 0; i < n; ++i) acc |= in[i];
  return acc;
}

void BM_StreamReadFp32(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  const at::Tensor& w = weights(at::kFloat);
  const auto* in = static_cast<const uint32_t*>(w.data_ptr());
  auto pass = [&] {
    at::parallel_for(0, w.size(0), 1, [&](int64_t b, int64_t e) {
      benchmark::DoNotOptimize(stream_read(in + b * kCols, (e - b) * kCols));
    });
  };
  pass();  // untimed: maps the pages back in
  for (auto _ : state) pass();
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.nbytes()));
}

}  // namespace

#define MQ_BENCH(fn) BENCHMARK(fn)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()
MQ_BENCH(BM_StreamFp32ToInt8);
MQ_BENCH(BM_StreamReadFp32);
MQ_BENCH(BM_QuantizeInt8PerChannelFp32);
MQ_BENCH(BM_QuantizeInt8PerChannelFp32FreshOutput);
MQ_BENCH(BM_QuantizeInt4Group128Fp32);
MQ_BENCH(BM_QuantizeInt8PerChannelBf16);
MQ_BENCH(BM_QuantizeInt8PerChannelFp16);
MQ_BENCH(BM_MinMaxPerChannelFp32);
MQ_BENCH(BM_MinMaxPerTensorFp32);
MQ_BENCH(BM_HistogramObserver);

BENCHMARK_MAIN();
