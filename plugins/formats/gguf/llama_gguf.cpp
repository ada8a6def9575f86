#include "llama_gguf.hpp"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "mq/error.hpp"
#include "mq/tokenizer.hpp"

namespace mq::gguf {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

Json read_json(const fs::path& path, bool required) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (required) throw RecipeError(path.string() + ": cannot open (the GGUF writer needs it)");
    return Json::object();
  }
  std::stringstream text;
  text << in.rdbuf();
  try {
    return Json::parse(text.str());
  } catch (const Json::exception& e) {
    throw InputError(path.string() + ": not valid JSON (" + e.what() + ")");
  }
}

int64_t positive(const Json& config, const char* field, int64_t fallback = 0) {
  const auto it = config.find(field);
  if ((it == config.end() || it->is_null()) && fallback) return fallback;
  if (it == config.end() || !it->is_number_integer() || it->get<int64_t>() <= 0)
    throw InputError(std::string("config.json: '") + field + "' must be a positive integer");
  return it->get<int64_t>();
}

double number(const Json& j, const char* field, double fallback) {
  const auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) throw InputError(std::string("config.json: '") + field + "' must be a number");
  return it->get<double>();
}

std::optional<int64_t> token_id(const Json& config, const char* field) {
  const auto it = config.find(field);
  if (it == config.end()) return std::nullopt;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_array() && !it->empty() && it->front().is_number_integer()) return it->front().get<int64_t>();
  return std::nullopt;
}

// HF suffixes of a block's tensors and llama.cpp's.
constexpr std::array<std::pair<const char*, const char*>, 18> kBlockNames{{
    {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.o_proj.bias", "attn_output.bias"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},  // Qwen3
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.gate_proj.bias", "ffn_gate.bias"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.up_proj.bias", "ffn_up.bias"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    {"mlp.down_proj.bias", "ffn_down.bias"},
}};
constexpr std::array<std::pair<const char*, const char*>, 3> kTopNames{{
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
}};

// "PREFIX<N>.REST" as (N, REST), where N is a decimal block number.
std::optional<std::pair<std::string, std::string>> split_block(const std::string& name, const std::string& prefix) {
  if (name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos || dot == prefix.size()) return std::nullopt;
  const std::string n = name.substr(prefix.size(), dot - prefix.size());
  if (n.find_first_not_of("0123456789") != std::string::npos || (n.size() > 1 && n[0] == '0')) return std::nullopt;
  return std::make_pair(n, name.substr(dot + 1));
}

// The Split regexes of the byte-level pre-tokenizers llama.cpp implements, by its name.
const std::map<std::string, std::string>& known_splits() {
  static const std::map<std::string, std::string> splits = {
      {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
       "llama-bpe"},
      {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
       "qwen2"},
  };
  return splits;
}

// llama.cpp's pre-tokenizer name for tokenizer.json's pre_tokenizer.
std::string pre_tokenizer(const Json& pre, const std::string& file) {
  const std::string type = pre.is_object() ? pre.value("type", std::string()) : std::string();
  if (type == "ByteLevel" && pre.value("use_regex", true)) return "gpt-2";
  if (type == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].size() == 2) {
    const Json& split = pre["pretokenizers"][0];
    const Json& bytes = pre["pretokenizers"][1];
    if (split.value("type", std::string()) == "Split" && bytes.value("type", std::string()) == "ByteLevel" &&
        !bytes.value("use_regex", true) && split.contains("pattern") && split["pattern"].contains("Regex")) {
      const auto known = known_splits().find(split["pattern"]["Regex"].get<std::string>());
      if (known != known_splits().end()) return known->second;
    }
  }
  throw RecipeError(file + ": its pre_tokenizer is none llama.cpp names (GPT-2's byte-level, Llama 3's or "
                           "Qwen2's split are): writing it to GGUF would tokenize text otherwise");
}

// Llama 3.1's rope scaling as llama.cpp reads it: a divisor per rotary frequency
// (convert_hf_to_gguf.py's rope_freqs: 1 for short wavelengths, `factor` for long ones,
// smoothed between), the frequencies in float32 as transformers computes them.
std::vector<float> llama3_rope_factors(const Json& scaling, int64_t dim, double theta) {
  const at::Tensor freqs =
      1.0 / at::pow(theta, at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<float>(dim));
  const double factor = number(scaling, "factor", 8.0), low = number(scaling, "low_freq_factor", 1.0),
               high = number(scaling, "high_freq_factor", 4.0),
               old_context = number(scaling, "original_max_position_embeddings", 8192.0);
  std::vector<float> factors;
  for (int64_t i = 0; i < freqs.numel(); ++i) {
    const double wavelen = 2 * M_PI / static_cast<double>(freqs[i].item<float>());
    if (wavelen < old_context / high) {
      factors.push_back(1.0f);
    } else if (wavelen > old_context / low) {
      factors.push_back(static_cast<float>(factor));
    } else {
      const double smooth = (old_context / wavelen - low) / (high - low);
      factors.push_back(static_cast<float>(1 / ((1 - smooth) / factor + smooth)));
    }
  }
  return factors;
}

}  // namespace

LlamaConfig read_config(const Model& source) {
  const auto dir = source.metadata.find(kHfDirectoryKey);
  if (dir == source.metadata.end())
    throw RecipeError("format 'gguf' writes Hugging Face model directories (config.json, tokenizer.json and "
                      "safetensors weights) of the llama family; this model is not one");
  const Json config = read_json(fs::path(dir->second) / "config.json", true);
  std::string type = config.value("model_type", std::string());
  if (type.empty() && config.contains("architectures") && config["architectures"].is_array() &&
      !config["architectures"].empty() && config["architectures"][0].is_string()) {
    const std::string a = config["architectures"][0].get<std::string>();
    type = a == "LlamaForCausalLM"     ? "llama"
           : a == "MistralForCausalLM" ? "mistral"
           : a == "Qwen2ForCausalLM"   ? "qwen2"
           : a == "Qwen3ForCausalLM"   ? "qwen3"
                                       : a;
  }
  LlamaConfig c;
  if (type == "llama" || type == "mistral") {
    c.arch = "llama";
    c.permuted_qk = true;
  } else if (type == "qwen2" || type == "qwen3") {
    c.arch = type;
  } else {
    throw RecipeError("config.json: model '" + type + "' is not one the GGUF writer implements (llama, mistral, "
                      "qwen2, qwen3 are)");
  }
  c.hidden = positive(config, "hidden_size");
  c.layers = positive(config, "num_hidden_layers");
  c.heads = positive(config, "num_attention_heads");
  c.kv_heads = positive(config, "num_key_value_heads", c.heads);
  c.ffn = positive(config, "intermediate_size");
  c.context = positive(config, "max_position_embeddings", 2048);
  c.vocab = positive(config, "vocab_size");
  c.head_dim = positive(config, "head_dim", c.hidden / c.heads);
  if (c.heads % c.kv_heads || c.head_dim % 2)
    throw InputError("config.json: num_key_value_heads must divide num_attention_heads, and heads be of even size");
  c.eps = number(config, "rms_norm_eps", 1e-6);
  c.theta = number(config, "rope_theta", 10000.0);
  if (const auto s = config.find("rope_scaling"); s != config.end() && !s->is_null()) {
    const std::string rope = s->is_object() ? s->value("rope_type", s->value("type", std::string("default"))) : "?";
    if (rope == "linear")
      c.linear_rope = number(*s, "factor", 1.0);
    else if (rope == "llama3")
      c.rope_factors = llama3_rope_factors(*s, c.head_dim, c.theta);
    else if (rope != "default")
      throw RecipeError("config.json: rope_scaling type '" + rope + "' is not written to GGUF yet (default, linear "
                        "and llama3 are)");
  }
  c.bos = token_id(config, "bos_token_id");
  c.eos = token_id(config, "eos_token_id");
  return c;
}

namespace {

// A tokenizer.model as convert_hf_to_gguf.py writes it (_create_vocab_sentencepiece):
// pieces, scores and types, rows past the tokenizer padded as unused, tokenizer_config's
// added_tokens_decoder as control (special) or user-defined tokens.
Vocab sentencepiece_vocab(const fs::path& dir, int64_t vocab_size) {
  const fs::path file = dir / "tokenizer.model";
  SentencePieceVocab sp;
  try {
    sp = read_sentencepiece_vocab(file);
  } catch (const InputError& e) {
    throw RecipeError(std::string(e.what()) + " (the GGUF writer embeds the tokenizer)");
  }
  if (!sp.bpe)
    throw RecipeError(file.string() + ": a unigram SentencePiece model is not written to GGUF yet (llama.cpp's "
                                      "'llama' vocabulary merges pieces as BPE does; Llama 2's and Mistral's are BPE)");
  if (sp.normalization_rules || sp.remove_extra_whitespaces)
    throw RecipeError(file.string() + ": its normalizer (" +
                      (sp.normalization_rules ? "precompiled rules" : "removing extra whitespace") +
                      ") is not one llama.cpp applies; only identity normalization is written to GGUF");
  Vocab v;
  v.model = "llama";
  v.pre = "default";
  const auto n = static_cast<size_t>(std::max<int64_t>(vocab_size, static_cast<int64_t>(sp.pieces.size())));
  v.tokens = sp.pieces;
  v.scores = sp.scores;
  v.types = sp.types;
  for (size_t id = v.tokens.size(); id < n; ++id) {
    v.tokens.push_back("[PAD" + std::to_string(id) + "]");
    v.scores.push_back(-10000.0f);
    v.types.push_back(5);  // UNUSED
  }
  const Json config = read_json(dir / "tokenizer_config.json", false);
  if (const auto added = config.find("added_tokens_decoder"); added != config.end() && added->is_object())
    for (auto it = added->begin(); it != added->end(); ++it) {
      const size_t id = std::strtoul(it.key().c_str(), nullptr, 10);
      std::string content = it.value().is_object() ? it.value().value("content", std::string()) : "";
      if (id >= n || content.empty()) continue;
      if (it.value().value("special", false)) {
        v.types[id] = 3;  // CONTROL
      } else {
        for (size_t at; (at = content.find("\xE2\x96\x81")) != std::string::npos;) content.replace(at, 3, " ");
        v.types[id] = 4;  // USER_DEFINED, its "▁" as spaces (llama.cpp matches it in the raw text)
      }
      v.scores[id] = -1000.0f;
      v.tokens[id] = content;
    }
  v.add_bos = config.value("add_bos_token", true);
  v.add_eos = config.value("add_eos_token", false);
  v.add_space_prefix = sp.add_dummy_prefix;
  if (sp.unk >= 0) v.unk = sp.unk;
  if (sp.pad >= 0) v.pad = sp.pad;
  if (const auto t = config.find("chat_template"); t != config.end() && t->is_string())
    v.chat_template = t->get<std::string>();
  return v;
}

}  // namespace

Vocab read_vocab(const fs::path& dir, int64_t vocab_size) {
  if (fs::exists(dir / "tokenizer.model")) return sentencepiece_vocab(dir, vocab_size);  // as convert_hf_to_gguf.py
  const fs::path file = dir / "tokenizer.json";
  if (!fs::exists(file))
    throw RecipeError(dir.string() + " has no tokenizer.json or tokenizer.model: llama.cpp needs the tokenizer inside "
                                     "the GGUF file");
  std::unique_ptr<Tokenizer> tokenizer;
  try {
    tokenizer = Tokenizer::load(file);
  } catch (const InputError& e) {
    throw RecipeError(std::string(e.what()) + " (the GGUF writer embeds the tokenizer)");
  }
  const Json json = read_json(file, true);
  const Json& model = json["model"];
  if (model.value("type", std::string()) != "BPE" || model.value("byte_fallback", false))
    throw RecipeError(file.string() + ": only byte-level BPE tokenizer.json files (GPT-2, Llama 3, Qwen2) are written "
                                      "to GGUF; SentencePiece-style ones are written from their tokenizer.model, "
                                      "which this directory lacks");
  Vocab v;
  v.pre = pre_tokenizer(json.value("pre_tokenizer", Json()), file.string());
  const int64_t n = std::max(vocab_size, tokenizer->vocab_size());
  std::map<int64_t, bool> added;  // id: special
  for (const Json& t : json.value("added_tokens", Json::array()))
    if (t.contains("id") && t["id"].is_number_integer()) added[t["id"].get<int64_t>()] = t.value("special", false);
  for (int64_t id = 0; id < n; ++id) {
    std::string token = tokenizer->token(static_cast<int32_t>(id));
    const auto a = added.find(id);
    if (token.empty()) {  // a row of the embedding no token names (convert_hf_to_gguf.py's padding)
      v.tokens.push_back("[PAD" + std::to_string(id) + "]");
      v.types.push_back(5);  // UNUSED
    } else {
      v.tokens.push_back(std::move(token));
      v.types.push_back(a == added.end() ? 1 : a->second ? 3 : 4);  // NORMAL, CONTROL, USER_DEFINED
    }
  }
  for (const Json& m : model.value("merges", Json::array()))
    v.merges.push_back(m.is_string() ? m.get<std::string>() : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
  const std::vector<int32_t> bare = tokenizer->encode("a", false), special = tokenizer->encode("a", true);
  v.add_bos = special.size() > bare.size() && special.front() != bare.front();
  const Json tokenizer_config = read_json(dir / "tokenizer_config.json", false);
  if (const auto t = tokenizer_config.find("chat_template"); t != tokenizer_config.end() && t->is_string())
    v.chat_template = t->get<std::string>();
  return v;
}

void write_keys(Writer& out, const LlamaConfig& c, const Vocab& v) {
  const std::string a = c.arch + ".";
  out.add_u32(a + "context_length", static_cast<uint32_t>(c.context));
  out.add_u32(a + "embedding_length", static_cast<uint32_t>(c.hidden));
  out.add_u32(a + "block_count", static_cast<uint32_t>(c.layers));
  out.add_u32(a + "feed_forward_length", static_cast<uint32_t>(c.ffn));
  out.add_u32(a + "attention.head_count", static_cast<uint32_t>(c.heads));
  out.add_u32(a + "attention.head_count_kv", static_cast<uint32_t>(c.kv_heads));
  out.add_f32(a + "attention.layer_norm_rms_epsilon", static_cast<float>(c.eps));
  out.add_f32(a + "rope.freq_base", static_cast<float>(c.theta));
  out.add_u32(a + "rope.dimension_count", static_cast<uint32_t>(c.head_dim));
  out.add_u32(a + "attention.key_length", static_cast<uint32_t>(c.head_dim));
  out.add_u32(a + "attention.value_length", static_cast<uint32_t>(c.head_dim));
  out.add_u32(a + "vocab_size", static_cast<uint32_t>(v.tokens.size()));
  if (c.linear_rope) {
    out.add_string(a + "rope.scaling.type", "linear");
    out.add_f32(a + "rope.scaling.factor", static_cast<float>(*c.linear_rope));
  }
  out.add_string("tokenizer.ggml.model", v.model);
  out.add_string("tokenizer.ggml.pre", v.pre);
  out.add_strings("tokenizer.ggml.tokens", v.tokens);
  if (!v.scores.empty()) out.add_f32s("tokenizer.ggml.scores", v.scores);
  out.add_i32s("tokenizer.ggml.token_type", v.types);
  if (!v.merges.empty()) out.add_strings("tokenizer.ggml.merges", v.merges);
  if (c.bos) out.add_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(*c.bos));
  if (c.eos) out.add_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(*c.eos));
  if (v.unk) out.add_u32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(*v.unk));
  if (v.pad) out.add_u32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(*v.pad));
  out.add_bool("tokenizer.ggml.add_bos_token", v.add_bos);
  if (v.model == "llama") {
    out.add_bool("tokenizer.ggml.add_eos_token", v.add_eos);
    out.add_bool("tokenizer.ggml.add_space_prefix", v.add_space_prefix);
  }
  if (v.chat_template) out.add_string("tokenizer.chat_template", *v.chat_template);
}

std::optional<std::string> gguf_name(const std::string& hf) {
  for (const auto& [from, to] : kTopNames)
    if (hf == from) return std::string(to);
  if (const auto block = split_block(hf, "model.layers."))
    for (const auto& [from, to] : kBlockNames)
      if (block->second == from) return "blk." + block->first + "." + to;
  return std::nullopt;
}

std::optional<std::string> hf_name(const std::string& gguf) {
  for (const auto& [to, from] : kTopNames)
    if (gguf == from) return std::string(to);
  if (const auto block = split_block(gguf, "blk."))
    for (const auto& [to, from] : kBlockNames)
      if (block->second == from) return "model.layers." + block->first + "." + to;
  return std::nullopt;
}

int64_t permuted_heads(const std::string& name, const std::string& arch, int64_t heads, int64_t kv_heads) {
  if (arch != "llama") return 0;
  const auto block = split_block(name, "blk.");
  if (!block) return 0;
  if (block->second == "attn_q.weight" || block->second == "attn_q.bias") return heads;
  if (block->second == "attn_k.weight" || block->second == "attn_k.bias") return kv_heads;
  return 0;
}

at::Tensor permute_rows(const at::Tensor& rows, int64_t heads, bool inverse) {
  const int64_t n = rows.size(0), half = n / heads / 2;
  if (half * 2 * heads != n) throw InputError("cannot split " + std::to_string(n) + " rows into " + std::to_string(heads) + " rotary heads");
  const at::Tensor split = inverse ? rows.reshape({heads, half, 2, -1}) : rows.reshape({heads, 2, half, -1});
  return split.transpose(1, 2).reshape(rows.sizes()).contiguous();
}

}  // namespace mq::gguf
