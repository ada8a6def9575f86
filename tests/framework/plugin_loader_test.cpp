#include <gtest/gtest.h>

#include "mq/error.hpp"
#include "mq/pipeline.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;

fs::path fixture(const std::string& name) { return fs::path(MQ_FIXTURE_DIR) / name; }

std::string refusal(const std::vector<fs::path>& paths) {
  try {
    mq::discover_plugins(paths);
  } catch (const mq::PluginError& e) {
    EXPECT_EQ(e.code(), mq::ExitCode::kPlugin);
    return e.what();
  }
  ADD_FAILURE() << "the loader accepted it";
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(PluginLoader, LoadsAGoodPluginWithItsDeclarations) {
  const auto plugins = mq::discover_plugins({fixture("good")});
  const mq::PluginInfo* good = nullptr;
  for (const auto& p : plugins)
    if (p.name == "fixture_good") good = &p;
  ASSERT_NE(good, nullptr);
  EXPECT_EQ(good->kind, mq::PluginKind::kValidator);
  EXPECT_EQ(good->version, "0.0.1");
  ASSERT_EQ(good->options.size(), 1u);
  EXPECT_STREQ(good->options[0].name, "level");
  EXPECT_EQ(good->file.filename(), "mq_validator_fixture_good.so");
}

TEST(PluginLoader, FindsTheBuiltInPluginsBesideLibmq) {
  std::vector<std::string> names;
  for (const auto& p : mq::discover_plugins({})) names.push_back(p.name);
  for (const char* builtin : {"minmax", "dynamic", "safetensors", "size"})
    EXPECT_NE(std::find(names.begin(), names.end(), builtin), names.end()) << builtin;
}

TEST(PluginLoader, RefusesWrongApiVersionNamingFileAndBothValues) {
  const std::string e = refusal({fixture("wrong_api")});
  EXPECT_TRUE(contains(e, "mq_validator_fixture_wrong_api.so")) << e;
  EXPECT_TRUE(contains(e, "plugin API version " + std::to_string(MQ_API_VERSION + 998) +
                              ", but this mq supports version " + std::to_string(MQ_API_VERSION)))
      << e;
}

TEST(PluginLoader, RefusesWrongAbiTagNamingFileAndBothValues) {
  const std::string e = refusal({fixture("wrong_abi")});
  EXPECT_TRUE(contains(e, "mq_validator_fixture_wrong_abi.so")) << e;
  EXPECT_TRUE(contains(e, "'clang99/cxx11abi-0/torch-9.9'")) << e;
  EXPECT_TRUE(contains(e, std::string("'") + mq::abi_tag() + "'")) << e;
}

TEST(PluginLoader, EntryPointThatThrowsIsCaught) {
  const std::string e = refusal({fixture("throws")});
  EXPECT_TRUE(contains(e, "entry point threw: fixture exploded during registration")) << e;
}

TEST(PluginLoader, FailedRegistrationIsReported) {
  const std::string e = refusal({fixture("null_descriptor")});
  EXPECT_TRUE(contains(e, "entry point returned no descriptor")) << e;
}

TEST(PluginLoader, LibraryWithoutEntryPointIsRefused) {
  const std::string e = refusal({fixture("no_entry")});
  EXPECT_TRUE(contains(e, "has no entry point 'mq_plugin_descriptor'")) << e;
}

TEST(PluginLoader, DuplicateKindAndNameIsAnErrorNamingBothFiles) {
  const std::string e = refusal({fixture("duplicate_a"), fixture("duplicate_b")});
  EXPECT_TRUE(contains(e, "duplicate validator plugin 'fixture_duplicate'")) << e;
  EXPECT_TRUE(contains(e, "mq_validator_fixture_duplicate_a.so")) << e;
  EXPECT_TRUE(contains(e, "mq_validator_fixture_duplicate_b.so")) << e;
}

TEST(PluginLoader, NotASharedLibraryIsRefused) {
  mq::test::ScratchDir dir("not-elf");
  mq::test::write_file(dir / "mq_validator_text.so", "this is not ELF");
  const std::string e = refusal({dir.path()});
  EXPECT_TRUE(contains(e, "cannot be loaded")) << e;
}

TEST(PluginLoader, MissingExplicitPathIsAnError) {
  EXPECT_THROW(mq::discover_plugins({"/no/such/plugin/dir"}), mq::RecipeError);
}

TEST(PluginLoader, SearchPathOrderIsExplicitThenRecipeThenEnvironmentThenBuiltIn) {
  mq::test::ScratchDir env_dir("env-plugins");
  setenv("MQ_PLUGIN_PATH", env_dir.path().c_str(), 1);
  const auto path = mq::plugin_search_path({fixture("good")}, {fixture("failing")});
  unsetenv("MQ_PLUGIN_PATH");
  ASSERT_EQ(path.size(), 4u);
  EXPECT_EQ(path[0], fs::canonical(fixture("good")));
  EXPECT_EQ(path[1], fs::canonical(fixture("failing")));
  EXPECT_EQ(path[2], fs::canonical(env_dir.path()));
  EXPECT_EQ(path[3].filename(), "plugins");
}

}  // namespace
