#pragma once
// Work a run does on a thread beside its main work.

#include <atomic>
#include <filesystem>
#include <functional>
#include <future>
#include <string>

#include "hash.hpp"
#include "mq/quantized_model.hpp"

namespace mq::detail {

// A file's hash, computed on a thread beside other work: the input's beside quantization
// (it is needed only for the output's provenance, at the end), the artifact's beside its
// fsync. A run that ends early does not wait for the rest of the file: the destructor
// cancels before the future's waits.
class BackgroundHash {
 public:
  explicit BackgroundHash(std::filesystem::path path)
      : result_(std::async(std::launch::async, [this, path = std::move(path)] { return digest_path(path, &cancel_); })) {}
  ~BackgroundHash() { cancel_ = true; }
  Digests get() { return result_.get(); }

 private:
  std::atomic<bool> cancel_{false};
  std::future<Digests> result_;
};

// Writes streamed entries one behind the quantizer, on a thread of their own, so that an
// entry's copy into the page cache overlaps the quantizing of the next (on a 2-vCPU VM
// the copy of fresh pages costs as much as the quantizing). Entries keep their order; a
// write's error comes out of the next push() or of drain(). Small entries are written
// at once: a thread for each would cost more than it saves.
class WriteBehind {
 public:
  explicit WriteBehind(std::function<void(const QuantizedEntry&)> write) : write_(std::move(write)) {}
  ~WriteBehind() {
    if (pending_.valid()) pending_.wait();
  }
  void push(QuantizedEntry e) {
    drain();
    const at::Tensor& data = e.quantized ? e.quantized->data : e.tensor;
    if (!data.defined() || data.nbytes() < (size_t{1} << 20)) return write_(e);
    pending_ = std::async(std::launch::async, [this, e = std::move(e)] { write_(e); });
  }
  void drain() {
    if (pending_.valid()) pending_.get();
  }

 private:
  std::function<void(const QuantizedEntry&)> write_;
  std::future<void> pending_;
};

}  // namespace mq::detail
