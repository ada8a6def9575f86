#include "console_progress.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>

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
  // The first and last items, and between them at most ten redraws a second on a
  // terminal and a line a second otherwise: a model may have 100,000 tensors.
  const auto now = std::chrono::steady_clock::now();
  const auto every = terminal_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(1000);
  if (items_ != 1 && items_ != total_items_ && now - shown_ < every) return;
  shown_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? bytes_ / elapsed : 0.0;
  // From the bytes when their total is known, else from the items (a stage may not know
  // its bytes up front); never below zero, whatever a plugin reports.
  const bool by_bytes = total_bytes_ > 0;
  const double done = by_bytes ? bytes_ : items_, total = by_bytes ? total_bytes_ : total_items_;
  const double eta = done > 0 ? std::max(0.0, elapsed * (total - done) / done) : 0.0;
  // A rate and an ETA from the first moments of a stage say nothing (the first item of
  // a model read from the page cache came out at 288,704.8 MB/s): shown from a quarter
  // of a second on, and for the last item (the stage's average).
  const bool measured = elapsed >= 0.25 || items_ == total_items_;
  const std::string line =
      measured ? fmt::format("{} [{}/{}] {:.1f} MB/s ETA {:.0f}s {}", stage_, items_, total_items_, rate / 1e6, eta, item)
               : fmt::format("{} [{}/{}] {}", stage_, items_, total_items_, item);
  if (terminal_) {
    fmt::print(out_, "\r\033[K{}", line);
    std::fflush(out_);
  } else {
    fmt::print(out_, "{}\n", line);
  }
}

void ConsoleProgress::end() {
  if (terminal_ && items_ > 0) fmt::print(out_, "\r\033[K");
  std::fflush(out_);
}

}  // namespace mq::cli
