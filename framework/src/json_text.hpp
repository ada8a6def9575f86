#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace mq::detail {

// JSON text of `j` (compact, or indented by `indent`). Strings need not be UTF-8 (Linux
// paths are bytes): invalid bytes become U+FFFD instead of an exception.
template <class Json>
std::string json_text(const Json& j, int indent = -1) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace mq::detail
