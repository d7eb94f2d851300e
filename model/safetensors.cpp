// Safetensors reader (mmap + strict header validation) and writer (sparse holes for zero tensors,
// temp-file-and-rename so no half-written file ever carries its final name). See safetensors.hpp.
// Nothing here holds global state; opened files are immutable after open().
#include "model/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

namespace sy::model {
namespace {

using json = nlohmann::json;

struct DTypeRow {
  DType dtype;
  std::string_view name;
  std::size_t size;
};

// Indexed by the enum's value; the assert breaks the build when a dtype is added without a row.
constexpr std::array<DTypeRow, 5> kDTypes{{
    {DType::F8_E4M3, "F8_E4M3", 1},
    {DType::BF16, "BF16", 2},
    {DType::F16, "F16", 2},
    {DType::F32, "F32", 4},
    {DType::I64, "I64", 8},
}};
static_assert(kDTypes.size() == kDTypeCount, "every DType needs a row in kDTypes");

constexpr bool dtype_rows_in_enum_order() {
  for (std::size_t i = 0; i < kDTypes.size(); ++i) {
    if (static_cast<std::size_t>(kDTypes[i].dtype) != i) return false;
  }
  return true;
}
static_assert(dtype_rows_in_enum_order(), "kDTypes rows must follow the enum order");

const DTypeRow& row_of(DType dtype) {
  const auto index = static_cast<std::size_t>(dtype);
  if (index >= kDTypes.size()) throw std::invalid_argument("invalid DType value");
  return kDTypes[index];
}

std::string describe(const std::string& file, const std::string& tensor, const std::string& problem) {
  std::string out = file.empty() ? std::string("safetensors") : file;
  if (!tensor.empty()) out += ": tensor '" + tensor + "'";
  out += ": " + problem;
  return out;
}

std::string errno_text(int err) { return std::strerror(err); }

// dtype size x product(shape), or nullopt when a dim is negative or the product overflows u64.
// A header can declare any shape; overflow must be an error, not a wrapped size that happens to
// match the offsets.
std::optional<std::uint64_t> checked_byte_size(DType dtype, const std::vector<std::int64_t>& shape) {
  std::uint64_t bytes = dtype_size(dtype);
  for (const std::int64_t dim : shape) {
    if (dim < 0) return std::nullopt;
    if (__builtin_mul_overflow(bytes, static_cast<std::uint64_t>(dim), &bytes)) return std::nullopt;
  }
  return bytes;
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i != 0) out += ",";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

// Parses with a callback that remembers the first duplicate key of any object: nlohmann keeps the
// last value silently, which would let a header declare a tensor twice and hide the first entry.
json parse_rejecting_duplicates(const char* begin, const char* end, const std::string& file) {
  std::vector<std::set<std::string>> open_objects;
  std::string top_key;  // the top-level key (tensor name) being parsed
  std::optional<std::pair<std::string, std::string>> duplicate;  // (tensor, key)
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key: {
        if (open_objects.empty() || !parsed.is_string()) break;
        const auto& key = parsed.get_ref<const std::string&>();
        if (open_objects.size() == 1) top_key = key;
        if (!open_objects.back().insert(key).second && !duplicate) {
          duplicate.emplace(top_key, open_objects.size() == 1 ? std::string() : key);
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(begin, end, callback);
  } catch (const json::exception& e) {
    throw SafetensorsError(file, "", std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) throw SafetensorsError(file, "", "header is not a JSON object");
  if (duplicate) {
    throw SafetensorsError(file, duplicate->first,
                           duplicate->second.empty() ? "declared twice in the header"
                                                     : "key '" + duplicate->second + "' appears twice");
  }
  return header;
}

std::uint64_t read_u64_le(const std::byte* p) {
  std::uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | static_cast<std::uint64_t>(p[i]);
  return value;
}

TensorInfo parse_entry(const std::string& name, const json& entry, const std::string& file) {
  auto fail = [&](const std::string& problem) { return SafetensorsError(file, name, problem); };
  if (!entry.is_object()) throw fail("entry is not a JSON object");
  for (const auto& [key, value] : entry.items()) {
    (void)value;
    // Strict: an unknown key is most likely a misspelt required one ("data_offset").
    if (key != "dtype" && key != "shape" && key != "data_offsets") throw fail("unknown field '" + key + "'");
  }
  TensorInfo info;
  info.name = name;

  const auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end()) throw fail("missing field 'dtype'");
  if (!dtype_it->is_string()) throw fail("field 'dtype' is not a string");
  const auto& dtype_name_text = dtype_it->get_ref<const std::string&>();
  const auto dtype = parse_dtype(dtype_name_text);
  if (!dtype) throw fail("unknown dtype '" + dtype_name_text + "'");
  info.dtype = *dtype;

  const auto shape_it = entry.find("shape");
  if (shape_it == entry.end()) throw fail("missing field 'shape'");
  if (!shape_it->is_array()) throw fail("field 'shape' is not an array");
  info.shape.reserve(shape_it->size());
  for (const json& dim : *shape_it) {
    if (dim.is_number_unsigned()) {
      const auto value = dim.get<std::uint64_t>();
      if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        throw fail("shape dimension " + std::to_string(value) + " is too large");
      }
      info.shape.push_back(static_cast<std::int64_t>(value));
    } else if (dim.is_number_integer()) {
      const auto value = dim.get<std::int64_t>();
      if (value < 0) throw fail("negative shape dimension " + std::to_string(value));
      info.shape.push_back(value);
    } else {
      throw fail("shape dimension is not an integer");
    }
  }

  const auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end()) throw fail("missing field 'data_offsets'");
  if (!offsets_it->is_array() || offsets_it->size() != 2) throw fail("field 'data_offsets' is not [begin, end]");
  for (const json& offset : *offsets_it) {
    if (!offset.is_number_unsigned()) throw fail("data_offsets are not non-negative integers");
  }
  info.begin = (*offsets_it)[0].get<std::uint64_t>();
  info.end = (*offsets_it)[1].get<std::uint64_t>();
  if (info.begin > info.end) {
    throw fail("data_offsets begin " + std::to_string(info.begin) + " > end " + std::to_string(info.end));
  }
  const auto bytes = checked_byte_size(info.dtype, info.shape);
  if (!bytes) throw fail("shape " + shape_text(info.shape) + " overflows a 64-bit byte count");
  if (*bytes != info.end - info.begin) {
    throw fail(std::string(dtype_name(info.dtype)) + " " + shape_text(info.shape) + " needs " +
               std::to_string(*bytes) + " bytes but data_offsets span " + std::to_string(info.end - info.begin));
  }
  return info;
}

// Writes all of `bytes` at `offset`, retrying short writes and EINTR.
bool pwrite_all(int fd, const void* bytes, std::size_t size, std::uint64_t offset) {
  const auto* p = static_cast<const char*>(bytes);
  while (size > 0) {
    const ssize_t n = ::pwrite(fd, p, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    size -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
  return true;
}

// Lets `producer(fd)` fill a temporary sibling (returning false on an I/O error, errno set), then
// renames it onto `path`, so a crash leaves the old file or none, never a partial one by that name.
template <class Producer>
void write_atomically(const std::filesystem::path& path, Producer&& producer) {
  const std::string final_name = path.string();
  const std::filesystem::path tmp = final_name + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw SafetensorsError(final_name, "", "cannot create " + tmp.string() + ": " + errno_text(errno));
  auto fail = [&](const std::string& what) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return SafetensorsError(final_name, "", what + ": " + errno_text(err));
  };
  bool ok = false;
  try {
    ok = producer(fd);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (!ok) throw fail("write failed");
  // fsync before rename: otherwise a power loss can leave the final name pointing at an empty
  // file. Cheap for sparse layouts, which have only the header dirty.
  if (::fsync(fd) != 0) throw fail("fsync failed");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw SafetensorsError(final_name, "", "close failed: " + errno_text(err));
  }
  if (::rename(tmp.c_str(), final_name.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw SafetensorsError(final_name, "", "rename failed: " + errno_text(err));
  }
}

std::string json_string(const std::string& text, const std::string& tensor) {
  try {
    return json(text).dump();
  } catch (const json::exception& e) {
    throw SafetensorsError("", tensor, std::string("cannot encode as JSON: ") + e.what());
  }
}

}  // namespace

std::size_t dtype_size(DType dtype) { return row_of(dtype).size; }
std::string_view dtype_name(DType dtype) { return row_of(dtype).name; }
std::optional<DType> parse_dtype(std::string_view name) {
  for (const DTypeRow& row : kDTypes) {
    if (row.name == name) return row.dtype;
  }
  return std::nullopt;
}

SafetensorsError::SafetensorsError(std::string file, std::string tensor, const std::string& problem)
    : std::runtime_error(describe(file, tensor, problem)), file_(std::move(file)), tensor_(std::move(tensor)) {}

std::int64_t TensorInfo::numel() const {
  std::int64_t n = 1;
  for (const std::int64_t dim : shape) n *= dim;
  return n;
}

ParsedHeader parse_header(std::span<const std::byte> prefix, std::uint64_t file_size, const std::string& file_name) {
  if (file_size < 8) {
    throw SafetensorsError(file_name, "", "file is " + std::to_string(file_size) +
                                              " bytes, shorter than the 8-byte header length");
  }
  if (prefix.size() < 8) throw SafetensorsError(file_name, "", "fewer than 8 bytes given to parse");
  const std::uint64_t header_length = read_u64_le(prefix.data());
  if (header_length == 0) throw SafetensorsError(file_name, "", "header length is 0");
  if (header_length > kMaxHeaderBytes) {
    throw SafetensorsError(file_name, "", "header length " + std::to_string(header_length) + " exceeds the " +
                                              std::to_string(kMaxHeaderBytes) + "-byte limit");
  }
  if (header_length > file_size - 8) {
    throw SafetensorsError(file_name, "", "header length " + std::to_string(header_length) +
                                              " runs beyond the file (" + std::to_string(file_size) + " bytes)");
  }
  if (prefix.size() - 8 < header_length) {
    throw SafetensorsError(file_name, "", "fewer bytes given than the header length");
  }

  const auto* text = reinterpret_cast<const char*>(prefix.data() + 8);
  // JSON allows trailing whitespace, which covers the writers' space padding.
  const json header = parse_rejecting_duplicates(text, text + header_length, file_name);

  ParsedHeader parsed;
  parsed.data_offset = 8 + header_length;
  const std::uint64_t data_size = file_size - parsed.data_offset;
  parsed.tensors.reserve(header.size());
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) throw SafetensorsError(file_name, "", "__metadata__ is not a JSON object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) throw SafetensorsError(file_name, "", "__metadata__ value for '" + key + "' is not a string");
        parsed.metadata.emplace(key, value.get<std::string>());
      }
      continue;
    }
    TensorInfo info = parse_entry(name, entry, file_name);
    if (info.end > data_size) {
      throw SafetensorsError(file_name, name, "data_offsets end " + std::to_string(info.end) +
                                                  " lies beyond the data section (" + std::to_string(data_size) +
                                                  " bytes; file truncated?)");
    }
    parsed.tensors.push_back(std::move(info));
  }

  std::sort(parsed.tensors.begin(), parsed.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  // Empty tensors own no bytes, so they cannot overlap anything; they are skipped.
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& info : parsed.tensors) {
    if (info.begin == info.end) continue;
    if (previous != nullptr && info.begin < previous->end) {
      throw SafetensorsError(file_name, info.name,
                             "bytes [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                                 ") overlap tensor '" + previous->name + "' [" + std::to_string(previous->begin) +
                                 ", " + std::to_string(previous->end) + ")");
    }
    if (previous == nullptr || info.end > previous->end) previous = &info;
  }
  return parsed;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

struct SafetensorsFile::Impl {
  std::filesystem::path path;
  const std::byte* mapping = nullptr;  // PROT_READ, MAP_PRIVATE; the whole file
  std::size_t mapping_size = 0;
  ParsedHeader header;
  std::map<std::string, std::size_t, std::less<>> by_name;  // index into header.tensors

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    if (mapping != nullptr) ::munmap(const_cast<std::byte*>(mapping), mapping_size);
  }
};

SafetensorsFile::SafetensorsFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string name = path.string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw SafetensorsError(name, "", "cannot open: " + errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw SafetensorsError(name, "", "cannot stat: " + errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw SafetensorsError(name, "", "not a regular file");
  }
  const auto file_size = static_cast<std::uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    parse_header({}, file_size, name);  // always throws here, with the shared message
  }
  // The whole file is mapped once; only the header pages are touched here, so opening a sparse or
  // huge checkpoint costs the header alone. The mapping outlives the descriptor.
  void* mapped = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (mapped == MAP_FAILED) throw SafetensorsError(name, "", "mmap failed: " + errno_text(map_err));

  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->mapping = static_cast<const std::byte*>(mapped);
  impl->mapping_size = file_size;
  impl->header = parse_header({impl->mapping, impl->mapping_size}, file_size, name);
  for (std::size_t i = 0; i < impl->header.tensors.size(); ++i) {
    impl->by_name.emplace(impl->header.tensors[i].name, i);
  }
  return SafetensorsFile(std::move(impl));
}

const std::filesystem::path& SafetensorsFile::path() const { return impl_->path; }
const std::vector<TensorInfo>& SafetensorsFile::tensors() const { return impl_->header.tensors; }
const std::map<std::string, std::string>& SafetensorsFile::metadata() const { return impl_->header.metadata; }

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  const auto it = impl_->by_name.find(name);
  return it == impl_->by_name.end() ? nullptr : &impl_->header.tensors[it->second];
}

TensorView SafetensorsFile::view(std::string_view name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) throw SafetensorsError(impl_->path.string(), std::string(name), "no such tensor");
  const std::byte* data = impl_->mapping + impl_->header.data_offset + info->begin;
  return TensorView{info, {data, static_cast<std::size_t>(info->byte_size())}};
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

namespace {
constexpr std::string_view kIndexName = "model.safetensors.index.json";
constexpr std::string_view kSingleName = "model.safetensors";
}  // namespace

struct Checkpoint::Impl {
  std::filesystem::path path;
  std::vector<SafetensorsFile> files;
  struct Location {
    std::size_t file;
    const TensorInfo* info;  // owned by files[file], whose Impl never moves
  };
  std::map<std::string, Location, std::less<>> tensors;

  void add_all(std::size_t file_index) {
    for (const TensorInfo& info : files[file_index].tensors()) tensors.emplace(info.name, Location{file_index, &info});
  }
  const Location* locate(std::string_view name) const {
    const auto it = tensors.find(name);
    return it == tensors.end() ? nullptr : &it->second;
  }
};

namespace {

// Reads model.safetensors.index.json's weight_map, grouped by shard file name (sorted, so shards
// are opened in a deterministic order).
std::map<std::string, std::vector<std::string>> read_index(const std::filesystem::path& index_path) {
  const std::string index_name = index_path.string();
  std::ifstream in(index_path, std::ios::binary);
  if (!in) throw SafetensorsError(index_name, "", "cannot open index");
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  const json index = parse_rejecting_duplicates(text.data(), text.data() + text.size(), index_name);
  const auto map_it = index.find("weight_map");
  if (map_it == index.end() || !map_it->is_object()) {
    throw SafetensorsError(index_name, "", "index has no \"weight_map\" object");
  }
  if (const auto meta = index.find("metadata"); meta != index.end() && !meta->is_object()) {
    throw SafetensorsError(index_name, "", "index \"metadata\" is not an object");
  }
  std::map<std::string, std::vector<std::string>> by_shard;
  for (const auto& [tensor, shard] : map_it->items()) {
    if (!shard.is_string()) throw SafetensorsError(index_name, tensor, "weight_map value is not a file name");
    const auto& shard_name = shard.get_ref<const std::string&>();
    const std::filesystem::path shard_path(shard_name);
    // Shards live beside the index; a name that escapes the folder is corrupt or hostile.
    bool escapes = shard_name.empty() || shard_path.is_absolute();
    for (const auto& part : shard_path) escapes = escapes || part == "..";
    if (escapes) throw SafetensorsError(index_name, tensor, "shard name '" + shard_name + "' is not inside the folder");
    by_shard[shard_name].push_back(tensor);
  }
  return by_shard;
}

}  // namespace

Checkpoint::Checkpoint(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Checkpoint::Checkpoint(Checkpoint&&) noexcept = default;
Checkpoint& Checkpoint::operator=(Checkpoint&&) noexcept = default;
Checkpoint::~Checkpoint() = default;

Checkpoint Checkpoint::open(const std::filesystem::path& path) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) {
    if (!std::filesystem::exists(path, ec)) throw SafetensorsError(path.string(), "", "no such file or directory");
    impl->files.push_back(SafetensorsFile::open(path));
    impl->add_all(0);
    return Checkpoint(std::move(impl));
  }

  const auto index_path = path / kIndexName;
  if (!std::filesystem::exists(index_path, ec)) {
    const auto single = path / kSingleName;
    if (!std::filesystem::exists(single, ec)) {
      throw SafetensorsError(path.string(), "",
                             "folder has neither " + std::string(kIndexName) + " nor " + std::string(kSingleName));
    }
    impl->files.push_back(SafetensorsFile::open(single));
    impl->add_all(0);
    return Checkpoint(std::move(impl));
  }

  const auto by_shard = read_index(index_path);
  impl->files.reserve(by_shard.size());
  for (const auto& [shard_name, listed] : by_shard) {
    const auto shard_path = path / shard_name;
    if (!std::filesystem::exists(shard_path, ec)) {
      throw SafetensorsError(shard_path.string(), listed.front(),
                             "shard is missing (referenced by " + index_path.string() + ")");
    }
    const std::size_t file_index = impl->files.size();
    impl->files.push_back(SafetensorsFile::open(shard_path));
    const SafetensorsFile& file = impl->files.back();
    for (const std::string& tensor : listed) {
      if (file.find(tensor) == nullptr) {
        throw SafetensorsError(shard_path.string(), tensor,
                               "listed in " + index_path.string() + " but absent from the shard");
      }
    }
    const std::set<std::string_view> expected(listed.begin(), listed.end());
    for (const TensorInfo& info : file.tensors()) {
      if (!expected.contains(info.name)) {
        throw SafetensorsError(shard_path.string(), info.name,
                               "present in the shard but not mapped to it by " + index_path.string());
      }
    }
    impl->add_all(file_index);
  }
  return Checkpoint(std::move(impl));
}

const std::filesystem::path& Checkpoint::path() const { return impl_->path; }
std::size_t Checkpoint::file_count() const { return impl_->files.size(); }

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(impl_->tensors.size());
  for (const auto& [name, location] : impl_->tensors) out.push_back(name);
  return out;
}

bool Checkpoint::contains(std::string_view name) const { return impl_->locate(name) != nullptr; }

const TensorInfo* Checkpoint::find(std::string_view name) const {
  const auto* location = impl_->locate(name);
  return location == nullptr ? nullptr : location->info;
}

TensorView Checkpoint::view(std::string_view name) const {
  const auto* location = impl_->locate(name);
  if (location == nullptr) throw SafetensorsError(impl_->path.string(), std::string(name), "no such tensor");
  return impl_->files[location->file].view(name);
}

const std::filesystem::path& Checkpoint::file_of(std::string_view name) const {
  const auto* location = impl_->locate(name);
  if (location == nullptr) throw SafetensorsError(impl_->path.string(), std::string(name), "no such tensor");
  return impl_->files[location->file].path();
}

// ---------------------------------------------------------------------------------------------
// SafetensorsWriter

void SafetensorsWriter::append(Entry entry) {
  if (entry.name == "__metadata__") throw SafetensorsError("", entry.name, "name is reserved for metadata");
  if (names_.contains(entry.name)) throw SafetensorsError("", entry.name, "added twice");
  json_string(entry.name, entry.name);  // rejects names JSON cannot carry (invalid UTF-8)
  const auto bytes = checked_byte_size(entry.dtype, entry.shape);
  if (!bytes) throw SafetensorsError("", entry.name, "shape " + shape_text(entry.shape) + " is negative or overflows");
  if (!entry.zeros && *bytes != entry.data.size()) {
    throw SafetensorsError("", entry.name,
                           std::string(dtype_name(entry.dtype)) + " " + shape_text(entry.shape) + " needs " +
                               std::to_string(*bytes) + " bytes but " + std::to_string(entry.data.size()) +
                               " were given");
  }
  std::uint64_t total = 0;
  if (__builtin_add_overflow(data_bytes_, *bytes, &total)) {
    throw SafetensorsError("", entry.name, "total data size overflows 64 bits");
  }
  entry.byte_size = *bytes;
  names_.insert(entry.name);
  data_bytes_ = total;
  entries_.push_back(std::move(entry));
}

void SafetensorsWriter::add(std::string name, DType dtype, std::vector<std::int64_t> shape,
                            std::span<const std::byte> data) {
  append(Entry{std::move(name), dtype, std::move(shape), std::vector<std::byte>(data.begin(), data.end()), false, 0});
}

void SafetensorsWriter::add_zeros(std::string name, DType dtype, std::vector<std::int64_t> shape) {
  append(Entry{std::move(name), dtype, std::move(shape), {}, true, 0});
}

void SafetensorsWriter::set_metadata(std::string key, std::string value) {
  json_string(key, "");
  json_string(value, "");
  metadata_[std::move(key)] = std::move(value);
}

std::uint64_t SafetensorsWriter::data_bytes() const { return data_bytes_; }
std::size_t SafetensorsWriter::tensor_count() const { return entries_.size(); }

namespace {

// The header is emitted by hand: nlohmann objects sort keys, and the layout promises tensors in
// insertion order. Padded with spaces so the data section starts 8-byte aligned.
template <class Entries>
std::string build_header(const Entries& entries, const std::map<std::string, std::string>& metadata) {
  std::string out = "{";
  bool first = true;
  if (!metadata.empty()) {
    out += "\"__metadata__\":{";
    for (auto it = metadata.begin(); it != metadata.end(); ++it) {
      if (it != metadata.begin()) out += ",";
      out += json_string(it->first, "") + ":" + json_string(it->second, "");
    }
    out += "}";
    first = false;
  }
  std::uint64_t offset = 0;
  for (const auto* entry : entries) {
    if (!first) out += ",";
    first = false;
    out += json_string(entry->name, entry->name);
    out += ":{\"dtype\":\"";
    out += dtype_name(entry->dtype);
    out += "\",\"shape\":" + shape_text(entry->shape);
    out += ",\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + entry->byte_size) + "]}";
    offset += entry->byte_size;
  }
  out += "}";
  out.append((8 - (8 + out.size()) % 8) % 8, ' ');
  return out;
}

// Writes entries (pointers, in layout order) as one file. Zero tensors are never written:
// ftruncate extends the file with a hole, so they take neither memory nor disk blocks. A template
// so it can take the writer's private Entry without naming it.
template <class Entries>
void write_entries(const std::filesystem::path& path, const Entries& entries,
                   const std::map<std::string, std::string>& metadata) {
  const std::string header = build_header(entries, metadata);
  const std::uint64_t data_offset = 8 + header.size();
  std::uint64_t total = data_offset;
  for (const auto* entry : entries) {
    if (__builtin_add_overflow(total, entry->byte_size, &total)) {
      throw SafetensorsError(path.string(), entry->name, "file size overflows 64 bits");
    }
  }
  if (total > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max())) {
    throw SafetensorsError(path.string(), "", "file size exceeds off_t");
  }
  write_atomically(path, [&](int fd) {
    if (::ftruncate(fd, static_cast<off_t>(total)) != 0) return false;
    std::array<unsigned char, 8> length{};
    for (std::size_t i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(header.size() >> (8 * i));
    if (!pwrite_all(fd, length.data(), length.size(), 0)) return false;
    if (!pwrite_all(fd, header.data(), header.size(), 8)) return false;
    std::uint64_t offset = data_offset;
    for (const auto* entry : entries) {
      if (!entry->zeros && !pwrite_all(fd, entry->data.data(), entry->data.size(), offset)) return false;
      offset += entry->byte_size;
    }
    return true;
  });
}

}  // namespace

void SafetensorsWriter::write(const std::filesystem::path& path) const {
  std::vector<const Entry*> all;
  all.reserve(entries_.size());
  for (const Entry& entry : entries_) all.push_back(&entry);
  write_entries(path, all, metadata_);
}

void SafetensorsWriter::write_sharded(const std::filesystem::path& dir, std::uint64_t max_shard_bytes) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw SafetensorsError(dir.string(), "", "cannot create folder: " + ec.message());

  // Greedy in insertion order: a shard closes when the next tensor would push it past the limit.
  // A tensor larger than the limit gets a shard of its own.
  std::vector<std::vector<const Entry*>> shards(1);
  std::uint64_t shard_bytes = 0;
  for (const Entry& entry : entries_) {
    if (!shards.back().empty() && (entry.byte_size > max_shard_bytes || shard_bytes > max_shard_bytes - entry.byte_size)) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(&entry);
    shard_bytes += entry.byte_size;
  }

  json weight_map = json::object();
  const std::size_t count = shards.size();
  for (std::size_t i = 0; i < count; ++i) {
    std::array<char, 64> name{};
    std::snprintf(name.data(), name.size(), "model-%05zu-of-%05zu.safetensors", i + 1, count);
    for (const Entry* entry : shards[i]) weight_map[entry->name] = name.data();
    write_entries(dir / name.data(), shards[i], metadata_);
  }
  // The index goes last: a crash mid-way leaves no index, so the folder never opens as complete.
  json index = {{"metadata", {{"total_size", data_bytes_}}}, {"weight_map", std::move(weight_map)}};
  const std::string text = index.dump(2) + "\n";
  const auto index_path = dir / kIndexName;
  write_atomically(index_path, [&](int fd) { return pwrite_all(fd, text.data(), text.size(), 0); });
}

}  // namespace sy::model
