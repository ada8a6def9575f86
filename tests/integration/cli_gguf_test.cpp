// GGUF as a user makes it: mq-pipeline run on a Hugging Face Llama directory with a
// llama.cpp type, validated, inspected and validated again from the file; and each plan
// it cannot write refused before any work, one line, exit 2, nothing written.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_support.hpp"

namespace {

namespace fs = std::filesystem;
using mq::test::cli::expect_one_line_error;
using mq::test::run_pipeline;

void write_recipe(const mq::test::ScratchDir& dir, const std::string& dtype, const std::string& format = "gguf") {
  mq::test::write_file(dir / "recipe.yaml", R"(version: 1
model: {path: llama}
quantizer: {plugin: dynamic, options: {dtype: )" + dtype + R"(}}
format: {plugin: )" + format + R"(, output: out/llama.gguf}
validators: [{plugin: sqnr, options: {min_db: 20}}, {plugin: size}, {plugin: load_run}, {plugin: range}]
)");
}

TEST(CliGguf, AnHfLlamaBecomesAGgufFileThatInspectsAndValidates) {
  mq::test::ScratchDir dir("cli-gguf");
  mq::test::write_tiny_llama(dir / "llama", 32);
  mq::test::write_byte_level_tokenizer(dir / "llama");
  write_recipe(dir, "q4_0");
  const auto run = run_pipeline("run --json recipe.yaml", dir.path());
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto report = nlohmann::json::parse(run.out);
  EXPECT_EQ(report["status"], 0);
  // q/k/v/o and the MLP: 7 Linears of one block; lm_head and the embedding stay float.
  int quantized = 0;
  for (const auto& row : report["layers"]) quantized += row["spec"].is_string() && row["spec"] == "q4_0";
  EXPECT_EQ(quantized, 7) << report["layers"].dump();
  ASSERT_TRUE(fs::exists(dir / "out" / "llama.gguf"));
  for (const auto& e : fs::directory_iterator(dir / "out")) EXPECT_EQ(e.path().filename(), "llama.gguf");

  const auto inspect = run_pipeline("inspect out/llama.gguf", dir.path());
  ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
  EXPECT_NE(inspect.out.find("model.layers.0.mlp.down_proj.weight"), std::string::npos) << inspect.out;
  EXPECT_NE(inspect.out.find("q4_0"), std::string::npos) << inspect.out;
  const auto validate = run_pipeline("validate out/llama.gguf --reference llama --validators sqnr,range", dir.path());
  EXPECT_EQ(validate.exit_code, 0) << validate.err << validate.out;
  const auto verify = run_pipeline("verify out/llama.gguf", dir.path());  // the recipe it records, run again
  EXPECT_EQ(verify.exit_code, 0) << verify.err;
  EXPECT_NE(verify.out.find("identical: 12 tensors"), std::string::npos) << verify.out;

  // The original is not run when its artifact will not be (a forward pass of a large
  // model costs its size in memory traffic): a model.input that does not fit is not
  // even tried, where a format whose artifacts run refuses it before any work.
  const auto no_forward = run_pipeline("run recipe.yaml --set 'model.input={shape: [2, 3, 4]}'", dir.path());
  EXPECT_EQ(no_forward.exit_code, 0) << no_forward.err;
  const auto runs = run_pipeline("check recipe.yaml --set 'model.input={shape: [2, 3, 4]}' --set quantizer.options.dtype=int8 "
                                 "--set format='{plugin: safetensors, output: out/llama.int8}'", dir.path());
  EXPECT_EQ(runs.exit_code, 2) << runs.err;
  EXPECT_NE(runs.err.find("model.input of shape [2, 3, 4] does not fit the model"), std::string::npos) << runs.err;
}

// The imatrix quantizer: calibration text runs the model, each Linear's k-quant weight
// is weighted by its inputs' mean squares, and the report says by how much its weighted
// error fell; without calibration, or without a k-quant to weight, it says what it needs.
TEST(CliGguf, ImportanceWeightedKQuantsFromCalibrationText) {
  mq::test::ScratchDir dir("cli-gguf-imatrix");
  mq::test::write_tiny_llama(dir / "llama", 256);
  mq::test::write_byte_level_tokenizer(dir / "llama");
  mq::test::write_file(dir / "calib.txt", "ab a ab b a\nba ab a\nb b ab a\n");
  mq::test::write_file(dir / "recipe.yaml", R"(version: 1
model: {path: llama}
calibration: {text: {path: calib.txt, samples: 2, seq_len: 8}}
quantizer: {plugin: imatrix, options: {dtype: q4_k}}
format: {plugin: gguf, output: out/llama.gguf}
validators: [{plugin: load_run}]
)");
  // The k-quants and the 32-value types alike (llama.cpp's quantize_row_*_impl).
  for (const std::string dtype : {"q4_k", "q4_0", "q5_1"}) {
    const auto run = run_pipeline("run --json recipe.yaml --set quantizer.options.dtype=" + dtype, dir.path());
    ASSERT_EQ(run.exit_code, 0) << run.err;
    const auto report = nlohmann::json::parse(run.out);
    int weighted = 0;
    for (const auto& row : report["layers"]) {
      const std::string rule = row["rule"];
      const size_t at = rule.find("importance-weighted: error ");
      if (at == std::string::npos) continue;
      ++weighted;
      EXPECT_LT(std::stod(rule.substr(at + 27)), 1.0) << rule;
    }
    EXPECT_EQ(weighted, 7) << dtype << report["layers"].dump();
    EXPECT_TRUE(fs::exists(dir / "out" / "llama.gguf"));
  }

  const auto uncalibrated = run_pipeline("check recipe.yaml --set calibration=null", dir.path());
  EXPECT_EQ(uncalibrated.exit_code, 2);
  EXPECT_NE(uncalibrated.err.find("imatrix needs calibration data"), std::string::npos) << uncalibrated.err;
  const auto nothing_to_weight = run_pipeline("check recipe.yaml --set quantizer.options.dtype=q8_0", dir.path());
  EXPECT_EQ(nothing_to_weight.exit_code, 2);
  EXPECT_NE(nothing_to_weight.err.find("imatrix weights llama.cpp's types"), std::string::npos) << nothing_to_weight.err;
}

TEST(CliGguf, PlansItCannotWriteAreRefusedBeforeAnyWork) {
  mq::test::ScratchDir dir("cli-gguf-refusals");
  mq::test::write_tiny_llama(dir / "llama", 32);
  mq::test::write_byte_level_tokenizer(dir / "llama");
  const auto refused = [&](const std::string& part) {
    for (const std::string command : {"check recipe.yaml", "run recipe.yaml"}) {
      const auto r = run_pipeline(command, dir.path());
      EXPECT_EQ(r.exit_code, 2) << command << ": " << r.err;
      expect_one_line_error(r);
      EXPECT_NE(r.err.find(part), std::string::npos) << r.err;
      EXPECT_FALSE(fs::exists(dir / "out")) << command;
    }
  };
  write_recipe(dir, "q4_0", "safetensors");
  refused("format 'safetensors' cannot store q4_0");
  write_recipe(dir, "int8");
  refused("format 'gguf' stores llama.cpp's types");
  mq::test::write_file(dir / "recipe.yaml", R"(version: 1
model: {path: llama}
quantizer: {plugin: dynamic, options: {dtype: q8_0, group_size: 64}}
format: {plugin: gguf, output: out/llama.gguf}
)");
  refused("q8_0 is per_group(32) by definition");
  fs::remove_all(dir / "llama");
  mq::test::write_tiny_llama(dir / "llama", 8);  // rows of 8 values: not a block of 32
  mq::test::write_byte_level_tokenizer(dir / "llama");
  write_recipe(dir, "q5_1");
  refused("model.layers.0.self_attn.q_proj.weight: q5_1 needs rows of a multiple of 32 values, it has 8");
}

}  // namespace
