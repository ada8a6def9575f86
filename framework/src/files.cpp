#include "mq/files.hpp"

#include <ATen/core/Tensor.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "mq/error.hpp"
#include "mq/model.hpp"

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

std::shared_ptr<const MappedFile> MappedFile::open(const std::filesystem::path& path) {
  const auto fail = [&](const std::string& problem) { throw InputError(path.string() + ": " + problem); };
  std::shared_ptr<MappedFile> file(new MappedFile);
  file->path_ = path;
  file->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (file->fd_ < 0) fail(std::string("cannot open (") + std::strerror(errno) + ")");
  struct stat st {};
  if (fstat(file->fd_, &st) != 0 || !S_ISREG(st.st_mode)) fail("not a regular file");
  if (st.st_size == 0) return file;
  void* map = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, file->fd_, 0);
  if (map == MAP_FAILED) fail(std::string("cannot map (") + std::strerror(errno) + ")");
  file->data_ = static_cast<const uint8_t*>(map);
  file->size_ = static_cast<size_t>(st.st_size);
  return file;
}

TensorSource::~TensorSource() = default;

MappedFile::~MappedFile() {
  if (data_) munmap(const_cast<uint8_t*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

namespace {

// Where `tensor`'s bytes lie in [data, data + size): their offset.
std::optional<size_t> offset_in(const at::Tensor& tensor, const uint8_t* data, size_t size) {
  const auto* begin = static_cast<const uint8_t*>(tensor.defined() ? tensor.data_ptr() : nullptr);
  if (!begin || !data || begin < data || tensor.nbytes() > size || begin - data > static_cast<ptrdiff_t>(size - tensor.nbytes()))
    return std::nullopt;
  return static_cast<size_t>(begin - data);
}

}  // namespace

bool MappedFile::release(const at::Tensor& tensor) const {
  const std::optional<size_t> at = offset_in(tensor, data_, size_);
  if (!at) return false;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data_ + *at);
  const uintptr_t first = (begin + page - 1) / page * page, last = (begin + tensor.nbytes()) / page * page;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  return true;
}

bool MappedFile::read_into(const at::Tensor& tensor, const at::Tensor& into) const {
  const std::optional<size_t> at = offset_in(tensor, data_, size_);
  if (!at) return false;
  auto* to = static_cast<uint8_t*>(into.data_ptr());
  const size_t bytes = tensor.nbytes();
  for (size_t done = 0; done < bytes;) {
    const ssize_t n = ::pread(fd_, to + done, bytes - done, static_cast<off_t>(*at + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      throw InputError(path_.string() + ": cannot read (" + (n < 0 ? std::strerror(errno) : "the file shrank") + ")");
    done += static_cast<size_t>(n);
  }
  return true;
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
