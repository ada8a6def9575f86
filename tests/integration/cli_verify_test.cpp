// mq-pipeline verify and inspect --recipe as a user runs them: an artifact records its
// recipe, which runs again to the same bytes; a tampered tensor, another input, other
// plugin versions and an artifact without a recipe are each told apart.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_support.hpp"

namespace {

namespace fs = std::filesystem;
using mq::test::cli::example_args;
using mq::test::cli::expect_one_line_error;
using mq::test::run_pipeline;

// `artifact` with `from` replaced by `to` (of the same length) once.
void patch(const fs::path& artifact, const std::string& from, const std::string& to) {
  std::string bytes = mq::test::read_file(artifact);
  const size_t at = bytes.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  ASSERT_EQ(from.size(), to.size());
  bytes.replace(at, from.size(), to);
  mq::test::write_file(artifact, bytes);
}

TEST(Verify, AnArtifactIsWhatItsRecordedRecipeMakes) {
  mq::test::ScratchDir dir("verify");
  ASSERT_EQ(run_pipeline(example_args(dir, "--quiet")).exit_code, 0);
  const fs::path artifact = dir / "out.safetensors";
  const auto same = run_pipeline("verify '" + artifact.string() + "'");
  ASSERT_EQ(same.exit_code, 0) << same.err;
  EXPECT_NE(same.out.find("identical: 5 tensors"), std::string::npos) << same.out;
  EXPECT_EQ(same.err, "");  // the same plugins: no warning
  for (const auto& e : fs::directory_iterator(dir.path()))  // its scratch directory is gone
    EXPECT_EQ(e.path().filename().string().find(".mq-verify"), std::string::npos) << e.path();

  // The recipe it records runs as it is.
  const auto recipe = run_pipeline("inspect --recipe '" + artifact.string() + "'");
  ASSERT_EQ(recipe.exit_code, 0) << recipe.err;
  mq::test::write_file(dir / "recorded.yaml", recipe.out);
  const auto check = run_pipeline("check '" + (dir / "recorded.yaml").string() + "'");
  EXPECT_EQ(check.exit_code, 0) << check.err << recipe.out;

  // Other plugin versions: a warning, or with --strict a failure.
  fs::copy_file(artifact, dir / "older.safetensors");
  patch(dir / "older.safetensors", "quantizer/dynamic@1.2.0", "quantizer/dynamic@1.1.9");
  const auto older = run_pipeline("verify '" + (dir / "older.safetensors").string() + "'");
  EXPECT_EQ(older.exit_code, 0) << older.err;
  EXPECT_NE(older.err.find("warning: plugins differ from those recorded"), std::string::npos) << older.err;
  const auto strict = run_pipeline("verify --strict --json '" + (dir / "older.safetensors").string() + "'");
  EXPECT_EQ(strict.exit_code, 5) << strict.err;
  EXPECT_EQ(nlohmann::json::parse(strict.out)["status"], 5);

  // One weight value changed: the tensor is named, with how much it differs.
  std::string bytes = mq::test::read_file(artifact);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<unsigned char>(bytes[i]);
  const nlohmann::json tensors = nlohmann::json::parse(bytes.substr(8, n));
  const size_t at = 8 + n + tensors["fc1.weight"]["data_offsets"][0].get<size_t>() + 3;
  bytes[at] = static_cast<char>(bytes[at] + 1);
  mq::test::write_file(dir / "tampered.safetensors", bytes);
  const auto tampered = run_pipeline("verify '" + (dir / "tampered.safetensors").string() + "'");
  EXPECT_EQ(tampered.exit_code, 5);
  expect_one_line_error(tampered);
  EXPECT_NE(tampered.err.find("fc1.weight differs: 1 of 8192 values, by up to"), std::string::npos) << tampered.err;

  // Another input: exit 3 before any work.
  std::string weights = mq::test::read_file(fs::path(MQ_SOURCE_DIR) / "configs/models/mlp.safetensors");
  weights.back() = static_cast<char>(weights.back() ^ 0x10);
  mq::test::write_file(dir / "other.safetensors", weights);
  const auto other = run_pipeline("verify '" + artifact.string() + "' --model '" + (dir / "other.safetensors").string() + "'");
  EXPECT_EQ(other.exit_code, 3);
  expect_one_line_error(other);
  EXPECT_NE(other.err.find("is not the input recorded"), std::string::npos) << other.err;

  // A file that records no recipe.
  const auto none = run_pipeline("verify '" + std::string(MQ_SOURCE_DIR) + "/configs/models/mlp.safetensors'");
  EXPECT_EQ(none.exit_code, 3);
  EXPECT_NE(none.err.find("records no recipe"), std::string::npos) << none.err;
}

// Every example recipe gives the same bytes run twice, at one thread and at two (the
// output path is the same: the artifact records its recipe, which names it).
TEST(Verify, EveryExampleRecipeGivesTheSameBytesAtAnyThreadCount) {
  mq::test::ScratchDir dir("verify-determinism");
  int recipes = 0;
  for (const auto& e : fs::directory_iterator(fs::path(MQ_SOURCE_DIR) / "configs")) {
    if (e.path().extension() != ".yaml") continue;
    SCOPED_TRACE(e.path().string());
    ++recipes;
    // The output's name as the recipe has it (formats know their files by extension).
    const std::string text = mq::test::read_file(e.path());
    const size_t at = text.find("output:");
    ASSERT_NE(at, std::string::npos);
    const std::string written = text.substr(at + 7, text.find('\n', at) - at - 7);
    const fs::path out = dir / (e.path().stem().string() + fs::path(written.substr(0, written.find('#'))).extension().string());
    const std::string args = "run -q '" + e.path().string() + "' --set report=null --set html_report=null --set format.output='" +
                             out.string() + "' --threads ";
    ASSERT_EQ(run_pipeline(args + "1").exit_code, 0);
    const std::string first = mq::test::read_file(out);
    ASSERT_EQ(run_pipeline(args + "2").exit_code, 0);
    EXPECT_TRUE(mq::test::read_file(out) == first);
    const auto verify = run_pipeline("verify --trust-torchscript '" + out.string() + "'");  // and it verifies
    EXPECT_EQ(verify.exit_code, 0) << verify.err;
  }
  EXPECT_GE(recipes, 8);
}

// An HF directory in gives one out (weights, config.json, the rest): it verifies too.
TEST(Verify, AnHfDirectoryArtifactVerifies) {
  mq::test::ScratchDir dir("verify-hf");
  mq::test::write_tiny_llama(dir / "llama");
  mq::test::write_file(dir / "recipe.yaml", R"(version: 1
model: {path: llama}
quantizer: {plugin: dynamic, options: {dtype: int8}}
format: {plugin: safetensors, output: out}
validators: []
)");
  ASSERT_EQ(run_pipeline("run -q recipe.yaml", dir.path()).exit_code, 0);
  ASSERT_TRUE(fs::exists(dir / "out" / "config.json"));
  const auto verify = run_pipeline("verify out", dir.path());
  EXPECT_EQ(verify.exit_code, 0) << verify.err;
  EXPECT_NE(verify.out.find("identical: 12 tensors"), std::string::npos) << verify.out;
}

}  // namespace
