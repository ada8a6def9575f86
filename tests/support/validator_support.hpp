#pragma once
// A small original/quantized model pair and a stand-in format for validator tests.

#include <ATen/ATen.h>

#include <functional>

#include "mq/affine.hpp"
#include "mq/validator.hpp"
#include "test_support.hpp"

namespace mq::test {

// A model whose forward pass is `fn` (the identity unless set); it keeps its last input.
class FakeRunnable final : public Runnable {
 public:
  std::function<at::Tensor(const at::Tensor&)> fn = [](const at::Tensor& x) { return x; };
  at::Tensor last_input;
  at::Tensor forward(const at::Tensor& input) override {
    last_input = input;
    return fn(input);
  }
  void record_layers(const std::vector<at::Tensor>&, const std::vector<std::string>&,
                     const ActivityVisitor&) override {}
};

class FakeFormat final : public Format {
 public:
  std::function<QuantizedModel()> read_back;  // what read_quantized returns (or throws)
  bool can_read(const std::filesystem::path&) const override { return false; }
  Model read(const std::filesystem::path&) override { return {}; }
  void write(const QuantizedModel&, const std::filesystem::path&) override {}
  QuantizedModel read_quantized(const std::filesystem::path&, Origin) override { return read_back(); }
};

// Makes `model`'s format read each original as `as(original)` (Model::read_into), so a
// test sees whether a validator compares what the format reads.
inline void read_originals_as(Model& model, std::function<at::Tensor(const at::Tensor&)> as) {
  test::read_through(model, [as = std::move(as)](const at::Tensor& t, const at::Tensor& into) {
    into.copy_(as(t));
    return true;
  });
}

inline QuantizedTensor quantize_with_minmax(const at::Tensor& w, QuantSpec spec) {
  auto [mn, mx] = min_max(w, spec);
  return quantize(w, qparams_from_min_max(mn, mx, spec), spec);
}

// fc.weight quantized with `spec`, fc.bias kept.
struct ModelPair {
  Model original;
  QuantizedModel quantized;
  explicit ModelPair(QuantSpec spec = {}, at::Tensor weight = at::Tensor()) {
    at::manual_seed(2);
    if (!weight.defined()) weight = at::randn({8, 16});
    original.tensors = {{"fc.weight", weight}, {"fc.bias", at::randn({8})}};
    QuantizedTensor q;
    if (spec.is_integer()) {
      q = quantize_with_minmax(weight, spec);
    } else {
      q.data = weight.to(spec.dtype == DType::kFloat16 ? at::kHalf : at::kBFloat16);
      q.spec = spec;
      q.shape = weight.sizes().vec();
    }
    quantized.entries = {{"fc.weight", at::Tensor(), q}, {"fc.bias", original.tensors[1].tensor, std::nullopt}};
  }
  // `input` and `artifact` as the runner hands them to validators of a runnable model.
  Check validate(Validator& v, Format& format, bool read_back = false, const std::vector<at::Tensor>& calibration = {},
                 const at::Tensor& input = {}, std::shared_ptr<Runnable> artifact = nullptr) const {
    static const std::filesystem::path kWritten = "/nonexistent/written.safetensors";
    return run_validator(v, {original, quantized, kWritten, format, read_back, calibration, input, std::move(artifact)});
  }
};

}  // namespace mq::test
