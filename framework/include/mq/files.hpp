#pragma once
// Model paths on disk.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "mq/export.hpp"

namespace at {
class Tensor;
}

namespace mq {

struct Model;

// Bytes `path` takes on disk: a file's size, or the sum of the files under a directory
// (an HF model directory, sharded or not); 0 when it cannot be read.
MQ_API int64_t path_bytes(const std::filesystem::path& path);

// A file mapped read-only, for a format whose tensors lie in it where it stored them
// (tensors over data(), kept alive by a reference to this).
class MQ_API MappedFile {
 public:
  // Throws InputError "PATH: cannot open (...)", "PATH: not a regular file" or "PATH:
  // cannot map (...)". An empty file maps nothing: data() is null.
  static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  friend MQ_API void add_mapped_file(Model& model, std::shared_ptr<const MappedFile> file);
  MappedFile() = default;
  bool release(const at::Tensor& tensor) const;
  bool read_into(const at::Tensor& tensor, const at::Tensor& into) const;
  std::filesystem::path path_;
  int fd_ = -1;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Extends `model`'s Model::release and Model::read_into to the tensors lying in `file`:
// release drops their whole pages from the process (they fault back in from the page
// cache if read again; the pages at either end may hold a neighbour's bytes and stay),
// read_into reads them from the file (InputError where it fails or the file shrank).
MQ_API void add_mapped_file(Model& model, std::shared_ptr<const MappedFile> file);

// `dir / shard`, a shard an index file lists, when it stays inside `dir` (no absolute
// path, no "..", no symlink out of it); throws InputError naming `index` otherwise, or
// when it cannot be opened.
MQ_API std::filesystem::path confined_shard(const std::filesystem::path& dir, const std::string& shard,
                                            const std::string& index);

}  // namespace mq
