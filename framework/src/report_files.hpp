#pragma once
// The JSON and HTML reports a run or a validation writes, a failed or interrupted one's
// too, so that a report left from an earlier run never stands for this one.

#include <filesystem>
#include <memory>
#include <optional>

#include "mq/report.hpp"
#include "output_file.hpp"

namespace mq::detail {

// A file's path, size and hash (for a directory, of its files), as reports list them.
FileInfo file_info(const std::filesystem::path& path);

class ReportFiles {
 public:
  ReportFiles(std::optional<std::filesystem::path> json, std::optional<std::filesystem::path> html)
      : json_(std::move(json)), html_(std::move(html)) {}

  // Runs `stages` into a report and writes the reports asked for: on an exception, with
  // its status and message and what the run got to, then rethrows. `paths_checked` says
  // the report paths are known not to be an input (a failure before that writes nothing).
  template <class F>
  Report run(const bool& paths_checked, F&& stages) {
    Report report;
    struct Disarm {  // once the reports are written, whatever happened
      std::unique_ptr<WrittenOnInterrupt>& armed;
      ~Disarm() { armed.reset(); }
    } disarm{armed_};
    try {
      stages(report);
    } catch (const std::exception& e) {
      if (!paths_checked) throw;
      record_failure(report, e);
      try {
        write(report);
      } catch (const std::exception&) {  // the run's own error is the one to report
      }
      throw;
    }
    write(report);
    return report;
  }

  // From now until run() has written the reports, an interrupt writes them as `report`
  // stands, with status 130 (the run's own writing needs the main thread).
  void arm(Report report);

 private:
  static void record_failure(Report& report, const std::exception& e);
  WrittenOnInterrupt::Files files(Report& report) const;
  void write(Report& report) const;

  std::optional<std::filesystem::path> json_, html_;
  std::unique_ptr<WrittenOnInterrupt> armed_;
};

}  // namespace mq::detail
