// The models of tokenizer.json (BPE, WordPiece, Unigram) as `tokenizers` 0.19 encodes a
// pre-tokenized piece.
#include "tokenizer_parts.hpp"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <mutex>
#include <optional>
#include <queue>

#include "mq/error.hpp"

namespace mq::tok {

namespace {

std::string text_of(const Json& m, const char* key) {
  return m.contains(key) && m[key].is_string() ? m[key].get<std::string>() : std::string();
}

class Bpe final : public Model {
 public:
  Bpe(const Json& m, const Where& where);
  void encode(const std::string& piece, std::vector<int32_t>& ids) const override;

 private:
  void encode_uncached(const std::string& piece, std::vector<int32_t>& ids) const;

  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (left, right) -> (rank, merged)
  std::optional<int32_t> unk_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::string continuing_prefix_, end_suffix_;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

Bpe::Bpe(const Json& m, const Where& where) {
  if (m.contains("dropout") && m["dropout"].is_number() && m["dropout"].get<double>() > 0)
    where.bad("BPE dropout is not supported (it makes tokenization random)");
  continuing_prefix_ = text_of(m, "continuing_subword_prefix");
  end_suffix_ = text_of(m, "end_of_word_suffix");
  fuse_unk_ = m.value("fuse_unk", false);
  byte_fallback_ = m.value("byte_fallback", false);
  ignore_merges_ = m.value("ignore_merges", false);
  if (!m.contains("vocab") || !m["vocab"].is_object()) where.bad("model.vocab is not an object");
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > INT32_MAX)
      where.bad("model.vocab['" + it.key() + "'] is not a token id");
    vocab.emplace(it.key(), it.value().get<int32_t>());
  }
  if (const std::string u = text_of(m, "unk_token"); !u.empty()) {
    const auto it = vocab.find(u);
    if (it == vocab.end()) where.bad("model.unk_token '" + u + "' is not in the vocabulary");
    unk_ = it->second;
  }
  if (!m.contains("merges") || !m["merges"].is_array()) where.bad("model.merges is not a list");
  const auto& list = m["merges"];
  merges_.reserve(list.size());
  for (size_t rank = 0; rank < list.size(); ++rank) {
    const Json& e = list[rank];
    std::string a, b;
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        where.bad("model.merges[" + std::to_string(rank) + "] is not two tokens");
      a = s.substr(0, space), b = s.substr(space + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>(), b = e[1].get<std::string>();
    } else {
      where.bad("model.merges[" + std::to_string(rank) + "] is not two tokens");
    }
    const auto ia = vocab.find(a), ib = vocab.find(b);
    const std::string merged = a + b.substr(std::min(continuing_prefix_.size(), b.size()));
    const auto im = vocab.find(merged);
    if (ia == vocab.end() || ib == vocab.end() || im == vocab.end())
      where.bad("model.merges[" + std::to_string(rank) + "] ('" + a + "', '" + b + "') has a token not in the vocabulary");
    const uint64_t key = (uint64_t(uint32_t(ia->second)) << 32) | uint32_t(ib->second);
    merges_.emplace(key, std::pair<int32_t, int32_t>{static_cast<int32_t>(rank), im->second});
  }
}

void Bpe::encode(const std::string& piece, std::vector<int32_t>& ids) const {
  if (ignore_merges_)
    if (const auto it = vocab.find(piece); it != vocab.end()) return ids.push_back(it->second);
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (const auto it = cache_.find(piece); it != cache_.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> out;
  encode_uncached(piece, out);
  ids.insert(ids.end(), out.begin(), out.end());
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() < 100000 && piece.size() < 256) cache_.emplace(piece, std::move(out));
}

void Bpe::encode_uncached(const std::string& piece, std::vector<int32_t>& ids) const {
  struct Symbol {
    int32_t id;
    int prev, next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  bool pending_unk = false;
  const auto push = [&](int32_t id) { symbols.push_back({id, static_cast<int>(symbols.size()) - 1, -1, true}); };
  for (size_t at = 0; at < piece.size();) {
    const size_t n = std::min(char_length(static_cast<unsigned char>(piece[at])), piece.size() - at);
    std::string s = piece.substr(at, n);
    if (at > 0) s.insert(0, continuing_prefix_);
    at += n;
    if (at == piece.size()) s += end_suffix_;
    if (const auto it = vocab.find(s); it != vocab.end()) {
      push(it->second);
      pending_unk = false;
      continue;
    }
    if (byte_fallback_)
      if (const auto bytes = byte_ids(vocab, std::string_view(piece).substr(at - n, n))) {
        for (int32_t id : *bytes) push(id);
        pending_unk = false;
        continue;
      }
    if (!unk_) continue;  // as tokenizers: dropped without an unk token
    if (!(fuse_unk_ && pending_unk)) push(*unk_);
    pending_unk = true;
  }
  for (size_t i = 0; i + 1 < symbols.size(); ++i) symbols[i].next = static_cast<int>(i + 1);

  struct Merge {
    int32_t rank;
    int pos;
    int32_t merged;
    bool operator>(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Merge, std::vector<Merge>, std::greater<Merge>> queue;
  const auto pair_of = [&](int left) -> const std::pair<int32_t, int32_t>* {
    const int right = symbols[left].next;
    if (right < 0) return nullptr;
    const uint64_t key = (uint64_t(uint32_t(symbols[left].id)) << 32) | uint32_t(symbols[right].id);
    const auto it = merges_.find(key);
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i)
    if (const auto* m = pair_of(static_cast<int>(i))) queue.push({m->first, static_cast<int>(i), m->second});
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    const auto* m = pair_of(top.pos);
    if (!m || m->second != top.merged) continue;  // stale: a neighbour merged first
    Symbol& right = symbols[left.next];
    left.id = top.merged;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0)
      if (const auto* p = pair_of(left.prev)) queue.push({p->first, left.prev, p->second});
    if (const auto* p = pair_of(top.pos)) queue.push({p->first, top.pos, p->second});
  }
  for (const Symbol& s : symbols)
    if (s.alive) ids.push_back(s.id);
}

// BERT's: the longest vocabulary entry from the start of the word, then of the rest
// (with "##"), until the word is used up; a word that cannot be covered is one unk.
class WordPiece final : public Model {
 public:
  WordPiece(const Json& m, const Where& where) {
    if (!m.contains("vocab") || !m["vocab"].is_object()) where.bad("model.vocab is not an object");
    for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
      if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > INT32_MAX)
        where.bad("model.vocab['" + it.key() + "'] is not a token id");
      vocab.emplace(it.key(), it.value().get<int32_t>());
    }
    const std::string u = m.value("unk_token", "[UNK]");
    const auto it = vocab.find(u);
    if (it == vocab.end()) where.bad("model.unk_token '" + u + "' is not in the vocabulary");
    unk_ = it->second;
    prefix_ = m.value("continuing_subword_prefix", "##");
    max_chars_ = m.value("max_input_chars_per_word", size_t{100});
  }

  void encode(const std::string& word, std::vector<int32_t>& ids) const override {
    size_t chars = 0;
    for (unsigned char c : word) chars += (c & 0xC0) != 0x80;
    if (chars > max_chars_) return ids.push_back(unk_);
    const size_t from = ids.size();
    std::string candidate;
    for (size_t start = 0; start < word.size();) {
      size_t end = word.size();
      for (; end > start; --end) {
        if (end < word.size() && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80) continue;
        candidate.assign(start > 0 ? prefix_ : "");
        candidate.append(word, start, end - start);
        if (const auto it = vocab.find(candidate); it != vocab.end()) {
          ids.push_back(it->second);
          break;
        }
      }
      if (end == start) {  // nothing matches here: the whole word is unknown
        ids.resize(from);
        return ids.push_back(unk_);
      }
      start = end;
    }
  }

 private:
  int32_t unk_ = 0;
  std::string prefix_;
  size_t max_chars_ = 100;
};

// SentencePiece's unigram model: the segmentation with the highest summed log
// probability (Viterbi); a character no piece covers is unk, scored 10 below the
// lowest piece; consecutive unknowns fuse, then become bytes (byte_fallback) or one unk.
// tokenizers keeps scores in f64; SentencePiece in f32, gives user-defined pieces a
// bonus and never picks unused ones.
template <typename Real>
class Unigram final : public Model {
 public:
  Unigram(std::vector<UnigramPiece> pieces, std::optional<int32_t> unk, bool byte_fallback, bool sentencepiece)
      : pieces_(std::move(pieces)), unk_(unk), byte_fallback_(byte_fallback), sentencepiece_(sentencepiece) {
    double lo = std::numeric_limits<double>::max(), hi = std::numeric_limits<double>::lowest();
    for (size_t i = 0; i < pieces_.size(); ++i) {
      const UnigramPiece& p = pieces_[i];
      vocab.emplace(p.text, static_cast<int32_t>(i));
      if (p.kind == UnigramPiece::kReserved) continue;
      by_text_.emplace(p.text, static_cast<int32_t>(i));
      longest_ = std::max(longest_, p.text.size());
      if (p.kind == UnigramPiece::kNormal || !sentencepiece_) lo = std::min(lo, p.score), hi = std::max(hi, p.score);
    }
    min_score_ = lo, max_score_ = hi;
  }

  void encode(const std::string& s, std::vector<int32_t>& ids) const override {
    struct Node {
      int32_t id = -1;
      Real score = 0;
      size_t start = std::numeric_limits<size_t>::max();  // none yet
    };
    const double unk_score = min_score_ - 10.0;
    std::vector<Node> best(s.size() + 1);
    const auto offer = [&](Node& target, double candidate, int32_t id, size_t start) {
      if (target.start == std::numeric_limits<size_t>::max() || candidate > target.score)
        target = {id, static_cast<Real>(candidate), start};
    };
    for (size_t start = 0; start < s.size();) {
      const size_t width = std::min(char_length(static_cast<unsigned char>(s[start])), s.size() - start);
      const double here = best[start].score;
      bool single = false;
      for (size_t len = 1; len <= std::min(longest_, s.size() - start); ++len) {
        const auto it = by_text_.find(std::string_view(s).substr(start, len));
        if (it == by_text_.end()) continue;
        const UnigramPiece& p = pieces_[static_cast<size_t>(it->second)];
        if (sentencepiece_ && p.kind == UnigramPiece::kUnused) continue;
        const double score = sentencepiece_ && p.kind == UnigramPiece::kUserDefined
                                 ? static_cast<double>(static_cast<float>(len) * static_cast<float>(max_score_)) - 0.1
                                 : p.score;
        offer(best[start + len], score + here, it->second, start);
        single = single || len == width;
      }
      if (!single) {
        if (!unk_) throw InputError("the unigram tokenizer has no unk id for a character it has no piece for");
        offer(best[start + width], unk_score + here, *unk_, start);
      }
      start += width;
    }
    std::vector<std::pair<size_t, size_t>> path;  // [start, end) from the end
    bool fusing = false;
    for (size_t end = s.size(); end > 0;) {
      const Node& n = best[end];
      const bool unknown = unk_ && n.id == *unk_;
      if (unknown && fusing)
        path.back().first = n.start;
      else
        path.emplace_back(n.start, end);
      fusing = unknown;
      end = n.start;
    }
    for (auto it = path.rbegin(); it != path.rend(); ++it) {
      const std::string_view piece = std::string_view(s).substr(it->first, it->second - it->first);
      if (const auto hit = by_text_.find(piece); hit != by_text_.end()) {
        ids.push_back(hit->second);
        continue;
      }
      if (byte_fallback_)
        if (const auto bytes = byte_ids(vocab, piece)) {
          ids.insert(ids.end(), bytes->begin(), bytes->end());
          continue;
        }
      if (!unk_) throw InputError("the unigram tokenizer has no unk id for a piece it does not know");
      ids.push_back(*unk_);
    }
  }

 private:
  std::vector<UnigramPiece> pieces_;
  std::unordered_map<std::string_view, int32_t> by_text_;  // views of pieces_, reserved ones left out
  size_t longest_ = 0;
  double min_score_ = 0, max_score_ = 0;
  std::optional<int32_t> unk_;
  bool byte_fallback_ = false, sentencepiece_ = false;
};

std::unique_ptr<Model> read_unigram(const Json& m, const Where& where) {
  if (!m.contains("vocab") || !m["vocab"].is_array() || m["vocab"].empty())
    where.bad("model.vocab is not a list of [piece, score]");
  const Json& list = m["vocab"];
  std::vector<UnigramPiece> pieces;
  pieces.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const Json& e = list[i];
    if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_number())
      where.bad("model.vocab[" + std::to_string(i) + "] is not [piece, score]");
    pieces.push_back({e[0].get<std::string>(), e[1].get<double>(), UnigramPiece::kNormal});
  }
  std::optional<int32_t> unk;
  if (m.contains("unk_id") && m["unk_id"].is_number_integer()) {
    const int64_t u = m["unk_id"].get<int64_t>();
    if (u < 0 || u >= static_cast<int64_t>(pieces.size())) where.bad("model.unk_id " + std::to_string(u) + " is not in the vocabulary");
    unk = static_cast<int32_t>(u);
  }
  return make_unigram(std::move(pieces), unk, m.value("byte_fallback", false), false);
}

}  // namespace

std::optional<std::vector<int32_t>> byte_ids(const std::unordered_map<std::string, int32_t>& vocab, std::string_view s) {
  std::vector<int32_t> ids;
  for (unsigned char b : s) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    const auto it = vocab.find(name);
    if (it == vocab.end()) return std::nullopt;
    ids.push_back(it->second);
  }
  return ids;
}

std::unique_ptr<Model> read_model(const Json& m, const Where& where) {
  const std::string type = type_of(m);
  if (type == "BPE" || (type.empty() && m.contains("merges"))) return std::make_unique<Bpe>(m, where);
  if (type == "WordPiece") return std::make_unique<WordPiece>(m, where);
  if (type == "Unigram") return read_unigram(m, where);
  where.bad("model type '" + type + "' is not supported yet (BPE, WordPiece and Unigram are)");
}

std::unique_ptr<Model> make_unigram(std::vector<UnigramPiece> pieces, std::optional<int32_t> unk, bool byte_fallback,
                                    bool sentencepiece) {
  if (sentencepiece) return std::make_unique<Unigram<float>>(std::move(pieces), unk, byte_fallback, true);
  return std::make_unique<Unigram<double>>(std::move(pieces), unk, byte_fallback, false);
}

}  // namespace mq::tok
