// Mixed precision as a user runs it: a Hugging Face Llama, a size target, the plan in
// the dry run, the artifact within the target with one spec for the layers vLLM fuses,
// the conformance validator on it (and on a config edited to load otherwise), the
// sensitivity table reused by the next target, and targets that cannot be met refused.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "cli_support.hpp"

namespace {

namespace fs = std::filesystem;
using mq::test::cli::expect_one_line_error;
using mq::test::read_file;
using mq::test::run_pipeline;

void write_recipe(const mq::test::ScratchDir& dir, const std::string& target) {
  mq::test::write_file(dir / "recipe.yaml", R"(version: 1
model: {path: llama}
calibration: {random: {shape: [2, 12], batches: 2, vocab_size: 20}}
quantizer: {plugin: dynamic, options: {dtype: int4, group_size: 32}}
target: )" + target + R"(
format: {plugin: safetensors, output: out}
validators: [{plugin: conformance}]
)");
}

// Bits a weight over the rows the target chose for (float32 originals: 4 bytes each).
double planned_bits(const nlohmann::json& report) {
  double bits = 0, weights = 0;
  for (const auto& row : report["layers"])
    if (row["rule"].get<std::string>().find("target:") != std::string::npos) {
      bits += 8.0 * row["bytes_after"].get<double>();
      weights += row["bytes_before"].get<double>() / 4;
    }
  return weights ? bits / weights : 0;
}

TEST(CliMixed, ASizeTargetGivesAPlanWithinItThatLoadersResolveAsWritten) {
  mq::test::ScratchDir dir("cli-mixed");
  mq::test::write_tiny_llama(dir / "llama", 64);
  write_recipe(dir, "{bits_per_weight: 6, sensitivity: output}");

  const auto dry = run_pipeline("run --dry-run recipe.yaml", dir.path());
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_NE(dry.out.find("target: bits_per_weight 6: "), std::string::npos) << dry.out;
  EXPECT_NE(dry.out.find("model: runs on architecture 'llama' (LlamaForCausalLM, 1 block)"), std::string::npos) << dry.out;
  EXPECT_NE(dry.out.find("target: est. KL"), std::string::npos) << dry.out;
  const auto inspected = run_pipeline("inspect --json llama", dir.path());
  ASSERT_EQ(inspected.exit_code, 0) << inspected.err;
  const auto architecture = nlohmann::json::parse(inspected.out)["architecture"];
  EXPECT_TRUE(architecture["runs"].get<bool>());
  EXPECT_EQ(architecture["summary"], "architecture 'llama' (LlamaForCausalLM, 1 block)");
  EXPECT_FALSE(fs::exists(dir / "out"));
  EXPECT_FALSE(fs::exists(dir / "out.sensitivity.json"));  // a dry run writes nothing

  const auto run = run_pipeline("run --json recipe.yaml", dir.path());
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto report = nlohmann::json::parse(run.out);
  EXPECT_LE(planned_bits(report), 6.0);
  EXPECT_GT(planned_bits(report), 4.0);  // the budget is spent, not left: int4 g32 alone is ~4.5
  EXPECT_NE(report["target"].get<std::string>().find("measured"), std::string::npos) << report["target"];
  EXPECT_TRUE(report["validators"][0]["passed"]) << report["validators"].dump();
  std::map<std::string, std::string> spec;
  for (const auto& row : report["layers"]) spec[row["tensor"]] = row["spec"].is_string() ? row["spec"].get<std::string>() : "";
  const std::string p = "model.layers.0.";
  EXPECT_EQ(spec[p + "self_attn.q_proj.weight"], spec[p + "self_attn.k_proj.weight"]);
  EXPECT_EQ(spec[p + "self_attn.q_proj.weight"], spec[p + "self_attn.v_proj.weight"]);
  EXPECT_EQ(spec[p + "mlp.gate_proj.weight"], spec[p + "mlp.up_proj.weight"]);
  ASSERT_TRUE(fs::exists(dir / "out.sensitivity.json"));

  // A config edited so that vLLM would load q_proj's scheme for k_proj and v_proj too.
  nlohmann::ordered_json config = nlohmann::ordered_json::parse(read_file(dir / "out" / "config.json"));
  auto& groups = config["quantization_config"]["config_groups"];
  ASSERT_GE(groups.size(), 2u) << groups.dump();
  auto& first = groups.begin().value()["targets"];
  auto& other = (++groups.begin()).value()["targets"];
  std::string moved;
  for (auto it = first.begin(); it != first.end(); ++it)
    if (it->get<std::string>().find("proj") != std::string::npos) {
      moved = it->get<std::string>();
      other.push_back(moved);
      first.erase(it);
      break;
    }
  ASSERT_FALSE(moved.empty());
  std::ofstream(dir / "out" / "config.json") << config.dump(2);
  const auto validate = run_pipeline("validate out --reference llama --validators conformance", dir.path());
  EXPECT_EQ(validate.exit_code, 5) << validate.err << validate.out;
  EXPECT_NE(validate.out.find(moved + ": written"), std::string::npos) << validate.out;

  // Another target re-plans from the table, measuring nothing.
  const auto again = run_pipeline("run --json recipe.yaml --set target.bits_per_weight=9", dir.path());
  ASSERT_EQ(again.exit_code, 0) << again.err;
  const auto second = nlohmann::json::parse(again.out);
  EXPECT_NE(second["target"].get<std::string>().find("read from out.sensitivity.json"), std::string::npos)
      << second["target"];
  EXPECT_LE(planned_bits(second), 9.0);
  EXPECT_GT(planned_bits(second), planned_bits(report));
}

TEST(CliMixed, TargetsThatCannotBeMetAreRefusedBeforeAnyWork) {
  mq::test::ScratchDir dir("cli-mixed-refused");
  mq::test::write_tiny_llama(dir / "llama", 64);
  write_recipe(dir, "{bits_per_weight: 2}");
  const auto low = run_pipeline("run recipe.yaml", dir.path());
  EXPECT_EQ(low.exit_code, 2) << low.err;
  expect_one_line_error(low);
  EXPECT_NE(low.err.find("target bits_per_weight 2 cannot be met: the smallest candidates give"), std::string::npos)
      << low.err;
  EXPECT_FALSE(fs::exists(dir / "out"));
  EXPECT_FALSE(fs::exists(dir / "out.sensitivity.json"));  // refused on bytes alone, before measuring

  const auto kl = run_pipeline("run recipe.yaml --set 'target={max_kl: 0.01}'", dir.path());
  EXPECT_EQ(kl.exit_code, 2) << kl.err;
  EXPECT_NE(kl.err.find("set target.sensitivity: output"), std::string::npos) << kl.err;
  const auto tiny_kl = run_pipeline("run recipe.yaml --set 'target={max_kl: 1e-12, sensitivity: output}'", dir.path());
  EXPECT_EQ(tiny_kl.exit_code, 2) << tiny_kl.err;
  EXPECT_NE(tiny_kl.err.find("cannot be met: the largest candidates give an estimated KL"), std::string::npos)
      << tiny_kl.err;
  EXPECT_TRUE(fs::exists(dir / "out.sensitivity.json"));  // what was measured serves the next try
  const auto blocks = run_pipeline("run recipe.yaml --set 'target.candidates=[{dtype: q4_0}, {dtype: int8}]'", dir.path());
  EXPECT_EQ(blocks.exit_code, 2) << blocks.err;
  EXPECT_NE(blocks.err.find("q4_0 is a llama.cpp block type"), std::string::npos) << blocks.err;
  const auto no_calibration = run_pipeline(
      "run recipe.yaml --set calibration=null --set 'target={bits_per_weight: 6, sensitivity: output}'", dir.path());
  EXPECT_EQ(no_calibration.exit_code, 2) << no_calibration.err;
  EXPECT_NE(no_calibration.err.find("set calibration in the recipe"), std::string::npos) << no_calibration.err;
  EXPECT_FALSE(fs::exists(dir / "out"));
}

TEST(CliMixed, AMaxKlTargetGivesTheSmallestPlanWithinIt) {
  mq::test::ScratchDir dir("cli-mixed-kl");
  mq::test::write_tiny_llama(dir / "llama", 64);
  write_recipe(dir, "{max_kl: 0.5, sensitivity: output}");
  const auto loose = run_pipeline("run --dry-run --json recipe.yaml", dir.path());
  ASSERT_EQ(loose.exit_code, 0) << loose.err;
  const auto strict = run_pipeline("run --dry-run --json recipe.yaml --set target.max_kl=0.02", dir.path());
  ASSERT_EQ(strict.exit_code, 0) << strict.err;
  const double loose_bits = planned_bits(nlohmann::json::parse(loose.out));
  const double strict_bits = planned_bits(nlohmann::json::parse(strict.out));
  EXPECT_LT(loose_bits, strict_bits);
  EXPECT_NE(nlohmann::json::parse(strict.out)["target"].get<std::string>().find("max_kl 0.02: "), std::string::npos);
}

}  // namespace

namespace {

// A BERT encoder directory of `hidden` values, two heads, one layer.
void write_tiny_bert(const fs::path& dir, const std::string& act = "gelu") {
  at::manual_seed(2);
  const int64_t h = 8, inner = 16, vocab = 20;
  std::vector<std::pair<std::string, at::Tensor>> t = {
      {"embeddings.word_embeddings.weight", at::randn({vocab, h})},
      {"embeddings.position_embeddings.weight", at::randn({16, h})},
      {"embeddings.token_type_embeddings.weight", at::randn({2, h})},
      {"embeddings.LayerNorm.weight", at::ones({h})},
      {"embeddings.LayerNorm.bias", at::zeros({h})}};
  const std::string p = "encoder.layer.0.";
  for (const char* n : {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"}) {
    t.push_back({p + n + ".weight", at::randn({h, h})});
    t.push_back({p + n + ".bias", at::randn({h})});
  }
  t.push_back({p + "intermediate.dense.weight", at::randn({inner, h})});
  t.push_back({p + "intermediate.dense.bias", at::randn({inner})});
  t.push_back({p + "output.dense.weight", at::randn({h, inner})});
  t.push_back({p + "output.dense.bias", at::randn({h})});
  for (const char* n : {"attention.output.LayerNorm", "output.LayerNorm"}) {
    t.push_back({p + n + ".weight", at::ones({h})});
    t.push_back({p + n + ".bias", at::zeros({h})});
  }
  mq::test::write_safetensors(dir / "model.safetensors", t);
  mq::test::write_file(dir / "config.json", R"({"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 20,
    "max_position_embeddings": 16, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": ")" + act + R"("})");
}

TEST(CliMixed, ABertEncoderRunsAndTakesAnOutputSqnrTarget) {
  mq::test::ScratchDir dir("cli-mixed-bert");
  write_tiny_bert(dir / "bert");
  mq::test::write_file(dir / "recipe.yaml", R"(version: 1
model: {path: bert}
calibration: {random: {shape: [2, 12], batches: 2, vocab_size: 20}}
quantizer: {plugin: dynamic, options: {dtype: int4, group_size: 8}}
target: {min_output_sqnr_db: 25, sensitivity: output_sqnr,
         candidates: [{dtype: int4, group_size: 8}, {dtype: int8}, {dtype: bf16}]}
format: {plugin: safetensors, output: out}
validators: [{plugin: conformance}, {plugin: sqnr, options: {min_output_db: 25}}]
)");
  const auto run = run_pipeline("run --json recipe.yaml", dir.path());
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto report = nlohmann::json::parse(run.out);
  EXPECT_EQ(report["model_changes"][0].get<std::string>().rfind("runs on architecture 'bert' (BertModel, ", 0), 0u);
  EXPECT_NE(report["target"].get<std::string>().find("min_output_sqnr_db 25: "), std::string::npos) << report["target"];
  // The planned SQNR is met as the sqnr validator measures it on the whole model.
  for (const auto& v : report["validators"]) EXPECT_TRUE(v["passed"]) << v.dump();

  write_tiny_bert(dir / "bert", "relu");
  const auto relu = run_pipeline("run recipe.yaml", dir.path());
  EXPECT_EQ(relu.exit_code, 2) << relu.err;
  EXPECT_NE(relu.err.find("hidden_act 'relu' is not implemented"), std::string::npos) << relu.err;
}

}  // namespace

namespace {

// The bundled example: a TorchScript transformer block, the weight sensitivity.
TEST(CliMixed, TheExampleRecipeRunsOnATorchScriptBlock) {
  mq::test::ScratchDir dir("cli-mixed-example");
  const std::string recipe = std::string(MQ_SOURCE_DIR) + "/configs/example-mixed-precision.yaml";
  const auto run = run_pipeline("run --json '" + recipe + "' --set format.output='" + (dir / "t.safetensors").string() +
                                "' --set report=null --set html_report=null", dir.path());
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto report = nlohmann::json::parse(run.out);
  EXPECT_NE(report["target"].get<std::string>().find("bits_per_weight 5: "), std::string::npos) << report["target"];
  EXPECT_LE(planned_bits(report), 5.0);
  EXPECT_TRUE(fs::exists(dir / "t.safetensors.sensitivity.json"));
  // Its layers never ran with replaced weights: the output sensitivity is refused, by name.
  const auto output = run_pipeline("run '" + recipe + "' --set target.sensitivity=output --set format.output='" +
                                   (dir / "u.safetensors").string() + "' --set report=null --set html_report=null",
                                   dir.path());
  EXPECT_EQ(output.exit_code, 2) << output.err;
  EXPECT_NE(output.err.find("cannot run with replaced weights"), std::string::npos) << output.err;
  EXPECT_FALSE(fs::exists(dir / "u.safetensors"));
}

}  // namespace
