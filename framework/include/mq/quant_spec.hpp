#pragma once
// What a tensor is quantized to: target dtype, granularity and scheme.

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mq/export.hpp"

namespace mq {

enum class DType {
  kInt8, kUInt8, kInt4, kUInt4, kFloat16, kBFloat16,
  // llama.cpp's block types (ggml's Q8_0, ...): rows cut in blocks of `block` values, each
  // stored with its own fp16 scale (and minimum), as GGUF files hold them (mq/blocks.hpp).
  kQ8_0, kQ4_0, kQ4_1, kQ5_0, kQ5_1,
  kQ4_K, kQ5_K, kQ6_K,  // k-quants: super-blocks of 256
};
enum class Granularity { kPerTensor, kPerChannel, kPerGroup };
enum class Scheme { kSymmetric, kAsymmetric };

// What mq knows about each target dtype, in one table every question about bits,
// ranges, packing and names reads (checked at compile time below).
struct DTypeTraits {
  DType dtype;
  std::string_view name;  // as recipes spell it
  int bits;
  bool integer;
  bool is_signed;
  // Integers: the zero point of a symmetric scheme (PyTorch's: 128 for quint8, 0 for
  // signed), and how many values one int32 word packs (1: stored a byte each).
  int32_t symmetric_zero_point;
  int per_word;
  // Casts: explicit mantissa bits (one unit in the last place is 2^-mantissa of 1.0).
  int mantissa;
  c10::ScalarType stored;  // int8/uint8 for integers (4-bit ones unpacked alike), or the cast's
  // Block types: values per block and bytes per block (their data is the blocks' bytes,
  // uint8, a row after another); 0 for the others.
  int block = 0;
  int block_bytes = 0;

  constexpr int64_t qmin() const { return integer && is_signed ? -(int64_t{1} << (bits - 1)) : 0; }
  constexpr int64_t qmax() const { return integer ? (int64_t{1} << (bits - (is_signed ? 1 : 0))) - 1 : 0; }
};

inline constexpr DTypeTraits kDTypeTraits[] = {
    {DType::kInt8, "int8", 8, true, true, 0, 1, 0, c10::kChar},
    {DType::kUInt8, "uint8", 8, true, false, 128, 1, 0, c10::kByte},
    {DType::kInt4, "int4", 4, true, true, 0, 8, 0, c10::kChar},
    {DType::kUInt4, "uint4", 4, true, false, 8, 8, 0, c10::kByte},
    {DType::kFloat16, "fp16", 16, false, true, 0, 0, 10, c10::kHalf},
    {DType::kBFloat16, "bf16", 16, false, true, 0, 0, 7, c10::kBFloat16},
    {DType::kQ8_0, "q8_0", 8, false, true, 0, 1, 0, c10::kByte, 32, 34},
    {DType::kQ4_0, "q4_0", 4, false, true, 0, 1, 0, c10::kByte, 32, 18},
    {DType::kQ4_1, "q4_1", 4, false, false, 0, 1, 0, c10::kByte, 32, 20},
    {DType::kQ5_0, "q5_0", 5, false, true, 0, 1, 0, c10::kByte, 32, 22},
    {DType::kQ5_1, "q5_1", 5, false, false, 0, 1, 0, c10::kByte, 32, 24},
    {DType::kQ4_K, "q4_k", 4, false, false, 0, 1, 0, c10::kByte, 256, 144},
    {DType::kQ5_K, "q5_k", 5, false, false, 0, 1, 0, c10::kByte, 256, 176},
    {DType::kQ6_K, "q6_k", 6, false, true, 0, 1, 0, c10::kByte, 256, 210},
};

constexpr const DTypeTraits& traits(DType dtype) { return kDTypeTraits[static_cast<int>(dtype)]; }

constexpr bool dtype_table_is_consistent() {
  int i = 0;
  for (const DTypeTraits& t : kDTypeTraits) {
    if (static_cast<int>(t.dtype) != i++) return false;  // indexed by the enum
    if (t.integer && (32 % t.bits != 0 || t.per_word != (t.bits < 8 ? 32 / t.bits : 1))) return false;
    if (t.integer && t.symmetric_zero_point != (t.is_signed ? 0 : int32_t{1} << (t.bits - 1))) return false;
    if ((t.integer || t.block) != (t.stored == c10::kChar || t.stored == c10::kByte)) return false;
    if ((t.block > 0) != (t.block_bytes > 0) || (t.block && (t.integer || t.per_word != 1))) return false;
    if (t.integer && (t.stored == c10::kChar) != t.is_signed) return false;
  }
  return i == static_cast<int>(DType::kQ6_K) + 1;
}
static_assert(dtype_table_is_consistent(), "kDTypeTraits: one row per DType, in order, each consistent");
static_assert(traits(DType::kInt4).qmin() == -8 && traits(DType::kInt4).qmax() == 7);
static_assert(traits(DType::kUInt8).qmin() == 0 && traits(DType::kUInt8).qmax() == 255);

struct MQ_API QuantSpec {
  DType dtype = DType::kInt8;
  Granularity granularity = Granularity::kPerChannel;
  int axis = 0;              // channel axis, for kPerChannel
  int64_t group_size = 128;  // for kPerGroup, along the last (input) dimension
  Scheme scheme = Scheme::kSymmetric;
  bool reduce_range = false;  // PyTorch's reduce_range: one bit less of range

  bool is_integer() const;
  bool is_block() const { return traits(dtype).block > 0; }  // llama.cpp's block types
  int bits() const;
  bool packed() const { return traits(dtype).per_word > 1; }  // several values an int32 word (4-bit)
  // Integer range of the target, after reduce_range.
  int64_t qmin() const;
  int64_t qmax() const;
  // How the values are stored: int8 or uint8 (int4 and uint4 unpacked alike, and their
  // zero points), or the float16 / bfloat16 of a cast.
  c10::ScalarType stored_type() const;
  std::string to_string() const;  // e.g. "int8 per_channel(axis=0) symmetric"
  // Every field as a JSON object, for formats that record specs in their metadata.
  std::string to_json() const;
  // The inverse; throws std::invalid_argument on anything else.
  static QuantSpec from_json(const std::string& json);
};

MQ_API std::string_view to_string(DType dtype);
MQ_API std::string_view to_string(Granularity granularity);
MQ_API std::string_view to_string(Scheme scheme);
MQ_API std::optional<DType> parse_dtype(std::string_view text);
MQ_API std::optional<Granularity> parse_granularity(std::string_view text);
MQ_API std::optional<Scheme> parse_scheme(std::string_view text);

}  // namespace mq
