#include "gpu/cuda/staging.hpp"

#include <algorithm>
#include <stdexcept>

#include "gpu/cuda/check.hpp"

namespace sy::gpu::cuda::detail {

Staging::Staging() { SY_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }

Staging::~Staging() {
  // Errors here cannot be thrown; a failed call has already thrown from commit() or finish().
  for (const Range& r : ranges_) {
    if (r.allocation != nullptr) (void)cudaFreeAsync(r.allocation, stream_);
  }
  (void)cudaStreamSynchronize(stream_);
  (void)cudaStreamDestroy(stream_);
}

void Staging::add(const void* p, std::size_t bytes, bool written) {
  if (p == nullptr || bytes == 0) return;
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  ranges_.push_back({begin, begin + bytes, written, nullptr});
}

void Staging::commit() {
  std::sort(ranges_.begin(), ranges_.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  std::vector<Range> merged;
  for (const Range& r : ranges_) {
    if (!merged.empty() && r.begin < merged.back().end) {
      merged.back().end = std::max(merged.back().end, r.end);
      merged.back().written = merged.back().written || r.written;
    } else {
      merged.push_back(r);
    }
  }
  ranges_ = std::move(merged);
  for (Range& r : ranges_) {
    const std::size_t bytes = r.end - r.begin;
    // The device copy keeps the host address modulo 256, so alignment-keyed choices (fp8_gemm's
    // paths) come out the same as for the host pointers.
    SY_CUDA_CHECK(cudaMallocAsync(&r.allocation, bytes + kAlign, stream_));
    r.device = static_cast<char*>(r.allocation) + r.begin % kAlign;
    SY_CUDA_CHECK(cudaMemcpyAsync(r.device, reinterpret_cast<const void*>(r.begin), bytes, cudaMemcpyHostToDevice, stream_));
  }
  committed_ = true;
}

void* Staging::map(const void* host) const {
  if (host == nullptr) return nullptr;
  const auto p = reinterpret_cast<std::uintptr_t>(host);
  for (const Range& r : ranges_) {
    if (p >= r.begin && p < r.end) return static_cast<char*>(r.device) + (p - r.begin);
  }
  // Staged calls return before staging when there is nothing to do, so every pointer a launch
  // sees was registered with at least one byte.
  throw std::logic_error("cuda staging: a host pointer was not registered before commit()");
}

void Staging::finish() {
  for (const Range& r : ranges_) {
    if (!r.written) continue;
    SY_CUDA_CHECK(cudaMemcpyAsync(reinterpret_cast<void*>(r.begin), r.device, r.end - r.begin, cudaMemcpyDeviceToHost,
                                  stream_));
  }
  SY_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace sy::gpu::cuda::detail
