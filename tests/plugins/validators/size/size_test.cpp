#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "mq/validator.hpp"
#include "test_support.hpp"

namespace {

using mq::test::opt;

class NoFormat final : public mq::Format {
 public:
  bool can_read(const std::filesystem::path&) const override { return false; }
  mq::Model read(const std::filesystem::path&) override { return {}; }
  void write(const mq::QuantizedModel&, const std::filesystem::path&) override {}
  mq::QuantizedModel read_quantized(const std::filesystem::path&, mq::Origin) override { return {}; }
};

struct Fixture {
  mq::Model original;
  mq::QuantizedModel quantized;
  Fixture() {
    original.tensors = {{"w", at::zeros({100, 100})}, {"big.bias", at::zeros({1000})}};
    mq::QuantizedTensor q;
    q.data = at::zeros({100, 100}, at::kChar);
    q.qparams = {at::ones({100}), at::zeros({100}, at::kInt)};
    q.shape = {100, 100};
    quantized.entries = {{"w", at::Tensor(), q}, {"big.bias", at::zeros({1000}), std::nullopt}};
  }
};

mq::Check validate(double min_ratio, const std::filesystem::path& file) {
  Fixture f;
  NoFormat format;
  auto v = mq::test::make_plugin<mq::Validator>({opt("min_ratio", mq::Value::floating(min_ratio))});
  return v->validate({f.original, f.quantized, file, format, false, {}, {}, nullptr});
}

TEST(SizeValidator, ReportsBytesFileSizeAndRatio) {
  mq::test::ScratchDir dir("size");
  mq::test::write_file(dir / "f", std::string(1234, 'x'));
  const mq::Check c = validate(2.0, dir / "f");
  EXPECT_TRUE(c.passed);
  // original 44000 B; quantized 10000 + 400 (scales) + 4000 (float bias) = 14400 B.
  EXPECT_EQ(c.metrics[0].second, 44000);
  EXPECT_EQ(c.metrics[1].second, 14400);
  EXPECT_EQ(c.metrics[2].second, 1234);
  EXPECT_NEAR(c.metrics[3].second, 44000.0 / 14400.0, 1e-12);
}

TEST(SizeValidator, FailsBelowMinRatioNamingTheLargestFloatTensor) {
  mq::test::ScratchDir dir("size-fail");
  mq::test::write_file(dir / "f", "x");
  const mq::Check c = validate(4.0, dir / "f");
  EXPECT_FALSE(c.passed);
  EXPECT_NE(c.message.find("is below min_ratio 4.00x"), std::string::npos) << c.message;
  EXPECT_NE(c.message.find("largest float tensor big.bias"), std::string::npos) << c.message;
}

}  // namespace
