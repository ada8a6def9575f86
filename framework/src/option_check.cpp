#include "option_check.hpp"

#include <sstream>

#include "mq/error.hpp"
#include "suggest.hpp"
#include "yaml_value.hpp"

namespace mq::detail {
namespace {

std::vector<std::string> split_choices(const char* choices) {
  std::vector<std::string> out;
  std::stringstream ss(choices);
  for (std::string c; std::getline(ss, c, '|');) out.push_back(c);
  return out;
}

bool has_type(const Value& v, OptionType type) {
  switch (type) {
    case OptionType::kBool: return v.kind() == Value::Kind::kBool;
    case OptionType::kInt: return v.kind() == Value::Kind::kInt;
    case OptionType::kFloat: return v.kind() == Value::Kind::kFloat || v.kind() == Value::Kind::kInt;
    case OptionType::kString: return v.kind() == Value::Kind::kString;
    case OptionType::kMap: return v.kind() == Value::Kind::kMap;
    case OptionType::kStringList:
    case OptionType::kIntList: {
      if (v.kind() != Value::Kind::kList) return false;
      const auto want = type == OptionType::kStringList ? Value::Kind::kString : Value::Kind::kInt;
      for (const Value& item : v.as_list())
        if (item.kind() != want) return false;
      return true;
    }
  }
  return false;
}

}  // namespace

Options check_options(const PluginStep& step, const PluginDescriptor& d) {
  const std::string who =
      std::string(to_string(d.kind)) + " '" + d.name + "'";
  const auto fail = [&](const SourceLocation& at, const std::string& message) {
    const std::string where = at.to_string().empty() ? step.location.to_string() : at.to_string();
    throw RecipeError(where.empty() ? message : where + ": " + message);  // no place: options from code
  };
  std::vector<std::string> declared;
  for (size_t i = 0; i < d.option_count; ++i) declared.push_back(d.options[i].name);

  Value checked = Value::map();
  for (const MapEntry& e : step.options.as_map()) {
    const OptionDecl* decl = nullptr;
    for (size_t i = 0; i < d.option_count; ++i)
      if (e.key == d.options[i].name) decl = &d.options[i];
    if (!decl) {
      fail(e.key_location.line ? e.key_location : e.value.location,
           "unknown option '" + e.key + "' for " + who + did_you_mean(e.key, declared) +
               "; it takes " + quoted_list(declared));
    }
    if (!has_type(e.value, decl->type))
      fail(e.value.location, "option '" + e.key + "' of " + who + " must be " +
                                 to_string(decl->type) + ", got " + to_string(e.value.kind()));
    if (decl->choices && decl->type == OptionType::kString) {
      const auto choices = split_choices(decl->choices);
      if (std::find(choices.begin(), choices.end(), e.value.as_string()) == choices.end())
        fail(e.value.location, "option '" + e.key + "' of " + who + " must be one of " +
                                   quoted_list(choices) + ", got '" + e.value.as_string() + "'" +
                                   did_you_mean(e.value.as_string(), choices));
    }
    Value v = e.value;
    if (decl->type == OptionType::kFloat && v.kind() == Value::Kind::kInt)
      v = Value::floating(static_cast<double>(v.as_int()));
    v.location = e.value.location;
    checked.set(e.key, std::move(v));
  }
  for (size_t i = 0; i < d.option_count; ++i) {
    const OptionDecl& decl = d.options[i];
    if (checked.find(decl.name)) continue;
    if (!decl.default_value)
      fail(step.location, who + " needs option '" + std::string(decl.name) + "' (" + decl.help + ")");
    Value v = parse_yaml(decl.default_value, std::string("default of ") + decl.name);
    if (decl.type == OptionType::kFloat && v.kind() == Value::Kind::kInt)
      v = Value::floating(static_cast<double>(v.as_int()));
    if (!v.is_null() && !has_type(v, decl.type))
      throw PluginError(who + ": default of option '" + decl.name + "' is not a " +
                        to_string(decl.type));
    v.location = {};
    checked.set(decl.name, std::move(v));
  }
  return Options(std::move(checked));
}

}  // namespace mq::detail

namespace mq {

Options resolve_options(const PluginDescriptor& descriptor, const Value& given,
                        const SourceLocation& where) {
  return detail::check_options(PluginStep{descriptor.name, given, where}, descriptor);
}

}  // namespace mq
