// Internal to gpu/cuda/: one staged call of the host-pointer Backend table. Register every host
// range the kernel reads or writes, commit (overlapping ranges merge into one device
// buffer, so aliased operands — in-place outputs, fused gate/up rows, k_nope and v interleaved in
// one buffer — stay aliased on the device), run the device entry point on stream(), then finish()
// copies every written range back and waits. Device memory is stream-ordered (cudaMallocAsync),
// so the driver's pool recycles it call after call. One object per call; not thread-safe.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sy::gpu::cuda::detail {

class Staging {
 public:
  Staging();
  ~Staging();
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;

  // Registers [p, p + bytes). written: copied back by finish() (its whole merged range is copied
  // in first, so bytes between strided rows keep their host values). Null or empty: ignored.
  void add(const void* p, std::size_t bytes, bool written);
  template <class T>
  void in(const T* p, std::int64_t count) {
    add(p, static_cast<std::size_t>(count > 0 ? count : 0) * sizeof(T), false);
  }
  template <class T>
  void out(T* p, std::int64_t count) {
    add(p, static_cast<std::size_t>(count > 0 ? count : 0) * sizeof(T), true);
  }

  // Allocates and uploads. After it, dev() maps registered host pointers to device pointers.
  void commit();
  template <class T>
  T* dev(T* host) const {
    return static_cast<T*>(map(host));
  }
  cudaStream_t stream() const { return stream_; }
  // Copies written ranges back and synchronizes.
  void finish();

 private:
  struct Range {
    std::uintptr_t begin = 0;
    std::uintptr_t end = 0;
    bool written = false;
    void* allocation = nullptr;  // cudaMallocAsync's pointer (256-byte aligned)
    void* device = nullptr;      // the copy of begin: allocation + begin % kAlign
  };
  static constexpr std::uintptr_t kAlign = 256;
  void* map(const void* host) const;

  cudaStream_t stream_ = nullptr;
  std::vector<Range> ranges_;
  bool committed_ = false;
};

// Elements spanned by rows × cols at a row stride: (rows - 1)·stride + cols (0 when empty).
inline std::int64_t extent(std::int64_t rows, std::int64_t stride, std::int64_t cols) {
  return rows <= 0 || cols <= 0 ? 0 : (rows - 1) * stride + cols;
}

}  // namespace sy::gpu::cuda::detail
