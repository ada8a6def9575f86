#pragma once
// Model paths on disk.

#include <cstdint>
#include <filesystem>
#include <string>

#include "mq/export.hpp"

namespace mq {

// Bytes `path` takes on disk: a file's size, or the sum of the files under a directory
// (an HF model directory, sharded or not); 0 when it cannot be read.
MQ_API int64_t path_bytes(const std::filesystem::path& path);

// `dir / shard`, a shard an index file lists, when it stays inside `dir` (no absolute
// path, no "..", no symlink out of it); throws InputError naming `index` otherwise, or
// when it cannot be opened.
MQ_API std::filesystem::path confined_shard(const std::filesystem::path& dir, const std::string& shard,
                                            const std::string& index);

}  // namespace mq
