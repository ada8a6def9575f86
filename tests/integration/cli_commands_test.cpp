// mq-pipeline the other subcommands: check, plugins, validate, inspect, --version; the real binary, real files.

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
