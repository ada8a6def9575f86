// Forward throughput of a model mq runs (an HF directory on its architecture plugin):
// BATCH sequences of SEQ random token ids (seed 0), prefill in float32, THREADS intra-op
// threads, best of REPEATS after one warm-up; prints {"tokens", "seconds", "tokens_per_s"}
// (JSON). bench/forward.sh runs it beside transformers.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "mq/quantize.hpp"

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: mq_forward_bench MODEL_DIR BATCH SEQ THREADS [REPEATS]\n");
    return 2;
  }
  at::set_num_threads(std::stoi(argv[4]));
  const mq::Model model = mq::load_model(argv[1]);
  if (!model.runnable) {
    std::fprintf(stderr, "%s: no architecture plugin runs it\n", argv[1]);
    return 1;
  }
  const int64_t batch = std::stoll(argv[2]), seq = std::stoll(argv[3]);
  const int repeats = argc > 5 ? std::stoi(argv[5]) : 3;
  at::manual_seed(0);
  const at::Tensor* embedding = model.find("model.embed_tokens.weight");
  const int64_t vocab = embedding ? embedding->size(0) : 2;
  const at::Tensor ids = at::randint(vocab, {batch, seq}, at::kLong);
  model.runnable->forward(ids);  // warm-up: pages of the mapped weights, allocator
  double best = 1e300;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    model.runnable->forward(ids);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::printf("{\"tokens\": %lld, \"seconds\": %.4f, \"tokens_per_s\": %.1f}\n", static_cast<long long>(batch * seq),
              best, static_cast<double>(batch * seq) / best);
  return 0;
}
