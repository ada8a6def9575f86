#pragma once
// `mq-pipeline init`: a commented recipe for a model and a preset, that runs as written.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "mq/value.hpp"

namespace mq::cli {

struct InitRequest {
  std::filesystem::path model;
  std::string preset = "w8a8-dynamic";
  std::filesystem::path recipe = "recipe.yaml";  // where to write it
  bool trust_torchscript = false;
  std::vector<int64_t> input_shape;  // empty: guessed from the model's first layer
  bool force = false;                // overwrite an existing recipe
};

// A reader's options for --trust-torchscript: the pt format's trust_torchscript, for
// the files it reads TorchScript from (.pt and .pth; other formats take no such option).
Value reader_options(const std::filesystem::path& path, bool trust_torchscript);

// The presets, one line each (`init --list`); JSON with `json`.
int list_presets(bool json);

// Reads the model, writes the recipe (temporary file, then renamed into place) and says
// what it wrote; throws mq::Error for what it refuses.
int init_recipe(const InitRequest& request);

}  // namespace mq::cli
