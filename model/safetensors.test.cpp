// Tests for model/safetensors: dtype table, writer/reader round trips (single, sharded, sparse),
// byte-identical output, and one test per corruption, each checking that the error names the file
// and, where there is one, the tensor. Every test writes under its own temp folder.
#include "model/safetensors.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <numeric>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace sy::model {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

struct DTypeCase {
  DType dtype;
  std::string_view name;
  std::size_t size;
};
constexpr std::array<DTypeCase, 5> kAllDTypes{{
    {DType::F8_E4M3, "F8_E4M3", 1},
    {DType::BF16, "BF16", 2},
    {DType::F16, "F16", 2},
    {DType::F32, "F32", 4},
    {DType::I64, "I64", 8},
}};
static_assert(kAllDTypes.size() == kDTypeCount, "the test table must cover every DType");

template <class T>
std::vector<std::byte> bytes_of(const std::vector<T>& values) {
  std::vector<std::byte> out(values.size() * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((i * 31 + seed * 7 + 1) & 0xff);
  return out;
}

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_all(const fs::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  ASSERT_TRUE(out.good()) << path;
}

// A safetensors file from a raw header text (used as given, so tests control every byte), an
// optional header length override, and `data_bytes` bytes of data.
std::string raw_file(const std::string& header, std::size_t data_bytes, std::optional<std::uint64_t> length = {}) {
  const std::uint64_t n = length.value_or(header.size());
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += header;
  out.append(data_bytes, '\x5a');
  return out;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("sy_safetensors_" + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs `fn`, expects a SafetensorsError whose message names `file` and `tensor` (when given).
  static void expect_error(const std::function<void()>& fn, const std::string& file, const std::string& tensor,
                           const std::string& problem = "") {
    try {
      fn();
      ADD_FAILURE() << "expected SafetensorsError naming " << file << " / " << tensor;
    } catch (const SafetensorsError& e) {
      const std::string what = e.what();
      EXPECT_THAT(what, HasSubstr(file));
      EXPECT_THAT(e.file(), HasSubstr(file));
      if (!tensor.empty()) {
        EXPECT_THAT(what, HasSubstr("'" + tensor + "'"));
        EXPECT_EQ(e.tensor(), tensor);
      }
      if (!problem.empty()) {
        EXPECT_THAT(what, HasSubstr(problem));
      }
    }
  }

  // Writes three F32 tensors of 16 bytes each as three shards.
  void write_three_shards() {
    SafetensorsWriter writer;
    for (const char* name : {"a.weight", "b.weight", "c.weight"}) {
      writer.add(name, DType::F32, {4}, pattern(16, 1));
    }
    writer.write_sharded(dir_, 16);
  }

  fs::path dir_;
};

TEST(SafetensorsDType, TableMatchesForEveryDType) {
  for (const DTypeCase& c : kAllDTypes) {
    EXPECT_EQ(dtype_name(c.dtype), c.name);
    EXPECT_EQ(dtype_size(c.dtype), c.size);
    ASSERT_TRUE(parse_dtype(c.name).has_value()) << c.name;
    EXPECT_EQ(*parse_dtype(c.name), c.dtype);
  }
  EXPECT_FALSE(parse_dtype("F64").has_value());
  EXPECT_FALSE(parse_dtype("f32").has_value());
  EXPECT_FALSE(parse_dtype("").has_value());
}

TEST_F(SafetensorsTest, RoundTripsEveryDTypeWithMetadata) {
  SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  writer.set_metadata("note", "quote \" and \xc3\xa9");
  std::vector<std::vector<std::byte>> payloads;
  unsigned seed = 0;
  for (const DTypeCase& c : kAllDTypes) {
    // Odd element counts put later tensors at unaligned offsets: layout is consecutive.
    payloads.push_back(pattern(c.size * 3 * 5, seed++));
    writer.add(std::string("t.") + std::string(c.name), c.dtype, {3, 5}, payloads.back());
  }
  writer.add("scalar", DType::I64, {}, bytes_of(std::vector<std::int64_t>{-42}));
  writer.add("empty", DType::F32, {0, 7}, {});
  EXPECT_EQ(writer.tensor_count(), kAllDTypes.size() + 2);

  const fs::path path = dir_ / "all.safetensors";
  writer.write(path);
  const std::string raw = read_all(path);
  std::uint64_t header_length = 0;
  std::memcpy(&header_length, raw.data(), 8);
  EXPECT_EQ((8 + header_length) % 8, 0u) << "data section must start 8-byte aligned";
  EXPECT_EQ(raw.size(), 8 + header_length + writer.data_bytes());

  const SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.path(), path);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.metadata().at("note"), "quote \" and \xc3\xa9");
  ASSERT_EQ(file.tensors().size(), kAllDTypes.size() + 2);
  for (std::size_t i = 1; i < file.tensors().size(); ++i) {
    EXPECT_LE(file.tensors()[i - 1].begin, file.tensors()[i].begin) << "tensors come sorted by offset";
  }
  for (std::size_t i = 0; i < kAllDTypes.size(); ++i) {
    const std::string name = std::string("t.") + std::string(kAllDTypes[i].name);
    const TensorView view = file.view(name);
    ASSERT_NE(view.info, nullptr);
    EXPECT_EQ(view.info->dtype, kAllDTypes[i].dtype);
    EXPECT_EQ(view.info->shape, (std::vector<std::int64_t>{3, 5}));
    EXPECT_EQ(view.info->numel(), 15);
    ASSERT_EQ(view.bytes.size(), payloads[i].size());
    EXPECT_TRUE(std::equal(view.bytes.begin(), view.bytes.end(), payloads[i].begin())) << name;
  }
  const TensorView scalar = file.view("scalar");
  EXPECT_TRUE(scalar.info->shape.empty());
  std::int64_t scalar_value = 0;
  std::memcpy(&scalar_value, scalar.bytes.data(), sizeof scalar_value);
  EXPECT_EQ(scalar_value, -42);
  EXPECT_EQ(file.view("empty").bytes.size(), 0u);
  EXPECT_EQ(file.find("missing"), nullptr);

  // A path to one file and a folder holding model.safetensors both open as checkpoints.
  const Checkpoint single = Checkpoint::open(path);
  EXPECT_EQ(single.file_count(), 1u);
  EXPECT_TRUE(single.contains("t.BF16"));
  fs::copy_file(path, dir_ / "model.safetensors");
  const Checkpoint folder = Checkpoint::open(dir_);
  EXPECT_EQ(folder.file_count(), 1u);
  EXPECT_EQ(folder.names().size(), kAllDTypes.size() + 2);
  EXPECT_EQ(folder.file_of("scalar"), dir_ / "model.safetensors");
}

TEST_F(SafetensorsTest, ShardedRoundTripThroughCheckpoint) {
  SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  // 40 + 40 | 100 (larger than the limit: a shard of its own) | 8 + 8 + 8
  writer.add("layers.0.w", DType::F32, {10}, pattern(40, 1));
  writer.add("layers.0.b", DType::BF16, {20}, pattern(40, 2));
  writer.add("embed", DType::F8_E4M3, {10, 10}, pattern(100, 3));
  writer.add("layers.1.w", DType::I64, {1}, pattern(8, 4));
  writer.add_zeros("layers.1.z", DType::F16, {4});
  writer.add("layers.1.b", DType::F32, {2}, pattern(8, 6));
  writer.write_sharded(dir_, 80);

  for (const char* name : {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                           "model-00003-of-00003.safetensors", "model.safetensors.index.json"}) {
    EXPECT_TRUE(fs::exists(dir_ / name)) << name;
  }
  const std::string index_text = read_all(dir_ / "model.safetensors.index.json");
  EXPECT_EQ(index_text.back(), '\n');
  EXPECT_THAT(index_text, HasSubstr("{\n  \"metadata\": {\n    \"total_size\": 204\n  },\n  \"weight_map\": {\n"));
  const auto index = nlohmann::json::parse(index_text);
  EXPECT_EQ(index["weight_map"]["embed"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["layers.1.z"], "model-00003-of-00003.safetensors");

  const Checkpoint checkpoint = Checkpoint::open(dir_);
  EXPECT_EQ(checkpoint.path(), dir_);
  EXPECT_EQ(checkpoint.file_count(), 3u);
  EXPECT_EQ(checkpoint.names(), (std::vector<std::string>{"embed", "layers.0.b", "layers.0.w", "layers.1.b",
                                                          "layers.1.w", "layers.1.z"}));
  EXPECT_EQ(checkpoint.file_of("layers.0.b"), dir_ / "model-00001-of-00003.safetensors");
  const TensorView embed = checkpoint.view("embed");
  const auto expected = pattern(100, 3);
  ASSERT_EQ(embed.bytes.size(), expected.size());
  EXPECT_TRUE(std::equal(embed.bytes.begin(), embed.bytes.end(), expected.begin()));
  const TensorView zeros = checkpoint.view("layers.1.z");
  EXPECT_TRUE(std::all_of(zeros.bytes.begin(), zeros.bytes.end(), [](std::byte b) { return b == std::byte{0}; }));
  EXPECT_EQ(checkpoint.find("layers.1.w")->dtype, DType::I64);
  EXPECT_EQ(checkpoint.find("nope"), nullptr);
  EXPECT_FALSE(checkpoint.contains("nope"));
  EXPECT_EQ(SafetensorsFile::open(dir_ / "model-00003-of-00003.safetensors").metadata().at("format"), "pt");
}

TEST_F(SafetensorsTest, WriterOutputIsByteIdentical) {
  auto build = [] {
    SafetensorsWriter writer;
    writer.set_metadata("b", "2");
    writer.set_metadata("a", "1");
    writer.add("z", DType::F16, {3}, pattern(6, 1));
    writer.add("a", DType::F32, {2, 2}, pattern(16, 2));
    writer.add_zeros("m", DType::BF16, {5});
    return writer;
  };
  build().write(dir_ / "one.safetensors");
  build().write(dir_ / "two.safetensors");
  EXPECT_EQ(read_all(dir_ / "one.safetensors"), read_all(dir_ / "two.safetensors"));
  // Insertion order, not name order, decides the layout.
  EXPECT_EQ(SafetensorsFile::open(dir_ / "one.safetensors").tensors().front().name, "z");

  build().write_sharded(dir_ / "s1", 16);
  build().write_sharded(dir_ / "s2", 16);
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir_ / "s1")) names.push_back(entry.path().filename());
  EXPECT_EQ(names.size(), 4u);  // 3 shards + index, no temporaries left behind
  for (const std::string& name : names) {
    EXPECT_EQ(read_all(dir_ / "s1" / name), read_all(dir_ / "s2" / name)) << name;
  }
}

TEST_F(SafetensorsTest, SparseZerosOfAHugeTensorWriteQuickly) {
  SafetensorsWriter writer;
  writer.add("small", DType::F32, {2}, pattern(8, 9));
  writer.add_zeros("huge", DType::F8_E4M3, {1 << 20, 1 << 16});  // 64 GiB
  writer.add("tail", DType::I64, {1}, pattern(8, 10));
  const std::uint64_t huge_bytes = std::uint64_t{1} << 36;
  EXPECT_EQ(writer.data_bytes(), huge_bytes + 16);

  const fs::path path = dir_ / "huge.safetensors";
  const auto start = std::chrono::steady_clock::now();
  writer.write(path);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LT(elapsed, std::chrono::seconds(5));

  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_GT(static_cast<std::uint64_t>(st.st_size), huge_bytes);
  EXPECT_LT(static_cast<std::uint64_t>(st.st_blocks) * 512, std::uint64_t{1} << 20) << "zeros must be a hole";

  const Checkpoint checkpoint = Checkpoint::open(path);
  EXPECT_EQ(checkpoint.find("huge")->byte_size(), huge_bytes);
  EXPECT_EQ(checkpoint.find("huge")->numel(), std::int64_t{1} << 36);
  const TensorView huge = checkpoint.view("huge");
  EXPECT_EQ(huge.bytes.size(), huge_bytes);
  EXPECT_EQ(huge.bytes[huge_bytes / 2], std::byte{0});  // one page of the hole, read as zeros
  const TensorView tail = checkpoint.view("tail");
  const auto expected = pattern(8, 10);
  EXPECT_TRUE(std::equal(tail.bytes.begin(), tail.bytes.end(), expected.begin()));
}

TEST_F(SafetensorsTest, WriterRejectsBadTensors) {
  SafetensorsWriter writer;
  writer.add("ok", DType::F32, {2}, pattern(8, 0));
  expect_error([&] { writer.add("short", DType::F32, {3}, pattern(8, 0)); }, "", "short", "needs 12 bytes");
  expect_error([&] { writer.add("ok", DType::F32, {2}, pattern(8, 0)); }, "", "ok", "added twice");
  expect_error([&] { writer.add_zeros("neg", DType::F16, {2, -1}); }, "", "neg");
  expect_error([&] { writer.add_zeros("overflow", DType::I64, {1LL << 40, 1LL << 40}); }, "", "overflow");
  expect_error([&] { writer.add_zeros("__metadata__", DType::F16, {1}); }, "", "__metadata__");
  expect_error([&] { writer.add_zeros("bad\xff utf8", DType::F16, {1}); }, "", "bad\xff utf8");
  EXPECT_EQ(writer.tensor_count(), 1u);
  EXPECT_EQ(writer.data_bytes(), 8u);
}

TEST_F(SafetensorsTest, ViewOfUnknownTensorNamesIt) {
  SafetensorsWriter writer;
  writer.add("present", DType::F32, {1}, pattern(4, 0));
  const fs::path path = dir_ / "one.safetensors";
  writer.write(path);
  const SafetensorsFile file = SafetensorsFile::open(path);
  expect_error([&] { (void)file.view("absent"); }, "one.safetensors", "absent", "no such tensor");
  const Checkpoint checkpoint = Checkpoint::open(path);
  expect_error([&] { (void)checkpoint.view("absent"); }, "one.safetensors", "absent");
  expect_error([&] { (void)checkpoint.file_of("absent"); }, "one.safetensors", "absent");
}

TEST_F(SafetensorsTest, AcceptsPaddedHeaderAndEmptyDataSection) {
  write_all(dir_ / "empty.safetensors", raw_file("{\"__metadata__\":{\"k\":\"v\"}}     ", 0));
  const SafetensorsFile file = SafetensorsFile::open(dir_ / "empty.safetensors");
  EXPECT_TRUE(file.tensors().empty());
  EXPECT_EQ(file.metadata().at("k"), "v");

  // Empty tensors own no bytes, so sharing an offset with another tensor is not an overlap.
  write_all(dir_ / "zero.safetensors",
            raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                     R"("e":{"dtype":"F16","shape":[0],"data_offsets":[4,4]}}  )",
                     8));
  EXPECT_EQ(SafetensorsFile::open(dir_ / "zero.safetensors").tensors().size(), 2u);
}

// --- Corruptions: one test each; the message names the file and, where there is one, the tensor.

TEST_F(SafetensorsTest, RejectsTruncatedData) {
  SafetensorsWriter writer;
  writer.add("first", DType::F32, {4}, pattern(16, 0));
  writer.add("last", DType::F32, {4}, pattern(16, 1));
  const fs::path path = dir_ / "truncated.safetensors";
  writer.write(path);
  fs::resize_file(path, fs::file_size(path) - 5);
  expect_error([&] { SafetensorsFile::open(path); }, "truncated.safetensors", "last", "beyond the data section");
}

TEST_F(SafetensorsTest, RejectsHeaderLengthBeyondFile) {
  write_all(dir_ / "long.safetensors", raw_file("{}      ", 0, 1000));
  expect_error([&] { SafetensorsFile::open(dir_ / "long.safetensors"); }, "long.safetensors", "", "beyond the file");
}

TEST_F(SafetensorsTest, RejectsHeaderLengthZero) {
  write_all(dir_ / "zero.safetensors", raw_file("{}", 0, 0));
  expect_error([&] { SafetensorsFile::open(dir_ / "zero.safetensors"); }, "zero.safetensors", "", "header length is 0");
}

TEST_F(SafetensorsTest, RejectsFileShorterThanEightBytes) {
  write_all(dir_ / "tiny.safetensors", "abc");
  expect_error([&] { SafetensorsFile::open(dir_ / "tiny.safetensors"); }, "tiny.safetensors", "", "shorter");
}

TEST_F(SafetensorsTest, RejectsOverlappingOffsets) {
  write_all(dir_ / "overlap.safetensors",
            raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                     R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                     12));
  expect_error([&] { SafetensorsFile::open(dir_ / "overlap.safetensors"); }, "overlap.safetensors", "b",
               "overlap tensor 'a'");
}

TEST_F(SafetensorsTest, RejectsUnknownDType) {
  write_all(dir_ / "dtype.safetensors", raw_file(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8));
  expect_error([&] { SafetensorsFile::open(dir_ / "dtype.safetensors"); }, "dtype.safetensors", "w",
               "unknown dtype 'F64'");
}

TEST_F(SafetensorsTest, RejectsShapeOffsetSizeMismatch) {
  write_all(dir_ / "size.safetensors", raw_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8));
  expect_error([&] { SafetensorsFile::open(dir_ / "size.safetensors"); }, "size.safetensors", "w", "needs 12 bytes");
}

TEST_F(SafetensorsTest, RejectsInvalidJson) {
  write_all(dir_ / "json.safetensors", raw_file(R"({"w":{"dtype":"F32",)", 0));
  expect_error([&] { SafetensorsFile::open(dir_ / "json.safetensors"); }, "json.safetensors", "", "not valid JSON");
}

TEST_F(SafetensorsTest, RejectsOffsetsBeyondFile) {
  write_all(dir_ / "beyond.safetensors",
            raw_file(R"({"w":{"dtype":"F8_E4M3","shape":[400],"data_offsets":[0,400]}})", 16));
  expect_error([&] { SafetensorsFile::open(dir_ / "beyond.safetensors"); }, "beyond.safetensors", "w",
               "beyond the data section");
}

TEST_F(SafetensorsTest, RejectsMissingShard) {
  write_three_shards();
  fs::remove(dir_ / "model-00002-of-00003.safetensors");
  expect_error([&] { Checkpoint::open(dir_); }, "model-00002-of-00003.safetensors", "b.weight", "shard is missing");
}

TEST_F(SafetensorsTest, RejectsTensorListedInIndexButAbsentFromShard) {
  write_three_shards();
  auto index = nlohmann::json::parse(read_all(dir_ / "model.safetensors.index.json"));
  index["weight_map"]["ghost"] = "model-00001-of-00003.safetensors";
  write_all(dir_ / "model.safetensors.index.json", index.dump(2));
  expect_error([&] { Checkpoint::open(dir_); }, "model-00001-of-00003.safetensors", "ghost", "absent from the shard");
}

TEST_F(SafetensorsTest, RejectsTensorInShardButNotInIndex) {
  SafetensorsWriter writer;
  writer.add("a.weight", DType::F32, {4}, pattern(16, 1));
  writer.add("b.weight", DType::F32, {4}, pattern(16, 2));
  writer.add("c.weight", DType::F32, {4}, pattern(16, 3));
  writer.write_sharded(dir_, 32);  // {a, b} and {c}
  auto index = nlohmann::json::parse(read_all(dir_ / "model.safetensors.index.json"));
  index["weight_map"].erase("b.weight");
  write_all(dir_ / "model.safetensors.index.json", index.dump(2));
  expect_error([&] { Checkpoint::open(dir_); }, "model-00001-of-00002.safetensors", "b.weight", "not mapped");
}

TEST_F(SafetensorsTest, RejectsBadIndexJson) {
  write_three_shards();
  write_all(dir_ / "model.safetensors.index.json", "{\"weight_map\": [");
  expect_error([&] { Checkpoint::open(dir_); }, "model.safetensors.index.json", "", "not valid JSON");
  write_all(dir_ / "model.safetensors.index.json", R"({"weight_map": {"a.weight": "../escape.safetensors"}})");
  expect_error([&] { Checkpoint::open(dir_); }, "model.safetensors.index.json", "a.weight", "not inside the folder");
  write_all(dir_ / "model.safetensors.index.json", R"({"metadata": {}})");
  expect_error([&] { Checkpoint::open(dir_); }, "model.safetensors.index.json", "", "weight_map");
}

TEST_F(SafetensorsTest, RejectsFolderWithoutCheckpoint) {
  expect_error([&] { Checkpoint::open(dir_); }, dir_.string(), "", "neither");
  expect_error([&] { Checkpoint::open(dir_ / "nothing.safetensors"); }, "nothing.safetensors", "");
}

// The remaining header rules, checked through parse_header directly: {header, tensor, problem}.
TEST(SafetensorsParseHeader, RejectsEveryMalformedEntry) {
  struct Case {
    std::string header;
    std::string tensor;
    std::string problem;
  };
  const std::vector<Case> cases = {
      {R"([1,2])", "", "not a JSON object"},
      {R"({"w":[1]})", "w", "entry is not a JSON object"},
      {R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "w", "missing field 'dtype'"},
      {R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", "w", "missing field 'shape'"},
      {R"({"w":{"dtype":"F32","shape":[1]}})", "w", "missing field 'data_offsets'"},
      {R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", "w", "'dtype' is not a string"},
      {R"({"w":{"dtype":"F32","shape":{},"data_offsets":[0,4]}})", "w", "'shape' is not an array"},
      {R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "w", "not an integer"},
      {R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "w", "negative shape dimension"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "w", "not [begin, end]"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", "w", "non-negative"},
      {R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", "w", "begin 8 > end 4"},
      {R"({"w":{"dtype":"I64","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", "w", "overflows"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}})", "w", "unknown field 'extra'"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       "w", "declared twice"},
      {R"({"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})", "w", "'dtype' appears twice"},
      {R"({"__metadata__":{"k":1}})", "", "not a string"},
      {R"({"__metadata__":[]})", "", "__metadata__ is not a JSON object"},
  };
  for (const Case& c : cases) {
    const std::string file = raw_file(c.header, 16);
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(file.data()), file.size());
    try {
      parse_header(bytes, file.size(), "case.safetensors");
      ADD_FAILURE() << "accepted: " << c.header;
    } catch (const SafetensorsError& e) {
      EXPECT_THAT(e.what(), HasSubstr("case.safetensors")) << c.header;
      EXPECT_EQ(e.tensor(), c.tensor) << c.header;
      EXPECT_THAT(e.what(), HasSubstr(c.problem)) << c.header;
    }
  }
  // A header length over the limit is refused before anything is read.
  const std::string huge = raw_file("{}", 0, kMaxHeaderBytes + 1);
  EXPECT_THROW(parse_header({reinterpret_cast<const std::byte*>(huge.data()), huge.size()}, std::uint64_t{1} << 40,
                            "big.safetensors"),
               SafetensorsError);
}

}  // namespace
}  // namespace sy::model
