// Safetensors checkpoints: an mmap-based reader for single files and sharded folders
// (model.safetensors.index.json), and a writer. The reader validates strictly before it hands out
// a byte: header length bounds, valid JSON, known dtypes, dtype x shape = byte size, offsets inside
// the data section, no overlaps, every indexed tensor present. Errors are SafetensorsError and name
// the file and, where there is one, the tensor. Reading only the header never touches tensor data,
// so sparse files (as the 671B layout test uses) cost nothing.
// Thread-safety: an opened File/Checkpoint is immutable; share it across threads freely.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace sy::model {

enum class DType : std::uint8_t { F8_E4M3, BF16, F16, F32, I64 };
inline constexpr int kDTypeCount = 5;

std::size_t dtype_size(DType dtype);             // bytes per element
std::string_view dtype_name(DType dtype);        // the safetensors spelling, e.g. "F8_E4M3"
std::optional<DType> parse_dtype(std::string_view name);

class SafetensorsError : public std::runtime_error {
 public:
  SafetensorsError(std::string file, std::string tensor, const std::string& problem);
  const std::string& file() const { return file_; }
  const std::string& tensor() const { return tensor_; }  // empty when the problem is file-wide

 private:
  std::string file_;
  std::string tensor_;
};

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  // byte offsets into the data section (after the header)
  std::uint64_t end = 0;
  std::int64_t numel() const;
  std::uint64_t byte_size() const { return end - begin; }
};

// A tensor's bytes inside a mapped file. Valid while the File (or Checkpoint) lives.
struct TensorView {
  const TensorInfo* info = nullptr;
  std::span<const std::byte> bytes;
  template <class T>
  // REQUIRES: the data is aligned for T. Files written back to back in an order that breaks
  // alignment (an F32 after an odd-sized F8 tensor) are refused here rather than read through a
  // misaligned pointer; SafetensorsWriter and Hugging Face's writer never produce them for V3.
  std::span<const T> as() const {
    if (reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(T) != 0) {
      throw std::runtime_error("tensor " + (info != nullptr ? info->name : std::string("?")) +
                               " is not aligned for its dtype in its file");
    }
    return {reinterpret_cast<const T*>(bytes.data()), bytes.size() / sizeof(T)};
  }
};

// Parses and validates a safetensors header against the size of the whole file.
// `prefix` holds at least the first 8 + header_length bytes of the file (the fuzz target passes
// arbitrary bytes). Tensors are returned sorted by begin offset; metadata ("__metadata__") apart.
struct ParsedHeader {
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  std::uint64_t data_offset = 0;  // 8 + header length
};
ParsedHeader parse_header(std::span<const std::byte> prefix, std::uint64_t file_size,
                          const std::string& file_name);

// Largest header the reader accepts (the format's own limit is 100 MB).
inline constexpr std::uint64_t kMaxHeaderBytes = 100u << 20;

// One mapped .safetensors file.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::filesystem::path& path);
  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::filesystem::path& path() const;
  const std::vector<TensorInfo>& tensors() const;
  const std::map<std::string, std::string>& metadata() const;
  const TensorInfo* find(std::string_view name) const;  // nullptr when absent
  TensorView view(std::string_view name) const;         // throws naming file and tensor

 private:
  struct Impl;
  explicit SafetensorsFile(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A checkpoint: a folder with model.safetensors.index.json and its shards, a folder with a single
// model.safetensors, or one .safetensors file. Every tensor the index lists must be in its shard.
class Checkpoint {
 public:
  static Checkpoint open(const std::filesystem::path& path);
  Checkpoint(Checkpoint&&) noexcept;
  Checkpoint& operator=(Checkpoint&&) noexcept;
  ~Checkpoint();

  const std::filesystem::path& path() const;
  std::size_t file_count() const;
  std::vector<std::string> names() const;  // sorted
  bool contains(std::string_view name) const;
  const TensorInfo* find(std::string_view name) const;  // nullptr when absent
  TensorView view(std::string_view name) const;         // throws naming the tensor
  const std::filesystem::path& file_of(std::string_view name) const;

 private:
  struct Impl;
  explicit Checkpoint(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Collects tensors and writes them. Tensors are laid out in insertion order, 8-byte aligned
// header (padded with spaces, as the reference writer does); output is byte-identical for
// identical input. Bytes are copied on add().
class SafetensorsWriter {
 public:
  void add(std::string name, DType dtype, std::vector<std::int64_t> shape, std::span<const std::byte> data);
  // Declares a tensor of zeros without holding its bytes: write() leaves a hole (a sparse file), so
  // layouts of any size (the full 671B checkpoint in tests) cost no memory and no disk blocks.
  void add_zeros(std::string name, DType dtype, std::vector<std::int64_t> shape);
  void set_metadata(std::string key, std::string value);
  std::uint64_t data_bytes() const;
  std::size_t tensor_count() const;
  void write(const std::filesystem::path& path) const;  // throws SafetensorsError on I/O failure

  // Writes the tensors as shards of about max_shard_bytes each, named
  // model-0000i-of-0000n.safetensors, plus model.safetensors.index.json ({"metadata":
  // {"total_size": N}, "weight_map": {name: file}}) into `dir`.
  void write_sharded(const std::filesystem::path& dir, std::uint64_t max_shard_bytes) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::byte> data;  // empty with zeros == true: a hole
    bool zeros = false;
    std::uint64_t byte_size = 0;  // dtype size x numel, checked on add
  };
  // Appends after checking the name (unique, not "__metadata__") and dtype x shape = byte_size.
  void append(Entry entry);
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
  // Kept beside entries_ so add() stays O(log n) for layouts of ~10^5 tensors.
  std::set<std::string, std::less<>> names_;
  std::uint64_t data_bytes_ = 0;
};

}  // namespace sy::model
