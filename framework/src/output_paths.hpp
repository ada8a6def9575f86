#pragma once
// Checks, before any work, that a run's outputs can go where the recipe says.

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace mq::detail {

// ("format.output", path): a file and the recipe key (or role) that names it.
using NamedPath = std::pair<std::string, std::filesystem::path>;

// Every file a run writes has its own path, and none is a file it reads or lies in a
// directory it reads (a report named like the artifact replaced it; an output inside
// an HF model directory would join the input); a RecipeError otherwise.
void check_paths_apart(const std::vector<NamedPath>& reads, const std::vector<NamedPath>& writes);

// Every output can be written where it goes: a report in a directory's place, a file
// where a directory must be, a device or pipe a rename would replace, or a directory
// this process cannot write in (a report's failed at the end of a run, after the
// artifact had been promoted). `reports` are files, a subset of `writes`.
void check_output_places(const std::vector<NamedPath>& writes, const std::vector<NamedPath>& reports);

}  // namespace mq::detail
