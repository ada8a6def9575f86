#include "output_file.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>

#include "mq/error.hpp"
#include "mq/interrupt.hpp"

namespace fs = std::filesystem;

namespace mq::detail {
namespace {

// Temporary paths of runs in progress, readable from a signal handler.
constexpr int kSlots = 16;
constexpr size_t kPathMax = 4096;
char g_pending[kSlots][kPathMax];
std::atomic<bool> g_used[kSlots];

int reserve_slot(const fs::path& temp) {
  const std::string s = temp.string();
  if (s.size() >= kPathMax) return -1;
  for (int i = 0; i < kSlots; ++i) {
    bool expected = false;
    if (g_used[i].compare_exchange_strong(expected, true)) {
      std::memcpy(g_pending[i], s.c_str(), s.size() + 1);
      return i;
    }
  }
  return -1;
}

void release_slot(int slot) {
  if (slot >= 0) g_used[slot].store(false);
}

void on_signal(int) {
  for (int i = 0; i < kSlots; ++i)
    if (g_used[i].load()) unlink(g_pending[i]);
  _exit(130);
}

// fsync; 0 or the errno of what failed.
int sync_path(const fs::path& p, int flags) {
  const int fd = open(p.c_str(), flags | O_CLOEXEC);
  const int error = fd < 0 || fsync(fd) != 0 ? errno : 0;
  if (fd >= 0) close(fd);
  return error;
}

}  // namespace

OutputFile::OutputFile(fs::path destination) : destination_(std::move(destination)) {
  std::error_code ec;
  const fs::path dir = destination_.parent_path().empty() ? fs::path(".") : destination_.parent_path();
  fs::create_directories(dir, ec);
  if (ec) throw OutputError(destination_.string() + ": cannot create directory " + dir.string() +
                            " (" + ec.message() + ")");

  temp_ = dir / ("." + destination_.filename().string() + ".mq-tmp-" + std::to_string(getpid()));
  slot_ = reserve_slot(temp_);
}

OutputFile::~OutputFile() {
  if (!promoted_) {
    std::error_code ec;
    fs::remove_all(temp_, ec);
  }
  release_slot(slot_);
}

void OutputFile::promote() {
  std::error_code ec;
  const bool directory = fs::is_directory(temp_, ec);
  if (!directory && !fs::is_regular_file(temp_, ec))
    throw OutputError(destination_.string() + ": nothing was written to promote");
  // What cannot be flushed to disk must not replace anything.
  const auto sync_file = [this](const fs::path& file) {
    if (const int error = sync_path(file, O_RDONLY))
      throw OutputError(destination_.string() + ": cannot flush to disk (" + std::strerror(error) + ")");
  };
  if (directory) {
    for (const auto& entry : fs::recursive_directory_iterator(temp_, ec))
      if (entry.is_regular_file()) sync_file(entry.path());
  } else {
    sync_file(temp_);
  }
  // A directory cannot be renamed over a non-empty one: the old one moves aside first,
  // so the destination always holds a complete artifact, old or new.
  const bool exists = fs::exists(destination_, ec);
  if (exists && fs::is_directory(destination_, ec) != directory)
    throw OutputError(destination_.string() + ": exists as a " + (directory ? "file" : "directory") +
                      "; refusing to replace it with a " + (directory ? "directory" : "file"));
  fs::path old;
  if (directory && exists) {
    old = temp_.string() + ".old";
    if (std::rename(destination_.c_str(), old.c_str()) != 0)
      throw OutputError(destination_.string() + ": cannot move the previous artifact aside (" +
                        std::strerror(errno) + ")");
  }
  if (std::rename(temp_.c_str(), destination_.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    if (!old.empty()) std::rename(old.c_str(), destination_.c_str());
    throw OutputError(destination_.string() + ": cannot move the new artifact into place (" + why + ")");
  }
  promoted_ = true;
  if (!old.empty()) fs::remove_all(old, ec);
  // Best effort: the artifact is in place, and some file systems refuse a directory's fsync.
  sync_path(destination_.parent_path().empty() ? fs::path(".") : destination_.parent_path(),
            O_RDONLY | O_DIRECTORY);
}

void write_file_atomically(const fs::path& destination, const std::string& text) {
  OutputFile out(destination);
  {
    std::ofstream f(out.temp(), std::ios::binary | std::ios::trunc);
    f << text;
    f.flush();
    if (!f) throw OutputError(destination.string() + ": cannot write");
  }
  out.promote();
}

}  // namespace mq::detail

void mq::install_interrupt_cleanup() {
  struct sigaction sa {};
  sa.sa_handler = detail::on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);  // the terminal or ssh session went away
}
