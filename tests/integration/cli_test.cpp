// mq-pipeline run as a user runs it: the real binary, real files, exit codes.

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

#include "mq/files.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using mq::test::run_pipeline;

const std::string kExample = std::string(MQ_SOURCE_DIR) + "/configs/example-dynamic-int8.yaml";

// The example recipe with its outputs redirected into `dir`.
std::string example_args(const mq::test::ScratchDir& dir, const std::string& extra = "") {
  return "run '" + kExample + "' --set format.output='" + (dir / "out.safetensors").string() +
         "' --set report='" + (dir / "report.json").string() + "' --set html_report='" +
         (dir / "report.html").string() + "' " + extra;
}

void expect_one_line_error(const mq::test::CommandResult& r) {
  EXPECT_EQ(r.err.rfind("mq-pipeline: error: ", 0), 0u) << r.err;
  EXPECT_EQ(mq::test::count_lines(r.err), 1) << r.err;
}

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

TEST(Cli, RecipeErrorExitsTwoWithPosition) {
  mq::test::ScratchDir dir("cli-recipe-error");
  mq::test::write_file(dir / "r.yaml", "version: 1\nmodel: {path: m.safetensors}\nquantiser: {}\n");
  const auto r = run_pipeline("run '" + (dir / "r.yaml").string() + "'");
  EXPECT_EQ(r.exit_code, 2);
  expect_one_line_error(r);
  EXPECT_NE(r.err.find("r.yaml:3:1: unknown key 'quantiser' (did you mean 'quantizer'?)"),
            std::string::npos) << r.err;
}

TEST(Cli, BadSetExitsTwo) {
  mq::test::ScratchDir dir("cli-bad-set");
  const auto r = run_pipeline(example_args(dir, "--set quantizer.options"));
  EXPECT_EQ(r.exit_code, 2);
  expect_one_line_error(r);
}

TEST(Cli, TruncatedModelExitsThreeAndWritesNothing) {
  mq::test::ScratchDir dir("cli-bad-input");
  const std::string model = mq::test::read_file(std::string(MQ_SOURCE_DIR) + "/configs/models/mlp.safetensors");
  mq::test::write_file(dir / "m.safetensors", model.substr(0, model.size() - 100));
  const auto r = run_pipeline(example_args(dir, "--set model.path='" + (dir / "m.safetensors").string() + "'"));
  EXPECT_EQ(r.exit_code, 3);
  expect_one_line_error(r);
  EXPECT_NE(r.err.find("m.safetensors: the tensors cover"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "out.safetensors"));
}

TEST(Cli, RefusedPluginExitsFour) {
  mq::test::ScratchDir dir("cli-plugin-error");
  const auto r = run_pipeline(example_args(dir, "--plugin-path '" MQ_FIXTURE_DIR "/wrong_abi'"));
  EXPECT_EQ(r.exit_code, 4);
  expect_one_line_error(r);
  EXPECT_NE(r.err.find("ABI tag"), std::string::npos);
}

// Linux file names are bytes: a model and an output whose names are not UTF-8 are read
// and written under those names; the report (JSON) shows the bytes as U+FFFD.
TEST(Cli, PathsThatAreNotUtf8AreReadWrittenAndReported) {
  mq::test::ScratchDir dir("cli-not-utf8");
  const fs::path model = dir / "m\xffx.safetensors";
  fs::copy_file(std::string(MQ_SOURCE_DIR) + "/configs/models/mlp.safetensors", model);
  const fs::path output = dir / "o\xff.safetensors";
  const auto r = run_pipeline("run '" + kExample + "' -q --set model.path='" + model.string() +
                              "' --set format.output='" + output.string() + "' --set report='" +
                              (dir / "report.json").string() + "' --set html_report=null");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(output));
  const auto report = nlohmann::json::parse(mq::test::read_file(dir / "report.json"));
  const std::string path = report["inputs"][0]["path"];
  EXPECT_EQ(path, (dir / "m\xef\xbf\xbdx.safetensors").string());
  const auto inspect = run_pipeline("inspect --json '" + output.string() + "'");
  ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
  EXPECT_EQ(nlohmann::json::parse(inspect.out)["file"], (dir / "o\xef\xbf\xbd.safetensors").string());
}

TEST(Cli, UnwritableOutputExitsSix) {
  mq::test::ScratchDir dir("cli-output-error");
  mq::test::write_file(dir / "file", "x");
  const auto r = run_pipeline("run '" + kExample + "' -q --set report=null --set html_report=null --set format.output='" +
                              (dir / "file" / "out.safetensors").string() + "'");
  EXPECT_EQ(r.exit_code, 6);
  expect_one_line_error(r);
}

// The environment that preloads a failing disk (tests/support/faulty_disk.cpp).
std::string faulty_disk(const std::string& failing) {
  return "LD_PRELOAD='" MQ_FAULTY_DISK_LIB "' ASAN_OPTIONS=verify_asan_link_order=0 MQ_TEST_FAIL=" + failing;
}

void expect_old_artifact_kept(const mq::test::ScratchDir& dir, const fs::path& artifact) {
  EXPECT_TRUE(mq::test::read_file(artifact) == "earlier good artifact");
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".mq-tmp"), std::string::npos) << e.path();
}

// A disk that cannot flush the new artifact (every fsync fails): nothing replaces the
// old one and no temporary is left.
TEST(Cli, OutputThatCannotBeFlushedExitsSixAndKeepsTheOldArtifact) {
  mq::test::ScratchDir dir("cli-fsync-error");
  mq::test::write_file(dir / "out.safetensors", "earlier good artifact");
  const auto r = run_pipeline(example_args(dir, "-q"), {}, faulty_disk("fsync"));
  EXPECT_EQ(r.exit_code, 6);
  expect_one_line_error(r);
  EXPECT_NE(r.err.find((dir / "out.safetensors").string() + ": cannot flush to disk (Input/output error)"),
            std::string::npos) << r.err;
  expect_old_artifact_kept(dir, dir / "out.safetensors");
}

// A full disk, for each format's writer (the pt state-dict writer aborted the process:
// PyTorch's archive writer threw again from its destructor).
TEST(Cli, FullDiskExitsSixAndKeepsTheOldArtifact) {
  for (const char* format : {"safetensors", "pt"}) {
    SCOPED_TRACE(format);
    mq::test::ScratchDir dir("cli-full-disk");
    const fs::path artifact = dir / (std::string("out.") + format);
    mq::test::write_file(artifact, "earlier good artifact");
    const auto r = run_pipeline("run '" + kExample + "' -q --set format.plugin=" + format + " --set format.output='" +
                                    artifact.string() + "' --set report=null --set html_report=null",
                                {}, faulty_disk("write"));
    EXPECT_EQ(r.exit_code, 6);
    expect_one_line_error(r);
    EXPECT_NE(r.err.find("write failed"), std::string::npos) << r.err;
    expect_old_artifact_kept(dir, artifact);
  }
}

// A disk that fills up while a large entry is written, which happens behind the
// quantizer on a thread of its own: the model's last entry here, so the error comes out
// after quantizing.
TEST(Cli, FullDiskDuringALargeEntryExitsSixAndKeepsTheOldArtifact) {
  mq::test::ScratchDir dir("cli-full-disk-large");
  const fs::path model = dir / "model.safetensors", artifact = dir / "out.safetensors";
  mq::test::write_safetensors(model, {{"a.weight", at::randn({16, 16})}, {"b.weight", at::randn({1200, 1024})}});
  mq::test::write_file(artifact, "earlier good artifact");
  const auto r = run_pipeline("run '" + kExample + "' -q --set model.path='" + model.string() + "' --set format.output='" +
                                  artifact.string() + "' --set validators=[] --set report=null --set html_report=null",
                              {}, faulty_disk("large"));
  EXPECT_EQ(r.exit_code, 6);
  expect_one_line_error(r);
  EXPECT_NE(r.err.find("write failed (No space left on device)"), std::string::npos) << r.err;
  expect_old_artifact_kept(dir, artifact);
}

// Runs `command` with /bin/sh in a process of its own, to be signalled; its pid.
pid_t spawn(const std::string& command) {
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// What the JSON report of an interrupted run says.
const char* const kInterruptedReport = "\"status\": 130,\n  \"message\": \"interrupted by a signal\"";

// Interrupted while it writes (slowed down), a run exits 130 and removes what it was
// writing: the pt writer's temporary file, an HF model directory's temporary directory
// (the signal handler alone could not remove a directory); the old artifact stays.
TEST(Cli, InterruptedRunExits130AndLeavesNoTemporary) {
  mq::test::ScratchDir hf("cli-interrupt-hf-model");
  mq::test::write_hf_directory(hf / "model");
  const std::vector<std::pair<std::string, std::string>> runs = {
      {"out.pt", "--set format.plugin=pt"},
      {"model-int8", "--set model.path='" + (hf / "model").string() + "' --set format.plugin=safetensors"}};
  for (int sig : {SIGINT, SIGTERM, SIGHUP})
    for (const auto& [name, sets] : runs) {
      SCOPED_TRACE(std::to_string(sig) + " " + name);
      mq::test::ScratchDir dir("cli-interrupt");
      const fs::path artifact = dir / name;
      if (name == "model-int8") {
        fs::create_directories(artifact);
        mq::test::write_file(artifact / "config.json", "earlier good artifact");
      } else {
        mq::test::write_file(artifact, "earlier good artifact");
      }
      // The reports of an earlier run give way to ones that say this run was stopped.
      mq::test::write_file(dir / "report.json", "earlier report");
      mq::test::write_file(dir / "report.html", "earlier report");
      const std::string command = "exec env " + faulty_disk("slow") + " MQ_PLUGIN_PATH= '" MQ_PIPELINE_EXE "' run '" +
                                  kExample + "' -q " + sets + " --set format.output='" + artifact.string() +
                                  "' --set report='" + (dir / "report.json").string() + "' --set html_report='" +
                                  (dir / "report.html").string() + "' --set validators=[] 2>/dev/null";
      const pid_t pid = spawn(command);
      ASSERT_GT(pid, 0);
      const auto temporaries = [&] {
        int n = 0;
        for (const auto& e : fs::directory_iterator(dir.path()))
          n += e.path().filename().string().find(".mq-tmp") != std::string::npos;
        return n;
      };
      for (int i = 0; i < 600 && temporaries() == 0; ++i) usleep(50'000);
      EXPECT_EQ(temporaries(), 1);  // it is writing
      kill(pid, sig);
      int status = 0;
      ASSERT_EQ(waitpid(pid, &status, 0), pid);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 130) << status;
      EXPECT_EQ(temporaries(), 0);
      EXPECT_TRUE(mq::test::read_file(name == "model-int8" ? artifact / "config.json" : artifact) ==
                  "earlier good artifact");
      const std::string report = mq::test::read_file(dir / "report.json");
      EXPECT_NE(report.find(kInterruptedReport), std::string::npos) << report;
      EXPECT_NE(report.find("\"recipe_hash\""), std::string::npos) << report;
      EXPECT_NE(mq::test::read_file(dir / "report.html").find("interrupted by a signal"), std::string::npos);
    }
}

// Interrupted while it reads its model (each read slowed down), a run's reports say so:
// an earlier run's report does not stand for it.
TEST(Cli, RunInterruptedWhileReadingTheModelReportsIt) {
  mq::test::ScratchDir dir("cli-interrupt-read");
  const std::string recipe = std::string(MQ_SOURCE_DIR) + "/configs/example-torchscript-int8.yaml";
  const fs::path model = fs::canonical(std::string(MQ_SOURCE_DIR) + "/configs/models/mlp.pt");
  mq::test::write_file(dir / "report.json", "earlier report");
  const std::string command = "exec env " + faulty_disk("slowread") + " MQ_PLUGIN_PATH= '" MQ_PIPELINE_EXE "' run '" +
                              recipe + "' -q --set format.output='" + (dir / "out.pt").string() +
                              "' --set report='" + (dir / "report.json").string() +
                              "' --set html_report=null --set validators=[] 2>/dev/null";
  const pid_t pid = spawn(command);
  ASSERT_GT(pid, 0);
  const auto reading_model = [&] {
    std::error_code ec;
    for (const auto& fd : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec))
      if (fs::read_symlink(fd.path(), ec) == model) return true;
    return false;
  };
  for (int i = 0; i < 600 && !reading_model(); ++i) usleep(20'000);
  EXPECT_TRUE(reading_model());
  kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 130) << status;
  const std::string report = mq::test::read_file(dir / "report.json");
  EXPECT_NE(report.find(kInterruptedReport), std::string::npos) << report;
  EXPECT_FALSE(fs::exists(dir / "out.pt"));
}

TEST(Cli, OutputEqualToInputExitsTwo) {
  const auto r = run_pipeline("run '" + kExample + "' --set format.output=models/mlp.safetensors --set report=null "
                              "--set html_report=null");
  EXPECT_EQ(r.exit_code, 2);
  expect_one_line_error(r);
}

// The recipe is an input too: a report (or artifact) named like it would replace the
// user's recipe.
TEST(Cli, OutputEqualToTheRecipeExitsTwoAndKeepsIt) {
  mq::test::ScratchDir dir("cli-output-recipe");
  const std::string recipe = "version: 1\nmodel: {path: '" + std::string(MQ_SOURCE_DIR) +
                             "/configs/models/mlp.safetensors'}\nquantizer: {plugin: dynamic}\n"
                             "format: {plugin: safetensors, output: out.safetensors}\n";
  mq::test::write_file(dir / "recipe.yaml", recipe);
  for (const char* key : {"report", "html_report", "format.output"}) {
    SCOPED_TRACE(key);
    const auto r = run_pipeline("run '" + (dir / "recipe.yaml").string() + "' -q --set " + key + "=recipe.yaml");
    EXPECT_EQ(r.exit_code, 2);
    expect_one_line_error(r);
    EXPECT_NE(r.err.find("is the recipe; refusing to overwrite an input"), std::string::npos) << r.err;
    EXPECT_EQ(mq::test::read_file(dir / "recipe.yaml"), recipe);
  }
}

// A directory where a report goes is refused before any work: at the end of the run it
// failed after the artifact had replaced the previous one.
TEST(Cli, ReportPathThatIsADirectoryExitsTwoBeforeAnyWork) {
  mq::test::ScratchDir dir("cli-report-directory");
  fs::create_directories(dir / "reports");
  for (const char* key : {"report", "html_report"}) {
    SCOPED_TRACE(key);
    const auto r = run_pipeline(example_args(dir, std::string("-q --set ") + key + "='" + (dir / "reports").string() + "'"));
    EXPECT_EQ(r.exit_code, 2);
    expect_one_line_error(r);
    EXPECT_NE(r.err.find(key + std::string(" ") + (dir / "reports").string() + " is a directory"), std::string::npos)
        << r.err;
    EXPECT_FALSE(fs::exists(dir / "out.safetensors"));
  }
  mq::test::write_file(dir / "out.safetensors", "earlier artifact");
  const auto validate = run_pipeline("validate '" + (dir / "out.safetensors").string() + "' --reference '" MQ_SOURCE_DIR
                                     "/configs/models/mlp.safetensors' --html '" + (dir / "reports").string() + "'");
  EXPECT_EQ(validate.exit_code, 2);
  EXPECT_NE(validate.err.find("the HTML report " + (dir / "reports").string() + " is a directory"), std::string::npos)
      << validate.err;
}

// A report that cannot be written where it goes (a file where its directory must be,
// a directory the user cannot write in) is refused before any work: at the end of the
// run it failed after the artifact had replaced the previous one.
TEST(Cli, ReportThatCannotBeWrittenExitsSixBeforeAnyWork) {
  mq::test::ScratchDir dir("cli-report-unwritable");
  mq::test::write_file(dir / "file", "x");
  fs::create_directory(dir / "read-only");
  fs::permissions(dir / "read-only", fs::perms::owner_read | fs::perms::owner_exec);
  std::vector<std::pair<fs::path, std::string>> places{{dir / "file", "not a directory"}};
  // root writes anywhere: that case is then the nobody user's run, in a directory of its
  // own, where the nobody user can reach the build and the recipe (not under a 0700 home).
  const std::string nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups";
  std::string user;
  if (geteuid() != 0) {
    places.emplace_back(dir / "read-only", "Permission denied");
  } else if (std::system((nobody + " test -x '" MQ_PIPELINE_EXE "' -a -r '" + kExample + "'").c_str()) == 0) {
    ASSERT_EQ(chown(dir.path().c_str(), 65534, 65534), 0);
    ASSERT_EQ(chown((dir / "read-only").c_str(), 65534, 65534), 0);
    user = nobody;
    places.emplace_back(dir / "read-only", "Permission denied");
  } else {
    std::cerr << "note: the nobody user cannot reach this build; the read-only directory case is left out\n";
  }
  for (const auto& [place, why] : places) {
    for (const char* key : {"report", "html_report"}) {
      SCOPED_TRACE(place.string() + " " + key);
      mq::test::write_file(dir / "out.safetensors", "earlier good artifact");
      const fs::path report = place / "reports" / "report";
      const auto r = run_pipeline(example_args(dir, std::string("-q --set ") + key + "='" + report.string() + "'"), {},
                                  user);
      EXPECT_EQ(r.exit_code, 6);
      expect_one_line_error(r);
      EXPECT_NE(r.err.find(key + std::string(" ") + report.string() + ": cannot write in " + place.string() + " (" +
                           why + ")"),
                std::string::npos)
          << r.err;
      expect_old_artifact_kept(dir, dir / "out.safetensors");
      EXPECT_FALSE(fs::exists(dir / "report.json"));
    }
  }
}

// A model file gives a file: a directory where it goes is refused before any work (no
// report: a failure after the recipe's check writes one) and left as it was.
TEST(Cli, DirectoryInTheArtifactsPlaceExitsSixBeforeAnyWork) {
  mq::test::ScratchDir dir("cli-artifact-directory");
  mq::test::write_file(dir / "out.safetensors" / "kept", "x");
  const auto r = run_pipeline(example_args(dir, "-q"));
  EXPECT_EQ(r.exit_code, 6);
  expect_one_line_error(r);
  EXPECT_NE(r.err.find("format.output " + (dir / "out.safetensors").string() +
                       " exists as a directory; refusing to replace it with a file"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(dir / "report.json"));
  EXPECT_EQ(mq::test::read_file(dir / "out.safetensors" / "kept"), "x");
  // A model that is missing is what the user hears of first.
  const auto missing = run_pipeline(example_args(dir, "-q --set model.path='" + (dir / "missing.safetensors").string() + "'"));
  EXPECT_EQ(missing.exit_code, 3) << missing.err;
}

// A run writes beside each output and renames over it: where one is a pipe or a device
// (/dev/null: not tested here, for a regression would replace the machine's), the run
// is refused before any work and the pipe left as it was.
TEST(Cli, PipeWhereAnOutputGoesExitsSixBeforeAnyWork) {
  mq::test::ScratchDir dir("cli-output-pipe");
  const fs::path pipe = dir / "pipe";
  ASSERT_EQ(::mkfifo(pipe.c_str(), 0644), 0);
  for (const std::string key : {"format.output", "report", "html_report"}) {
    const auto r = run_pipeline(example_args(dir, "-q --set " + key + "='" + pipe.string() + "'"));
    EXPECT_EQ(r.exit_code, 6) << key;
    expect_one_line_error(r);
    EXPECT_NE(r.err.find(key + " " + pipe.string() + " is a pipe, which a written file would replace"),
              std::string::npos)
        << r.err;
    EXPECT_TRUE(fs::is_fifo(pipe)) << key;
    EXPECT_FALSE(fs::exists(dir / "out.safetensors")) << key;
  }
  fs::copy_file(MQ_SOURCE_DIR "/configs/models/mlp.safetensors", dir / "copy.safetensors");
  const auto validate = run_pipeline("validate '" + (dir / "copy.safetensors").string() + "' --reference '" +
                                     MQ_SOURCE_DIR "/configs/models/mlp.safetensors' --report '" + pipe.string() +
                                     "'");
  EXPECT_EQ(validate.exit_code, 6) << validate.err;
  EXPECT_TRUE(fs::is_fifo(pipe));
}

TEST(Cli, CheckResolvesPluginsWithoutWork) {
  mq::test::ScratchDir dir("cli-check");
  const auto ok = run_pipeline("check '" + kExample + "' --set format.output='" + (dir / "o.safetensors").string() + "'");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find(": ok: 2 of 5 tensors quantized, 66560 -> "), std::string::npos) << ok.out;
  EXPECT_FALSE(fs::exists(dir / "o.safetensors"));
  const auto json = run_pipeline("check --json '" + kExample + "'");
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const auto answer = nlohmann::json::parse(json.out);
  EXPECT_EQ(answer["status"], 0);
  EXPECT_EQ(answer["quantized"], 2);
  EXPECT_EQ(answer["recipe_hash"].get<std::string>().size(), 32u);
  const auto bad = run_pipeline("check '" + kExample + "' --set quantizer.options.dtype=int3");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("got 'int3' (did you mean 'int8'?)"), std::string::npos) << bad.err;
}

// What a run refuses for reasons known before its work, `check` and `run --dry-run`
// refuse too, with the same message and exit code.
TEST(Cli, CheckAndDryRunRefuseWhatARunWouldRefuse) {
  mq::test::ScratchDir dir("cli-check-parity");
  const std::string torchscript = std::string(MQ_SOURCE_DIR) + "/configs/example-torchscript-int8.yaml";
  const std::string output = " --set format.output='" + (dir / "out.pt").string() + "' --set report=null";
  const struct {
    std::string args, message;
    int code;
  } cases[] = {
      {"'" + kExample + "' --set model.path=missing.safetensors", "missing.safetensors: no such file or directory (model)", 3},
      {"'" + kExample + "' --set observer.plugin=histogram",
       "the histogram observer is per tensor (as PyTorch's); use minmax, moving_average or percentile for per_channel", 2},
      {"'" + torchscript + "' --set quantizer.options.scheme=asymmetric",
       "TorchScript output runs PyTorch's int8 kernels for symmetric int8 weights", 2},
      {"'" + kExample + "' --set quantizer.plugin=static --set calibration.random.shape=[2,64]",
       "static quantization runs calibration batches through the model, and this model cannot run", 2},
      {"'" + torchscript + "' --set quantizer.plugin=static",
       "static quantization needs calibration data: set calibration.path or calibration.random", 2},
      {"'" + torchscript + "' --set model.input.shape=[3,5]", "model.input of shape [3, 5] does not fit the model", 2},
  };
  for (const auto& c : cases) {
    for (const std::string command : {"check ", "run --dry-run ", "run "}) {
      SCOPED_TRACE(command + c.args);
      const auto r = run_pipeline(command + c.args + output);
      EXPECT_EQ(r.exit_code, c.code) << r.err;
      EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
      expect_one_line_error(r);
      EXPECT_FALSE(fs::exists(dir / "out.pt"));
    }
  }
}

TEST(Cli, PluginsListsTheBuiltInsAsJson) {
  const auto r = run_pipeline("plugins --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto list = nlohmann::json::parse(r.out);
  std::set<std::string> names;
  for (const auto& p : list) names.insert(p["kind"].get<std::string>() + "/" + p["name"].get<std::string>());
  for (const char* n : {"observer/minmax", "quantizer/dynamic", "format/safetensors", "validator/size"})
    EXPECT_TRUE(names.count(n)) << n;
  EXPECT_EQ(run_pipeline("plugins").exit_code, 0);
}

TEST(Cli, ValidateChecksAnExistingArtifact) {
  mq::test::ScratchDir dir("cli-validate");
  ASSERT_EQ(run_pipeline(example_args(dir, "-q")).exit_code, 0);
  const std::string artifact = "'" + (dir / "out.safetensors").string() + "'";
  const std::string reference = " --reference '" MQ_SOURCE_DIR "/configs/models/mlp.safetensors'";
  const auto ok = run_pipeline("validate " + artifact + reference + " --report '" +
                               (dir / "validate.json").string() + "'");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("load_run    pass    read back 5 tensors bit-exactly"), std::string::npos) << ok.out;
  const auto report = nlohmann::json::parse(mq::test::read_file(dir / "validate.json"));
  EXPECT_EQ(report["validators"].size(), 4u);
  EXPECT_EQ(report["layers"][0]["spec"], "int8 per_channel(axis=0) symmetric");

  const auto strict = run_pipeline("validate " + artifact + reference + " --validators sqnr,range --option sqnr.min_db=60");
  EXPECT_EQ(strict.exit_code, 5);
  expect_one_line_error(strict);
  EXPECT_NE(strict.err.find("is below min_db 60.00 dB"), std::string::npos) << strict.err;
  EXPECT_EQ(run_pipeline("validate " + artifact + reference + " --validators sqnr --option sqnr.min_db=60 "
                         "--on-failure warn -q").exit_code, 0);

  const auto bad_option = run_pipeline("validate " + artifact + reference + " --validators sqnr --option size.min_ratio=2");
  EXPECT_EQ(bad_option.exit_code, 2);
  const auto typo = run_pipeline("validate " + artifact + reference + " --validators sqnr --option sqnr.min_bd=2");
  EXPECT_EQ(typo.exit_code, 2);
  EXPECT_NE(typo.err.find("(did you mean 'min_db'?)"), std::string::npos) << typo.err;

  const std::string bytes = mq::test::read_file(dir / "out.safetensors");
  const auto over = run_pipeline("validate " + artifact + reference + " --report " + artifact);  // would replace it
  EXPECT_EQ(over.exit_code, 2);
  EXPECT_NE(over.err.find("is the artifact; refusing to overwrite an input"), std::string::npos) << over.err;
  EXPECT_TRUE(bytes == mq::test::read_file(dir / "out.safetensors"));
  mq::test::write_file(dir / "cut.safetensors", bytes.substr(0, bytes.size() / 2));
  const auto truncated = run_pipeline("validate '" + (dir / "cut.safetensors").string() + "'" + reference);
  EXPECT_EQ(truncated.exit_code, 3);
  expect_one_line_error(truncated);

  // A reference that is not the model the artifact was made from: each difference is
  // named (validators compare only what they look at, and passed these).
  const auto other = [&](const std::vector<std::pair<std::string, at::Tensor>>& tensors, const std::string& more_args = "") {
    mq::test::write_safetensors(dir / "other.safetensors", tensors);
    return run_pipeline("validate " + artifact + " --reference '" + (dir / "other.safetensors").string() + "'" + more_args);
  };
  const std::vector<std::pair<std::string, at::Tensor>> mlp{
      {"fc1.weight", at::randn({128, 64})}, {"fc1.bias", at::randn({128})}, {"fc2.weight", at::randn({64, 128})},
      {"fc2.bias", at::randn({64})}, {"norm.weight", at::randn({64})}};
  auto more = mlp, fewer = mlp, wider = mlp;
  more.push_back({"head.weight", at::randn({8, 64})});
  fewer.pop_back();
  wider[2].second = at::randn({64, 256});
  for (const auto& [tensors, why] : {std::pair{more, "the reference's tensor 'head.weight' is not in it"},
                                     std::pair{fewer, "its tensor 'norm.weight' is not in the reference"},
                                     std::pair{wider, "its tensor 'fc2.weight' has shape [64, 128], the reference's [64, 256]"}}) {
    const auto r = other(tensors);
    EXPECT_EQ(r.exit_code, 3) << why;
    expect_one_line_error(r);
    EXPECT_NE(r.err.find("out.safetensors is not a quantization of " + (dir / "other.safetensors").string() + ": " + why),
              std::string::npos) << r.err;
  }
  EXPECT_EQ(other(mlp, " --validators size").exit_code, 0);  // same names and shapes: validators judge
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
  const auto random = run_pipeline(base + "--set 'calibration={random: {shape: [4, 64], batches: 3, seed: 1}}'");
  EXPECT_EQ(random.exit_code, 0) << random.err;
  EXPECT_TRUE(fs::exists(dir / "o.safetensors"));
}

TEST(Cli, InspectListsTensorsQuantizationAndProvenance) {
  mq::test::ScratchDir dir("cli-inspect");
  ASSERT_EQ(run_pipeline(example_args(dir, "-q --set quantizer.options.dtype=int4 --set quantizer.options.granularity=auto --set validators=[]")).exit_code, 0);
  const auto text = run_pipeline("inspect '" + (dir / "out.safetensors").string() + "'");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("5 tensors (2 quantized, mode dynamic)"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("mq.recipe_hash"), std::string::npos);
  EXPECT_NE(text.out.find("fc1.weight   int4        [128,64]"), std::string::npos) << text.out;
  const auto json = nlohmann::json::parse(run_pipeline("inspect --json '" + (dir / "out.safetensors").string() + "'").out);
  EXPECT_EQ(json["tensors"][0]["quantization"], "int4 per_group(128) symmetric");
  EXPECT_EQ(json["tensors"][0]["scale_shape"], (std::vector<int64_t>{128, 1}));
  EXPECT_EQ(json["tensors"][1]["dtype"], "float32");
  const auto model = run_pipeline("inspect '" MQ_SOURCE_DIR "/configs/models/mlp.pt'");
  EXPECT_EQ(model.exit_code, 3);
  expect_one_line_error(model);
  EXPECT_NE(model.err.find("if you trust it, say so: --trust-torchscript (inspect, validate, init)"), std::string::npos)
      << model.err;
  EXPECT_EQ(run_pipeline("inspect --trust-torchscript '" MQ_SOURCE_DIR "/configs/models/mlp.pt'").exit_code, 0);
  EXPECT_EQ(run_pipeline("inspect '" + (dir / "absent").string() + "'").exit_code, 3);
}

// A tensor of a dtype LibTorch lacks goes through a run untouched, inspect lists it as
// the file has it; pt, which cannot hold it, is refused before any work, and so is a
// calibration batch of such a dtype (its values cannot be read).
TEST(Cli, DtypesLibTorchLacksArePassedThroughOrRefused) {
  mq::test::ScratchDir dir("cli-foreign-dtypes");
  const at::Tensor w = at::randn({32, 64});
  const std::string weight(static_cast<const char*>(w.data_ptr()), w.nbytes());
  mq::test::write_safetensors(dir / "in.safetensors",
                              {{"fc.weight", "F32", {32, 64}, weight},
                               {"ids", "U16", {3}, std::string("\x01\x00\x02\x00\xff\xff", 6)}});
  const std::string model = " --set model.path='" + (dir / "in.safetensors").string() + "'";
  ASSERT_EQ(run_pipeline(example_args(dir, "-q" + model)).exit_code, 0);
  const auto listed = run_pipeline("inspect '" + (dir / "out.safetensors").string() + "'");
  EXPECT_NE(listed.out.find("ids        U16         [3]                          6"),
            std::string::npos)
      << listed.out;

  const auto pt = run_pipeline(
      example_args(dir, "-q" + model + " --set format.plugin=pt --set format.output='" +
                            (dir / "out.pt").string() + "'"));
  EXPECT_EQ(pt.exit_code, 2);
  expect_one_line_error(pt);
  EXPECT_NE(pt.err.find("pt cannot store 'ids' (U16, a dtype LibTorch 1.13 lacks)"),
            std::string::npos)
      << pt.err;
  EXPECT_FALSE(fs::exists(dir / "out.pt"));
  EXPECT_EQ(
      run_pipeline(example_args(dir, "--dry-run" + model + " --set format.plugin=pt")).exit_code,
      2);

  const auto calibration = run_pipeline(
      example_args(dir, "-q --set calibration.path='" + (dir / "in.safetensors").string() + "'"));
  EXPECT_EQ(calibration.exit_code, 3);
  expect_one_line_error(calibration);
  EXPECT_NE(calibration.err.find("calibration batch 'ids' is U16, which LibTorch cannot represent"),
            std::string::npos)
      << calibration.err;
}

// A safetensors file named model.pt is written (the recipe says so) with a warning:
// inspect, like other tools, goes by the name.
TEST(Cli, AnOutputNamedForAnotherFormatIsWrittenWithAWarning) {
  mq::test::ScratchDir dir("cli-misnamed");
  const auto r = run_pipeline(example_args(dir, "-q --set format.output='" + (dir / "model.pt").string() + "'"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "mq-pipeline: warning: format 'safetensors' wrote " + (dir / "model.pt").string() +
                       ", a name it does not take for its own: tools that go by the name (mq-pipeline inspect "
                       "included) will not read it as such\n");
  EXPECT_TRUE(fs::exists(dir / "model.pt"));
  const auto named = run_pipeline(example_args(dir, "-q"));
  EXPECT_EQ(named.exit_code, 0);
  EXPECT_EQ(named.err, "");
}

// "out/" names a directory: an HF directory's artifact goes there (it failed after the
// work: the trailing slash made the promote's rename fail); a model file's is refused
// before any, and nothing is made.
TEST(Cli, OutputEndingInASlashIsADirectory) {
  mq::test::ScratchDir dir("cli-output-slash");
  mq::test::write_hf_directory(dir / "model");
  const std::string hf = "-q --set model.path='" + (dir / "model").string() + "' --set validators=[]";
  for (int run = 0; run < 2; ++run) {  // the second replaces the first
    const auto r = run_pipeline(example_args(dir, hf + " --set format.output='" + (dir / "out").string() + "/'"));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(fs::exists(dir / "out" / "config.json"));
  }
  const auto hash = [&](const std::string& output) {  // "out/" is the same recipe as "out"
    const auto r = run_pipeline("check '" + kExample + "' --set model.path='" + (dir / "model").string() +
                                "' --set format.output='" + output + "'");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out.substr(r.out.find("recipe hash"));
  };
  EXPECT_EQ(hash((dir / "out").string() + "/"), hash((dir / "out").string()));
  const auto file = run_pipeline(example_args(dir, "-q --set format.output='" + (dir / "file").string() + "/'"));
  EXPECT_EQ(file.exit_code, 2);
  expect_one_line_error(file);
  EXPECT_NE(file.err.find("names a directory, and a model file gives a file: name the file"), std::string::npos)
      << file.err;
  EXPECT_FALSE(fs::exists(dir / "file"));
}

TEST(Cli, HuggingFaceDirectoryInAndOutIsPromotedWhole) {
  mq::test::ScratchDir dir("cli-hf");
  mq::test::write_hf_directory(dir / "model");
  mq::test::write_file(dir / "recipe.yaml", R"(version: 1
model: {path: model}
quantizer: {plugin: dynamic, options: {dtype: int4, group_size: 16}}
format: {plugin: safetensors, output: out/model-int4}
validators: [{plugin: sqnr, options: {min_db: 10}}, {plugin: size}, {plugin: load_run}, {plugin: range}]
report: out/report.json
)");
  const auto r = run_pipeline("run -q '" + (dir / "recipe.yaml").string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir / "out/model-int4/model.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "out/model-int4/config.json"));
  const auto report = nlohmann::json::parse(mq::test::read_file(dir / "out/report.json"));
  EXPECT_EQ(report["layers"][4]["rule"], "default skip: lm_head");
  // A failing run leaves the previous directory exactly as it was, and no temporary.
  std::string before = mq::test::read_file(dir / "out/model-int4/model.safetensors");
  const auto failed = run_pipeline("run -q '" + (dir / "recipe.yaml").string() +
                                   "' --set quantizer.options.group_size=8 --set validators.0.options.min_db=99");
  EXPECT_EQ(failed.exit_code, 5);
  EXPECT_TRUE(before == mq::test::read_file(dir / "out/model-int4/model.safetensors"));
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir / "out")) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"model-int4", "report.json"}));
  // A successful run replaces it: the two exchanged in one step, or (a file system
  // without RENAME_EXCHANGE) the old one moved aside first.
  for (const std::string& env : {std::string(), faulty_disk("exchange")}) {
    SCOPED_TRACE(env);
    const auto again = run_pipeline("run -q '" + (dir / "recipe.yaml").string() + "' --set quantizer.options.group_size=" +
                                        (env.empty() ? "8" : "32"),
                                    {}, env);
    ASSERT_EQ(again.exit_code, 0) << again.err;
    const std::string after = mq::test::read_file(dir / "out/model-int4/model.safetensors");
    EXPECT_FALSE(before == after);
    before = after;
    std::vector<std::string> now;
    for (const auto& e : fs::directory_iterator(dir / "out")) now.push_back(e.path().filename().string());
    std::sort(now.begin(), now.end());
    EXPECT_EQ(now, left);
  }
  // A file where the directory goes is not replaced.
  mq::test::write_file(dir / "out/file-instead", "keep me");
  const auto clash = run_pipeline("run -q '" + (dir / "recipe.yaml").string() + "' --set format.output=out/file-instead");
  EXPECT_EQ(clash.exit_code, 6);
  EXPECT_EQ(mq::test::read_file(dir / "out/file-instead"), "keep me");
  // A config.json that is not a JSON object is refused as the model is read, before any work.
  mq::test::write_file(dir / "model/config.json", "[1, 2]");
  const auto config = run_pipeline("run '" + (dir / "recipe.yaml").string() + "' --set format.output=out/never");
  EXPECT_EQ(config.exit_code, 3);
  expect_one_line_error(config);
  EXPECT_NE(config.err.find("reading the model: " + (dir / "model/config.json").string() + ": not a JSON object"),
            std::string::npos) << config.err;
  EXPECT_EQ(config.err.find("quantize"), std::string::npos) << config.err;  // no progress line came before
  EXPECT_FALSE(fs::exists(dir / "out/never"));
}

// Past max_shard_bytes an HF directory out is sharded with an index; validators, inspect
// and a second run read it as they read one file.
// Each shard's descriptor stays open while its tensors are read (Model::read_into): a
// model of more shards than the soft limit on open files (1024 on many desktops) runs,
// the limit raised to the hard one.
TEST(Cli, ModelOfMoreShardsThanTheSoftFileLimitRuns) {
  rlimit files{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &files), 0);
  if (files.rlim_max != RLIM_INFINITY && files.rlim_max < 512) GTEST_SKIP() << "hard limit " << files.rlim_max;
  mq::test::ScratchDir dir("cli-many-shards");
  fs::create_directories(dir / "model");
  nlohmann::json weight_map;
  for (int i = 0; i < 100; ++i) {
    const std::string shard = "model-" + std::to_string(i) + ".safetensors", name = "l" + std::to_string(i) + ".weight";
    mq::test::write_safetensors(dir / "model" / shard, {{name, at::randn({8, 8})}});
    weight_map[name] = shard;
  }
  mq::test::write_file(dir / "model/model.safetensors.index.json", nlohmann::json{{"weight_map", weight_map}}.dump());
  mq::test::write_file(dir / "recipe.yaml", "version: 1\nmodel: {path: model/model.safetensors.index.json}\n"
                                            "quantizer: {plugin: dynamic}\nformat: {plugin: safetensors, output: out.safetensors}\n"
                                            "validators: [{plugin: sqnr}, {plugin: load_run}]\n");
  const auto r = run_pipeline("run -q '" + (dir / "recipe.yaml").string() + "'", {},
                              "sh -c 'ulimit -Sn 64 && exec \"$0\" \"$@\"' ");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir / "out.safetensors"));
}

TEST(Cli, HuggingFaceDirectoryOutShardsAndReadsBack) {
  mq::test::ScratchDir dir("cli-hf-shards");
  mq::test::write_hf_directory(dir / "model");
  mq::test::write_file(dir / "recipe.yaml", R"(version: 1
model: {path: model}
quantizer: {plugin: dynamic, options: {dtype: int8}}
format: {plugin: safetensors, output: out, options: {max_shard_bytes: 10000}}
validators: [{plugin: sqnr, options: {min_db: 30}}, {plugin: size}, {plugin: load_run}, {plugin: range}]
)");
  const auto r = run_pipeline("run -q '" + (dir / "recipe.yaml").string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(dir / "out/model.safetensors"));
  const auto index = nlohmann::json::parse(mq::test::read_file(dir / "out/model.safetensors.index.json"));
  std::set<std::string> shards;
  for (const auto& [tensor, shard] : index["weight_map"].items()) shards.insert(shard.get<std::string>());
  EXPECT_GT(shards.size(), 1u);
  for (const std::string& shard : shards) EXPECT_TRUE(fs::exists(dir / "out" / shard)) << shard;
  const auto inspect = nlohmann::json::parse(run_pipeline("inspect --json '" + (dir / "out").string() + "'").out);
  EXPECT_EQ(inspect["tensors"].size(), 5u);
  EXPECT_EQ(inspect["bytes"].get<int64_t>(), mq::path_bytes(dir / "out"));
  // A second run reads the directory, and finds it quantized already.
  const auto again = run_pipeline("run -q '" + (dir / "recipe.yaml").string() +
                                  "' --set model.path=out --set format.output=again.safetensors --set validators=[]");
  EXPECT_EQ(again.exit_code, 3) << again.err;
  EXPECT_NE(again.err.find("out: is quantized already ('model.layers.0."), std::string::npos) << again.err;
  EXPECT_FALSE(fs::exists(dir / "again.safetensors"));
}

// In a container each run may get the same process id: what a killed run left under
// this run's own id is stale too, not written into and promoted with the new artifact.
TEST(Cli, TemporaryLeftUnderThisRunsProcessIdIsNotPromoted) {
  mq::test::ScratchDir dir("cli-same-pid");
  mq::test::write_hf_directory(dir / "model");
  mq::test::write_file(dir / "recipe.yaml", "version: 1\nmodel: {path: model}\nquantizer: {plugin: dynamic}\n"
                                            "format: {plugin: safetensors, output: hf}\n");
  // The shell leaves a killed run's shard under its own id, then becomes mq-pipeline.
  const std::string killed_run = "sh -c 'mkdir .hf.mq-tmp-$$ && echo junk >.hf.mq-tmp-$$/model-00009-of-00009.safetensors "
                                 "&& exec \"$0\" \"$@\"'";
  const auto r = run_pipeline("run -q recipe.yaml", dir.path(), killed_run);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir / "hf" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "hf" / "model-00009-of-00009.safetensors"));
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".mq-tmp"), std::string::npos) << e.path();
}

// A process id that no process has now.
pid_t dead_pid() {
  for (pid_t pid = 4194303;; --pid)
    if (kill(pid, 0) != 0 && errno == ESRCH) return pid;
}

// What a run killed outright (SIGKILL) left beside its outputs: the next run to the same
// output removes it, keeps what a live process is writing, and puts back an HF directory
// that was moved aside to be replaced when nothing replaced it.
TEST(Cli, TemporariesOfKilledRunsAreCleanedUp) {
  mq::test::ScratchDir dir("cli-stale-temps");
  const std::string dead = std::to_string(dead_pid()), live = std::to_string(getpid());
  fs::create_directories(dir / (".out.safetensors.mq-tmp-" + dead) / "x");  // a directory, too
  mq::test::write_file(dir / (".report.json.mq-tmp-" + dead), "killed");
  mq::test::write_file(dir / (".report.html.mq-tmp-" + dead + ".int"), "killed while interrupted");
  mq::test::write_file(dir / (".out.safetensors.mq-tmp-" + live), "running");
  mq::test::write_file(dir / (".out.safetensors.mq-tmp-x" + dead), "not ours");
  mq::test::write_file(dir / (".out.safetensors.mq-tmp-" + dead + ".x"), "not ours either");
  const auto r = run_pipeline(example_args(dir, "-q"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::set<std::string> left;
  for (const auto& entry : fs::directory_iterator(dir.path())) left.insert(entry.path().filename().string());
  EXPECT_EQ(left, (std::set<std::string>{"out.safetensors", "report.json", "report.html",
                                         ".out.safetensors.mq-tmp-" + live,
                                         ".out.safetensors.mq-tmp-x" + dead,
                                         ".out.safetensors.mq-tmp-" + dead + ".x"}));

  mq::test::write_hf_directory(dir / "model");
  mq::test::write_file(dir / "recipe.yaml", R"(version: 1
model: {path: model}
quantizer: {plugin: dynamic, options: {dtype: int8}}
format: {plugin: safetensors, output: hf}
validators: [{plugin: sqnr, options: {min_db: 99}}]
)");
  mq::test::write_file(dir / (".hf.mq-tmp-" + dead + ".old") / "config.json", "{}");
  const auto failed = run_pipeline("run -q '" + (dir / "recipe.yaml").string() + "'");
  EXPECT_EQ(failed.exit_code, 5) << failed.err;  // not promoted: the previous one stays
  EXPECT_EQ(mq::test::read_file(dir / "hf/config.json"), "{}");
  EXPECT_FALSE(fs::exists(dir / (".hf.mq-tmp-" + dead + ".old")));
}

// An output name close to NAME_MAX (255) fits; its temporary's name (".NAME.mq-tmp-PID")
// would not, and is shortened (with a hash of the name) rather than refused.
TEST(Cli, OutputNameNearTheFileNameLimitIsWritten) {
  mq::test::ScratchDir dir("cli-long-name");
  const std::string name = std::string(255 - 12, 'm') + ".safetensors";
  const auto r = run_pipeline(example_args(dir, "-q --set report=null --set html_report=null --set format.output='" +
                                                    (dir / name).string() + "'"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::set<std::string> left;
  for (const auto& entry : fs::directory_iterator(dir.path())) left.insert(entry.path().filename().string());
  EXPECT_EQ(left, std::set<std::string>{name});
}

TEST(Cli, ModelNoFormatReadsIsNamedFileOrDirectory) {
  mq::test::ScratchDir dir("cli-no-reader");
  fs::create_directories(dir / "empty");
  mq::test::write_file(dir / "weights.bin", "12345678");
  for (const auto& [model, what] : {std::pair{dir / "empty", "directory"}, std::pair{dir / "weights.bin", "file"}}) {
    const auto r = run_pipeline(example_args(dir, "-q --set model.path='" + model.string() + "'"));
    EXPECT_EQ(r.exit_code, 3);
    expect_one_line_error(r);
    EXPECT_NE(r.err.find(model.string() + ": no format plugin can read this " + what + " (tried 'pt', 'safetensors')"),
              std::string::npos) << r.err;
  }
}

// An artifact given as the model to quantize, or as the float reference to validate
// against, is refused by name (it used to be read as tensors: int8 weights passed
// through, scales taken for weights, and a confusing error at the end or none); a
// float16 artifact is a float model, and quantizes.
TEST(Cli, QuantizedModelAsTheInputIsRefused) {
  mq::test::ScratchDir dir("cli-quantized-input");
  const fs::path int8 = dir / "out.safetensors";
  ASSERT_EQ(run_pipeline(example_args(dir, "-q")).exit_code, 0);
  const auto reference = run_pipeline("validate '" + int8.string() + "' --reference '" + int8.string() + "'");
  EXPECT_EQ(reference.exit_code, 3);
  expect_one_line_error(reference);
  EXPECT_NE(reference.err.find("reading the reference model: " + int8.string() +
                               ": is quantized already ('fc1.weight' is int8 per_channel(axis=0) symmetric; "
                               "mq-pipeline inspect lists it): give the float model it was made from"),
            std::string::npos) << reference.err;

  const std::string ts = (dir / "mlp.int8.pt").string(), int4 = (dir / "mlp.int4.pt").string(),
                    fp16 = (dir / "mlp.fp16.safetensors").string();
  ASSERT_EQ(run_pipeline("run -q '" MQ_SOURCE_DIR "/configs/example-torchscript-int8.yaml' --set report=null --set html_report=null "
                         "--set format.output='" + ts + "'").exit_code, 0);
  ASSERT_EQ(run_pipeline("run -q '" MQ_SOURCE_DIR "/configs/example-int4-weight-only.yaml' --set report=null --set html_report=null "
                         "--set format.plugin=pt --set format.output='" + int4 + "'").exit_code, 0);
  ASSERT_EQ(run_pipeline("run -q '" MQ_SOURCE_DIR "/configs/example-fp16.yaml' --set report=null --set html_report=null "
                         "--set format.output='" + fp16 + "'").exit_code, 0);
  const std::vector<std::array<std::string, 3>> refused = {  // model, extra arguments, why
      {int8.string(), "", "'fc1.weight' is int8 per_channel(axis=0) symmetric"},
      {ts, "--set model.options.trust_torchscript=true", "'fc1' is DynamicQuantizedLinear"},
      {int4, "", "'fc1.weight' is int4 per_group(32) symmetric"}};
  for (const auto& [model, extra, why] : refused) {
    SCOPED_TRACE(model);
    const auto r = run_pipeline(example_args(dir, "-q --set model.path='" + model + "' --set format.output='" +
                                                      (dir / "again.pt").string() + "' " + extra));
    EXPECT_EQ(r.exit_code, 3);
    expect_one_line_error(r);
    EXPECT_NE(r.err.find("reading the model: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(": is quantized already (" + why), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir / "again.pt"));
  }
  const auto from_fp16 = run_pipeline(example_args(dir, "-q --set model.path='" + fp16 + "' --set validators=[]"));
  EXPECT_EQ(from_fp16.exit_code, 0) << from_fp16.err;
}

TEST(Cli, ValidateWorksOnBothPtArtifacts) {
  mq::test::ScratchDir dir("cli-validate-pt");
  const std::string ts = (dir / "mlp.int8.pt").string();
  ASSERT_EQ(run_pipeline("run -q '" MQ_SOURCE_DIR "/configs/example-torchscript-int8.yaml' --set report=null --set html_report=null "
                         "--set format.output='" + ts + "'").exit_code, 0);
  const std::string ts_reference = " --reference '" MQ_SOURCE_DIR "/configs/models/mlp.pt'";
  const auto untrusted = run_pipeline("validate '" + ts + "'" + ts_reference);
  EXPECT_EQ(untrusted.exit_code, 3);
  const auto trusted = run_pipeline("validate --trust-torchscript '" + ts + "'" + ts_reference);
  EXPECT_EQ(trusted.exit_code, 0) << trusted.err;
  EXPECT_NE(trusted.out.find("; output "), std::string::npos) << trusted.out;  // output SQNR
  const auto strict = run_pipeline("validate --trust-torchscript '" + ts + "'" + ts_reference +
                                   " --validators sqnr --option sqnr.min_output_db=99");
  EXPECT_EQ(strict.exit_code, 5);
  EXPECT_NE(strict.err.find("below min_output_db"), std::string::npos) << strict.err;

  const std::string state = (dir / "mlp.state.pt").string();
  ASSERT_EQ(run_pipeline(example_args(dir, "-q --set format.plugin=pt --set format.output='" + state + "'")).exit_code, 0);
  const auto sd = run_pipeline("validate '" + state + "' --reference '" MQ_SOURCE_DIR "/configs/models/mlp.safetensors'");
  EXPECT_EQ(sd.exit_code, 0) << sd.err;

  // Per-tensor qint8 and quint8 are native quantized tensors too; what PyTorch has no
  // quantized type for (int4/uint4, per-group) is stored as plain tensors under
  // documented names. All read back bit-exactly (load_run checks it).
  for (const std::string spec : {"dtype=int8 --set quantizer.options.granularity=per_tensor",
                                 "dtype=uint8 --set quantizer.options.granularity=per_tensor "
                                 "--set quantizer.options.scheme=asymmetric",
                                 "dtype=int4 --set quantizer.options.granularity=per_group",
                                 "dtype=uint4 --set quantizer.options.scheme=asymmetric",
                                 "dtype=int8 --set quantizer.options.granularity=per_group"}) {
    SCOPED_TRACE(spec);
    const std::string out = (dir / "mlp.low.pt").string();
    const auto low = run_pipeline(example_args(dir, "-q --set format.plugin=pt --set format.output='" + out +
                                                        "' --set quantizer.options.group_size=32 --set quantizer.options." +
                                                        spec + " --set validators.0.options.min_db=15 "
                                                        "--set validators.0.options.min_layer_db=15"));
    ASSERT_EQ(low.exit_code, 0) << low.err;
    const auto json = nlohmann::json::parse(run_pipeline("inspect --json '" + out + "'").out);
    EXPECT_EQ(json["tensors"][0]["name"], "fc1.weight");
    EXPECT_EQ(json["tensors"][0]["shape"], nlohmann::json::parse("[128, 64]"));
  }
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

TEST(Cli, VersionAndUsage) {
  const auto v = run_pipeline("--version");
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(v.out.rfind("mq-pipeline 0.", 0), 0u);
  EXPECT_EQ(run_pipeline("--help").exit_code, 0);
  EXPECT_EQ(run_pipeline("").exit_code, 2);
  EXPECT_EQ(run_pipeline("frobnicate").exit_code, 2);
  EXPECT_EQ(run_pipeline("run").exit_code, 2);
  EXPECT_EQ(run_pipeline("run --threads 0 x.yaml").exit_code, 2);
}

}  // namespace
