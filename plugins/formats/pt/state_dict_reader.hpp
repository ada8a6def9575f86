#pragma once
// Reads a torch.save() state dict (zip format) without running any code: a small
// unpickler that knows dicts (OrderedDict included), tuples, lists, scalars, strings
// and torch._utils._rebuild_tensor_v2 over the archive's storages, and refuses every
// other global. This is how a state-dict path never executes anything.

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "mq/model.hpp"

namespace mq::pt {

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF): tensor names must be, to go into a safetensors header or a JSON report.
bool valid_utf8(std::string_view s);

// The state dict's tensors in order; a saved list or tuple of tensors (calibration
// batches) gives them named "0", "1", ... Throws InputError naming the file and the reason.
std::vector<NamedTensor> read_state_dict(const std::filesystem::path& path);

}  // namespace mq::pt
