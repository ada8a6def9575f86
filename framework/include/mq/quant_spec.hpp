#pragma once
// What a tensor is quantized to: target dtype, granularity and scheme.

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mq/export.hpp"

namespace mq {

enum class DType { kInt8, kUInt8, kInt4, kUInt4, kFloat16, kBFloat16 };
enum class Granularity { kPerTensor, kPerChannel, kPerGroup };
enum class Scheme { kSymmetric, kAsymmetric };

struct MQ_API QuantSpec {
  DType dtype = DType::kInt8;
  Granularity granularity = Granularity::kPerChannel;
  int axis = 0;              // channel axis, for kPerChannel
  int64_t group_size = 128;  // for kPerGroup, along the last (input) dimension
  Scheme scheme = Scheme::kSymmetric;
  bool reduce_range = false;  // PyTorch's reduce_range: one bit less of range

  bool is_integer() const;
  int bits() const;
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
