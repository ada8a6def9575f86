// mq-pipeline's progress lines, as a CI log gets them (not a terminal).

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "console_progress.hpp"
#include "test_support.hpp"

namespace {

std::string read_and_close(std::FILE* log) {
  std::rewind(log);
  std::string text;
  for (int c; (c = std::fgetc(log)) != EOF;) text += static_cast<char>(c);
  std::fclose(log);
  return text;
}

// A model of 100,000 tensors gets a line for its first and last, and at most one a
// second between them, not 100,000.
TEST(ConsoleProgress, PlainLinesAreTheFirstTheLastAndOneASecond) {
  std::FILE* log = std::tmpfile();
  ASSERT_NE(log, nullptr);
  const auto start = std::chrono::steady_clock::now();
  {
    mq::cli::ConsoleProgress progress(log);
    progress.begin("quantize", 100000, 100000 * 1000);
    for (int i = 0; i < 100000; ++i) progress.advance("t" + std::to_string(i), 1000);
    progress.end();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string text = read_and_close(log);
  // The first item's rate is not measured yet: none shown.
  EXPECT_EQ(text.rfind("quantize [1/100000] t0\n", 0), 0u) << text;
  EXPECT_NE(text.find(" MB/s ETA 0s t99999\n"), std::string::npos) << text;
  EXPECT_LE(mq::test::count_lines(text), 2 + static_cast<int>(seconds)) << text.substr(0, 2000);
}

// A stage that does not know its bytes up front (total 0) gets its ETA from the items,
// never a negative one.
TEST(ConsoleProgress, EtaWithoutATotalOfBytesComesFromTheItems) {
  std::FILE* log = std::tmpfile();
  ASSERT_NE(log, nullptr);
  {
    mq::cli::ConsoleProgress progress(log);
    progress.begin("calibrate", 2, 0);
    progress.advance("batch 0", 4096);
    progress.advance("batch 1", 4096);
    progress.end();
  }
  const std::string text = read_and_close(log);
  EXPECT_EQ(text.find('-'), std::string::npos) << text;
  EXPECT_NE(text.find(" ETA 0s batch 1\n"), std::string::npos) << text;
}

}  // namespace
