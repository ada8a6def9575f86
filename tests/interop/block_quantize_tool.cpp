// For check_blocks.py: mq's block kernels on raw float32 rows, so that ggml's own
// quantizer (ggml_quantize_chunk, from llama-cpp-python's libggml) can be run on the same
// input and the bytes compared.
//   block_quantize_tool TYPE ROWS COLS IN.f32 OUT.bin [IMPORTANCE.f32]
#include <ATen/ATen.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

#include "mq/blocks.hpp"

namespace {

at::Tensor read_floats(const char* path, std::vector<int64_t> shape) {
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  at::Tensor t = at::empty(shape, at::kFloat);
  if (bytes.size() != t.nbytes()) throw std::runtime_error(std::string(path) + ": wrong size");
  std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6 && argc != 7) {
    std::fprintf(stderr, "usage: %s TYPE ROWS COLS IN.f32 OUT.bin [IMPORTANCE.f32]\n", argv[0]);
    return 2;
  }
  const std::optional<mq::DType> dtype = mq::parse_dtype(argv[1]);
  const int64_t rows = std::stoll(argv[2]), cols = std::stoll(argv[3]);
  const at::Tensor x = read_floats(argv[4], {rows, cols});
  const at::Tensor importance = argc == 7 ? read_floats(argv[6], {cols}) : at::Tensor();
  const at::Tensor q = mq::blocks::quantize(x, *dtype, importance);
  std::ofstream(argv[5], std::ios::binary).write(static_cast<const char*>(q.data_ptr()), static_cast<std::streamsize>(q.nbytes()));
  return 0;
}
