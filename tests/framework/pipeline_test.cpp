// The pipeline through its C++ API, on the bundled example model.

#include "mq/pipeline.hpp"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstdio>

#include "mq/error.hpp"
#include "mq/layer_selection.hpp"
#include "mq/quantize.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;

mq::Recipe example(const fs::path& out_dir) {
  mq::Recipe r;
  r.model_path = fs::path(MQ_SOURCE_DIR) / "configs/models/mlp.safetensors";
  r.quantizer.plugin = "dynamic";
  r.format.plugin = "safetensors";
  r.output = out_dir / "mlp.int8.safetensors";
  r.validators.push_back({{"size", mq::Value::map(), {}}, std::nullopt});
  return r;
}

mq::RunOptions with_fixtures() {
  mq::RunOptions o;
  o.plugin_paths = {fs::path(MQ_FIXTURE_DIR) / "good", fs::path(MQ_FIXTURE_DIR) / "failing"};
  return o;
}

std::string check_error(mq::Recipe r) {
  try {
    mq::Pipeline(std::move(r), with_fixtures()).check();
  } catch (const mq::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "check passed";
  return "";
}

// coreutils' sha256sum of a file, or of a directory's manifest as the comment of
// mq::detail::digest_path says: find, LC_ALL=C sort, sha256sum, sha256sum.
std::string sha256sum(const fs::path& path) {
  const std::string command =
      fs::is_directory(path) ? "cd '" + path.string() + "' && find . -type f -printf '%P\\n' | LC_ALL=C sort | "
                                                        "xargs -d '\\n' sha256sum | sha256sum"
                             : "sha256sum '" + path.string() + "'";
  FILE* pipe = popen(command.c_str(), "r");
  char buffer[65] = {};
  const size_t got = pipe ? std::fread(buffer, 1, 64, pipe) : 0;
  if (pipe) pclose(pipe);
  return std::string(buffer, got);
}

// XXH3-128 of a file's bytes as 32 hex digits, in one call.
std::string xxh3_128_hex(const fs::path& file) {
  const std::string bytes = mq::test::read_file(file);
  const XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  char hex[33];
  std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return hex;
}

TEST(Pipeline, RecipeBuiltInCodeRunsAndReportsAsAValue) {
  mq::test::ScratchDir dir("api-run");
  mq::Recipe r = example(dir.path());
  r.validators.push_back({{"fixture_good", mq::Value::map(), {}}, std::nullopt});
  const mq::Report report = mq::Pipeline(r, with_fixtures()).run();
  EXPECT_EQ(report.status, mq::ExitCode::kOk);
  EXPECT_TRUE(report.promoted);
  EXPECT_TRUE(fs::exists(r.output));
  EXPECT_EQ(report.output.bytes, static_cast<int64_t>(fs::file_size(r.output)));
  EXPECT_EQ(report.plan.size(), 5u);
  EXPECT_GT(report.original_bytes, 3 * report.quantized_bytes);
  ASSERT_EQ(report.validators.size(), 2u);
  EXPECT_TRUE(report.validators[0].check.passed);
  EXPECT_EQ(report.validators[1].check.metrics.at(0).second, 1.0);  // the default of `level`
  EXPECT_EQ(report.recipe_hash, r.hash());
  // The input's hash (computed beside quantization) is XXH3-128 of its bytes, in the
  // report and in the output's provenance.
  const std::string hex = xxh3_128_hex(r.model_path);
  ASSERT_EQ(report.inputs.size(), 1u);
  EXPECT_EQ(report.inputs[0].hash, hex);
  EXPECT_NE(mq::test::read_file(r.output).find(std::string(R"("mq.input_hash":")") + hex + '"'), std::string::npos);
  // The artifact's (taken before it was renamed into place) is that of the file as it stands.
  EXPECT_EQ(report.output.path, r.output.string());
  EXPECT_EQ(report.output.hash, xxh3_128_hex(r.output));
  // SHA-256 too, for signers: what coreutils' sha256sum gives.
  EXPECT_EQ(report.inputs[0].sha256, sha256sum(r.model_path));
  EXPECT_EQ(report.output.sha256, sha256sum(r.output));
  EXPECT_NE(mq::test::read_file(r.output).find(R"("mq.input_sha256":")" + report.inputs[0].sha256 + '"'),
            std::string::npos);
  // Nothing but the artifact is left in the output directory.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

// A directory's SHA-256 is its sha256sum manifest's, recomputable with coreutils.
TEST(Pipeline, ADirectoryInputsSha256IsItsManifests) {
  mq::test::ScratchDir dir("api-sha256-dir");
  mq::test::write_hf_directory(dir / "model");
  mq::Recipe r = example(dir.path());
  r.model_path = dir / "model";
  r.output = dir / "out";
  r.validators.clear();
  const mq::Report report = mq::Pipeline(r, with_fixtures()).run();
  ASSERT_EQ(report.status, mq::ExitCode::kOk) << report.message;
  EXPECT_EQ(report.inputs[0].sha256, sha256sum(dir / "model"));
  EXPECT_EQ(report.output.sha256, sha256sum(dir / "out"));
}

// The hash streams the file through a buffer of a few MiB: a larger input is hashed whole.
TEST(Pipeline, InputHashCoversAFileLargerThanTheReadBuffer) {
  mq::test::ScratchDir dir("api-hash");
  mq::Recipe r = example(dir.path());
  r.model_path = dir.path() / "large.safetensors";
  mq::test::write_safetensors(r.model_path, {{"fc.weight", at::randn({3000, 1024})}});  // 12 MB
  r.validators.clear();
  const mq::Report report = mq::Pipeline(r, with_fixtures()).run();
  ASSERT_EQ(report.inputs.size(), 1u);
  EXPECT_EQ(report.inputs[0].hash, xxh3_128_hex(r.model_path));
}

// Entries of 1 MiB or more are written behind the quantizer, on a thread of their own,
// while the next ones are quantized into reused buffers: each reads back as quantizing
// it alone gives.
TEST(Pipeline, EntriesWrittenBehindTheQuantizerReadBackAsQuantized) {
  mq::test::ScratchDir dir("api-write-behind");
  mq::Recipe r = example(dir.path());
  r.model_path = dir.path() / "large.safetensors";
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (int i = 0; i < 6; ++i)
    tensors.emplace_back("fc" + std::to_string(i) + ".weight", at::randn({1200, 1024}) * (i + 1));
  mq::test::write_safetensors(r.model_path, tensors);
  r.validators.clear();
  const mq::Report report = mq::Pipeline(r).run();
  ASSERT_EQ(report.status, mq::ExitCode::kOk) << report.message;
  const mq::QuantizedModel back = mq::load_quantized_model(r.output);
  for (const auto& [name, weight] : tensors) {
    const mq::QuantizedEntry* e = back.find(name);
    ASSERT_TRUE(e && e->quantized) << name;
    const mq::QuantizedTensor expected = mq::quantize_weight(weight, e->quantized->spec, nullptr);
    EXPECT_TRUE(at::equal(e->quantized->data, expected.data)) << name;
    EXPECT_TRUE(at::equal(e->quantized->qparams.scale, expected.qparams.scale)) << name;
  }
}

TEST(Pipeline, ValidateArtifactRunsTheDefaultValidators) {
  mq::test::ScratchDir dir("api-validate");
  mq::Recipe r = example(dir.path());
  mq::Pipeline(r).run();
  mq::ValidateRequest request;
  request.artifact = r.output;
  request.reference = r.model_path;
  const mq::Report report = mq::validate_artifact(request);
  EXPECT_EQ(report.status, mq::ExitCode::kOk) << report.message;
  ASSERT_EQ(report.validators.size(), 4u);
  for (const auto& v : report.validators) EXPECT_TRUE(v.check.passed) << v.plugin << ": " << v.check.message;
  // A plain float checkpoint validates against itself: nothing quantized, nothing lost.
  request.artifact = r.model_path;
  EXPECT_EQ(mq::validate_artifact(request).status, mq::ExitCode::kOk);
}

TEST(Pipeline, SameRecipeAndInputGiveTheSameBytes) {
  mq::test::ScratchDir dir("api-determinism");
  mq::Recipe r = example(dir.path());
  mq::Pipeline(r).run();
  const std::string first = mq::test::read_file(r.output);
  mq::RunOptions one_thread;
  one_thread.threads = 1;
  mq::Pipeline(r, one_thread).run();
  EXPECT_EQ(first, mq::test::read_file(r.output));
}

TEST(Pipeline, OnFailureErrorLeavesTheDestinationUntouched) {
  mq::test::ScratchDir dir("api-error");
  mq::Recipe r = example(dir.path());
  mq::test::write_file(r.output, "previous good artifact");
  r.validators = {{{"fixture_failing", mq::Value::map(), {}}, std::nullopt}};
  const mq::Report report = mq::Pipeline(r, with_fixtures()).run();
  EXPECT_EQ(report.status, mq::ExitCode::kValidationFailed);
  EXPECT_FALSE(report.promoted);
  EXPECT_EQ(mq::test::read_file(r.output), "previous good artifact");
  EXPECT_NE(report.message.find("fixture_failing: fixture rejects everything"), std::string::npos);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

// A streamed file that does not read back as it was written is an output error, found
// before validation: nothing is promoted, the old artifact stays.
TEST(Pipeline, AFileThatReadsBackDifferentlyIsNeverPromoted) {
  mq::test::ScratchDir dir("api-lying");
  mq::Recipe r = example(dir.path());
  r.format.plugin = "fixture_lying";
  mq::test::write_file(r.output, "previous good artifact");
  mq::RunOptions o;
  o.plugin_paths = {fs::path(MQ_FIXTURE_DIR) / "lying"};
  try {
    mq::Pipeline(r, o).run();
    ADD_FAILURE() << "ran";
  } catch (const mq::OutputError& e) {
    EXPECT_NE(std::string(e.what()).find("does not read back as written (tensor 'fc1.weight')"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(mq::test::read_file(r.output), "previous good artifact");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

// The artifact of a runnable model loads and runs once on the model's input before it is
// promoted, validators or not: one that does not is a failed check (exit 5), and the
// previous artifact stays.
TEST(Pipeline, ARunnableModelsArtifactThatDoesNotLoadAndRunIsNeverPromoted) {
  for (const std::string artifact : {"fails_to_load", "fails_to_run", "runs"}) {
    SCOPED_TRACE(artifact);
    mq::test::ScratchDir dir("api-runnable");
    mq::Recipe r = example(dir.path());
    r.model_path = dir / "model.fixture";
    mq::test::write_file(r.model_path, "fixture");
    r.model_format = "fixture_runnable";
    r.model_input = mq::ModelInput{{2, 4}, 0};
    r.format = {"fixture_runnable", mq::Value::map(), {}};
    r.format.options.set("artifact", mq::Value::string(artifact));
    r.validators.clear();
    mq::test::write_file(r.output, "previous good artifact");
    mq::RunOptions o;
    o.plugin_paths = {fs::path(MQ_FIXTURE_DIR) / "runnable"};
    const mq::Report report = mq::Pipeline(r, o).run();
    if (artifact == "runs") {
      EXPECT_EQ(report.status, mq::ExitCode::kOk) << report.message;
      EXPECT_EQ(mq::test::read_file(r.output), "fixture");
      continue;
    }
    EXPECT_EQ(report.status, mq::ExitCode::kValidationFailed);
    EXPECT_NE(report.message.find(artifact == "fails_to_load" ? "the written model does not load: "
                                                               : "the written model does not run where the original "
                                                                 "runs: no kernel for this"),
              std::string::npos)
        << report.message;
    EXPECT_EQ(mq::test::read_file(r.output), "previous good artifact");
  }
}

// A model.input the model does not take is a usage error before any work, as a guessed
// shape that does not fit is (it says to set model.input).
TEST(Pipeline, AModelInputThatDoesNotFitIsARecipeError) {
  mq::test::ScratchDir dir("api-input");
  mq::Recipe r = example(dir.path());
  r.model_path = fs::path(MQ_SOURCE_DIR) / "configs/models/mlp.pt";
  r.model_options.set("trust_torchscript", mq::Value::boolean(true));
  r.model_input = mq::ModelInput{{2, 5}, 0};
  try {
    mq::Pipeline(r).plan();
    ADD_FAILURE() << "planned";
  } catch (const mq::RecipeError& e) {
    EXPECT_NE(std::string(e.what()).find("model.input of shape [2, 5] does not fit the model: "), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(r.output));
}

TEST(Pipeline, OnFailureWarnPromotesAndWarns) {
  mq::test::ScratchDir dir("api-warn");
  mq::Recipe r = example(dir.path());
  r.validators = {{{"fixture_failing", mq::Value::map(), {}}, mq::OnFailure::kWarn}};
  std::vector<std::string> warnings;
  mq::RunOptions o = with_fixtures();
  o.warn = [&](const std::string& w) { warnings.push_back(w); };
  const mq::Report report = mq::Pipeline(r, o).run();
  EXPECT_EQ(report.status, mq::ExitCode::kOk);
  EXPECT_TRUE(report.promoted);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("fixture_failing"), std::string::npos);
}

TEST(Pipeline, OnFailureIgnorePromotesSilently) {
  mq::test::ScratchDir dir("api-ignore");
  mq::Recipe r = example(dir.path());
  r.on_failure = mq::OnFailure::kIgnore;
  r.validators = {{{"fixture_failing", mq::Value::map(), {}}, std::nullopt}};
  const mq::Report report = mq::Pipeline(r, with_fixtures()).run();
  EXPECT_EQ(report.status, mq::ExitCode::kOk);
  EXPECT_TRUE(report.promoted);
  EXPECT_TRUE(report.warnings.empty());
  EXPECT_FALSE(report.validators[0].check.passed);
}

TEST(Pipeline, UnknownPluginSuggestsTheClosestName) {
  mq::Recipe r = example("/tmp");
  r.quantizer.plugin = "dynamc";
  const std::string e = check_error(r);
  EXPECT_NE(e.find("no quantizer plugin named 'dynamc' (did you mean 'dynamic'?)"), std::string::npos) << e;
}

TEST(Pipeline, PluginOptionsAreCheckedAgainstTheDeclarations) {
  const auto parse = [](const std::string& yaml) {
    return mq::parse_recipe(yaml, "/tmp/r.yaml");
  };
  const std::string head = "version: 1\nmodel: {path: m.safetensors}\nformat: {plugin: safetensors, output: o.safetensors}\n";
  EXPECT_EQ(check_error(parse(head + "quantizer: {plugin: dynamic, options: {dtyp: int8}}\n")),
            "/tmp/r.yaml:4:40: unknown option 'dtyp' for quantizer 'dynamic' (did you mean "
            "'dtype'?); it takes 'dtype', 'granularity', 'group_size', 'scheme', 'reduce_range', "
            "'layers', 'overrides'");
  EXPECT_EQ(check_error(parse(head + "quantizer: {plugin: dynamic, options: {reduce_range: 3}}\n")),
            "/tmp/r.yaml:4:54: option 'reduce_range' of quantizer 'dynamic' must be bool, got an integer");
  EXPECT_EQ(check_error(parse(head + "quantizer: {plugin: dynamic, options: {scheme: symetric}}\n")),
            "/tmp/r.yaml:4:48: option 'scheme' of quantizer 'dynamic' must be one of 'symmetric', "
            "'asymmetric', got 'symetric' (did you mean 'symmetric'?)");
  EXPECT_NE(check_error(parse(head + "quantizer: {plugin: dynamic}\nvalidators: [{plugin: size, options: {min_ratio: -1}}]\n"))
                .find("min_ratio must be >= 0"),
            std::string::npos);
}

TEST(Pipeline, OutputEqualToInputIsRefused) {
  mq::Recipe r = example("/tmp");
  r.output = r.model_path;
  EXPECT_NE(check_error(r).find("is the input model; refusing to overwrite an input"), std::string::npos);
}

// A report or page named like the artifact, or like a file the run reads, would replace
// it: refused before any work, as output == input is.
TEST(Pipeline, OutputsNeedPathsOfTheirOwnApartFromTheInputs) {
  const mq::Recipe base = example("/tmp");
  mq::Recipe r = base;
  r.report = r.output;
  EXPECT_EQ(check_error(r), "report " + r.output.string() + " is also format.output; each output needs a path of its own");
  r = base;
  r.report = "/tmp/a.json";
  r.html_report = "/tmp/./a.json";
  EXPECT_EQ(check_error(r), "html_report /tmp/./a.json is also report; each output needs a path of its own");
  r = base;
  r.report = r.model_path;
  EXPECT_EQ(check_error(r), "report " + r.model_path.string() + " is the input model; refusing to overwrite an input");
  r = base;
  r.calibration = mq::Calibration{"/tmp/calibration.safetensors", std::nullopt};
  r.html_report = "/tmp/calibration.safetensors";
  EXPECT_EQ(check_error(r), "html_report /tmp/calibration.safetensors is the calibration data; refusing to overwrite an input");
  // Inside an HF model directory (all of whose files are read and hashed), even where
  // nothing exists yet.
  mq::test::ScratchDir dir("api-inside");
  mq::test::write_hf_directory(dir / "model");
  r = base;
  r.model_path = dir / "model";
  r.output = dir / "model/../model/quantized/out";
  EXPECT_EQ(check_error(r), "format.output " + r.output.string() + " lies inside the input model (" +
                                r.model_path.string() + "), whose files are all read; write it elsewhere");
  r.output = dir / "model-quantized";  // beside it, with a name it starts with
  r.report = dir / "model.json";
  EXPECT_NO_THROW(mq::Pipeline(r, with_fixtures()).check());
}

TEST(Pipeline, MissingModelIsABadInput) {
  mq::test::ScratchDir dir("api-missing");
  mq::Recipe r = example(dir.path());
  r.model_path = dir / "absent.safetensors";
  try {
    mq::Pipeline(r).run();
    FAIL();
  } catch (const mq::Error& e) {
    EXPECT_EQ(e.code(), mq::ExitCode::kBadInput);
  }
  EXPECT_FALSE(fs::exists(r.output));
}

}  // namespace
