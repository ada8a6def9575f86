#pragma once
// Hugging Face checkpoints on disk, for every format that reads them (safetensors, pt's
// pytorch_model.bin, and what comes next): config.json, shard indexes, and the strict
// JSON their readers share.

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mq/error.hpp"
#include "mq/export.hpp"

namespace mq {

// Checks a JSON text as the safetensors reference reads headers: valid UTF-8 JSON, no
// key twice in an object, containers nested no deeper than `max_depth` (the top level
// is 0). Gives the top-level keys in text order, and those of the top-level object named
// `inner`. Throws InputError "FILE: WHAT: ..."; the caller parses the text it passed.
struct JsonKeys {
  std::vector<std::string> top, inner;
};
MQ_API JsonKeys check_json(const std::string& file, const std::string& what, std::string_view text,
                           size_t max_depth, const std::string& inner = "");

namespace hf {

// Why the config.json of HF model directory `dir` says its model is quantized already
// ("config.json has a quantization_config, quant_method 'gptq'"), or "" (no
// config.json, or no quantization_config in it). InputError when it is not a JSON object.
MQ_API std::string quantized_config(const std::filesystem::path& dir);

// A shard index's weight_map (model.safetensors.index.json, pytorch_model.bin.index.json)
// as (tensor, shard file) pairs in text order; `name` names the index in errors. Strict
// (check_json): no tensor listed twice.
MQ_API std::vector<std::pair<std::string, std::string>> parse_index(const std::string& name, std::string_view text);

// A shard with the tensors its index places in it.
struct Shard {
  std::filesystem::path path;  // confined to the index's directory (mq::confined_shard)
  std::vector<std::string> tensors;
};
// The shards of index file `index`, by file name (model-00001-of-00002 first). InputError for a file too
// large for an index (100 MB), a malformed one, or a shard path that leaves its directory.
MQ_API std::vector<Shard> read_index(const std::filesystem::path& index);

// The error for an index that places `tensor` in `shard`, which does not hold it.
MQ_API InputError not_in_shard(const std::filesystem::path& index, const std::string& tensor,
                               const std::filesystem::path& shard);

}  // namespace hf
}  // namespace mq
