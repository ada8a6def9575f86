// size: bytes before and after (scales, zero points and packing included), the written
// file's size, and the compression ratio against `min_ratio`.

#include <fmt/format.h>

#include "mq/error.hpp"
#include "mq/files.hpp"
#include "mq/validator.hpp"

namespace {

class SizeValidator final : public mq::Validator {
 public:
  explicit SizeValidator(const mq::Options& options) : min_ratio_(options.get_float("min_ratio")) {
    if (!(min_ratio_ >= 0.0))
      throw mq::RecipeError(options.where("min_ratio") + ": min_ratio must be >= 0");
  }

  mq::Check validate(const mq::ValidateContext& context) override {
    const int64_t original = context.original.nbytes();
    const int64_t quantized = context.quantized.nbytes();
    const int64_t file_bytes = mq::path_bytes(context.written);
    if (file_bytes == 0) throw mq::OutputError(context.written.string() + ": cannot read its size");
    const double ratio = quantized > 0 ? static_cast<double>(original) / quantized : 0.0;

    mq::Check check;
    check.metrics = {{"original_bytes", static_cast<double>(original)},
                     {"quantized_bytes", static_cast<double>(quantized)},
                     {"file_bytes", static_cast<double>(file_bytes)},
                     {"ratio", ratio},
                     {"min_ratio", min_ratio_}};
    check.passed = ratio >= min_ratio_;
    check.message = fmt::format("ratio {:.2f}x{} ({:.2f} MB -> {:.2f} MB, file {:.2f} MB)", ratio,
                                check.passed ? "" : fmt::format(" is below min_ratio {:.2f}x", min_ratio_),
                                original / 1e6, quantized / 1e6, file_bytes / 1e6);
    if (!check.passed) {
      // The largest tensor left in float is where the missing compression is.
      const mq::QuantizedEntry* largest = nullptr;
      for (const mq::QuantizedEntry& e : context.quantized.entries)
        if (!e.quantized && (!largest || e.tensor.nbytes() > largest->tensor.nbytes())) largest = &e;
      if (largest)
        check.message += fmt::format("; largest float tensor {} ({:.2f} MB)", largest->name,
                                     largest->tensor.nbytes() / 1e6);
    }
    return check;
  }

 private:
  double min_ratio_;
};

}  // namespace

MQ_PLUGIN(SizeValidator, mq::PluginKind::kValidator, "size", "1.0.0",
          "Original vs quantized bytes and compression ratio",
          {"min_ratio", mq::OptionType::kFloat, "0", "fail below this original/quantized ratio"})
