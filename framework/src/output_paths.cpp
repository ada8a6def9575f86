#include "output_paths.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "mq/error.hpp"
#include "output_file.hpp"

namespace fs = std::filesystem;

namespace mq::detail {

void check_paths_apart(const std::vector<NamedPath>& reads, const std::vector<NamedPath>& writes) {
  const auto same = [](const fs::path& a, const fs::path& b) {
    std::error_code ec;
    return a.lexically_normal() == b.lexically_normal() || fs::equivalent(a, b, ec);
  };
  const auto inside = [](const fs::path& path, const fs::path& dir) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return false;
    const fs::path relative = fs::weakly_canonical(path, ec).lexically_relative(fs::weakly_canonical(dir, ec));
    return !ec && !relative.empty() && *relative.begin() != "..";
  };
  for (size_t i = 0; i < writes.size(); ++i) {
    const auto& [key, path] = writes[i];
    for (const NamedPath& input : reads) {
      if (same(path, input.second))
        throw RecipeError(key + " " + path.string() + " is " + input.first + "; refusing to overwrite an input");
      if (inside(path, input.second))
        throw RecipeError(key + " " + path.string() + " lies inside " + input.first + " (" + input.second.string() +
                          "), whose files are all read; write it elsewhere");
    }
    for (size_t j = 0; j < i; ++j)
      if (same(path, writes[j].second))
        throw RecipeError(key + " " + path.string() + " is also " + writes[j].first +
                          "; each output needs a path of its own");
  }
}

void check_output_places(const std::vector<NamedPath>& writes, const std::vector<NamedPath>& reports) {
  std::error_code ec;
  for (const auto& [key, path] : reports)
    if (fs::is_directory(path, ec))
      throw RecipeError(key + " " + path.string() + " is a directory; a report is written as a file");
  for (const auto& [key, path] : writes) {
    if (const char* kind = special_file(path))
      throw OutputError(key + " " + path.string() + " is " + kind + ", which a written file would replace" +
                        (key == "report" || key == "html_report" ? " (" + key + ": null writes none)" : ""));
    fs::path dir = path.parent_path();  // the nearest that exists: the run creates the rest
    while (!dir.empty() && fs::status(dir, ec).type() == fs::file_type::not_found) dir = dir.parent_path();
    if (dir.empty()) dir = ".";
    const char* why = !fs::is_directory(dir, ec)                                 ? "not a directory"
                      : faccessat(AT_FDCWD, dir.c_str(), W_OK | X_OK, AT_EACCESS) ? std::strerror(errno)
                                                                                  : nullptr;
    if (why) throw OutputError(key + " " + path.string() + ": cannot write in " + dir.string() + " (" + why + ")");
  }
}

}  // namespace mq::detail
