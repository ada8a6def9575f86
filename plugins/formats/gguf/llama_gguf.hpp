#pragma once
// What llama.cpp needs of a Hugging Face Llama-family directory to run it from a GGUF
// file, as its convert_hf_to_gguf.py writes it: the architecture's keys from
// config.json, llama.cpp's tensor names, the Q/K row order of its "llama" rope, and the
// tokenizer (tokenizer.json) as tokenizer.ggml.* keys.

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "gguf_file.hpp"
#include "mq/model.hpp"

namespace mq::gguf {

struct LlamaConfig {
  std::string arch;          // llama.cpp's: "llama" (Llama, Mistral) or "qwen2"
  bool permuted_qk = false;  // "llama" rotates interleaved pairs: q/k rows permuted per head
  int64_t hidden = 0, layers = 0, heads = 0, kv_heads = 0, ffn = 0, context = 0, vocab = 0, head_dim = 0;
  double eps = 1e-6, theta = 10000.0;
  std::optional<double> linear_rope;  // rope_scaling type linear: its factor
  std::vector<float> rope_factors;     // rope_scaling type llama3: rope_freqs.weight, per frequency
  std::optional<int64_t> bos, eos;
};

// From `source`'s HF directory (Model metadata kHfDirectoryKey). RecipeError where it is
// not one, or not a family or setting this writer implements, naming the field.
LlamaConfig read_config(const Model& source);

// The tokenizer as llama.cpp's keys hold it: a byte-level BPE tokenizer.json (GPT-2,
// Llama 3, Qwen2 pre-tokenizers). RecipeError for others, naming what it is.
// The tokenizer as llama.cpp reads it: "gpt2" (byte-level BPE from tokenizer.json, with
// merges) or "llama" (SentencePiece BPE from tokenizer.model, with scores).
struct Vocab {
  std::string model = "gpt2";  // tokenizer.ggml.model
  std::string pre;             // tokenizer.ggml.pre
  std::vector<std::string> tokens, merges;
  std::vector<float> scores;
  std::vector<int32_t> types;
  bool add_bos = false, add_eos = false, add_space_prefix = true;
  std::optional<int64_t> unk, pad;
  std::optional<std::string> chat_template;
};
Vocab read_vocab(const std::filesystem::path& dir, int64_t vocab_size);

// The architecture's and the tokenizer's keys.
void write_keys(Writer& out, const LlamaConfig& config, const Vocab& vocab);

// The tensor llama.cpp reads llama3 rope scaling from (LlamaConfig::rope_factors).
inline constexpr const char* kRopeFactorsName = "rope_freqs.weight";

// llama.cpp's name for an HF tensor name, and back; none where it has none.
std::optional<std::string> gguf_name(const std::string& hf);
std::optional<std::string> hf_name(const std::string& gguf);

// How many heads' rows of GGUF tensor `gguf_name` llama.cpp's rope order permutes (0:
// none): q has `heads`, k `kv_heads`, under the "llama" architecture.
int64_t permuted_heads(const std::string& gguf_name, const std::string& arch, int64_t heads, int64_t kv_heads);

// `rows` (2-D: a row per output; a bias as [n, 1]) in llama.cpp's order for `heads`
// heads (convert_hf_to_gguf.py's LlamaModel.permute), or back from it (`inverse`).
at::Tensor permute_rows(const at::Tensor& rows, int64_t heads, bool inverse);

}  // namespace mq::gguf
