// gguf: llama.cpp's GGUF files (also read by Ollama, LM Studio, ...) of Hugging Face
// Llama-family directories (llama_gguf.hpp), written as convert_hf_to_gguf.py and
// llama-quantize would make them: llama.cpp's tensor names and keys, the tokenizer,
// weights quantized to its block types (dtype q8_0, q4_0, q4_1, q5_0, q5_1; blocks.hpp)
// or cast to F16/BF16, norms and biases in F32. What only mq needs to read the file back
// exactly (each quantized tensor's spec, a float tensor's dtype before F32) is kept under
// mq.* keys, which llama.cpp ignores.

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <map>

#include "gguf_file.hpp"
#include "llama_gguf.hpp"
#include "mq/blocks.hpp"
#include "mq/error.hpp"
#include "mq/format.hpp"

namespace {

namespace fs = std::filesystem;
using mq::gguf::TensorType;
using Json = nlohmann::ordered_json;

constexpr const char* kFloatDTypesKey = "mq.float_dtypes";  // float tensors stored as F32: their dtype

// LLAMA_FTYPE (general.file_type) of the type most weights have.
uint32_t file_type(TensorType type) {
  switch (type) {
    case TensorType::kF32: return 0;
    case TensorType::kF16: return 1;
    case TensorType::kQ4_0: return 2;
    case TensorType::kQ4_1: return 3;
    case TensorType::kQ8_0: return 7;
    case TensorType::kQ5_0: return 8;
    case TensorType::kQ5_1: return 9;
    case TensorType::kQ4_K: return 14;  // Q4_K_S: mostly Q4_K
    case TensorType::kQ5_K: return 16;  // Q5_K_S
    case TensorType::kQ6_K: return 18;
    case TensorType::kBF16: return 32;
  }
  return 0;
}

std::optional<TensorType> float_type(at::ScalarType dtype) {
  if (dtype == at::kFloat) return TensorType::kF32;
  if (dtype == at::kHalf) return TensorType::kF16;
  if (dtype == at::kBFloat16) return TensorType::kBF16;
  return std::nullopt;
}

at::ScalarType scalar_type(TensorType type) {
  return type == TensorType::kF16 ? at::kHalf : type == TensorType::kBF16 ? at::kBFloat16 : at::kFloat;
}

class GgufStream final : public mq::EntryWriter {
 public:
  GgufStream(const mq::Model& source, const fs::path& path)
      : config_(mq::gguf::read_config(source)),
        vocab_(mq::gguf::read_vocab(source.metadata.at(mq::kHfDirectoryKey), config_.vocab)),
        out_(path) {}

  void add(const mq::QuantizedEntry& e) override {
    const std::string name = mq::gguf::gguf_name(e.name).value();  // check_plan refused others
    at::Tensor data;
    TensorType type;
    std::vector<int64_t> shape;
    if (e.quantized) {
      const mq::QuantizedTensor& q = *e.quantized;
      specs_[e.name] = Json::parse(q.spec.to_json());
      type = q.spec.is_block() ? mq::gguf::tensor_type(q.spec.dtype) : *float_type(q.data.scalar_type());
      data = q.data;
      shape = q.shape;
    } else {
      data = e.tensor;
      shape = data.sizes().vec();
      const std::optional<TensorType> as = float_type(data.scalar_type());
      if (!as || data.dim() <= 1) {  // llama.cpp reads norms and biases as F32
        if (data.scalar_type() != at::kFloat) floats_[e.name] = std::string(c10::toString(data.scalar_type()));
        data = data.to(at::kFloat);
        type = TensorType::kF32;
      } else {
        type = *as;
      }
    }
    if (shape.size() == 2) ++weights_[type];
    if (const int64_t heads = mq::gguf::permuted_heads(name, config_.arch, config_.heads, config_.kv_heads))
      data = mq::gguf::permute_rows(data.reshape({shape[0], -1}), heads, false);
    data = data.contiguous();
    out_.add_tensor(name, shape, type, data.data_ptr(), data.nbytes());
  }

  void finish(const mq::QuantizedModel& model) override {
    TensorType most = TensorType::kF32;
    for (const auto& [type, count] : weights_)
      if (type != TensorType::kF32 && (most == TensorType::kF32 || count > weights_[most])) most = type;
    out_.add_string("general.architecture", config_.arch);
    out_.add_u32("general.alignment", mq::gguf::kAlignment);
    out_.add_u32("general.quantization_version", 2);
    out_.add_u32("general.file_type", file_type(most));
    mq::gguf::write_keys(out_, config_, vocab_);
    if (!config_.rope_factors.empty())
      out_.add_tensor(mq::gguf::kRopeFactorsName, {static_cast<int64_t>(config_.rope_factors.size())}, TensorType::kF32,
                      config_.rope_factors.data(), config_.rope_factors.size() * sizeof(float));
    for (const auto& [key, value] : model.metadata)
      if (key.rfind("mq.", 0) == 0 && key != mq::kHfDirectoryKey) out_.add_string(key, value);
    out_.add_string(mq::kModeKey, model.mode);
    if (!specs_.empty()) out_.add_string(mq::kSpecsKey, specs_.dump());
    if (!floats_.empty()) out_.add_string(kFloatDTypesKey, floats_.dump());
    out_.finish();
  }

 private:
  mq::gguf::LlamaConfig config_;
  mq::gguf::Vocab vocab_;
  mq::gguf::Writer out_;
  Json specs_ = Json::object(), floats_ = Json::object();
  std::map<TensorType, int64_t> weights_;  // 2-D tensors by stored type
};

// `t`'s bytes, kept alive by the file's mapping.
at::Tensor over_mapping(const mq::gguf::File& file, const mq::gguf::TensorInfo& t, at::IntArrayRef sizes,
                        at::ScalarType dtype) {
  auto keep = file.map;
  return at::from_blob(const_cast<uint8_t*>(t.data), sizes, [keep](void*) {}, at::TensorOptions(dtype));
}

class GgufFormat final : public mq::Format, public mq::ArtifactsDoNotRun {
 public:
  explicit GgufFormat(const mq::Options&) {}

  bool can_read(const fs::path& path) const override { return mq::gguf::has_magic(path); }

  mq::Model read(const fs::path& path) override {
    throw mq::InputError(path.string() + ": a GGUF file is what mq writes for llama.cpp, not a model it quantizes: "
                                         "quantize the Hugging Face directory it was made from");
  }

  void check_plan(const mq::Model& source, std::vector<mq::PlanRow>& plan) const override {
    const mq::gguf::LlamaConfig config = mq::gguf::read_config(source);
    mq::gguf::read_vocab(source.metadata.at(mq::kHfDirectoryKey), config.vocab);
    for (const mq::NamedTensor& t : source.tensors) {
      if (!mq::gguf::gguf_name(t.name))
        throw mq::RecipeError("format 'gguf': tensor " + t.name + " has no name in llama.cpp's " + config.arch +
                              " layout");
      if (!t.tensor.is_floating_point())
        throw mq::RecipeError("format 'gguf': tensor " + t.name + " is not floating point");
    }
    for (size_t i = 0; i < plan.size(); ++i)
      if (plan[i].spec && source.tensors.at(i).tensor.dim() < 2)
        throw mq::RecipeError("format 'gguf': " + plan[i].tensor + " is planned as " + plan[i].spec->to_string() +
                              ", and llama.cpp reads 1-D tensors (norms, biases) in F32: keep them in float");
    for (const mq::PlanRow& row : plan)
      if (row.spec && !row.spec->is_block() && row.spec->is_integer())
        throw mq::RecipeError("format 'gguf' stores llama.cpp's types (dtype q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, "
                              "q5_k, q6_k, fp16, bf16), not " + row.spec->to_string() + " (planned for " + row.tensor + ")");
  }

  std::unique_ptr<mq::EntryWriter> stream(const mq::Model& source, const fs::path& path) override {
    return std::make_unique<GgufStream>(source, path);
  }

  mq::QuantizedModel read_quantized(const fs::path& path, mq::Origin) override {
    const mq::gguf::File file = mq::gguf::read(path);
    const auto text = [&](const char* key) {
      const auto it = file.kv.find(key);
      return it != file.kv.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    const auto count = [&](const std::string& key) {
      const auto it = file.kv.find(key);
      const bool sane = it != file.kv.end() && it->is_number_unsigned() && it->get<uint64_t>() <= (1u << 20);
      return sane ? it->get<int64_t>() : int64_t{0};  // 0: not permuted back (a file not of ours)
    };
    const Json specs = parse_key(path, file, mq::kSpecsKey), floats = parse_key(path, file, kFloatDTypesKey);
    const std::string arch = text("general.architecture");
    const int64_t heads = count(arch + ".attention.head_count"), kv_heads = count(arch + ".attention.head_count_kv");
    mq::QuantizedModel out;
    for (const auto& [key, value] : file.kv.items())
      if (key.rfind("mq.", 0) == 0 && value.is_string() && key != mq::kSpecsKey && key != kFloatDTypesKey &&
          key != mq::kModeKey)
        out.metadata[key] = value.get<std::string>();
    if (const std::string mode = text(mq::kModeKey); !mode.empty()) out.mode = mode;
    for (const mq::gguf::TensorInfo& t : file.tensors) {
      if (t.name == mq::gguf::kRopeFactorsName) continue;  // made from config.json, not a model tensor
      const std::string name = mq::gguf::hf_name(t.name).value_or(t.name);
      const std::optional<mq::DType> block = mq::gguf::block_dtype(t.type);
      const int64_t rows = t.shape.size() > 1 ? static_cast<int64_t>(t.bytes) / (mq::gguf::row_bytes(static_cast<uint32_t>(t.type), t.shape.back())) : 1;
      at::Tensor data = block ? over_mapping(file, t, {rows, static_cast<int64_t>(t.bytes) / rows}, at::kByte)
                              : over_mapping(file, t, t.shape, scalar_type(t.type));
      if (const int64_t h = mq::gguf::permuted_heads(t.name, arch, heads, kv_heads); h && heads && kv_heads)
        data = mq::gguf::permute_rows(data.reshape({t.shape[0], -1}), h, true).reshape(data.sizes());
      mq::QuantizedEntry e{name, at::Tensor(), std::nullopt};
      const auto spec = specs.find(name);
      if (block || spec != specs.end()) {
        mq::QuantizedTensor q;
        q.data = data;
        q.shape = t.shape;
        try {
          q.spec = spec != specs.end() ? mq::QuantSpec::from_json(spec->dump()) : block_spec(*block);
        } catch (const std::invalid_argument& err) {
          throw mq::InputError(path.string() + ": malformed " + std::string(mq::kSpecsKey) + " for " + name + " (" + err.what() + ")");
        }
        const bool cast_as_stored = !block && !q.spec.is_integer() && !q.spec.is_block() &&
                                    q.spec.stored_type() == data.scalar_type();
        if (block ? q.spec.dtype != *block : !cast_as_stored)
          throw mq::InputError(path.string() + ": " + name + " is stored as " + mq::gguf::type_name(t.type) +
                               " but recorded as " + q.spec.to_string());
        e.quantized = std::move(q);
      } else {
        e.tensor = data;
        if (const auto f = floats.find(name); f != floats.end()) e.tensor = data.to(dtype_named(path, f->get<std::string>()));
      }
      out.entries.push_back(std::move(e));
    }
    return out;
  }

  // mq runs no GGUF (llama.cpp does): the file as a model that does not run, its
  // provenance only. (Its tensors are read_quantized()'s, for load_run and validate.)
  mq::Model read_artifact(const fs::path& path, mq::Origin) override {
    const mq::gguf::File file = mq::gguf::read(path);
    mq::Model model;
    for (const auto& [key, value] : file.kv.items())
      if (key.rfind("mq.", 0) == 0 && value.is_string()) model.metadata[key] = value.get<std::string>();
    model.sources = {path};
    return model;
  }

 private:
  static mq::QuantSpec block_spec(mq::DType dtype) {
    mq::QuantSpec s;
    s.dtype = dtype;
    s.granularity = mq::Granularity::kPerGroup;
    s.group_size = mq::traits(dtype).block;
    s.scheme = mq::traits(dtype).is_signed ? mq::Scheme::kSymmetric : mq::Scheme::kAsymmetric;
    return s;
  }

  static Json parse_key(const fs::path& path, const mq::gguf::File& file, const char* key) {
    const auto it = file.kv.find(key);
    if (it == file.kv.end()) return Json::object();
    try {
      Json j = Json::parse(it->get<std::string>());
      if (j.is_object()) return j;
    } catch (const std::exception&) {
    }
    throw mq::InputError(path.string() + ": malformed " + key + " metadata");
  }

  static at::ScalarType dtype_named(const fs::path& path, const std::string& name) {
    for (at::ScalarType t : {at::kHalf, at::kBFloat16, at::kDouble})
      if (name == c10::toString(t)) return t;
    throw mq::InputError(path.string() + ": " + kFloatDTypesKey + " names dtype '" + name + "'");
  }
};

}  // namespace

MQ_PLUGIN(GgufFormat, mq::PluginKind::kFormat, "gguf", "0.1.0",
          "llama.cpp's GGUF of Hugging Face Llama-family directories: q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, F16, BF16")
