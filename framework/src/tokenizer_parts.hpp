#pragma once
// The parts a tokenizer.json chains (internal to tokenizer*.cpp): normalizers and
// pre-tokenizers (tokenizer_text.cpp), and the models that turn one piece into ids
// (tokenizer_models.cpp), each read from its JSON object as the `tokenizers` library
// (Rust) reads it. tokenizer.cpp puts them together.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mq::tok {

using Json = nlohmann::json;

// Where a tokenizer comes from, for errors: InputError "FILE: WHAT".
struct Where {
  std::string file;
  [[noreturn]] void bad(const std::string& what) const;
};

std::string type_of(const Json& j);

// UTF-8 helpers for valid text.
std::string utf8(uint32_t cp);
size_t char_length(unsigned char lead);
uint32_t next_char(std::string_view s, size_t& at);  // the code point at `at`, which moves past it
bool is_word_char(uint32_t c);                       // Rust regex's \w: Alphabetic, M, Nd, Pc, Join_Control

// A normalizer step rewrites a whole segment; a pre-tokenizer step cuts each piece
// (`first`: the piece starts the text, which Metaspace's prepend_scheme "first" asks).
using Normalize = std::function<void(std::string&)>;
using PreTokenize = std::function<void(std::string& piece, bool first, std::vector<std::string>& out)>;

// tokenizer.json's "normalizer" and "pre_tokenizer" (null: none), appended as steps.
void read_normalizer(const Json& n, const Where& where, std::vector<Normalize>& out);
void read_pre_tokenizer(const Json& p, const Where& where, std::vector<PreTokenize>& out);

// Turns a pre-tokenized piece into ids.
class Model {
 public:
  virtual ~Model() = default;
  virtual void encode(const std::string& piece, std::vector<int32_t>& ids) const = 0;
  std::unordered_map<std::string, int32_t> vocab;
};

// The ids of `<0xXX>` for each byte of `s` (byte fallback), or nothing when one is missing.
std::optional<std::vector<int32_t>> byte_ids(const std::unordered_map<std::string, int32_t>& vocab, std::string_view s);

// tokenizer.json's "model": BPE, WordPiece or Unigram.
std::unique_ptr<Model> read_model(const Json& m, const Where& where);

// A unigram model over `pieces` (ids are indexes): tokenizers' (f64 scores, every piece a
// candidate) or, `sentencepiece`, SentencePiece's own.
struct UnigramPiece {
  std::string text;
  double score = 0;
  enum Kind { kNormal, kUserDefined, kUnused, kReserved } kind = kNormal;  // reserved: control, unknown, byte
};
std::unique_ptr<Model> make_unigram(std::vector<UnigramPiece> pieces, std::optional<int32_t> unk, bool byte_fallback,
                                    bool sentencepiece);

// SentencePiece's precompiled normalization rules (a darts-clone trie of byte strings
// and the replacements it maps them to), as NormalizerSpec.precompiled_charsmap and
// tokenizers' Precompiled normalizer carry them.
class Charsmap {
 public:
  Charsmap(std::string_view blob, const Where& where);  // empty: no rules
  // The replacement of each rule that is a prefix of `s`, shortest first, with its length.
  std::vector<std::pair<size_t, std::string_view>> prefixes(std::string_view s) const;

 private:
  std::vector<uint32_t> units_;
  std::string replacements_;
};

// tokenizers' Precompiled normalizer: each grapheme cluster replaced by the shortest rule
// matching it (under 6 bytes), else each of its characters by its own rule.
Normalize precompiled_normalizer(std::shared_ptr<const Charsmap> rules);

// What a SentencePiece tokenizer.model runs: its normalizer, then its model on the whole
// normalized text; `bos` gets its bos id (-1: none).
struct SentencePieceModel {
  Normalize normalize;
  std::unique_ptr<Model> model;
  int32_t bos = -1;
};
SentencePieceModel read_sentencepiece(const std::string& path, const Where& where);

}  // namespace mq::tok
