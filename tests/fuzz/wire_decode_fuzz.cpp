// libFuzzer entry point for the wire decoder (schemas/wire.hpp): the first input byte selects the
// message kind ((byte % kinds) + 1), the rest is a frame. Built as a libFuzzer binary when
// SY_FUZZ=ON with clang, and always linked into wire_decode_replay with replay_main.cpp (corpus:
// tests/fuzz/corpus/wire, written by schemas_test). Any exception other than WireError, a crash,
// or an accepted message that the encoder refuses to re-encode is a bug. Single-threaded; no state
// survives between inputs.
#include <capnp/message.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "schemas/wire.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace sy::schemas;
  if (size == 0) return 0;
  const auto kind = static_cast<MessageKind>(data[0] % message_kind_count + 1);
  const std::span<const std::byte> frame(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  try {
    visit_kind(kind, [&](auto schema) {
      using Schema = typename decltype(schema)::type;
      const Decoded<Schema> decoded = decode<Schema>(frame);
      // What the decoder accepts the encoder must accept (same rules both ways), and the copy
      // must decode again.
      capnp::MallocMessageBuilder copy;
      copy.setRoot(decoded.reader());
      const Frame again = encode<Schema>(copy);
      (void)decode<Schema>(again);
    });
  } catch (const WireError& e) {
    if (e.kind() != kind) __builtin_trap();  // every error names the kind it was decoding
  }
  return 0;
}
