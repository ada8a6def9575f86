#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mq::detail {

// " (did you mean 'x'?)" for the closest candidate within a small edit distance, or "".
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates);

// "'a', 'b', 'c'"
std::string quoted_list(const std::vector<std::string>& items);

}  // namespace mq::detail
