#include "gguf_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "mq/blocks.hpp"
#include "mq/error.hpp"

namespace mq::gguf {
namespace {

// GGUF's value types.
enum : uint32_t { kU8, kI8, kU16, kI16, kU32, kI32, kF32, kBool, kString, kArray, kU64, kI64, kF64 };

struct TypeRow {
  TensorType type;
  const char* name;
  std::optional<DType> block;
  int64_t bytes;  // of an element (floats), or 0 for block types
};
constexpr std::array<TypeRow, 11> kTypes{{
    {TensorType::kF32, "F32", std::nullopt, 4},
    {TensorType::kF16, "F16", std::nullopt, 2},
    {TensorType::kBF16, "BF16", std::nullopt, 2},
    {TensorType::kQ8_0, "Q8_0", DType::kQ8_0, 0},
    {TensorType::kQ4_0, "Q4_0", DType::kQ4_0, 0},
    {TensorType::kQ4_1, "Q4_1", DType::kQ4_1, 0},
    {TensorType::kQ5_0, "Q5_0", DType::kQ5_0, 0},
    {TensorType::kQ5_1, "Q5_1", DType::kQ5_1, 0},
    {TensorType::kQ4_K, "Q4_K", DType::kQ4_K, 0},
    {TensorType::kQ5_K, "Q5_K", DType::kQ5_K, 0},
    {TensorType::kQ6_K, "Q6_K", DType::kQ6_K, 0},
}};

const TypeRow* find_type(uint32_t type) {
  for (const TypeRow& row : kTypes)
    if (static_cast<uint32_t>(row.type) == type) return &row;
  return nullptr;
}

template <class T>
void append(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof value);
}

void append_string(std::string& out, const std::string& s) {
  append<uint64_t>(out, s.size());
  out += s;
}

uint64_t padded(uint64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

void write_all(int fd, const void* data, size_t bytes, const std::filesystem::path& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw OutputError(path.string() + ": cannot write (" + std::strerror(errno) + ")");
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

// Reads values off the mapping, each count and length checked against what is left.
class Cursor {
 public:
  Cursor(const std::filesystem::path& path, const uint8_t* data, size_t size)
      : path_(path), data_(data), size_(size) {}

  template <class T>
  T get() {
    need(sizeof(T), "a value");
    T v;
    std::memcpy(&v, data_ + at_, sizeof v);
    at_ += sizeof v;
    return v;
  }
  std::string string(const char* what) {
    const uint64_t n = get<uint64_t>();
    need(n, what);
    std::string s(reinterpret_cast<const char*>(data_ + at_), n);
    at_ += n;
    return s;
  }
  nlohmann::ordered_json value(uint32_t type, int depth) {
    switch (type) {
      case kU8: return get<uint8_t>();
      case kI8: return get<int8_t>();
      case kU16: return get<uint16_t>();
      case kI16: return get<int16_t>();
      case kU32: return get<uint32_t>();
      case kI32: return get<int32_t>();
      case kF32: return get<float>();
      case kU64: return get<uint64_t>();
      case kI64: return get<int64_t>();
      case kF64: return get<double>();
      case kBool: {
        const uint8_t b = get<uint8_t>();
        if (b > 1) fail("a bool that is neither 0 nor 1");
        return b == 1;
      }
      case kString: return string("a string");
      case kArray: {
        if (depth > 1) fail("arrays nested deeper than two");
        const uint32_t inner = get<uint32_t>();
        const uint64_t n = get<uint64_t>();
        if (n > size_ - at_) fail("an array of " + std::to_string(n) + " values, more than the file holds");
        nlohmann::ordered_json array = nlohmann::ordered_json::array();
        for (uint64_t i = 0; i < n; ++i) array.push_back(value(inner, depth + 1));
        return array;
      }
      default:
        fail("an unknown value type " + std::to_string(type));
    }
  }
  size_t at() const { return at_; }
  [[noreturn]] void fail(const std::string& what) const {
    throw InputError(path_.string() + ": not a valid GGUF file (" + what + " at byte " + std::to_string(at_) + ")");
  }

 private:
  void need(uint64_t n, const char* what) const {
    if (n > size_ - at_) fail(std::string(what) + " running past the end");
  }
  const std::filesystem::path& path_;
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

}  // namespace

TensorType tensor_type(DType block) {
  for (const TypeRow& row : kTypes)
    if (row.block == block) return row.type;
  throw std::invalid_argument("gguf: no ggml type for " + std::string(to_string(block)));
}

std::optional<DType> block_dtype(TensorType type) { return find_type(static_cast<uint32_t>(type))->block; }

std::string type_name(TensorType type) { return find_type(static_cast<uint32_t>(type))->name; }

int64_t row_bytes(uint32_t type, int64_t cols) {
  const TypeRow* row = find_type(type);
  if (!row) return -1;
  if (!row->block) return cols * row->bytes;
  return cols % traits(*row->block).block ? -1 : blocks::row_bytes(*row->block, cols);
}

Writer::Writer(std::filesystem::path path) : path_(std::move(path)), scratch_path_(path_.string() + ".data") {
  scratch_ = ::open(scratch_path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (scratch_ < 0) throw OutputError(scratch_path_.string() + ": cannot create (" + std::strerror(errno) + ")");
}

Writer::~Writer() {
  if (scratch_ >= 0) ::close(scratch_);
  ::unlink(scratch_path_.c_str());
}

void Writer::key(const std::string& name, uint32_t type) {
  append_string(kv_, name);
  append<uint32_t>(kv_, type);
  ++kv_count_;
}

void Writer::add_u32(const std::string& name, uint32_t value) {
  key(name, kU32);
  append(kv_, value);
}
void Writer::add_f32(const std::string& name, float value) {
  key(name, kF32);
  append(kv_, value);
}
void Writer::add_bool(const std::string& name, bool value) {
  key(name, kBool);
  append<uint8_t>(kv_, value ? 1 : 0);
}
void Writer::add_string(const std::string& name, const std::string& value) {
  key(name, kString);
  append_string(kv_, value);
}
void Writer::add_strings(const std::string& name, const std::vector<std::string>& values) {
  key(name, kArray);
  append<uint32_t>(kv_, kString);
  append<uint64_t>(kv_, values.size());
  for (const std::string& v : values) append_string(kv_, v);
}
void Writer::add_i32s(const std::string& name, const std::vector<int32_t>& values) {
  key(name, kArray);
  append<uint32_t>(kv_, kI32);
  append<uint64_t>(kv_, values.size());
  for (int32_t v : values) append(kv_, v);
}
void Writer::add_f32s(const std::string& name, const std::vector<float>& values) {
  key(name, kArray);
  append<uint32_t>(kv_, kF32);
  append<uint64_t>(kv_, values.size());
  for (float v : values) append(kv_, v);
}

void Writer::write_data(const void* data, size_t bytes) {
  write_all(scratch_, data, bytes, scratch_path_);
  data_bytes_ += bytes;
}

void Writer::add_tensor(const std::string& name, const std::vector<int64_t>& shape, TensorType type,
                        const void* data, size_t bytes) {
  append_string(infos_, name);
  append<uint32_t>(infos_, static_cast<uint32_t>(shape.size()));
  for (auto d = shape.rbegin(); d != shape.rend(); ++d) append<uint64_t>(infos_, static_cast<uint64_t>(*d));
  append<uint32_t>(infos_, static_cast<uint32_t>(type));
  append<uint64_t>(infos_, data_bytes_);
  ++tensor_count_;
  write_data(data, bytes);
  static const std::array<char, kAlignment> zeros{};
  write_data(zeros.data(), padded(data_bytes_) - data_bytes_);
}

void Writer::finish() {
  std::string header = "GGUF";
  append<uint32_t>(header, 3);
  append<uint64_t>(header, tensor_count_);
  append<uint64_t>(header, kv_count_);
  header += kv_;
  header += infos_;
  header.resize(padded(header.size()), '\0');
  const int out = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) throw OutputError(path_.string() + ": cannot create (" + std::strerror(errno) + ")");
  try {
    write_all(out, header.data(), header.size(), path_);
    loff_t from = 0;
    for (uint64_t left = data_bytes_; left;) {
      const ssize_t n = ::copy_file_range(scratch_, &from, out, nullptr, left, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw OutputError(path_.string() + ": cannot write (" + std::strerror(n < 0 ? errno : EIO) + ")");
      left -= static_cast<uint64_t>(n);
    }
  } catch (...) {
    ::close(out);
    throw;
  }
  if (::close(out) != 0) throw OutputError(path_.string() + ": cannot write (" + std::strerror(errno) + ")");
}

bool has_magic(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

File read(const std::filesystem::path& path) {
  File file;
  file.map = MappedFile::open(path);
  Cursor c(path, file.map->data(), file.map->size());
  if (file.map->size() < 24 || std::memcmp(file.map->data(), "GGUF", 4) != 0) c.fail("no GGUF magic");
  c.get<uint32_t>();
  const uint32_t version = c.get<uint32_t>();
  if (version != 2 && version != 3) c.fail("version " + std::to_string(version) + ", not 2 or 3");
  const uint64_t tensors = c.get<uint64_t>(), kvs = c.get<uint64_t>();
  if (tensors > file.map->size() || kvs > file.map->size()) c.fail("counts larger than the file");
  file.kv = nlohmann::ordered_json::object();
  for (uint64_t i = 0; i < kvs; ++i) {
    std::string key = c.string("a key");
    if (file.kv.contains(key)) c.fail("key '" + key + "' twice");
    file.kv[key] = c.value(c.get<uint32_t>(), 0);
  }
  uint64_t alignment = kAlignment;
  if (const auto a = file.kv.find("general.alignment"); a != file.kv.end()) {
    if (!a->is_number_unsigned() || a->get<uint64_t>() == 0 || (a->get<uint64_t>() & (a->get<uint64_t>() - 1)))
      c.fail("general.alignment that is not a power of two");
    alignment = a->get<uint64_t>();
  }
  struct Raw {
    uint64_t offset, bytes;
  };
  std::vector<Raw> raw;
  for (uint64_t i = 0; i < tensors; ++i) {
    TensorInfo t;
    t.name = c.string("a tensor name");
    const uint32_t dims = c.get<uint32_t>();
    if (dims == 0 || dims > 4) c.fail("tensor '" + t.name + "' with " + std::to_string(dims) + " dimensions");
    uint64_t numel = 1;
    for (uint32_t d = 0; d < dims; ++d) {
      const uint64_t n = c.get<uint64_t>();
      if (n == 0 || n > (uint64_t{1} << 40) || __builtin_mul_overflow(numel, n, &numel) || numel > (uint64_t{1} << 48))
        c.fail("tensor '" + t.name + "' with a dimension of " + std::to_string(n));
      t.shape.insert(t.shape.begin(), static_cast<int64_t>(n));
    }
    const uint32_t type = c.get<uint32_t>();
    const int64_t row = row_bytes(type, t.shape.back());
    if (row < 0)
      c.fail("tensor '" + t.name + "' of ggml type " + std::to_string(type) +
             (find_type(type) ? " with rows not a whole number of blocks" : ", which mq does not read"));
    t.type = static_cast<TensorType>(type);
    const uint64_t offset = c.get<uint64_t>();
    if (offset % alignment) c.fail("tensor '" + t.name + "' at an unaligned offset");
    raw.push_back({offset, numel / static_cast<uint64_t>(t.shape.back()) * static_cast<uint64_t>(row)});
    file.tensors.push_back(std::move(t));
  }
  const uint64_t data = (c.at() + alignment - 1) / alignment * alignment;
  for (size_t i = 0; i < raw.size(); ++i) {
    uint64_t end;
    if (__builtin_add_overflow(data, raw[i].offset, &end) || __builtin_add_overflow(end, raw[i].bytes, &end) ||
        end > file.map->size())
      c.fail("tensor '" + file.tensors[i].name + "' running past the end of the file");
    file.tensors[i].data = file.map->data() + data + raw[i].offset;
    file.tensors[i].bytes = raw[i].bytes;
  }
  return file;
}

}  // namespace mq::gguf
