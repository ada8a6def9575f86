#pragma once

#include <chrono>
#include <cstdio>
#include <string>

#include "mq/progress.hpp"

namespace mq::cli {

// Progress on stderr, with rate and ETA: one line rewritten on a terminal, plain lines
// otherwise (CI logs); the first and last items, and at most ten updates a second on a
// terminal and one line a second otherwise between them.
class ConsoleProgress final : public Progress {
 public:
  explicit ConsoleProgress(std::FILE* out);
  void begin(const std::string& stage, int64_t total_items, int64_t total_bytes) override;
  void advance(const std::string& item, int64_t bytes) override;
  void end() override;

 private:
  std::FILE* out_;
  bool terminal_;
  std::string stage_;
  int64_t total_items_ = 0, total_bytes_ = 0, items_ = 0, bytes_ = 0;
  std::chrono::steady_clock::time_point start_, shown_;
};

}  // namespace mq::cli
