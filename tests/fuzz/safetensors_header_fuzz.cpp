// libFuzzer entry point for the safetensors header parser (model::parse_header). Built as a libFuzzer
// binary when SY_FUZZ=ON with clang, and always linked into safetensors_header_replay with
// replay_main.cpp. Any exception other than SafetensorsError, a crash, or a broken invariant on an
// accepted header is a bug. Single-threaded; no state survives between inputs.
#include <cstddef>
#include <cstdint>
#include <span>

#include "model/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using sy::model::ParsedHeader;
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  ParsedHeader header;
  try {
    header = sy::model::parse_header(bytes, size, "fuzz");
  } catch (const sy::model::SafetensorsError&) {
    return 0;
  }
  // An accepted header must describe tensors that a reader can hand out safely: inside the data
  // section, sized as dtype x shape, sorted by offset and without overlapping bytes.
  if (header.data_offset < 8 || header.data_offset > size) __builtin_trap();
  const std::uint64_t data_size = size - header.data_offset;
  std::uint64_t covered_end = 0;
  std::uint64_t previous_begin = 0;
  for (const sy::model::TensorInfo& info : header.tensors) {
    if (info.begin > info.end || info.end > data_size) __builtin_trap();
    if (info.begin < previous_begin) __builtin_trap();
    previous_begin = info.begin;
    if (info.byte_size() != sy::model::dtype_size(info.dtype) * static_cast<std::uint64_t>(info.numel())) {
      __builtin_trap();
    }
    if (sy::model::parse_dtype(sy::model::dtype_name(info.dtype)) != info.dtype) __builtin_trap();
    if (info.begin == info.end) continue;
    if (info.begin < covered_end) __builtin_trap();
    covered_end = info.end;
  }
  return 0;
}
