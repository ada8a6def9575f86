#pragma once
// The safetensors container: strict header validation (the reference implementation's
// checks, plus duplicate keys) over a read-only mmap, and a deterministic writer.

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "mq/files.hpp"
#include "mq/model.hpp"

namespace mq::safetensors {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct TensorInfo {
  std::string name;
  std::string dtype;  // "F32", "I8", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the byte buffer
  uint64_t end = 0;
};

// A validated, memory-mapped safetensors file. Tensors it hands out share the mapping.
class File {
 public:
  // Throws InputError "<path>: <problem>" for every malformed or unsafe file.
  static std::shared_ptr<File> open(const std::filesystem::path& path);

  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // file order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* find(const std::string& name) const;
  // The tensor's bytes as a CPU tensor: zero-copy (lying in mapped()) when aligned,
  // copied otherwise. A foreign dtype's tensor is its bytes, 1-D uint8.
  at::Tensor tensor(const TensorInfo& info) const;
  // Whether the tensor's dtype is one LibTorch has no type for (mq::ForeignDType).
  static bool foreign(const TensorInfo& info);
  const std::shared_ptr<const MappedFile>& mapped() const { return mapped_; }

 private:
  File() = default;
  std::filesystem::path path_;
  std::shared_ptr<const MappedFile> mapped_;
  const uint8_t* buffer_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A JSON text, parsed as the reference implementation reads headers (mq::check_json:
// no key twice in an object, containers nested no deeper than `max_depth`). `value` is
// a map-based json (an ordered_json object finds a key by a linear search: quadratic
// over a model's 100,000 tensors), so the keys' order in the text is kept apart: those
// of the top level, and of the top-level object named `inner`. Throws InputError
// "FILE: WHAT: ...".
struct ParsedJson {
  nlohmann::json value;
  std::vector<std::string> keys, inner_keys;
};
ParsedJson parse_json(const std::string& file, const std::string& what, std::string_view text, size_t max_depth,
                      const std::string& inner = "");

// Validates a header (the JSON text) against a byte buffer of `buffer_bytes`.
// Exposed for tests and the fuzz target. Throws InputError naming `name`.
void parse_header(const std::string& name, const char* json, size_t json_bytes,
                  uint64_t buffer_bytes, std::vector<TensorInfo>& tensors,
                  std::map<std::string, std::string>& metadata);

struct OutTensor {
  std::string name;
  at::Tensor tensor;  // any layout; written contiguous, little-endian
};

// Adds `key`, which must be new, to an ordered_json object without the search for an
// existing one that operator[] makes (linear: quadratic over a model's 100,000 tensors).
inline void append_new(nlohmann::ordered_json& object, std::string key, nlohmann::ordered_json value) {
  object.get_ref<nlohmann::ordered_json::object_t&>().emplace_back(std::move(key), std::move(value));
}

// Writes a safetensors file tensor by tensor: add() appends each tensor's bytes to an
// unnamed scratch file beside `path` (nothing is left behind if the process dies), after
// `reserve` bytes (rounded up to 8) kept for the header. finish() writes a header that
// fits there in place, padded with spaces, and names the scratch file `path`: no copy.
// A header that does not fit, or reserve 0, is written compactly, and the kernel copies
// the tensors in behind it. Only the tensor being added is ever in memory. Tensor order
// and metadata are kept as given. Throws OutputError on I/O failure and InputError on
// names it cannot write.
class Writer {
 public:
  explicit Writer(std::filesystem::path path, uint64_t reserve = 0);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Any layout; `as` (when given) says what the bytes of a foreign dtype's tensor are.
  void add(const std::string& name, const at::Tensor& tensor, const ForeignDType* as = nullptr);
  uint64_t bytes() const { return offset_; }                     // of tensor data so far
  // Writes the file at `path`, or at `as` when given (a shard gets its name once the
  // number of shards is known; it must be in the same directory).
  void finish(const std::map<std::string, std::string>& metadata, const std::filesystem::path& as = {});

 private:
  std::filesystem::path path_;
  uint64_t reserve_;
  int scratch_ = -1;
  uint64_t offset_ = 0;
  uint64_t written_back_ = 0;  // tensor data handed to writeback so far
  std::vector<TensorInfo> tensors_;
  std::unordered_set<std::string> names_;  // of tensors_
};

// All of a file at once, through Writer.
void write(const std::filesystem::path& path, const std::vector<OutTensor>& tensors,
           const std::map<std::string, std::string>& metadata);


// "F32" for at::kFloat, ...; throws InputError for dtypes safetensors lacks.
std::string dtype_name(at::ScalarType type);

// An HF model directory's safetensors weights: the index of their shards, else one file.
inline constexpr const char* kIndexName = "model.safetensors.index.json";
inline constexpr const char* kSingleName = "model.safetensors";

// The tensors of a safetensors file, or of the shards a model.safetensors.index.json
// lists (a directory holding either), by name and in file order; the shards' metadata
// merged, the first shard's value winning.
class TensorSet {
 public:
  struct Tensor {
    std::string name;
    const File* file;
    const TensorInfo* info;
  };

  // The file an HF model directory is read from: its index, else model.safetensors.
  static std::filesystem::path model_file(const std::filesystem::path& dir);
  // InputError for a malformed file or index, or an index that lists a tensor in a
  // shard that does not hold it.
  static TensorSet open(const std::filesystem::path& input);

  const std::vector<Tensor>& tensors() const { return tensors_; }
  const Tensor* find(const std::string& name) const;
  at::Tensor tensor(const Tensor& t) const { return t.file->tensor(*t.info); }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<std::filesystem::path>& sources() const { return sources_; }
  const std::vector<std::shared_ptr<File>>& files() const { return files_; }

 private:
  // The file's tensors, or those of them in `listed` (a shard holds only what the
  // index says it holds).
  void add(const std::filesystem::path& path, std::shared_ptr<File> file, const std::set<std::string>& listed);

  std::vector<std::shared_ptr<File>> files_;
  std::vector<std::filesystem::path> sources_;
  std::vector<Tensor> tensors_;
  std::map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace mq::safetensors
