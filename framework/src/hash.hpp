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
// A file's XXH3-128 (mq's identity of inputs and outputs: fast) and SHA-256 (for
// signers: OpenSSF model signing manifests use it), in one read. For a directory: XXH3
// of its files' names and hashes, and SHA-256 of its `sha256sum` manifest, the lines
// "HEX  relative/path\n" sorted by path in byte order, which
//   (cd DIR && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum) | sha256sum
// recomputes. Throws InputError when a file cannot be read; both empty as soon as
// `cancel` (when given) is set.
struct Digests {
  std::string xxh3, sha256;
};
Digests digest_path(const std::filesystem::path& path, const std::atomic<bool>* cancel = nullptr);
inline std::string hash_path(const std::filesystem::path& path, const std::atomic<bool>* cancel = nullptr) {
  return digest_path(path, cancel).xxh3;
}

}  // namespace mq::detail
