#pragma once
// What the mq-pipeline integration tests share: the example recipe, one-line errors, a
// failing disk.

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include <ATen/ATen.h>

#include "test_support.hpp"

namespace mq::test::cli {

inline const std::string kExample = std::string(MQ_SOURCE_DIR) + "/configs/example-dynamic-int8.yaml";

// The example recipe with its outputs redirected into `dir`.
inline std::string example_args(const mq::test::ScratchDir& dir, const std::string& extra = "") {
  return "run '" + kExample + "' --set format.output='" + (dir / "out.safetensors").string() +
         "' --set report='" + (dir / "report.json").string() + "' --set html_report='" +
         (dir / "report.html").string() + "' " + extra;
}

inline void expect_one_line_error(const mq::test::CommandResult& r) {
  EXPECT_EQ(r.err.rfind("mq-pipeline: error: ", 0), 0u) << r.err;
  EXPECT_EQ(mq::test::count_lines(r.err), 1) << r.err;
}

// The environment that preloads a failing disk (tests/support/faulty_disk.cpp).
inline std::string faulty_disk(const std::string& failing) {
  return "LD_PRELOAD='" MQ_FAULTY_DISK_LIB "' ASAN_OPTIONS=verify_asan_link_order=0 MQ_TEST_FAIL=" + failing;
}

using mq::test::write_tiny_llama;

inline void expect_old_artifact_kept(const mq::test::ScratchDir& dir, const std::filesystem::path& artifact) {
  EXPECT_TRUE(mq::test::read_file(artifact) == "earlier good artifact");
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".mq-tmp"), std::string::npos) << e.path();
}

}  // namespace mq::test::cli
