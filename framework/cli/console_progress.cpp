#include "console_progress.hpp"

#include <fmt/format.h>
#include <unistd.h>

namespace mq::cli {

ConsoleProgress::ConsoleProgress(std::FILE* out) : out_(out), terminal_(isatty(fileno(out))) {}

void ConsoleProgress::begin(const std::string& stage, int64_t total_items, int64_t total_bytes) {
  stage_ = stage;
  total_items_ = total_items;
  total_bytes_ = total_bytes;
  items_ = bytes_ = 0;
  start_ = std::chrono::steady_clock::now();
}

void ConsoleProgress::advance(const std::string& item, int64_t bytes) {
  ++items_;
  bytes_ += bytes;
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = elapsed > 0 ? bytes_ / elapsed : 0.0;
  const std::string counter = fmt::format("[{}/{}]", items_, total_items_);
  if (!terminal_) {
    fmt::print(out_, "{} {} {}\n", stage_, counter, item);
    return;
  }
  const double eta = rate > 0 ? (total_bytes_ - bytes_) / rate : 0.0;
  fmt::print(out_, "\r\033[K{} {} {:.1f} MB/s ETA {:.0f}s {}", stage_, counter, rate / 1e6, eta,
             item);
  std::fflush(out_);
}

void ConsoleProgress::end() {
  if (terminal_ && items_ > 0) fmt::print(out_, "\r\033[K");
  std::fflush(out_);
}

}  // namespace mq::cli
