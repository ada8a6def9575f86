// SentencePiece without libsentencepiece (Debian's bundles a protobuf-lite whose symbols
// collide with LibTorch's libprotobuf): tokenizer.model's ModelProto read field by field,
// its normalizer (precompiled rules, dummy prefix, whitespace) and its unigram or BPE
// model as sentencepiece 0.1.9x/0.2 encode; and tokenizers' Precompiled normalizer,
// which runs the same rules per grapheme cluster.
#include "tokenizer_parts.hpp"

#include <unicode/ubrk.h>
#include <unicode/ustring.h>

#include <cstring>
#include <fstream>
#include <queue>
#include <sstream>

#include "mq/error.hpp"
#include "mq/tokenizer.hpp"

namespace mq::tok {

namespace {

constexpr const char* kSpace = "\xE2\x96\x81";  // ▁

// A protobuf message's fields, read one at a time (wire types 0, 1, 2, 5).
class Proto {
 public:
  Proto(std::string_view bytes, const Where& where) : bytes_(bytes), where_(where) {}

  // The next field's number, or 0 at the end.
  uint32_t next() {
    if (at_ >= bytes_.size()) return 0;
    const uint64_t key = varint();
    wire_ = static_cast<uint32_t>(key & 7);
    if (wire_ == 0) {
      value_ = varint();
    } else if (wire_ == 1 || wire_ == 5) {
      const size_t n = wire_ == 1 ? 8 : 4;
      need(n);
      value_ = 0;
      std::memcpy(&value_, bytes_.data() + at_, n);
      at_ += n;
    } else if (wire_ == 2) {
      const uint64_t n = varint();
      need(n);
      data_ = bytes_.substr(at_, n);
      at_ += n;
    } else {
      where_.bad("not a SentencePiece model (protobuf wire type " + std::to_string(wire_) + ")");
    }
    return static_cast<uint32_t>(key >> 3);
  }
  uint64_t integer() const { return value_; }
  float f32() const {
    float f;
    const auto v = static_cast<uint32_t>(value_);
    std::memcpy(&f, &v, 4);
    return f;
  }
  std::string_view data() const {
    if (wire_ != 2) where_.bad("not a SentencePiece model (a field that should be bytes is not)");
    return data_;
  }

 private:
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      need(1);
      const auto b = static_cast<unsigned char>(bytes_[at_++]);
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    where_.bad("not a SentencePiece model (a varint runs past 10 bytes)");
  }
  void need(uint64_t n) const {
    if (n > bytes_.size() - at_) where_.bad("not a SentencePiece model (a field runs past the end)");
  }

  std::string_view bytes_;
  const Where& where_;
  size_t at_ = 0;
  uint32_t wire_ = 0;
  uint64_t value_ = 0;
  std::string_view data_;
};

// One code point of valid UTF-8, or one byte of a malformed sequence.
size_t one_char(std::string_view s) {
  const size_t n = char_length(static_cast<unsigned char>(s[0]));
  if (n > s.size() || (n == 1 && static_cast<unsigned char>(s[0]) >= 0x80)) return 1;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[k]) & 0xC0) != 0x80) return 1;
  return n;
}

// Pieces that are a prefix of the text, longest first (user-defined symbols).
std::string_view longest_of(const std::vector<std::string>& symbols, std::string_view s) {
  std::string_view best;
  for (const std::string& sym : symbols)
    if (sym.size() > best.size() && s.substr(0, sym.size()) == sym) best = sym;
  return best;
}

// sentencepiece's Normalizer::Normalize: leading, trailing and repeated whitespace
// removed, a "▁" in front, spaces as "▁"; user-defined symbols pass through unchanged,
// otherwise the longest rule at each position replaces what it matches.
struct SpmNormalizer {
  std::shared_ptr<const Charsmap> rules;
  std::vector<std::string> user_symbols;
  bool dummy_prefix = true, remove_extra = true, escape = true, suffix = false;

  std::pair<std::string_view, size_t> prefix(std::string_view in) const {
    if (const std::string_view u = longest_of(user_symbols, in); !u.empty()) return {u, u.size()};
    if (rules) {
      const auto all = rules->prefixes(in);
      if (!all.empty()) return {all.back().second, all.back().first};
    }
    const size_t n = one_char(in);
    if (n == 1 && static_cast<unsigned char>(in[0]) >= 0x80) return {"\xEF\xBF\xBD", 1};  // malformed: U+FFFD
    return {in.substr(0, n), n};
  }

  void operator()(std::string& text) const {
    std::string_view in = text;
    if (remove_extra)
      while (!in.empty()) {
        const auto p = prefix(in);
        if (p.first != " ") break;
        in.remove_prefix(p.second);
      }
    std::string out;
    if (in.empty()) return text.clear();
    const std::string space = escape ? kSpace : " ";
    if (!suffix && dummy_prefix) out += space;
    bool prev_space = remove_extra;
    while (!in.empty()) {
      auto [piece, consumed] = prefix(in);
      while (prev_space && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
      if (!piece.empty()) {
        for (char c : piece) escape && c == ' ' ? out += kSpace : out += c;
        prev_space = piece.back() == ' ';
      }
      in.remove_prefix(consumed);
      if (!remove_extra) prev_space = false;
    }
    if (remove_extra)
      while (out.size() >= space.size() && out.compare(out.size() - space.size(), space.size(), space) == 0)
        out.resize(out.size() - space.size());
    if (suffix && dummy_prefix) out += space;
    text = std::move(out);
  }
};

// sentencepiece's BPE: characters (user-defined symbols whole), then the adjacent pair
// whose join is the best-scored piece merged first (leftmost on ties); unused pieces
// split back into what made them; unknown pieces become bytes (byte_fallback) or unk.
class SpmBpe final : public Model {
 public:
  SpmBpe(std::vector<UnigramPiece> pieces, int32_t unk, bool byte_fallback, std::vector<std::string> user_symbols)
      : pieces_(std::move(pieces)), unk_(unk), byte_fallback_(byte_fallback), user_symbols_(std::move(user_symbols)) {
    for (size_t i = 0; i < pieces_.size(); ++i) {
      vocab.emplace(pieces_[i].text, static_cast<int32_t>(i));
      if (pieces_[i].kind != UnigramPiece::kReserved) normal_.emplace(pieces_[i].text, static_cast<int32_t>(i));
    }
  }

  void encode(const std::string& s, std::vector<int32_t>& ids) const override {
    struct Symbol {
      std::string_view piece;
      int prev, next;
      bool frozen;
    };
    std::vector<Symbol> symbols;
    for (std::string_view rest = s; !rest.empty();) {
      const std::string_view user = longest_of(user_symbols_, rest);
      const size_t n = user.empty() ? one_char(rest) : user.size();
      const int index = static_cast<int>(symbols.size());
      symbols.push_back({rest.substr(0, n), index - 1, rest.size() == n ? -1 : index + 1, !user.empty()});
      rest.remove_prefix(n);
    }
    struct Pair {
      float score;
      int left, right;
      size_t size;
      bool operator<(const Pair& o) const { return score != o.score ? score < o.score : left > o.left; }
    };
    std::priority_queue<Pair> agenda;
    std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> made_of;  // unused pieces
    const auto offer = [&](int left, int right) {
      if (left < 0 || right < 0 || symbols[left].frozen || symbols[right].frozen) return;
      const std::string_view joined(symbols[left].piece.data(), symbols[left].piece.size() + symbols[right].piece.size());
      const auto it = normal_.find(joined);
      if (it == normal_.end()) return;
      const UnigramPiece& p = pieces_[static_cast<size_t>(it->second)];
      agenda.push({static_cast<float>(p.score), left, right, joined.size()});
      if (p.kind == UnigramPiece::kUnused) made_of[joined] = {symbols[left].piece, symbols[right].piece};
    };
    for (size_t i = 1; i < symbols.size(); ++i) offer(static_cast<int>(i - 1), static_cast<int>(i));
    while (!agenda.empty()) {
      const Pair top = agenda.top();
      agenda.pop();
      Symbol& l = symbols[top.left];
      Symbol& r = symbols[top.right];
      if (l.piece.empty() || r.piece.empty() || l.piece.size() + r.piece.size() != top.size) continue;
      l.piece = std::string_view(l.piece.data(), top.size);
      l.next = r.next;
      if (r.next >= 0) symbols[r.next].prev = top.left;
      r.piece = {};
      offer(l.prev, top.left);
      offer(top.left, l.next);
    }
    const std::function<void(std::string_view)> emit = [&](std::string_view w) {
      const auto it = vocab.find(std::string(w));
      if (it != vocab.end() && pieces_[static_cast<size_t>(it->second)].kind == UnigramPiece::kUnused)
        if (const auto m = made_of.find(w); m != made_of.end()) {
          emit(m->second.first);
          emit(m->second.second);
          return;
        }
      if (it != vocab.end() && it->second != unk_) return ids.push_back(it->second);
      if (byte_fallback_)
        if (const auto bytes = byte_ids(vocab, w)) return ids.insert(ids.end(), bytes->begin(), bytes->end()), void();
      ids.push_back(unk_);
    };
    for (int i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) emit(symbols[i].piece);
  }

 private:
  std::vector<UnigramPiece> pieces_;
  std::unordered_map<std::string_view, int32_t> normal_;  // views of pieces_: normal, user-defined, unused
  int32_t unk_;
  bool byte_fallback_;
  std::vector<std::string> user_symbols_;
};

std::string read_file(const std::string& path, const Where& where) {
  std::ifstream in(path, std::ios::binary);
  if (!in) where.bad("cannot be read");
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

}  // namespace

Charsmap::Charsmap(std::string_view blob, const Where& where) {
  if (blob.empty()) return;
  uint32_t trie_bytes = 0;
  if (blob.size() < 4) where.bad("the precompiled normalization rules are truncated");
  std::memcpy(&trie_bytes, blob.data(), 4);
  if (trie_bytes % 4 != 0 || trie_bytes > blob.size() - 4 || trie_bytes == 0)
    where.bad("the precompiled normalization rules are not a darts-clone trie");
  units_.resize(trie_bytes / 4);
  std::memcpy(units_.data(), blob.data() + 4, trie_bytes);
  replacements_ = std::string(blob.substr(4 + trie_bytes));
}

std::vector<std::pair<size_t, std::string_view>> Charsmap::prefixes(std::string_view s) const {
  std::vector<std::pair<size_t, std::string_view>> out;
  if (units_.empty()) return out;
  const auto offset = [](uint32_t u) { return (u >> 10) << ((u & (1U << 9)) >> 6); };
  uint32_t id = offset(units_[0]);
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    id ^= c;
    if (id >= units_.size()) break;
    const uint32_t unit = units_[id];
    if ((unit & ((1U << 31) | 0xFF)) != c) break;  // the label
    id ^= offset(unit);
    if (id >= units_.size()) break;
    if ((unit >> 8) & 1) {  // has a leaf: its value is where the replacement starts
      const size_t at = units_[id] & ((1U << 31) - 1);
      if (at >= replacements_.size()) break;
      const size_t end = replacements_.find('\0', at);
      out.emplace_back(i + 1, std::string_view(replacements_).substr(at, end == std::string::npos ? end : end - at));
    }
  }
  return out;
}

Normalize precompiled_normalizer(std::shared_ptr<const Charsmap> rules) {
  return [rules](std::string& s) {
    if (s.empty()) return;
    std::u16string text;
    int32_t n16 = 0;
    UErrorCode e = U_ZERO_ERROR;
    u_strFromUTF8(nullptr, 0, &n16, s.data(), static_cast<int32_t>(s.size()), &e);
    text.resize(static_cast<size_t>(n16));
    e = U_ZERO_ERROR;
    u_strFromUTF8(text.data(), n16, nullptr, s.data(), static_cast<int32_t>(s.size()), &e);
    e = U_ZERO_ERROR;
    UBreakIterator* graphemes = ubrk_open(UBRK_CHARACTER, "", text.data(), n16, &e);
    if (U_FAILURE(e)) throw InputError(std::string("ICU has no grapheme break rules: ") + u_errorName(e));
    // UTF-16 boundaries back to UTF-8 offsets, walking both strings together.
    std::string out;
    size_t byte = 0;
    int32_t unit = 0;
    for (int32_t next = ubrk_next(graphemes); next != UBRK_DONE; next = ubrk_next(graphemes)) {
      const size_t begin = byte;
      for (; unit < next; ++unit) {
        if (U16_IS_LEAD(text[static_cast<size_t>(unit)])) ++unit;
        byte += char_length(static_cast<unsigned char>(s[byte]));
      }
      const std::string_view g = std::string_view(s).substr(begin, byte - begin);
      if (g.size() < 6)
        if (const auto hit = rules->prefixes(g); !hit.empty()) {
          out += hit.front().second;
          continue;
        }
      for (size_t at = 0; at < g.size();) {
        const size_t n = char_length(static_cast<unsigned char>(g[at]));
        const std::string_view c = g.substr(at, n);
        const auto hit = rules->prefixes(c);
        out += hit.empty() ? c : hit.front().second;
        at += n;
      }
    }
    ubrk_close(graphemes);
    s = std::move(out);
  };
}

namespace {

// tokenizer.model's ModelProto: the vocabulary and settings, and the normalization rules.
SentencePieceVocab parse_model(const std::string& bytes, const Where& where, std::string& charsmap, bool& suffix,
                               bool& escape) {
  SentencePieceVocab v;
  int64_t model_type = 1, unk = 0, bos = 1, eos = 2, pad = -1;  // the proto's defaults
  Proto model(bytes, where);
  for (uint32_t field; (field = model.next()) != 0;) {
    if (field == 1) {  // SentencePiece {piece = 1, score = 2, type = 3}
      v.pieces.emplace_back();
      v.scores.push_back(0);
      v.types.push_back(1);
      Proto piece(model.data(), where);
      for (uint32_t f; (f = piece.next()) != 0;) {
        if (f == 1) v.pieces.back() = std::string(piece.data());
        if (f == 2) v.scores.back() = piece.f32();
        if (f == 3) v.types.back() = static_cast<int32_t>(piece.integer());
      }
    } else if (field == 2) {  // TrainerSpec {model_type = 3, treat_whitespace_as_suffix = 24,
                              // byte_fallback = 35, unk_id = 40, bos_id = 41, eos_id = 42, pad_id = 43}
      Proto spec(model.data(), where);
      for (uint32_t f; (f = spec.next()) != 0;) {
        const auto id = static_cast<int32_t>(spec.integer());  // int32 varints: -1 is ten bytes
        if (f == 3) model_type = id;
        if (f == 24) suffix = id != 0;
        if (f == 35) v.byte_fallback = id != 0;
        if (f == 40) unk = id;
        if (f == 41) bos = id;
        if (f == 42) eos = id;
        if (f == 43) pad = id;
      }
    } else if (field == 3) {  // NormalizerSpec {precompiled_charsmap = 2, add_dummy_prefix = 3,
                              // remove_extra_whitespaces = 4, escape_whitespaces = 5}
      Proto spec(model.data(), where);
      for (uint32_t f; (f = spec.next()) != 0;) {
        if (f == 2) charsmap = std::string(spec.data());
        if (f == 3) v.add_dummy_prefix = spec.integer() != 0;
        if (f == 4) v.remove_extra_whitespaces = spec.integer() != 0;
        if (f == 5) escape = spec.integer() != 0;
      }
    }
  }
  if (v.pieces.empty()) where.bad("not a SentencePiece model (no pieces)");
  if (model_type != 1 && model_type != 2)
    where.bad("model type " + std::to_string(model_type) + " (word or char) is not supported yet (unigram and BPE are)");
  v.bpe = model_type == 2;
  v.normalization_rules = !charsmap.empty();
  const auto n = static_cast<int64_t>(v.pieces.size());
  const auto id = [&](int64_t i) { return i >= 0 && i < n ? static_cast<int32_t>(i) : -1; };
  v.unk = id(unk), v.bos = id(bos), v.eos = id(eos), v.pad = id(pad);
  return v;
}

}  // namespace

SentencePieceModel read_sentencepiece(const std::string& path, const Where& where) {
  std::string charsmap;
  bool suffix = false, escape = true;
  const SentencePieceVocab v = parse_model(read_file(path, where), where, charsmap, suffix, escape);
  auto normalizer = std::make_shared<SpmNormalizer>();
  if (!charsmap.empty()) normalizer->rules = std::make_shared<Charsmap>(charsmap, where);
  normalizer->dummy_prefix = v.add_dummy_prefix;
  normalizer->remove_extra = v.remove_extra_whitespaces;
  normalizer->escape = escape;
  normalizer->suffix = suffix;
  std::vector<UnigramPiece> pieces;
  std::optional<int32_t> unk;
  for (size_t i = 0; i < v.pieces.size(); ++i) {
    const int32_t type = v.types[i];  // NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6
    pieces.push_back({v.pieces[i], v.scores[i],
                      type == 1   ? UnigramPiece::kNormal
                      : type == 4 ? UnigramPiece::kUserDefined
                      : type == 5 ? UnigramPiece::kUnused
                                  : UnigramPiece::kReserved});
    if (type == 2 && !unk) unk = static_cast<int32_t>(i);
    if (type == 4) normalizer->user_symbols.push_back(v.pieces[i]);
  }
  SentencePieceModel out;
  out.bos = v.bos;
  if (!v.bpe) {
    out.model = make_unigram(std::move(pieces), unk, v.byte_fallback, true);
  } else {
    if (!unk) where.bad("the BPE model has no unknown piece");
    out.model = std::make_unique<SpmBpe>(std::move(pieces), *unk, v.byte_fallback, normalizer->user_symbols);
  }
  out.normalize = [normalizer](std::string& s) { (*normalizer)(s); };
  return out;
}

}  // namespace mq::tok

namespace mq {

SentencePieceVocab read_sentencepiece_vocab(const std::filesystem::path& file) {
  const tok::Where where{file.string()};
  std::string charsmap;
  bool suffix = false, escape = true;
  return tok::parse_model(tok::read_file(file.string(), where), where, charsmap, suffix, escape);
}

}  // namespace mq
