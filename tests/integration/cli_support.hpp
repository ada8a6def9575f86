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

// A Hugging Face Llama directory of one block (hidden 8, vocab 20) that the llama
// architecture runs: model.safetensors and config.json.
inline void write_tiny_llama(const std::filesystem::path& dir) {
  at::manual_seed(1);
  const int64_t hidden = 8, vocab = 20, inner = 16;
  mq::test::write_safetensors(dir / "model.safetensors",
                              {{"model.embed_tokens.weight", at::randn({vocab, hidden})},
                               {"model.layers.0.input_layernorm.weight", at::ones({hidden})},
                               {"model.layers.0.post_attention_layernorm.weight", at::ones({hidden})},
                               {"model.layers.0.self_attn.q_proj.weight", at::randn({hidden, hidden})},
                               {"model.layers.0.self_attn.k_proj.weight", at::randn({4, hidden})},
                               {"model.layers.0.self_attn.v_proj.weight", at::randn({4, hidden})},
                               {"model.layers.0.self_attn.o_proj.weight", at::randn({hidden, hidden})},
                               {"model.layers.0.mlp.gate_proj.weight", at::randn({inner, hidden})},
                               {"model.layers.0.mlp.up_proj.weight", at::randn({inner, hidden})},
                               {"model.layers.0.mlp.down_proj.weight", at::randn({hidden, inner})},
                               {"model.norm.weight", at::ones({hidden})},
                               {"lm_head.weight", at::randn({vocab, hidden})}});
  mq::test::write_file(dir / "config.json", R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 20,
    "intermediate_size": 16, "rms_norm_eps": 1e-5})");
}

inline void expect_old_artifact_kept(const mq::test::ScratchDir& dir, const std::filesystem::path& artifact) {
  EXPECT_TRUE(mq::test::read_file(artifact) == "earlier good artifact");
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".mq-tmp"), std::string::npos) << e.path();
}

}  // namespace mq::test::cli
