// Parses a comma-separated list of token ids ("0,5,7") for the command-line tools (`switchyard
// generate --ids`, `yardctl generate --ids`). Header-only, no state.
#pragma once

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace sy::apps {

// Throws std::invalid_argument naming the first item that is not an id in [0, 2^31).
inline std::vector<std::int32_t> parse_token_ids(const std::string& text) {
  std::vector<std::int32_t> ids;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    std::string item = text.substr(pos, comma - pos);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    std::int64_t value = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size() || value < 0 || value > INT32_MAX) {
      throw std::invalid_argument(fmt::format("--ids: \"{}\" is not a token id (expected e.g. 0,5,7)", item));
    }
    ids.push_back(static_cast<std::int32_t>(value));
    pos = comma + 1;
  }
  return ids;
}

}  // namespace sy::apps
