// llama: decoder-only transformers of the Llama family, run in float32 as transformers'
// eager code runs them: LlamaForCausalLM (Llama 2 and 3.x: GQA, tied embeddings, rope
// scaling "llama3", "linear" and "yarn", attention_bias, mlp_bias), MistralForCausalLM (within
// its sliding window), Qwen2ForCausalLM (q/k/v biases), Qwen3ForCausalLM (an RMSNorm
// over each head of q and k before rope) and MixtralForCausalLM (a sparse mixture of
// experts in place of the MLP). Weights are read from the model's tensors
// where the format left them (mapped), converted per use.
//
// Calibration reaches every expert: while a batch is recorded, each expert of a layer
// whose Linears are asked for runs on every token of the batch (its inputs recorded as if
// the router had sent it everything), and the layer's output is still the routed mixture.
// Experts a router rarely picks would otherwise get scales from a handful of tokens, or
// none.

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "mq/architecture.hpp"
#include "mq/error.hpp"

namespace {

using Json = nlohmann::json;

const std::set<std::string> kArchitectures = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                                              "Qwen3ForCausalLM", "MixtralForCausalLM"};
const std::set<std::string> kModelTypes = {"llama", "mistral", "qwen2", "qwen3", "mixtral"};

struct Config {
  int64_t hidden = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0;
  double eps = 1e-6, theta = 10000.0;
  int64_t sliding_window = 0;  // 0: none
  int64_t experts = 0, experts_per_token = 0;  // Mixtral; 0: a dense MLP
  bool tied = false;
  bool qk_norm = false;  // Qwen3: self_attn.q_norm / k_norm over each head
  at::Tensor inv_freq;  // rotary frequencies, float32, after scaling
  double attention_factor = 1.0;  // cos and sin scaled by it (yarn)
};

int64_t positive(const Json& config, const char* field) {
  const auto it = config.find(field);
  if (it == config.end() || !it->is_number_integer() || it->get<int64_t>() <= 0)
    throw mq::InputError(std::string("config.json: '") + field + "' must be a positive integer");
  return it->get<int64_t>();
}

double number(const Json& j, const char* field, double fallback) {
  const auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) throw mq::InputError(std::string("config.json: '") + field + "' must be a number");
  return it->get<double>();
}

// YaRN (transformers' _compute_yarn_parameters): each frequency between its
// extrapolated (as trained) and interpolated (divided by factor) values, by a linear ramp
// over the dimensions whose wavelengths fall between beta_fast and beta_slow rotations of
// the context; cos and sin then scaled by attention_factor (0.1 ln factor + 1 unless
// given). transformers versions differ where original_max_position_embeddings is not
// max_position_embeddings (which one sets the ramp, and whether factor is recomputed),
// and later ones added keys (mscale, truncate): those are refused, not guessed.
at::Tensor yarn_frequencies(const Json& config, const Json& scaling, const at::Tensor& pos_freqs, double theta,
                            double* attention_factor) {
  for (auto it = scaling.begin(); it != scaling.end(); ++it)
    if (it.key() != "rope_type" && it.key() != "type" && it.key() != "factor" && it.key() != "attention_factor" &&
        it.key() != "beta_fast" && it.key() != "beta_slow" && it.key() != "original_max_position_embeddings")
      throw mq::RecipeError("config.json: rope_scaling yarn with '" + it.key() + "' is not implemented");
  const double context = number(config, "max_position_embeddings", 0.0);
  if (context <= 0) throw mq::InputError("config.json: yarn rope scaling needs max_position_embeddings");
  if (number(scaling, "original_max_position_embeddings", context) != context)
    throw mq::RecipeError("config.json: rope_scaling yarn with original_max_position_embeddings other than "
                          "max_position_embeddings is not implemented (transformers versions disagree on it)");
  const double factor = number(scaling, "factor", 1.0);
  if (factor <= 0) throw mq::InputError("config.json: rope_scaling factor must be positive");
  *attention_factor = number(scaling, "attention_factor", 0.1 * std::log(factor) + 1.0);
  const double fast = number(scaling, "beta_fast", 32.0), slow = number(scaling, "beta_slow", 1.0);
  const int64_t dim = pos_freqs.numel() * 2;
  const auto correction_dim = [&](double rotations) {
    return dim * std::log(context / (rotations * 2 * M_PI)) / (2 * std::log(theta));
  };
  const double low = std::max(std::floor(correction_dim(fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(slow)), static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  const at::Tensor ramp = ((at::arange(dim / 2, at::kFloat) - low) / (high - low)).clamp(0, 1);
  const at::Tensor extrapolated = 1 - ramp;
  return 1.0 / (factor * pos_freqs) * (1 - extrapolated) + 1.0 / pos_freqs * extrapolated;
}

// transformers' rotary inverse frequencies (float32, as it computes them), with the
// config's rope_scaling applied; `attention_factor` gets what cos and sin are scaled by.
at::Tensor rotary_frequencies(const Json& config, int64_t dim, double theta, double* attention_factor) {
  *attention_factor = 1.0;
  const at::Tensor pos_freqs = at::pow(theta, at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<float>(dim));
  at::Tensor inv = 1.0 / pos_freqs;
  const auto scaling = config.find("rope_scaling");
  if (scaling == config.end() || scaling->is_null()) return inv;
  if (!scaling->is_object()) throw mq::InputError("config.json: 'rope_scaling' must be an object");
  const std::string type = scaling->value("rope_type", scaling->value("type", std::string("default")));
  const double factor = number(*scaling, "factor", 1.0);
  if (type == "default") return inv;
  if (type == "linear") return inv / factor;
  if (type == "yarn") return yarn_frequencies(config, *scaling, pos_freqs, theta, attention_factor);
  if (type != "llama3")
    throw mq::RecipeError("config.json: rope_scaling type '" + type +
                          "' is not implemented (default, linear, llama3, yarn are)");
  const double low = number(*scaling, "low_freq_factor", 1.0), high = number(*scaling, "high_freq_factor", 4.0);
  const double old_context = number(*scaling, "original_max_position_embeddings", 8192.0);
  const double low_wavelen = old_context / low, high_wavelen = old_context / high;
  const at::Tensor wavelen = 2 * M_PI / inv;
  at::Tensor scaled = at::where(wavelen > low_wavelen, inv / factor, inv);
  const at::Tensor smooth = (old_context / wavelen - low) / (high - low);
  const at::Tensor smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
  const at::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
  return at::where(medium, smoothed, scaled);
}

Config parse(const Json& config) {
  Config c;
  c.hidden = positive(config, "hidden_size");
  c.layers = positive(config, "num_hidden_layers");
  c.heads = positive(config, "num_attention_heads");
  c.kv_heads = config.contains("num_key_value_heads") && !config["num_key_value_heads"].is_null()
                   ? positive(config, "num_key_value_heads") : c.heads;
  c.vocab = positive(config, "vocab_size");
  c.head_dim = config.contains("head_dim") && !config["head_dim"].is_null() ? positive(config, "head_dim") : 0;
  if (!c.head_dim) {
    if (c.hidden % c.heads) throw mq::InputError("config.json: num_attention_heads does not divide hidden_size");
    c.head_dim = c.hidden / c.heads;
  }
  if (c.heads % c.kv_heads) throw mq::InputError("config.json: num_key_value_heads does not divide num_attention_heads");
  if (c.head_dim % 2) throw mq::InputError("config.json: the head dimension must be even for rotary embeddings");
  c.eps = number(config, "rms_norm_eps", 1e-6);
  c.theta = number(config, "rope_theta", 10000.0);
  c.tied = config.value("tie_word_embeddings", false);
  const auto& names = config.value("architectures", Json::array());
  c.qk_norm = config.value("model_type", std::string()) == "qwen3" ||
              (names.is_array() && std::find(names.begin(), names.end(), Json("Qwen3ForCausalLM")) != names.end());
  const std::string act = config.value("hidden_act", std::string("silu"));
  if (act != "silu") throw mq::RecipeError("config.json: hidden_act '" + act + "' is not implemented (silu is)");
  if (config.value("use_sliding_window", true) && config.contains("sliding_window") && config["sliding_window"].is_number_integer())
    c.sliding_window = config["sliding_window"].get<int64_t>();
  c.inv_freq = rotary_frequencies(config, c.head_dim, c.theta, &c.attention_factor);
  if (config.contains("num_local_experts")) {
    c.experts = positive(config, "num_local_experts");
    c.experts_per_token = positive(config, "num_experts_per_tok");
    if (c.experts_per_token > c.experts)
      throw mq::InputError("config.json: num_experts_per_tok exceeds num_local_experts");
  }
  return c;
}

class LlamaModel final : public mq::TensorRunnable {
 public:
  LlamaModel(const mq::Model& model, Config config) : TensorRunnable(model), c_(std::move(config)) {
    // Every weight the forward reads, checked now: a missing or misshapen one is named.
    expect("model.embed_tokens.weight", {c_.vocab, c_.hidden});
    for (int64_t i = 0; i < c_.layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      expect(p + "input_layernorm.weight", {c_.hidden});
      expect(p + "post_attention_layernorm.weight", {c_.hidden});
      expect(p + "self_attn.q_proj.weight", {c_.heads * c_.head_dim, c_.hidden});
      expect(p + "self_attn.k_proj.weight", {c_.kv_heads * c_.head_dim, c_.hidden});
      expect(p + "self_attn.v_proj.weight", {c_.kv_heads * c_.head_dim, c_.hidden});
      expect(p + "self_attn.o_proj.weight", {c_.hidden, c_.heads * c_.head_dim});
      if (c_.qk_norm) {
        expect(p + "self_attn.q_norm.weight", {c_.head_dim});
        expect(p + "self_attn.k_norm.weight", {c_.head_dim});
      }
      if (c_.experts) {
        expect(p + "block_sparse_moe.gate.weight", {c_.experts, c_.hidden});
        for (int64_t e = 0; e < c_.experts; ++e) {
          const std::string x = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
          const int64_t inner = tensor(x + "w1.weight").size(0);
          expect(x + "w1.weight", {inner, c_.hidden});
          expect(x + "w3.weight", {inner, c_.hidden});
          expect(x + "w2.weight", {c_.hidden, inner});
        }
        continue;
      }
      const int64_t inner = tensor(p + "mlp.gate_proj.weight").size(0);
      expect(p + "mlp.up_proj.weight", {inner, c_.hidden});
      expect(p + "mlp.down_proj.weight", {c_.hidden, inner});
    }
    expect("model.norm.weight", {c_.hidden});
    head_ = has("lm_head.weight") ? "lm_head" : "";
    if (head_.empty() && !c_.tied) throw mq::InputError("the model has no 'lm_head.weight' and does not tie its embeddings");
    if (!head_.empty()) expect("lm_head.weight", {c_.vocab, c_.hidden});
  }

 private:
  // Mixtral's sparse MoE block, as transformers computes it: the router's softmax (float32)
  // over experts, the top num_experts_per_tok renormalized to sum to one, each expert's
  // SwiGLU (w2(silu(w1 x) * w3 x)) on the tokens routed to it, weighted and summed.
  at::Tensor experts(const std::string& p, const at::Tensor& y, Recording* r) const {
    const at::Tensor x = y.reshape({-1, c_.hidden});
    const at::Tensor probs = at::softmax(linear(p + "gate", x, r), -1, at::kFloat);
    auto [top, chosen] = probs.topk(c_.experts_per_token, -1);
    top = top / top.sum(-1, true);
    at::Tensor out = at::zeros_like(x);
    for (int64_t e = 0; e < c_.experts; ++e) {
      const std::string n = p + "experts." + std::to_string(e) + ".";
      const at::Tensor hit = chosen.eq(e);
      const at::Tensor rows = hit.any(-1).nonzero().squeeze(-1);
      const bool record = r && (r->wanted.count(n + "w1") || r->wanted.count(n + "w2") || r->wanted.count(n + "w3"));
      if (rows.numel() == 0 && !record) continue;
      // Recording: every token (the result is the same on the routed rows).
      const at::Tensor in = record ? x : x.index_select(0, rows);
      at::Tensor expert = linear(n + "w2", at::silu(linear(n + "w1", in, r)) * linear(n + "w3", in, r), r);
      if (record) expert = expert.index_select(0, rows);
      const at::Tensor weight = (top * hit.to(top.scalar_type())).sum(-1).index_select(0, rows).unsqueeze(-1);
      out.index_add_(0, rows, expert * weight);
    }
    return out.view(y.sizes());
  }

  at::Tensor rms_norm(const at::Tensor& x, const std::string& name) const {
    const at::Tensor variance = x.pow(2).mean(-1, true);
    return f32(name) * (x * at::rsqrt(variance + c_.eps));
  }

  static at::Tensor rotate_half(const at::Tensor& x) {
    const int64_t half = x.size(-1) / 2;
    return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  }

  at::Tensor embed(const at::Tensor& input) const override {
    if (at::isFloatingType(input.scalar_type()) || input.dim() < 1 || input.dim() > 2)
      throw mq::InputError("the llama architecture takes token ids, [batch, sequence] integers; got " +
                           std::string(c10::toString(input.scalar_type())) + " " + c10::str(input.sizes()));
    const at::Tensor ids = (input.dim() == 1 ? input.unsqueeze(0) : input).to(at::kLong);
    if (ids.numel() && (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= c_.vocab))
      throw mq::InputError("token ids must lie in [0, " + std::to_string(c_.vocab) + ")");
    if (c_.sliding_window && ids.size(1) > c_.sliding_window)
      throw mq::InputError("sequences longer than the sliding window (" + std::to_string(c_.sliding_window) +
                           " tokens) are not implemented");
    at::Tensor h = at::embedding(tensor("model.embed_tokens.weight"), ids).to(at::kFloat);  // the rows used only
    release("model.embed_tokens.weight");
    return h;
  }

  int64_t blocks() const override { return c_.layers; }

  at::Tensor block(int64_t i, const at::Tensor& hidden, Recording* r) const override {
    const int64_t B = hidden.size(0), T = hidden.size(1), D = c_.head_dim;
    const at::Tensor positions = at::arange(T, at::kLong).to(at::kFloat);
    const at::Tensor freqs = at::outer(positions, c_.inv_freq);
    const at::Tensor emb = at::cat({freqs, freqs}, -1);
    const at::Tensor cos = emb.cos() * c_.attention_factor, sin = emb.sin() * c_.attention_factor;
    const at::Tensor mask = at::full({T, T}, -std::numeric_limits<float>::infinity()).triu(1);
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const at::Tensor x = rms_norm(hidden, p + "input_layernorm.weight");
    const auto heads = [&](const at::Tensor& t, int64_t n) { return t.view({B, T, n, D}).transpose(1, 2); };
    at::Tensor q = heads(linear(p + "self_attn.q_proj", x, r), c_.heads);
    at::Tensor k = heads(linear(p + "self_attn.k_proj", x, r), c_.kv_heads);
    at::Tensor v = heads(linear(p + "self_attn.v_proj", x, r), c_.kv_heads);
    if (c_.qk_norm) {
      q = rms_norm(q, p + "self_attn.q_norm.weight");
      k = rms_norm(k, p + "self_attn.k_norm.weight");
    }
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
    const int64_t rep = c_.heads / c_.kv_heads;
    if (rep > 1) {
      k = k.repeat_interleave(rep, 1);
      v = v.repeat_interleave(rep, 1);
    }
    // A sequence at a time: a batch's [B, heads, T, T] scores at once pass glibc's 32 MiB
    // mmap ceiling (4 x 12 heads x 512²), and each block then faulted in fresh zeroed pages
    // for them. Each sequence's products are the same either way.
    std::vector<at::Tensor> sequences;
    for (int64_t b = 0; b < B; ++b) {
      const at::Tensor scores = at::matmul(q[b], k[b].transpose(1, 2)) / std::sqrt(static_cast<double>(D)) + mask;
      sequences.push_back(at::matmul(at::softmax(scores, -1), v[b]));
    }
    const at::Tensor attention = at::stack(sequences).transpose(1, 2).reshape({B, T, c_.heads * D});
    const at::Tensor h = hidden + linear(p + "self_attn.o_proj", attention, r);
    const at::Tensor y = rms_norm(h, p + "post_attention_layernorm.weight");
    if (c_.experts) return h + experts(p + "block_sparse_moe.", y, r);
    const at::Tensor gated = at::silu(linear(p + "mlp.gate_proj", y, r)) * linear(p + "mlp.up_proj", y, r);
    return h + linear(p + "mlp.down_proj", gated, r);
  }

  at::Tensor head(const at::Tensor& hidden, Recording* r) const override {
    const at::Tensor h = rms_norm(hidden, "model.norm.weight");
    if (head_.empty()) return linear("model.embed_tokens", h, nullptr);  // tied: the embedding as the head
    return linear("lm_head", h, r);
  }

  Config c_;
  std::string head_;
};

class LlamaArchitecture final : public mq::Architecture {
 public:
  explicit LlamaArchitecture(const mq::Options&) {}

  bool runs(const std::string& config_json) const override {
    const Json config = Json::parse(config_json, nullptr, false);
    if (!config.is_object()) throw mq::InputError("config.json: not a JSON object");
    if (const auto a = config.find("architectures"); a != config.end() && a->is_array())
      for (const Json& name : *a)
        if (name.is_string() && kArchitectures.count(name.get<std::string>())) return true;
    return config.contains("model_type") && config["model_type"].is_string() &&
           kModelTypes.count(config["model_type"].get<std::string>());
  }

  std::shared_ptr<mq::Runnable> build(const mq::Model& model, const std::string& config_json) const override {
    return std::make_shared<LlamaModel>(model, parse(Json::parse(config_json)));
  }
};

}  // namespace

MQ_PLUGIN(LlamaArchitecture, mq::PluginKind::kArchitecture, "llama", "0.1.0",
          "Llama 2/3.x, Mistral, Qwen2, Qwen3 and Mixtral (MoE) decoders (float32, as transformers' eager code)")
