#include "mq/blocks.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "mq/error.hpp"

namespace mq::blocks {
namespace {

constexpr int kBlock = 32;

void put_half(uint8_t* out, float v) {
  const uint16_t bits = c10::Half(v).x;
  std::memcpy(out, &bits, 2);
}

float get_half(const uint8_t* in) {
  uint16_t bits;
  std::memcpy(&bits, in, 2);
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}

// roundf (halves away from zero) for |v| < 2^31, inline: v - trunc(v) is exact in float.
inline int round_away(float v) {
  int i = static_cast<int>(v);
  const float rest = v - static_cast<float>(i);
  if (rest >= 0.5f) ++i;
  if (rest <= -0.5f) --i;
  return i;
}

// The value of largest magnitude, with its sign (the first, on ties).
float signed_max(const float* x) {
  float amax = 0, max = 0;
  for (int j = 0; j < kBlock; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  return max;
}

void min_max(const float* x, float* min, float* max) {
  *min = FLT_MAX;
  *max = -FLT_MAX;
  for (int j = 0; j < kBlock; ++j) {
    *min = std::min(*min, x[j]);
    *max = std::max(*max, x[j]);
  }
}

// Low nibbles of values 0..15, high nibbles of 16..31; the fifth bits, if any, into qh.
void pack(const uint8_t* q, uint8_t* qs, uint8_t* qh) {
  uint32_t high = 0;
  for (int j = 0; j < kBlock / 2; ++j) {
    qs[j] = static_cast<uint8_t>((q[j] & 0x0F) | ((q[j + kBlock / 2] & 0x0F) << 4));
    high |= static_cast<uint32_t>((q[j] & 0x10) >> 4) << j;
    high |= static_cast<uint32_t>((q[j + kBlock / 2] & 0x10) >> 4) << (j + kBlock / 2);
  }
  if (qh) std::memcpy(qh, &high, 4);
}

void unpack(const uint8_t* qs, const uint8_t* qh, int* q) {
  uint32_t high = 0;
  if (qh) std::memcpy(&high, qh, 4);
  for (int j = 0; j < kBlock / 2; ++j) {
    q[j] = (qs[j] & 0x0F) | static_cast<int>(((high >> j) << 4) & 0x10);
    q[j + kBlock / 2] = (qs[j] >> 4) | static_cast<int>(((high >> (j + kBlock / 2)) << 4) & 0x10);
  }
}

// One block of ggml-quants.c's quantize_row_*_ref (`Ref`: with libm's roundf, as it).
template <bool Ref>
void quantize_block(const float* x, DType dtype, uint8_t* out) {
  uint8_t q[kBlock];
  switch (dtype) {
    case DType::kQ8_0: {
      float amax = 0;
      for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
      const float d = amax / 127;
      const float id = d ? 1.0f / d : 0.0f;
      put_half(out, d);
      for (int j = 0; j < kBlock; ++j) out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(Ref ? std::roundf(x[j] * id) : round_away(x[j] * id)));
      return;
    }
    case DType::kQ4_0:
    case DType::kQ5_0: {
      const int levels = dtype == DType::kQ4_0 ? 16 : 32;
      const float d = signed_max(x) / static_cast<float>(-levels / 2);
      const float id = d ? 1.0f / d : 0.0f;
      for (int j = 0; j < kBlock; ++j)
        q[j] = static_cast<uint8_t>(std::min<int>(levels - 1, static_cast<int8_t>(x[j] * id + (levels / 2 + 0.5f))));
      put_half(out, d);
      if (dtype == DType::kQ4_0)
        pack(q, out + 2, nullptr);
      else
        pack(q, out + 6, out + 2);
      return;
    }
    case DType::kQ4_1:
    case DType::kQ5_1: {
      float min, max;
      min_max(x, &min, &max);
      const bool five = dtype == DType::kQ5_1;
      const float d = (max - min) / (five ? 31 : 15);
      const float id = d ? 1.0f / d : 0.0f;
      for (int j = 0; j < kBlock; ++j) {
        const float v = (x[j] - min) * id + 0.5f;
        q[j] = five ? static_cast<uint8_t>(v) : static_cast<uint8_t>(std::min<int>(15, static_cast<int8_t>(v)));
      }
      put_half(out, d);
      put_half(out + 2, min);
      if (five)
        pack(q, out + 8, out + 4);
      else
        pack(q, out + 4, nullptr);
      return;
    }
    default:
      throw std::invalid_argument("blocks: " + std::string(to_string(dtype)) + " is not a block type");
  }
}

void dequantize_block(const uint8_t* in, DType dtype, float* y) {
  int q[kBlock];
  const float d = get_half(in);
  switch (dtype) {
    case DType::kQ8_0:
      for (int j = 0; j < kBlock; ++j) y[j] = static_cast<float>(static_cast<int8_t>(in[2 + j])) * d;
      return;
    case DType::kQ4_0:
    case DType::kQ5_0: {
      const bool five = dtype == DType::kQ5_0;
      unpack(in + (five ? 6 : 2), five ? in + 2 : nullptr, q);
      for (int j = 0; j < kBlock; ++j) y[j] = static_cast<float>(q[j] - (five ? 16 : 8)) * d;
      return;
    }
    case DType::kQ4_1:
    case DType::kQ5_1: {
      const bool five = dtype == DType::kQ5_1;
      const float m = get_half(in + 2);
      unpack(in + (five ? 8 : 4), five ? in + 4 : nullptr, q);
      for (int j = 0; j < kBlock; ++j) y[j] = static_cast<float>(q[j]) * d + m;
      return;
    }
    default:
      throw std::invalid_argument("blocks: " + std::string(to_string(dtype)) + " is not a block type");
  }
}

const DTypeTraits& block_traits(DType dtype) {
  const DTypeTraits& t = traits(dtype);
  if (!t.block) throw std::invalid_argument("blocks: " + std::string(t.name) + " is not a block type");
  return t;
}

void checked_rows(const at::Tensor& x, DType dtype) {
  const DTypeTraits& t = block_traits(dtype);
  if (x.dim() != 2 || x.size(1) % t.block)
    throw InputError(std::string(t.name) + " needs rows of a multiple of " + std::to_string(t.block) +
                     " values, not shape " + c10::str(x.sizes()));
}

// Rows [begin, end) of `x`, widened to float32 a chunk at a time, into `out`.
void quantize_rows(const at::Tensor& x, DType dtype, uint8_t* out, int64_t begin, int64_t end) {
  const int64_t cols = x.size(1), bytes = row_bytes(dtype, cols);
  const int block_bytes = traits(dtype).block_bytes;
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 14) / cols);
  at::Tensor rows;
  for (int64_t first = begin; first < end; first += chunk) {
    const int64_t n = std::min(chunk, end - first);
    const at::Tensor part = x.narrow(0, first, n);
    rows = part.scalar_type() == at::kFloat && part.is_contiguous() ? part : part.to(at::kFloat).contiguous();
    const float* v = rows.data_ptr<float>();
    if (!std::all_of(v, v + n * cols, [](float f) { return std::isfinite(f); }))
      throw InputError("holds NaN or infinite values, which " + std::string(to_string(dtype)) + " cannot store");
    for (int64_t r = 0; r < n; ++r)
      for (int64_t b = 0; b < cols / kBlock; ++b)
        quantize_block<false>(v + r * cols + b * kBlock, dtype, out + (first + r) * bytes + b * block_bytes);
  }
}

}  // namespace

int64_t row_bytes(DType dtype, int64_t cols) {
  const DTypeTraits& t = block_traits(dtype);
  return cols / t.block * t.block_bytes;
}

at::Tensor quantize_ref(const at::Tensor& x, DType dtype) {
  checked_rows(x, dtype);
  const at::Tensor values = x.to(at::kFloat).contiguous();
  if (!at::isfinite(values).all().item<bool>())
    throw InputError("holds NaN or infinite values, which " + std::string(to_string(dtype)) + " cannot store");
  at::Tensor out = at::empty({x.size(0), row_bytes(dtype, x.size(1))}, at::kByte);
  const int64_t blocks = values.numel() / kBlock;
  for (int64_t b = 0; b < blocks; ++b)
    quantize_block<true>(values.data_ptr<float>() + b * kBlock, dtype, out.data_ptr<uint8_t>() + b * traits(dtype).block_bytes);
  return out;
}

at::Tensor quantize(const at::Tensor& x, DType dtype) {
  checked_rows(x, dtype);
  at::Tensor out = at::empty({x.size(0), row_bytes(dtype, x.size(1))}, at::kByte);
  uint8_t* bytes = out.data_ptr<uint8_t>();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, x.size(1)));
  at::parallel_for(0, x.size(0), grain,
                   [&](int64_t begin, int64_t end) { quantize_rows(x, dtype, bytes, begin, end); });
  return out;
}

void dequantize_row(const uint8_t* data, DType dtype, int64_t n, float* out) {
  const DTypeTraits& t = block_traits(dtype);
  for (int64_t b = 0; b < n / t.block; ++b) dequantize_block(data + b * t.block_bytes, dtype, out + b * t.block);
}

at::Tensor dequantize(const at::Tensor& data, DType dtype, int64_t cols) {
  const int64_t bytes = row_bytes(dtype, cols);
  const at::Tensor in = data.contiguous().view({-1, bytes});
  at::Tensor out = at::empty({in.size(0), cols}, at::kFloat);
  const uint8_t* src = in.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, in.size(0), 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) dequantize_row(src + r * bytes, dtype, cols, dst + r * cols);
  });
  return out;
}

}  // namespace mq::blocks
