// A model directory's tokenizer as transformers runs it: tokenizer.json's parts
// (tokenizer_parts.hpp) chained as the `tokenizers` library (Rust) chains them: added
// tokens split the text first (leftmost, longest; those marked `normalized` are found in
// the normalized text), the normalizer and pre-tokenizer cut the rest into pieces, the
// model turns each piece into ids, and the post-processor adds special tokens. A
// directory with only a SentencePiece tokenizer.model runs it as sentencepiece does.
#include "mq/tokenizer.hpp"

#include <algorithm>
#include <array>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>

#include "mq/error.hpp"
#include "tokenizer_parts.hpp"

namespace mq {

namespace fs = std::filesystem;
using tok::Json;

namespace {

constexpr uintmax_t kMaxTokenizerBytes = uintmax_t{1} << 30;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool lstrip = false, rstrip = false, single_word = false;
  std::string match;  // what is found in the text: the content, normalized where the token is
};

// A match of a single_word token with a word character (Rust regex's \w) beside it.
bool inside_a_word(std::string_view text, size_t begin, size_t end) {
  if (end < text.size()) {
    size_t at = end;
    if (tok::is_word_char(tok::next_char(text, at))) return true;
  }
  if (begin == 0) return false;
  size_t start = begin - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return tok::is_word_char(tok::next_char(text, start));
}

// Added tokens, found leftmost and then longest.
class AddedTokens {
 public:
  void add(AddedToken t) { tokens_.push_back(std::move(t)); }
  // Ready to split, each token's content found as it is or as `normalize` leaves it.
  void index(const std::function<void(std::string&)>& normalize) {
    for (AddedToken& t : tokens_) {
      t.match = t.content;
      if (normalize) normalize(t.match);
    }
    std::stable_sort(tokens_.begin(), tokens_.end(),
                     [](const AddedToken& a, const AddedToken& b) { return a.match.size() > b.match.size(); });
    for (size_t i = 0; i < tokens_.size(); ++i)
      if (!tokens_[i].match.empty()) by_byte_[static_cast<unsigned char>(tokens_[i].match[0])].push_back(i);
  }
  const std::vector<AddedToken>& all() const { return tokens_; }

  // Calls gap(text, starts_text) for the text between tokens and token(id) for each,
  // in order; lstrip/rstrip tokens take the whitespace beside them.
  template <typename Gap, typename Token>
  void split(std::string_view text, Gap gap, Token token) const {
    size_t done = 0;
    for (size_t at = 0; at < text.size();) {
      const AddedToken* hit = nullptr;
      for (size_t i : by_byte_[static_cast<unsigned char>(text[at])])
        if (text.compare(at, tokens_[i].match.size(), tokens_[i].match) == 0) {
          hit = &tokens_[i];
          break;
        }
      if (!hit) {
        ++at;
        continue;
      }
      if (hit->single_word && inside_a_word(text, at, at + hit->match.size())) {
        at += hit->match.size();  // as tokenizers: the search goes on after the discarded match
        continue;
      }
      size_t begin = at, end = at + hit->match.size();
      if (hit->lstrip)
        while (begin > done && is_space(text[begin - 1])) --begin;
      if (hit->rstrip)
        while (end < text.size() && is_space(text[end])) ++end;
      if (begin > done) gap(text.substr(done, begin - done), done == 0);
      token(hit->id);
      done = at = end;
    }
    if (done < text.size()) gap(text.substr(done), done == 0);
  }

 private:
  std::vector<AddedToken> tokens_;
  std::array<std::vector<size_t>, 256> by_byte_;  // indexes into tokens_
};

// The ids a post-processor puts around a single sequence.
struct Template {
  std::vector<int32_t> before, after;
};

// A token named in tokenizer_config.json: a string or {"content": ...}.
std::string token_text(const Json& j) {
  if (j.is_string()) return j.get<std::string>();
  return j.is_object() && j.contains("content") && j["content"].is_string() ? j["content"].get<std::string>() : "";
}

Json read_json(const fs::path& file, const tok::Where& where) {
  std::error_code ec;
  if (fs::file_size(file, ec) > kMaxTokenizerBytes) where.bad("larger than 1 GiB, too large for a tokenizer");
  std::ifstream in(file, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  Json j = Json::parse(text.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) where.bad("not a JSON object");
  return j;
}

}  // namespace

struct Tokenizer::Impl {
  tok::Where where;
  AddedTokens raw, normalized;  // found in the text as given; in the normalized text
  std::vector<tok::Normalize> normalizers;
  std::vector<tok::PreTokenize> pre;
  std::unique_ptr<tok::Model> model;
  Template post;
  std::vector<std::string> tokens;  // by id

  void read_post_processor(const Json& p);
  void read_config(const fs::path& directory, bool any_class);
  void encode_segment(std::string_view segment, bool first, std::vector<int32_t>& ids) const;
};

void Tokenizer::Impl::read_post_processor(const Json& p) {
  if (p.is_null()) return;
  const std::string type = tok::type_of(p);
  const auto pair_id = [&](const char* key) {
    if (!p.contains(key) || !p[key].is_array() || p[key].size() != 2 || !p[key][1].is_number_integer())
      where.bad("post_processor " + type + "." + key + " is not [token, id]");
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
        where.bad("post_processor TemplateProcessing: a piece of 'single' is neither a Sequence nor a SpecialToken");
      const std::string name = piece["SpecialToken"]["id"].get<std::string>();
      if (!specials.contains(name) || !specials[name].contains("ids") || !specials[name]["ids"].is_array())
        where.bad("post_processor TemplateProcessing: special token '" + name + "' has no ids");
      for (const Json& id : specials[name]["ids"]) (seen_sequence ? post.after : post.before).push_back(id.get<int32_t>());
    }
  } else {
    where.bad("post_processor '" + (type.empty() ? p.dump() : type) +
              "' is not supported yet (TemplateProcessing, Bert, Roberta, ByteLevel are)");
  }
}

// tokenizer_config.json's add_bos_token / add_eos_token, which transformers' Llama-style
// tokenizers apply over tokenizer.json's post-processor, and which say what a
// tokenizer.model alone (`any_class`) adds.
void Tokenizer::Impl::read_config(const fs::path& directory, bool any_class) {
  std::error_code ec;
  const fs::path file = directory / "tokenizer_config.json";
  if (!fs::is_regular_file(file, ec)) return;
  const Json c = read_json(file, tok::Where{file.string()});
  const std::string cls = c.value("tokenizer_class", "");
  const bool llama_style = cls.rfind("Llama", 0) == 0 || cls.rfind("CodeLlama", 0) == 0 || cls.rfind("Gemma", 0) == 0;
  if (!(llama_style || any_class) || (!c.contains("add_bos_token") && !c.contains("add_eos_token"))) return;
  const auto id_of = [&](const char* key) -> std::optional<int32_t> {
    const std::string text = c.contains(key) ? token_text(c[key]) : "";
    if (const auto it = model->vocab.find(text); !text.empty() && it != model->vocab.end()) return it->second;
    for (const AddedToken& t : raw.all())
      if (t.content == text) return t.id;
    return std::nullopt;
  };
  post = {};
  if (c.value("add_bos_token", true)) {
    const auto bos = id_of("bos_token");
    if (!bos) tok::Where{file.string()}.bad("add_bos_token is true but bos_token is not a token of the tokenizer");
    post.before.push_back(*bos);
  }
  if (c.value("add_eos_token", false)) {
    const auto eos = id_of("eos_token");
    if (!eos) tok::Where{file.string()}.bad("add_eos_token is true but eos_token is not a token of the tokenizer");
    post.after.push_back(*eos);
  }
}

void Tokenizer::Impl::encode_segment(std::string_view segment, bool first, std::vector<int32_t>& ids) const {
  std::string s(segment);
  for (const tok::Normalize& n : normalizers) n(s);
  normalized.split(
      s,
      [&](std::string_view part, bool starts) {
        std::vector<std::string> current{std::string(part)}, next;
        bool at_start = first && starts;
        for (const tok::PreTokenize& step : pre) {
          next.clear();
          for (std::string& piece : current) step(piece, at_start, next);
          std::swap(current, next);
          at_start = false;  // a later step's "first" would be the first piece's, which Metaspace does not nest
        }
        for (const std::string& p : current)
          if (!p.empty()) model->encode(p, ids);
      },
      [&](int32_t id) { ids.push_back(id); });
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::load(const fs::path& path) {
  std::error_code ec;
  const bool directory = fs::is_directory(path, ec);
  auto impl = std::make_unique<Impl>();
  fs::path file = directory ? path / "tokenizer.json" : path;
  if (directory && !fs::is_regular_file(file, ec) && fs::is_regular_file(path / "tokenizer.model", ec))
    file = path / "tokenizer.model";
  impl->where.file = file.string();
  if (!fs::is_regular_file(file, ec)) impl->where.bad("no such file");

  const bool sentencepiece = file.extension() == ".model";
  if (sentencepiece) {  // as LlamaTokenizer: a bos unless tokenizer_config.json says otherwise
    tok::SentencePieceModel sp = tok::read_sentencepiece(file.string(), impl->where);
    impl->normalizers.push_back(std::move(sp.normalize));
    impl->model = std::move(sp.model);
    if (sp.bos >= 0) impl->post.before.push_back(sp.bos);
  } else {
    const Json j = read_json(file, impl->where);
    if (!j.contains("model")) impl->where.bad("no 'model': not a tokenizers tokenizer.json");
    impl->model = tok::read_model(j["model"], impl->where);
    const Json none;
    tok::read_normalizer(j.contains("normalizer") ? j["normalizer"] : none, impl->where, impl->normalizers);
    tok::read_pre_tokenizer(j.contains("pre_tokenizer") ? j["pre_tokenizer"] : none, impl->where, impl->pre);
    const Json added = j.value("added_tokens", Json::array());
    if (!added.is_array()) impl->where.bad("added_tokens is not a list");
    for (const Json& t : added) {
      if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") ||
          !t["content"].is_string() || t["content"].get<std::string>().empty())
        impl->where.bad("an entry of added_tokens has no id or content");
      const std::string content = t["content"].get<std::string>();
      AddedToken a{content, t["id"].get<int32_t>(), t.value("lstrip", false), t.value("rstrip", false),
                   t.value("single_word", false), ""};
      (t.value("normalized", !t.value("special", false)) ? impl->normalized : impl->raw).add(std::move(a));
    }
    impl->read_post_processor(j.contains("post_processor") ? j["post_processor"] : none);
  }
  impl->raw.index(nullptr);
  impl->normalized.index([&](std::string& s) {
    for (const tok::Normalize& n : impl->normalizers) n(s);
  });
  if (directory) impl->read_config(path, sentencepiece);

  int32_t top = -1;
  for (const auto& [token, id] : impl->model->vocab) top = std::max(top, id);
  for (const AddedTokens* set : {&impl->raw, &impl->normalized})
    for (const AddedToken& t : set->all()) top = std::max(top, t.id);
  impl->tokens.resize(static_cast<size_t>(top + 1));
  for (const auto& [token, id] : impl->model->vocab) impl->tokens[static_cast<size_t>(id)] = token;
  for (const AddedTokens* set : {&impl->raw, &impl->normalized})
    for (const AddedToken& t : set->all()) impl->tokens[static_cast<size_t>(t.id)] = t.content;
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special) const {
  check_utf8(text, "the text to tokenize");  // the regexes assume it
  const Impl& m = *impl_;
  std::vector<int32_t> ids;
  if (add_special) ids = m.post.before;
  m.raw.split(
      text, [&](std::string_view gap, bool first) { m.encode_segment(gap, first, ids); },
      [&](int32_t id) { ids.push_back(id); });
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
