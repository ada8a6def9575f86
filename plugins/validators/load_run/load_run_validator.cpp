// load_run: re-reads the written file with the format that wrote it and compares every
// tensor bit-exactly with what was meant to be written, then runs it: a forward pass of
// the artifact against the original when both can run (on the model's input:
// model.input, else the first calibration batch, else a shape guessed from the first
// layer; an artifact that fails where the original runs fails the check), and for every quantized 2-D weight a matmul
// on seeded random inputs against its float original. Every output must be finite.
// A file that cannot be read back fails the check (it does not abort the run). Where
// `quantized` already is the file read back (context.read_back: a streamed run, whose
// read-back the runner checked against digests of what was written), it is not read
// a second time.

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <cmath>
#include <utility>

#include "mq/affine.hpp"
#include "mq/error.hpp"
#include "mq/validator.hpp"

namespace {

// Why `a` and `b` differ, or "".
std::string difference(const mq::QuantizedEntry& a, const mq::QuantizedEntry& b) {
  if (a.name != b.name) return "expected tensor " + a.name + ", read " + b.name;
  if (a.quantized.has_value() != b.quantized.has_value())
    return a.name + " was written " + (a.quantized ? "quantized" : "in float") + " but reads back otherwise";
  const auto same = [](const at::Tensor& x, const at::Tensor& y) {
    return x.scalar_type() == y.scalar_type() && x.sizes() == y.sizes() && at::equal(x, y);
  };
  if (!a.quantized) return same(a.tensor, b.tensor) ? "" : a.name + " differs from what was written";
  const mq::QuantizedTensor &p = *a.quantized, &q = *b.quantized;
  if (p.spec.to_string() != q.spec.to_string())
    return fmt::format("{} reads back as {} instead of {}", a.name, q.spec.to_string(), p.spec.to_string());
  if (p.shape != q.shape || !same(p.data, q.data)) return a.name + ": quantized data differs from what was written";
  if (p.spec.is_integer() && (!at::equal(p.qparams.scale.reshape(-1), q.qparams.scale.reshape(-1)) ||
                              !at::equal(p.qparams.zero_point.reshape(-1), q.qparams.zero_point.reshape(-1))))
    return a.name + ": scales or zero points differ from what was written";
  if (!mq::same_group_index(p, q)) return a.name + ": the group index (g_idx) differs from what was written";
  return "";
}

class LoadRunValidator final : public mq::Validator {
 public:
  explicit LoadRunValidator(const mq::Options& options)
      : batch_(options.get_int("batch")),
        seed_(options.get_int("seed")),
        generator_(at::detail::createCPUGenerator(static_cast<uint64_t>(seed_))) {
    if (batch_ <= 0) throw mq::RecipeError(options.where("batch") + ": batch must be positive");
  }

  bool per_entry() const override { return true; }

  // Every quantized 2-D weight, as written (validate() checks that it reads back so),
  // times seeded random rows, against its original.
  void entry(const mq::ValidateContext&, const mq::QuantizedEntry& e,
             const at::Tensor* original) override {
    if (!non_finite_.empty() || !e.quantized || e.quantized->shape.size() != 2) return;
    const at::Tensor x = at::randn({batch_, e.quantized->shape[1]}, generator_);
    const at::Tensor y = mq::linear(x, *e.quantized);  // dequantized a few rows at a time
    ++ran_;
    if (!at::isfinite(y).all().item<bool>()) {
      non_finite_ = e.name;
      return;
    }
    if (!original) return;
    const at::Tensor reference = mq::linear(x, *original);
    const double noise = (y - reference).pow(2).mean().item<double>();
    const double signal = reference.pow(2).mean().item<double>();
    if (noise > 1e-10 && signal > 0)
      layer_sqnr_.push_back({e.name, "output_sqnr_db", 10.0 * std::log10(signal / noise)});
  }

  mq::Check validate(const mq::ValidateContext& context) override {
    mq::Check check;
    const auto& expected = context.quantized.entries;
    if (!context.read_back) {
      mq::QuantizedModel reread;
      try {
        reread = context.format.read_quantized(context.written, context.origin);
      } catch (const mq::Error& e) {
        check.passed = false;
        check.message = std::string("cannot read the written file back: ") + e.what();
        return check;
      }
      if (reread.entries.size() != expected.size()) {
        check.passed = false;
        check.message = fmt::format("wrote {} tensors but read back {}", expected.size(), reread.entries.size());
        return check;
      }
      for (size_t i = 0; i < expected.size(); ++i) {
        const std::string why = difference(expected[i], reread.entries[i]);
        if (!why.empty()) {
          check.passed = false;
          check.message = why;
          return check;
        }
      }
    }
    if (!non_finite_.empty()) {
      check.passed = false;
      check.message =
          fmt::format("{}: matmul on the read-back weight gives non-finite outputs", non_finite_);
      return check;
    }
    check.tensor_metrics = std::move(layer_sqnr_);
    check.metrics = {{"tensors_compared", static_cast<double>(expected.size())},
                     {"layers_run", static_cast<double>(ran_)}};
    check.message = fmt::format("read back {} tensors bit-exactly; ran {} layer matmuls (batch {})",
                                expected.size(), ran_, batch_);
    if (!context.original.runnable) {
      check.message += ", outputs finite";
      return check;
    }
    // The whole model: the artifact as loaded to run, against the original.
    if (!context.artifact) {
      check.message += ", outputs finite; the written format does not run";
      return check;
    }
    const at::Tensor& x = context.input;
    if (!x.defined()) {
      check.message += ", outputs finite; no forward pass (set model.input: the first layer says nothing)";
      return check;
    }
    const auto [reference, y] = mq::forward_both(context.original, *context.artifact, x, check);
    if (!y.defined()) return check;
    if (!at::isfinite(y).all().item<bool>()) {
      check.passed = false;
      check.message = "the written model's forward pass gives non-finite outputs";
      return check;
    }
    const double noise = (y.to(at::kDouble) - reference.to(at::kDouble)).pow(2).mean().item<double>();
    const double signal = reference.to(at::kDouble).pow(2).mean().item<double>();
    const double db = noise < 1e-10 ? INFINITY : 10.0 * std::log10(signal / noise);
    check.metrics.push_back({"output_sqnr_db", db});
    check.message += fmt::format("; forward pass on {} gives finite outputs at {:.2f} dB output SQNR",
                                 c10::str(x.sizes()), db);
    return check;
  }

 private:

  int64_t batch_, seed_;
  // Gathered by entry().
  at::Generator generator_;
  int64_t ran_ = 0;
  std::string non_finite_;  // the first weight whose matmul is not finite
  std::vector<mq::TensorMetric> layer_sqnr_;
};

}  // namespace

MQ_PLUGIN(LoadRunValidator, mq::PluginKind::kValidator, "load_run", "1.2.0",
          "Re-read the artifact bit-exactly, then run every quantized layer",
          {"batch", mq::OptionType::kInt, "8", "rows of random input per layer"},
          {"seed", mq::OptionType::kInt, "0", "seed of the random inputs"})
