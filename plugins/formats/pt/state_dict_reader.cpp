#include "state_dict_reader.hpp"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "mq/error.hpp"
#include "mq/files.hpp"

namespace mq::pt {
namespace {

struct Object;
using Ref = std::shared_ptr<Object>;

// A pickled value. Kinds beyond these are refused while reading.
struct Object {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kTuple, kList, kDict, kGlobal, kTensor, kMark } kind;
  explicit Object(Kind k) : kind(k) {}
  int64_t i = 0;
  double f = 0;
  std::string s;  // string, or "module.name" for a global
  std::vector<Ref> items;                    // tuple, list
  std::vector<std::pair<Ref, Ref>> entries;  // dict, in insertion order
  at::Tensor tensor;
};

Ref make(Object::Kind kind) { return std::make_shared<Object>(kind); }

// Storages as their integers: a quantized tensor's (QInt8, QUInt8) become one in
// _rebuild_qtensor.
const std::map<std::string, at::ScalarType> kStorages{
    {"torch.FloatStorage", at::kFloat},   {"torch.DoubleStorage", at::kDouble}, {"torch.HalfStorage", at::kHalf},
    {"torch.BFloat16Storage", at::kBFloat16}, {"torch.LongStorage", at::kLong},  {"torch.IntStorage", at::kInt},
    {"torch.ShortStorage", at::kShort},   {"torch.CharStorage", at::kChar},     {"torch.ByteStorage", at::kByte},
    {"torch.BoolStorage", at::kBool},     {"torch.QInt8Storage", at::kChar},    {"torch.QUInt8Storage", at::kByte}};

// Every other global the pickle may name; anything else is refused.
const std::set<std::string> kGlobals{
    "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_qtensor", "torch.per_tensor_affine", "torch.per_channel_affine",
    "torch.jit._pickle.restore_type_tag"};  // LibTorch's pickle_save: the dict's type

class Unpickler {
 public:
  Unpickler(const std::filesystem::path& path, caffe2::serialize::PyTorchStreamReader& archive, std::string data)
      : path_(path), archive_(archive), data_(std::move(data)) {}
  Unpickler(const Unpickler&) = delete;
  Unpickler& operator=(const Unpickler&) = delete;
  // A pickle may put a list or dict inside itself (through the memo): the cycle would
  // keep it alive for good. Every list and dict still alive is emptied here.
  ~Unpickler() {
    for (const std::weak_ptr<Object>& w : containers_)
      if (const Ref o = w.lock()) {
        o->items.clear();
        o->entries.clear();
      }
  }

  // The archive's mapping, when a storage lies in it.
  std::shared_ptr<const MappedFile> mapping() const { return map_ && map_->data() ? map_ : nullptr; }

  Ref run() {
    while (true) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;  // PROTO
        case '.': return pop();    // STOP
        case '(': push(make(Object::Kind::kMark)); break;
        case 'N': push(make(Object::Kind::kNone)); break;
        case 0x88: case 0x89: { auto b = make(Object::Kind::kBool); b->i = op == 0x88; push(b); break; }
        case 'K': push(integer(byte())); break;
        case 'M': push(integer(uint(2))); break;
        case 'J': push(integer(static_cast<int32_t>(uint(4)))); break;
        case 0x8a: {  // LONG1
          const uint8_t n = byte();
          if (n > 8) fail("integer too large");
          int64_t v = 0;
          const std::string bytes = take(n);
          for (int k = n - 1; k >= 0; --k) v = (v << 8) | static_cast<uint8_t>(bytes[k]);
          if (n > 0 && n < 8 && (static_cast<uint8_t>(bytes[n - 1]) & 0x80)) v -= int64_t{1} << (8 * n);
          push(integer(v));
          break;
        }
        case 'G': {  // BINFLOAT, big-endian
          const std::string b = take(8);
          uint64_t bits = 0;
          for (char c : b) bits = (bits << 8) | static_cast<uint8_t>(c);
          auto f = make(Object::Kind::kFloat);
          std::memcpy(&f->f, &bits, 8);
          push(f);
          break;
        }
        case 'X': push(string(take(uint(4)))); break;
        case 0x8c: push(string(take(byte()))); break;  // SHORT_BINUNICODE
        case 'T': push(string(take(uint(4)))); break;  // BINSTRING
        case 'U': push(string(take(byte()))); break;   // SHORT_BINSTRING
        case ')': push(make(Object::Kind::kTuple)); break;
        case ']': push(container(Object::Kind::kList)); break;
        case '}': push(container(Object::Kind::kDict)); break;
        case 't': { auto t = make(Object::Kind::kTuple); t->items = pop_to_mark(); push(t); break; }
        case 'l': { auto t = container(Object::Kind::kList); t->items = pop_to_mark(); push(t); break; }
        case 0x85: case 0x86: case 0x87: {
          auto t = make(Object::Kind::kTuple);
          t->items.resize(op - 0x84);
          for (size_t k = t->items.size(); k-- > 0;) t->items[k] = pop();
          push(t);
          break;
        }
        case 'a': { auto v = pop(); expect(top(), Object::Kind::kList)->items.push_back(v); break; }
        case 'e': { auto items = pop_to_mark(); auto& l = expect(top(), Object::Kind::kList)->items; l.insert(l.end(), items.begin(), items.end()); break; }
        case 's': { auto v = pop(); auto k = pop(); expect(top(), Object::Kind::kDict)->entries.emplace_back(k, v); break; }
        case 'u': {
          auto items = pop_to_mark();
          if (items.size() % 2) fail("odd SETITEMS");
          auto d = expect(top(), Object::Kind::kDict);
          for (size_t k = 0; k < items.size(); k += 2) d->entries.emplace_back(items[k], items[k + 1]);
          break;
        }
        case 'q': memo_[byte()] = top(); break;
        case 'r': memo_[uint(4)] = top(); break;
        case 'h': push(memo(byte())); break;
        case 'j': push(memo(uint(4))); break;
        case 'c': {
          std::string module = line(), name = line();
          auto g = make(Object::Kind::kGlobal);
          g->s = module + "." + name;
          if (!kGlobals.count(g->s) && !kStorages.count(g->s))
            fail("refusing to load '" + printable(g->s) + "': a state dict holds only tensors and dicts");
          push(g);
          break;
        }
        case 'R': { auto args = expect(pop(), Object::Kind::kTuple); push(reduce(expect(pop(), Object::Kind::kGlobal), args)); break; }
        case 'Q': push(persistent(expect(pop(), Object::Kind::kTuple))); break;
        case 'b': pop(); break;  // BUILD: OrderedDict._metadata and the like, ignored
        default: fail("unsupported pickle opcode 0x" + hex(op));
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw InputError(path_.string() + ": cannot read the state dict: " + why);
  }
  static std::string hex(uint8_t b) {
    const char* d = "0123456789abcdef";
    return {d[b >> 4], d[b & 15]};
  }
  uint8_t byte() {
    if (pos_ >= data_.size()) fail("truncated pickle");
    return static_cast<uint8_t>(data_[pos_++]);
  }
  uint64_t uint(int n) {
    uint64_t v = 0;
    for (int k = 0; k < n; ++k) v |= static_cast<uint64_t>(byte()) << (8 * k);
    return v;
  }
  std::string take(uint64_t n) {
    if (n > data_.size() - pos_) fail("truncated pickle");
    std::string s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::string line() {
    const size_t end = data_.find('\n', pos_);
    if (end == std::string::npos) fail("truncated pickle");
    std::string s = data_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }
  // A list or dict, remembered for the destructor (allocated apart from its control
  // block, so that a dead one leaves only that behind until the list is pruned).
  Ref container(Object::Kind kind) {
    Ref o(new Object(kind));
    if (containers_.size() >= 2 * live_containers_ + 64) {
      containers_.erase(std::remove_if(containers_.begin(), containers_.end(),
                                       [](const std::weak_ptr<Object>& w) { return w.expired(); }),
                        containers_.end());
      live_containers_ = containers_.size();
    }
    containers_.push_back(o);
    return o;
  }

  Ref integer(int64_t v) { auto o = make(Object::Kind::kInt); o->i = v; return o; }
  Ref string(std::string v) {
    if (!valid_utf8(v)) fail("a string is not UTF-8");
    auto o = make(Object::Kind::kString);
    o->s = std::move(v);
    return o;
  }
  void push(Ref r) {
    if (stack_.size() > 1000000) fail("pickle too large");
    stack_.push_back(std::move(r));
  }
  Ref pop() {
    if (stack_.empty()) fail("malformed pickle (stack underflow)");
    Ref r = stack_.back();
    stack_.pop_back();
    return r;
  }
  Ref top() {
    if (stack_.empty()) fail("malformed pickle (stack underflow)");
    return stack_.back();
  }
  std::vector<Ref> pop_to_mark() {
    auto mark = stack_.end();
    while (mark != stack_.begin() && (*(mark - 1))->kind != Object::Kind::kMark) --mark;
    if (mark == stack_.begin()) fail("malformed pickle (stack underflow)");
    std::vector<Ref> items(std::make_move_iterator(mark), std::make_move_iterator(stack_.end()));
    stack_.erase(mark - 1, stack_.end());
    return items;
  }
  Ref memo(uint64_t k) {
    auto it = memo_.find(k);
    if (it == memo_.end()) fail("malformed pickle (unknown memo)");
    return it->second;
  }
  Ref expect(Ref r, Object::Kind kind) {
    if (r->kind != kind) fail("malformed pickle (unexpected value)");
    return r;
  }
  int64_t as_int(const Ref& r) { return expect(r, Object::Kind::kInt)->i; }

  // ('storage', <storage class>, key, location, numel): the bytes of archive/data/<key>.
  Ref persistent(const Ref& id) {
    if (id->items.size() != 5 || id->items[0]->kind != Object::Kind::kString || id->items[0]->s != "storage")
      fail("unexpected persistent id");
    const auto storage_type = kStorages.find(expect(id->items[1], Object::Kind::kGlobal)->s);
    if (storage_type == kStorages.end()) fail("a persistent id names no storage type");
    const at::ScalarType dtype = storage_type->second;
    const std::string key = expect(id->items[2], Object::Kind::kString)->s;
    const int64_t numel = as_int(id->items[4]);
    auto cached = storages_.find(key);
    if (cached != storages_.end()) return cached->second;
    const std::string record = "data/" + key;
    if (key.find('/') != std::string::npos || !archive_.hasRecord(record)) fail("missing storage '" + key + "'");
    const size_t element = c10::elementSize(dtype);
    size_t bytes_needed = 0;
    const bool sized = numel >= 0 && !__builtin_mul_overflow(static_cast<size_t>(numel), element, &bytes_needed);
    auto storage = make(Object::Kind::kTensor);
    if (sized) storage->tensor = mapped(record, bytes_needed, numel, dtype);
    if (!storage->tensor.defined()) {
      auto [bytes, size] = archive_.getRecord(record);
      if (!sized || size != bytes_needed)
        fail("storage '" + key + "' holds " + std::to_string(size) + " bytes, not " + std::to_string(numel) + " elements");
      storage->tensor = at::empty({0}, at::TensorOptions(dtype))  // over the bytes read, not a copy of them
                            .set_(c10::Storage(c10::Storage::use_byte_size_t(), size, std::move(bytes)), 0, {numel}, {1});
    }
    storages_[key] = storage;
    return storage;
  }

  // A storage torch.save stored as it is (uncompressed, 64-byte aligned, its size in
  // the data descriptor after it): a tensor over the mapped file, neither read nor
  // copied. Undefined where the record is anything else (compressed, another size,
  // misaligned, or its header not found near its data): getRecord() reads those.
  at::Tensor mapped(const std::string& record, size_t bytes, int64_t numel, at::ScalarType dtype) {
    if (!map_tried_) {
      map_tried_ = true;
      try {
        map_ = MappedFile::open(path_);
      } catch (const InputError&) {  // getRecord() reads them all
      }
    }
    if (!map_) return {};
    const MappedFile& m = *map_;
    const auto le = [&m](size_t at, int bytes) {
      uint64_t v = 0;
      for (int b = bytes - 1; b >= 0; --b) v = v << 8 | m.data()[at + static_cast<size_t>(b)];
      return v;
    };
    const size_t data = archive_.getRecordOffset(record);
    if (!m.data() || data > m.size() || bytes > m.size() - data || data % c10::elementSize(dtype) != 0) return {};
    const std::string tail = "/" + record;  // the header names ARCHIVE/data/KEY
    constexpr size_t kHeader = 30;          // then the name, then the extra field
    for (size_t names = tail.size(); names <= 4096 && kHeader + names <= data; ++names) {
      const size_t at = data - kHeader - names;
      if (le(at, 4) != 0x04034b50 || le(at + 26, 2) + le(at + 28, 2) != names) continue;
      const size_t name = le(at + 26, 2);
      if (name < tail.size() || std::memcmp(m.data() + at + kHeader + name - tail.size(), tail.data(), tail.size()) != 0)
        continue;
      if (le(at + 8, 2) != 0) return {};  // compressed
      // The sizes: in the header, or (flag 8) in a descriptor after the data: [signature,]
      // CRC, then both sizes in 4 bytes each, or in 8 (zip64).
      bool sized = (le(at + 6, 2) & 8) == 0 && le(at + 18, 4) == bytes && le(at + 22, 4) == bytes;
      if (!sized && (le(at + 6, 2) & 8) != 0) {
        size_t d = data + bytes;
        if (m.size() - d >= 4 && le(d, 4) == 0x08074b50) d += 4;
        sized = (m.size() - d >= 12 && le(d + 4, 4) == bytes && le(d + 8, 4) == bytes) ||
                (m.size() - d >= 20 && le(d + 4, 8) == bytes && le(d + 12, 8) == bytes);
      }
      if (!sized) return {};
      return at::from_blob(const_cast<uint8_t*>(m.data() + data), {numel}, [keep = map_](void*) {},
                           at::TensorOptions(dtype));
    }
    return {};
  }

  Ref reduce(const Ref& global, const Ref& args) {
    if (global->s == "collections.OrderedDict") return container(Object::Kind::kDict);
    if (global->s == "torch._utils._rebuild_parameter" || global->s == "torch.jit._pickle.restore_type_tag") {
      if (args->items.empty()) fail("bad " + global->s);
      return args->items[0];
    }
    if (global->s == "torch._utils._rebuild_qtensor" && args->items.size() >= 5) return qtensor(args);
    if (global->s != "torch._utils._rebuild_tensor_v2" || args->items.size() < 4)
      fail("refusing to call '" + global->s + "'");
    auto t = make(Object::Kind::kTensor);
    t->tensor = view(args);
    return t;
  }

  // (storage, offset, size, stride, ...): that view of the storage; a copy unless it is
  // all of the storage, in order (so that a small view keeps no large storage alive).
  at::Tensor view(const Ref& args) {
    const at::Tensor& storage = expect(args->items[0], Object::Kind::kTensor)->tensor;
    const int64_t offset = as_int(args->items[1]);
    std::vector<int64_t> size, stride;
    for (const Ref& d : expect(args->items[2], Object::Kind::kTuple)->items) size.push_back(as_int(d));
    for (const Ref& d : expect(args->items[3], Object::Kind::kTuple)->items) stride.push_back(as_int(d));
    if (size.size() != stride.size()) fail("tensor size and stride disagree");
    // Every element the view reaches must lie inside the storage.
    int64_t last = offset;
    bool empty = false;
    for (size_t k = 0; k < size.size(); ++k) {
      if (size[k] < 0 || stride[k] < 0) fail("negative size or stride");
      int64_t reach = 0;
      empty = empty || size[k] == 0;
      if (!empty && (__builtin_mul_overflow(size[k] - 1, stride[k], &reach) || __builtin_add_overflow(last, reach, &last)))
        fail("tensor view runs past its storage");
    }
    if (offset < 0 || (!empty && last >= storage.numel())) fail("tensor view runs past its storage");
    const at::Tensor v = storage.as_strided(size, stride, offset);
    return v.is_contiguous() && v.numel() == storage.numel() ? v : v.clone();
  }

  // (storage, offset, size, stride, (qscheme, scale, zero point[, axis]), ...): the
  // integers of a QInt8 or QUInt8 storage as a PyTorch quantized tensor, its qparams
  // checked against its shape.
  Ref qtensor(const Ref& args) {
    const at::Tensor data = view(args);
    if (data.scalar_type() != at::kChar && data.scalar_type() != at::kByte)
      fail("a quantized tensor over a storage that is not QInt8 or QUInt8");
    const auto& params = expect(args->items[4], Object::Kind::kTuple)->items;
    const std::string scheme = params.empty() ? "" : expect(params[0], Object::Kind::kGlobal)->s;
    const int64_t lowest = data.scalar_type() == at::kChar ? -128 : 0;
    const auto check_zero_points = [&](const at::Tensor& zp) {
      if ((zp < lowest).any().item<bool>() || (zp > lowest + 255).any().item<bool>())
        fail("a quantized tensor's zero point is outside its integers' range");
    };
    auto t = make(Object::Kind::kTensor);
    if (scheme == "torch.per_tensor_affine" && params.size() == 3) {
      const double scale = expect(params[1], Object::Kind::kFloat)->f;
      if (!(scale > 0) || !std::isfinite(scale)) fail("a quantized tensor's scale is not positive and finite");
      check_zero_points(at::scalar_tensor(as_int(params[2]), at::kLong));
      t->tensor = at::_make_per_tensor_quantized_tensor(data, scale, as_int(params[2]));
    } else if (scheme == "torch.per_channel_affine" && params.size() == 4) {
      const at::Tensor scales = expect(params[1], Object::Kind::kTensor)->tensor;
      const at::Tensor zero_points = expect(params[2], Object::Kind::kTensor)->tensor;
      const int64_t axis = as_int(params[3]);
      if (axis < 0 || axis >= data.dim() || scales.dim() != 1 || zero_points.dim() != 1 ||
          scales.numel() != data.size(axis) || zero_points.numel() != data.size(axis) ||
          !scales.is_floating_point() || zero_points.is_floating_point())
        fail("a per-channel quantized tensor's scales or zero points do not fit its shape");
      if (!(scales > 0).all().item<bool>() || !at::isfinite(scales).all().item<bool>())
        fail("a quantized tensor's scale is not positive and finite");
      check_zero_points(zero_points);
      t->tensor = at::_make_per_channel_quantized_tensor(data, scales.to(at::kDouble), zero_points.to(at::kLong), axis);
    } else {
      fail("unsupported quantization scheme '" + scheme + "'");
    }
    return t;
  }

  std::filesystem::path path_;
  caffe2::serialize::PyTorchStreamReader& archive_;
  std::string data_;
  size_t pos_ = 0;
  std::vector<Ref> stack_;
  std::map<uint64_t, Ref> memo_;
  std::map<std::string, Ref> storages_;
  std::shared_ptr<const MappedFile> map_;  // the archive, mapped at the first storage
  bool map_tried_ = false;
  std::vector<std::weak_ptr<Object>> containers_;
  size_t live_containers_ = 0;
};

}  // namespace

std::string printable(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c < 0x20 || c > 0x7e) c = '?';
  return out;
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    const int more = (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : 0;
    if (!more || s.size() - i <= static_cast<size_t>(more)) return false;  // a bad lead byte, or cut short
    uint32_t code = c & (0x7F >> (more + 1));
    for (int k = 1; k <= more; ++k) {
      const auto next = static_cast<unsigned char>(s[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code = (code << 6) | (next & 0x3F);
    }
    const uint32_t least[] = {0, 0x80, 0x800, 0x10000};
    if (code < least[more] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    i += static_cast<size_t>(more) + 1;
  }
  return true;
}

std::vector<NamedTensor> read_state_dict(const std::filesystem::path& path,
                                         std::map<std::string, std::string>* strings,
                                         std::shared_ptr<const MappedFile>* mapped) {
  try {
    caffe2::serialize::PyTorchStreamReader archive(path.string());
    if (!archive.hasRecord("data.pkl")) throw InputError(path.string() + ": no data.pkl in the archive");
    auto [bytes, size] = archive.getRecord("data.pkl");
    if (strings && archive.hasRecord(kMetadataRecord)) {
      auto [text, length] = archive.getRecord(kMetadataRecord);
      (*strings)[kMetadataRecord] = std::string(static_cast<const char*>(text.get()), length);
    }
    Unpickler unpickler(path, archive, std::string(static_cast<const char*>(bytes.get()), size));
    const Ref root = unpickler.run();
    if (mapped) *mapped = unpickler.mapping();
    std::vector<NamedTensor> tensors;
    if (root->kind == Object::Kind::kList || root->kind == Object::Kind::kTuple) {  // e.g. calibration batches
      for (const Ref& value : root->items) {
        if (value->kind != Object::Kind::kTensor)
          throw InputError(path.string() + ": the list has an item that is not a tensor");
        tensors.push_back({std::to_string(tensors.size()), value->tensor});
      }
      return tensors;
    }
    if (root->kind != Object::Kind::kDict)
      throw InputError(path.string() + ": the archive holds no dict or list of tensors (a whole pickled model?)");
    std::set<std::string> names;
    for (const auto& [key, value] : root->entries) {
      if (key->kind != Object::Kind::kString) throw InputError(path.string() + ": the state dict has a key that is not a string");
      if (!names.insert(key->s).second) throw InputError(path.string() + ": the state dict has '" + key->s + "' twice");
      if (value->kind == Object::Kind::kString && strings)
        (*strings)[key->s] = value->s;
      else if (value->kind == Object::Kind::kTensor)
        tensors.push_back({key->s, value->tensor});
      else
        throw InputError(path.string() + ": the state dict has an entry that is not name -> tensor");
    }
    return tensors;
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    throw InputError(path.string() + ": not a readable PyTorch archive (" + printable(what.substr(0, what.find('\n'))) +
                     ")");
  }
}

}  // namespace mq::pt
