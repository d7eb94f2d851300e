// Corpus replay for the fuzz targets, so every build (gcc, no libFuzzer) exercises them: runs each
// file in the corpus folder given as argv[1], then deterministic mutations of each (bit flips,
// truncations, length-field edits, byte splices) from a fixed seed, so failures reproduce exactly.
// Usage: safetensors_header_replay CORPUS_DIR [MUTATIONS_PER_FILE]. Exit 0 when every input passes.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

using Bytes = std::vector<std::uint8_t>;

Bytes read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void set_length(Bytes& bytes, std::uint64_t length) {
  if (bytes.size() < 8) bytes.resize(8, 0);
  for (std::size_t i = 0; i < 8; ++i) bytes[i] = static_cast<std::uint8_t>(length >> (8 * i));
}

// One mutation of `seed`, chosen by `rng`; the kinds mirror the mistakes real files carry.
Bytes mutate(const Bytes& seed, std::mt19937& rng) {
  Bytes out = seed;
  auto pick = [&](std::size_t n) { return n == 0 ? std::size_t{0} : std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
  static constexpr char kSyntax[] = "{}[]\",:-0123456789eE. \\u\x00\xff";
  switch (pick(6)) {
    case 0: {  // flip 1..4 bits
      const std::size_t flips = 1 + pick(4);
      for (std::size_t i = 0; i < flips && !out.empty(); ++i) out[pick(out.size())] ^= static_cast<std::uint8_t>(1u << pick(8));
      break;
    }
    case 1:  // truncate
      out.resize(pick(out.size() + 1));
      break;
    case 2: {  // edit the length field: off by a little, zero, or huge
      std::uint64_t length = 0;
      for (std::size_t i = 0; i < 8 && i < out.size(); ++i) length |= std::uint64_t{out[i]} << (8 * i);
      static constexpr std::uint64_t kSpecial[] = {0, 1, 7, 8, 0xffffffffffffffffULL, 0x8000000000000000ULL,
                                                   100u << 20, (100u << 20) + 1};
      switch (pick(3)) {
        case 0: length += static_cast<std::uint64_t>(static_cast<std::int64_t>(pick(33)) - 16); break;
        case 1: length = kSpecial[pick(std::size(kSpecial))]; break;
        default: length = out.size() >= 8 ? out.size() - 8 - std::min<std::size_t>(out.size() - 8, pick(4)) : 0; break;
      }
      set_length(out, length);
      break;
    }
    case 3:  // overwrite a byte with JSON syntax
      if (!out.empty()) out[pick(out.size())] = static_cast<std::uint8_t>(kSyntax[pick(sizeof kSyntax - 1)]);
      break;
    case 4: {  // delete a run of bytes inside the header, fixing up the length so the JSON is reached
      if (out.size() <= 9) break;
      const std::size_t at = 8 + pick(out.size() - 8);
      const std::size_t len = std::min(out.size() - at, 1 + pick(8));
      out.erase(out.begin() + static_cast<std::ptrdiff_t>(at), out.begin() + static_cast<std::ptrdiff_t>(at + len));
      set_length(out, out.size() - 8);
      break;
    }
    default: {  // duplicate a run of bytes (repeats keys, digits, brackets)
      if (out.size() <= 9) break;
      const std::size_t at = 8 + pick(out.size() - 8);
      const std::size_t len = std::min(out.size() - at, 1 + pick(16));
      const Bytes run(out.begin() + static_cast<std::ptrdiff_t>(at), out.begin() + static_cast<std::ptrdiff_t>(at + len));
      out.insert(out.begin() + static_cast<std::ptrdiff_t>(at), run.begin(), run.end());
      if (pick(2) == 0) set_length(out, out.size() - 8);
      break;
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR [MUTATIONS_PER_FILE]\n", argv[0]);
    return 2;
  }
  const std::size_t mutations = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 2000;
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(argv[1])) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());  // directory order varies; the run must not
  if (files.empty()) {
    std::fprintf(stderr, "no corpus files in %s\n", argv[1]);
    return 2;
  }
  std::size_t runs = 0;
  for (std::size_t f = 0; f < files.size(); ++f) {
    const Bytes seed = read_file(files[f]);
    std::mt19937 rng(static_cast<std::uint32_t>(0x5afe + f));
    for (std::size_t m = 0; m <= mutations; ++m) {
      const Bytes input = m == 0 ? seed : mutate(seed, rng);
      try {
        LLVMFuzzerTestOneInput(input.data(), input.size());
      } catch (const std::exception& e) {
        std::fprintf(stderr, "%s mutation %zu: unexpected exception: %s\n", files[f].c_str(), m, e.what());
        return 1;
      } catch (...) {
        std::fprintf(stderr, "%s mutation %zu: unexpected non-std exception\n", files[f].c_str(), m);
        return 1;
      }
      ++runs;
    }
  }
  std::printf("replayed %zu corpus files, %zu inputs in all\n", files.size(), runs);
  return 0;
}
