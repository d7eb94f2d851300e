// Test support for the CUDA backend's parity tests: a fixture that skips without a usable device
// ("no CUDA device: <cudaGetErrorString>"), and a typed device buffer for the device entry points.
// Test-only; a test owns its buffers.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gpu/cuda/check.hpp"
#include "gpu/cuda/kernels.hpp"

namespace sy::gpu::cuda::test {

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string problem = device_problem(); !problem.empty()) GTEST_SKIP() << problem;
  }
};

template <class T>
class DeviceVector {
 public:
  explicit DeviceVector(const std::vector<T>& host) : size_(host.size()) {
    SY_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&data_), bytes()));
    SY_CUDA_CHECK(cudaMemcpy(data_, host.data(), bytes(), cudaMemcpyHostToDevice));
  }
  explicit DeviceVector(std::size_t n) : DeviceVector(std::vector<T>(n)) {}
  ~DeviceVector() { (void)cudaFree(data_); }
  DeviceVector(const DeviceVector&) = delete;
  DeviceVector& operator=(const DeviceVector&) = delete;

  T* get() const { return data_; }
  std::vector<T> download() const {
    std::vector<T> host(size_);
    SY_CUDA_CHECK(cudaDeviceSynchronize());
    SY_CUDA_CHECK(cudaMemcpy(host.data(), data_, bytes(), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  std::size_t bytes() const { return size_ * sizeof(T) + (size_ == 0 ? 1 : 0); }
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace sy::gpu::cuda::test
