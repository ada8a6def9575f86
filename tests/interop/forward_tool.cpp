// For check_qwen3.py: the float32 output of a model mq runs (an HF directory on its
// architecture plugin) for one sequence of token ids, written as raw float32 rows, so that
// another implementation (llama.cpp) can be compared with mq's runtime.
//   forward_tool MODEL_DIR OUT.f32 ID [ID ...]
#include <ATen/ATen.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "mq/error.hpp"
#include "mq/quantize.hpp"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s MODEL_DIR OUT.f32 ID [ID ...]\n", argv[0]);
    return 2;
  }
  try {
    const mq::Model model = mq::load_model(argv[1]);
    if (!model.runnable) throw mq::InputError(std::string(argv[1]) + ": no architecture plugin runs it");
    std::vector<int64_t> ids;
    for (int i = 3; i < argc; ++i) ids.push_back(std::stoll(argv[i]));
    const at::Tensor out = model.runnable->forward(at::tensor(ids, at::kLong).unsqueeze(0)).contiguous();
    std::ofstream file(argv[2], std::ios::binary);
    file.write(static_cast<const char*>(out.data_ptr()), static_cast<std::streamsize>(out.nbytes()));
    std::printf("%lld %lld\n", static_cast<long long>(out.size(-2)), static_cast<long long>(out.size(-1)));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "forward_tool: %s\n", e.what());
    return 1;
  }
  return 0;
}
