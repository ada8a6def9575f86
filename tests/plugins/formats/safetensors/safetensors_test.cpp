// The safetensors format: compressed-tensors out, HF directories in and out, and
// reading our artifacts back.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <functional>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/format.hpp"
#include "safetensors_file.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::unique_ptr<mq::Format> format() { return mq::test::make_plugin<mq::Format>(); }

// The quantizer reads weights through read_into (pread into its own buffer), not the
// mapping: the same bytes, from whichever shard holds the tensor; a tensor of no file is
// not read; a shard cut short under the run is an error where the mapping would have
// been SIGBUS.
TEST(SafetensorsFormat, ReadIntoCopiesATensorFromItsFile) {
  mq::test::ScratchDir dir("st-read-into");
  mq::test::write_hf_directory(dir.path());
  const mq::Model model = format()->read(dir.path());
  ASSERT_FALSE(model.files.empty());
  for (const mq::NamedTensor& t : model.tensors) {
    const at::Tensor into = at::zeros_like(t.tensor);
    ASSERT_TRUE(model.read_into(t.tensor, into)) << t.name;
    EXPECT_TRUE(at::equal(into, t.tensor)) << t.name;
  }
  const at::Tensor other = at::randn({3, 5});
  EXPECT_FALSE(model.read_into(other, at::empty_like(other)));
  const fs::path second = dir / "model-00002-of-00002.safetensors";
  fs::resize_file(second, fs::file_size(second) - 100);
  const at::Tensor& last = model.tensors.back().tensor;
  try {
    model.read_into(last, at::empty_like(last));
    ADD_FAILURE() << "read past the end";
  } catch (const mq::InputError& e) {
    EXPECT_EQ(std::string(e.what()), second.string() + ": cannot read (the file shrank)");
  }
  const at::Tensor& first = model.tensors.front().tensor;
  EXPECT_TRUE(model.read_into(first, at::empty_like(first)));
}

TEST(SafetensorsFormat, WriteThenReadQuantizedIsBitExactForEveryDtypeAndGranularity) {
  using G = mq::Granularity;
  for (auto dtype : {mq::DType::kInt8, mq::DType::kUInt8, mq::DType::kInt4, mq::DType::kUInt4,
                     mq::DType::kFloat16, mq::DType::kBFloat16})
    for (auto granularity : {G::kPerTensor, G::kPerChannel, G::kPerGroup})
      for (auto scheme : {mq::Scheme::kSymmetric, mq::Scheme::kAsymmetric})
        for (auto original : {at::kFloat, at::kHalf, at::kBFloat16}) {
          mq::QuantSpec spec;
          spec.dtype = dtype;
          spec.granularity = granularity;
          spec.scheme = scheme;
          spec.group_size = 4;
          SCOPED_TRACE(spec.to_string() + " from " + c10::toString(original));
          at::manual_seed(11);
          const at::Tensor w = at::randn({9, 10}).to(original);  // 10 % 4: a partial group
          mq::QuantizedTensor qt;
          if (spec.is_integer()) {
            auto [mn, mx] = mq::min_max(w, spec);
            mq::QParams qp = mq::qparams_from_min_max(mn, mx, spec);
            qp.scale = qp.scale.to(original).to(at::kFloat);
            qt = mq::quantize(w, qp, spec);
          } else {
            qt.data = w.to(dtype == mq::DType::kFloat16 ? at::kHalf : at::kBFloat16);
            qt.spec = spec;
            qt.shape = w.sizes().vec();
            qt.original_dtype = original;
          }
          mq::QuantizedModel model;
          model.entries = {{"fc.weight", at::Tensor(), qt}, {"fc.bias", at::randn({9}).to(original), std::nullopt}};
          model.metadata = {{"mq.recipe_hash", "abc"}};
          mq::test::ScratchDir dir("st-roundtrip");
          auto f = format();
          f->write(model, dir / "q.safetensors");
          const mq::QuantizedModel back = f->read_quantized(dir / "q.safetensors", mq::Origin::kUser);

          ASSERT_EQ(back.entries.size(), 2u);
          ASSERT_TRUE(back.entries[0].quantized.has_value());
          const mq::QuantizedTensor& b = *back.entries[0].quantized;
          EXPECT_TRUE(at::equal(qt.data, b.data));
          EXPECT_EQ(qt.shape, b.shape);
          EXPECT_EQ(qt.spec.to_string(), b.spec.to_string());
          if (spec.is_integer()) {
            EXPECT_TRUE(at::equal(qt.qparams.scale, b.qparams.scale));
            EXPECT_TRUE(at::equal(qt.qparams.zero_point, b.qparams.zero_point));
            EXPECT_EQ(b.original_dtype, original);
          }
          EXPECT_TRUE(at::equal(model.entries[1].tensor, back.entries[1].tensor));
          EXPECT_EQ(back.metadata.at("mq.recipe_hash"), "abc");
          EXPECT_EQ(back.metadata.at("format"), "pt");

          // describe(): the same listing; int4 data left packed (undefined), the rest as read.
          const mq::QuantizedModel listed = f->describe(dir / "q.safetensors");
          ASSERT_EQ(listed.entries.size(), 2u);
          const mq::QuantizedTensor& l = *listed.entries[0].quantized;
          EXPECT_EQ(l.data.defined(), !(spec.is_integer() && spec.bits() == 4));
          if (l.data.defined()) {
            EXPECT_TRUE(at::equal(l.data, b.data));
          }
          EXPECT_EQ(l.shape, b.shape);
          EXPECT_EQ(l.spec.to_string(), b.spec.to_string());
          EXPECT_EQ(l.original_dtype, b.original_dtype);
          EXPECT_EQ(l.nbytes(), b.nbytes());
          if (spec.is_integer()) {
            EXPECT_TRUE(at::equal(l.qparams.scale, b.qparams.scale));
            EXPECT_TRUE(at::equal(l.qparams.zero_point, b.qparams.zero_point));
          }
          EXPECT_TRUE(at::equal(listed.entries[1].tensor, back.entries[1].tensor));
          EXPECT_EQ(listed.metadata, back.metadata);
        }
}

// The runner streams: entries reach the format one at a time through stream(), and the
// file must be the one write() makes of the whole model, byte for byte.
TEST(SafetensorsFormat, StreamingWritesTheSameBytesAsWritingTheWholeModel) {
  at::manual_seed(5);
  mq::QuantSpec int8, int4;
  int8.dtype = mq::DType::kInt8;
  int4.dtype = mq::DType::kUInt4;
  int4.granularity = mq::Granularity::kPerGroup;
  int4.scheme = mq::Scheme::kAsymmetric;
  int4.group_size = 8;
  mq::QuantizedModel model;
  model.entries = {{"a.weight", at::Tensor(), mq::quantize_min_max(at::randn({6, 16}), int8)},
                   {"a.bias", at::randn({6}), std::nullopt},
                   {"b.weight", at::Tensor(), mq::quantize_min_max(at::randn({4, 16}), int4)}};
  model.mode = "static";
  model.activation_spec = int8;
  model.activation_qparams["a"] = {at::full({1}, 0.5f), at::zeros({1}, at::kInt)};
  model.metadata = {{"mq.recipe_hash", "abc"}};
  mq::test::ScratchDir dir("st-stream");
  auto f = format();
  f->write(model, dir / "whole.safetensors");
  std::unique_ptr<mq::EntryWriter> stream = f->stream(mq::Model{}, dir / "streamed.safetensors");
  ASSERT_TRUE(stream);
  for (const mq::QuantizedEntry& e : model.entries) stream->add(e);
  mq::QuantizedModel rest = model;
  rest.entries.clear();  // finish() must not need them
  stream->finish(rest);
  EXPECT_EQ(mq::test::read_file(dir / "streamed.safetensors"), mq::test::read_file(dir / "whole.safetensors"));
  const mq::QuantizedModel back = f->read_quantized(dir / "streamed.safetensors", mq::Origin::kUser);
  EXPECT_TRUE(at::equal(back.find("b.weight")->quantized->data, model.entries[2].quantized->data));
  EXPECT_EQ(back.activation_qparams.at("a").scale.item<float>(), 0.5f);
}


// A static model's activation spec is one metadata key, as in the pt format
// (mq.activation_spec, the model's one spec), not a copy per layer; files written with
// the per-layer mq.activations still read back.
TEST(SafetensorsFormat, StaticActivationsHaveOneSpecKey) {
  mq::QuantSpec int8;
  int8.dtype = mq::DType::kInt8;
  mq::QuantizedModel model;
  model.entries = {{"a.weight", at::Tensor(), mq::quantize_min_max(at::randn({6, 16}), int8)},
                   {"b.weight", at::Tensor(), mq::quantize_min_max(at::randn({6, 16}), int8)}};
  model.mode = "static";
  model.activation_spec = int8;
  model.activation_spec->granularity = mq::Granularity::kPerTensor;
  model.activation_qparams["a"] = {at::full({1}, 0.5f), at::zeros({1}, at::kInt)};
  model.activation_qparams["b"] = {at::full({1}, 0.25f), at::zeros({1}, at::kInt)};
  mq::test::ScratchDir dir("st-activation-spec");
  format()->write(model, dir / "new.safetensors");
  const auto file = mq::safetensors::File::open(dir / "new.safetensors");
  EXPECT_EQ(file->metadata().at(mq::kActivationSpecKey), model.activation_spec->to_json());
  EXPECT_EQ(file->metadata().at(mq::kModeKey), "static");
  EXPECT_EQ(file->metadata().count("mq.activations"), 0u);

  std::vector<mq::safetensors::OutTensor> tensors;
  for (const auto& t : file->tensors()) tensors.push_back({t.name, file->tensor(t)});
  std::map<std::string, std::string> old = file->metadata();
  old.erase(mq::kActivationSpecKey);
  old["mq.activations"] = "{\"a\": " + model.activation_spec->to_json() + ", \"b\": " + model.activation_spec->to_json() + "}";
  mq::safetensors::write(dir / "old.safetensors", tensors, old);
  for (const char* name : {"new.safetensors", "old.safetensors"}) {
    const mq::QuantizedModel back = format()->read_quantized(dir / name, mq::Origin::kUser);
    ASSERT_TRUE(back.activation_spec.has_value()) << name;
    EXPECT_EQ(back.activation_spec->to_string(), "int8 per_tensor symmetric") << name;
    ASSERT_EQ(back.activation_qparams.size(), 2u) << name;
    EXPECT_EQ(back.activation_qparams.at("b").scale.item<float>(), 0.25f) << name;
    EXPECT_EQ(back.entries.size(), 2u) << name;  // the scales are not entries
  }
}
// A source large enough that its header's room is at most 1/1024 of it: the streamed
// output keeps the room (written in place), reads back like the compact one, and two
// runs give the same bytes.
TEST(SafetensorsFormat, StreamingALargeModelWritesTheHeaderInPlace) {
  at::manual_seed(6);
  mq::Model source;
  source.tensors = {{"a.weight", at::randn({8192, 1024})}, {"a.bias", at::randn({8192})}};  // 32 MiB
  mq::QuantSpec int8;
  int8.dtype = mq::DType::kInt8;
  int8.granularity = mq::Granularity::kPerChannel;
  mq::QuantizedModel model;
  model.entries = {{"a.weight", at::Tensor(), mq::quantize_min_max(source.tensors[0].tensor, int8)},
                   {"a.bias", source.tensors[1].tensor, std::nullopt}};
  model.metadata = {{"mq.recipe_hash", "abc"}};
  mq::test::ScratchDir dir("st-stream-reserve");
  auto f = format();
  f->write(model, dir / "whole.safetensors");
  std::string streamed[2];
  for (std::string& bytes : streamed) {
    std::unique_ptr<mq::EntryWriter> stream = f->stream(source, dir / "streamed.safetensors");
    for (const mq::QuantizedEntry& e : model.entries) stream->add(e);
    stream->finish(model);
    bytes = mq::test::read_file(dir / "streamed.safetensors");
  }
  EXPECT_EQ(streamed[0], streamed[1]);
  const std::string whole = mq::test::read_file(dir / "whole.safetensors");
  EXPECT_GT(streamed[0].size(), whole.size());  // the room, padded with spaces
  EXPECT_LT(streamed[0].size(), whole.size() + source.nbytes() / 1024);
  const mq::QuantizedModel back = f->read_quantized(dir / "streamed.safetensors", mq::Origin::kUser);
  EXPECT_TRUE(at::equal(back.find("a.weight")->quantized->data, model.entries[0].quantized->data));
  EXPECT_TRUE(at::equal(back.find("a.bias")->tensor, model.entries[1].tensor));
  EXPECT_EQ(back.metadata, f->read_quantized(dir / "whole.safetensors", mq::Origin::kUser).metadata);
}

// A file of ours edited by hand: scales that do not fit the tensor are a one-line
// input error, not a failure later in dequantize.
TEST(SafetensorsFormat, ReadQuantizedRefusesScalesThatDoNotFitTheTensor) {
  mq::QuantSpec spec;
  spec.dtype = mq::DType::kInt8;
  spec.granularity = mq::Granularity::kPerChannel;
  const std::string specs = nlohmann::json{{"w", nlohmann::json::parse(spec.to_json())}}.dump();
  mq::test::ScratchDir dir("st-bad-scales");
  mq::safetensors::write(dir / "q.safetensors", {{"w", at::zeros({4, 8}, at::kChar)}, {"w_scale", at::ones({3, 1})}},
                         {{"mq.quantized", specs}});
  try {
    format()->read_quantized(dir / "q.safetensors", mq::Origin::kUser);
    ADD_FAILURE() << "read";
  } catch (const mq::InputError& e) {
    EXPECT_TRUE(contains(e.what(), "'w_scale' holds 3 values; int8 per_channel(axis=0) symmetric of this shape has 4"))
        << e.what();
  }
}

// Packed int4 data or zero points that do not hold the tensor's shape (too few words
// would leave values unread, uninitialized): an input error naming the tensor, from
// read_quantized() and describe() alike.
TEST(SafetensorsFormat, ReadQuantizedRefusesPackedTensorsThatDoNotFitTheShape) {
  mq::QuantSpec spec;
  spec.dtype = mq::DType::kUInt4;
  spec.granularity = mq::Granularity::kPerGroup;
  spec.scheme = mq::Scheme::kAsymmetric;
  spec.group_size = 8;
  const std::string specs = nlohmann::json{{"w", nlohmann::json::parse(spec.to_json())}}.dump();
  const auto shape = [](std::vector<int> s) { return at::tensor(s, at::kInt); };
  const at::Tensor scale = at::ones({4, 2}), zp = at::zeros({1, 2}, at::kInt);  // 16 columns: 2 words
  struct Case {
    const char* what;
    std::map<std::string, at::Tensor> tensors;
    const char* message;
  } cases[] = {
      {"too few words", {{"w_packed", at::zeros({4, 1}, at::kInt)}, {"w_shape", shape({4, 16})}},
       "'w_packed' (Int [4, 1]) is not int4 values of 'w_shape' [4, 16] packed eight to an int32"},
      {"too many words", {{"w_packed", at::zeros({4, 3}, at::kInt)}, {"w_shape", shape({4, 16})}},
       "'w_packed' (Int [4, 3]) is not int4 values"},
      {"rows", {{"w_packed", at::zeros({2, 2}, at::kInt)}, {"w_shape", shape({4, 16})}},
       "'w_packed' (Int [2, 2]) is not int4 values"},
      {"float words", {{"w_packed", at::zeros({4, 2})}, {"w_shape", shape({4, 16})}},
       "'w_packed' (Float [4, 2]) is not int4 values"},
      {"negative dimension", {{"w_packed", at::zeros({4, 2}, at::kInt)}, {"w_shape", shape({-4, 16})}},
       "is not int4 values of 'w_shape' [-4, 16]"},
      {"zero points", {{"w_packed", at::zeros({4, 2}, at::kInt)}, {"w_shape", shape({4, 16})}, {"w_zero_point", zp.narrow(1, 0, 1)}},
       "'w_zero_point' is not 8 int4 zero points packed eight to an int32 along the rows"},
  };
  for (Case& c : cases) {
    SCOPED_TRACE(c.what);
    c.tensors.emplace("w_scale", scale);
    c.tensors.emplace("w_zero_point", zp);
    mq::test::ScratchDir dir("st-bad-packed");
    std::vector<mq::safetensors::OutTensor> tensors;
    for (const auto& [name, t] : c.tensors) tensors.push_back({name, t});
    mq::safetensors::write(dir / "q.safetensors", tensors, {{"mq.quantized", specs}});
    for (bool listing : {false, true}) {
      try {
        listing ? format()->describe(dir / "q.safetensors") : format()->read_quantized(dir / "q.safetensors", mq::Origin::kUser);
        ADD_FAILURE() << "read";
      } catch (const mq::InputError& e) {
        EXPECT_TRUE(contains(e.what(), c.message)) << e.what();
      }
    }
  }
  // The same tensors with the zero points that fit read.
  mq::test::ScratchDir dir("st-good-packed");
  mq::safetensors::write(dir / "q.safetensors",
                         {{"w_packed", at::zeros({4, 2}, at::kInt)}, {"w_shape", shape({4, 16})}, {"w_scale", scale},
                          {"w_zero_point", zp}},
                         {{"mq.quantized", specs}});
  EXPECT_EQ(format()->read_quantized(dir / "q.safetensors", mq::Origin::kUser).find("w")->quantized->data.sizes(), at::IntArrayRef({4, 16}));
}

// Each tensor of an entry is stored as its spec says: the kernels read the bytes as that
// type, so another dtype of a file edited or made by hand is an input error.
TEST(SafetensorsFormat, ReadQuantizedRefusesTensorsStoredAsAnotherDtype) {
  const auto spec_of = [](mq::DType dtype, mq::Scheme scheme) {
    mq::QuantSpec spec;
    spec.dtype = dtype;
    spec.granularity = mq::Granularity::kPerChannel;
    spec.scheme = scheme;
    return nlohmann::json{{"w", nlohmann::json::parse(spec.to_json())}}.dump();
  };
  const std::string int8 = spec_of(mq::DType::kInt8, mq::Scheme::kSymmetric);
  const std::string uint8 = spec_of(mq::DType::kUInt8, mq::Scheme::kAsymmetric);
  const at::Tensor scale = at::ones({4, 1});
  struct Case {
    std::string specs;
    std::vector<mq::safetensors::OutTensor> tensors;
    const char* message;
  } cases[] = {
      {int8, {{"w", at::zeros({4, 8})}, {"w_scale", scale}}, "'w' is stored as Float; int8 per_channel(axis=0) symmetric stores it as Char"},
      {int8, {{"w", at::zeros({4, 8}, at::kShort)}, {"w_scale", scale}}, "'w' is stored as Short"},
      {uint8, {{"w", at::zeros({4, 8}, at::kChar)}, {"w_scale", scale}, {"w_zero_point", at::zeros({4, 1}, at::kByte)}},
       "'w' is stored as Char; uint8 per_channel(axis=0) asymmetric stores it as Byte"},
      {int8, {{"w", at::zeros({4, 8}, at::kChar)}, {"w_scale", at::ones({4, 1}, at::kInt)}}, "'w_scale' is stored as Int; int8 per_channel(axis=0) symmetric stores it as a floating type"},
      {uint8, {{"w", at::zeros({4, 8}, at::kByte)}, {"w_scale", scale}, {"w_zero_point", at::zeros({4, 1})}},
       "'w_zero_point' is stored as Float; uint8 per_channel(axis=0) asymmetric stores it as an integer type"},
      {spec_of(mq::DType::kFloat16, mq::Scheme::kSymmetric), {{"w", at::zeros({4, 8}, at::kBFloat16)}}, "'w' is stored as BFloat16; fp16"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    mq::test::ScratchDir dir("st-bad-dtype");
    mq::safetensors::write(dir / "q.safetensors", c.tensors, {{"mq.quantized", c.specs}});
    try {
      format()->read_quantized(dir / "q.safetensors", mq::Origin::kUser);
      ADD_FAILURE() << "read";
    } catch (const mq::InputError& e) {
      EXPECT_TRUE(contains(e.what(), c.message)) << e.what();
    }
  }
}

TEST(SafetensorsFormat, PacksInt4EightToAWordElementZeroLowest) {
  mq::QuantSpec spec;
  spec.dtype = mq::DType::kInt4;
  spec.granularity = mq::Granularity::kPerTensor;
  mq::QuantizedTensor q;
  q.data = at::tensor({-8, -7, 0, 1, 2, 3, 4, 7, 5}, at::kChar).reshape({1, 9});
  q.qparams = {at::ones({1}), at::zeros({1}, at::kInt)};
  q.spec = spec;
  q.shape = {1, 9};
  mq::QuantizedModel model;
  model.entries = {{"w", at::Tensor(), q}};
  mq::test::ScratchDir dir("st-pack");
  format()->write(model, dir / "q.safetensors");
  auto file = mq::safetensors::File::open(dir / "q.safetensors");
  const at::Tensor packed = file->tensor(*file->find("w_packed"));
  ASSERT_EQ(packed.sizes(), (at::IntArrayRef{1, 2}));
  // Nibbles are value + 8: 0,1,8,9,10,11,12,15 then 13 in the next word.
  EXPECT_EQ(static_cast<uint32_t>(packed[0][0].item<int32_t>()), 0xFCBA9810u);
  EXPECT_EQ(packed[0][1].item<int32_t>(), 13);
  EXPECT_EQ(file->find("w_shape")->dtype, "I32");
}

TEST(SafetensorsFormat, WritesTheCompressedTensorsLayout) {
  mq::QuantSpec spec;
  spec.granularity = mq::Granularity::kPerChannel;
  spec.scheme = mq::Scheme::kAsymmetric;
  const at::Tensor w = at::randn({4, 8});
  auto [mn, mx] = mq::min_max(w, spec);
  mq::QuantizedModel model;
  model.entries = {{"fc.weight", at::Tensor(), mq::quantize(w, mq::qparams_from_min_max(mn, mx, spec), spec)}};
  mq::test::ScratchDir dir("st-layout");
  format()->write(model, dir / "q.safetensors");
  auto file = mq::safetensors::File::open(dir / "q.safetensors");
  ASSERT_NE(file->find("fc.weight"), nullptr);
  EXPECT_EQ(file->find("fc.weight")->dtype, "I8");
  EXPECT_EQ(file->find("fc.weight_scale")->shape, (std::vector<int64_t>{4, 1}));
  EXPECT_EQ(file->find("fc.weight_zero_point")->dtype, "I8");
  EXPECT_TRUE(contains(file->metadata().at("quantization_config"), "\"format\":\"int-quantized\""));
  EXPECT_TRUE(contains(file->metadata().at("quantization_config"), "\"targets\":[\"fc\"]"));
  // Our specs under the key every format of ours uses (files that name it mq.quantized,
  // as this one did before, are read too: the tests above write such files).
  EXPECT_TRUE(contains(file->metadata().at(mq::kSpecsKey), "\"fc.weight\""));
  EXPECT_EQ(file->metadata().count("mq.quantized"), 0u);
}

// A tensor whose groups are not runs of columns (GPTQ's actorder "group") is written
// with P.weight_g_idx in a config group of its own saying actorder "group", as
// compressed-tensors writes it, and reads back the same; a g_idx that does not give each
// group its columns is refused by name.
TEST(SafetensorsFormat, WritesAGroupIndexAsCompressedTensorsDoesAndReadsItBack) {
  mq::QuantSpec spec;
  spec.dtype = mq::DType::kInt4;
  spec.granularity = mq::Granularity::kPerGroup;
  spec.group_size = 4;
  at::manual_seed(12);
  const at::Tensor w = at::randn({3, 10}), order = at::randperm(10, at::kLong);
  const mq::QuantizedTensor regrouped = mq::with_group_index(mq::quantize_min_max(w.index_select(1, order), spec), order);
  mq::QuantizedModel model;
  model.entries = {{"fc1.weight", at::Tensor(), regrouped}, {"fc2.weight", at::Tensor(), mq::quantize_min_max(w, spec)}};
  mq::test::ScratchDir dir("st-g-idx");
  format()->write(model, dir / "q.safetensors");
  {
    auto file = mq::safetensors::File::open(dir / "q.safetensors");
    ASSERT_NE(file->find("fc1.weight_g_idx"), nullptr);
    EXPECT_EQ(file->find("fc1.weight_g_idx")->dtype, "I32");
    EXPECT_EQ(file->find("fc1.weight_g_idx")->shape, (std::vector<int64_t>{10}));
    EXPECT_EQ(file->find("fc2.weight_g_idx"), nullptr);
    const nlohmann::json groups = nlohmann::json::parse(file->metadata().at("quantization_config"))["config_groups"];
    ASSERT_EQ(groups.size(), 2u);
    EXPECT_EQ(groups["group_0"]["targets"], nlohmann::json::array({"fc1"}));
    EXPECT_EQ(groups["group_0"]["weights"]["actorder"], "group");
    EXPECT_EQ(groups["group_1"]["targets"], nlohmann::json::array({"fc2"}));
    EXPECT_TRUE(groups["group_1"]["weights"]["actorder"].is_null());
  }
  for (const bool listing : {false, true}) {
    const mq::QuantizedModel back =
        listing ? format()->describe(dir / "q.safetensors") : format()->read_quantized(dir / "q.safetensors", mq::Origin::kUser);
    const mq::QuantizedTensor& b = *back.entries[0].quantized;
    ASSERT_TRUE(b.g_idx.defined());
    EXPECT_TRUE(at::equal(b.g_idx, regrouped.g_idx));
    EXPECT_EQ(b.nbytes(), regrouped.nbytes());
    if (!listing) EXPECT_TRUE(at::equal(b.dequantize(), regrouped.dequantize()));
    EXPECT_FALSE(back.entries[1].quantized->g_idx.defined());
  }

  std::vector<mq::safetensors::OutTensor> tensors;
  std::map<std::string, std::string> metadata;
  {
    auto file = mq::safetensors::File::open(dir / "q.safetensors");
    metadata = file->metadata();
    for (const auto& info : file->tensors()) tensors.push_back({info.name, file->tensor(info).clone()});
  }
  for (auto& t : tensors)
    if (t.name == "fc1.weight_g_idx") t.tensor.fill_(2);  // every column in group 2
  mq::safetensors::write(dir / "bad.safetensors", tensors, metadata);
  try {
    format()->read_quantized(dir / "bad.safetensors", mq::Origin::kUser);
    ADD_FAILURE() << "read";
  } catch (const mq::InputError& e) {
    EXPECT_TRUE(contains(e.what(), "'fc1.weight_g_idx': the group index (g_idx) does not give each group 4 columns"))
        << e.what();
  }
}

TEST(SafetensorsFormat, ReadsAShardedHuggingFaceDirectory) {
  mq::test::ScratchDir dir("st-hf");
  mq::test::write_hf_directory(dir.path());
  auto f = format();
  EXPECT_TRUE(f->can_read(dir.path()));
  EXPECT_TRUE(f->can_read(dir / "model.safetensors.index.json"));
  const mq::Model m = f->read(dir.path());
  std::vector<std::string> names;
  for (const auto& t : m.tensors) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight",
                                             "model.layers.0.mlp.down_proj.weight", "model.norm.weight",
                                             "lm_head.weight"}));
  EXPECT_EQ(m.sources.size(), 2u);
}

std::string index_error(const std::string& weight_map, const std::function<void(const fs::path&)>& setup = {}) {
  mq::test::ScratchDir dir("st-index");
  mq::test::write_hf_directory(dir.path());
  if (setup) setup(dir.path());
  mq::test::write_file(dir / "model.safetensors.index.json", "{\"weight_map\": " + weight_map + "}");
  try {
    format()->read(dir.path());
  } catch (const mq::InputError& e) {
    return e.what();
  }
  return "";
}

TEST(SafetensorsFormat, RefusesShardPathsThatEscapeTheModelDirectory) {
  EXPECT_TRUE(contains(index_error(R"({"a": "../model-00001-of-00002.safetensors"})"), "outside the model directory"));
  EXPECT_TRUE(contains(index_error(R"({"a": "/etc/passwd"})"), "outside the model directory"));
  const std::string link = index_error(R"({"a": "link.safetensors"})", [](const fs::path& d) {
    mq::test::write_safetensors(d.parent_path() / "foreign.safetensors", {{"a", at::ones({1})}});
    fs::create_symlink(d.parent_path() / "foreign.safetensors", d / "link.safetensors");
  });
  EXPECT_TRUE(contains(link, "outside the model directory")) << link;
}

TEST(SafetensorsFormat, RefusesMalformedIndexes) {
  EXPECT_TRUE(contains(index_error(R"({"a": "x.safetensors", "a": "y.safetensors"})"), "duplicate key 'a'"));
  EXPECT_TRUE(contains(index_error(R"({"a": 3})"), "is not a string"));
  EXPECT_TRUE(contains(index_error(R"({"missing": "model-00001-of-00002.safetensors"})"),
                       "lists 'missing' in shard 'model-00001-of-00002.safetensors', which does not hold it"));
  EXPECT_TRUE(contains(index_error(R"({"a": "absent.safetensors"})"), "cannot be opened"));
  EXPECT_TRUE(contains(index_error("[1"), "not valid UTF-8 JSON"));
}

TEST(SafetensorsFormat, HuggingFaceDirectoryInGivesOneOut) {
  mq::test::ScratchDir dir("st-hf-out");
  mq::test::write_hf_directory(dir / "in");
  // The same model in other formats, as many hub repositories ship it
  const std::vector<std::string> other_weights{"pytorch_model-00001-of-00001.bin", "pytorch_model.bin.index.json",
                                               "tf_model.h5", "flax_model.msgpack", "model.ckpt.index",
                                               "consolidated.00.pth"};
  for (const std::string& name : other_weights) mq::test::write_file(dir / "in" / name, "weights");
  mq::test::write_file(dir / "in" / "generation_config.json", "{}");
  auto f = format();
  const mq::Model m = f->read(dir / "in");
  mq::QuantSpec spec;
  mq::QuantizedModel q;
  for (const auto& t : m.tensors)
    q.entries.push_back({t.name, t.tensor, std::nullopt});
  auto [mn, mx] = mq::min_max(m.tensors[1].tensor, spec);
  q.entries[1] = {m.tensors[1].name, at::Tensor(), mq::quantize(m.tensors[1].tensor, mq::qparams_from_min_max(mn, mx, spec), spec)};
  q.metadata = m.metadata;
  f->write(q, dir / "out");
  EXPECT_TRUE(fs::exists(dir / "out" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "out" / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(dir / "out" / "generation_config.json"));
  for (const std::string& name : other_weights) EXPECT_FALSE(fs::exists(dir / "out" / name)) << name;
  const std::string config = mq::test::read_file(dir / "out" / "config.json");
  EXPECT_TRUE(contains(config, "\"quant_method\": \"compressed-tensors\"")) << config;
  EXPECT_TRUE(contains(config, "\"LlamaForCausalLM\"")) << config;
  const mq::QuantizedModel back = f->read_quantized(dir / "out", mq::Origin::kUser);
  EXPECT_TRUE(at::equal(back.entries[1].quantized->data, q.entries[1].quantized->data));
  EXPECT_EQ(back.metadata.count("mq.hf_dir"), 0u);  // no local paths in the artifact
}

TEST(SafetensorsFormat, HuggingFaceDirectoryOutIsShardedPastTheLimit) {
  mq::test::ScratchDir dir("st-hf-shards");
  mq::test::write_hf_directory(dir / "in");
  auto f = mq::test::make_plugin<mq::Format>({mq::test::opt("max_shard_bytes", mq::Value::integer(10000))});
  const mq::Model m = f->read(dir / "in");
  mq::QuantSpec spec;
  mq::QuantizedModel q;
  for (const auto& t : m.tensors) q.entries.push_back({t.name, t.tensor, std::nullopt});
  q.entries[1] = {m.tensors[1].name, at::Tensor(), mq::quantize_min_max(m.tensors[1].tensor, spec)};
  q.metadata = m.metadata;
  f->write(q, dir / "out");
  // 12800 | 2048 + 256 | 8192 + 128 | 12800 bytes: a tensor over the limit still fits
  // in a shard of its own, and no shard passes 10000 bytes otherwise.
  EXPECT_FALSE(fs::exists(dir / "out" / "model.safetensors"));
  for (const char* shard : {"model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
                            "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors"})
    EXPECT_TRUE(fs::exists(dir / "out" / shard)) << shard;
  const auto index = nlohmann::json::parse(mq::test::read_file(dir / "out" / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 12800 + 2048 + 256 + 8192 + 128 + 12800);
  EXPECT_EQ(index["weight_map"]["model.layers.0.mlp.up_proj.weight_scale"], "model-00002-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"].size(), 6u);
  EXPECT_TRUE(contains(mq::test::read_file(dir / "out" / "config.json"), "compressed-tensors"));

  const mq::QuantizedModel back = f->read_quantized(dir / "out", mq::Origin::kUser);
  ASSERT_EQ(back.entries.size(), 5u);
  EXPECT_TRUE(at::equal(back.entries[1].quantized->data, q.entries[1].quantized->data));
  EXPECT_TRUE(at::equal(back.entries[4].tensor, m.tensors[4].tensor));
  EXPECT_EQ(f->read_artifact(dir / "out", mq::Origin::kThisRun).tensors.size(), 6u);  // and it reads as a sharded checkpoint
}

// Quantized checkpoints of other tools, without our metadata, are refused as models to
// quantize: by the HF directory's quantization_config, the tensor names quantization
// libraries write, or integer weights.
TEST(SafetensorsFormat, ReadRefusesOtherToolsQuantizedCheckpoints) {
  mq::test::ScratchDir dir("st-foreign");
  const auto read_error = [&](const fs::path& path) {
    try {
      format()->read(path);
    } catch (const mq::InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::vector<std::pair<std::vector<mq::safetensors::OutTensor>, std::string>> cases = {
      {{{"fc.weight_packed", at::zeros({4, 1}, at::kInt)}, {"fc.weight_scale", at::ones({4, 1})}},
       "'fc.weight_packed' is a compressed-tensors name"},
      {{{"fc.qweight", at::zeros({1, 4}, at::kInt)}, {"fc.scales", at::ones({1, 4})}}, "'fc.qweight' is a GPTQ/AWQ name"},
      {{{"fc.bias", at::ones({4})}, {"fc.weight", at::zeros({4, 8}, at::kChar)}}, "'fc.weight' is int8"},
  };
  for (const auto& [tensors, why] : cases) {
    mq::safetensors::write(dir / "q.safetensors", tensors, {});
    const std::string error = read_error(dir / "q.safetensors");
    EXPECT_EQ(error, (dir / "q.safetensors").string() + ": is quantized already (" + why +
                         "; mq-pipeline inspect lists it): give the float model it was made from");
  }
  mq::safetensors::write(dir / "float.safetensors", {{"fc.weight", at::ones({4, 8})}, {"ids", at::ones({4}, at::kLong)}}, {});
  EXPECT_EQ(read_error(dir / "float.safetensors"), "");

  mq::test::write_hf_directory(dir / "hf");
  EXPECT_EQ(read_error(dir / "hf"), "");
  mq::test::write_file(dir / "hf" / "config.json", R"({"quantization_config": {"quant_method": "gptq", "bits": 4}})");
  EXPECT_TRUE(contains(read_error(dir / "hf"), "is quantized already (config.json has a quantization_config, "
                                               "quant_method 'gptq'"));
  // The same directory by the file it is read from; a safetensors file there that the
  // directory does not read is a model of its own.
  EXPECT_TRUE(contains(read_error(dir / "hf" / "model.safetensors.index.json"),
                       "is quantized already (config.json has a quantization_config"));
  EXPECT_EQ(read_error(dir / "hf" / "model-00002-of-00002.safetensors"), "");
  fs::remove(dir / "hf" / "model.safetensors.index.json");
  fs::rename(dir / "float.safetensors", dir / "hf" / "model.safetensors");
  EXPECT_TRUE(contains(read_error(dir / "hf" / "model.safetensors"),
                       "is quantized already (config.json has a quantization_config"));
}

// Dtypes LibTorch 1.13 lacks are read as their bytes and written back as they were: the
// file written streaming, and read back, says the same dtype and shape over the same
// bytes. A layer weight of such a dtype marks an FP8/FP4 checkpoint: quantized already.
TEST(SafetensorsFormat, PassesDtypesLibTorchLacksThroughAsBytes) {
  mq::test::ScratchDir dir("st-foreign-dtypes");
  const std::vector<mq::test::RawTensor> raw = {
      {"ids", "U16", {3}, std::string("\x01\x00\x02\x00\xff\xff", 6)},
      {"codes", "F4", {2, 3}, "\x12\x34\x56"},
      {"norm.weight", "F8_E4M3", {4}, "\x38\x40\xb8\x01"},
      {"big", "U64", {1}, "abcdefgh"}};
  std::vector<mq::test::RawTensor> with_weight = raw;
  with_weight.insert(with_weight.begin(), {"fc.weight", "F32", {1, 2}, std::string(8, '\0')});
  mq::test::write_safetensors(dir / "in.safetensors", with_weight);
  const mq::Model model = format()->read(dir / "in.safetensors");
  ASSERT_EQ(model.foreign.size(), raw.size());
  std::unique_ptr<mq::EntryWriter> out = format()->stream(model, dir / "out.safetensors");
  for (const mq::NamedTensor& t : model.tensors) out->add({t.name, t.tensor, std::nullopt});
  out->finish(mq::QuantizedModel());

  const auto file = mq::safetensors::File::open(dir / "out.safetensors");
  const mq::QuantizedModel back = format()->read_quantized(dir / "out.safetensors", mq::Origin::kUser);
  for (const mq::test::RawTensor& r : raw) {
    const mq::safetensors::TensorInfo* info = file->find(r.name);
    ASSERT_TRUE(info) << r.name;
    EXPECT_EQ(info->dtype, r.dtype);
    EXPECT_EQ(info->shape, r.shape);
    const at::Tensor bytes = back.find(r.name)->tensor;
    EXPECT_EQ(bytes.scalar_type(), at::kByte);
    EXPECT_EQ(std::string(static_cast<const char*>(bytes.data_ptr()), bytes.nbytes()), r.bytes)
        << r.name;
    EXPECT_EQ(back.foreign.at(r.name).dtype, r.dtype);
    EXPECT_EQ(back.foreign.at(r.name).shape, r.shape);
  }
  EXPECT_EQ(file->find("fc.weight")->dtype, "F32");

  mq::safetensors::Writer writer(dir / "bad.safetensors");
  const mq::ForeignDType u16{"U16", {4}};
  EXPECT_THROW(writer.add("ids", at::zeros({6}, at::kByte), &u16),
               mq::InputError);  // 8 bytes, not 6

  with_weight.push_back({"fc2.weight", "F8_E4M3", {2, 2}, "\x38\x40\xb8\x01"});
  with_weight.push_back({"fc1.weight", "F8_E4M3", {2, 2}, "\x38\x40\xb8\x01"});  // named first, lies after
  mq::test::write_safetensors(dir / "fp8.safetensors", with_weight);
  try {
    format()->read(dir / "fp8.safetensors");
    ADD_FAILURE() << "an FP8 checkpoint read as a model to quantize";
  } catch (const mq::InputError& e) {
    EXPECT_TRUE(contains(e.what(), "is quantized already ('fc2.weight' is F8_E4M3;")) << e.what();
  }
}

TEST(SafetensorsFormat, MaxShardBytesMustBePositive) {
  EXPECT_THROW(mq::test::make_plugin<mq::Format>({mq::test::opt("max_shard_bytes", mq::Value::integer(0))}),
               mq::RecipeError);
}

TEST(SafetensorsFormat, ReadInfersLinearLayersFromNames) {
  mq::test::ScratchDir dir("st-layers");
  mq::safetensors::write(dir / "m.safetensors",
                         {{"fc.weight", at::ones({2, 2})}, {"fc.bias", at::ones({2})},
                          {"tok_embeddings.weight", at::ones({5, 2})}, {"norm.weight", at::ones({2})}},
                         {});
  const mq::Model m = format()->read(dir / "m.safetensors");
  ASSERT_EQ(m.layers.size(), 3u);
  EXPECT_EQ(m.layers[0].kind, mq::LayerKind::kLinear);
  EXPECT_EQ(m.layers[0].bias, "fc.bias");
  EXPECT_EQ(m.layers[1].kind, mq::LayerKind::kEmbedding);
  EXPECT_EQ(m.layers[2].kind, mq::LayerKind::kLayerNorm);
}

}  // namespace
