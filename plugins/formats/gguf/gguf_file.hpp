#pragma once
// GGUF v3 files (llama.cpp's ggml docs/gguf.md): "GGUF", u32 version, u64 tensor count,
// u64 key/value count, the key/values, the tensor infos (name, dims innermost first,
// ggml type, offset into the data), padding to general.alignment, the data.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mq/files.hpp"
#include "mq/quant_spec.hpp"

namespace mq::gguf {

// ggml's tensor types that mq writes and reads.
enum class TensorType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kBF16 = 30
};

// The ggml type of a block DType (kQ8_0, ...), and back (none for F32, F16, BF16).
TensorType tensor_type(DType block);
std::optional<DType> block_dtype(TensorType type);
// "Q8_0", "F32", ...
std::string type_name(TensorType type);
// Bytes of a row of `cols` values of `type`; -1 for a type mq does not know.
int64_t row_bytes(uint32_t type, int64_t cols);

inline constexpr uint32_t kAlignment = 32;

// Writes a GGUF file: key/values and tensor infos are gathered while the tensors' data
// goes to a scratch file beside `path`; finish() writes the header to `path` and copies
// the data behind it. Throws OutputError when a file cannot be written.
class Writer {
 public:
  explicit Writer(std::filesystem::path path);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void add_u32(const std::string& key, uint32_t value);
  void add_f32(const std::string& key, float value);
  void add_bool(const std::string& key, bool value);
  void add_string(const std::string& key, const std::string& value);
  void add_strings(const std::string& key, const std::vector<std::string>& values);
  void add_i32s(const std::string& key, const std::vector<int32_t>& values);
  void add_f32s(const std::string& key, const std::vector<float>& values);
  // `shape` as PyTorch has it (written innermost first); `bytes` of row_bytes() per row.
  void add_tensor(const std::string& name, const std::vector<int64_t>& shape, TensorType type, const void* data,
                  size_t bytes);
  void finish();

 private:
  void key(const std::string& key, uint32_t type);
  void write_data(const void* data, size_t bytes);
  std::filesystem::path path_, scratch_path_;
  int scratch_ = -1;
  uint64_t data_bytes_ = 0;
  uint64_t kv_count_ = 0, tensor_count_ = 0;
  std::string kv_, infos_;
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // as PyTorch has it (outermost first)
  TensorType type;
  const uint8_t* data;  // in the mapping
  uint64_t bytes;
};

// A GGUF file read: its key/values (numbers, bools, strings and arrays as JSON, in file
// order) and tensors over the mapping. Every count, length and offset is checked against
// the file; InputError "PATH: ..." otherwise.
struct File {
  std::shared_ptr<const MappedFile> map;
  nlohmann::ordered_json kv;
  std::vector<TensorInfo> tensors;
};
File read(const std::filesystem::path& path);

// Whether `path` starts with GGUF's magic.
bool has_magic(const std::filesystem::path& path);

}  // namespace mq::gguf
