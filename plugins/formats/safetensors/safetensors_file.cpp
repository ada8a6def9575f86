#include "safetensors_file.hpp"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>

#include "mq/error.hpp"
#include "mq/files.hpp"
#include "mq/hf_checkpoint.hpp"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;  // what we write: keys in our order
// What we read: keys sorted (an ordered_json object finds a key by a linear search,
// quadratic over a model's 100,000 tensors); their order is taken while parsing.
using Json = nlohmann::json;

namespace mq::safetensors {
namespace {

struct DTypeInfo {
  const char* name;
  int bits;
  std::optional<at::ScalarType> torch;
};

const DTypeInfo kDTypes[] = {
    {"BOOL", 8, at::kBool},          {"U8", 8, at::kByte},           {"I8", 8, at::kChar},
    {"F8_E5M2", 8, std::nullopt},    {"F8_E4M3", 8, std::nullopt},   {"F8_E8M0", 8, std::nullopt},
    {"I16", 16, at::kShort},         {"U16", 16, std::nullopt},      {"F16", 16, at::kHalf},
    {"BF16", 16, at::kBFloat16},     {"I32", 32, at::kInt},          {"U32", 32, std::nullopt},
    {"F32", 32, at::kFloat},         {"F64", 64, at::kDouble},       {"I64", 64, at::kLong},
    {"U64", 64, std::nullopt},       {"C64", 64, at::kComplexFloat}, {"F4", 4, std::nullopt},
    {"F6_E2M3", 6, std::nullopt},    {"F6_E3M2", 6, std::nullopt},
};

const DTypeInfo* find_dtype(const std::string& name) {
  for (const DTypeInfo& d : kDTypes)
    if (name == d.name) return &d;
  return nullptr;
}

[[noreturn]] void bad(const std::string& name, const std::string& problem) {
  throw InputError(name + ": " + problem);
}

// Bits of `shape` elements of `bits` bits each; none where a size is negative or the
// product overflows.
std::optional<uint64_t> shape_bits(int bits, const std::vector<int64_t>& shape) {
  uint64_t total = static_cast<uint64_t>(bits);
  for (int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(total, static_cast<uint64_t>(d), &total))
      return std::nullopt;
  return total;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

ParsedJson parse_json(const std::string& file, const std::string& what, std::string_view text, size_t max_depth,
                      const std::string& inner) {
  mq::JsonKeys keys = mq::check_json(file, what, text, max_depth, inner);
  ParsedJson out;
  out.value = Json::parse(text.begin(), text.end());
  out.keys = std::move(keys.top);
  out.inner_keys = std::move(keys.inner);
  return out;
}

void parse_header(const std::string& name, const char* text, size_t text_bytes,
                  uint64_t buffer_bytes, std::vector<TensorInfo>& tensors,
                  std::map<std::string, std::string>& metadata) {
  tensors.clear();
  metadata.clear();
  const ParsedJson header = parse_json(name, "invalid header", {text, text_bytes}, 2);
  if (!header.value.is_object()) bad(name, "invalid header: not a JSON object");

  for (const std::string& key : header.keys) {
    const Json& value = header.value.at(key);
    if (key == "__metadata__") {
      if (!value.is_object()) bad(name, "invalid header: __metadata__ is not an object");
      for (auto m = value.begin(); m != value.end(); ++m) {
        if (!m.value().is_string())
          bad(name, "invalid header: __metadata__ value of '" + m.key() + "' is not a string");
        metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!value.is_object()) bad(name, "invalid header: tensor '" + key + "' is not an object");
    const Json* dtype = value.contains("dtype") ? &value["dtype"] : nullptr;
    const Json* shape = value.contains("shape") ? &value["shape"] : nullptr;
    const Json* offsets = value.contains("data_offsets") ? &value["data_offsets"] : nullptr;
    if (!dtype || !dtype->is_string() || !shape || !shape->is_array() || !offsets ||
        !offsets->is_array() || offsets->size() != 2)
      bad(name, "invalid header: tensor '" + key +
                    "' needs a string dtype, a shape list and two data_offsets");
    TensorInfo info;
    info.name = key;
    info.dtype = dtype->get<std::string>();
    if (!find_dtype(info.dtype)) bad(name, "tensor '" + key + "' has unknown dtype '" + info.dtype + "'");
    for (const Json& d : *shape) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
        bad(name, "invalid header: tensor '" + key + "' has a shape entry that is not a size");
      info.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
    }
    if (!(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned())
      bad(name, "invalid header: tensor '" + key + "' has data_offsets that are not sizes");
    info.begin = (*offsets)[0].get<uint64_t>();
    info.end = (*offsets)[1].get<uint64_t>();
    tensors.push_back(std::move(info));
  }

  // The reference's order: offsets contiguous from 0, then each size, then the end.
  std::stable_sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (const TensorInfo& t : tensors) {
    if (t.begin != expected || t.end < t.begin)
      bad(name, "tensor '" + t.name + "' has data_offsets [" + std::to_string(t.begin) + ", " +
                    std::to_string(t.end) + ") but the data must continue at " +
                    std::to_string(expected) + " (gap, overlap or reversed range)");
    expected = t.end;
    const std::optional<uint64_t> shape = shape_bits(find_dtype(t.dtype)->bits, t.shape);
    if (!shape) bad(name, "tensor '" + t.name + "' has a shape whose size overflows");
    const uint64_t bits = *shape;
    if (bits % 8 != 0)
      bad(name, "tensor '" + t.name + "' is not a whole number of bytes (" + std::to_string(bits) +
                    " bits)");
    if (bits / 8 != t.end - t.begin)
      bad(name, "tensor '" + t.name + "' of dtype " + t.dtype + " and its shape needs " +
                    std::to_string(bits / 8) + " bytes, but data_offsets give " +
                    std::to_string(t.end - t.begin));
  }
  if (expected != buffer_bytes)
    bad(name, "the tensors cover " + std::to_string(expected) + " bytes but the data buffer has " +
                  std::to_string(buffer_bytes) + (expected < buffer_bytes ? " (trailing bytes)" : ""));
}

std::shared_ptr<File> File::open(const fs::path& path) {
  const std::string name = path.string();
  std::shared_ptr<File> file(new File);
  file->path_ = path;
  file->mapped_ = mq::MappedFile::open(path);
  const uint8_t* map = file->mapped_->data();
  const uint64_t size = file->mapped_->size();
  if (size < 8) bad(name, "file is " + std::to_string(size) + " bytes, too short for a safetensors header");
  const uint64_t n = read_u64_le(map);
  if (n > kMaxHeaderBytes)
    bad(name, "header length " + std::to_string(n) + " exceeds the limit of " +
                  std::to_string(kMaxHeaderBytes) + " bytes");
  if (8 + n > size)
    bad(name, "header length " + std::to_string(n) + " runs past the end of the file (" +
                  std::to_string(size) + " bytes)");
  file->buffer_ = map + 8 + n;
  parse_header(name, reinterpret_cast<const char*>(map + 8), n, size - 8 - n, file->tensors_, file->metadata_);
  return file;
}

const TensorInfo* File::find(const std::string& name) const {
  for (const TensorInfo& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

bool File::foreign(const TensorInfo& info) { return !find_dtype(info.dtype)->torch; }

at::Tensor File::tensor(const TensorInfo& info) const {
  const std::optional<at::ScalarType> type = find_dtype(info.dtype)->torch;
  const at::TensorOptions options(type.value_or(at::kByte));  // a foreign dtype: its bytes
  const std::vector<int64_t> shape =
      type ? info.shape : std::vector<int64_t>{static_cast<int64_t>(info.end - info.begin)};
  const uint8_t* data = buffer_ + info.begin;
  if (reinterpret_cast<uintptr_t>(data) % options.dtype().itemsize() == 0)
    return at::from_blob(
        const_cast<uint8_t*>(data), shape, [keep = mapped_](void*) {}, options);
  // Third-party files promise no alignment; copy rather than read misaligned.
  at::Tensor copy = at::empty(shape, options);
  std::memcpy(copy.data_ptr(), data, info.end - info.begin);
  return copy;
}

std::string dtype_name(at::ScalarType type) {
  for (const DTypeInfo& d : kDTypes)
    if (d.torch && *d.torch == type) return d.name;
  throw InputError(std::string("safetensors has no dtype for ") + c10::toString(type));
}

namespace {

void write_all(int fd, const void* data, size_t size, const fs::path& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw OutputError(path.string() + ": write failed (" + std::strerror(errno) + ")");
    p += n;
    size -= static_cast<size_t>(n);
  }
}

void pwrite_all(int fd, const void* data, size_t size, uint64_t at, const fs::path& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::pwrite(fd, p, size, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw OutputError(path.string() + ": write failed (" + std::strerror(errno) + ")");
    p += n;
    at += static_cast<uint64_t>(n);
    size -= static_cast<size_t>(n);
  }
}

// `size` bytes of `from` (from offset `at`) to the end of `to`: in the kernel where the
// file system can (copy_file_range), through a buffer where it cannot.
void copy_bytes(int from, uint64_t at, int to, uint64_t size, const fs::path& path) {
  loff_t in = static_cast<loff_t>(at);
  while (size > 0) {
    const ssize_t n = ::copy_file_range(from, &in, to, nullptr, size, 0);
    if (n > 0) {
      size -= static_cast<uint64_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP))
      throw OutputError(path.string() + ": write failed (" + std::strerror(n == 0 ? EIO : errno) + ")");
    std::vector<char> buffer(size_t{8} << 20);
    while (size > 0) {
      const ssize_t got = ::pread(from, buffer.data(), std::min<uint64_t>(size, buffer.size()), in);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) throw OutputError(path.string() + ": read back failed (" + std::strerror(errno) + ")");
      write_all(to, buffer.data(), static_cast<size_t>(got), path);
      in += got;
      size -= static_cast<uint64_t>(got);
    }
  }
}

// Names the unnamed (O_TMPFILE) file `fd` as `path`, through /proc; false where that
// cannot be done (no /proc, a named scratch file already unlinked, another file system).
bool link_as(int fd, const fs::path& path) {
  const std::string self = "/proc/self/fd/" + std::to_string(fd);
  if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) == 0) return true;
  return errno == EEXIST && ::unlink(path.c_str()) == 0 &&
         ::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) == 0;
}

}  // namespace

Writer::Writer(fs::path path, uint64_t reserve) : path_(std::move(path)), reserve_((reserve + 7) / 8 * 8) {
  const fs::path dir = path_.parent_path().empty() ? fs::path(".") : path_.parent_path();
  scratch_ = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);  // it may become the output
  if (scratch_ < 0) {  // file systems without O_TMPFILE: a named file, unlinked at once
    std::string name = (dir / ".mq-scratch-XXXXXX").string();
    scratch_ = ::mkostemp(name.data(), O_CLOEXEC);
    if (scratch_ >= 0) ::unlink(name.c_str());
  }
  if (scratch_ < 0)
    throw OutputError(path_.string() + ": cannot create a scratch file beside it (" + std::strerror(errno) + ")");
  if (::lseek(scratch_, static_cast<off_t>(reserve_), SEEK_SET) < 0) {
    ::close(scratch_);
    throw OutputError(path_.string() + ": cannot seek in its scratch file (" + std::strerror(errno) + ")");
  }
}

Writer::~Writer() {
  if (scratch_ >= 0) ::close(scratch_);
}

void Writer::add(const std::string& name, const at::Tensor& tensor, const ForeignDType* as) {
  if (name == "__metadata__")
    throw InputError("cannot write a tensor named __metadata__: safetensors reserves the name");
  if (!names_.insert(name).second) throw InputError("cannot write two tensors named '" + name + "'");
  const at::Tensor data = tensor.contiguous();
  const uint64_t bytes = data.nbytes();
  if (as) {
    const DTypeInfo* d = find_dtype(as->dtype);
    if (!d) throw InputError("cannot write '" + name + "': safetensors has no dtype " + as->dtype);
    if (data.scalar_type() != at::kByte || data.dim() != 1 ||
        shape_bits(d->bits, as->shape) != bytes * 8)
      throw InputError("cannot write '" + name + "' as " + as->dtype + " " +
                       c10::str(c10::IntArrayRef(as->shape)) + ": it holds " +
                       c10::toString(data.scalar_type()) + " " + c10::str(data.sizes()) +
                       ", not that many bytes");
  }
  tensors_.push_back({name, as ? as->dtype : dtype_name(data.scalar_type()),
                      as ? as->shape : data.sizes().vec(), offset_, offset_ + bytes});
  write_all(scratch_, data.data_ptr(), bytes, path_);
  offset_ += bytes;
  // Writeback starts as the data comes (the output is fsynced before it replaces
  // anything: this way most of it reaches the disk while the run still computes).
  constexpr uint64_t kWriteback = uint64_t{64} << 20;
  if (offset_ - written_back_ >= kWriteback) {
    ::sync_file_range(scratch_, static_cast<off64_t>(reserve_ + written_back_),
                      static_cast<off64_t>(offset_ - written_back_), SYNC_FILE_RANGE_WRITE);
    written_back_ = offset_;
  }
}

void Writer::finish(const std::map<std::string, std::string>& metadata, const fs::path& as) {
  const fs::path& path = as.empty() ? path_ : as;
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  for (const TensorInfo& t : tensors_)
    append_new(header, t.name, {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}});
  std::string text = header.dump();
  const bool in_place = reserve_ >= 8 + text.size();
  text.append(in_place ? reserve_ - 8 - text.size() : (8 - text.size() % 8) % 8, ' ');
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  if (in_place) {
    pwrite_all(scratch_, length, sizeof length, 0, path);
    pwrite_all(scratch_, text.data(), text.size(), sizeof length, path);
    if (link_as(scratch_, path)) return;
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw OutputError(path.string() + ": cannot create (" + std::strerror(errno) + ")");
  try {
    if (in_place) {  // the same bytes, copied whole
      copy_bytes(scratch_, 0, fd, reserve_ + offset_, path);
    } else {
      write_all(fd, length, sizeof length, path);
      write_all(fd, text.data(), text.size(), path);
      copy_bytes(scratch_, reserve_, fd, offset_, path);
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) throw OutputError(path.string() + ": write failed (" + std::strerror(errno) + ")");
}

void write(const fs::path& path, const std::vector<OutTensor>& tensors,
           const std::map<std::string, std::string>& metadata) {
  Writer writer(path);
  for (const OutTensor& t : tensors) writer.add(t.name, t.tensor);
  writer.finish(metadata);
}

fs::path TensorSet::model_file(const fs::path& dir) {
  std::error_code ec;
  return fs::exists(dir / kIndexName, ec) ? dir / kIndexName : dir / kSingleName;
}

TensorSet TensorSet::open(const fs::path& input) {
  std::error_code ec;
  const fs::path file = fs::is_directory(input, ec) ? model_file(input) : input;
  TensorSet set;
  const std::string name = file.filename().string(), suffix = ".safetensors.index.json";
  if (name.size() < suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    set.add(file, File::open(file), {});
    return set;
  }
  for (const hf::Shard& shard : hf::read_index(file)) {
    const auto f = File::open(shard.path);
    for (const std::string& t : shard.tensors)
      if (!f->find(t)) throw hf::not_in_shard(file, t, shard.path);
    set.add(shard.path, f, std::set<std::string>(shard.tensors.begin(), shard.tensors.end()));
  }
  return set;
}

const TensorSet::Tensor* TensorSet::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

void TensorSet::add(const fs::path& path, std::shared_ptr<File> file, const std::set<std::string>& listed) {
  for (const auto& info : file->tensors())
    if (listed.empty() || listed.count(info.name)) {
      by_name_.emplace(info.name, tensors_.size());
      tensors_.push_back({info.name, file.get(), &info});
    }
  for (const auto& [k, v] : file->metadata()) metadata_.emplace(k, v);
  sources_.push_back(path);
  files_.push_back(std::move(file));
}

}  // namespace mq::safetensors
