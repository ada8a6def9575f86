// tokenizer.json's normalizers and pre-tokenizers, as `tokenizers` 0.19 runs them.
// Unicode data is ICU's, with tokenizers' own tables kept where they differ (each checked
// against tokenizers on every code point): its control, punctuation and non-spacing mark
// classes (BertNormalizer, BertPreTokenizer, Punctuation) are Unicode 8.0's, the marks
// StripAccents removes every mark of Unicode 9.0, normalization forms Unicode 9.0's, and
// lowercasing is Rust's char::to_lowercase (ICU's simple mapping, plus U+0130's
// two-character one). Regexes are PCRE2's.
#include "tokenizer_parts.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <array>
#include <utility>

#include "mq/error.hpp"

namespace mq::tok {

void Where::bad(const std::string& what) const { throw InputError(file + ": " + what); }

std::string type_of(const Json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "";
}

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

size_t char_length(unsigned char lead) { return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4; }

uint32_t next_char(std::string_view s, size_t& at) {
  const auto lead = static_cast<unsigned char>(s[at]);
  const size_t n = std::min(char_length(lead), s.size() - at);
  uint32_t cp = n == 1 ? lead : lead & (0xFF >> (n + 1));
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[at + k]) & 0x3F);
  at += n;
  return cp;
}

bool is_word_char(uint32_t c) {
  const auto u = static_cast<UChar32>(c);
  return u_hasBinaryProperty(u, UCHAR_ALPHABETIC) || u_hasBinaryProperty(u, UCHAR_JOIN_CONTROL) ||
         (U_GET_GC_MASK(u) & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0;
}

namespace {

// Rust's char::is_whitespace: the White_Space property.
bool is_whitespace(uint32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }

// Assigned by Unicode `major`.0, so that tokenizers' tables of that version know it.
bool in_unicode(uint32_t c, int major) {
  UVersionInfo age;
  u_charAge(static_cast<UChar32>(c), age);
  return age[0] < major || (age[0] == major && age[1] == 0);
}

// BertPreTokenizer's and Punctuation's: ASCII punctuation or a Unicode 8.0 P* character
// (U+166D and U+111C9 were Po then).
bool is_punctuation(uint32_t c) {
  if (c < 0x80) return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
  if (c == 0x166D || c == 0x111C9) return true;
  const int8_t t = u_charType(static_cast<UChar32>(c));
  const bool p = t == U_CONNECTOR_PUNCTUATION || t == U_DASH_PUNCTUATION || t == U_START_PUNCTUATION ||
                 t == U_END_PUNCTUATION || t == U_INITIAL_PUNCTUATION || t == U_FINAL_PUNCTUATION ||
                 t == U_OTHER_PUNCTUATION;
  return p && in_unicode(c, 8);
}

// BertNormalizer's clean_text removes these: Cc but tab/newline/return, Cf (Unicode 8.0), Co.
bool is_control(uint32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  const int8_t t = u_charType(static_cast<UChar32>(c));
  return t == U_CONTROL_CHAR || t == U_PRIVATE_USE_CHAR || (t == U_FORMAT_CHAR && in_unicode(c, 8));
}

// BertNormalizer's accents: Mn of Unicode 8.0 (U+1734 was Mn then; U+1885, U+1886,
// U+A9BD and U+111C9 were not).
bool is_nonspacing_mark(uint32_t c) {
  if (c == 0x1734) return true;
  if (c == 0x1885 || c == 0x1886 || c == 0xA9BD || c == 0x111C9) return false;
  return u_charType(static_cast<UChar32>(c)) == U_NON_SPACING_MARK && in_unicode(c, 8);
}

// StripAccents': every mark (Mn, Mc, Me) of Unicode 9.0, with U+1CF2 and U+1CF3 (marks
// then) but not U+111C9 (Po then).
bool is_mark(uint32_t c) {
  if (c == 0x1CF2 || c == 0x1CF3) return true;
  const int8_t t = u_charType(static_cast<UChar32>(c));
  const bool mark = t == U_NON_SPACING_MARK || t == U_COMBINING_SPACING_MARK || t == U_ENCLOSING_MARK;
  return mark && c != 0x111C9 && in_unicode(c, 9);
}

bool is_chinese(uint32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// Each code point of `s` replaced by what `f` appends for it.
template <typename F>
void map_chars(std::string& s, F f) {
  std::string out;
  out.reserve(s.size());
  for (size_t at = 0; at < s.size();) f(next_char(s, at), out);
  s = std::move(out);
}

void lowercase(std::string& s) {
  map_chars(s, [](uint32_t c, std::string& out) {
    if (c < 0x80) {
      out += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    } else if (c == 0x130) {
      out += "i\xCC\x87";  // İ -> i + combining dot above
    } else {
      out += utf8(static_cast<uint32_t>(u_tolower(static_cast<UChar32>(c))));
    }
  });
}

// NFC, NFD, NFKC or NFKD of valid UTF-8 (ICU).
std::string icu_normalize(std::string_view s, const UNormalizer2* form) {
  UErrorCode e = U_ZERO_ERROR;
  int32_t n16 = 0;
  u_strFromUTF8(nullptr, 0, &n16, s.data(), static_cast<int32_t>(s.size()), &e);
  std::u16string in(static_cast<size_t>(n16), u'\0');
  e = U_ZERO_ERROR;
  u_strFromUTF8(in.data(), n16, nullptr, s.data(), static_cast<int32_t>(s.size()), &e);
  std::u16string out(in.size() * 4 + 16, u'\0');
  e = U_ZERO_ERROR;
  const int32_t n = unorm2_normalize(form, in.data(), n16, out.data(), static_cast<int32_t>(out.size()), &e);
  if (U_FAILURE(e)) throw InputError(std::string("Unicode normalization failed: ") + u_errorName(e));
  int32_t n8 = 0;
  e = U_ZERO_ERROR;
  u_strToUTF8(nullptr, 0, &n8, out.data(), n, &e);
  std::string r(static_cast<size_t>(n8), '\0');
  e = U_ZERO_ERROR;
  u_strToUTF8(r.data(), n8, nullptr, out.data(), n, &e);
  return r;
}

// `s` in normal form as tokenizers gives it: its tables are Unicode 9.0's, so a character
// assigned later is left as it is and nothing composes or reorders across it.
void unicode_normalize(std::string& s, const UNormalizer2* form) {
  bool ascii = true;
  for (char c : s) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
  if (ascii) return;
  std::string out;
  size_t run = 0;
  for (size_t at = 0; at < s.size();) {
    const size_t begin = at;
    if (in_unicode(next_char(s, at), 9)) continue;
    out += icu_normalize(std::string_view(s).substr(run, begin - run), form);
    out.append(s, begin, at - begin);
    run = at;
  }
  out += icu_normalize(std::string_view(s).substr(run), form);
  s = std::move(out);
}

const UNormalizer2* normal_form(const std::string& name) {
  UErrorCode e = U_ZERO_ERROR;
  const UNormalizer2* f = name == "NFC"    ? unorm2_getNFCInstance(&e)
                          : name == "NFD"  ? unorm2_getNFDInstance(&e)
                          : name == "NFKC" ? unorm2_getNFKCInstance(&e)
                                           : unorm2_getNFKDInstance(&e);
  if (U_FAILURE(e)) throw InputError("ICU has no " + name + " data: " + u_errorName(e));
  return f;
}

// Oniguruma's Unicode \w (Alphabetic, Mark, Nd, Pc, Join_Control) and \s (White_Space)
// in PCRE2's terms, whose own differ (\w: L, N and _; \s: also U+180E and other
// historical spaces).
constexpr const char* kWordChars = R"(\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D})";

std::string onig_to_pcre2(const std::string& pattern, const std::string& where) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 's') {
        out += R"(\p{White_Space})";
      } else if (e == 'S') {
        out += R"(\P{White_Space})";
      } else if (e == 'w') {
        out += in_class ? std::string(kWordChars) : "[" + std::string(kWordChars) + "]";
      } else if (e == 'W') {
        if (in_class) throw InputError(where + ": regex '" + pattern + "' has \\W inside a class, which is not supported yet");
        out += "[^" + std::string(kWordChars) + "]";
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];  // a literal ] first
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

class Regex {
 public:
  Regex(const std::string& onig_pattern, const std::string& where) {
    const std::string pattern = onig_to_pcre2(onig_pattern, where);
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                          &error, &offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      throw InputError(where + ": regex '" + onig_pattern + "' does not compile at " + std::to_string(offset) + " (" +
                       reinterpret_cast<const char*>(message) + ")");
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter where JIT is unavailable
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // The non-empty matches in `text`, in order, as [begin, end) byte ranges.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const {
    std::vector<std::pair<size_t, size_t>> hits;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    for (size_t at = 0; at <= text.size();) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), at,
                                 PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        pcre2_match_data_free(md);
        throw InputError("a tokenizer regex failed on the text (PCRE2 error " + std::to_string(rc) + ")");
      }
      const PCRE2_SIZE* v = pcre2_get_ovector_pointer(md);
      if (v[0] == v[1]) {  // an empty match: step over one character
        at = v[1] < text.size() ? v[1] + char_length(static_cast<unsigned char>(text[v[1]])) : text.size() + 1;
        continue;
      }
      hits.emplace_back(v[0], v[1]);
      at = v[1];
    }
    pcre2_match_data_free(md);
    return hits;
  }

 private:
  pcre2_code* code_ = nullptr;
};

// GPT-2's pre-tokenizer pattern, which ByteLevel uses when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// The Whitespace pre-tokenizer's.
constexpr const char* kWhitespacePattern = R"(\w+|[^\w\s]+)";

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

// tokenizers' SplitDelimiterBehavior.
enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior behavior_of(const Json& p, const Where& where, const std::string& what) {
  const std::string b = p.value("behavior", "Isolated");
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  where.bad(what + " behavior '" + b + "' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
}

// `text` cut at `hits` (sorted, disjoint, non-empty byte ranges) as tokenizers' split
// does with `behavior`; `invert` swaps what is a hit and what lies between.
void split_at(std::string_view text, const std::vector<std::pair<size_t, size_t>>& hits, Behavior behavior,
              bool invert, std::vector<std::string>& out) {
  struct Part {
    size_t begin, end;
    bool hit;
  };
  std::vector<Part> parts;
  size_t done = 0;
  for (const auto& [b, e] : hits) {
    if (b > done) parts.push_back({done, b, invert});
    parts.push_back({b, e, !invert});
    done = e;
  }
  if (done < text.size()) parts.push_back({done, text.size(), invert});

  std::vector<Part> merged;
  bool previous = false;
  if (behavior == Behavior::kMergedWithNext) std::reverse(parts.begin(), parts.end());
  for (const Part& p : parts) {
    switch (behavior) {
      case Behavior::kRemoved:
        if (!p.hit) merged.push_back(p);
        break;
      case Behavior::kIsolated:
        merged.push_back(p);
        break;
      case Behavior::kContiguous:
        if (p.hit == previous && !merged.empty())
          merged.back().end = p.end;
        else
          merged.push_back(p);
        break;
      case Behavior::kMergedWithPrevious:
        if (p.hit && !previous && !merged.empty())
          merged.back().end = p.end;
        else
          merged.push_back(p);
        break;
      case Behavior::kMergedWithNext:
        if (p.hit && !previous && !merged.empty())
          merged.back().begin = p.begin;
        else
          merged.push_back(p);
        break;
    }
    previous = p.hit;
  }
  if (behavior == Behavior::kMergedWithNext) std::reverse(merged.begin(), merged.end());
  for (const Part& p : merged)
    if (p.end > p.begin) out.emplace_back(text.substr(p.begin, p.end - p.begin));
}

// Each character for which `is` holds, as a one-character hit.
template <typename Is>
std::vector<std::pair<size_t, size_t>> char_hits(std::string_view text, Is is) {
  std::vector<std::pair<size_t, size_t>> hits;
  for (size_t at = 0; at < text.size();) {
    const size_t begin = at;
    if (is(next_char(text, at))) hits.emplace_back(begin, at);
  }
  return hits;
}

template <typename Is>
PreTokenize split_chars(Is is, Behavior behavior) {
  return [is, behavior](std::string& piece, bool, std::vector<std::string>& out) {
    split_at(piece, char_hits(piece, is), behavior, false, out);
  };
}

std::string regex_of(const Json& pattern, const Where& where, const std::string& what) {
  if (pattern.contains("Regex") && pattern["Regex"].is_string()) return pattern["Regex"].get<std::string>();
  if (!pattern.contains("String") || !pattern["String"].is_string()) where.bad(what + " has no pattern");
  std::string out;
  for (char c : pattern["String"].get<std::string>()) {  // a literal
    if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

std::string base64(const std::string& text, const Where& where) {
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  for (char c : text) {
    int v = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52
            : c == '+' ? 62 : c == '/' ? 63 : -1;
    if (c == '=') break;
    if (v < 0) where.bad("normalizer Precompiled: precompiled_charsmap is not base64");
    bits = (bits << 6) | static_cast<uint32_t>(v);
    if ((count += 6) >= 8) out += static_cast<char>((bits >> (count -= 8)) & 0xFF);
  }
  return out;
}

}  // namespace

void read_normalizer(const Json& n, const Where& where, std::vector<Normalize>& out) {
  if (n.is_null()) return;
  const std::string type = type_of(n);
  if (type == "Sequence") {
    for (const Json& step : n.value("normalizers", Json::array())) read_normalizer(step, where, out);
  } else if (type == "Prepend" && n.contains("prepend") && n["prepend"].is_string()) {
    out.push_back([prefix = n["prepend"].get<std::string>()](std::string& s) {
      if (!s.empty()) s.insert(0, prefix);
    });
  } else if (type == "Replace" && n.contains("pattern") && n.contains("content") && n["content"].is_string()) {
    const std::string pattern = regex_of(n["pattern"], where, "normalizer Replace");
    if (pattern.empty()) where.bad("normalizer Replace of an empty pattern");
    const auto regex = std::make_shared<Regex>(pattern, where.file + ": normalizer Replace");
    out.push_back([regex, content = n["content"].get<std::string>()](std::string& s) {
      const auto hits = regex->find_all(s);
      if (hits.empty()) return;
      std::string r;
      size_t done = 0;
      for (const auto& [b, e] : hits) {
        r.append(s, done, b - done);
        r += content;
        done = e;
      }
      r.append(s, done);
      s = std::move(r);
    });
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    out.push_back([form = normal_form(type)](std::string& s) { unicode_normalize(s, form); });
  } else if (type == "Precompiled") {
    const std::string blob = base64(n.value("precompiled_charsmap", ""), where);
    out.push_back(precompiled_normalizer(std::make_shared<const Charsmap>(blob, where)));
  } else if (type == "Lowercase") {
    out.push_back(lowercase);
  } else if (type == "StripAccents") {
    out.push_back([](std::string& s) {
      map_chars(s, [](uint32_t c, std::string& o) { if (!is_mark(c)) o += utf8(c); });
    });
  } else if (type == "Strip") {
    out.push_back([left = n.value("strip_left", true), right = n.value("strip_right", true)](std::string& s) {
      size_t begin = 0, end = s.size();
      for (size_t at = 0; left && at < s.size();) {
        if (!is_whitespace(next_char(s, at))) break;
        begin = at;
      }
      while (right && end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        size_t at = start;
        if (!is_whitespace(next_char(s, at))) break;
        end = start;
      }
      s = s.substr(begin, end - begin);
    });
  } else if (type == "BertNormalizer") {
    const bool clean = n.value("clean_text", true), chinese = n.value("handle_chinese_chars", true);
    const bool lower = n.value("lowercase", true);
    const bool strip = n.contains("strip_accents") && n["strip_accents"].is_boolean() ? n["strip_accents"].get<bool>() : lower;
    const UNormalizer2* nfd = strip ? normal_form("NFD") : nullptr;
    out.push_back([=](std::string& s) {
      map_chars(s, [&](uint32_t c, std::string& o) {
        if (clean && (c == 0 || c == 0xFFFD || is_control(c))) return;
        if (clean && is_whitespace(c)) c = ' ';
        if (chinese && is_chinese(c)) {
          o += ' ' + utf8(c) + ' ';
        } else {
          o += utf8(c);
        }
      });
      if (strip) {
        unicode_normalize(s, nfd);
        map_chars(s, [](uint32_t c, std::string& o) { if (!is_nonspacing_mark(c)) o += utf8(c); });
      }
      if (lower) lowercase(s);
    });
  } else {
    where.bad("normalizer '" + (type.empty() ? n.dump() : type) +
              "' is not supported yet (BertNormalizer, NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, Strip, "
              "Precompiled, Prepend, Replace, and Sequences of them are)");
  }
}

void read_pre_tokenizer(const Json& p, const Where& where, std::vector<PreTokenize>& out) {
  if (p.is_null()) return;
  const std::string type = type_of(p);
  if (type == "Sequence") {
    for (const Json& step : p.value("pretokenizers", Json::array())) read_pre_tokenizer(step, where, out);
  } else if (type == "ByteLevel") {
    std::shared_ptr<Regex> regex;
    if (p.value("use_regex", true)) regex = std::make_shared<Regex>(kGpt2Pattern, where.file + ": pre_tokenizer ByteLevel");
    out.push_back([regex, prefix = p.value("add_prefix_space", false)](std::string& piece, bool, std::vector<std::string>& o) {
      if (prefix && (piece.empty() || piece[0] != ' ')) piece.insert(0, " ");
      const size_t from = o.size();
      if (regex)
        split_at(piece, regex->find_all(piece), Behavior::kIsolated, false, o);
      else
        o.push_back(std::move(piece));
      for (size_t i = from; i < o.size(); ++i) {
        std::string mapped;
        for (unsigned char b : o[i]) mapped += byte_chars()[b];
        o[i] = std::move(mapped);
      }
    });
  } else if (type == "Split") {
    const Behavior behavior = behavior_of(p, where, "pre_tokenizer Split");
    const auto regex = std::make_shared<Regex>(regex_of(p.value("pattern", Json::object()), where, "pre_tokenizer Split"),
                                               where.file + ": pre_tokenizer Split");
    out.push_back([regex, behavior, invert = p.value("invert", false)](std::string& piece, bool, std::vector<std::string>& o) {
      split_at(piece, regex->find_all(piece), behavior, invert, o);
    });
  } else if (type == "Whitespace") {
    const auto regex = std::make_shared<Regex>(kWhitespacePattern, where.file + ": pre_tokenizer Whitespace");
    out.push_back([regex](std::string& piece, bool, std::vector<std::string>& o) {
      split_at(piece, regex->find_all(piece), Behavior::kRemoved, true, o);
    });
  } else if (type == "WhitespaceSplit") {
    out.push_back(split_chars(is_whitespace, Behavior::kRemoved));
  } else if (type == "BertPreTokenizer") {
    out.push_back([](std::string& piece, bool, std::vector<std::string>& o) {
      std::vector<std::string> words;
      split_at(piece, char_hits(piece, is_whitespace), Behavior::kRemoved, false, words);
      for (const std::string& w : words) split_at(w, char_hits(w, is_punctuation), Behavior::kIsolated, false, o);
    });
  } else if (type == "Punctuation") {
    out.push_back(split_chars(is_punctuation, behavior_of(p, where, "pre_tokenizer Punctuation")));
  } else if (type == "Digits") {
    out.push_back(split_chars([](uint32_t c) {  // Rust's char::is_numeric: Nd, Nl, No
                                const int8_t t = u_charType(static_cast<UChar32>(c));
                                return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
                              },
                              p.value("individual_digits", false) ? Behavior::kIsolated : Behavior::kContiguous));
  } else if (type == "Metaspace") {
    const std::string replacement = p.value("replacement", "\xE2\x96\x81");
    const std::string scheme = p.value("prepend_scheme", p.value("add_prefix_space", true) ? "always" : "never");
    if (scheme != "always" && scheme != "first" && scheme != "never")
      where.bad("pre_tokenizer Metaspace prepend_scheme '" + scheme + "' is not one of always, first, never");
    out.push_back([replacement, scheme, split = p.value("split", true)](std::string& piece, bool first,
                                                                         std::vector<std::string>& o) {
      std::string s;
      for (char c : piece) c == ' ' ? s += replacement : s += c;
      const bool prepend = scheme == "always" || (scheme == "first" && first);
      if (prepend && s.compare(0, replacement.size(), replacement) != 0) s.insert(0, replacement);
      if (!split) return o.push_back(std::move(s));
      size_t start = 0;  // each piece starts at a replacement (merged with the next)
      for (size_t at = s.find(replacement, 1); at != std::string::npos; at = s.find(replacement, at + 1)) {
        if (at > start) o.push_back(s.substr(start, at - start));
        start = at;
      }
      if (start < s.size()) o.push_back(s.substr(start));
    });
  } else {
    where.bad("pre_tokenizer '" + (type.empty() ? p.dump() : type) +
              "' is not supported yet (ByteLevel, Split, Metaspace, Whitespace, WhitespaceSplit, BertPreTokenizer, "
              "Punctuation, Digits, and Sequences of them are)");
  }
}

}  // namespace mq::tok
