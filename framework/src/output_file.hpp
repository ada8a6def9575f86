#pragma once
// Write-to-temporary then promote: the destination is either the previous file or the
// complete new one, never a partial file.

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace mq::detail {

// What `path` is when a promote must not replace it: "a character device", "a block
// device", "a pipe" or "a socket" (a rename would put a file where it was, /dev/null
// included); null when it is absent, a file or a directory. Symlinks are followed.
const char* special_file(const std::filesystem::path& path);

class OutputFile {
 public:
  // Creates the destination's directory if needed and reserves a temporary path
  // beside it. Throws OutputError, also for a destination that is a special_file().
  explicit OutputFile(std::filesystem::path destination);
  ~OutputFile();  // removes the temporary file unless promoted
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  const std::filesystem::path& temp() const { return temp_; }
  const std::filesystem::path& destination() const { return destination_; }
  // fsync what was written (promote does, unless this did). Throws OutputError.
  void sync();
  // fsync, rename over the destination, fsync the directory. Throws OutputError.
  void promote();

 private:
  std::filesystem::path destination_;
  std::filesystem::path temp_;
  bool synced_ = false;
  bool promoted_ = false;
};

// While one lives, an interrupt (install_interrupt_cleanup) writes its files, each
// atomically, once the temporaries are removed: the reports of a run that was stopped,
// so that an earlier run's report does not stand for it.
class WrittenOnInterrupt {
 public:
  using Files = std::vector<std::pair<std::filesystem::path, std::string>>;  // path, text
  explicit WrittenOnInterrupt(Files files);
  ~WrittenOnInterrupt();
  WrittenOnInterrupt(const WrittenOnInterrupt&) = delete;
  WrittenOnInterrupt& operator=(const WrittenOnInterrupt&) = delete;
};

// Writes `text` to `destination` atomically.
void write_file_atomically(const std::filesystem::path& destination, const std::string& text);

}  // namespace mq::detail
