#include "mq/quant_spec.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <stdexcept>
#include <utility>

namespace mq {
namespace {

template <class E, std::size_t N>
std::optional<E> lookup(const std::array<std::pair<std::string_view, E>, N>& table,
                        std::string_view text) {
  for (const auto& [name, value] : table)
    if (name == text) return value;
  return std::nullopt;
}

template <class E, std::size_t N>
std::string_view name_of(const std::array<std::pair<std::string_view, E>, N>& table, E value) {
  for (const auto& [name, v] : table)
    if (v == value) return name;
  return "?";
}

constexpr std::array<std::pair<std::string_view, Granularity>, 3> kGranularities{{
    {"per_tensor", Granularity::kPerTensor},
    {"per_channel", Granularity::kPerChannel},
    {"per_group", Granularity::kPerGroup},
}};
constexpr std::array<std::pair<std::string_view, Scheme>, 2> kSchemes{{
    {"symmetric", Scheme::kSymmetric},
    {"asymmetric", Scheme::kAsymmetric},
}};

}  // namespace

std::string_view to_string(DType dtype) { return traits(dtype).name; }
std::string_view to_string(Granularity granularity) { return name_of(kGranularities, granularity); }
std::string_view to_string(Scheme scheme) { return name_of(kSchemes, scheme); }
std::optional<DType> parse_dtype(std::string_view text) {
  for (const DTypeTraits& t : kDTypeTraits)
    if (t.name == text) return t.dtype;
  return std::nullopt;
}
std::optional<Granularity> parse_granularity(std::string_view text) {
  return lookup(kGranularities, text);
}
std::optional<Scheme> parse_scheme(std::string_view text) { return lookup(kSchemes, text); }

c10::ScalarType QuantSpec::stored_type() const { return traits(dtype).stored; }
bool QuantSpec::is_integer() const { return traits(dtype).integer; }
int QuantSpec::bits() const { return traits(dtype).bits; }

// reduce_range: one bit less of range.
int64_t QuantSpec::qmin() const { return reduce_range ? traits(dtype).qmin() / 2 : traits(dtype).qmin(); }
int64_t QuantSpec::qmax() const {
  const DTypeTraits& t = traits(dtype);
  return reduce_range && t.integer ? (t.qmax() + 1) / 2 - 1 : t.qmax();
}

std::string QuantSpec::to_string() const {
  std::string s(mq::to_string(dtype));
  if (!is_integer()) return s;
  s += ' ';
  s += mq::to_string(granularity);
  if (granularity == Granularity::kPerChannel) s += "(axis=" + std::to_string(axis) + ")";
  if (granularity == Granularity::kPerGroup) s += "(" + std::to_string(group_size) + ")";
  s += ' ';
  s += mq::to_string(scheme);
  if (reduce_range) s += " reduce_range";
  return s;
}

std::string QuantSpec::to_json() const {
  return nlohmann::ordered_json{{"dtype", std::string(mq::to_string(dtype))},
                                {"granularity", std::string(mq::to_string(granularity))},
                                {"axis", axis},
                                {"group_size", group_size},
                                {"scheme", std::string(mq::to_string(scheme))},
                                {"reduce_range", reduce_range}}
      .dump();
}

QuantSpec QuantSpec::from_json(const std::string& text) {
  try {
    const auto j = nlohmann::json::parse(text);
    QuantSpec s;
    const auto dtype = parse_dtype(j.at("dtype").get<std::string>());
    const auto granularity = parse_granularity(j.at("granularity").get<std::string>());
    const auto scheme = parse_scheme(j.at("scheme").get<std::string>());
    if (!dtype || !granularity || !scheme) throw std::invalid_argument("unknown dtype, granularity or scheme");
    s.dtype = *dtype;
    s.granularity = *granularity;
    s.scheme = *scheme;
    s.axis = j.at("axis").get<int>();
    s.group_size = j.at("group_size").get<int64_t>();
    s.reduce_range = j.at("reduce_range").get<bool>();
    if (s.group_size <= 0) throw std::invalid_argument("group_size must be positive");
    return s;
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(e.what());
  }
}

}  // namespace mq
