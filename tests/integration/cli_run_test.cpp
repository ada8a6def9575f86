// mq-pipeline run as a user runs it: recipes, dry runs, validation policies, determinism; the real binary, real files.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <array>
#include <iostream>
#include <set>

#include <signal.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_support.hpp"
#include "mq/files.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using mq::test::run_pipeline;
using namespace mq::test::cli;

TEST(Cli, ExampleRecipeRunsEndToEnd) {
  mq::test::ScratchDir dir("cli-example");
  const auto r = run_pipeline(example_args(dir));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir / "out.safetensors"));
  EXPECT_NE(r.out.find("2 quantized, 3 kept"), std::string::npos) << r.out;
  const auto report = nlohmann::json::parse(mq::test::read_file(dir / "report.json"));
  EXPECT_EQ(report["status"], 0);
  EXPECT_EQ(report["output"]["promoted"], true);
  std::vector<std::string> validators;
  for (const auto& v : report["validators"]) validators.push_back(v["plugin"]);
  EXPECT_EQ(validators, (std::vector<std::string>{"sqnr", "size", "load_run", "range"}));
  EXPECT_GT(report["layers"][0]["sqnr_db"].get<double>(), 35.0);
  EXPECT_EQ(report["layers"].size(), 5u);
  EXPECT_EQ(report["inputs"][0]["hash"].get<std::string>().size(), 32u);
  // safetensors output streams: entries are written as they are quantized, and the
  // validators above saw the file as written.
  EXPECT_TRUE(report["timings_s"].contains("quantize and write")) << report["timings_s"].dump();
  int64_t planned = 0;
  for (const auto& layer : report["layers"]) planned += layer["bytes_after"].get<int64_t>();
  EXPECT_EQ(report["size"]["quantized_bytes"].get<int64_t>(), planned);
  // Progress goes to stderr as plain lines when it is not a terminal (the first and the
  // last item at least: console_progress_test.cpp).
  EXPECT_NE(r.err.find("quantize [1/5] "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(" MB/s ETA 0s norm.weight\n"), std::string::npos) << r.err;
}

// Every recipe in configs/ runs as it is (outputs redirected).
TEST(Cli, EveryExampleRecipeRuns) {
  for (const auto& entry : fs::directory_iterator(std::string(MQ_SOURCE_DIR) + "/configs")) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    mq::test::ScratchDir dir("cli-configs");
    const auto r = run_pipeline("run -q '" + entry.path().string() + "' --set format.output='" +
                                (dir / "out.safetensors").string() + "' --set report=null --set html_report=null");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(fs::exists(dir / "out.safetensors"));
  }
}

TEST(Cli, DryRunShowsRuleSpecAndPredictedBytesAndWritesNothing) {
  mq::test::ScratchDir dir("cli-dry-run");
  const auto r = run_pipeline(example_args(dir, "--dry-run --set quantizer.options.dtype=int4 "
                                                "--set quantizer.options.granularity=per_group "
                                                "--set quantizer.options.group_size=48"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("fc1.weight   type Linear; last group partial (64 % 48)   int4 per_group(48) symmetric"),
            std::string::npos) << r.out;
  EXPECT_NE(r.out.find("norm.weight  type LayerNorm not in layers.types"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("total: 66560 -> 11024 bytes"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "out.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "report.json"));
  const auto json = run_pipeline(example_args(dir, "--dry-run --json"));
  EXPECT_EQ(nlohmann::json::parse(json.out)["layers"][0]["bytes_after"], 8192 + 128 * 4);
}

// A plan TorchScript output cannot run (int4) is refused before any work (nothing
// quantized: no progress line), by --dry-run too; nothing is written.
TEST(Cli, TorchScriptOutputRefusesAPlanItCannotRunBeforeAnyWork) {
  mq::test::ScratchDir dir("cli-ts-plan");
  const std::string args = "run '" MQ_SOURCE_DIR "/configs/example-torchscript-int8.yaml' --set format.output='" +
                           (dir / "out.pt").string() + "' --set report=null --set html_report=null " +
                           "--set quantizer.options.dtype=int4 --set quantizer.options.granularity=per_group " +
                           "--set quantizer.options.group_size=32";
  for (const std::string extra : {"", " --dry-run"}) {
    const auto r = run_pipeline(args + extra);
    EXPECT_EQ(r.exit_code, 2) << extra;
    expect_one_line_error(r);
    EXPECT_NE(r.err.find("format 'pt', checking the plan: tensor 'fc1.weight' (int4 per_group(32) symmetric): "
                         "TorchScript output runs PyTorch's int8 kernels"),
              std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir / "out.pt"));
  }
}

TEST(Cli, JsonPrintsTheReportOnStdout) {
  mq::test::ScratchDir dir("cli-json");
  const auto r = run_pipeline(example_args(dir, "--json --quiet"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto report = nlohmann::json::parse(r.out);
  EXPECT_GT(report["size"]["ratio"].get<double>(), 3.0);
  EXPECT_EQ(r.err, "");
}

TEST(Cli, ThreadCountDoesNotChangeTheBytes) {
  mq::test::ScratchDir dir("cli-threads");
  ASSERT_EQ(run_pipeline(example_args(dir, "--threads 1 -q")).exit_code, 0);
  const std::string one = mq::test::read_file(dir / "out.safetensors");
  ASSERT_EQ(run_pipeline(example_args(dir, "--threads 2 -q")).exit_code, 0);
  EXPECT_TRUE(one == mq::test::read_file(dir / "out.safetensors"));
}

TEST(Cli, FailedValidationWithErrorExitsFiveAndKeepsTheOldArtifact) {
  mq::test::ScratchDir dir("cli-on-failure-error");
  mq::test::write_file(dir / "out.safetensors", "earlier good artifact");
  const auto r = run_pipeline(example_args(dir, "-q --set validators.1.options.min_ratio=100"));
  EXPECT_EQ(r.exit_code, 5);
  expect_one_line_error(r);
  EXPECT_NE(r.err.find("size: ratio"), std::string::npos) << r.err;
  EXPECT_EQ(mq::test::read_file(dir / "out.safetensors"), "earlier good artifact");
  EXPECT_EQ(nlohmann::json::parse(mq::test::read_file(dir / "report.json"))["status"], 5);
  // The file there is the earlier run's, which "(not written)" beside its name left unsaid.
  EXPECT_NE(mq::test::read_file(dir / "report.html").find("(not written by this run)"),
            std::string::npos);
  for (const auto& e : fs::directory_iterator(dir.path()))  // no temporary left behind
    EXPECT_EQ(e.path().filename().string().find(".mq-tmp"), std::string::npos);
}

// A run that fails writes its report too: one left from the run before would say "ok"
// in CI's archive beside this run's non-zero exit.
TEST(Cli, FailedRunReplacesTheReportOfTheRunBefore) {
  mq::test::ScratchDir dir("cli-failed-report");
  ASSERT_EQ(run_pipeline(example_args(dir, "-q")).exit_code, 0);
  const std::string artifact = mq::test::read_file(dir / "out.safetensors");
  mq::test::write_file(dir / "garbage.safetensors", "not a safetensors file");
  const auto r = run_pipeline(example_args(dir, "-q --set model.path='" + (dir / "garbage.safetensors").string() + "'"));
  EXPECT_EQ(r.exit_code, 3);
  const auto report = nlohmann::json::parse(mq::test::read_file(dir / "report.json"));
  EXPECT_EQ(report["status"], 3);
  EXPECT_EQ("mq-pipeline: error: " + report["message"].get<std::string>() + "\n", r.err);
  EXPECT_EQ(report["output"]["promoted"], false);
  EXPECT_NE(mq::test::read_file(dir / "report.html").find("failed"), std::string::npos);
  EXPECT_TRUE(artifact == mq::test::read_file(dir / "out.safetensors"));

  const auto validate = [&](const char* file) {
    return run_pipeline("validate '" + (dir / file).string() + "' --reference '" MQ_SOURCE_DIR
                        "/configs/models/mlp.safetensors' --report '" + (dir / "report.json").string() + "'");
  };
  ASSERT_EQ(validate("out.safetensors").exit_code, 0);
  EXPECT_EQ(validate("garbage.safetensors").exit_code, 3);
  EXPECT_EQ(nlohmann::json::parse(mq::test::read_file(dir / "report.json"))["status"], 3);
}

TEST(Cli, FailedValidationWithWarnWritesAndWarns) {
  mq::test::ScratchDir dir("cli-on-failure-warn");
  const auto r = run_pipeline(
      example_args(dir, "-q --set validators.1.options.min_ratio=100 --set on_failure=warn"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("mq-pipeline: warning: validator size failed"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(dir / "out.safetensors"));
}

TEST(Cli, FailedValidationWithIgnoreWritesSilently) {
  mq::test::ScratchDir dir("cli-on-failure-ignore");
  const auto r = run_pipeline(example_args(
      dir, "-q --set validators.1.options.min_ratio=100 --set validators.1.on_failure=ignore"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_TRUE(fs::exists(dir / "out.safetensors"));
}

// PyTorch archives are named after their file; the output is saved under the runner's
// temporary name, so the archive must not take it: two runs (any --threads) give the
// same bytes, TorchScript dynamic and static (Linear, and Conv), and a state dict.
TEST(Cli, PtOutputIsDeterministic) {
  mq::test::ScratchDir dir("cli-ts-determinism");
  const std::string out = (dir / "mlp.pt").string();
  for (const std::string recipe : {"example-torchscript-int8.yaml", "example-static-int8.yaml",
                                   "example-cnn-static-int8.yaml", "example-dynamic-int8.yaml"}) {
    SCOPED_TRACE(recipe);
    std::string bytes[2];
    for (int threads : {1, 2}) {
      const auto r = run_pipeline("run -q '" MQ_SOURCE_DIR "/configs/" + recipe + "' --set report=null --set html_report=null "
                                  "--set html_report=null --set format.plugin=pt --set format.output='" + out +
                                  "' --threads " + std::to_string(threads));
      ASSERT_EQ(r.exit_code, 0) << r.err;
      bytes[threads - 1] = mq::test::read_file(out);
    }
    EXPECT_EQ(bytes[0], bytes[1]);
    EXPECT_EQ(bytes[0].find(".mq-tmp-"), std::string::npos);
  }
}

TEST(Cli, StaticQuantizationErrorsAreClear) {
  mq::test::ScratchDir dir("cli-static");
  const std::string base = "run -q '" MQ_SOURCE_DIR "/configs/example-static-int8.yaml' --set report=null --set html_report=null "
                           "--set format.output='" + (dir / "o.safetensors").string() + "' ";
  const auto no_data = run_pipeline(base + "--set calibration=null");
  EXPECT_EQ(no_data.exit_code, 2);
  EXPECT_NE(no_data.err.find("static quantization needs calibration data"), std::string::npos) << no_data.err;
  const auto wrong_shape = run_pipeline(base + "--set 'calibration={random: {shape: [4, 7], batches: 2}}'");
  EXPECT_EQ(wrong_shape.exit_code, 3);
  expect_one_line_error(wrong_shape);
  EXPECT_NE(wrong_shape.err.find("calibration batch 0 of shape [4, 7] does not fit the model"), std::string::npos)
      << wrong_shape.err;
  const auto checkpoint = run_pipeline(base + "--set model.path=models/mlp.safetensors --set model.options={}");
  EXPECT_EQ(checkpoint.exit_code, 2);
  EXPECT_NE(checkpoint.err.find("this model cannot run"), std::string::npos) << checkpoint.err;
  // An HF directory whose config.json the llama architecture cannot build (it lists no
  // layers): calibration must run it, so the config error itself, naming the field.
  mq::test::write_hf_directory(dir / "llama");
  const std::string calibrated = "' --set model.options={} --set 'calibration={random: {shape: [2, 8], vocab_size: 100}}'";
  const auto unbuildable = run_pipeline(base + "--set model.path='" + (dir / "llama").string() + calibrated);
  EXPECT_EQ(unbuildable.exit_code, 3);
  expect_one_line_error(unbuildable);
  EXPECT_NE(unbuildable.err.find("config.json: 'num_hidden_layers' must be a positive integer"), std::string::npos)
      << unbuildable.err;
  // A family no architecture plugin runs: named, with the families there are.
  mq::test::write_file(dir / "llama" / "config.json", R"({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})");
  const auto unknown = run_pipeline(base + "--set model.path='" + (dir / "llama").string() + calibrated);
  EXPECT_EQ(unknown.exit_code, 3);
  expect_one_line_error(unknown);
  EXPECT_NE(unknown.err.find("config.json: GPT2LMHeadModel (model_type 'gpt2') is no family an architecture plugin "
                             "runs (bert: BERT encoders"),
            std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("; llama: Llama 2/3.x"), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("); the recipe's calibration or evaluation runs the model"), std::string::npos) << unknown.err;
  // Without calibration it is quantized as a checkpoint, and the dry run says why it does not run.
  const auto dry = run_pipeline(base + "--dry-run --set calibration=null --set quantizer.plugin=dynamic "
                                       "--set quantizer.options={} --set observer=null --set model.options={} --set model.path='" + (dir / "llama").string() + "'");
  EXPECT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_NE(dry.out.find("model: does not run: "), std::string::npos) << dry.out;
  const auto inspected = run_pipeline("inspect '" + (dir / "llama").string() + "'");
  EXPECT_NE(inspected.out.find("\n  does not run: "), std::string::npos) << inspected.out;
  EXPECT_FALSE(fs::exists(dir / "o.safetensors"));
  const auto random = run_pipeline(base + "--set 'calibration={random: {shape: [4, 64], batches: 3, seed: 1}}'");
  EXPECT_EQ(random.exit_code, 0) << random.err;
  EXPECT_TRUE(fs::exists(dir / "o.safetensors"));
}

TEST(Cli, TorchScriptInputMustBeTrustedExplicitly) {
  mq::test::ScratchDir dir("cli-trust");
  const auto r = run_pipeline("run -q '" MQ_SOURCE_DIR "/configs/example-torchscript-int8.yaml' --set model.options={} "
                              "--set format.output='" + (dir / "o.pt").string() + "' --set report=null --set html_report=null");
  EXPECT_EQ(r.exit_code, 3);
  expect_one_line_error(r);
  EXPECT_NE(r.err.find("loading it runs the code inside; if you trust it, say so: --trust-torchscript (inspect, validate, init), or model.options.trust_torchscript: true in a recipe"),
            std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "o.pt"));
}

// YaRN rope scaling runs as transformers 4.44's Llama (interop_llama_transformers); a
// config whose reading differs between transformers versions (original context other than
// max_position_embeddings), or has keys added later, is refused before any work.
TEST(Cli, YarnRopeScalingThatTransformersVersionsReadDifferentlyIsRefused) {
  mq::test::ScratchDir dir("cli-yarn");
  write_tiny_llama(dir / "llama");
  const auto config = [&](const std::string& scaling) {
    mq::test::write_file(dir / "llama" / "config.json", R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 8,
      "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 20,
      "intermediate_size": 16, "max_position_embeddings": 64, "rope_scaling": )" + scaling + "}");
  };
  mq::test::write_file(dir / "recipe.yaml", R"(version: 1
model: {path: llama}
calibration: {random: {shape: [1, 6], batches: 1, vocab_size: 20}}
quantizer: {plugin: static, options: {dtype: int8}}
format: {plugin: safetensors, output: out}
validators: []
)");
  config(R"({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64})");
  const auto runs = run_pipeline("run --dry-run recipe.yaml", dir.path());
  EXPECT_EQ(runs.exit_code, 0) << runs.err;
  config(R"({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32})");
  const auto other = run_pipeline("run --dry-run recipe.yaml", dir.path());
  EXPECT_EQ(other.exit_code, 2) << other.err;
  EXPECT_NE(other.err.find("original_max_position_embeddings other than max_position_embeddings is not implemented"),
            std::string::npos) << other.err;
  config(R"({"rope_type": "yarn", "factor": 4.0, "mscale": 0.7})");
  const auto later = run_pipeline("run --dry-run recipe.yaml", dir.path());
  EXPECT_EQ(later.exit_code, 2) << later.err;
  EXPECT_NE(later.err.find("rope_scaling yarn with 'mscale' is not implemented"), std::string::npos) << later.err;
  EXPECT_FALSE(fs::exists(dir / "out"));
}

// Static calibration from text: the HF directory's tokenizer.json tokenizes the file; the
// dry run says what calibration will use, the run calibrates on it and its report says
// so; GPTQ calibrates on it too; and text that is not UTF-8 is refused before any work
// (exit 3).
TEST(Cli, StaticCalibrationFromText) {
  mq::test::ScratchDir dir("cli-text-calibration");
  write_tiny_llama(dir / "llama");
  mq::test::write_file(dir / "llama" / "tokenizer.json", R"({"version": "1.0",
    "added_tokens": [{"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
                      "normalized": false, "special": true}],
    "normalizer": null, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                                           "use_regex": true},
    "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}], "pair": [],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
    "model": {"type": "BPE", "vocab": {"a": 2, "b": 3, "Ġ": 4, "Ġa": 5, "Ċ": 6, "ab": 7}, "merges": ["Ġ a", "a b"]}})");
  mq::test::write_file(dir / "calib.txt", "ab a ab\nba a\n");
  mq::test::write_file(dir / "recipe.yaml", R"(version: 1
model: {path: llama}
calibration: {text: {path: calib.txt, seq_len: 4}}
quantizer: {plugin: static, options: {dtype: int8}}
format: {plugin: safetensors, output: out}
validators: []
)");
  const auto plan = run_pipeline("run --dry-run recipe.yaml", dir.path());
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  // <s> ab Ġa Ġa b Ċ b a Ġa Ċ: 10 tokens, two windows of 4
  EXPECT_NE(plan.out.find("calibration: 2 samples of 4 tokens (8 of 10 tokens) from " + (dir / "calib.txt").string()),
            std::string::npos) << plan.out;
  const auto run = run_pipeline("run --json recipe.yaml", dir.path());
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto report = nlohmann::json::parse(run.out);
  EXPECT_EQ(report["calibration"].get<std::string>().rfind("2 samples of 4 tokens", 0), 0u);
  EXPECT_TRUE(fs::exists(dir / "out" / "model.safetensors"));

  // GPTQ from the same text; without calibration it says what it needs (exit 2).
  const auto gptq = run_pipeline("run --json recipe.yaml --set 'quantizer={plugin: gptq, options: {dtype: int4, group_size: 8}}' "
                                 "--set format.output=out-gptq", dir.path());
  ASSERT_EQ(gptq.exit_code, 0) << gptq.err;
  EXPECT_TRUE(fs::exists(dir / "out-gptq" / "model.safetensors"));
  // Each Linear's rule: its layer-output error on the calibration inputs, and RTN's.
  const auto gptq_report = nlohmann::json::parse(gptq.out);
  int reported = 0;
  for (const auto& row : gptq_report["layers"]) {
    const std::string rule = row["rule"];
    const size_t at = rule.find("; GPTQ: layer-output error ");
    if (at == std::string::npos) continue;
    ++reported;
    const double error = std::stod(rule.substr(at + 27));
    const double rtn = std::stod(rule.substr(rule.find("(round to nearest ") + 18));
    EXPECT_LE(error, rtn * 1.0001) << rule;
  }
  EXPECT_EQ(reported, 7) << gptq.out;
  const auto uncalibrated = run_pipeline("run recipe.yaml --set quantizer.plugin=gptq --set calibration=null "
                                         "--set format.output=out-none", dir.path());
  EXPECT_EQ(uncalibrated.exit_code, 2);
  EXPECT_NE(uncalibrated.err.find("GPTQ needs calibration data"), std::string::npos) << uncalibrated.err;

  mq::test::write_file(dir / "calib.txt", "caf\xe9\n");
  fs::remove_all(dir / "out");
  const auto bad = run_pipeline("run recipe.yaml", dir.path());
  EXPECT_EQ(bad.exit_code, 3);
  expect_one_line_error(bad);
  EXPECT_NE(bad.err.find((dir / "calib.txt").string() + ": invalid UTF-8 at byte 3"), std::string::npos) << bad.err;
  EXPECT_FALSE(fs::exists(dir / "out"));
}

// A model mq runs, written by a format whose output does not run (a pt state dict):
// the artifact is loaded to be run, found not runnable, and promoted; it was refused
// as "quantized already" when load-and-run read it as an input.
TEST(Cli, ARunnableModelWrittenAsAStateDictIsPromoted) {
  mq::test::ScratchDir dir("cli-llama-pt");
  write_tiny_llama(dir / "llama");
  mq::test::write_file(dir / "recipe.yaml", R"(version: 1
model: {path: llama}
quantizer: {plugin: dynamic, options: {dtype: int8}}
format: {plugin: pt, output: model.pt}
validators: [{plugin: load_run}]
)");
  const auto r = run_pipeline("run --json recipe.yaml", dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir / "model.pt"));
  // The state dict does not run by itself; its tensors, dequantized on the original's
  // architecture, do: load_run checks the whole model as written.
  EXPECT_NE(r.out.find("forward pass on [8, 16] gives finite outputs at"), std::string::npos) << r.out;
}

// The logits validator on an HF Llama: figures in the report, a bound that fails keeps
// the artifact out, and `validate` runs the same check on an artifact already written.
TEST(Cli, TheLogitsValidatorGatesAnHfArtifact) {
  mq::test::ScratchDir dir("cli-llama-logits");
  write_tiny_llama(dir / "llama", 32);
  mq::test::write_file(dir / "recipe.yaml", R"(version: 1
model: {path: llama}
calibration: {random: {shape: [2, 12], batches: 2, vocab_size: 20}}
quantizer: {plugin: dynamic, options: {dtype: int4, group_size: 16}}
format: {plugin: safetensors, output: out}
validators: [{plugin: logits, options: {max_kl: 10}}]
)");
  const auto r = run_pipeline("run --json recipe.yaml", dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto report = nlohmann::json::parse(r.out);
  const auto& m = report["validators"][0]["metrics"];
  EXPECT_GT(m["kl_mean"].get<double>(), 0.0);
  EXPECT_GE(m["kl_p99"].get<double>(), m["kl_mean"].get<double>());
  EXPECT_EQ(m["tokens"].get<double>(), 48.0);
  EXPECT_GT(m["perplexity_written"].get<double>(), 0.0);
  EXPECT_NE(report["validators"][0]["message"].get<std::string>().find("perplexity"), std::string::npos);

  const auto strict = run_pipeline("run recipe.yaml --set format.output=strict --set 'validators=[{plugin: logits, "
                                   "options: {max_kl: 1e-9}}]'", dir.path());
  EXPECT_EQ(strict.exit_code, 5) << strict.err;
  EXPECT_NE(strict.out.find("KL mean above max_kl 1e-09"), std::string::npos) << strict.out;
  EXPECT_FALSE(fs::exists(dir / "strict"));

  // A held-out evaluation set replaces the calibration batches; a missing one is refused
  // before any work.
  const auto held_out = run_pipeline("run --json recipe.yaml --set format.output=held "
                                     "--set 'evaluation={random: {shape: [1, 10], batches: 3, seed: 5, vocab_size: 20}}'",
                                     dir.path());
  ASSERT_EQ(held_out.exit_code, 0) << held_out.err;
  EXPECT_EQ(nlohmann::json::parse(held_out.out)["validators"][0]["metrics"]["tokens"].get<double>(), 30.0);
  const auto missing = run_pipeline("run recipe.yaml --set format.output=missing --set 'evaluation={path: nope.safetensors}'",
                                    dir.path());
  EXPECT_EQ(missing.exit_code, 3) << missing.err;
  EXPECT_NE(missing.err.find("nope.safetensors: no such file or directory (evaluation)"), std::string::npos) << missing.err;
  EXPECT_EQ(missing.err.find("quantize"), std::string::npos) << missing.err;
  EXPECT_FALSE(fs::exists(dir / "missing"));

  const auto validate = run_pipeline("validate out --reference llama --validators logits --option logits.max_kl=10",
                                     dir.path());
  EXPECT_EQ(validate.exit_code, 0) << validate.err << validate.out;
  EXPECT_NE(validate.out.find("KL mean"), std::string::npos) << validate.out;
}

// SmoothQuant needs the llama family's names; a model without them, or an alpha outside
// [0, 1], is refused before any work.
TEST(Cli, SmoothQuantIsRefusedWhereItHasNothingToSmooth) {
  mq::test::ScratchDir dir("cli-smoothquant");
  const std::string recipe = std::string(MQ_SOURCE_DIR) + "/configs/example-transformer-static-int8.yaml";
  const std::string out = " --set format.output='" + (dir / "t.safetensors").string() + "' --set report=null";
  const auto none = run_pipeline("run '" + recipe + "'" + out + " --set quantizer.options.smoothquant_alpha=0.5", dir.path());
  EXPECT_EQ(none.exit_code, 2) << none.err;
  EXPECT_NE(none.err.find("smoothquant_alpha: no norm feeding Linears found"), std::string::npos) << none.err;
  EXPECT_EQ(none.err.find("calibrate"), std::string::npos) << none.err;
  const auto range = run_pipeline("run '" + recipe + "'" + out + " --set quantizer.options.smoothquant_alpha=1.5", dir.path());
  EXPECT_EQ(range.exit_code, 2) << range.err;
  EXPECT_NE(range.err.find("smoothquant_alpha must be in [0, 1]"), std::string::npos) << range.err;
  EXPECT_FALSE(fs::exists(dir / "t.safetensors"));
}

// AWQ on an HF Llama: every quantized Linear's rule says its group's ratio and error
// against plain rounding's; a recipe without calibration is refused before any work.
TEST(Cli, AwqScalesEachGroupAndSaysWhatItGained) {
  mq::test::ScratchDir dir("cli-awq");
  write_tiny_llama(dir / "llama", 32);
  mq::test::write_file(dir / "recipe.yaml", R"(version: 1
model: {path: llama}
calibration: {random: {shape: [2, 12], batches: 2, vocab_size: 20}}
quantizer: {plugin: awq, options: {dtype: int4, group_size: 16}}
format: {plugin: safetensors, output: out}
validators: [{plugin: logits}]
)");
  const auto r = run_pipeline("run --json recipe.yaml", dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto report = nlohmann::json::parse(r.out);
  int scaled = 0;
  for (const auto& row : report["layers"]) {
    const std::string rule = row["rule"];
    if (rule.find("; AWQ ratio ") == std::string::npos) continue;
    ++scaled;
    const size_t x = rule.find("x plain rounding's");
    ASSERT_NE(x, std::string::npos) << rule;
    const double ratio = std::stod(rule.substr(rule.rfind(' ', x) + 1));
    EXPECT_LE(ratio, 1.0) << rule;  // the grid includes plain rounding's neighbourhood
  }
  EXPECT_EQ(scaled, 6);  // q/k/v, gate/up, down; o_proj has no front to fold into
  const auto none = run_pipeline("run recipe.yaml --set calibration=null --set format.output=none", dir.path());
  EXPECT_EQ(none.exit_code, 2) << none.err;
  EXPECT_NE(none.err.find("awq needs calibration data"), std::string::npos) << none.err;
  EXPECT_FALSE(fs::exists(dir / "none"));
}

}  // namespace
