// Preloaded into mq-pipeline by the CLI test of a disk that fails to flush (EIO): every
// fsync fails.
#include <cerrno>

extern "C" __attribute__((visibility("default"))) int fsync(int) {
  errno = EIO;
  return -1;
}
