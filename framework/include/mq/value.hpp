#pragma once
// A small tree of recipe values (null, bool, int, float, string, list, map) with the
// place it came from. Recipe options cross the plugin boundary as this type, so that
// plugins are not bound to yaml-cpp's ABI.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mq/export.hpp"

namespace mq {

// Where a value came from: "recipe.yaml:12:5", or "--set" for command-line overrides.
struct SourceLocation {
  std::string file;
  int line = 0;    // 1-based; 0 when unknown
  int column = 0;  // 1-based
  std::string to_string() const;  // "file:line:col", or file, or "" when unknown
};

struct MapEntry;

class MQ_API Value {
 public:
  enum class Kind { kNull, kBool, kInt, kFloat, kString, kList, kMap };

  Value() = default;
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value floating(double d);
  static Value string(std::string s);
  static Value list(std::vector<Value> items = {});
  static Value map(std::vector<MapEntry> entries = {});

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::kNull; }
  bool as_bool() const;
  int64_t as_int() const;
  double as_float() const;  // ints convert
  const std::string& as_string() const;
  const std::vector<Value>& as_list() const;
  const std::vector<MapEntry>& as_map() const;
  std::vector<MapEntry>& as_map();

  // Map lookup; nullptr when absent or not a map.
  const Value* find(std::string_view key) const;
  // Sets a map entry, replacing an existing one.
  void set(std::string key, Value value);

  // Compact JSON with keys in their order; the canonical form used for hashing.
  std::string to_json() const;

  SourceLocation location;

 private:
  Kind kind_ = Kind::kNull;
  bool bool_ = false;
  int64_t int_ = 0;
  double float_ = 0.0;
  std::string string_;
  std::vector<Value> list_;
  std::vector<MapEntry> map_;
};

struct MapEntry {
  std::string key;
  Value value;
  SourceLocation key_location;
};

MQ_API const char* to_string(Value::Kind kind);

}  // namespace mq
