// mq-pipeline run's failures: exit codes, full and failing disks, interrupts, paths checked before any work; the real binary, real files.

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

TEST(Cli, ModelNoFormatReadsIsNamedFileOrDirectory) {
  mq::test::ScratchDir dir("cli-no-reader");
  fs::create_directories(dir / "empty");
  mq::test::write_file(dir / "weights.bin", "12345678");
  for (const auto& [model, what] : {std::pair{dir / "empty", "directory"}, std::pair{dir / "weights.bin", "file"}}) {
    const auto r = run_pipeline(example_args(dir, "-q --set model.path='" + model.string() + "'"));
    EXPECT_EQ(r.exit_code, 3);
    expect_one_line_error(r);
    EXPECT_NE(r.err.find(model.string() + ": no format plugin can read this " + what + " (tried 'gguf', 'pt', 'safetensors')"),
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

}  // namespace
