#include "output_file.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "hash.hpp"
#include "mq/error.hpp"
#include "mq/interrupt.hpp"

namespace fs = std::filesystem;

namespace mq::detail {
namespace {

// Temporary paths (files or directories) of runs in progress; the interrupt thread
// removes them.
std::mutex g_mutex;
std::set<std::string>& pending() {
  static auto* paths = new std::set<std::string>;  // never destroyed: exit may race it
  return *paths;
}

// What an interrupt writes, by the WrittenOnInterrupt that asked for it.
std::map<const WrittenOnInterrupt*, WrittenOnInterrupt::Files>& on_interrupt() {
  static auto* files = new std::map<const WrittenOnInterrupt*, WrittenOnInterrupt::Files>;  // as pending()
  return *files;
}

int g_wake[2] = {-1, -1};  // a pipe: the signal handler writes, the cleanup thread reads

void on_signal(int) {
  const int saved = errno;  // of the code the signal interrupted
  const char byte = 1;
  [[maybe_unused]] const ssize_t n = write(g_wake[1], &byte, 1);
  errno = saved;
}

// fsync; 0 or the errno of what failed.
int sync_path(const fs::path& p, int flags) {
  const int fd = open(p.c_str(), flags | O_CLOEXEC);
  const int error = fd < 0 || fsync(fd) != 0 ? errno : 0;
  if (fd >= 0) close(fd);
  return error;
}

bool is_pending(const fs::path& temp) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  return pending().count(temp.string()) > 0;
}

// The directory `destination` is in ("." for a bare name).
fs::path directory_of(const fs::path& destination) {
  return destination.parent_path().empty() ? fs::path(".") : destination.parent_path();
}

// The start of a temporary's name beside `destination`: ".NAME.mq-tmp-", then a PID
// and, for a previous artifact moved aside, ".old". A NAME too long for that to fit in
// a file name keeps its first bytes and adds a hash of the whole.
std::string temp_prefix(const fs::path& destination) {
  constexpr size_t kNameMax = 255, kTail = 8 + 10 + 4;  // ".mq-tmp-", a PID, ".old"
  const std::string name = destination.filename().string();
  if (1 + name.size() + kTail <= kNameMax) return "." + name + ".mq-tmp-";
  const std::string hash = "~" + hash_bytes(name).substr(0, 16);
  return "." + name.substr(0, kNameMax - 1 - hash.size() - kTail) + hash + ".mq-tmp-";
}

// The end of the temporary an interrupt writes a report through: not the run's own
// temporary, which the run may be renaming into place at that moment.
constexpr const char* kInterruptSuffix = ".int";

// Writes `text` to `destination` by a temporary renamed over it, from the interrupt
// thread: system calls alone, errors ignored (the run is ending with 130 either way).
void write_on_interrupt(const fs::path& destination, const std::string& text) {
  const fs::path temp = directory_of(destination) / (temp_prefix(destination) + std::to_string(getpid()) + kInterruptSuffix);
  const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  bool ok = true;
  for (size_t done = 0; ok && done < text.size();) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    ok = n > 0 || (n < 0 && errno == EINTR);
    if (n > 0) done += static_cast<size_t>(n);
  }
  ok = fsync(fd) == 0 && ok;
  close(fd);
  if (!ok || std::rename(temp.c_str(), destination.c_str()) != 0) unlink(temp.c_str());
}

// Temporaries of runs killed outright (SIGKILL, a crash) stay behind: a run to the same
// destination removes those whose process is gone, and puts back a previous artifact
// that was moved aside (".old") when nothing took its place. One of this process's id
// that is not a temporary of its own is stale too: in a container each run may get the
// same id, and the killed run's directory would be written into and promoted.
void remove_stale_temps(const fs::path& dir, const fs::path& destination) {
  const std::string prefix = temp_prefix(destination);
  std::vector<std::pair<fs::path, bool>> stale;  // path, moved aside
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string pid = entry.path().filename().string();
    if (pid.rfind(prefix, 0) != 0) continue;
    pid.erase(0, prefix.size());
    const std::string suffix = pid.substr(std::min(pid.size(), pid.find('.')));
    const bool moved_aside = suffix == ".old";
    if (!suffix.empty() && !moved_aside && suffix != kInterruptSuffix) continue;
    pid.resize(pid.size() - suffix.size());
    if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t owner = static_cast<pid_t>(std::stol(pid));
    const bool gone = owner == getpid() ? !is_pending(dir / (prefix + pid))
                                        : kill(owner, 0) != 0 && errno == ESRCH;
    if (gone) stale.emplace_back(entry.path(), moved_aside);
  }
  for (const auto& [path, moved_aside] : stale)
    if (!moved_aside || fs::exists(destination, ec) || std::rename(path.c_str(), destination.c_str()) != 0)
      fs::remove_all(path, ec);
}

}  // namespace

const char* special_file(const fs::path& path) {
  std::error_code ec;
  switch (fs::status(path, ec).type()) {
    case fs::file_type::character: return "a character device";
    case fs::file_type::block: return "a block device";
    case fs::file_type::fifo: return "a pipe";
    case fs::file_type::socket: return "a socket";
    default: return nullptr;
  }
}

OutputFile::OutputFile(fs::path destination) : destination_(std::move(destination)) {
  if (const char* kind = special_file(destination_))
    throw OutputError(destination_.string() + ": is " + kind + ", which a written file would replace");
  std::error_code ec;
  const fs::path dir = directory_of(destination_);
  fs::create_directories(dir, ec);
  if (ec) throw OutputError(destination_.string() + ": cannot create directory " + dir.string() +
                            " (" + ec.message() + ")");

  temp_ = dir / (temp_prefix(destination_) + std::to_string(getpid()));
  if (is_pending(temp_))
    throw OutputError(destination_.string() + ": is being written by another run in this process");
  remove_stale_temps(dir, destination_);
  if (fs::exists(temp_, ec))
    throw OutputError(destination_.string() + ": cannot remove " + temp_.string() + ", left by an earlier run");
  const std::lock_guard<std::mutex> lock(g_mutex);
  pending().insert(temp_.string());
}

OutputFile::~OutputFile() {
  if (!promoted_) {
    std::error_code ec;
    fs::remove_all(temp_, ec);
  }
  const std::lock_guard<std::mutex> lock(g_mutex);
  pending().erase(temp_.string());
}

void OutputFile::sync() {
  std::error_code ec;
  const bool directory = fs::is_directory(temp_, ec);
  if (!directory && !fs::is_regular_file(temp_, ec))
    throw OutputError(destination_.string() + ": nothing was written to promote");
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
  synced_ = true;
}

void OutputFile::promote() {
  if (!synced_) sync();  // what cannot be flushed to disk must not replace anything
  std::error_code ec;
  const bool directory = fs::is_directory(temp_, ec);
  // A directory cannot be renamed over a non-empty one: the two are exchanged, or the
  // old one moves aside first, so the destination always holds a complete artifact.
  const bool exists = fs::exists(destination_, ec);
  if (exists && fs::is_directory(destination_, ec) != directory)
    throw OutputError(destination_.string() + ": exists as a " + (directory ? "file" : "directory") +
                      "; refusing to replace it with a " + (directory ? "directory" : "file"));
  fs::path old;  // the previous artifact, moved aside
  if (directory && exists &&
      renameat2(AT_FDCWD, temp_.c_str(), AT_FDCWD, destination_.c_str(), RENAME_EXCHANGE) == 0) {
    old = temp_;  // in one step, where the file system can
  } else {
    // Else an old directory moves aside first, in two renames that an interrupt does
    // not split (its cleanup takes the lock).
    std::unique_lock<std::mutex> lock(g_mutex, std::defer_lock);
    if (directory && exists) {
      lock.lock();
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
  }
  promoted_ = true;
  if (!old.empty()) fs::remove_all(old, ec);
  // Best effort: the artifact is in place, and some file systems refuse a directory's fsync.
  sync_path(directory_of(destination_), O_RDONLY | O_DIRECTORY);
}

WrittenOnInterrupt::WrittenOnInterrupt(Files files) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  on_interrupt()[this] = std::move(files);
}

WrittenOnInterrupt::~WrittenOnInterrupt() {
  const std::lock_guard<std::mutex> lock(g_mutex);
  on_interrupt().erase(this);
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

// The signal handler only wakes a thread of our own (a handler may only unlink, which
// left HF output directories behind), and that thread removes what runs in progress
// wrote. Not sigwait(): a thread that LibTorch's libraries start before main() does not
// block the signals, and the kernel may deliver them there.
void mq::install_interrupt_cleanup() {
  if (pipe2(detail::g_wake, O_CLOEXEC) != 0) return;  // no cleanup rather than no run
  std::thread([] {
    char byte = 0;
    ssize_t n;
    do n = read(detail::g_wake[0], &byte, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1) return;
    const std::lock_guard<std::mutex> lock(detail::g_mutex);
    for (const std::string& path : detail::pending()) {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
    for (const auto& [owner, files] : detail::on_interrupt())
      for (const auto& [path, text] : files) detail::write_on_interrupt(path, text);
    _exit(static_cast<int>(ExitCode::kInterrupted));
  }).detach();
  struct sigaction sa {};
  sa.sa_handler = detail::on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);  // SIGHUP: the terminal went away
}
