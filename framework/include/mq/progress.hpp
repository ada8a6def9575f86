#pragma once
// Progress of long work, reported per item. The runner shows it on a terminal with
// rate and ETA, or as plain lines otherwise.

#include <cstdint>
#include <string>

#include "mq/export.hpp"

namespace mq {

class MQ_API Progress {
 public:
  virtual ~Progress();
  virtual void begin(const std::string& stage, int64_t total_items, int64_t total_bytes) = 0;
  virtual void advance(const std::string& item, int64_t bytes) = 0;
  virtual void end() = 0;
};

// Reports nothing.
class MQ_API NullProgress final : public Progress {
 public:
  void begin(const std::string&, int64_t, int64_t) override {}
  void advance(const std::string&, int64_t) override {}
  void end() override {}
};

}  // namespace mq
