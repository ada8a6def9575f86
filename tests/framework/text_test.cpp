// Text calibration: documents from files, samples cut from their tokens, and what the
// tokenizer refuses. (Token-for-token agreement with Hugging Face tokenizers is
// tests/interop/check_tokenizer.py's.)
#include "mq/text.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <functional>

#include "mq/error.hpp"
#include "mq/tokenizer.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;

// Characters a-e and space, one merge ("a", "b") -> "ab", and <s> before each text.
const char* kTokenizer = R"({
  "version": "1.0",
  "added_tokens": [{"id": 7, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": true}],
  "normalizer": null, "pre_tokenizer": null,
  "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}}], "pair": [],
                     "special_tokens": {"<s>": {"id": "<s>", "ids": [7], "tokens": ["<s>"]}}},
  "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "vocab": {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4, " ": 5, "ab": 6, "\n": 8},
            "merges": ["a b"]}
})";

struct Fixture {
  mq::test::ScratchDir dir{"text"};
  std::unique_ptr<mq::Tokenizer> tokenizer;
  Fixture() {
    mq::test::write_file(dir / "tokenizer.json", kTokenizer);
    tokenizer = mq::Tokenizer::load(dir.path());
  }
};

std::vector<int64_t> ids(const at::Tensor& t) { return {t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel()}; }

std::string input_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const mq::InputError& e) {
    EXPECT_EQ(e.code(), mq::ExitCode::kBadInput);
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

TEST(Tokenizer, MergesAndAddsItsSpecialTokens) {
  Fixture f;
  EXPECT_EQ(f.tokenizer->encode("abcab", true), (std::vector<int32_t>{7, 6, 2, 6}));
  EXPECT_EQ(f.tokenizer->encode("ab<s>e", false), (std::vector<int32_t>{6, 7, 4}));  // special in the text
  EXPECT_EQ(f.tokenizer->token(6), "ab");
  EXPECT_EQ(f.tokenizer->vocab_size(), 9);
}

// What the tokenizer cannot read is named, with the file, in one line.
TEST(Tokenizer, RefusesWhatItDoesNotReadByName) {
  mq::test::ScratchDir dir("tokenizer-refusals");
  const auto error_for = [&](const std::string& from, const std::string& to) {
    std::string text = kTokenizer;
    text.replace(text.find(from), from.size(), to);
    mq::test::write_file(dir / "tokenizer.json", text);
    return input_error([&] { mq::Tokenizer::load(dir / "tokenizer.json"); });
  };
  const std::string file = (dir / "tokenizer.json").string() + ": ";
  EXPECT_EQ(error_for("\"normalizer\": null", "\"normalizer\": {\"type\": \"Nmt\"}"),
            file + "normalizer 'Nmt' is not supported yet (BertNormalizer, NFC, NFD, NFKC, NFKD, Lowercase, "
                   "StripAccents, Strip, Precompiled, Prepend, Replace, and Sequences of them are)");
  EXPECT_EQ(error_for("\"type\": \"BPE\"", "\"type\": \"WordLevel\""),
            file + "model type 'WordLevel' is not supported yet (BPE, WordPiece and Unigram are)");
  EXPECT_EQ(error_for("[\"a b\"]", "[\"a x\"]"), file + "model.merges[0] ('a', 'x') has a token not in the vocabulary");
  EXPECT_EQ(error_for("\"pre_tokenizer\": null", "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, "
                                                  "\"behavior\": \"Isolated\", \"invert\": false}"),
            file + "pre_tokenizer Split: regex '(' does not compile at 1 (missing closing parenthesis)");
  fs::remove(dir / "tokenizer.json");
  EXPECT_EQ(input_error([&] { mq::Tokenizer::load(dir.path()); }), file + "no such file");
  mq::test::write_file(dir / "tokenizer.model", "x");  // read when there is no tokenizer.json
  EXPECT_EQ(input_error([&] { mq::Tokenizer::load(dir.path()); }),
            (dir / "tokenizer.model").string() + ": not a SentencePiece model (a field runs past the end)");
}

TEST(Text, ReadsTextJsonlAndDirectories) {
  mq::test::ScratchDir dir("text-sources");
  mq::test::write_file(dir / "a.txt", "abc\n");
  EXPECT_EQ(mq::read_documents({dir / "a.txt"}), (std::vector<std::string>{"abc\n"}));
  mq::test::write_file(dir / "b.txt", "de");
  mq::test::write_file(dir / "skip.md", "not text");
  EXPECT_EQ(mq::read_documents({dir.path()}), (std::vector<std::string>{"abc\n", "de"}));  // by name
  mq::test::write_file(dir / "d.jsonl", "{\"text\": \"ab\", \"n\": 1}\n\n{\"body\": \"x\", \"text\": \"cd\"}\n");
  EXPECT_EQ(mq::read_documents({dir / "d.jsonl"}), (std::vector<std::string>{"ab", "cd"}));
}

TEST(Text, RefusesEmptyMalformedAndNonUtf8Sources) {
  mq::test::ScratchDir dir("text-bad");
  mq::test::write_file(dir / "empty.txt", "");
  EXPECT_EQ(input_error([&] { mq::read_documents({dir / "empty.txt"}); }), (dir / "empty.txt").string() + ": holds no text");
  mq::test::write_file(dir / "d.jsonl", "{\"text\": \"ab\"}\n{\"body\": \"x\"}\n");
  EXPECT_EQ(input_error([&] { mq::read_documents({dir / "d.jsonl"}); }), (dir / "d.jsonl").string() + ":2: no field 'text'");
  mq::test::write_file(dir / "e.jsonl", "{\"text\": 3}\n");
  EXPECT_EQ(input_error([&] { mq::read_documents({dir / "e.jsonl"}); }),
            (dir / "e.jsonl").string() + ":1: field 'text' is not a string");
  mq::test::write_file(dir / "f.jsonl", "[1]\n");
  EXPECT_EQ(input_error([&] { mq::read_documents({dir / "f.jsonl"}); }), (dir / "f.jsonl").string() + ":1: not a JSON object");
  mq::test::write_file(dir / "latin1.txt", "ok caf\xe9\n");
  EXPECT_EQ(input_error([&] { mq::read_documents({dir / "latin1.txt"}); }),
            (dir / "latin1.txt").string() + ": invalid UTF-8 at byte 6");
  EXPECT_EQ(input_error([&] { mq::read_documents({dir / "none.txt"}); }), (dir / "none.txt").string() + ": no such file or directory");
  fs::create_directories(dir / "sub");
  EXPECT_NE(input_error([&] { mq::read_documents({dir / "sub"}); }).find("holds .txt files; this has none"), std::string::npos);
}

// Concatenated: the documents joined by a blank line, tokenized once (one <s>), cut into
// consecutive windows, or (shuffle) windows at random starts, the same for a seed.
TEST(Text, ConcatenatedSamplesAreWindowsOfTheWholeText) {
  Fixture f;
  mq::test::write_file(f.dir / "c.jsonl", "{\"text\": \"abcd\"}\n{\"text\": \"eab\"}\n");
  mq::TextSamples spec;
  spec.source = {f.dir / "c.jsonl"};
  spec.seq_len = 3;
  const mq::TokenSamples s = mq::token_samples(*f.tokenizer, spec);  // <s> ab c d \n \n e ab
  ASSERT_EQ(s.batches.size(), 2u);
  EXPECT_EQ(ids(s.batches[0]), (std::vector<int64_t>{7, 6, 2}));
  EXPECT_EQ(ids(s.batches[1]), (std::vector<int64_t>{3, 8, 8}));
  EXPECT_EQ(s.batches[0].sizes(), at::IntArrayRef({1, 3}));
  EXPECT_EQ(s.source_tokens, 8);
  EXPECT_EQ(s.summary(), "2 samples of 3 tokens (6 of 8 tokens) from " + (f.dir / "c.jsonl").string());

  spec.shuffle = true;
  spec.samples = 5;
  const mq::TokenSamples a = mq::token_samples(*f.tokenizer, spec), b = mq::token_samples(*f.tokenizer, spec);
  ASSERT_EQ(a.batches.size(), 5u);  // random windows may overlap: as many as asked
  std::vector<std::vector<int64_t>> first, second, other;
  for (size_t i = 0; i < 5; ++i) first.push_back(ids(a.batches[i])), second.push_back(ids(b.batches[i]));
  EXPECT_EQ(first, second);
  spec.seed = 1;
  const mq::TokenSamples c = mq::token_samples(*f.tokenizer, spec);
  for (size_t i = 0; i < 5; ++i) other.push_back(ids(c.batches[i]));
  EXPECT_NE(first, other);
}

// One sample a document, each with its own <s>, cut at seq_len; samples caps them.
TEST(Text, DocumentSamplesAreTheirFirstTokens) {
  Fixture f;
  mq::test::write_file(f.dir / "c.jsonl", "{\"text\": \"abcd\"}\n{\"text\": \"e\"}\n{\"text\": \"cc\"}\n");
  mq::TextSamples spec;
  spec.source = {f.dir / "c.jsonl"};
  spec.cut = mq::TextCut::kDocument;
  spec.seq_len = 3;
  spec.samples = 2;
  const mq::TokenSamples s = mq::token_samples(*f.tokenizer, spec);
  ASSERT_EQ(s.batches.size(), 2u);
  EXPECT_EQ(ids(s.batches[0]), (std::vector<int64_t>{7, 6, 2}));
  EXPECT_EQ(ids(s.batches[1]), (std::vector<int64_t>{7, 4}));
  EXPECT_EQ(s.summary(), "2 samples of up to 3 tokens (5 of 9 tokens) from " + (f.dir / "c.jsonl").string());
}

}  // namespace
