#include "mq/options.hpp"

#include "mq/error.hpp"

namespace mq {

const char* to_string(OptionType type) {
  switch (type) {
    case OptionType::kBool: return "bool";
    case OptionType::kInt: return "int";
    case OptionType::kFloat: return "float";
    case OptionType::kString: return "string";
    case OptionType::kStringList: return "list of strings";
    case OptionType::kMap: return "map";
    case OptionType::kIntList: return "list of integers";
  }
  return "?";
}

const Value& Options::get(const std::string& name) const {
  const Value* v = values_.find(name);
  if (!v) throw PluginError("internal: option '" + name + "' was not declared by the plugin");
  return *v;
}

bool Options::has(const std::string& name) const {
  const Value* v = values_.find(name);
  return v && !v->is_null();
}

bool Options::get_bool(const std::string& name) const { return get(name).as_bool(); }
int64_t Options::get_int(const std::string& name) const { return get(name).as_int(); }
double Options::get_float(const std::string& name) const { return get(name).as_float(); }
const std::string& Options::get_string(const std::string& name) const {
  return get(name).as_string();
}

std::vector<std::string> Options::get_string_list(const std::string& name) const {
  std::vector<std::string> out;
  for (const Value& v : get(name).as_list()) out.push_back(v.as_string());
  return out;
}

std::vector<int64_t> Options::get_int_list(const std::string& name) const {
  std::vector<int64_t> out;
  for (const Value& v : get(name).as_list()) out.push_back(v.as_int());
  return out;
}

std::string Options::where(const std::string& name) const {
  const Value* v = values_.find(name);
  return v ? v->location.to_string() : std::string();
}

}  // namespace mq
