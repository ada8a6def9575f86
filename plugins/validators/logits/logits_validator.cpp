// logits: the original and the written model run on the same inputs (the recipe's
// evaluation batches, else its calibration batches, else the run's forward input); their outputs, read as logits over the last
// dimension, give the per-token KL divergence (original ‖ written: mean and p99), top-1
// agreement, the logits' SQNR and, on token ids, the perplexity of both (each position
// predicting the next id). Each figure has a bound; 0 leaves it unchecked. For an HF
// directory the written model is its dequantized tensors on the original's architecture.

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "mq/error.hpp"
#include "mq/validator.hpp"

namespace {

class LogitsValidator final : public mq::Validator {
 public:
  explicit LogitsValidator(const mq::Options& options)
      : max_kl_(options.get_float("max_kl")),
        max_p99_kl_(options.get_float("max_p99_kl")),
        min_top1_(options.get_float("min_top1")),
        min_sqnr_db_(options.get_float("min_sqnr_db")),
        max_perplexity_increase_(options.get_float("max_perplexity_increase")) {
    for (const char* name : {"max_kl", "max_p99_kl", "min_top1", "max_perplexity_increase"})
      if (!(options.get_float(name) >= 0)) throw mq::RecipeError(options.where(name) + ": " + name + " must be >= 0");
    if (min_top1_ > 1) throw mq::RecipeError(options.where("min_top1") + ": min_top1 is a fraction, at most 1");
  }

  mq::Check validate(const mq::ValidateContext& context) override {
    mq::Check check;
    if (!context.original.runnable || !context.artifact) {
      check.passed = false;
      check.message = context.original.runnable ? "nothing to compare: the written model does not run"
                                                : "nothing to compare: the original model does not run";
      return check;
    }
    std::vector<at::Tensor> inputs = context.evaluation.empty() ? context.calibration : context.evaluation;
    if (inputs.empty() && context.input.defined()) inputs.push_back(context.input);
    if (inputs.empty()) {
      check.passed = false;
      check.message = "nothing to compare: no evaluation or calibration batches and no model.input";
      return check;
    }
    std::vector<double> kls;
    double agree = 0, tokens = 0, signal = 0, noise = 0, nll_original = 0, nll_written = 0, predicted = 0;
    for (const at::Tensor& x : inputs) {
      const at::Tensor a = context.original.runnable->forward(x).to(at::kDouble);
      const at::Tensor b = context.artifact->forward(x).to(at::kDouble);
      if (a.sizes() != b.sizes() || a.dim() < 1)
        throw mq::InputError("the written model's output has shape " + c10::str(b.sizes()) + ", the original's " +
                             c10::str(a.sizes()));
      signal += a.pow(2).sum().item<double>();
      noise += (b - a).pow(2).sum().item<double>();
      const int64_t vocab = a.size(-1);
      const at::Tensor p = at::log_softmax(a.reshape({-1, vocab}), -1), q = at::log_softmax(b.reshape({-1, vocab}), -1);
      const at::Tensor kl = (p.exp() * (p - q)).sum(-1).clamp_min(0);
      const auto* k = kl.data_ptr<double>();
      kls.insert(kls.end(), k, k + kl.numel());
      agree += p.argmax(-1).eq(q.argmax(-1)).sum().item<double>();
      tokens += static_cast<double>(kl.numel());
      // Next-token perplexity where the input is the ids the logits are over.
      if (!at::isFloatingType(x.scalar_type()) && a.dim() == 3 && x.dim() == 2 && x.size(1) == a.size(1) && x.size(1) > 1) {
        const int64_t T = x.size(1);
        const at::Tensor next = x.narrow(1, 1, T - 1).to(at::kLong).reshape({-1, 1});
        const auto nll = [&](const at::Tensor& logp) {
          return -logp.reshape({x.size(0), T, vocab}).narrow(1, 0, T - 1).reshape({-1, vocab}).gather(1, next).sum().item<double>();
        };
        nll_original += nll(p);
        nll_written += nll(q);
        predicted += static_cast<double>(next.numel());
      }
    }
    std::sort(kls.begin(), kls.end());
    double mean = 0;
    for (double k : kls) mean += k;
    mean /= static_cast<double>(kls.size());
    const double p99 = kls[std::min(kls.size() - 1, static_cast<size_t>(std::ceil(0.99 * kls.size())) - 1)];
    const double top1 = agree / tokens;
    const double sqnr = noise > 0 ? 10 * std::log10(signal / noise) : INFINITY;
    check.metrics = {{"kl_mean", mean}, {"kl_p99", p99}, {"top1_agreement", top1}, {"logits_sqnr_db", sqnr},
                     {"tokens", tokens}};
    std::vector<std::string> failed;
    if (max_kl_ > 0 && mean > max_kl_) failed.push_back(fmt::format("KL mean above max_kl {:g}", max_kl_));
    if (max_p99_kl_ > 0 && p99 > max_p99_kl_) failed.push_back(fmt::format("KL p99 above max_p99_kl {:g}", max_p99_kl_));
    if (top1 < min_top1_) failed.push_back(fmt::format("top-1 below min_top1 {:g}", min_top1_));
    if (min_sqnr_db_ > 0 && sqnr < min_sqnr_db_) failed.push_back(fmt::format("SQNR below min_sqnr_db {:g}", min_sqnr_db_));
    std::string perplexity;
    if (predicted > 0) {
      const double before = std::exp(nll_original / predicted), after = std::exp(nll_written / predicted);
      const double increase = after / before - 1;
      check.metrics.push_back({"perplexity_original", before});
      check.metrics.push_back({"perplexity_written", after});
      check.metrics.push_back({"perplexity_increase", increase});
      perplexity = fmt::format("; perplexity {:.4g} -> {:.4g} ({:+.2f}%)", before, after, 100 * increase);
      if (max_perplexity_increase_ > 0 && increase > max_perplexity_increase_)
        failed.push_back(fmt::format("perplexity increase above max_perplexity_increase {:g}", max_perplexity_increase_));
    } else if (max_perplexity_increase_ > 0) {
      failed.push_back("no perplexity: the inputs are not the token ids the logits are over");
    }
    check.passed = failed.empty();
    check.message = fmt::format("KL mean {:.3g}, p99 {:.3g}; top-1 {:.1f}%; logits SQNR {:.2f} dB{} ({} tokens)", mean,
                                p99, 100 * top1, sqnr, perplexity, static_cast<int64_t>(tokens));
    for (const std::string& f : failed) check.message += "; " + f;
    return check;
  }

 private:
  double max_kl_, max_p99_kl_, min_top1_, min_sqnr_db_, max_perplexity_increase_;
};

}  // namespace

MQ_PLUGIN(LogitsValidator, mq::PluginKind::kValidator, "logits", "1.0.0",
          "The whole model's outputs as logits: KL divergence (mean, p99), top-1 agreement, SQNR, perplexity",
          {"max_kl", mq::OptionType::kFloat, "0", "fail above this mean per-token KL (0: no bound)"},
          {"max_p99_kl", mq::OptionType::kFloat, "0", "fail above this 99th-percentile per-token KL (0: no bound)"},
          {"min_top1", mq::OptionType::kFloat, "0", "fail below this fraction of tokens whose argmax agrees"},
          {"min_sqnr_db", mq::OptionType::kFloat, "0", "fail below this logits SQNR in dB (0: no bound)"},
          {"max_perplexity_increase", mq::OptionType::kFloat, "0",
           "fail above this relative perplexity increase on token-id inputs, e.g. 0.05 (0: no bound)"})
