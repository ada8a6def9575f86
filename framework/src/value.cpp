#include "mq/value.hpp"

#include <nlohmann/json.hpp>

#include "json_text.hpp"
#include "mq/error.hpp"

namespace mq {
namespace {

nlohmann::ordered_json to_json_value(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kNull: return nullptr;
    case Value::Kind::kBool: return v.as_bool();
    case Value::Kind::kInt: return v.as_int();
    case Value::Kind::kFloat: return v.as_float();
    case Value::Kind::kString: return v.as_string();
    case Value::Kind::kList: {
      auto j = nlohmann::ordered_json::array();
      for (const Value& item : v.as_list()) j.push_back(to_json_value(item));
      return j;
    }
    case Value::Kind::kMap: {
      auto j = nlohmann::ordered_json::object();
      for (const MapEntry& e : v.as_map()) j[e.key] = to_json_value(e.value);
      return j;
    }
  }
  return nullptr;
}

[[noreturn]] void wrong_kind(const Value& v, const char* wanted) {
  throw RecipeError(std::string("internal: value is ") + to_string(v.kind()) + ", not " + wanted);
}

}  // namespace

std::string SourceLocation::to_string() const {
  if (line == 0) return file;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

const char* to_string(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::kNull: return "null";
    case Value::Kind::kBool: return "a boolean";
    case Value::Kind::kInt: return "an integer";
    case Value::Kind::kFloat: return "a number";
    case Value::Kind::kString: return "a string";
    case Value::Kind::kList: return "a list";
    case Value::Kind::kMap: return "a map";
  }
  return "?";
}

Value Value::boolean(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.bool_ = b;
  return v;
}

Value Value::integer(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.int_ = i;
  return v;
}

Value Value::floating(double d) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.float_ = d;
  return v;
}

Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.string_ = std::move(s);
  return v;
}

Value Value::list(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::kList;
  v.list_ = std::move(items);
  return v;
}

Value Value::map(std::vector<MapEntry> entries) {
  Value v;
  v.kind_ = Kind::kMap;
  v.map_ = std::move(entries);
  return v;
}

bool Value::as_bool() const {
  if (kind_ != Kind::kBool) wrong_kind(*this, "a boolean");
  return bool_;
}

int64_t Value::as_int() const {
  if (kind_ != Kind::kInt) wrong_kind(*this, "an integer");
  return int_;
}

double Value::as_float() const {
  if (kind_ == Kind::kInt) return static_cast<double>(int_);
  if (kind_ != Kind::kFloat) wrong_kind(*this, "a number");
  return float_;
}

const std::string& Value::as_string() const {
  if (kind_ != Kind::kString) wrong_kind(*this, "a string");
  return string_;
}

const std::vector<Value>& Value::as_list() const {
  if (kind_ != Kind::kList) wrong_kind(*this, "a list");
  return list_;
}

const std::vector<MapEntry>& Value::as_map() const {
  if (kind_ != Kind::kMap) wrong_kind(*this, "a map");
  return map_;
}

std::vector<MapEntry>& Value::as_map() {
  if (kind_ != Kind::kMap) wrong_kind(*this, "a map");
  return map_;
}

const Value* Value::find(std::string_view key) const {
  if (kind_ != Kind::kMap) return nullptr;
  for (const MapEntry& e : map_)
    if (e.key == key) return &e.value;
  return nullptr;
}

void Value::set(std::string key, Value value) {
  for (MapEntry& e : as_map()) {
    if (e.key == key) {
      e.value = std::move(value);
      return;
    }
  }
  map_.push_back({std::move(key), std::move(value), {}});
}

std::string Value::to_json() const { return detail::json_text(to_json_value(*this)); }

}  // namespace mq
