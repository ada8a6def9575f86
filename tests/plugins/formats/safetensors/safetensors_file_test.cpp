// The safetensors file layer: the strict reader (the format's hostile-input corpus),
// the writer, and mapped tensors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "mq/error.hpp"
#include "safetensors_file.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;

std::string u64le(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

std::string file_bytes(const std::string& header, size_t buffer) {
  return u64le(header.size()) + header + std::string(buffer, '\0');
}

// Opens `bytes` as a safetensors file; returns the InputError message ("" if it opened).
std::string open_error(const std::string& bytes) {
  mq::test::ScratchDir dir("st-corpus");
  mq::test::write_file(dir / "m.safetensors", bytes);
  try {
    mq::safetensors::File::open(dir / "m.safetensors");
  } catch (const mq::InputError& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.find((dir / "m.safetensors").string() + ": "), 0u) << m;  // names the file
    EXPECT_EQ(m.find('\n'), std::string::npos);                           // one line
    return m;
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

const std::string kOne = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

TEST(SafetensorsReader, AcceptsAWellFormedFile) { EXPECT_EQ(open_error(file_bytes(kOne, 8)), ""); }

TEST(SafetensorsReader, AcceptsEmptyHeaderZeroSizeAndScalarsAndPadding) {
  EXPECT_EQ(open_error(file_bytes("{}", 0)), "");
  EXPECT_EQ(open_error(file_bytes(R"({"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},)"
                                  R"("s":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}   )",
                                  8)),
            "");
}

TEST(SafetensorsReader, RejectsFileShorterThanTheLengthField) {
  EXPECT_TRUE(contains(open_error("1234"), "too short for a safetensors header"));
}

TEST(SafetensorsReader, RejectsHeaderLengthOverTheLimit) {
  EXPECT_TRUE(contains(open_error(u64le(100'000'001) + "{}"), "exceeds the limit of 100000000 bytes"));
}

TEST(SafetensorsReader, RejectsHeaderRunningPastTheFile) {
  EXPECT_TRUE(contains(open_error(u64le(64) + "{}"), "runs past the end of the file"));
  EXPECT_TRUE(contains(open_error(u64le(UINT64_MAX) + "{}"), "exceeds the limit"));
}

TEST(SafetensorsReader, RejectsHeaderThatIsNotJsonOrNotUtf8) {
  EXPECT_TRUE(contains(open_error(file_bytes("{\"a\":", 0)), "not valid UTF-8 JSON"));
  EXPECT_TRUE(contains(open_error(file_bytes("{\"\xff\":1}", 0)), "not valid UTF-8 JSON"));
  EXPECT_TRUE(contains(open_error(file_bytes("[1]", 0)), "not a JSON object"));
}

TEST(SafetensorsReader, RejectsSchemaViolations) {
  EXPECT_TRUE(contains(open_error(file_bytes(R"({"__metadata__":{"k":1}})", 0)), "is not a string"));
  EXPECT_TRUE(contains(open_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2]}})", 8)),
                       "needs a string dtype, a shape list and two data_offsets"));
  EXPECT_TRUE(contains(open_error(file_bytes(R"({"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}})", 8)),
                       "unknown dtype 'Q9'"));
  EXPECT_TRUE(contains(open_error(file_bytes(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8)),
                       "shape entry that is not a size"));
  EXPECT_TRUE(contains(open_error(file_bytes(R"({"a":{"dtype":"F32","shape":[[[2]]],"data_offsets":[0,8]}})", 8)),
                       "nested deeper"));
}

TEST(SafetensorsReader, RejectsDuplicateKeys) {
  const std::string e = open_error(file_bytes(
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8));
  EXPECT_TRUE(contains(e, "duplicate key 'a'")) << e;
}

TEST(SafetensorsReader, RejectsOffsetGapsOverlapsAndReversedRanges) {
  EXPECT_TRUE(contains(open_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12)),
                       "must continue at 0"));
  EXPECT_TRUE(contains(open_error(file_bytes(
                           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)),
                       "gap, overlap or reversed range"));
  EXPECT_TRUE(contains(open_error(file_bytes(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8)),
                       "tensor 'a' has data_offsets [8, 0)"));
}

TEST(SafetensorsReader, RejectsSizeThatDisagreesWithShapeAndDtype) {
  EXPECT_TRUE(contains(open_error(file_bytes(R"({"a":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}})", 8)),
                       "needs 4 bytes, but data_offsets give 8"));
}

TEST(SafetensorsReader, RejectsShapeOverflow) {
  EXPECT_TRUE(contains(open_error(file_bytes(
                           R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", 8)),
                       "overflows"));
}

TEST(SafetensorsReader, RejectsPartialBytes) {
  EXPECT_TRUE(contains(open_error(file_bytes(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}})", 1)),
                       "not a whole number of bytes"));
}

TEST(SafetensorsReader, RejectsTrailingBytesAndTruncation) {
  EXPECT_TRUE(contains(open_error(file_bytes(kOne, 9)), "(trailing bytes)"));
  EXPECT_TRUE(contains(open_error(file_bytes(kOne, 4)), "the tensors cover 8 bytes but the data buffer has 4"));
}

TEST(SafetensorsReader, UnalignedDataIsReadCorrectly) {
  // A 5-byte header leaves the float data misaligned.
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  )";
  float values[2] = {1.5f, -2.25f};
  std::string bytes = u64le(header.size() + 1) + header + " " + std::string(reinterpret_cast<char*>(values), 8);
  mq::test::ScratchDir dir("st-unaligned");
  mq::test::write_file(dir / "u.safetensors", bytes);
  auto file = mq::safetensors::File::open(dir / "u.safetensors");
  const at::Tensor t = file->tensor(file->tensors()[0]);
  EXPECT_EQ(t[0].item<float>(), 1.5f);
  EXPECT_EQ(t[1].item<float>(), -2.25f);
}

// Tensors are in data order; empty ones at the same offset keep the header's order (the
// header is parsed into a map, sorted by name).
TEST(SafetensorsReader, EmptyTensorsAtOneOffsetKeepTheHeadersOrder) {
  const std::string header = R"({"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                             R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                             R"("y":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                             R"("a":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})";
  mq::test::ScratchDir dir("st-order");
  mq::test::write_file(dir / "o.safetensors", file_bytes(header, 4));
  const auto file = mq::safetensors::File::open(dir / "o.safetensors");
  std::vector<std::string> names;
  for (const auto& t : file->tensors()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"z", "y", "b", "a"}));
}

TEST(SafetensorsWriter, RefusesATensorNamedMetadata) {
  mq::test::ScratchDir dir("st-meta");
  EXPECT_THROW(mq::safetensors::write(dir / "x.safetensors", {{"__metadata__", at::ones({1})}}, {}),
               mq::InputError);
}

TEST(SafetensorsWriter, PadsTheHeaderToEightBytes) {
  mq::test::ScratchDir dir("st-pad");
  mq::safetensors::write(dir / "x.safetensors", {{"a", at::ones({3})}}, {{"k", "v"}});
  const std::string bytes = mq::test::read_file(dir / "x.safetensors");
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + 12);
}

TEST(SafetensorsWriter, LeavesNothingBehindWhenNotFinished) {
  mq::test::ScratchDir dir("st-abandon");
  {
    mq::safetensors::Writer writer(dir / "x.safetensors");
    writer.add("a", at::ones({1024}));
  }  // e.g. an exception while quantizing: the scratch bytes had no name
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

// With room reserved in front, the header is written in place, padded with spaces to
// the room, and the scratch file becomes the output; without enough room, the header
// is compact and the tensors are copied behind it. Either way the file reads back the
// same and nothing else is left in the directory.
TEST(SafetensorsWriter, WritesTheHeaderInPlaceWhenItFitsTheRoomReserved) {
  const at::Tensor a = at::randn({5, 7}), b = at::arange(10, at::kInt);
  for (uint64_t reserve : {uint64_t{4096}, uint64_t{40}}) {
    SCOPED_TRACE("reserve " + std::to_string(reserve));
    mq::test::ScratchDir dir("st-reserve");
    mq::safetensors::Writer writer(dir / "x.safetensors", reserve);
    writer.add("a", a);
    writer.add("b", b);
    writer.finish({{"k", "v"}});
    const std::string bytes = mq::test::read_file(dir / "x.safetensors");
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    const std::string header = bytes.substr(8, n);
    const size_t json_end = header.find_last_not_of(' ') + 1;
    if (reserve == 4096) {
      EXPECT_EQ(8 + n, reserve);
      EXPECT_GT(n - json_end, 3000u);  // spaces
    } else {
      EXPECT_EQ(n, (json_end + 7) / 8 * 8);  // compact: padded to 8 only
    }
    EXPECT_EQ(bytes.size(), 8 + n + a.nbytes() + b.nbytes());
    auto file = mq::safetensors::File::open(dir / "x.safetensors");
    EXPECT_TRUE(at::equal(file->tensor(*file->find("a")), a));
    EXPECT_TRUE(at::equal(file->tensor(*file->find("b")), b));
    EXPECT_EQ(file->metadata().at("k"), "v");
    EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
  }
}

TEST(SafetensorsReader, ReleasedTensorsStayReadable) {
  mq::test::ScratchDir dir("st-release");
  const at::Tensor big = at::randn({256, 1024});  // 1 MiB: whole pages to drop
  mq::safetensors::write(dir / "x.safetensors", {{"a", at::ones({3})}, {"big", big}}, {});
  auto file = mq::safetensors::File::open(dir / "x.safetensors");
  mq::Model model;
  model.files.push_back(file->mapped());
  const at::Tensor mapped = file->tensor(*file->find("big"));
  ASSERT_TRUE(at::equal(mapped, big));
  model.release(mapped);
  model.release(at::ones({4}));  // not the file's: nothing happens
  EXPECT_TRUE(at::equal(mapped, big));
  EXPECT_EQ(file->tensor(*file->find("a")).sum().item<float>(), 3.0f);
}

}  // namespace
