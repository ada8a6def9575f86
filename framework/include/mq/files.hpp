#pragma once
// Model paths on disk.

#include <cstdint>
#include <filesystem>

#include "mq/export.hpp"

namespace mq {

// Bytes `path` takes on disk: a file's size, or the sum of the files under a directory
// (an HF model directory, sharded or not); 0 when it cannot be read.
MQ_API int64_t path_bytes(const std::filesystem::path& path);

}  // namespace mq
