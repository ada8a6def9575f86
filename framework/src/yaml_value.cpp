#include "yaml_value.hpp"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <regex>
#include <unordered_set>

#include "mq/error.hpp"

namespace mq::detail {
namespace {

struct Converter {
  std::string file;
  int nodes = 0;

  SourceLocation where(const YAML::Mark& mark) const {
    if (mark.is_null()) return {file, 0, 0};
    return {file, mark.line + 1, mark.column + 1};
  }

  [[noreturn]] void fail(const YAML::Mark& mark, const std::string& message) const {
    const std::string at = where(mark).to_string();
    throw RecipeError(at.empty() ? message : at + ": " + message);
  }

  Value scalar(const YAML::Node& node) const {
    const std::string& text = node.Scalar();
    if (node.Tag() == "!") return Value::string(text);  // quoted
    static const std::regex kInt(R"([-+]?[0-9]+)");
    static const std::regex kFloat(R"([-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?)");
    if (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL")
      return Value();
    if (text == "true" || text == "True" || text == "TRUE") return Value::boolean(true);
    if (text == "false" || text == "False" || text == "FALSE") return Value::boolean(false);
    if (std::regex_match(text, kInt)) {
      errno = 0;
      const long long v = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE) fail(node.Mark(), "integer '" + text + "' is out of range");
      return Value::integer(v);
    }
    if (std::regex_match(text, kFloat)) return Value::floating(std::strtod(text.c_str(), nullptr));
    if (text == ".inf" || text == "+.inf") return Value::floating(HUGE_VAL);
    if (text == "-.inf") return Value::floating(-HUGE_VAL);
    if (text == ".nan") return Value::floating(std::numeric_limits<double>::quiet_NaN());
    return Value::string(text);
  }

  Value convert(const YAML::Node& node, int depth) {
    if (++nodes > kMaxYamlNodes)
      fail(node.Mark(), "recipe has more than " + std::to_string(kMaxYamlNodes) + " nodes");
    if (depth > kMaxYamlDepth)
      fail(node.Mark(), "recipe nests deeper than " + std::to_string(kMaxYamlDepth) + " levels");
    Value out;
    switch (node.Type()) {
      case YAML::NodeType::Undefined:
      case YAML::NodeType::Null:
        break;
      case YAML::NodeType::Scalar:
        out = scalar(node);
        break;
      case YAML::NodeType::Sequence: {
        std::vector<Value> items;
        for (const YAML::Node& item : node) items.push_back(convert(item, depth + 1));
        out = Value::list(std::move(items));
        break;
      }
      case YAML::NodeType::Map: {
        std::vector<MapEntry> entries;
        std::unordered_set<std::string> seen;
        for (const auto& kv : node) {
          if (!kv.first.IsScalar()) fail(kv.first.Mark(), "map keys must be plain strings");
          const std::string key = kv.first.Scalar();
          if (!seen.insert(key).second) fail(kv.first.Mark(), "duplicate key '" + key + "'");
          entries.push_back({key, convert(kv.second, depth + 1), where(kv.first.Mark())});
          if (entries.back().value.location.line == 0)
            entries.back().value.location = entries.back().key_location;
        }
        out = Value::map(std::move(entries));
        break;
      }
    }
    out.location = where(node.Mark());
    return out;
  }
};

}  // namespace

Value parse_yaml(const std::string& text, const std::string& file) {
  Converter converter{file};
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    converter.fail(e.mark, e.msg);
  }
  return converter.convert(root, 0);
}

}  // namespace mq::detail
