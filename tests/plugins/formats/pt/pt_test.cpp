// The pt format at its interface: static activation qparams survive write ->
// read_quantized, in a state dict and in TorchScript (quantized::linear and conv2d
// modules); calibration records what the layers of a TorchScript model see.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/script.h>

#include <fstream>
#include <functional>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/format.hpp"
#include "state_dict_reader.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;

mq::QuantSpec int8_symmetric() {
  mq::QuantSpec s;
  s.dtype = mq::DType::kInt8;
  s.scheme = mq::Scheme::kSymmetric;
  s.granularity = mq::Granularity::kPerChannel;
  return s;
}

// A static model of one Linear layer "fc": int8 weight, input and output qparams.
mq::QuantizedModel static_model(const at::Tensor& weight, const at::Tensor& bias) {
  mq::QuantizedModel model;
  model.mode = "static";
  model.entries = {{"fc.weight", at::Tensor(), mq::quantize_min_max(weight, int8_symmetric())},
                   {"fc.bias", bias, std::nullopt}};
  mq::QuantSpec activation;
  activation.dtype = mq::DType::kInt8;
  activation.granularity = mq::Granularity::kPerTensor;
  model.activation_spec = activation;
  model.activation_qparams["fc"] = {at::full({1}, 0.03125f), at::zeros({1}, at::kInt)};
  model.output_qparams["fc"] = {at::full({1}, 0.0625f), at::full({1}, 120, at::kInt)};
  return model;
}

// static_model() of `model`'s `layer`, the model's other tensors kept, written from it.
mq::QuantizedModel static_layer_of(const mq::Model& model, const std::string& layer) {
  mq::QuantizedModel q = static_model(*model.find(layer + ".weight"), *model.find(layer + ".bias"));
  for (auto& e : q.entries) e.name = layer + "." + e.name.substr(3);
  q.activation_qparams = {{layer, q.activation_qparams.at("fc")}};
  q.output_qparams = {{layer, q.output_qparams.at("fc")}};
  for (const mq::NamedTensor& t : model.tensors)
    if (t.name.rfind(layer + ".", 0) != 0) q.entries.push_back({t.name, t.tensor, std::nullopt});
  q.source = model.runnable;
  return q;
}

void expect_static_qparams(const mq::QuantizedModel& back) {
  EXPECT_EQ(back.mode, "static");
  ASSERT_TRUE(back.activation_spec.has_value());
  EXPECT_EQ(back.activation_spec->to_string(), "int8 per_tensor symmetric");
  ASSERT_EQ(back.activation_qparams.count("fc"), 1u);
  EXPECT_EQ(back.activation_qparams.at("fc").scale.item<float>(), 0.03125f);
  EXPECT_EQ(back.activation_qparams.at("fc").zero_point.item<int>(), 0);
  ASSERT_EQ(back.output_qparams.count("fc"), 1u);
  EXPECT_EQ(back.output_qparams.at("fc").scale.item<float>(), 0.0625f);
  EXPECT_EQ(back.output_qparams.at("fc").zero_point.item<int>(), 120);
}

TEST(PtFormat, StateDictKeepsStaticActivationQParams) {
  at::manual_seed(1);
  const mq::QuantizedModel model = static_model(at::randn({8, 16}), at::randn({8}));
  mq::test::ScratchDir dir("pt-static-state");
  auto format = mq::test::make_plugin<mq::Format>();
  format->write(model, dir / "m.pt");
  const mq::QuantizedModel back = format->read_quantized(dir / "m.pt", mq::Origin::kUser);
  expect_static_qparams(back);
  ASSERT_EQ(back.entries.size(), 2u);  // the qparams are not model entries
  EXPECT_TRUE(at::equal(back.entries[0].quantized->data, model.entries[0].quantized->data));

  // Edited by hand: a scale of two values is an input error naming the file.
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("fc.input_scale", at::ones({2}));
  dict.insert("fc.input_zero_point", at::zeros({1}, at::kChar));
  dict.insert("__metadata__", std::string(R"({"mq.mode": "static", "mq.activation_spec": {"dtype": "int8",
      "granularity": "per_tensor", "axis": 0, "group_size": 128, "scheme": "symmetric", "reduce_range": false}})"));
  const std::vector<char> bytes = torch::jit::pickle_save(dict);
  std::ofstream(dir / "bad.pt", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  try {
    format->read_quantized(dir / "bad.pt", mq::Origin::kUser);
    ADD_FAILURE() << "read";
  } catch (const mq::InputError& e) {
    EXPECT_EQ(std::string(e.what()), (dir / "bad.pt").string() + ": 'fc.input_scale' holds 2 values, not one");
  }
}

// A TorchScript source: the Linear becomes a module that quantizes its input with the
// calibrated qparams and runs quantized::linear; it reads back with the same qparams,
// and runs like the float layer within the int8 error.
TEST(PtFormat, TorchScriptStaticLinearRunsAndReadsBack) {
  mq::test::ScratchDir dir("pt-static-ts");
  const std::string source = MQ_SOURCE_DIR "/configs/models/mlp.pt";
  auto format = mq::test::make_plugin<mq::Format>({mq::test::opt("trust_torchscript", mq::Value::boolean(true))});
  const mq::Model model = format->read(source);
  const at::Tensor weight = *model.find("fc1.weight");
  const at::Tensor bias = *model.find("fc1.bias");
  const mq::QuantizedModel q = static_layer_of(model, "fc1");
  format->write(q, dir / "m.pt");

  mq::QuantizedModel back = format->read_quantized(dir / "m.pt", mq::Origin::kUser);
  back.activation_qparams = {{"fc", back.activation_qparams.at("fc1")}};
  back.output_qparams = {{"fc", back.output_qparams.at("fc1")}};
  expect_static_qparams(back);

  torch::jit::Module m = torch::jit::load((dir / "m.pt").string());
  torch::jit::Module fc1 = m.attr("fc1").toModule();
  const at::Tensor x = at::rand({4, weight.size(1)}) * 2 - 1;  // inside the input range of 4
  const at::Tensor y = fc1.forward({x}).toTensor();
  const at::Tensor expected = at::linear(x, weight, bias).clamp(-120 * 0.0625, 135 * 0.0625);
  EXPECT_LT((y - expected).abs().max().item<float>(), 0.1f);
}

// What a read of our own TorchScript artifact may do is what the caller says of its
// origin, not what the instance did before: writing it trusts nothing afterwards, and
// read() refuses it as an input, trusted or not; read_artifact() runs it.
TEST(PtFormat, ReadingBackFollowsTheOriginGiven) {
  mq::test::ScratchDir dir("pt-origin");
  const std::string source = MQ_SOURCE_DIR "/configs/models/mlp.pt";
  auto trusted = mq::test::make_plugin<mq::Format>({mq::test::opt("trust_torchscript", mq::Value::boolean(true))});
  const mq::Model model = trusted->read(source);
  auto writer = mq::test::make_plugin<mq::Format>();
  const fs::path out = dir / "m.pt";
  writer->write(static_layer_of(model, "fc1"), out);

  const auto error = [](const std::function<void()>& read) -> std::string {
    try {
      read();
    } catch (const mq::InputError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error([&] { writer->read_quantized(out, mq::Origin::kUser); }).find("--trust-torchscript"), std::string::npos);
  EXPECT_NE(error([&] { writer->read(out); }).find("--trust-torchscript"), std::string::npos);
  EXPECT_NE(error([&] { trusted->read(out); }).find("is quantized already"), std::string::npos);
  EXPECT_EQ(writer->read_quantized(out, mq::Origin::kThisRun).activation_qparams.count("fc1"), 1u);
  const mq::Model artifact = writer->read_artifact(out, mq::Origin::kThisRun);
  ASSERT_TRUE(artifact.runnable);
  EXPECT_EQ(artifact.runnable->forward(at::rand({2, model.find("fc1.weight")->size(1)})).size(0), 2);
  EXPECT_NE(error([&] { writer->read_artifact(out, mq::Origin::kUser); }).find("--trust-torchscript"), std::string::npos);
}

// The CNN's conv1 as a static layer: a quantized::conv2d module with the float layer's
// geometry, read back with its 4-D weight bit for bit and its qparams.
TEST(PtFormat, TorchScriptStaticConvRunsAndReadsBack) {
  mq::test::ScratchDir dir("pt-static-conv");
  auto format = mq::test::make_plugin<mq::Format>({mq::test::opt("trust_torchscript", mq::Value::boolean(true))});
  const mq::Model model = format->read(MQ_SOURCE_DIR "/configs/models/cnn.pt");
  const at::Tensor weight = *model.find("conv1.weight");
  const at::Tensor bias = *model.find("conv1.bias");
  const mq::QuantizedModel q = static_layer_of(model, "conv1");
  format->write(q, dir / "m.pt");

  const mq::QuantizedModel back = format->read_quantized(dir / "m.pt", mq::Origin::kUser);
  ASSERT_EQ(back.entries.at(0).name, "conv1.weight");
  ASSERT_TRUE(back.entries[0].quantized.has_value());
  EXPECT_EQ(back.entries[0].quantized->shape, weight.sizes().vec());
  EXPECT_TRUE(at::equal(back.entries[0].quantized->data, q.entries[0].quantized->data));
  EXPECT_TRUE(at::equal(back.entries[0].quantized->qparams.scale, q.entries[0].quantized->qparams.scale));
  EXPECT_EQ(back.activation_qparams.at("conv1").scale.item<float>(), 0.03125f);
  EXPECT_EQ(back.output_qparams.at("conv1").zero_point.item<int>(), 120);

  torch::jit::Module conv1 = torch::jit::load((dir / "m.pt").string()).attr("conv1").toModule();
  const at::Tensor x = at::rand({2, 3, 8, 8}) * 2 - 1;
  const at::Tensor y = conv1.forward({x}).toTensor();
  const at::Tensor expected = at::conv2d(x, weight, bias, 1, 1).clamp(-120 * 0.0625, 135 * 0.0625);
  EXPECT_LT((y - expected).abs().max().item<float>(), 0.1f);
}

// Calibration sees each layer's input and output as the float model computes them,
// batch by batch in order.
TEST(PtFormat, RecordLayersGivesEachLayersInputAndOutputPerBatch) {
  auto format = mq::test::make_plugin<mq::Format>({mq::test::opt("trust_torchscript", mq::Value::boolean(true))});
  const mq::Model model = format->read(MQ_SOURCE_DIR "/configs/models/cnn.pt");
  const std::vector<at::Tensor> batches{at::randn({2, 3, 8, 8}), at::randn({3, 3, 8, 8})};
  std::vector<size_t> visited;
  model.runnable->record_layers(batches, {"conv1", "fc"}, [&](size_t b, const auto& seen) {
    visited.push_back(b);
    ASSERT_EQ(seen.size(), 2u);
    const mq::Runnable::Activity& conv1 = seen.at("conv1");
    const at::Tensor out = at::conv2d(batches[b], *model.find("conv1.weight"), *model.find("conv1.bias"), 1, 1);
    EXPECT_TRUE(at::equal(conv1.input, batches[b].reshape({-1, 8})));
    EXPECT_TRUE(at::allclose(conv1.output, out.reshape({-1, 8})));
    const mq::Runnable::Activity& fc = seen.at("fc");
    EXPECT_EQ(fc.input.sizes(), (at::IntArrayRef{batches[b].size(0), 256}));
    EXPECT_TRUE(at::allclose(fc.output, model.runnable->forward(batches[b])));
  });
  EXPECT_EQ(visited, (std::vector<size_t>{0, 1}));
}

// `dict` saved as a state dict and read back: the InputError's message ("" if it read).
std::string read_quantized_error(const c10::impl::GenericDict& dict) {
  const std::vector<char> bytes = torch::jit::pickle_save(dict);
  mq::test::ScratchDir dir("pt-edited");
  std::ofstream(dir / "m.pt", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  try {
    mq::test::make_plugin<mq::Format>()->read_quantized(dir / "m.pt", mq::Origin::kUser);
  } catch (const mq::InputError& e) {
    EXPECT_EQ(std::string(e.what()).rfind((dir / "m.pt").string() + ": ", 0), 0u) << e.what();  // names the file
    return e.what();
  }
  ADD_FAILURE() << "read";
  return "";
}

// A state dict of ours edited by hand: per-group scales that do not fit the tensor are
// a one-line input error naming the file.
TEST(PtFormat, StateDictRefusesScalesThatDoNotFitTheTensor) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("w", at::zeros({4, 8}, at::kChar));
  dict.insert("w_scale", at::ones({4, 1}));  // groups of 4: two a row, eight in all
  dict.insert("w_zero_point", at::zeros({4, 1}, at::kChar));
  dict.insert("__metadata__", std::string(R"({"mq.specs": {"w": {"dtype": "int8", "granularity": "per_group",
      "axis": 0, "group_size": 4, "scheme": "symmetric", "reduce_range": false}}})"));
  const std::string m = read_quantized_error(dict);
  EXPECT_NE(m.find(".pt: 'w_scale' holds 4 values; int8 per_group(4) symmetric"), std::string::npos) << m;
}

// A group index (GPTQ's actorder "group") is kept in a state dict as NAME_g_idx and
// read back the same; one that does not give each group its columns is refused.
TEST(PtFormat, StateDictKeepsAGroupIndex) {
  mq::QuantSpec spec;
  spec.dtype = mq::DType::kInt4;
  spec.granularity = mq::Granularity::kPerGroup;
  spec.group_size = 4;
  at::manual_seed(13);
  const at::Tensor w = at::randn({3, 8}), order = at::randperm(8, at::kLong);
  mq::QuantizedModel model;
  model.entries = {
      {"fc.weight", at::Tensor(), mq::with_group_index(mq::quantize_min_max(w.index_select(1, order), spec), order)}};
  mq::test::ScratchDir dir("pt-g-idx");
  auto format = mq::test::make_plugin<mq::Format>();
  format->write(model, dir / "m.pt");
  const mq::QuantizedModel back = format->read_quantized(dir / "m.pt", mq::Origin::kUser);
  ASSERT_TRUE(back.entries[0].quantized->g_idx.defined());
  EXPECT_TRUE(at::equal(back.entries[0].quantized->dequantize(), model.entries[0].quantized->dequantize()));

  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("w", at::zeros({2, 8}, at::kChar));
  dict.insert("w_scale", at::ones({2, 2}));
  dict.insert("w_zero_point", at::zeros({2, 2}, at::kChar));
  dict.insert("w_g_idx", at::tensor({0, 1, 0, 1, 0, 1, 0, 2}, at::kInt));
  dict.insert("__metadata__", std::string(R"({"mq.specs": {"w": {"dtype": "int8", "granularity": "per_group",
      "axis": 0, "group_size": 4, "scheme": "symmetric", "reduce_range": false}}})"));
  const std::string m = read_quantized_error(dict);
  EXPECT_NE(m.find(".pt: 'w_g_idx': the group index (g_idx) does not give each group 4 columns"), std::string::npos) << m;
}

// Tensor names go into safetensors headers and JSON reports: a key that is not UTF-8
// is an input error, in read_quantized as in model input (tests/interop/check_pt.py
// saves such a state dict from Python).
TEST(PtFormat, StateDictKeysMustBeUtf8) {
  for (const char* bad : {"w\xff", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82"})
    EXPECT_FALSE(mq::pt::valid_utf8(bad)) << bad;
  for (const char* good : {"", "fc1.weight", "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"})
    EXPECT_TRUE(mq::pt::valid_utf8(good)) << good;
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("fc\xff.weight", at::zeros({4, 8}));
  EXPECT_NE(read_quantized_error(dict).find(": cannot read the state dict: a string is not UTF-8"), std::string::npos);
}

// A model that returns several tensors runs for the validators as all of them,
// flattened in order; one that returns none is an input error.
TEST(PtFormat, ForwardOfSeveralOutputsIsTheirTensorsInOrder) {
  mq::test::ScratchDir dir("pt-tuple");
  torch::jit::Module several("Several");
  several.define("def forward(self, x: Tensor) -> Tuple[Tensor, List[Tensor], Dict[str, Tensor], int]:\n"
                 "    return (x * 2, [x + 1], {'a': x}, 3)\n");
  several.save((dir / "several.pt").string());
  torch::jit::Module none("Scalar");
  none.define("def forward(self, x: Tensor) -> int:\n    return 3\n");
  none.save((dir / "none.pt").string());
  auto format = mq::test::make_plugin<mq::Format>({mq::test::opt("trust_torchscript", mq::Value::boolean(true))});
  const at::Tensor x = at::randn({2, 3});
  const at::Tensor y = format->read(dir / "several.pt").runnable->forward(x);
  EXPECT_TRUE(at::equal(y, at::cat({(x * 2).reshape(-1), (x + 1).reshape(-1), x.reshape(-1)})));
  try {
    format->read(dir / "none.pt").runnable->forward(x);
    ADD_FAILURE() << "ran";
  } catch (const mq::InputError& e) {
    EXPECT_EQ(std::string(e.what()), "the model's forward returns Int holding no tensor");
  }
}

// A cast entry stored as another dtype than its spec's is an input error too.
TEST(PtFormat, StateDictRefusesACastStoredAsAnotherDtype) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("w", at::zeros({4, 8}));
  dict.insert("__metadata__", std::string(R"({"mq.specs": {"w": {"dtype": "fp16", "granularity": "per_tensor",
      "axis": 0, "group_size": 128, "scheme": "symmetric", "reduce_range": false}}})"));
  const std::string m = read_quantized_error(dict);
  EXPECT_NE(m.find(".pt: entry 'w' is stored as Float, not as fp16"), std::string::npos) << m;
}

// Another tool's quantized state dict (GPTQ names, integer weights) is refused as a
// model to quantize, as safetensors files are.
TEST(PtFormat, StateDictOfAnotherToolsQuantizedModelIsRefused) {
  mq::test::ScratchDir dir("pt-foreign");
  auto format = mq::test::make_plugin<mq::Format>();
  const std::vector<std::pair<std::vector<mq::QuantizedEntry>, std::string>> cases = {
      {{{"fc.qweight", at::zeros({2, 8}, at::kInt), std::nullopt}, {"fc.scales", at::ones({1, 8}), std::nullopt}},
       "'fc.qweight' is a GPTQ/AWQ name"},
      {{{"fc.weight", at::zeros({8, 8}, at::kChar), std::nullopt}}, "'fc.weight' is int8"}};
  for (const auto& [entries, why] : cases) {
    mq::QuantizedModel model;
    model.entries = entries;
    format->write(model, dir / "q.pt");
    try {
      format->read(dir / "q.pt");
      ADD_FAILURE() << why;
    } catch (const mq::InputError& e) {
      EXPECT_NE(std::string(e.what()).find(": is quantized already (" + why + ";"), std::string::npos) << e.what();
    }
  }
}

// `tensors` saved as a state dict at `path`, as torch.save would.
void save_state_dict(const fs::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [name, t] : tensors) dict.insert(name, t);
  const std::vector<char> bytes = torch::jit::pickle_save(dict);
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// An HF model directory saved without safetensors: pytorch_model.bin shards and their
// index are read as one model, whose metadata names the directory (so that the
// safetensors format writes an HF directory back); each index error names the index.
TEST(PtFormat, HuggingFaceDirectoryOfBinShardsIsOneModel) {
  mq::test::ScratchDir dir("pt-hf-bin");
  const at::Tensor a = at::randn({4, 8}), b = at::randn({8, 4}), bias = at::randn({8});
  save_state_dict(dir / "pytorch_model-00001-of-00002.bin", {{"a.weight", a}, {"unlisted", at::zeros({2})}});
  save_state_dict(dir / "pytorch_model-00002-of-00002.bin", {{"b.weight", b}, {"b.bias", bias}});
  const auto index = [&](const std::string& weight_map) {
    mq::test::write_file(dir / "pytorch_model.bin.index.json", R"({"metadata": {}, "weight_map": {)" + weight_map + "}}");
  };
  index(R"("b.bias": "pytorch_model-00002-of-00002.bin", "a.weight": "pytorch_model-00001-of-00002.bin",
           "b.weight": "pytorch_model-00002-of-00002.bin")");
  mq::test::write_file(dir / "config.json", R"({"architectures": ["LlamaForCausalLM"]})");
  auto format = mq::test::make_plugin<mq::Format>();
  ASSERT_TRUE(format->can_read(dir.path()));
  ASSERT_TRUE(format->can_read(dir / "pytorch_model.bin.index.json"));
  const mq::Model m = format->read(dir.path());
  ASSERT_EQ(m.tensors.size(), 3u);
  EXPECT_EQ(m.tensors[0].name, "a.weight");
  EXPECT_EQ(m.tensors[1].name, "b.weight");
  EXPECT_EQ(m.tensors[2].name, "b.bias");
  EXPECT_TRUE(at::equal(m.tensors[0].tensor, a) && at::equal(m.tensors[1].tensor, b) && at::equal(m.tensors[2].tensor, bias));
  EXPECT_EQ(m.sources.size(), 2u);
  EXPECT_EQ(m.metadata.at(mq::kHfDirectoryKey), fs::absolute(dir.path()).lexically_normal().string());
  EXPECT_EQ(format->read_quantized(dir.path(), mq::Origin::kUser).entries.size(), 3u);  // what inspect lists
  mq::QuantizedModel copy;
  for (const mq::NamedTensor& t : m.tensors) copy.entries.push_back({t.name, t.tensor, std::nullopt});
  copy.metadata = m.metadata;
  format->write(copy, dir / "out.pt");
  EXPECT_EQ(format->read_quantized(dir / "out.pt", mq::Origin::kUser).metadata.count(mq::kHfDirectoryKey), 0u);  // no local paths

  const auto error = [&] {
    try {
      format->read(dir.path());
    } catch (const mq::InputError& e) {
      return std::string(e.what());
    }
    return std::string("read");
  };
  index(R"("a.weight": "pytorch_model-00002-of-00002.bin")");
  EXPECT_EQ(error(), (dir / "pytorch_model.bin.index.json").string() +
                         ": lists 'a.weight' in shard 'pytorch_model-00002-of-00002.bin', which does not hold it");
  index(R"("a.weight": "../pytorch_model-00001-of-00002.bin")");
  EXPECT_NE(error().find("shard '../pytorch_model-00001-of-00002.bin' is outside the model directory"), std::string::npos);
  index("");
  EXPECT_NE(error().find("invalid index: no weight_map object listing tensors"), std::string::npos);
  fs::remove(dir / "pytorch_model.bin.index.json");
  EXPECT_FALSE(format->can_read(dir.path()));  // shards without their index
  save_state_dict(dir / "pytorch_model.bin", {{"a.weight", a}});
  ASSERT_TRUE(format->can_read(dir.path()));
  EXPECT_EQ(format->read(dir.path()).tensors.size(), 1u);
  mq::test::write_file(dir / "config.json", R"({"quantization_config": {"quant_method": "gptq"}})");
  EXPECT_NE(error().find(": is quantized already (config.json has a quantization_config, quant_method 'gptq';"),
            std::string::npos);
  mq::test::write_file(dir / "config.json", "{}");
  mq::test::write_file(dir / "model.safetensors", "");
  EXPECT_FALSE(format->can_read(dir.path()));  // the safetensors format's, as transformers prefers it
  EXPECT_EQ(format->read(dir.path()).tensors.size(), 1u);  // unless the recipe says model.format: pt
}

// The file /proc/self/maps says holds `address` in this process ("" for none).
std::string mapped_file(const void* address) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    uintptr_t begin = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &begin, &end) != 2) continue;
    const auto a = reinterpret_cast<uintptr_t>(address);
    if (a >= begin && a < end) return line.find('/') == std::string::npos ? "" : line.substr(line.find('/'));
  }
  return "";
}

// A state dict's tensors lie in the file, mapped, not read into memory (torch.save
// stores them uncompressed and aligned); one that is a part of its storage is a copy.
TEST(PtFormat, StateDictTensorsAreTheMappedFile) {
  mq::test::ScratchDir dir("pt-mapped");
  const at::Tensor w = at::randn({64, 64}), big = at::randn({1024});
  save_state_dict(dir / "m.pt", {{"w", w}, {"part", big.slice(0, 0, 16)}});
  const std::vector<mq::NamedTensor> read = mq::pt::read_state_dict(dir / "m.pt");
  ASSERT_EQ(read.size(), 2u);
  EXPECT_TRUE(at::equal(read[0].tensor, w));
  EXPECT_EQ(mapped_file(read[0].tensor.data_ptr()), fs::canonical(dir / "m.pt").string());
  EXPECT_TRUE(at::equal(read[1].tensor, big.slice(0, 0, 16)));
  EXPECT_EQ(mapped_file(read[1].tensor.data_ptr()), "");
}

// A model that changes its input in place changes a copy: the caller's batch (which
// may lie in a read-only mapped calibration file) stays as it was.
TEST(PtFormat, ForwardLeavesTheInputAsItWas) {
  mq::test::ScratchDir dir("pt-in-place");
  torch::jit::Module m("InPlace");
  m.register_module("fc", torch::jit::Module("Fc"));
  m.define("def forward(self, x: Tensor) -> Tensor:\n    x.mul_(2.0)\n    return x + 1\n");
  m.save((dir / "m.pt").string());
  auto format = mq::test::make_plugin<mq::Format>({mq::test::opt("trust_torchscript", mq::Value::boolean(true))});
  const mq::Model model = format->read(dir / "m.pt");
  const at::Tensor x = at::ones({2, 3}), before = x.clone();
  EXPECT_TRUE(at::equal(model.runnable->forward(x), at::full({2, 3}, 3.0f)));
  EXPECT_TRUE(at::equal(x, before));
  model.runnable->record_layers({x}, {}, [](size_t, const auto&) {});
  EXPECT_TRUE(at::equal(x, before));
}

}  // namespace
