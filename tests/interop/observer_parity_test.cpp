// mq's observer plugins against torch.ao.quantization's observers on the cases that
// observer_parity.py computed with PyTorch: scales equal to float precision, zero
// points equal.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "mq/format.hpp"
#include "mq/observer.hpp"
#include "mq/pipeline.hpp"
#include "test_support.hpp"

namespace {

template <class T>
std::unique_ptr<T> create(const std::string& name) {
  for (const mq::PluginInfo& p : mq::discover_plugins({}))
    if (p.name == name) {
      auto plugin = p.descriptor->factory->create(mq::resolve_options(*p.descriptor, mq::Value::map()));
      return std::unique_ptr<T>(dynamic_cast<T*>(plugin.release()));
    }
  return nullptr;
}

TEST(ObserverParity, MatchesTorchAoQuantizationObservers) {
  const char* path = std::getenv("MQ_PARITY_FILE");
  ASSERT_NE(path, nullptr) << "MQ_PARITY_FILE is not set (observer_parity.py writes it)";
  auto format = create<mq::Format>("safetensors");
  ASSERT_NE(format, nullptr);
  const mq::Model file = format->read(path);
  const auto cases = nlohmann::json::parse(file.metadata.at("cases"));
  ASSERT_GT(cases.size(), 100u);
  int checked = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    SCOPED_TRACE("case " + std::to_string(i) + ": " + c.dump());
    mq::QuantSpec spec;
    spec.dtype = c["dtype"] == "int8" ? mq::DType::kInt8 : mq::DType::kUInt8;
    spec.granularity = c["per_channel"] ? mq::Granularity::kPerChannel : mq::Granularity::kPerTensor;
    spec.scheme = c["scheme"] == "symmetric" ? mq::Scheme::kSymmetric : mq::Scheme::kAsymmetric;
    spec.reduce_range = c["reduce_range"];
    auto observer = create<mq::Observer>(c["observer"]);
    ASSERT_NE(observer, nullptr);
    const std::string prefix = std::to_string(i) + ".";
    for (int b = 0; b < c["batches"].get<int>(); ++b) observer->observe(*file.find(prefix + "b" + std::to_string(b)), spec);
    const mq::QParams qp = observer->qparams(spec);
    const at::Tensor& scale = *file.find(prefix + "scale");
    const at::Tensor& zero_point = *file.find(prefix + "zero_point");
    ASSERT_EQ(qp.scale.numel(), scale.numel());
    EXPECT_TRUE(at::allclose(qp.scale.reshape(-1), scale, /*rtol=*/1e-6, /*atol=*/0))
        << qp.scale << " vs " << scale;
    EXPECT_TRUE(at::equal(qp.zero_point.reshape(-1).to(at::kInt), zero_point))
        << qp.zero_point << " vs " << zero_point;
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(cases.size()));
}

}  // namespace
