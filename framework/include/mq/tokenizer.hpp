#pragma once
// A Hugging Face model directory's tokenizer (tokenizer.json), in C++: text to the ids
// transformers' tokenizer gives, for calibration and evaluation from text.
//
// Read: BPE models (byte-level as GPT-2, Llama 3 and Qwen2 have them, and Llama 2 /
// Mistral style with byte fallback), the Prepend and Replace normalizers, the ByteLevel,
// Split (a regex, isolated) and Metaspace pre-tokenizers, added and special tokens, and the
// TemplateProcessing, Bert, Roberta and ByteLevel post-processors. Anything else in
// tokenizer.json is refused by name.

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
  // The tokenizer of `path`: an HF model directory's tokenizer.json, or that file.
  // InputError naming the file and the part it cannot read ("tokenizer.json: model type
  // 'WordPiece' is not supported yet").
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

// Throws InputError "WHAT: invalid UTF-8 at byte N" unless `text` is valid UTF-8.
MQ_API void check_utf8(std::string_view text, const std::string& what);

}  // namespace mq
