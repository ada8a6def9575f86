// The gguf format: the file layer (key/values, tensor infos, alignment) written and read
// back, every truncation and a corpus of hostile headers refused with InputError,
// llama.cpp's names and Q/K row order, and the format writing a tiny Llama directory
// and reading it back as it was. (llama.cpp itself loading and running what we write:
// interop_gguf.)

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>

#include "gguf_file.hpp"
#include "llama_gguf.hpp"
#include "mq/blocks.hpp"
#include "mq/error.hpp"
#include "mq/format.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using mq::gguf::TensorType;

// A small file of every kind of key and three tensors.
void write_sample(const fs::path& path) {
  mq::gguf::Writer out(path);
  out.add_string("general.architecture", "llama");
  out.add_u32("llama.block_count", 2);
  out.add_f32("llama.rope.freq_base", 500000.0f);
  out.add_bool("tokenizer.ggml.add_bos_token", true);
  out.add_strings("tokenizer.ggml.tokens", {"a", "b", "\xc4\xa0"});
  out.add_i32s("tokenizer.ggml.token_type", {1, 1, 3});
  out.add_f32s("scores", {0.5f, -1.0f});
  const at::Tensor norm = at::arange(5, at::kFloat);
  out.add_tensor("output_norm.weight", {5}, TensorType::kF32, norm.data_ptr(), norm.nbytes());
  const at::Tensor half = at::arange(6, at::kFloat).reshape({2, 3}).to(at::kHalf);
  out.add_tensor("token_embd.weight", {2, 3}, TensorType::kF16, half.data_ptr(), half.nbytes());
  const at::Tensor q = mq::blocks::quantize(at::randn({3, 64}), mq::DType::kQ8_0);
  out.add_tensor("blk.0.attn_q.weight", {3, 64}, TensorType::kQ8_0, q.data_ptr(), q.nbytes());
  out.finish();
}

std::string bytes_of(const fs::path& path) { return mq::test::read_file(path); }

TEST(GgufFile, KeysAndTensorsReadBackAsWritten) {
  mq::test::ScratchDir dir("gguf-file");
  write_sample(dir / "a.gguf");
  EXPECT_TRUE(mq::gguf::has_magic(dir / "a.gguf"));
  EXPECT_FALSE(fs::exists(dir / "a.gguf.data"));  // the scratch data went into the file
  const mq::gguf::File f = mq::gguf::read(dir / "a.gguf");
  EXPECT_EQ(f.kv["general.architecture"], "llama");
  EXPECT_EQ(f.kv["llama.block_count"], 2);
  EXPECT_EQ(f.kv["llama.rope.freq_base"], 500000.0);
  EXPECT_EQ(f.kv["tokenizer.ggml.add_bos_token"], true);
  EXPECT_EQ(f.kv["tokenizer.ggml.tokens"], nlohmann::ordered_json({"a", "b", "\xc4\xa0"}));
  EXPECT_EQ(f.kv["tokenizer.ggml.token_type"], nlohmann::ordered_json({1, 1, 3}));
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.tensors[1].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f.tensors[1].type, TensorType::kF16);
  EXPECT_EQ(f.tensors[2].bytes, 3u * 2 * 34);
  for (const mq::gguf::TensorInfo& t : f.tensors)
    EXPECT_EQ((t.data - f.map->data()) % mq::gguf::kAlignment, 0) << t.name;
  float norm[5];
  std::memcpy(norm, f.tensors[0].data, sizeof norm);
  EXPECT_EQ(norm[4], 4.0f);
}

TEST(GgufFile, EveryTruncationIsRefusedAsInput) {
  mq::test::ScratchDir dir("gguf-truncated");
  write_sample(dir / "a.gguf");
  const std::string whole = bytes_of(dir / "a.gguf");
  for (size_t n = 0; n < whole.size(); n += n < 400 ? 1 : 37) {
    mq::test::write_file(dir / "t.gguf", whole.substr(0, n));
    EXPECT_THROW(mq::gguf::read(dir / "t.gguf"), mq::InputError) << n << " bytes";
  }
}

TEST(GgufFile, HostileHeadersAreRefusedWithTheirReason) {
  mq::test::ScratchDir dir("gguf-hostile");
  write_sample(dir / "a.gguf");
  const std::string good = bytes_of(dir / "a.gguf");
  const auto patched = [&](size_t at, const void* value, size_t n) {
    std::string s = good;
    s.replace(at, n, static_cast<const char*>(value), n);
    return s;
  };
  const auto refused = [&](const std::string& bytes, const std::string& part) {
    mq::test::write_file(dir / "h.gguf", bytes);
    try {
      mq::gguf::read(dir / "h.gguf");
      ADD_FAILURE() << "accepted: " << part;
    } catch (const mq::InputError& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  const uint32_t v4 = 4;
  refused(patched(4, &v4, 4), "version 4");
  const uint64_t huge = uint64_t{1} << 60;
  refused(patched(8, &huge, 8), "counts larger than the file");
  refused(patched(24, &huge, 8), "a key running past the end");  // the first key's length
  refused("GGUX" + good.substr(4), "no GGUF magic");
  // The last tensor's info: name, n_dims, 2 dims, type, offset before the padding.
  const size_t name_at = good.find("blk.0.attn_q.weight");
  const size_t type_at = name_at + 19 + 4 + 16, offset_at = type_at + 4;
  const uint32_t q2_k = 10;
  refused(patched(type_at, &q2_k, 4), "which mq does not read");
  const uint64_t unaligned = 8;
  refused(patched(offset_at, &unaligned, 8), "unaligned offset");
  const uint64_t beyond = uint64_t{1} << 20;
  refused(patched(offset_at, &beyond, 8), "running past the end of the file");
  const uint32_t dims = 7;
  refused(patched(name_at + 19, &dims, 4), "with 7 dimensions");
  const uint64_t cols = 48;  // not whole Q8_0 blocks
  refused(patched(name_at + 19 + 4, &cols, 8), "rows not a whole number of blocks");
}

TEST(GgufNames, HfNamesMapToLlamaCppsAndBack) {
  for (const std::string& hf :
       {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", "model.layers.0.input_layernorm.weight",
        "model.layers.12.self_attn.q_proj.bias", "model.layers.3.mlp.down_proj.weight"}) {
    const std::optional<std::string> g = mq::gguf::gguf_name(hf);
    ASSERT_TRUE(g) << hf;
    EXPECT_EQ(mq::gguf::hf_name(*g), hf);
  }
  EXPECT_EQ(mq::gguf::gguf_name("model.layers.12.self_attn.o_proj.weight"), "blk.12.attn_output.weight");
  EXPECT_FALSE(mq::gguf::gguf_name("model.layers.01.mlp.up_proj.weight"));
  EXPECT_FALSE(mq::gguf::gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq"));
  EXPECT_FALSE(mq::gguf::hf_name("blk.x.attn_q.weight"));
}

TEST(GgufNames, QAndKRowsTakeLlamaCppsRopeOrder) {
  // convert_hf_to_gguf.py: w.reshape(heads, 2, rows / heads / 2, cols).swapaxes(1, 2).
  const at::Tensor rows = at::arange(8, at::kFloat).reshape({8, 1});
  const at::Tensor permuted = mq::gguf::permute_rows(rows, 2, false);
  EXPECT_TRUE(at::equal(permuted.reshape(-1), at::tensor({0.f, 2.f, 1.f, 3.f, 4.f, 6.f, 5.f, 7.f})));
  const at::Tensor w = at::randn({12, 5});
  EXPECT_TRUE(at::equal(mq::gguf::permute_rows(mq::gguf::permute_rows(w, 3, false), 3, true), w));
  EXPECT_EQ(mq::gguf::permuted_heads("blk.0.attn_k.weight", "llama", 8, 2), 2);
  EXPECT_EQ(mq::gguf::permuted_heads("blk.0.attn_q.bias", "llama", 8, 2), 8);
  EXPECT_EQ(mq::gguf::permuted_heads("blk.0.attn_v.weight", "llama", 8, 2), 0);
  EXPECT_EQ(mq::gguf::permuted_heads("blk.0.attn_q.weight", "qwen2", 8, 2), 0);
}

// The tiny Llama directory as a format reads it: its tensors and where it lies.
mq::Model tiny_llama(const fs::path& dir) {
  mq::test::write_tiny_llama(dir, 32);
  mq::test::write_byte_level_tokenizer(dir);
  mq::Model model;
  model.metadata[mq::kHfDirectoryKey] = dir.string();
  at::manual_seed(1);  // the values do not matter here: names and shapes do
  for (const auto& [name, shape] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"model.embed_tokens.weight", {20, 32}}, {"model.layers.0.self_attn.q_proj.weight", {32, 32}},
           {"model.layers.0.self_attn.k_proj.weight", {16, 32}}, {"model.layers.0.input_layernorm.weight", {32}}})
    model.tensors.push_back({name, at::randn(shape).to(at::kBFloat16)});
  return model;
}

std::vector<mq::PlanRow> plan_for(const mq::Model& model, std::optional<mq::QuantSpec> spec) {
  std::vector<mq::PlanRow> plan;
  for (const mq::NamedTensor& t : model.tensors)
    plan.push_back({t.name, "test", t.tensor.dim() == 2 && t.name.find("proj") != std::string::npos ? spec : std::nullopt});
  return plan;
}

mq::QuantSpec block_spec(mq::DType dtype) {
  mq::QuantSpec s;
  s.dtype = dtype;
  s.granularity = mq::Granularity::kPerGroup;
  s.group_size = 32;
  s.scheme = mq::traits(dtype).is_signed ? mq::Scheme::kSymmetric : mq::Scheme::kAsymmetric;
  return s;
}

TEST(GgufFormat, ATinyLlamaReadsBackAsItWasWritten) {
  mq::test::ScratchDir dir("gguf-format");
  const mq::Model model = tiny_llama(dir / "llama");
  auto format = mq::test::make_plugin<mq::Format>();
  std::vector<mq::PlanRow> plan = plan_for(model, block_spec(mq::DType::kQ4_1));
  format->check_plan(model, plan);
  mq::QuantizedModel written;
  written.plan = plan;
  written.metadata = {{"mq.version", "test"}, {"source.other", "not copied"}};
  for (size_t i = 0; i < model.tensors.size(); ++i) {
    const mq::NamedTensor& t = model.tensors[i];
    mq::QuantizedEntry e{t.name, t.tensor, std::nullopt};
    if (plan[i].spec) {
      mq::QuantizedTensor q;
      q.spec = *plan[i].spec;
      q.shape = t.tensor.sizes().vec();
      q.data = mq::blocks::quantize(t.tensor, q.spec.dtype);
      e = {t.name, at::Tensor(), q};
    }
    written.entries.push_back(e);
  }
  const std::unique_ptr<mq::EntryWriter> out = format->stream(model, dir / "llama.gguf");
  for (const mq::QuantizedEntry& e : written.entries) out->add(e);
  out->finish(written);
  EXPECT_TRUE(format->can_read(dir / "llama.gguf"));

  const mq::gguf::File file = mq::gguf::read(dir / "llama.gguf");
  EXPECT_EQ(file.kv["general.architecture"], "llama");
  EXPECT_EQ(file.kv["general.file_type"], 3);  // MOSTLY_Q4_1
  EXPECT_EQ(file.kv["llama.attention.head_count_kv"], 1);
  EXPECT_EQ(file.kv["tokenizer.ggml.pre"], "gpt-2");
  EXPECT_EQ(file.kv["tokenizer.ggml.tokens"].size(), 20u);  // config's vocab: padded
  EXPECT_EQ(file.kv["tokenizer.ggml.tokens"][19], "[PAD19]");
  EXPECT_EQ(file.kv["tokenizer.ggml.token_type"][5], 3);  // the special added token: CONTROL
  EXPECT_EQ(file.kv["tokenizer.ggml.merges"], nlohmann::ordered_json({"a b", "\xc4\xa0 a"}));
  EXPECT_FALSE(file.kv.contains("source.other"));
  EXPECT_EQ(file.tensors[3].name, "blk.0.attn_norm.weight");
  EXPECT_EQ(file.tensors[3].type, TensorType::kF32);  // a bf16 norm: F32, as llama.cpp reads norms
  // k's rows are stored in llama.cpp's order: one kv head of 16 rows.
  const at::Tensor k = written.entries[2].quantized->data;
  const at::Tensor stored = at::from_blob(const_cast<uint8_t*>(file.tensors[2].data), k.sizes(), at::kByte);
  EXPECT_TRUE(at::equal(stored, mq::gguf::permute_rows(k, 1, false)));
  EXPECT_FALSE(at::equal(stored, k));

  const mq::QuantizedModel back = format->read_quantized(dir / "llama.gguf", mq::Origin::kThisRun);
  ASSERT_EQ(back.entries.size(), written.entries.size());
  for (size_t i = 0; i < back.entries.size(); ++i) {
    const mq::QuantizedEntry &a = written.entries[i], &b = back.entries[i];
    EXPECT_EQ(a.name, b.name);
    ASSERT_EQ(a.quantized.has_value(), b.quantized.has_value()) << a.name;
    if (a.quantized) {
      EXPECT_EQ(b.quantized->spec.to_string(), "q4_1");
      EXPECT_TRUE(at::equal(a.quantized->data, b.quantized->data)) << a.name;
    } else {
      EXPECT_EQ(b.tensor.scalar_type(), at::kBFloat16) << a.name;  // as it was, through F32
      EXPECT_TRUE(at::equal(a.tensor, b.tensor)) << a.name;
    }
  }
  EXPECT_EQ(back.metadata.at("mq.version"), "test");
  // As a model to run: not one mq runs (llama.cpp does), with its provenance.
  const mq::Model artifact = format->read_artifact(dir / "llama.gguf", mq::Origin::kThisRun);
  EXPECT_FALSE(artifact.runnable);
  EXPECT_EQ(artifact.metadata.at("mq.version"), "test");
  EXPECT_THROW(format->read(dir / "llama.gguf"), mq::InputError);
}

TEST(GgufFormat, PlansItCannotWriteAreRefusedBeforeAnyWork) {
  mq::test::ScratchDir dir("gguf-refusals");
  const mq::Model model = tiny_llama(dir / "llama");
  auto format = mq::test::make_plugin<mq::Format>();
  const auto refused = [&](const mq::Model& m, std::optional<mq::QuantSpec> spec, const std::string& part) {
    std::vector<mq::PlanRow> plan = plan_for(m, spec);
    try {
      format->check_plan(m, plan);
      ADD_FAILURE() << "accepted: " << part;
    } catch (const mq::RecipeError& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  mq::QuantSpec int8;
  refused(model, int8, "not int8 per_channel(axis=0) symmetric");
  std::vector<mq::PlanRow> half_norm = plan_for(model, std::nullopt);
  half_norm[3].spec = mq::QuantSpec{};
  half_norm[3].spec->dtype = mq::DType::kFloat16;
  try {
    format->check_plan(model, half_norm);
    ADD_FAILURE() << "a 1-D tensor cast to fp16 was accepted";
  } catch (const mq::RecipeError& e) {
    EXPECT_NE(std::string(e.what()).find("llama.cpp reads 1-D tensors (norms, biases) in F32"), std::string::npos)
        << e.what();
  }
  mq::Model loose = model;
  loose.metadata.clear();
  refused(loose, std::nullopt, "writes Hugging Face model directories");
  mq::Model extra = model;
  extra.tensors.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", at::ones({4})});
  refused(extra, std::nullopt, "has no name in llama.cpp's llama layout");
  fs::remove(dir / "llama" / "tokenizer.json");
  refused(model, std::nullopt, "has no tokenizer.json or tokenizer.model");
  mq::test::write_file(dir / "llama" / "tokenizer.json",
                       R"({"model": {"type": "WordPiece", "vocab": {"a": 0}, "unk_token": "a"}})");
  refused(model, std::nullopt, "only byte-level BPE tokenizer.json files");
  mq::test::write_file(dir / "llama" / "config.json", R"({"model_type": "gpt2"})");
  refused(model, std::nullopt, "model 'gpt2' is not one the GGUF writer implements");
}

}  // namespace
