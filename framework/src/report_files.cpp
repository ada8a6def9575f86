#include "report_files.hpp"

#include "hash.hpp"
#include "mq/files.hpp"
#include "plugin_host.hpp"

namespace mq::detail {

FileInfo file_info(const std::filesystem::path& path) {
  const Digests d = digest_path(path);
  return {path.string(), path_bytes(path), d.xxh3, d.sha256};
}

void ReportFiles::arm(Report report) {
  report.status = ExitCode::kInterrupted;
  report.message = "interrupted by a signal";
  armed_ = std::make_unique<WrittenOnInterrupt>(files(report));
}

void ReportFiles::record_failure(Report& report, const std::exception& e) {
  const auto* error = dynamic_cast<const Error*>(&e);
  report.status = error ? error->code() : ExitCode::kInternal;
  report.message = error ? e.what() : std::string("internal error: ") + first_line(e.what());
}

WrittenOnInterrupt::Files ReportFiles::files(Report& report) const {
  WrittenOnInterrupt::Files out;
  if (json_) {
    report.report_path = json_->string();
    out.emplace_back(*json_, report.to_json());
  }
  if (html_) out.emplace_back(*html_, report.to_html());
  return out;
}

void ReportFiles::write(Report& report) const {
  for (const auto& [path, text] : files(report)) write_file_atomically(path, text);
}

}  // namespace mq::detail
