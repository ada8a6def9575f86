// mq::hf and mq::check_json: what both formats' readers of HF checkpoints share.

#include <gtest/gtest.h>

#include "mq/hf_checkpoint.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;

std::string index_error(const std::string& text) {
  try {
    mq::hf::parse_index("i.json", text);
  } catch (const mq::InputError& e) {
    return e.what();
  }
  return "parsed";
}

TEST(HfCheckpoint, IndexesAreReadStrictlyWithShardsInFileOrder) {
  mq::test::ScratchDir dir("hf-index");
  mq::test::write_file(dir / "i.json", R"({"metadata": {}, "weight_map": {"b": "s-00002.bin", "a": "s-00001.bin", "c": "s-00002.bin"}})");
  mq::test::write_file(dir / "s-00001.bin", "");
  mq::test::write_file(dir / "s-00002.bin", "");
  const std::vector<mq::hf::Shard> shards = mq::hf::read_index(dir / "i.json");
  ASSERT_EQ(shards.size(), 2u);
  EXPECT_EQ(shards[0].path.filename(), "s-00001.bin");
  EXPECT_EQ(shards[0].tensors, std::vector<std::string>{"a"});
  EXPECT_EQ(shards[1].tensors, (std::vector<std::string>{"b", "c"}));

  EXPECT_EQ(index_error(R"({"weight_map": {"a": "x", "a": "y"}})"), "i.json: invalid index: duplicate key 'a'");
  EXPECT_EQ(index_error(R"({"weight_map": {}})"), "i.json: invalid index: no weight_map object listing tensors");
  EXPECT_EQ(index_error(R"({"weight_map": {"a": 1}})"), "i.json: invalid index: the shard of 'a' is not a string");
  EXPECT_EQ(index_error(R"({"weight_map": {"a": [[[["x"]]]]}})"), "i.json: invalid index: nested deeper than its schema");
  EXPECT_NE(index_error("{").find("i.json: invalid index: not valid UTF-8 JSON"), std::string::npos);
  mq::test::write_file(dir / "out.json", R"({"weight_map": {"a": "../s.bin"}})");
  EXPECT_THROW(mq::hf::read_index(dir / "out.json"), mq::InputError);
}

TEST(HfCheckpoint, ConfigSaysWhetherTheModelIsQuantized) {
  mq::test::ScratchDir dir("hf-config");
  EXPECT_EQ(mq::hf::quantized_config(dir.path()), "");  // no config.json
  mq::test::write_file(dir / "config.json", R"({"architectures": ["LlamaForCausalLM"]})");
  EXPECT_EQ(mq::hf::quantized_config(dir.path()), "");
  mq::test::write_file(dir / "config.json", R"({"quantization_config": {"quant_method": "awq"}})");
  EXPECT_EQ(mq::hf::quantized_config(dir.path()), "config.json has a quantization_config, quant_method 'awq'");
  mq::test::write_file(dir / "config.json", "[]");
  EXPECT_THROW(mq::hf::quantized_config(dir.path()), mq::InputError);
}

}  // namespace
