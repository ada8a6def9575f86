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

}  // namespace
