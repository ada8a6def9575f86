// Tokenizer throughput: TOKENIZER (a tokenizer.json or its directory) over TEXT, each line
// on its own, one thread, best of REPEATS; prints {"bytes", "tokens", "seconds"} (JSON).
// bench/tokenize.sh runs it beside Hugging Face tokenizers.
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>

#include "mq/text.hpp"
#include "mq/tokenizer.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: mq_tokenize_bench TOKENIZER TEXT [REPEATS]\n");
    return 2;
  }
  const auto tokenizer = mq::Tokenizer::load(argv[1]);
  const std::string text = mq::read_text_file(argv[2]);
  const int repeats = argc > 3 ? std::stoi(argv[3]) : 3;
  double best = 1e300;
  size_t tokens = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    tokens = 0;
    for (size_t at = 0; at < text.size();) {
      const size_t end = std::min(text.find('\n', at), text.size());
      tokens += tokenizer->encode(std::string_view(text).substr(at, end - at), false).size();
      at = end + 1;
    }
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::printf("{\"bytes\": %zu, \"tokens\": %zu, \"seconds\": %.4f}\n", text.size(), tokens, best);
  return 0;
}
