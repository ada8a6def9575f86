#include "mq/pack.hpp"

#include <ATen/ATen.h>

#include <algorithm>

namespace mq {

at::Tensor pack_int4(const at::Tensor& values, int offset) {
  const at::Tensor v = values.to(at::kInt).contiguous();
  const int64_t cols = v.dim() ? v.size(-1) : 1;
  const int64_t rows = cols ? v.numel() / cols : 0;
  const int64_t words = (cols + 7) / 8;
  at::Tensor packed = at::zeros({rows, words}, at::kInt);
  const int32_t* in = v.data_ptr<int32_t>();
  uint32_t* out = reinterpret_cast<uint32_t*>(packed.data_ptr<int32_t>());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[r * words + c / 8] |= (static_cast<uint32_t>(in[r * cols + c] + offset) & 0xFu) << (4 * (c % 8));
  return packed;
}

at::Tensor unpack_int4(const at::Tensor& packed, int64_t cols, int offset, at::ScalarType dtype) {
  const at::Tensor p = packed.to(at::kInt).contiguous();
  const int64_t words = p.size(-1);
  const int64_t rows = p.numel() / std::max<int64_t>(words, 1);
  at::Tensor values = at::empty({rows, cols}, at::kInt);
  const uint32_t* in = reinterpret_cast<const uint32_t*>(p.data_ptr<int32_t>());
  int32_t* out = values.data_ptr<int32_t>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[r * cols + c] = static_cast<int32_t>((in[r * words + c / 8] >> (4 * (c % 8))) & 0xFu) - offset;
  return values.to(dtype);
}

}  // namespace mq
