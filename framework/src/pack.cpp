#include "mq/pack.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace mq {
namespace {

// Eight values a word, as eight bytes in a 64-bit integer (element 0 in the lowest byte:
// x86 and every other little-endian host), nibble by nibble in lanes of bytes.
typedef uint8_t Bytes8 __attribute__((vector_size(8)));

constexpr uint64_t kLowNibbles = 0x0F0F0F0F0F0F0F0FULL;

// The low nibbles of eight bytes gathered into 32 bits, element 0 lowest.
inline uint32_t gather_nibbles(uint64_t x) {
  x &= kLowNibbles;
  x = (x | (x >> 4)) & 0x00FF00FF00FF00FFULL;
  x = (x | (x >> 8)) & 0x0000FFFF0000FFFFULL;
  return static_cast<uint32_t>(x | (x >> 16));
}

// The inverse: 32 bits of nibbles spread over the low halves of eight bytes.
inline uint64_t spread_nibbles(uint32_t word) {
  uint64_t x = word;
  x = (x | (x << 16)) & 0x0000FFFF0000FFFFULL;
  x = (x | (x << 8)) & 0x00FF00FF00FF00FFULL;
  return (x | (x << 4)) & kLowNibbles;
}

// Rows of `n` items in parallel when there is enough work to share.
template <class F>
void for_rows(int64_t rows, int64_t n, F&& f) {
  at::parallel_for(0, rows, std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(n, 1)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t r = begin; r < end; ++r) f(r);
                   });
}

}  // namespace

at::Tensor pack_int4(const at::Tensor& values, int offset) {
  // As bytes: an integer's low nibble survives the wrap to uint8.
  const bool bytes = values.scalar_type() == at::kChar || values.scalar_type() == at::kByte;
  const at::Tensor v = (bytes ? values : values.to(at::kByte)).contiguous();
  const int64_t cols = v.dim() ? v.size(-1) : 1;
  const int64_t rows = cols ? v.numel() / cols : 0;
  const int64_t words = (cols + 7) / 8;
  at::Tensor packed = at::empty({rows, words}, at::kInt);
  const uint8_t* in = static_cast<const uint8_t*>(v.data_ptr());
  uint32_t* out = reinterpret_cast<uint32_t*>(packed.data_ptr<int32_t>());
  const uint8_t add = static_cast<uint8_t>(offset);
  for_rows(rows, cols, [&](int64_t r) {
    const uint8_t* row = in + r * cols;
    for (int64_t w = 0; w < words; ++w) {
      const int64_t n = std::min<int64_t>(8, cols - w * 8);
      Bytes8 b = {};
      std::memcpy(&b, row + w * 8, static_cast<size_t>(n));
      b += add;
      uint64_t x;
      std::memcpy(&x, &b, sizeof x);
      // A partial last word: its missing elements stay zero nibbles.
      out[r * words + w] = gather_nibbles(x) & static_cast<uint32_t>((uint64_t{1} << (4 * n)) - 1);
    }
  });
  return packed;
}

at::Tensor unpack_int4(const at::Tensor& packed, int64_t cols, int offset, at::ScalarType dtype) {
  const at::Tensor p = packed.to(at::kInt).contiguous();
  const int64_t words = p.dim() ? p.size(-1) : 1;
  if (cols < 0 || words < cols / 8 + (cols % 8 != 0))
    throw std::invalid_argument("unpack_int4: rows of " + std::to_string(words) + " words cannot hold " +
                                std::to_string(cols) + " values");
  const int64_t rows = p.numel() / std::max<int64_t>(words, 1);
  // nibble - offset is in [-15, 15]: a byte holds it.
  at::Tensor values = at::empty({rows, cols}, at::kChar);
  const uint32_t* in = reinterpret_cast<const uint32_t*>(p.data_ptr<int32_t>());
  uint8_t* out = reinterpret_cast<uint8_t*>(values.data_ptr<int8_t>());
  const uint8_t sub = static_cast<uint8_t>(offset);
  for_rows(rows, cols, [&](int64_t r) {
    for (int64_t w = 0; w < words && w * 8 < cols; ++w) {
      const uint64_t x = spread_nibbles(in[r * words + w]);
      Bytes8 b;
      std::memcpy(&b, &x, sizeof b);
      b -= sub;
      std::memcpy(out + r * cols + w * 8, &b, static_cast<size_t>(std::min<int64_t>(8, cols - w * 8)));
    }
  });
  return values.to(dtype);
}

bool packs_shape(const at::Tensor& packed, const std::vector<int64_t>& shape) {
  if (packed.scalar_type() != at::kInt || packed.dim() != 2 || shape.empty() || shape.back() <= 0) return false;
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i)
    if (shape[i] < 0 || __builtin_mul_overflow(rows, shape[i], &rows)) return false;
  return packed.size(0) == rows && packed.size(1) == shape.back() / 8 + (shape.back() % 8 != 0);
}

}  // namespace mq
