#include "mq/hf_checkpoint.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>

#include "mq/files.hpp"

namespace fs = std::filesystem;
// Keys sorted (an ordered_json object finds a key by a linear search, quadratic over a
// model's 100,000 tensors); their order is taken while checking.
using Json = nlohmann::json;

namespace mq {
namespace {

[[noreturn]] void bad(const std::string& file, const std::string& problem) { throw InputError(file + ": " + problem); }

// check_json's pass (nlohmann's callback parser scans the enclosing object at the end of
// each nested one: quadratic over a header's 100,000 tensors).
class KeyCheck final : public nlohmann::json_sax<Json> {
 public:
  KeyCheck(std::string file, std::string problem, size_t max_depth, std::string inner_name)
      : file_(std::move(file)), problem_(std::move(problem)), max_depth_(max_depth), inner_name_(std::move(inner_name)) {}

  JsonKeys keys;
  std::optional<std::string> error;  // the syntax error that ended the parse

  bool start_object(std::size_t) override { return open(); }
  bool start_array(std::size_t) override { return open(); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool key(string_t& key) override {
    if (!open_.back().insert(key).second) bad(file_, problem_ + ": duplicate key '" + key + "'");
    if (open_.size() == 1) {
      keys.top.push_back(key);
      in_inner_ = key == inner_name_;
    } else if (open_.size() == 2 && in_inner_) {
      keys.inner.push_back(key);
    }
    return true;
  }
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    error = e.what();
    return false;
  }

 private:
  bool open() {
    if (open_.size() > max_depth_) bad(file_, problem_ + ": nested deeper than its schema");
    open_.emplace_back();
    return true;
  }
  bool close() {
    open_.pop_back();
    return true;
  }

  std::string file_, problem_;
  size_t max_depth_;
  std::string inner_name_;
  bool in_inner_ = false;
  std::vector<std::set<std::string>> open_;  // keys per open container (an array's stays empty)
};

constexpr uintmax_t kMaxIndexBytes = 100'000'000;

}  // namespace

JsonKeys check_json(const std::string& file, const std::string& what, std::string_view text, size_t max_depth,
                    const std::string& inner) {
  KeyCheck check(file, what, max_depth, inner);
  try {
    Json::sax_parse(text.begin(), text.end(), &check);
  } catch (const Json::exception& e) {
    bad(file, what + ": not valid UTF-8 JSON (" + e.what() + ")");
  }
  if (check.error) bad(file, what + ": not valid UTF-8 JSON (" + *check.error + ")");
  return std::move(check.keys);
}

namespace hf {

std::string quantized_config(const fs::path& dir) {
  const fs::path file = dir / "config.json";
  std::error_code ec;
  if (!fs::exists(file, ec)) return "";
  std::ifstream in(file);
  const Json config = Json::parse(in, nullptr, false);
  if (!config.is_object()) bad(file.string(), "not a JSON object");
  const auto q = config.find("quantization_config");
  if (q == config.end() || !q->is_object()) return "";
  const auto method = q->find("quant_method");
  return "config.json has a quantization_config" +
         (method != q->end() && method->is_string() ? ", quant_method '" + method->get<std::string>() + "'"
                                                     : std::string());
}

std::vector<std::pair<std::string, std::string>> parse_index(const std::string& name, std::string_view text) {
  const JsonKeys keys = check_json(name, "invalid index", text, 3, "weight_map");
  const Json index = Json::parse(text.begin(), text.end());
  const auto map = index.is_object() ? index.find("weight_map") : index.end();
  if (map == index.end() || !map->is_object() || map->empty())
    bad(name, "invalid index: no weight_map object listing tensors");
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& tensor : keys.inner) {
    const Json& shard = map->at(tensor);
    if (!shard.is_string()) bad(name, "invalid index: the shard of '" + tensor + "' is not a string");
    out.emplace_back(tensor, shard.get<std::string>());
  }
  return out;
}

std::vector<Shard> read_index(const fs::path& index) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(index, ec);
  if (ec || size > kMaxIndexBytes) bad(index.string(), "unreadable or too large for an index of shards");
  std::ifstream in(index, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<Shard> shards;
  std::map<std::string, size_t> by_name;
  for (auto& [tensor, shard] : parse_index(index.string(), text)) {
    auto [it, added] = by_name.emplace(shard, shards.size());
    if (added) shards.push_back({confined_shard(index.parent_path(), shard, index.string()), {}});
    shards[it->second].tensors.push_back(std::move(tensor));
  }
  std::sort(shards.begin(), shards.end(), [](const Shard& a, const Shard& b) { return a.path < b.path; });
  return shards;
}

InputError not_in_shard(const fs::path& index, const std::string& tensor, const fs::path& shard) {
  return InputError(index.string() + ": lists '" + tensor + "' in shard '" + shard.filename().string() +
                    "', which does not hold it");
}

}  // namespace hf
}  // namespace mq
