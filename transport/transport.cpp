#include "transport/transport.hpp"

#include <cstring>
#include <new>

#include <array>

namespace sy::transport {

namespace {
constexpr std::array<std::string_view, errc_count> errc_names = {
    "ok", "peer_failed", "closed", "timed_out", "invalid_argument", "unreachable", "internal",
};
static_assert(static_cast<int>(Errc::internal) + 1 == errc_count,
              "errc_names must name every Errc");
}  // namespace

std::string_view to_string(Errc code) {
  const auto index = static_cast<std::size_t>(code);
  return index < errc_names.size() ? errc_names[index] : "unknown";
}

namespace {

// Host memory it owns, registered through the transport's own registration.
class OwnedRegion final : public MemoryRegion {
 public:
  OwnedRegion(std::byte* memory, std::unique_ptr<MemoryRegion> registration)
      : memory_(memory), registration_(std::move(registration)) {}
  ~OwnedRegion() override {
    registration_.reset();  // deregister before the memory goes
    ::operator delete[](memory_, std::align_val_t{kPageBytes});
  }
  std::byte* data() const override { return registration_->data(); }
  std::size_t size() const override { return registration_->size(); }
  Bytes packed_key() const override { return registration_->packed_key(); }

  static constexpr std::size_t kPageBytes = 4096;

 private:
  std::byte* memory_;
  std::unique_ptr<MemoryRegion> registration_;
};

}  // namespace

std::unique_ptr<MemoryRegion> Transport::allocate_memory(std::size_t size) {
  if (size == 0) throw TransportError(Errc::invalid_argument, "allocate_memory: empty region");
  auto* memory = static_cast<std::byte*>(::operator new[](size, std::align_val_t{OwnedRegion::kPageBytes}));
  std::memset(memory, 0, size);
  std::unique_ptr<MemoryRegion> registration;
  try {
    registration = register_memory(memory, size);
  } catch (...) {
    ::operator delete[](memory, std::align_val_t{OwnedRegion::kPageBytes});
    throw;
  }
  return std::make_unique<OwnedRegion>(memory, std::move(registration));
}

}  // namespace sy::transport
