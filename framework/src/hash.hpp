#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace mq {
struct QuantizedEntry;
}

namespace mq::detail {

// XXH3-64 of what an entry holds, as it would read back: its name, float data (dtype,
// shape, bytes) or quantized spec, shape, integers and qparams (scales as float32, zero
// points as int64, whatever dtype and shape they are stored in).
uint64_t entry_digest(const QuantizedEntry& entry);

// XXH3-128 as 32 hex digits.
std::string hash_bytes(std::string_view bytes);
// Streams the file; throws InputError when it cannot be read. Returns "" as soon as
// `cancel` (when given) is set.
std::string hash_file(const std::filesystem::path& file, const std::atomic<bool>* cancel = nullptr);
// A file's hash, or for a directory the hash of its files' names and hashes.
std::string hash_path(const std::filesystem::path& path, const std::atomic<bool>* cancel = nullptr);

}  // namespace mq::detail
