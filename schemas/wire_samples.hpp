// Realistic, valid messages of every kind, framed: the inputs of the round-trip tests and the
// seed corpus of the wire fuzzer (tests/fuzz/corpus/wire/, written by schemas_test when
// SY_WRITE_WIRE_CORPUS names a folder). Test support only; stateless.
#pragma once

#include <string>
#include <vector>

#include "schemas/wire.hpp"

namespace sy::schemas::testing {

struct Sample {
  std::string name;  // a file-name-safe label, e.g. "kv_reservation_granted"
  MessageKind kind;
  Frame frame;
};

// At least one sample per kind, in MessageKind order; every frame is small (< 4 KiB) and passes
// decode(). Deterministic: the same bytes on every run and platform.
std::vector<Sample> wire_samples();

}  // namespace sy::schemas::testing
