#pragma once
// Model paths on disk.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "mq/export.hpp"

namespace mq {

// Bytes `path` takes on disk: a file's size, or the sum of the files under a directory
// (an HF model directory, sharded or not); 0 when it cannot be read.
MQ_API int64_t path_bytes(const std::filesystem::path& path);

// Drops the whole pages of [data, data + bytes), which lie in a read-only file mapping,
// from the process: they fault back in from the page cache if read again. The pages at
// either end may hold a neighbour's bytes in use and stay. For a format's Model::release.
MQ_API void release_mapped(const void* data, size_t bytes);

// `dir / shard`, a shard an index file lists, when it stays inside `dir` (no absolute
// path, no "..", no symlink out of it); throws InputError naming `index` otherwise, or
// when it cannot be opened.
MQ_API std::filesystem::path confined_shard(const std::filesystem::path& dir, const std::string& shard,
                                            const std::string& index);

}  // namespace mq
