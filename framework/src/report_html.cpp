// The report as one self-contained HTML page: inline CSS and SVG, no scripts, nothing
// fetched. A per-layer SQNR chart first, because that is what people look for.

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <string_view>
#include <unordered_map>

#include "mq/report.hpp"

namespace mq {
namespace {

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string mb(int64_t bytes) { return fmt::format("{:.2f} MB", bytes / 1e6); }

std::string db(double v) {
  return std::isinf(v) ? (v > 0 ? "&#8734; dB" : "-&#8734; dB") : fmt::format("{:.2f} dB", v);
}

struct Bar {
  std::string label;
  double value;
};

// Horizontal bars, one per row, each value written by `text` (dB unless told);
// infinite values are drawn full length and labelled so.
std::string bar_chart(const std::vector<Bar>& bars, double threshold, const std::string& unit_title,
                      std::string (*text)(double) = db) {
  double top = 1.0;
  for (const Bar& b : bars)
    if (std::isfinite(b.value)) top = std::max(top, b.value);
  if (std::isfinite(threshold)) top = std::max(top, threshold);
  const int label_width = 260, chart_width = 520, row = 22;
  const int height = static_cast<int>(bars.size()) * row + 30;
  std::string svg = fmt::format(
      "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "role=\"img\" aria-label=\"{}\">\n",
      label_width + chart_width + 90, height, escape(unit_title));
  for (size_t i = 0; i < bars.size(); ++i) {
    const Bar& b = bars[i];
    const double v = std::isinf(b.value) ? (b.value > 0 ? top : 0.0) : std::max(0.0, b.value);
    const int y = static_cast<int>(i) * row + 4;
    const bool low = std::isfinite(threshold) && b.value < threshold;
    svg += fmt::format(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"label\">{}</text>"
        "<rect class=\"bar{}\" x=\"{}\" y=\"{}\" width=\"{:.1f}\" height=\"{}\"><title>{}: {}</title></rect>"
        "<text x=\"{:.1f}\" y=\"{}\" class=\"value\">{}</text>\n",
        label_width - 8, y + 14, escape(b.label), low ? " low" : "", label_width, y,
        std::max(1.0, v / top * chart_width), row - 6, escape(b.label), text(b.value),
        label_width + v / top * chart_width + 6, y + 14, text(b.value));
  }
  if (std::isfinite(threshold) && threshold > 0) {
    const double x = label_width + threshold / top * chart_width;
    svg += fmt::format("<line class=\"threshold\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"0\" y2=\"{1}\"/>"
                       "<text x=\"{0:.1f}\" y=\"{2}\" class=\"value\">min {3}</text>\n",
                       x, height - 22, height - 6, db(threshold));
  }
  return svg + "</svg>\n";
}

}  // namespace

std::string Report::to_html() const {
  std::vector<Bar> sqnr;
  double min_layer = -INFINITY;
  for (const ValidatorResult& v : validators) {
    for (const TensorMetric& m : v.check.tensor_metrics)
      if (m.name == "sqnr_db") sqnr.push_back({m.tensor, m.value});
    for (const auto& [name, value] : v.check.metrics)  // a threshold for the rows above
      if (name == "min_layer_db") min_layer = value;
  }
  const double ratio = quantized_bytes ? double(original_bytes) / quantized_bytes : 0.0;
  std::string html = R"(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mq report</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
.ok{color:#1a7f37}.fail{color:#c62828}
table{border-collapse:collapse} td,th{border-bottom:1px solid #ddd;padding:3px 10px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.chart .bar{fill:#2b7bb9}.chart .bar.low{fill:#c62828}.chart .label,.chart .value{font-size:12px;fill:#333}
.chart .threshold{stroke:#c62828;stroke-dasharray:4 3}
.size .before{fill:#9e9e9e}.size .after{fill:#2b7bb9}
</style></head><body>
)";
  html += fmt::format("<h1>mq report: <span class=\"{}\">{}</span></h1>\n<p>{}</p>\n",
                      status == ExitCode::kOk ? "ok" : "fail", status == ExitCode::kOk ? "passed" : "failed",
                      escape(message));
  html += fmt::format("<p>artifact <code>{}</code>{} &middot; recipe hash <code>{}</code></p>\n",
                      escape(output.path), promoted ? "" : " (not written by this run)",
                      escape(recipe_hash));

  // Past a screenful of bars the chart shows the lowest (a model may have 100,000
  // tensors); the table below lists every one.
  constexpr size_t kChartBars = 64;
  std::vector<Bar> chart = sqnr;
  std::string heading = "SQNR per tensor";
  if (chart.size() > kChartBars) {
    const auto key = [](const Bar& b) { return std::isnan(b.value) ? -INFINITY : b.value; };
    std::stable_sort(chart.begin(), chart.end(), [&](const Bar& a, const Bar& b) { return key(a) < key(b); });
    chart.resize(kChartBars);
    heading = fmt::format("SQNR per tensor: the {} lowest of {}", kChartBars, sqnr.size());
  }
  html += "<h2>" + heading + "</h2>\n";
  html += sqnr.empty() ? std::string("<p>No sqnr validator ran.</p>\n")
                       : bar_chart(chart, min_layer, "SQNR per tensor in dB");

  if (!target.empty()) {  // what the target chose, layer by layer
    std::vector<Bar> bits;
    for (const PlanRow& row : plan)
      if (row.spec && row.elements && row.rule.find("; target: ") != std::string::npos)
        bits.push_back({row.tensor, 8.0 * row.bytes_after / row.elements});
    html += "<h2>Bits per weight, as the target chose them</h2>\n<p>" + escape(target) + "</p>\n" +
            bar_chart(bits, NAN, "bits per weight per tensor", [](double v) { return fmt::format("{:.2f} bits", v); });
  }

  html += fmt::format("<h2>Size</h2>\n<p>{} &rarr; {} ({:.2f}x)</p>\n", mb(original_bytes),
                      mb(quantized_bytes), ratio);
  const double width = 600.0;
  const double after = original_bytes ? width * quantized_bytes / original_bytes : 0.0;
  html += fmt::format(
      "<svg class=\"size\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"54\">"
      "<rect class=\"before\" x=\"0\" y=\"2\" width=\"{}\" height=\"22\"><title>original {}</title></rect>"
      "<text x=\"{}\" y=\"18\" font-size=\"12\">original {}</text>"
      "<rect class=\"after\" x=\"0\" y=\"30\" width=\"{:.1f}\" height=\"22\"><title>quantized {}</title></rect>"
      "<text x=\"{:.1f}\" y=\"46\" font-size=\"12\">quantized {}</text>"
      "</svg>\n",
      width + 200, width, mb(original_bytes), width + 8, mb(original_bytes), std::max(1.0, after),
      mb(quantized_bytes), std::max(1.0, after) + 8, mb(quantized_bytes));

  html += "<h2>Validators</h2>\n<table><tr><th>validator</th><th>verdict</th><th>on_failure</th><th>message</th></tr>\n";
  for (const ValidatorResult& v : validators)
    html += fmt::format("<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>\n", escape(v.plugin),
                        v.check.passed ? "ok" : "fail", v.check.passed ? "pass" : "fail", to_string(v.policy),
                        escape(v.check.message));
  html += "</table>\n<h2>Tensors</h2>\n<table><tr><th>tensor</th><th>rule</th><th>spec</th>"
          "<th>bytes before</th><th>bytes after</th><th>SQNR</th></tr>\n";
  std::unordered_map<std::string_view, double> sqnr_of;
  for (const Bar& b : sqnr) sqnr_of[b.label] = b.value;  // the last, where two validators give one
  for (const PlanRow& row : plan) {
    const auto found = sqnr_of.find(row.tensor);
    const std::string value = found == sqnr_of.end() ? "" : db(found->second);
    html += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>"
                        "<td class=\"n\">{}</td></tr>\n",
                        escape(row.tensor), escape(row.rule), row.spec ? escape(row.spec->to_string()) : "float",
                        row.bytes_before, row.bytes_after, value);
  }
  html += "</table>\n";
  if (!model_changes.empty()) {
    html += "<h2>Model changes</h2>\n<ul>\n";
    for (const std::string& c : model_changes) html += "<li>" + escape(c) + "</li>\n";
    html += "</ul>\n";
  }
  if (!warnings.empty()) {
    html += "<h2>Warnings</h2>\n<ul>\n";
    for (const std::string& w : warnings) html += "<li>" + escape(w) + "</li>\n";
    html += "</ul>\n";
  }
  return html + "</body></html>\n";
}

}  // namespace mq
