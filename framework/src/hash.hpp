#pragma once

#include <atomic>
#include <filesystem>
#include <string>
#include <string_view>

namespace mq::detail {

// XXH3-128 as 32 hex digits.
std::string hash_bytes(std::string_view bytes);
// Streams the file; throws InputError when it cannot be read. Returns "" as soon as
// `cancel` (when given) is set.
std::string hash_file(const std::filesystem::path& file, const std::atomic<bool>* cancel = nullptr);
// A file's hash, or for a directory the hash of its files' names and hashes.
std::string hash_path(const std::filesystem::path& path, const std::atomic<bool>* cancel = nullptr);

}  // namespace mq::detail
