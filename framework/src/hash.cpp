#include "hash.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <xxh_x86dispatch.h>
#include <xxhash.h>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include <ATen/ATen.h>

#include "mq/error.hpp"
#include "mq/quantized_model.hpp"

namespace mq::detail {
namespace {

std::string hex(XXH128_hash_t h) {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return buf;
}

}  // namespace

uint64_t entry_digest(const QuantizedEntry& entry) {
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  auto text = [&](const std::string& s) { XXH3_64bits_update(state, s.data(), s.size() + 1); };
  auto tensor = [&](const at::Tensor& t) {
    const at::Tensor c = t.contiguous();
    text(c10::toString(c.scalar_type()));
    text(c10::str(c.sizes()));
    XXH3_64bits_update(state, c.data_ptr(), c.nbytes());
  };
  text(entry.name);
  if (entry.quantized) {
    const QuantizedTensor& q = *entry.quantized;
    text(q.spec.to_string());
    text(c10::str(q.shape));
    tensor(q.spec.is_block() ? q.data : q.data.reshape(q.shape));  // block data: its bytes by row
    if (q.spec.is_integer()) {
      tensor(q.qparams.scale.to(at::kFloat).reshape(-1));
      tensor(q.qparams.zero_point.to(at::kLong).reshape(-1));
      if (q.g_idx.defined()) tensor(q.g_idx.to(at::kInt).contiguous());
    }
  } else {
    tensor(entry.tensor);
  }
  const uint64_t digest = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return digest;
}

std::string hash_bytes(std::string_view bytes) {
  return hex(XXH3_128bits_dispatch(bytes.data(), bytes.size()));
}

namespace {

std::string sha256_hex(const unsigned char* digest) {
  std::string out;
  for (int i = 0; i < 32; ++i) out += fmt::format("{:02x}", digest[i]);
  return out;
}

// Reads the file through one buffer that stays in cache and hashes with libxxhash's
// runtime-dispatched AVX2/AVX-512 code and OpenSSL's SHA-256 (SHA-NI where the CPU has
// it) (the input hash of a multi-GB checkpoint was a third of a run). read() rather than
// mapped windows: on a VM with shadow page tables every mapped page faults through the
// hypervisor and each unmap drops the mappings of the whole process, the quantizing
// threads' included (4 GiB: 0.5 s against 1.1-1.5 s).
Digests digest_file(const std::filesystem::path& file, const std::atomic<bool>* cancel) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(file.string() + ": cannot open for hashing (" + std::strerror(errno) + ")");
  XXH3_state_t* state = XXH3_createState();
  XXH3_128bits_reset(state);
  EVP_MD_CTX* sha = EVP_MD_CTX_new();
  EVP_DigestInit_ex(sha, EVP_sha256(), nullptr);
  std::vector<char> buffer(size_t{4} << 20);
  ssize_t got = 0;
  while (!(cancel && cancel->load()) &&
         ((got = ::read(fd, buffer.data(), buffer.size())) > 0 || (got < 0 && errno == EINTR)))
    if (got > 0) {
      XXH3_128bits_update_dispatch(state, buffer.data(), static_cast<size_t>(got));
      EVP_DigestUpdate(sha, buffer.data(), static_cast<size_t>(got));
    }
  const bool failed = got < 0;
  ::close(fd);
  const XXH128_hash_t h = XXH3_128bits_digest(state);
  XXH3_freeState(state);
  unsigned char digest[32];
  EVP_DigestFinal_ex(sha, digest, nullptr);
  EVP_MD_CTX_free(sha);
  if (failed) throw InputError(file.string() + ": read error while hashing");
  if (cancel && cancel->load()) return {};
  return {hex(h), sha256_hex(digest)};
}

}  // namespace

Digests digest_path(const std::filesystem::path& path, const std::atomic<bool>* cancel) {
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) return digest_file(path, cancel);
  std::vector<std::string> files;  // relative, generic: sorted as bytes, as LC_ALL=C sort does
  for (const auto& e : std::filesystem::recursive_directory_iterator(path, ec))
    if (e.is_regular_file()) files.push_back(e.path().lexically_relative(path).generic_string());
  std::sort(files.begin(), files.end());
  std::string all, manifest;
  for (const std::string& f : files) {
    const Digests d = digest_file(path / f, cancel);
    if (d.xxh3.empty()) return {};
    all += f + "\n" + d.xxh3 + "\n";
    manifest += d.sha256 + "  " + f + "\n";
  }
  unsigned char digest[32];
  SHA256(reinterpret_cast<const unsigned char*>(manifest.data()), manifest.size(), digest);
  return {hash_bytes(all), sha256_hex(digest)};
}

}  // namespace mq::detail
