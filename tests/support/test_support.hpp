#pragma once
// Helpers shared by the tests: scratch directories, files, and running mq-pipeline
// as a user would.

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

namespace mq::test {

namespace fs = std::filesystem;

// A fresh directory under the build tree, removed when the test passes.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : path_(fs::path(MQ_BINARY_DIR) / "scratch" / (name + "-" + std::to_string(getpid()))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

inline void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

inline std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs mq-pipeline with `args` (already shell-quoted where needed) and `env`
// (NAME=value words, quoted likewise) in its environment.
inline CommandResult run_pipeline(const std::string& args, const fs::path& workdir = fs::path(),
                                  const std::string& env = "") {
  static int counter = 0;
  const fs::path base = fs::path(MQ_BINARY_DIR) / "scratch" /
                        ("cmd-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  fs::create_directories(base.parent_path());
  const std::string command = (workdir.empty() ? "" : "cd '" + workdir.string() + "' && ") +
                              "MQ_PLUGIN_PATH= " + env + " '" MQ_PIPELINE_EXE "' " + args + " >'" +
                              base.string() + ".out' 2>'" + base.string() + ".err' </dev/null";
  const int status = std::system(command.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(base.string() + ".out");
  r.err = read_file(base.string() + ".err");
  fs::remove(base.string() + ".out");
  fs::remove(base.string() + ".err");
  return r;
}

inline int count_lines(const std::string& text) {
  int n = 0;
  for (char c : text) n += c == '\n';
  return n;
}

}  // namespace mq::test

#include <memory>

#include "mq/plugin.hpp"

extern "C" const mq::PluginDescriptor* mq_plugin_descriptor() noexcept;

namespace mq::test {

// An instance of the plugin linked into this test, from options checked and completed
// with defaults as the runner does.
template <class T>
std::unique_ptr<T> make_plugin(std::vector<MapEntry> options = {}) {
  const PluginDescriptor* d = mq_plugin_descriptor();
  std::unique_ptr<Plugin> p = d->factory->create(resolve_options(*d, Value::map(std::move(options))));
  return std::unique_ptr<T>(dynamic_cast<T*>(p.release()));
}

inline MapEntry opt(std::string key, Value value) { return {std::move(key), std::move(value), {}}; }

}  // namespace mq::test

#include <ATen/ATen.h>

#include <functional>

#include "mq/model.hpp"

namespace mq::test {

// Makes `model` read its tensors through `read` (Model::read_into; false: not one it
// holds), as a format that maps its files does; it releases nothing.
inline void read_through(Model& model, std::function<bool(const at::Tensor&, const at::Tensor&)> read) {
  struct Source final : TensorSource {
    std::function<bool(const at::Tensor&, const at::Tensor&)> read;
    bool release(const at::Tensor&) const override { return false; }
    bool read_into(const at::Tensor& t, const at::Tensor& into) const override { return read(t, into); }
  };
  auto source = std::make_shared<Source>();
  source->read = std::move(read);
  model.files = {std::move(source)};
}

// A safetensors file's tensor as it lies there: for dtypes LibTorch lacks.
struct RawTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Writes a safetensors file by hand (for tests that do not link the safetensors plugin).
inline void write_safetensors(const fs::path& path, const std::vector<RawTensor>& tensors) {
  std::string header = "{", data;
  for (const RawTensor& t : tensors) {
    std::string shape;
    for (int64_t d : t.shape) shape += (shape.empty() ? "" : ",") + std::to_string(d);
    header += (header.size() > 1 ? "," : "") + std::string("\"") + t.name + "\":{\"dtype\":\"" +
              t.dtype + "\",\"shape\":[" + shape + "],\"data_offsets\":[" +
              std::to_string(data.size()) + "," + std::to_string(data.size() + t.bytes.size()) +
              "]}";
    data += t.bytes;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(static_cast<uint64_t>(header.size()) >> (8 * i));
  write_file(path, bytes + header + data);
}

// Writes tensors as float32.
inline void write_safetensors(const fs::path& path,
                              const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  std::vector<RawTensor> raw;
  for (const auto& [name, t] : tensors) {
    const at::Tensor c = t.to(at::kFloat).contiguous();
    raw.push_back({name, "F32", c.sizes().vec(),
                   std::string(static_cast<const char*>(c.data_ptr()), c.nbytes())});
  }
  write_safetensors(path, raw);
}

// A small Hugging Face model directory: two shards, an index, config.json, a tokenizer file.
inline void write_hf_directory(const fs::path& dir) {
  at::manual_seed(3);
  write_safetensors(dir / "model-00001-of-00002.safetensors",
                    {{"model.embed_tokens.weight", at::randn({100, 32})},
                     {"model.layers.0.mlp.up_proj.weight", at::randn({64, 32})}});
  write_safetensors(dir / "model-00002-of-00002.safetensors",
                    {{"model.layers.0.mlp.down_proj.weight", at::randn({32, 64})},
                     {"model.norm.weight", at::ones({32})},
                     {"lm_head.weight", at::randn({100, 32})}});
  write_file(dir / "model.safetensors.index.json",
             R"({"metadata": {"total_size": 0}, "weight_map": {
  "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
  "model.layers.0.mlp.up_proj.weight": "model-00001-of-00002.safetensors",
  "model.layers.0.mlp.down_proj.weight": "model-00002-of-00002.safetensors",
  "model.norm.weight": "model-00002-of-00002.safetensors",
  "lm_head.weight": "model-00002-of-00002.safetensors"}})");
  write_file(dir / "config.json", R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 32})");
  write_file(dir / "tokenizer.json", "{}");
}


// A Hugging Face Llama directory of `layers` blocks (vocab 20; 2 heads, 1 kv head, MLP of
// 2 x hidden) that the llama architecture runs: model.safetensors and config.json, with
// the tensors named in `replace` replaced.
inline void write_tiny_llama(const fs::path& dir, int64_t hidden = 8, int64_t layers = 1,
                             const std::map<std::string, at::Tensor>& replace = {}) {
  at::manual_seed(1);
  const int64_t vocab = 20, inner = 2 * hidden, kv = hidden / 2;
  std::vector<std::pair<std::string, at::Tensor>> tensors = {{"model.embed_tokens.weight", at::randn({vocab, hidden})}};
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    tensors.insert(tensors.end(), {{p + "input_layernorm.weight", at::ones({hidden})},
                                   {p + "post_attention_layernorm.weight", at::ones({hidden})},
                                   {p + "self_attn.q_proj.weight", at::randn({hidden, hidden})},
                                   {p + "self_attn.k_proj.weight", at::randn({kv, hidden})},
                                   {p + "self_attn.v_proj.weight", at::randn({kv, hidden})},
                                   {p + "self_attn.o_proj.weight", at::randn({hidden, hidden})},
                                   {p + "mlp.gate_proj.weight", at::randn({inner, hidden})},
                                   {p + "mlp.up_proj.weight", at::randn({inner, hidden})},
                                   {p + "mlp.down_proj.weight", at::randn({hidden, inner})}});
  }
  tensors.insert(tensors.end(), {{"model.norm.weight", at::ones({hidden})}, {"lm_head.weight", at::randn({vocab, hidden})}});
  for (auto& [name, t] : tensors)
    if (const auto r = replace.find(name); r != replace.end()) t = r->second;
  write_safetensors(dir / "model.safetensors", tensors);
  write_file(dir / "config.json", R"({"architectures": ["LlamaForCausalLM"], "hidden_size": )" +
                                      std::to_string(hidden) + R"(, "num_hidden_layers": )" + std::to_string(layers) +
                                      R"(, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 20,
    "intermediate_size": )" + std::to_string(inner) + R"(, "rms_norm_eps": 1e-5})");
}

// A GPT-2 style byte-level BPE tokenizer.json of seven tokens (a, b, space, ab, " a", an
// added special one, newline), in `dir`.
inline void write_byte_level_tokenizer(const fs::path& dir) {
  write_file(dir / "tokenizer.json", R"({"version": "1.0", "added_tokens": [{"id": 5, "content": "<|endoftext|>",
    "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
  "normalizer": null, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
    "use_regex": true}, "post_processor": null, "decoder": null,
  "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
    "vocab": {"a": 0, "b": 1, "\u0120": 2, "ab": 3, "\u0120a": 4, "\u010a": 6}, "merges": ["a b", "\u0120 a"]}})");
}

}  // namespace mq::test
