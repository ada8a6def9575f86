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

// Bytes `path` takes on disk: a file's size, or the sum of the files under a directory
// (an HF model directory, sharded or not); 0 when it cannot be read.
MQ_API int64_t path_bytes(const std::filesystem::path& path);

// Where some of a model's tensors lie, for a format that maps its files (Model::files):
// a caller reading tensors one after another reads them through it, and lets them go.
class MQ_API TensorSource {
 public:
  virtual ~TensorSource();
  // Drops `tensor`'s pages from the process (it stays valid, and faults back in from the
  // page cache if read again); false when `tensor` does not lie in this source.
  virtual bool release(const at::Tensor& tensor) const = 0;
  // Copies `tensor` into `into` (contiguous, of its size) by reading the file rather than
  // touching the mapping; false when `tensor` does not lie in this source. InputError
  // where the read fails or the file shrank.
  virtual bool read_into(const at::Tensor& tensor, const at::Tensor& into) const = 0;
};

// A file mapped read-only, for a format whose tensors lie in it where it stored them
// (tensors over data(), kept alive by a reference to this). Release drops a tensor's
// whole pages (those at either end may hold a neighbour's bytes and stay).
class MQ_API MappedFile final : public TensorSource {
 public:
  // Throws InputError "PATH: cannot open (...)", "PATH: not a regular file" or "PATH:
  // cannot map (...)". An empty file maps nothing: data() is null.
  static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path);
  ~MappedFile() override;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool release(const at::Tensor& tensor) const override;
  bool read_into(const at::Tensor& tensor, const at::Tensor& into) const override;

 private:
  MappedFile() = default;
  std::filesystem::path path_;
  int fd_ = -1;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// `dir / shard`, a shard an index file lists, when it stays inside `dir` (no absolute
// path, no "..", no symlink out of it); throws InputError naming `index` otherwise, or
// when it cannot be opened.
MQ_API std::filesystem::path confined_shard(const std::filesystem::path& dir, const std::string& shard,
                                            const std::string& index);

}  // namespace mq
