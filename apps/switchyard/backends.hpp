// Kernel backends by name, for the commands that run a model (`--backend ref|cpu|cuda`). One table:
// adding a backend is one row in backends.cpp (plus its library in apps/CMakeLists.txt).
// Tables are immutable process-lifetime objects (gpu/backend.hpp); safe from any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "gpu/backend.hpp"

namespace sy::apps {

// The backends linked into this binary, in preference order (the fastest last; the default is the
// last). cuda, when built, comes first: opt-in until the engine is device-resident.
std::vector<std::string> backend_names();
// The named backend; std::invalid_argument listing the known names otherwise.
const gpu::Backend& find_backend(std::string_view name);

}  // namespace sy::apps
