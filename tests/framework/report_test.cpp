#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "mq/report.hpp"

namespace {

// A report of `n` tensors, t0..t{n-1}, tensor i at SQNR 100 - i dB (t{n-1} the lowest),
// and a second validator's metric for each.
mq::Report report_of(int n) {
  mq::Report report;
  mq::ValidatorResult sqnr{"sqnr", mq::OnFailure::kError, {}}, other{"load_run", mq::OnFailure::kError, {}};
  for (int i = 0; i < n; ++i) {
    const std::string name = "t" + std::to_string(i);
    report.plan.push_back({name, "type Linear", std::nullopt, 4, 1});
    sqnr.check.tensor_metrics.push_back({name, "sqnr_db", 100.0 - i});
    other.check.tensor_metrics.push_back({name, "output_sqnr_db", double(i)});
  }
  report.validators = {sqnr, other};
  return report;
}

size_t count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

TEST(Report, JsonGivesEachLayerItsMetricsFromEveryValidator) {
  const auto layers = nlohmann::json::parse(report_of(3).to_json())["layers"];
  ASSERT_EQ(layers.size(), 3u);
  EXPECT_EQ(layers[1]["tensor"], "t1");
  EXPECT_EQ(layers[1]["sqnr_db"], 99.0);
  EXPECT_EQ(layers[1]["output_sqnr_db"], 1.0);
}

TEST(Report, HtmlChartsEveryTensorOfASmallModelInModelOrder) {
  const std::string html = report_of(3).to_html();
  EXPECT_NE(html.find("<h2>SQNR per tensor</h2>"), std::string::npos);
  EXPECT_EQ(count(html, "<rect class=\"bar"), 3u);
  EXPECT_LT(html.find(">t0<"), html.find(">t2<"));
}

// A chart of 100,000 bars is unreadable (and megabytes): past 64, the lowest; the table
// still lists every tensor with its SQNR.
TEST(Report, HtmlChartsTheLowestOfAManyTensorModel) {
  const std::string html = report_of(1000).to_html();
  EXPECT_NE(html.find("<h2>SQNR per tensor: the 64 lowest of 1000</h2>"), std::string::npos);
  EXPECT_EQ(count(html, "<rect class=\"bar"), 64u);
  EXPECT_NE(html.find("<title>t999: "), std::string::npos);
  EXPECT_NE(html.find("<title>t936: "), std::string::npos);
  EXPECT_EQ(html.find("<title>t935: "), std::string::npos);
  EXPECT_EQ(count(html, "<tr><td>t"), 1000u);
  EXPECT_NE(html.find("<tr><td>t0</td>"), std::string::npos);
}

TEST(Report, HtmlChartsTheBitsATargetChose) {
  mq::Report report = report_of(2);
  EXPECT_EQ(count(report.to_html(), "Bits per weight"), 0u);  // no target, no chart
  report.target = "bits_per_weight 5: ...";
  mq::QuantSpec int4;
  int4.dtype = mq::DType::kInt4;
  report.plan = {{"a.weight", "type Linear; target: est. error 0.1", int4, 4096, 576, 1024},
                 {"b.weight", "type Linear; target: est. error 0.01", mq::QuantSpec{}, 4096, 1088, 1024},
                 {"c.weight", "override 'c'", mq::QuantSpec{}, 4096, 1088, 1024}};
  const std::string html = report.to_html();
  EXPECT_EQ(count(html, "Bits per weight, as the target chose them"), 1u);
  EXPECT_EQ(count(html, ">4.50 bits</text>"), 1u) << html;
  EXPECT_EQ(count(html, ">8.50 bits</text>"), 1u) << html;  // the override is not the target's choice
}

}  // namespace
