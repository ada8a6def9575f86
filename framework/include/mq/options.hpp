#pragma once
// Plugin options: what a plugin declares, and the checked view it receives.

#include <cstdint>
#include <string>
#include <vector>

#include "mq/export.hpp"
#include "mq/value.hpp"

namespace mq {

enum class OptionType { kBool, kInt, kFloat, kString, kStringList, kMap, kIntList };

// One declared option. Plain data so that a descriptor can be a static table.
struct OptionDecl {
  const char* name;
  OptionType type;
  const char* default_value;  // YAML text ("0.5", "[a, b]"); nullptr: required
  const char* help;
  const char* choices = nullptr;  // for strings: "a|b|c"; nullptr: any
};

MQ_API const char* to_string(OptionType type);

// The options of one recipe step, checked against the plugin's declarations and
// completed with defaults before the plugin sees them, so getters only fail on a
// plugin bug (asking for an undeclared name or the wrong type).
class MQ_API Options {
 public:
  Options() : values_(Value::map()) {}
  explicit Options(Value values) : values_(std::move(values)) {}

  bool get_bool(const std::string& name) const;
  int64_t get_int(const std::string& name) const;
  double get_float(const std::string& name) const;
  const std::string& get_string(const std::string& name) const;
  std::vector<std::string> get_string_list(const std::string& name) const;
  std::vector<int64_t> get_int_list(const std::string& name) const;
  const Value& get(const std::string& name) const;
  bool has(const std::string& name) const;

  // Where an option was written, for plugin error messages ("" when defaulted).
  std::string where(const std::string& name) const;
  const Value& values() const { return values_; }

 private:
  Value values_;
};

}  // namespace mq
