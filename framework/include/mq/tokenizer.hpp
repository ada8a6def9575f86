#pragma once
// A Hugging Face model directory's tokenizer, in C++: text to the ids transformers'
// tokenizer gives, for calibration and evaluation from text.
//
// Read: tokenizer.json with BPE, WordPiece or Unigram models, the usual normalizers
// (BertNormalizer, Unicode forms, Lowercase, StripAccents, Strip, Precompiled, Prepend,
// Replace) and pre-tokenizers (ByteLevel, Split, Metaspace, Whitespace, BertPreTokenizer,
// Punctuation, Digits), added and special tokens, and the TemplateProcessing, Bert,
// Roberta and ByteLevel post-processors; or a SentencePiece tokenizer.model alone (unigram
// or BPE). docs/usage.md lists them; anything else is refused by name.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mq/export.hpp"

namespace mq {

class MQ_API Tokenizer {
 public:
  // The tokenizer of `path`: an HF model directory's tokenizer.json (else its
  // tokenizer.model), or that file. InputError naming the file and the part it cannot
  // read ("tokenizer.json: model type 'WordLevel' is not supported yet").
  static std::unique_ptr<Tokenizer> load(const std::filesystem::path& path);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // The ids of `text` (InputError unless valid UTF-8), with the special tokens the
  // post-processor adds (a bos) when `add_special`, as tokenizer(text) in transformers.
  std::vector<int32_t> encode(std::string_view text, bool add_special) const;
  // The vocabulary's string for `id` (byte-level tokens as stored: "Ġthe"); "" if none.
  std::string token(int32_t id) const;
  // One past the largest id (added tokens included).
  int64_t vocab_size() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A SentencePiece tokenizer.model's vocabulary and settings (what a GGUF writer embeds).
struct SentencePieceVocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int32_t> types;  // sentencepiece's: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
  bool bpe = false;            // else unigram
  bool byte_fallback = false;
  bool normalization_rules = false;  // precompiled rules (nmt_nfkc, ...), not identity
  bool add_dummy_prefix = true, remove_extra_whitespaces = true;
  int32_t unk = -1, bos = -1, eos = -1, pad = -1;  // -1: none
};
// InputError naming the file when it is not a SentencePiece model mq reads.
MQ_API SentencePieceVocab read_sentencepiece_vocab(const std::filesystem::path& file);

// Throws InputError "WHAT: invalid UTF-8 at byte N" unless `text` is valid UTF-8.
MQ_API void check_utf8(std::string_view text, const std::string& what);

}  // namespace mq
