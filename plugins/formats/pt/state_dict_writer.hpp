#pragma once
// State dict output: the zip torch.save writes, of a dict of tensors (PyTorch's quantized
// tensors where it has the type, plain tensors under documented names otherwise:
// NAME_packed/_shape/_scale/_zero_point; a static model's LAYER.input_scale etc.), and
// the metadata in an archive record of its own (kMetadataRecord), which state_dict_reader
// reads back.

#include <filesystem>
#include <string>
#include <string_view>

#include "mq/quantized_model.hpp"

namespace mq::pt {

// Whether PyTorch has a quantized tensor type for `spec` (8 bits, per tensor or channel).
bool native(const QuantSpec& spec);

// `model` as a state dict at `path`, `metadata` (JSON) in kMetadataRecord. OutputError
// where it cannot be written.
void write_state_dict(const QuantizedModel& model, const std::string& metadata, const std::filesystem::path& path);

// `bytes` as the whole of `path`; OutputError where it cannot be written.
void write_file(std::string_view bytes, const std::filesystem::path& path);

}  // namespace mq::pt
