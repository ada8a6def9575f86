// Fuzz target: the pt format's restricted unpickler (state_dict_reader). The input is
// an archive's parts, so that mutations reach the unpickler instead of failing the
// zip's checksums: a little-endian u32 length and that many bytes of data.pkl, then up
// to four storages ("0" to "3"), each a u32 length and its bytes (lengths past the end
// of the input are cut short). tests/corpus/make_state_dicts.py writes the seeds. Every
// tensor read is copied (its view checked against its storage). Bad input may only
// raise mq::InputError.
#include <caffe2/serialize/inline_container.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>

#include "mq/error.hpp"
#include "state_dict_reader.hpp"

namespace {

// The next length-prefixed part of the input.
std::string take(const uint8_t*& data, size_t& size) {
  uint32_t length = 0;
  std::memcpy(&length, data, std::min(size, sizeof length));
  const size_t header = std::min(size, sizeof length);
  data += header;
  size -= header;
  const size_t n = std::min<size_t>(length, size);
  std::string part(reinterpret_cast<const char*>(data), n);
  data += n;
  size -= n;
  return part;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path file =
      std::filesystem::temp_directory_path() / ("mq-fuzz-state-dict-" + std::to_string(getpid()) + ".pt");
  static const bool cleanup = std::atexit([] { std::remove(file.c_str()); }) == 0;
  (void)cleanup;
  {
    caffe2::serialize::PyTorchStreamWriter writer(file.string());
    const std::string pickle = take(data, size);
    writer.writeRecord("data.pkl", pickle.data(), pickle.size());
    for (int i = 0; i < 4 && size > 0; ++i) {
      const std::string storage = take(data, size);
      writer.writeRecord("data/" + std::to_string(i), storage.data(), storage.size());
    }
    writer.writeEndOfFile();
  }
  try {
    std::map<std::string, std::string> strings;
    const auto tensors = mq::pt::read_state_dict(file, &strings);
    for (const mq::NamedTensor& t : tensors) t.tensor.clone();
    if (getenv("MQ_FUZZ_VERBOSE")) std::printf("read %zu tensors\n", tensors.size());
  } catch (const mq::InputError& e) {
    if (getenv("MQ_FUZZ_VERBOSE")) std::printf("%s\n", e.what());
  }
  return 0;
}
