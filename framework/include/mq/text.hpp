#pragma once
// Calibration (and evaluation) samples from text: documents read from files, tokenized
// with the model's tokenizer, cut into samples of token ids.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "mq/export.hpp"
#include "mq/tokenizer.hpp"

namespace mq {

// Where the text comes from: a text file (one document), a JSONL file (`field` of each
// line's object, one document each), or a directory of .txt files (one document each,
// by file name).
struct TextSource {
  std::filesystem::path path;
  std::string field = "text";  // JSONL only
};

// How documents become samples.
enum class TextCut {
  // The documents joined by a blank line, tokenized once, cut into consecutive windows
  // of seq_len tokens (GPTQ's reference calibration): random windows with `shuffle`.
  kConcatenate,
  // One sample a document, its first seq_len tokens.
  kDocument,
};

struct TextSamples {
  TextSource source;
  std::filesystem::path tokenizer;  // an HF model directory or a tokenizer.json
  int64_t samples = 128;
  int64_t seq_len = 512;
  int64_t seed = 0;
  bool shuffle = false;
  TextCut cut = TextCut::kConcatenate;
};

// A file's bytes as text; InputError "FILE: invalid UTF-8 at byte N" where it is not
// UTF-8 (text is refused, not repaired), or when it cannot be read.
MQ_API std::string read_text_file(const std::filesystem::path& path);

// The source's documents, in order. InputError for an empty source (no file, no text),
// a JSONL line that is not an object with the field as a string ("FILE:LINE: ..."),
// invalid UTF-8.
MQ_API std::vector<std::string> read_documents(const TextSource& source);

// The samples, each a [1, length] int64 tensor of token ids, and what they hold.
struct MQ_API TokenSamples {
  std::vector<at::Tensor> batches;
  int64_t tokens = 0;         // in the samples
  int64_t source_tokens = 0;  // in the whole text
  std::filesystem::path path;  // the source's
  // "128 samples of 512 tokens (65536 of 1200000 tokens) from data/calib.txt".
  std::string summary() const;
};
MQ_API TokenSamples token_samples(const Tokenizer& tokenizer, const TextSamples& spec);

}  // namespace mq
