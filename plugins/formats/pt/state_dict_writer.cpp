#include "state_dict_writer.hpp"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <fstream>
#include <vector>

#include "mq/error.hpp"
#include "mq/pack.hpp"
#include "state_dict_reader.hpp"
#include "torchscript_writer.hpp"

namespace mq::pt {

namespace fs = std::filesystem;

namespace {

// The first line of a LibTorch error, which may quote bytes of the file.
std::string first_line(const std::string& s) { return printable(s.substr(0, s.find('\n'))); }

// torch::jit::pickle_save's archive (the zip torch.save writes), written to the file
// as it is made: pickle_save builds it whole in memory first, a second copy of the
// output (and most of the time of a large write, growing that buffer).
void save_archive(const c10::IValue& value, const std::string& metadata, const fs::path& path) {
  std::vector<char> pickle;
  torch::jit::Pickler pickler([&](const char* bytes, size_t n) { pickle.insert(pickle.end(), bytes, bytes + n); });
  pickler.protocol();
  pickler.pushIValue(value);
  pickler.stop();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  // A failed write is reported after the archive is finished, not to the writer: it
  // throws on a short write, and again from its destructor, which ends the process
  // while the first exception unwinds (a full disk aborted the run).
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* bytes, size_t n) -> size_t {
    out.write(static_cast<const char*>(bytes), static_cast<std::streamsize>(n));
    return n;
  });
  try {
    torch::jit::writeArchiveAndTensors("data", pickle.data(), pickle.size(), pickler.tensorData(), writer);
    writer.writeRecord(kMetadataRecord, metadata.data(), metadata.size());
    writer.writeEndOfFile();
  } catch (const c10::Error& e) {
    throw OutputError(path.string() + ": write failed (" + first_line(e.what_without_backtrace()) + ")");
  }
  out.flush();
  if (!out) throw OutputError(path.string() + ": write failed");
}

}  // namespace

bool native(const QuantSpec& spec) {
  return spec.is_integer() && spec.bits() == 8 && spec.granularity != Granularity::kPerGroup;
}

void write_state_dict(const QuantizedModel& model, const std::string& metadata, const fs::path& path) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  for (const auto& e : model.entries) {
    if (!e.quantized) {
      dict.insert(e.name, e.tensor);
    } else if (!e.quantized->spec.is_integer()) {
      dict.insert(e.name, e.quantized->data);
    } else if (native(e.quantized->spec)) {
      dict.insert(e.name, to_torch(*e.quantized));
    } else {  // int4/uint4 and per-group int8: plain tensors under documented names
      const QuantizedTensor& q = *e.quantized;
      if (q.spec.packed()) {
        dict.insert(e.name + "_packed", pack_int4(q.data, nibble_offset(q.spec)));
        dict.insert(e.name + "_shape", at::tensor(q.shape, at::kLong));
      } else {
        dict.insert(e.name, q.data);
      }
      dict.insert(e.name + "_scale", q.qparams.scale.to(q.original_dtype));
      dict.insert(e.name + "_zero_point", q.qparams.zero_point.to(q.spec.stored_type()));
      if (q.g_idx.defined()) dict.insert(e.name + "_g_idx", q.g_idx.to(at::kInt));
    }
  }
  // Static models: each layer's input (and, for Linear and Conv, output) qparams as
  // one-element tensors, LAYER.input_scale as in the safetensors output.
  for (const auto& [layer, qp] : model.activation_qparams) {
    dict.insert(layer + ".input_scale", qp.scale.reshape({1}).to(at::kFloat));
    dict.insert(layer + ".input_zero_point",
                qp.zero_point.reshape({1}).to(model.activation_spec->stored_type()));
  }
  for (const auto& [layer, qp] : model.output_qparams) {
    dict.insert(layer + ".output_scale", qp.scale.reshape({1}).to(at::kFloat));
    dict.insert(layer + ".output_zero_point", qp.zero_point.reshape({1}).to(at::kByte));
  }
  save_archive(dict, metadata, path);
}

void write_file(std::string_view bytes, const fs::path& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.flush();
  if (!out) throw OutputError(path.string() + ": write failed");
}

}  // namespace mq::pt
