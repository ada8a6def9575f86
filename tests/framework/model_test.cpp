#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "mq/model.hpp"

namespace {

mq::Model model_of(const std::vector<std::string>& names) {
  mq::Model model;
  for (size_t i = 0; i < names.size(); ++i) model.tensors.push_back({names[i], at::full({1}, double(i))});
  return model;
}

TEST(TensorIndex, FindsWhatModelFindFinds) {
  const mq::Model model = model_of({"fc.weight", "fc.bias", "norm.weight", "fc.bias"});
  const mq::TensorIndex index(model);
  for (const std::string name : {"fc.weight", "fc.bias", "norm.weight", "absent", ""})
    EXPECT_EQ(index.find(name), model.find(name)) << name;
  EXPECT_EQ(index.find("fc.bias"), &model.tensors[1].tensor);  // the first of two
}

TEST(LayersFromNames, PairsEachWeightWithItsBias) {
  mq::Model model = model_of({"fc.weight", "norm.weight", "fc.bias", "head.weight"});
  model.tensors[0].tensor = at::zeros({2, 2});
  const std::vector<mq::Layer> layers = mq::layers_from_names(model);
  ASSERT_EQ(layers.size(), 3u);
  EXPECT_EQ(layers[0].name, "fc");
  EXPECT_EQ(layers[0].kind, mq::LayerKind::kLinear);
  EXPECT_EQ(layers[0].bias, "fc.bias");
  EXPECT_EQ(layers[1].kind, mq::LayerKind::kLayerNorm);
  EXPECT_EQ(layers[1].bias, "");
  EXPECT_EQ(layers[2].bias, "");
}

// PyTorch's recurrent weights name their layer and gate; the gates tell LSTM (4) from
// GRU (3), and a missing layer suffix a cell.
TEST(LayersFromNames, RecurrentWeightsAreLstmAndGruLayers) {
  mq::Model model;
  model.tensors = {{"rnn.weight_ih_l0", at::zeros({32, 5})},        {"rnn.weight_hh_l0", at::zeros({32, 8})},
                   {"rnn.bias_ih_l0", at::zeros({32})},             {"rnn.weight_ih_l0_reverse", at::zeros({32, 5})},
                   {"rnn.weight_hh_l0_reverse", at::zeros({32, 8})}, {"gru.weight_ih", at::zeros({12, 3})},
                   {"gru.weight_hh", at::zeros({12, 4})},           {"odd.weight_ih_lx", at::zeros({4, 4})}};
  const std::vector<mq::Layer> layers = mq::layers_from_names(model);
  ASSERT_EQ(layers.size(), 6u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(layers[i].name, "rnn");
    EXPECT_EQ(layers[i].kind, mq::LayerKind::kLSTM);
  }
  EXPECT_EQ(layers[0].weight, "rnn.weight_ih_l0");
  EXPECT_EQ(layers[0].bias, "rnn.bias_ih_l0");
  EXPECT_EQ(layers[1].bias, "");  // rnn.bias_hh_l0 is not there
  EXPECT_EQ(layers[2].weight, "rnn.weight_ih_l0_reverse");
  EXPECT_EQ(layers[4].kind, mq::LayerKind::kGRUCell);
  EXPECT_EQ(layers[5].name, "gru");
}

}  // namespace
