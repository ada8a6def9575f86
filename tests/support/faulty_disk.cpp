// Preloaded into mq-pipeline by the CLI tests of a failing disk: with MQ_TEST_FAIL=fsync
// every fsync fails (EIO), with MQ_TEST_FAIL=write every write to a file (a descriptor
// above stderr) fails as on a full disk (ENOSPC), with MQ_TEST_FAIL=large only writes of
// 1 MiB or more do, with MQ_TEST_FAIL=slow each write to a file first waits 0.2 s (a run
// to interrupt while it writes), with MQ_TEST_FAIL=slowread each read() does (a run to
// interrupt while it reads its model), with MQ_TEST_FAIL=exchange
// renameat2 refuses RENAME_EXCHANGE as file systems without it do (EINVAL). Everything
// else goes to the kernel.
#include <sys/syscall.h>
#include <sys/types.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>

struct iovec;
extern "C" long syscall(long number, ...) noexcept;

namespace {

bool failing(const char* what, int fd) {
  const char* mode = std::getenv("MQ_TEST_FAIL");
  return fd > 2 && mode && std::strcmp(mode, what) == 0;
}

void slow_down() {
  const timespec pause{0, 200'000'000};
  syscall(SYS_nanosleep, &pause, nullptr);
}

bool fails_write(int fd, size_t n) {
  if (failing("slow", fd)) slow_down();
  return failing("write", fd) || (failing("large", fd) && n >= (size_t{1} << 20));
}

}  // namespace

#define MQ_EXPORT extern "C" __attribute__((visibility("default")))

MQ_EXPORT int fsync(int fd) {
  if (failing("fsync", fd)) return errno = EIO, -1;
  return static_cast<int>(syscall(SYS_fsync, fd));
}

MQ_EXPORT ssize_t write(int fd, const void* data, size_t n) {
  if (fails_write(fd, n)) return errno = ENOSPC, -1;
  return syscall(SYS_write, fd, data, n);
}

MQ_EXPORT ssize_t writev(int fd, const iovec* parts, int count) {
  if (fails_write(fd, 0)) return errno = ENOSPC, -1;
  return syscall(SYS_writev, fd, parts, count);
}

MQ_EXPORT ssize_t pwrite(int fd, const void* data, size_t n, off_t at) {
  if (fails_write(fd, n)) return errno = ENOSPC, -1;
  return syscall(SYS_pwrite64, fd, data, n, at);
}

MQ_EXPORT ssize_t read(int fd, void* data, size_t n) {
  if (failing("slowread", fd)) slow_down();
  return syscall(SYS_read, fd, data, n);
}

MQ_EXPORT int renameat2(int from_dir, const char* from, int to_dir, const char* to, unsigned flags) {
  const char* mode = std::getenv("MQ_TEST_FAIL");
  if (mode && std::strcmp(mode, "exchange") == 0 && flags != 0) return errno = EINVAL, -1;
  return static_cast<int>(syscall(SYS_renameat2, from_dir, from, to_dir, to, flags));
}

MQ_EXPORT ssize_t pwrite64(int fd, const void* data, size_t n, off_t at) { return pwrite(fd, data, n, at); }
