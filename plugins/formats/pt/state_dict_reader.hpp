#pragma once
// Reads a torch.save() state dict (zip format) without running any code: a small
// unpickler that knows dicts (OrderedDict included), tuples, lists, scalars, strings
// and torch._utils._rebuild_tensor_v2 / _rebuild_qtensor (int8 per tensor or channel)
// over the archive's storages, and refuses every other global. This is how a
// state-dict path never executes anything, and how an untrusted file never reaches
// LibTorch's unpickler.

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mq/files.hpp"
#include "mq/model.hpp"

namespace mq::pt {

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF): tensor names must be, to go into a safetensors header or a JSON report.
bool valid_utf8(std::string_view s);

// `s` with every byte outside printable ASCII as '?': for error messages quoting a file.
std::string printable(std::string_view s);

// The archive record where mq keeps a state dict's metadata (JSON), beside the pickled
// dict rather than in it, so that the dict holds tensors only (PyTorch's torch.load
// reads the dict and leaves other records alone).
inline constexpr const char* kMetadataRecord = "extra/mq.json";

// The state dict's tensors in order (quantized ones as PyTorch quantized tensors); a
// saved list or tuple of tensors (calibration batches) gives them named "0", "1", ...
// String entries (the __metadata__ entry of state dicts mq wrote before) go to
// `strings`, and are refused without it; so does the kMetadataRecord, under that name.
// Tensors that torch.save stored plainly lie in the file, mapped; `mapped`, when given,
// gets that mapping (null where none does), for Model::files. Throws InputError
// naming the file and the reason.
std::vector<NamedTensor> read_state_dict(const std::filesystem::path& path,
                                         std::map<std::string, std::string>* strings = nullptr,
                                         std::shared_ptr<const MappedFile>* mapped = nullptr);

}  // namespace mq::pt
