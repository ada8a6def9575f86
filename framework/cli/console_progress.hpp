#pragma once

#include <chrono>
#include <cstdio>
#include <string>

#include "mq/progress.hpp"

namespace mq::cli {

// Per-item progress on stderr: one rewritten line with rate and ETA on a terminal,
// plain lines otherwise (CI logs).
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
  std::chrono::steady_clock::time_point start_;
};

}  // namespace mq::cli
