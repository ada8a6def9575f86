#include "mq/files.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

#include "mq/error.hpp"

namespace mq {

int64_t path_bytes(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) {
    const auto size = std::filesystem::file_size(path, ec);
    return ec ? 0 : static_cast<int64_t>(size);
  }
  int64_t total = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(path, ec))
    if (e.is_regular_file(ec)) total += static_cast<int64_t>(e.file_size(ec));
  return total;
}

void release_mapped(const void* data, size_t bytes) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t first = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const uintptr_t last = (reinterpret_cast<uintptr_t>(data) + bytes) / page * page;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

std::filesystem::path confined_shard(const std::filesystem::path& dir, const std::string& shard,
                                     const std::string& index) {
  namespace fs = std::filesystem;
  const auto bad = [&](const std::string& problem) { throw InputError(index + ": shard '" + shard + "' " + problem); };
  const fs::path relative(shard);
  bool escapes = shard.empty() || relative.is_absolute();
  for (const fs::path& part : relative) escapes = escapes || part == "..";
  if (!escapes) {
    std::error_code ec;
    const fs::path root = fs::canonical(dir, ec);
    const fs::path target = fs::canonical(dir / relative, ec);
    if (ec) bad("cannot be opened (" + ec.message() + ")");
    const auto mismatch = std::mismatch(root.begin(), root.end(), target.begin(), target.end());
    escapes = mismatch.first != root.end();
  }
  if (escapes) bad("is outside the model directory; refusing to read it");
  return dir / relative;
}

}  // namespace mq
