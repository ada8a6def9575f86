// mq-pipeline init: each preset's recipe runs as written on each kind of model it takes.

#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "cli_support.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using mq::test::run_pipeline;

const fs::path kModels = fs::path(MQ_SOURCE_DIR) / "configs" / "models";

// `init MODEL --preset PRESET -o DIR/recipe.yaml EXTRA`, then `run` on what it wrote.
struct InitRun {
  mq::test::CommandResult init, run;
};
InitRun init_and_run(const mq::test::ScratchDir& dir, const fs::path& model, const std::string& preset,
                     const std::string& extra = "") {
  const fs::path recipe = dir / (preset + ".yaml");
  InitRun r;
  r.init = run_pipeline("init '" + model.string() + "' --preset " + preset + " -o '" + recipe.string() + "' " + extra);
  if (r.init.exit_code == 0) r.run = run_pipeline("run -q --json '" + recipe.string() + "'");
  return r;
}

TEST(Init, ListsThePresets) {
  const auto r = run_pipeline("init --list --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> names;
  for (const auto& p : nlohmann::json::parse(r.out)) names.push_back(p["name"]);
  EXPECT_EQ(names, (std::vector<std::string>{"w8a8-dynamic", "w8a8-static", "int4-weight-only", "fp16", "gguf-q8_0",
                                             "gguf-q4_k_m", "gguf-q5_k_m"}));
}

// Every preset on TorchScript models (an MLP, a CNN, a transformer block): the recipe
// runs, its validators pass, and the artifact is where the recipe says.
TEST(Init, EveryPresetRunsOnTorchScriptModels) {
  for (const char* model : {"mlp.pt", "cnn.pt", "transformer.pt"})
    for (const char* preset : {"w8a8-dynamic", "w8a8-static", "int4-weight-only", "fp16"}) {
      SCOPED_TRACE(std::string(model) + " " + preset);
      mq::test::ScratchDir dir("init-torchscript");
      const InitRun r = init_and_run(dir, kModels / model, preset, "--trust-torchscript");
      ASSERT_EQ(r.init.exit_code, 0) << r.init.err;
      ASSERT_EQ(r.run.exit_code, 0) << r.run.err;
      const auto report = nlohmann::json::parse(r.run.out);
      EXPECT_TRUE(report["output"]["promoted"].get<bool>());
      EXPECT_EQ(fs::path(report["output"]["path"].get<std::string>()).parent_path(), dir / "out");
      EXPECT_EQ(report["validators"].size(), 4u);
      for (const auto& v : report["validators"]) EXPECT_TRUE(v["passed"].get<bool>()) << v.dump();
    }
}

// Checkpoints (a safetensors file, an HF directory): every preset but the static one,
// which needs a model that runs and says so.
TEST(Init, PresetsOnCheckpointsRunOrSayWhyNot) {
  mq::test::ScratchDir models("init-models");
  mq::test::write_hf_directory(models / "llama");
  for (const fs::path& model : {kModels / "mlp.safetensors", models / "llama"}) {
    for (const char* preset : {"w8a8-dynamic", "int4-weight-only", "fp16"}) {
      SCOPED_TRACE(model.string() + " " + preset);
      mq::test::ScratchDir dir("init-checkpoint");
      const InitRun r = init_and_run(dir, model, preset);
      ASSERT_EQ(r.init.exit_code, 0) << r.init.err;
      EXPECT_EQ(r.run.exit_code, 0) << r.run.err;
    }
    mq::test::ScratchDir dir("init-checkpoint");
    const InitRun r = init_and_run(dir, model, "w8a8-static");
    EXPECT_EQ(r.init.exit_code, 2);
    EXPECT_NE(r.init.err.find("preset 'w8a8-static' calibrates by running the model"), std::string::npos) << r.init.err;
    EXPECT_FALSE(fs::exists(dir / "w8a8-static.yaml"));
  }
  // The HF directory's artifact is an HF directory, lm_head kept in float.
  mq::test::ScratchDir dir("init-hf");
  const InitRun r = init_and_run(dir, models / "llama", "int4-weight-only");
  ASSERT_EQ(r.run.exit_code, 0) << r.run.err;
  EXPECT_TRUE(fs::exists(dir / "out/llama.int4-weight-only/config.json"));
  int rows = 0;
  const auto report = nlohmann::json::parse(r.run.out);
  for (const auto& row : report["layers"])
    if (row["tensor"] == "lm_head.weight") rows += row["spec"].is_null();
  EXPECT_EQ(rows, 1) << r.run.out;
}

// A Llama directory the llama architecture runs (one block, GQA): w8a8-static calibrates
// it on random token ids as written, and the other presets run with the forward passes
// their validators make.
TEST(Init, EveryPresetRunsOnAnHfDirectoryMqRuns) {
  mq::test::ScratchDir models("init-llama");
  const fs::path dir = models / "tiny-llama";
  mq::test::cli::write_tiny_llama(dir);
  for (const char* preset : {"w8a8-static", "w8a8-dynamic", "int4-weight-only", "fp16"}) {
    SCOPED_TRACE(preset);
    mq::test::ScratchDir out("init-llama-run");
    const InitRun r = init_and_run(out, dir, preset);
    ASSERT_EQ(r.init.exit_code, 0) << r.init.err;
    EXPECT_NE(mq::test::read_file(out / (std::string(preset) + ".yaml")).find("input: {shape: [8, 16], vocab_size: 20}"),
              std::string::npos);
    ASSERT_EQ(r.run.exit_code, 0) << r.run.err;
    const auto report = nlohmann::json::parse(r.run.out);
    EXPECT_EQ(report["model_changes"][0].get<std::string>().rfind("runs on architecture 'llama' (", 0), 0u);
    if (std::string(preset) == "w8a8-static") {
      EXPECT_TRUE(fs::exists(out / "out/tiny-llama.w8a8-static/model.safetensors"));
    }
  }
}

// The GGUF presets on a Llama directory (hidden 256: rows of whole k-quant super-blocks,
// with a tokenizer.json): llama.cpp's mixes written out as overrides, run as written (that
// llama.cpp makes the same file: interop_gguf); on anything but an HF directory of
// model.layers.N blocks, refused by name, nothing written.
TEST(Init, GgufPresetsWriteLlamaCppsMixesAndRun) {
  mq::test::ScratchDir models("init-gguf");
  mq::test::write_tiny_llama(models / "llama", 256);
  mq::test::write_byte_level_tokenizer(models / "llama");
  for (const char* preset : {"gguf-q8_0", "gguf-q4_k_m", "gguf-q5_k_m"}) {
    SCOPED_TRACE(preset);
    mq::test::ScratchDir dir("init-gguf-run");
    const InitRun r = init_and_run(dir, models / "llama", preset);
    ASSERT_EQ(r.init.exit_code, 0) << r.init.err;
    ASSERT_EQ(r.run.exit_code, 0) << r.run.err;
    EXPECT_TRUE(fs::exists(dir / ("out/llama." + std::string(preset) + ".gguf")));
    const std::string text = mq::test::read_file(dir / (std::string(preset) + ".yaml"));
    // One block: the last eighth is block 0, whose attn_v and ffn_down get q6_k in _K_M.
    const bool mix = std::string(preset) != "gguf-q8_0";
    EXPECT_EQ(text.find("model.layers.0.self_attn.v_proj: {dtype: q6_k}") != std::string::npos, mix) << text;
    EXPECT_EQ(text.find("lm_head: {dtype: q6_k}") != std::string::npos, mix) << text;
  }
  mq::test::ScratchDir dir("init-gguf-refused");
  const InitRun r = init_and_run(dir, kModels / "mlp.safetensors", "gguf-q4_k_m");
  EXPECT_EQ(r.init.exit_code, 2);
  EXPECT_NE(r.init.err.find("preset 'gguf-q4_k_m' writes GGUF of Hugging Face Llama-family directories"),
            std::string::npos) << r.init.err;
  EXPECT_FALSE(fs::exists(dir / "gguf-q4_k_m.yaml"));
}

// What the written recipe says: the model path relative to it, the trust it was given,
// comments; an existing recipe is kept unless --force.
TEST(Init, WritesACommentedRecipeAndKeepsAnExistingOne) {
  mq::test::ScratchDir dir("init-text");
  mq::test::write_file(dir / "models/mlp.pt", mq::test::read_file(kModels / "mlp.pt"));
  const auto r = run_pipeline("init '" + (dir / "models/mlp.pt").string() + "' --trust-torchscript -o '" +
                              (dir / "recipe.yaml").string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string text = mq::test::read_file(dir / "recipe.yaml");
  EXPECT_NE(text.find("path: \"models/mlp.pt\"  # relative to this file"), std::string::npos) << text;
  EXPECT_NE(text.find("options: {trust_torchscript: true}"), std::string::npos) << text;
  EXPECT_NE(text.find("input: {shape: [8, 64]}  # guessed from the first layer"), std::string::npos) << text;
  EXPECT_NE(text.find("plugin: dynamic"), std::string::npos) << text;  // w8a8-dynamic, the default
  EXPECT_NE(text.find("plugin: pt\n  output: \"out/mlp.w8a8-dynamic.pt\""), std::string::npos) << text;

  const auto again = run_pipeline("init '" + (dir / "models/mlp.pt").string() + "' --preset fp16 -o '" +
                                  (dir / "recipe.yaml").string() + "' --trust-torchscript");
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("exists; give another -o or --force"), std::string::npos) << again.err;
  EXPECT_EQ(mq::test::read_file(dir / "recipe.yaml"), text);
  const auto forced = run_pipeline("init '" + (dir / "models/mlp.pt").string() + "' --preset fp16 -o '" +
                                   (dir / "recipe.yaml").string() + "' --trust-torchscript --force");
  EXPECT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_NE(mq::test::read_file(dir / "recipe.yaml").find("dtype: fp16"), std::string::npos);
}

TEST(Init, BadRequestsAreOneLineErrors) {
  mq::test::ScratchDir dir("init-bad");
  const auto expect = [&](const std::string& args, int code, const std::string& message) {
    const auto r = run_pipeline("init " + args + " -o '" + (dir / "r.yaml").string() + "'");
    EXPECT_EQ(r.exit_code, code) << args << ": " << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_EQ(mq::test::count_lines(r.err), 1) << r.err;
    EXPECT_FALSE(fs::exists(dir / "r.yaml"));
  };
  const std::string mlp = "'" + (kModels / "mlp.pt").string() + "'";
  expect(mlp + " --preset w8a8", 2, "unknown preset 'w8a8'; presets are w8a8-dynamic, w8a8-static");
  expect(mlp, 3, "--trust-torchscript");
  expect("'" + (dir / "none.pt").string() + "'", 3, "no such file or directory");
  expect("'" + (kModels / "mlp.safetensors").string() + "' --input-shape 8,64", 2, "--input-shape is for models");
  expect("", 2, "init: give a model, or --list");
}

}  // namespace
