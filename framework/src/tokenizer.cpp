// tokenizer.json read as the `tokenizers` library (Rust) reads it, for the parts
// tokenizer.hpp lists: added tokens split the text first (leftmost, longest), the
// normalizer and pre-tokenizer cut the rest into pieces, BPE turns each piece into ids
// (merges by rank, leftmost first), and the post-processor adds special tokens.
// Regexes are PCRE2's, with Unicode properties (tokenizers uses Oniguruma).
#include "mq/tokenizer.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "mq/error.hpp"

namespace mq {

namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

constexpr uintmax_t kMaxTokenizerBytes = uintmax_t{1} << 30;

// UTF-8 of code point `cp`.
std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// Bytes in the UTF-8 sequence that `lead` starts (valid text).
size_t char_length(unsigned char lead) { return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4; }

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// GPT-2's byte-level alphabet: each byte as a printable character.
const std::array<std::string, 256>& byte_chars() {
  static const std::array<std::string, 256> chars = [] {
    std::array<std::string, 256> out;
    uint32_t extra = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      out[b] = utf8(printable ? b : 256 + extra++);
    }
    return out;
  }();
  return chars;
}

// GPT-2's pre-tokenizer pattern, which ByteLevel uses when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                          &error, &offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      throw InputError(where + ": regex '" + pattern + "' does not compile at " + std::to_string(offset) + " (" +
                       reinterpret_cast<const char*>(message) + ")");
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter where JIT is unavailable
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // `text` cut at each match: the matches and the text between them, in order, none empty.
  void split(std::string_view text, std::vector<std::string>& out) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t at = 0, done = 0;
    while (at <= text.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), at,
                                 PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        pcre2_match_data_free(md);
        throw InputError("a pre-tokenizer regex failed on the text (PCRE2 error " + std::to_string(rc) + ")");
      }
      const PCRE2_SIZE* v = pcre2_get_ovector_pointer(md);
      if (v[0] == v[1]) {  // an empty match: step over one character
        at = v[1] < text.size() ? v[1] + char_length(static_cast<unsigned char>(text[v[1]])) : text.size() + 1;
        continue;
      }
      if (v[0] > done) out.emplace_back(text.substr(done, v[0] - done));
      out.emplace_back(text.substr(v[0], v[1] - v[0]));
      done = at = v[1];
    }
    if (done < text.size()) out.emplace_back(text.substr(done));
    pcre2_match_data_free(md);
  }

 private:
  pcre2_code* code_ = nullptr;
};

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool lstrip = false, rstrip = false;
};

struct NormalizeStep {
  enum class Kind { kPrepend, kReplace } kind;
  std::string a, b;  // prepend: a; replace: a -> b
};

struct PreStep {
  enum class Kind { kSplit, kByteLevel, kMetaspace } kind;
  std::shared_ptr<Regex> regex;  // split; byte level with use_regex
  bool add_prefix_space = false;  // byte level
  std::string replacement;        // metaspace
  std::string prepend_scheme;     // metaspace: always | first | never
  bool split = false;             // metaspace
};

// The ids a post-processor puts around a single sequence.
struct Template {
  std::vector<int32_t> before, after;
};

std::string type_of(const Json& j) { return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : ""; }

}  // namespace

struct Tokenizer::Impl {
  std::string file;
  std::vector<AddedToken> added;                       // longest first within a first byte
  std::array<std::vector<size_t>, 256> added_by_byte;  // indexes into `added`
  std::vector<NormalizeStep> normalizers;
  std::vector<PreStep> pre;
  Template post;
  // BPE
  std::unordered_map<std::string, int32_t> vocab;
  std::vector<std::string> tokens;  // by id
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (left, right) -> (rank, merged)
  std::optional<int32_t> unk;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  std::string continuing_prefix, end_suffix;
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  [[noreturn]] void bad(const std::string& what) const { throw InputError(file + ": " + what); }

  void read_model(const Json& m);
  void read_normalizer(const Json& n);
  void read_pre_tokenizer(const Json& p);
  void read_post_processor(const Json& p);

  void normalize(std::string& s) const;
  void pre_tokenize(std::string segment, bool first, std::vector<std::string>& pieces) const;
  void bpe(const std::string& piece, std::vector<int32_t>& ids) const;
  void bpe_uncached(const std::string& piece, std::vector<int32_t>& ids) const;
  void encode_segment(std::string_view segment, bool first, std::vector<int32_t>& ids) const;
};

void Tokenizer::Impl::read_model(const Json& m) {
  if (type_of(m) != "BPE") bad("model type '" + type_of(m) + "' is not supported yet (BPE is)");
  if (m.contains("dropout") && m["dropout"].is_number() && m["dropout"].get<double>() > 0)
    bad("BPE dropout is not supported (it makes tokenization random)");
  const auto text = [&](const char* key) {
    return m.contains(key) && m[key].is_string() ? m[key].get<std::string>() : std::string();
  };
  continuing_prefix = text("continuing_subword_prefix");
  end_suffix = text("end_of_word_suffix");
  fuse_unk = m.value("fuse_unk", false);
  byte_fallback = m.value("byte_fallback", false);
  ignore_merges = m.value("ignore_merges", false);
  if (!m.contains("vocab") || !m["vocab"].is_object()) bad("model.vocab is not an object");
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > INT32_MAX)
      bad("model.vocab['" + it.key() + "'] is not a token id");
    vocab.emplace(it.key(), it.value().get<int32_t>());
  }
  if (const std::string u = text("unk_token"); !u.empty()) {
    const auto it = vocab.find(u);
    if (it == vocab.end()) bad("model.unk_token '" + u + "' is not in the vocabulary");
    unk = it->second;
  }
  if (!m.contains("merges") || !m["merges"].is_array()) bad("model.merges is not a list");
  const auto& list = m["merges"];
  merges.reserve(list.size());
  for (size_t rank = 0; rank < list.size(); ++rank) {
    const Json& e = list[rank];
    std::string a, b;
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        bad("model.merges[" + std::to_string(rank) + "] is not two tokens");
      a = s.substr(0, space), b = s.substr(space + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>(), b = e[1].get<std::string>();
    } else {
      bad("model.merges[" + std::to_string(rank) + "] is not two tokens");
    }
    const auto ia = vocab.find(a), ib = vocab.find(b);
    const std::string merged = a + b.substr(std::min(continuing_prefix.size(), b.size()));
    const auto im = vocab.find(merged);
    if (ia == vocab.end() || ib == vocab.end() || im == vocab.end())
      bad("model.merges[" + std::to_string(rank) + "] ('" + a + "', '" + b + "') has a token not in the vocabulary");
    const uint64_t key = (uint64_t(uint32_t(ia->second)) << 32) | uint32_t(ib->second);
    merges.emplace(key, std::pair<int32_t, int32_t>{static_cast<int32_t>(rank), im->second});
  }
}

void Tokenizer::Impl::read_normalizer(const Json& n) {
  if (n.is_null()) return;
  const std::string type = type_of(n);
  if (type == "Sequence") {
    for (const Json& step : n.value("normalizers", Json::array())) read_normalizer(step);
  } else if (type == "Prepend" && n.contains("prepend") && n["prepend"].is_string()) {
    normalizers.push_back({NormalizeStep::Kind::kPrepend, n["prepend"].get<std::string>(), ""});
  } else if (type == "Replace" && n.contains("pattern") && n["pattern"].contains("String") &&
             n["pattern"]["String"].is_string() && n.contains("content") && n["content"].is_string()) {
    if (n["pattern"]["String"].get<std::string>().empty()) bad("normalizer Replace of an empty string");
    normalizers.push_back({NormalizeStep::Kind::kReplace, n["pattern"]["String"].get<std::string>(),
                           n["content"].get<std::string>()});
  } else {
    bad("normalizer '" + (type.empty() ? n.dump() : type) +
        "' is not supported yet (Prepend, Replace of a string, and Sequences of them are)");
  }
}

void Tokenizer::Impl::read_pre_tokenizer(const Json& p) {
  if (p.is_null()) return;
  const std::string type = type_of(p);
  if (type == "Sequence") {
    for (const Json& step : p.value("pretokenizers", Json::array())) read_pre_tokenizer(step);
  } else if (type == "ByteLevel") {
    PreStep s{PreStep::Kind::kByteLevel, nullptr, p.value("add_prefix_space", false), "", "", false};
    if (p.value("use_regex", true)) s.regex = std::make_shared<Regex>(kGpt2Pattern, file + ": pre_tokenizer ByteLevel");
    pre.push_back(std::move(s));
  } else if (type == "Split") {
    if (p.value("behavior", "") != "Isolated" || p.value("invert", false))
      bad("pre_tokenizer Split with behavior '" + p.value("behavior", "") + "'" +
          (p.value("invert", false) ? " inverted" : "") + " is not supported yet (Isolated is)");
    std::string pattern;
    if (p.contains("pattern") && p["pattern"].contains("Regex") && p["pattern"]["Regex"].is_string()) {
      pattern = p["pattern"]["Regex"].get<std::string>();
    } else if (p.contains("pattern") && p["pattern"].contains("String") && p["pattern"]["String"].is_string()) {
      for (char c : p["pattern"]["String"].get<std::string>()) {  // a literal
        if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) pattern += '\\';
        pattern += c;
      }
    } else {
      bad("pre_tokenizer Split has no pattern");
    }
    pre.push_back({PreStep::Kind::kSplit, std::make_shared<Regex>(pattern, file + ": pre_tokenizer Split"), false,
                   "", "", false});
  } else if (type == "Metaspace") {
    PreStep s{PreStep::Kind::kMetaspace, nullptr, false, p.value("replacement", "\xE2\x96\x81"),
              p.value("prepend_scheme", p.value("add_prefix_space", true) ? "always" : "never"), p.value("split", true)};
    if (s.prepend_scheme != "always" && s.prepend_scheme != "first" && s.prepend_scheme != "never")
      bad("pre_tokenizer Metaspace prepend_scheme '" + s.prepend_scheme + "' is not one of always, first, never");
    pre.push_back(std::move(s));
  } else {
    bad("pre_tokenizer '" + (type.empty() ? p.dump() : type) +
        "' is not supported yet (ByteLevel, Split isolated, Metaspace, and Sequences of them are)");
  }
}

void Tokenizer::Impl::read_post_processor(const Json& p) {
  if (p.is_null()) return;
  const std::string type = type_of(p);
  const auto pair_id = [&](const char* key) {
    if (!p.contains(key) || !p[key].is_array() || p[key].size() != 2 || !p[key][1].is_number_integer())
      bad("post_processor " + type + "." + key + " is not [token, id]");
    return p[key][1].get<int32_t>();
  };
  if (type == "Sequence") {
    for (const Json& step : p.value("processors", Json::array())) read_post_processor(step);
  } else if (type == "ByteLevel") {
    // offsets only
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    post.before.push_back(pair_id("cls"));
    post.after.insert(post.after.begin(), pair_id("sep"));
  } else if (type == "TemplateProcessing") {
    const Json& single = p.value("single", Json::array());
    const Json& specials = p.value("special_tokens", Json::object());
    bool seen_sequence = false;
    for (const Json& piece : single) {
      if (piece.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      if (!piece.contains("SpecialToken") || !piece["SpecialToken"].contains("id"))
        bad("post_processor TemplateProcessing: a piece of 'single' is neither a Sequence nor a SpecialToken");
      const std::string name = piece["SpecialToken"]["id"].get<std::string>();
      if (!specials.contains(name) || !specials[name].contains("ids") || !specials[name]["ids"].is_array())
        bad("post_processor TemplateProcessing: special token '" + name + "' has no ids");
      for (const Json& id : specials[name]["ids"]) (seen_sequence ? post.after : post.before).push_back(id.get<int32_t>());
    }
  } else {
    bad("post_processor '" + (type.empty() ? p.dump() : type) +
        "' is not supported yet (TemplateProcessing, Bert, Roberta, ByteLevel are)");
  }
}

void Tokenizer::Impl::normalize(std::string& s) const {
  for (const NormalizeStep& n : normalizers) {
    if (n.kind == NormalizeStep::Kind::kPrepend) {
      if (!s.empty()) s.insert(0, n.a);
      continue;
    }
    std::string out;
    for (size_t at = 0;;) {
      const size_t hit = s.find(n.a, at);
      out.append(s, at, hit == std::string::npos ? std::string::npos : hit - at);
      if (hit == std::string::npos) break;
      out += n.b;
      at = hit + n.a.size();
    }
    s = std::move(out);
  }
}

void Tokenizer::Impl::pre_tokenize(std::string segment, bool first, std::vector<std::string>& pieces) const {
  std::vector<std::string> current{std::move(segment)}, next;
  for (const PreStep& step : pre) {
    next.clear();
    for (std::string& piece : current) {
      switch (step.kind) {
        case PreStep::Kind::kSplit:
          step.regex->split(piece, next);
          break;
        case PreStep::Kind::kByteLevel: {
          if (step.add_prefix_space && (piece.empty() || piece[0] != ' ')) piece.insert(0, " ");
          const size_t from = next.size();
          if (step.regex)
            step.regex->split(piece, next);
          else
            next.push_back(std::move(piece));
          for (size_t i = from; i < next.size(); ++i) {
            std::string mapped;
            for (unsigned char b : next[i]) mapped += byte_chars()[b];
            next[i] = std::move(mapped);
          }
          break;
        }
        case PreStep::Kind::kMetaspace: {
          std::string s;
          for (char c : piece) c == ' ' ? s += step.replacement : s += c;
          const bool prepend = step.prepend_scheme == "always" || (step.prepend_scheme == "first" && first);
          if (prepend && s.compare(0, step.replacement.size(), step.replacement) != 0) s.insert(0, step.replacement);
          if (!step.split) {
            next.push_back(std::move(s));
            break;
          }
          size_t start = 0;  // each piece starts at a replacement (merged with the next)
          for (size_t at = s.find(step.replacement, 1); at != std::string::npos; at = s.find(step.replacement, at + 1)) {
            if (at > start) next.push_back(s.substr(start, at - start));
            start = at;
          }
          if (start < s.size()) next.push_back(s.substr(start));
          break;
        }
      }
    }
    std::swap(current, next);
    first = false;  // a later step's "first" would be the first piece's, which Metaspace does not nest
  }
  for (std::string& p : current)
    if (!p.empty()) pieces.push_back(std::move(p));
}

void Tokenizer::Impl::bpe(const std::string& piece, std::vector<int32_t>& ids) const {
  if (ignore_merges)
    if (const auto it = vocab.find(piece); it != vocab.end()) return ids.push_back(it->second);
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (const auto it = cache.find(piece); it != cache.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> out;
  bpe_uncached(piece, out);
  ids.insert(ids.end(), out.begin(), out.end());
  std::lock_guard<std::mutex> lock(cache_mutex);
  if (cache.size() < 100000 && piece.size() < 256) cache.emplace(piece, std::move(out));
}

void Tokenizer::Impl::bpe_uncached(const std::string& piece, std::vector<int32_t>& ids) const {
  struct Symbol {
    int32_t id;
    int prev, next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  bool pending_unk = false;
  const auto push = [&](int32_t id) {
    symbols.push_back({id, static_cast<int>(symbols.size()) - 1, -1, true});
  };
  for (size_t at = 0; at < piece.size();) {
    const size_t n = std::min(char_length(static_cast<unsigned char>(piece[at])), piece.size() - at);
    std::string s = piece.substr(at, n);
    if (at > 0) s.insert(0, continuing_prefix);
    at += n;
    if (at == piece.size()) s += end_suffix;
    if (const auto it = vocab.find(s); it != vocab.end()) {
      push(it->second);
      pending_unk = false;
      continue;
    }
    if (byte_fallback) {
      std::vector<int32_t> bytes;
      for (unsigned char b : piece.substr(at - n, n)) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        if (const auto it = vocab.find(name); it != vocab.end()) bytes.push_back(it->second);
      }
      if (bytes.size() == n) {
        for (int32_t id : bytes) push(id);
        pending_unk = false;
        continue;
      }
    }
    if (!unk) continue;  // as tokenizers: dropped without an unk token
    if (!(fuse_unk && pending_unk)) push(*unk);
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
    const auto it = merges.find(key);
    return it == merges.end() ? nullptr : &it->second;
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

void Tokenizer::Impl::encode_segment(std::string_view segment, bool first, std::vector<int32_t>& ids) const {
  std::string s(segment);
  normalize(s);
  std::vector<std::string> pieces;
  pre_tokenize(std::move(s), first, pieces);
  for (const std::string& p : pieces) bpe(p, ids);
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::load(const fs::path& path) {
  std::error_code ec;
  const fs::path file = fs::is_directory(path, ec) ? path / "tokenizer.json" : path;
  auto impl = std::make_unique<Impl>();
  impl->file = file.string();
  if (!fs::is_regular_file(file, ec)) {
    if (fs::is_directory(path, ec) && fs::exists(path / "tokenizer.model", ec))
      impl->bad("no such file (the directory has a SentencePiece tokenizer.model, which is not read yet)");
    impl->bad("no such file");
  }
  if (fs::file_size(file, ec) > kMaxTokenizerBytes) impl->bad("larger than 1 GiB, too large for a tokenizer");
  std::ifstream in(file, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  const Json j = Json::parse(text.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) impl->bad("not a JSON object (a tokenizer.json is one)");
  if (!j.contains("model")) impl->bad("no 'model': not a tokenizers tokenizer.json");
  impl->read_model(j["model"]);
  const Json none;
  impl->read_normalizer(j.contains("normalizer") ? j["normalizer"] : none);
  impl->read_pre_tokenizer(j.contains("pre_tokenizer") ? j["pre_tokenizer"] : none);

  const Json added = j.value("added_tokens", Json::array());
  if (!added.is_array()) impl->bad("added_tokens is not a list");
  for (const Json& t : added) {
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") ||
        !t["content"].is_string() || t["content"].get<std::string>().empty())
      impl->bad("an entry of added_tokens has no id or content");
    const std::string content = t["content"].get<std::string>();
    if (t.value("single_word", false)) impl->bad("added token '" + content + "' is single_word, which is not supported yet");
    impl->added.push_back({content, t["id"].get<int32_t>(), t.value("lstrip", false), t.value("rstrip", false)});
  }
  std::stable_sort(impl->added.begin(), impl->added.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
  for (size_t i = 0; i < impl->added.size(); ++i)
    impl->added_by_byte[static_cast<unsigned char>(impl->added[i].content[0])].push_back(i);
  impl->read_post_processor(j.contains("post_processor") ? j["post_processor"] : none);

  int32_t top = -1;
  for (const auto& [token, id] : impl->vocab) top = std::max(top, id);
  for (const AddedToken& t : impl->added) top = std::max(top, t.id);
  impl->tokens.resize(static_cast<size_t>(top + 1));
  for (const auto& [token, id] : impl->vocab) impl->tokens[static_cast<size_t>(id)] = token;
  for (const AddedToken& t : impl->added) impl->tokens[static_cast<size_t>(t.id)] = t.content;
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special) const {
  check_utf8(text, "the text to tokenize");  // the regexes assume it
  const Impl& m = *impl_;
  std::vector<int32_t> ids;
  if (add_special) ids = m.post.before;
  // Added tokens first, leftmost and then longest; the text between them goes through
  // the model. lstrip/rstrip tokens take the whitespace beside them.
  size_t done = 0;
  for (size_t at = 0; at < text.size();) {
    const AddedToken* hit = nullptr;
    for (size_t i : m.added_by_byte[static_cast<unsigned char>(text[at])])
      if (text.compare(at, m.added[i].content.size(), m.added[i].content) == 0) {
        hit = &m.added[i];
        break;
      }
    if (!hit) {
      ++at;
      continue;
    }
    size_t begin = at, end = at + hit->content.size();
    if (hit->lstrip)
      while (begin > done && is_space(text[begin - 1])) --begin;
    if (hit->rstrip)
      while (end < text.size() && is_space(text[end])) ++end;
    if (begin > done) m.encode_segment(text.substr(done, begin - done), done == 0, ids);
    ids.push_back(hit->id);
    done = at = end;
  }
  if (done < text.size()) m.encode_segment(text.substr(done), done == 0, ids);
  if (add_special) ids.insert(ids.end(), m.post.after.begin(), m.post.after.end());
  return ids;
}

std::string Tokenizer::token(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->tokens.size() ? impl_->tokens[static_cast<size_t>(id)] : "";
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->tokens.size()); }

void check_utf8(std::string_view text, const std::string& what) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = s[i];
    size_t len = 0;
    uint32_t cp = 0, min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    }
    bool ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      ok = (s[i + k] & 0xC0) == 0x80;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (!ok || cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      throw InputError(what + ": invalid UTF-8 at byte " + std::to_string(i));
    i += len;
  }
}

}  // namespace mq
