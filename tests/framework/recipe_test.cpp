#include "mq/recipe.hpp"

#include <gtest/gtest.h>

#include "mq/error.hpp"
#include "mq/quant_spec.hpp"
#include "test_support.hpp"

namespace {

const char* kMinimal = R"(version: 1
model:
  path: models/m.safetensors
quantizer:
  plugin: dynamic
  options: {dtype: int8}
format:
  plugin: safetensors
  output: out/m.safetensors
validators:
  - {plugin: size, options: {min_ratio: 3.5}}
  - {plugin: size, on_failure: warn}
report: out/report.json
)";

std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    mq::parse_recipe(text, "/recipes/r.yaml", overrides);
  } catch (const mq::RecipeError& e) {
    EXPECT_EQ(e.code(), mq::ExitCode::kUsage);
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

TEST(Recipe, ParsesTheDocumentedSchema) {
  const mq::Recipe r = mq::parse_recipe(kMinimal, "/recipes/r.yaml");
  EXPECT_EQ(r.version, 1);
  EXPECT_EQ(r.model_path, "/recipes/models/m.safetensors");
  EXPECT_EQ(r.output, "/recipes/out/m.safetensors");
  EXPECT_EQ(r.quantizer.plugin, "dynamic");
  EXPECT_EQ(r.quantizer.options.find("dtype")->as_string(), "int8");
  EXPECT_EQ(r.observer.plugin, "minmax");  // default
  ASSERT_EQ(r.validators.size(), 2u);
  EXPECT_DOUBLE_EQ(r.validators[0].step.options.find("min_ratio")->as_float(), 3.5);
  EXPECT_FALSE(r.validators[0].on_failure.has_value());
  EXPECT_EQ(r.validators[1].on_failure, mq::OnFailure::kWarn);
  EXPECT_EQ(r.on_failure, mq::OnFailure::kError);
  EXPECT_EQ(*r.report, "/recipes/out/report.json");
}

TEST(Recipe, UnknownKeyNamesLineColumnAndSuggests) {
  const std::string e = error_of(std::string(kMinimal) + "obsrver: {plugin: minmax}\n");
  EXPECT_EQ(e, "/recipes/r.yaml:14:1: unknown key 'obsrver' (did you mean 'observer'?)");
}

TEST(Recipe, UnknownNestedKeySuggests) {
  std::string text = kMinimal;
  text.replace(text.find("path: models"), 4, "pth");
  const std::string e = error_of(text);
  EXPECT_NE(e.find("r.yaml:3:3: unknown key 'pth' in 'model' (did you mean 'path'?)"), std::string::npos) << e;
}

// Random calibration batches are made up front: a shape whose values overflow, or
// would need terabytes, is a recipe error, not an allocation failure later.
TEST(Recipe, RandomCalibrationMustFitInMemory) {
  const std::string base = std::string(kMinimal) + "calibration: {random: {shape: ";
  EXPECT_EQ(error_of(base + "[4611686018427387904, 4], batches: 2}}\n"),
            "/recipes/r.yaml:14:31: calibration.random: 2 batches of this shape are more than 2^40 values (4 TiB of float32)");
  EXPECT_NE(error_of(base + "[1048577, 1048576]}}\n").find("are more than 2^40 values"), std::string::npos);
  EXPECT_EQ(mq::parse_recipe(base + "[1024, 1024], batches: 4}}\n", "/recipes/r.yaml").calibration->random->batches, 4);
}

// Token ids for a model that starts with an Embedding: vocab_size, positive; recipes
// without it keep their canonical form (and hash).
TEST(Recipe, RandomCalibrationOfTokenIds) {
  const std::string base = std::string(kMinimal) + "calibration: {random: {shape: [2, 8]";
  const mq::Recipe r = mq::parse_recipe(base + ", vocab_size: 32000}}\n", "/recipes/r.yaml");
  EXPECT_EQ(r.calibration->random->vocab_size, 32000);
  EXPECT_NE(r.canonical_json().find("\"vocab_size\":32000"), std::string::npos) << r.canonical_json();
  const mq::Recipe floats = mq::parse_recipe(base + "}}\n", "/recipes/r.yaml");
  EXPECT_EQ(floats.canonical_json().find("vocab_size"), std::string::npos);
  EXPECT_NE(floats.canonical_json().find("\"seed\":0"), std::string::npos) << floats.canonical_json();
  EXPECT_NE(floats.hash(), mq::parse_recipe(base + ", seed: 1}}\n", "/recipes/r.yaml").hash());
  EXPECT_EQ(error_of(base + ", vocab_size: 0}}\n"), "/recipes/r.yaml:14:51: calibration.random.vocab_size must be positive");
}

// Text calibration: defaults (the model's directory's tokenizer), every key checked,
// and the canonical form (and hash) moving with what changes the samples.
TEST(Recipe, TextCalibration) {
  const std::string base = std::string(kMinimal) + "calibration: {text: {path: data/c.txt";
  const mq::Recipe r = mq::parse_recipe(base + "}}\n", "/recipes/r.yaml");
  ASSERT_TRUE(r.calibration->text.has_value());
  EXPECT_EQ(r.calibration->text->source.path, "/recipes/data/c.txt");
  EXPECT_EQ(r.calibration->text->tokenizer, "/recipes/models");  // model.safetensors' directory
  EXPECT_EQ(r.calibration->text->samples, 128);
  EXPECT_EQ(r.calibration->text->seq_len, 512);
  EXPECT_EQ(r.calibration->text->cut, mq::TextCut::kConcatenate);
  const mq::Recipe d = mq::parse_recipe(base + ", cut: document, shuffle: true, samples: 4, seq_len: 64, "
                                              "tokenizer: tok/tokenizer.json}}\n", "/recipes/r.yaml");
  EXPECT_EQ(d.calibration->text->cut, mq::TextCut::kDocument);
  EXPECT_TRUE(d.calibration->text->shuffle);
  EXPECT_EQ(d.calibration->text->tokenizer, "/recipes/tok/tokenizer.json");
  EXPECT_NE(r.hash(), d.hash());
  EXPECT_NE(r.hash(), mq::parse_recipe(base + ", seed: 1}}\n", "/recipes/r.yaml").hash());
  EXPECT_EQ(error_of(base + ", seq_len: 0}}\n"), "/recipes/r.yaml:14:49: calibration.text.seq_len must be positive");
  EXPECT_EQ(error_of(base + ", cut: lines}}\n"),
            "/recipes/r.yaml:14:45: calibration.text.cut must be concatenate or document, not 'lines'");
  EXPECT_EQ(error_of(base + ", field: body}}\n"), "/recipes/r.yaml:14:47: calibration.text.field is for a .jsonl file");
  EXPECT_NE(error_of(base + "}, random: {shape: [1]}}\n").find("needs exactly one of 'path', 'random' or 'text'"),
            std::string::npos);
  EXPECT_NE(error_of(base + ", sample: 3}}\n").find("unknown key 'sample' in 'calibration.text' (did you mean 'samples'?)"),
            std::string::npos);
}

TEST(Recipe, WrongTypeIsAnError) {
  std::string text = kMinimal;
  text.replace(0, 10, "version: one");
  EXPECT_EQ(error_of(text), "/recipes/r.yaml:1:10: 'version' must be an integer, got a string");
}

TEST(Recipe, ValidatorsMustBeAList) {
  const std::string text = "version: 1\nmodel: {path: m}\nquantizer: {plugin: q}\n"
                           "format: {plugin: f, output: o}\nvalidators: {plugin: size}\n";
  EXPECT_NE(error_of(text).find("'validators' must be a list, got a map"), std::string::npos);
}

TEST(Recipe, MissingVersionIsAnError) {
  std::string text = kMinimal;
  text.erase(0, text.find('\n') + 1);
  EXPECT_EQ(error_of(text), "/recipes/r.yaml: 'version' is required (this mq reads version: 1)");
}

TEST(Recipe, UnsupportedVersionIsAnError) {
  std::string text = kMinimal;
  text[9] = '2';
  EXPECT_NE(error_of(text).find("unsupported recipe version 2"), std::string::npos);
}

TEST(Recipe, DuplicateKeyIsRejected) {
  const std::string e = error_of(std::string(kMinimal) + "version: 1\n");
  EXPECT_EQ(e, "/recipes/r.yaml:14:1: duplicate key 'version'");
}

TEST(Recipe, DeepNestingIsRejected) {
  std::string deep = "x";
  for (int i = 0; i < 60; ++i) deep = "[" + deep + "]";
  const std::string e = error_of(std::string(kMinimal) + "on_failure: " + deep + "\n");
  EXPECT_NE(e.find("nests deeper than 32 levels"), std::string::npos) << e;
}

TEST(Recipe, VeryDeepNestingDoesNotCrashTheParser) {
  std::string deep(100000, '[');
  const std::string e = error_of("version: 1\nx: " + deep);
  EXPECT_FALSE(e.empty());
}

TEST(Recipe, AliasExpansionIsBounded) {
  std::string text = "version: 1\na: &a [x, x, x, x, x, x, x, x, x, x]\n";
  char prev = 'a';
  for (char c = 'b'; c <= 'h'; ++c, ++prev)
    text += std::string(1, c) + ": &" + c + " [*" + prev + ", *" + prev + ", *" + prev + ", *" +
            prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" +
            prev + "]\n";
  EXPECT_NE(error_of(text).find("more than 100000 nodes"), std::string::npos);
}

TEST(Recipe, MalformedYamlNamesThePosition) {
  const std::string e = error_of("version: 1\nmodel: {path: [\n");
  EXPECT_EQ(e.rfind("/recipes/r.yaml:", 0), 0u) << e;
}

TEST(Recipe, EmptyRecipeIsAnError) { EXPECT_EQ(error_of(""), "/recipes/r.yaml: recipe is empty"); }

TEST(Recipe, BadOnFailureSuggests) {
  const std::string e = error_of(std::string(kMinimal) + "on_failure: warm\n");
  EXPECT_NE(e.find("(did you mean 'warn'?)"), std::string::npos) << e;
}

TEST(Recipe, SetOverridesAKey) {
  const mq::Recipe r =
      mq::parse_recipe(kMinimal, "/recipes/r.yaml",
                       {"quantizer.options.dtype=int4", "validators.1.options.min_ratio=2",
                        "observer.plugin=histogram"});
  EXPECT_EQ(r.quantizer.options.find("dtype")->as_string(), "int4");
  EXPECT_EQ(r.validators[1].step.options.find("min_ratio")->as_int(), 2);
  EXPECT_EQ(r.observer.plugin, "histogram");
}

TEST(Recipe, SetToAnUnknownKeyIsCheckedLikeTheFile) {
  const std::string e = error_of(kMinimal, {"quantizer.plugn=x"});
  EXPECT_NE(e.find("unknown key 'plugn' in 'quantizer' (did you mean 'plugin'?)"), std::string::npos)
      << e;
}

TEST(Recipe, MalformedSetIsAnError) {
  EXPECT_NE(error_of(kMinimal, {"quantizer.options.dtype"}).find("no '='"), std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"quantizer..dtype=int8"}).find("empty key segment"), std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"=int8"}).find("empty key"), std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"version.x=1"}).find("'version' is an integer, not a map"),
            std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"validators.7.plugin=x"}).find("is a list of 2 items"),
            std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"quantizer.options.dtype=[unclosed"}).find("--set"),
            std::string::npos);
}

TEST(Recipe, HashIsStableAndFollowsContent) {
  const mq::Recipe a = mq::parse_recipe(kMinimal, "/recipes/r.yaml");
  const mq::Recipe b = mq::parse_recipe(kMinimal, "/elsewhere/r.yaml");
  const mq::Recipe c = mq::parse_recipe(kMinimal, "/recipes/r.yaml", {"quantizer.options.dtype=uint8"});
  EXPECT_EQ(a.hash(), b.hash());  // paths are hashed relative to the recipe
  EXPECT_NE(a.hash(), c.hash());
  EXPECT_EQ(a.hash().size(), 32u);
}

TEST(Recipe, LoadRejectsOversizedAndMissingFiles) {
  mq::test::ScratchDir dir("recipe-load");
  mq::test::write_file(dir / "big.yaml", std::string(2 << 20, '#'));
  EXPECT_THROW(mq::load_recipe(dir / "big.yaml"), mq::RecipeError);
  EXPECT_THROW(mq::load_recipe(dir / "absent.yaml"), mq::RecipeError);
}

TEST(Recipe, PluginPathsMustExist) {
  const std::string e = error_of(std::string(kMinimal) + "plugins: {paths: [no/such/dir]}\n");
  EXPECT_NE(e.find("plugin path '/recipes/no/such/dir' does not exist"), std::string::npos) << e;
}

}  // namespace

namespace {

// Specs round-trip through the JSON our outputs store; a non-positive group size (a
// hand-edited file) is refused, not divided by.
TEST(QuantSpec, JsonRoundTripsAndRefusesANonPositiveGroup) {
  mq::QuantSpec s;
  s.dtype = mq::DType::kUInt4;
  s.granularity = mq::Granularity::kPerGroup;
  s.scheme = mq::Scheme::kAsymmetric;
  s.group_size = 32;
  EXPECT_EQ(mq::QuantSpec::from_json(s.to_json()).to_string(), s.to_string());
  s.group_size = 0;
  EXPECT_THROW(mq::QuantSpec::from_json(s.to_json()), std::invalid_argument);
}

}  // namespace

namespace {

TEST(Recipe, TargetParsesWithDefaultCandidatesAndEntersTheHash) {
  const mq::Recipe plain = mq::parse_recipe(kMinimal, "/recipes/r.yaml");
  EXPECT_FALSE(plain.target);
  const mq::Recipe r = mq::parse_recipe(kMinimal, "/recipes/r.yaml", {"target={bits_per_weight: 4.5}"});
  ASSERT_TRUE(r.target);
  EXPECT_EQ(r.target->bits_per_weight, 4.5);
  EXPECT_EQ(r.target->sensitivity, mq::Target::Sensitivity::kWeight);
  ASSERT_EQ(r.target->candidates.size(), 4u);
  EXPECT_EQ(r.target->candidates[0].to_string(), "int4 per_group(128) symmetric");
  EXPECT_EQ(r.target->candidates[3].dtype, mq::DType::kBFloat16);
  EXPECT_NE(r.hash(), plain.hash());
  EXPECT_NE(r.hash(), mq::parse_recipe(kMinimal, "/recipes/r.yaml", {"target={bits_per_weight: 5}"}).hash());
  // The resolved recipe (what artifacts record and `verify` runs) reads back the same.
  const mq::Recipe back = mq::parse_recipe(r.resolved_json(), "/elsewhere/r.yaml");
  EXPECT_EQ(back.canonical_json(), mq::parse_recipe(r.resolved_json(), "/elsewhere/r.yaml").canonical_json());
  ASSERT_TRUE(back.target);
  ASSERT_EQ(back.target->candidates.size(), 4u);
  for (size_t i = 0; i < 4; ++i)
    EXPECT_EQ(back.target->candidates[i].to_string(), r.target->candidates[i].to_string());
}

TEST(Recipe, TargetMistakesAreNamed) {
  EXPECT_NE(error_of(kMinimal, {"target={bits_per_weight: 4, max_bytes: 10}"}).find("exactly one of"), std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"target={candidates: [{dtype: int8}, {dtype: int4}]}"}).find("exactly one of"),
            std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"target={max_bytes: 0}"}).find("must be positive"), std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"target={max_kl: 0.1}"}).find("set target.sensitivity: output"), std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"target={max_kl: 0.1, sensitivity: outptu}"}).find("did you mean 'output'"),
            std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"target={min_output_sqnr_db: 30}"}).find("set target.sensitivity: output_sqnr"), std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"target={bits_per_weight: 4, candidates: [{dtype: int8}]}"}).find("at least two"),
            std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"target={bits_per_weight: 4, candidates: [{dtype: int8}, {dtype: int8}]}"})
                .find("int8 per_channel(axis=0) symmetric is listed twice"),
            std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"target={bits_per_weight: 4, candidates: [{group_size: 32}, {dtype: int8}]}"})
                .find("needs 'dtype'"),
            std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"target={bits_per_weight: 4, candidates: [{dtype: int5}, {dtype: int8}]}"})
                .find("target.candidates[].dtype"),
            std::string::npos);
}

TEST(Recipe, EvaluationTakesTheCalibrationFormsAndNamesItsOwnMistakes) {
  const mq::Recipe r = mq::parse_recipe(kMinimal, "/recipes/r.yaml",
                                        {"evaluation={random: {shape: [1, 8], batches: 2, vocab_size: 10}}"});
  ASSERT_TRUE(r.evaluation && r.evaluation->random);
  EXPECT_EQ(r.evaluation->random->batches, 2);
  EXPECT_FALSE(r.calibration);
  EXPECT_NE(r.hash(), mq::parse_recipe(kMinimal, "/recipes/r.yaml").hash());
  EXPECT_EQ(mq::parse_recipe(r.resolved_json(), "/recipes/r.yaml").canonical_json(), r.canonical_json());
  EXPECT_NE(error_of(kMinimal, {"evaluation={random: {shape: [1, 8], batches: 0}}"})
                .find("evaluation.random.batches must be positive"),
            std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"evaluation={path: a, text: {path: b}}"}).find("'evaluation' needs exactly one of"),
            std::string::npos);
  EXPECT_NE(error_of(kMinimal, {"evaluation={text: {path: b.txt, field: x}}"}).find("evaluation.text.field is for a .jsonl"),
            std::string::npos);
}

}  // namespace
