// bert: BERT encoders (BertModel: sentence-transformers' all-MiniLM-L6-v2 and the like),
// run in float32 as transformers' eager code runs them, on token ids with no padding
// (every position attended, token type 0). The output is the last hidden state, [batch,
// tokens, hidden]: the pooler and task heads are not run (sentence-transformers pools
// the hidden states itself), so their Linears see no input. Checkpoints of a task model
// (BertFor...) keep the encoder under "bert.".

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <map>
#include <set>

#include "mq/architecture.hpp"
#include "mq/error.hpp"

namespace {

using Json = nlohmann::json;

struct Config {
  int64_t hidden = 0, layers = 0, heads = 0, inner = 0, vocab = 0, positions = 0, types = 0;
  double eps = 1e-12;
  bool tanh_gelu = false;  // gelu_new / gelu_pytorch_tanh, else erf
};

int64_t positive(const Json& config, const char* field) {
  const auto it = config.find(field);
  if (it == config.end() || !it->is_number_integer() || it->get<int64_t>() <= 0)
    throw mq::InputError(std::string("config.json: '") + field + "' must be a positive integer");
  return it->get<int64_t>();
}

Config parse(const Json& config) {
  Config c;
  c.hidden = positive(config, "hidden_size");
  c.layers = positive(config, "num_hidden_layers");
  c.heads = positive(config, "num_attention_heads");
  c.inner = positive(config, "intermediate_size");
  c.vocab = positive(config, "vocab_size");
  c.positions = positive(config, "max_position_embeddings");
  c.types = config.contains("type_vocab_size") ? positive(config, "type_vocab_size") : 2;
  if (c.hidden % c.heads) throw mq::InputError("config.json: num_attention_heads does not divide hidden_size");
  if (const auto eps = config.find("layer_norm_eps"); eps != config.end()) {
    if (!eps->is_number()) throw mq::InputError("config.json: 'layer_norm_eps' must be a number");
    c.eps = eps->get<double>();
  }
  const std::string act = config.value("hidden_act", std::string("gelu"));
  if (act == "gelu_new" || act == "gelu_pytorch_tanh") c.tanh_gelu = true;
  else if (act != "gelu")
    throw mq::RecipeError("config.json: hidden_act '" + act + "' is not implemented (gelu, gelu_new, gelu_pytorch_tanh are)");
  const std::string position = config.value("position_embedding_type", std::string("absolute"));
  if (position != "absolute")
    throw mq::RecipeError("config.json: position_embedding_type '" + position + "' is not implemented (absolute is)");
  return c;
}

class BertModel final : public mq::TensorRunnable {
 public:
  BertModel(const mq::Model& model, Config config) : TensorRunnable(model), c_(std::move(config)) {
    if (has("bert.embeddings.word_embeddings.weight")) prefix_ = "bert.";
    // Every weight the forward reads, checked now: a missing or misshapen one is named.
    const int64_t H = c_.hidden;
    expect("embeddings.word_embeddings.weight", {c_.vocab, H});
    expect("embeddings.position_embeddings.weight", {c_.positions, H});
    expect("embeddings.token_type_embeddings.weight", {c_.types, H});
    norm_shapes("embeddings.LayerNorm");
    for (int64_t i = 0; i < c_.layers; ++i) {
      const std::string p = "encoder.layer." + std::to_string(i) + ".";
      for (const char* n : {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"})
        linear_shapes(p + n, H, H);
      norm_shapes(p + "attention.output.LayerNorm");
      linear_shapes(p + "intermediate.dense", c_.inner, H);
      linear_shapes(p + "output.dense", H, c_.inner);
      norm_shapes(p + "output.LayerNorm");
    }
  }

 private:
  // The encoder's tensors and Linears by their names under the prefix.
  at::Tensor f32(const std::string& name) const { return TensorRunnable::f32(prefix_ + name); }
  void expect(const std::string& name, const std::vector<int64_t>& shape) const {
    TensorRunnable::expect(prefix_ + name, shape);
  }
  at::Tensor linear(const std::string& name, const at::Tensor& x, Recording* r) const {
    return TensorRunnable::linear(prefix_ + name, x, r);
  }
  void linear_shapes(const std::string& name, int64_t out, int64_t in) const {
    expect(name + ".weight", {out, in});
    expect(name + ".bias", {out});
  }
  void norm_shapes(const std::string& name) const {
    expect(name + ".weight", {c_.hidden});
    expect(name + ".bias", {c_.hidden});
  }

  at::Tensor norm(const at::Tensor& x, const std::string& name) const {
    return at::layer_norm(x, {c_.hidden}, f32(name + ".weight"), f32(name + ".bias"), c_.eps);
  }
  at::Tensor gelu(const at::Tensor& x) const {
    if (!c_.tanh_gelu) return at::gelu(x);
    return 0.5 * x * (1.0 + at::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x.pow(3))));
  }

  at::Tensor embed(const at::Tensor& input) const override {
    if (at::isFloatingType(input.scalar_type()) || input.dim() < 1 || input.dim() > 2)
      throw mq::InputError("the bert architecture takes token ids, [batch, sequence] integers; got " +
                           std::string(c10::toString(input.scalar_type())) + " " + c10::str(input.sizes()));
    const at::Tensor ids = (input.dim() == 1 ? input.unsqueeze(0) : input).to(at::kLong);
    if (ids.numel() && (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= c_.vocab))
      throw mq::InputError("token ids must lie in [0, " + std::to_string(c_.vocab) + ")");
    const int64_t T = ids.size(1);
    if (T > c_.positions)
      throw mq::InputError("sequences of " + std::to_string(T) + " tokens exceed max_position_embeddings (" +
                           std::to_string(c_.positions) + ")");
    const at::Tensor h = at::embedding(f32("embeddings.word_embeddings.weight"), ids) +
                         f32("embeddings.position_embeddings.weight").narrow(0, 0, T) +
                         f32("embeddings.token_type_embeddings.weight")[0];
    return norm(h, "embeddings.LayerNorm");
  }

  int64_t blocks() const override { return c_.layers; }

  at::Tensor block(int64_t i, const at::Tensor& hidden, Recording* r) const override {
    const int64_t B = hidden.size(0), T = hidden.size(1), heads = c_.heads, D = c_.hidden / c_.heads;
    const std::string p = "encoder.layer." + std::to_string(i) + ".";
    const auto split = [&](const at::Tensor& t) { return t.view({B, T, heads, D}).transpose(1, 2); };
    const at::Tensor q = split(linear(p + "attention.self.query", hidden, r));
    const at::Tensor k = split(linear(p + "attention.self.key", hidden, r));
    const at::Tensor v = split(linear(p + "attention.self.value", hidden, r));
    const at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(D));
    const at::Tensor context = at::matmul(at::softmax(scores, -1), v).transpose(1, 2).reshape({B, T, c_.hidden});
    const at::Tensor h = norm(linear(p + "attention.output.dense", context, r) + hidden, p + "attention.output.LayerNorm");
    const at::Tensor inner = gelu(linear(p + "intermediate.dense", h, r));
    return norm(linear(p + "output.dense", inner, r) + h, p + "output.LayerNorm");
  }

  at::Tensor head(const at::Tensor& hidden, Recording*) const override { return hidden; }

  Config c_;
  std::string prefix_;  // "bert." in a task model's checkpoint
};

class BertArchitecture final : public mq::Architecture {
 public:
  explicit BertArchitecture(const mq::Options&) {}

  bool runs(const std::string& config_json) const override {
    const Json config = Json::parse(config_json, nullptr, false);
    if (!config.is_object()) throw mq::InputError("config.json: not a JSON object");
    if (const auto a = config.find("architectures"); a != config.end() && a->is_array())
      for (const Json& name : *a)
        if (name.is_string() && name.get<std::string>() == "BertModel") return true;
    return config.value("model_type", std::string()) == "bert";
  }

  std::shared_ptr<mq::Runnable> build(const mq::Model& model, const std::string& config_json) const override {
    return std::make_shared<BertModel>(model, parse(Json::parse(config_json)));
  }
};

}  // namespace

MQ_PLUGIN(BertArchitecture, mq::PluginKind::kArchitecture, "bert", "0.1.0",
          "BERT encoders (BertModel: all-MiniLM-L6-v2 and the like; float32, as transformers' eager code)")
