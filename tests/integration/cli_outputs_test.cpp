// mq-pipeline run's outputs: HF directories in and out, shards, temporaries, names, dtypes passed through; the real binary, real files.

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

}  // namespace
