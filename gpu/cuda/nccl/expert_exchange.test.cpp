// NcclExpertExchange on every visible GPU, driven from one process (one rank per device; one
// device is a single-rank communicator sending to itself): counts, FP8 rows and scales arrive
// grouped by source rank, bit for bit, and combine brings BF16 rows back along the reverse route.
// Label gpu; skips with "no CUDA device: ..." without a device.
#include "gpu/cuda/nccl/expert_exchange.hpp"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "gpu/cuda/check.hpp"
#include "gpu/cuda/test_util.hpp"

namespace sy::gpu::cuda {
namespace {

using NcclExchange = test::CudaTest;

// Rows rank `from` sends rank `to`: different for every pair, zero for some.
std::int64_t rows(int from, int to) { return (from * 3 + to * 5 + 1) % 4; }

// Byte j of row i that `from` sends `to`.
std::uint8_t byte_of(int from, int to, std::int64_t i, std::int64_t j) {
  return static_cast<std::uint8_t>((from * 131 + to * 17 + i * 7 + j) % 0x7E);
}

template <class T>
T* upload(const std::vector<T>& host) {
  T* d = nullptr;
  SY_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&d), host.size() * sizeof(T) + 16));
  SY_CUDA_CHECK(cudaMemcpy(d, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <class T>
std::vector<T> download(const T* d, std::size_t n) {
  std::vector<T> host(n);
  SY_CUDA_CHECK(cudaMemcpy(host.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

TEST_F(NcclExchange, DispatchAndCombineRoundTrip) {
  int count = 0;
  SY_CUDA_CHECK(cudaGetDeviceCount(&count));
  std::vector<int> devices;
  for (int d = 0; d < count && d < 8; ++d) devices.push_back(d);
  const int ranks = static_cast<int>(devices.size());
  const std::int64_t hidden = 256, scale_cols = hidden / 128;
  auto exchanges = NcclExpertExchange::create_all(devices);

  struct Rank {
    cudaStream_t stream = nullptr;
    std::vector<std::int64_t> send_counts, recv_counts;
    std::int64_t n_send = 0, n_recv = 0;
    fp8_e4m3* send_x = nullptr;
    fp8_e4m3* recv_x = nullptr;
    float* send_scales = nullptr;
    float* recv_scales = nullptr;
    std::int64_t* d_send_counts = nullptr;
    std::int64_t* d_recv_counts = nullptr;
    bf16* send_y = nullptr;
    bf16* recv_y = nullptr;
  };
  std::vector<Rank> rk(static_cast<std::size_t>(ranks));
  for (int r = 0; r < ranks; ++r) {
    Rank& me = rk[static_cast<std::size_t>(r)];
    SY_CUDA_CHECK(cudaSetDevice(devices[static_cast<std::size_t>(r)]));
    SY_CUDA_CHECK(cudaStreamCreate(&me.stream));
    std::vector<fp8_e4m3> x;
    std::vector<float> scales;
    for (int to = 0; to < ranks; ++to) {
      me.send_counts.push_back(rows(r, to));
      for (std::int64_t i = 0; i < rows(r, to); ++i) {
        for (std::int64_t j = 0; j < hidden; ++j) x.push_back({byte_of(r, to, i, j)});
        for (std::int64_t j = 0; j < scale_cols; ++j) scales.push_back(static_cast<float>(r * 1000 + to * 10 + i) + 0.5f * j);
      }
    }
    me.n_send = static_cast<std::int64_t>(x.size()) / hidden;
    me.send_x = upload(x);
    me.send_scales = upload(scales);
    me.d_send_counts = upload(me.send_counts);
    me.d_recv_counts = upload(std::vector<std::int64_t>(static_cast<std::size_t>(ranks), -1));
  }
  NcclExpertExchange::group_start();
  for (int r = 0; r < ranks; ++r) {
    Rank& me = rk[static_cast<std::size_t>(r)];
    exchanges[static_cast<std::size_t>(r)]->exchange_counts(me.d_send_counts, me.d_recv_counts,
                                                            reinterpret_cast<Stream>(me.stream));
  }
  NcclExpertExchange::group_end();
  for (int r = 0; r < ranks; ++r) {
    Rank& me = rk[static_cast<std::size_t>(r)];
    SY_CUDA_CHECK(cudaSetDevice(devices[static_cast<std::size_t>(r)]));
    SY_CUDA_CHECK(cudaStreamSynchronize(me.stream));
    me.recv_counts = download(me.d_recv_counts, static_cast<std::size_t>(ranks));
    for (int from = 0; from < ranks; ++from) {
      ASSERT_EQ(me.recv_counts[static_cast<std::size_t>(from)], rows(from, r)) << "rank " << r << " from " << from;
      me.n_recv += rows(from, r);
    }
    SY_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&me.recv_x), static_cast<std::size_t>(me.n_recv * hidden) + 16));
    SY_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&me.recv_scales),
                             static_cast<std::size_t>(me.n_recv * scale_cols) * sizeof(float) + 16));
  }
  NcclExpertExchange::group_start();
  for (int r = 0; r < ranks; ++r) {
    Rank& me = rk[static_cast<std::size_t>(r)];
    exchanges[static_cast<std::size_t>(r)]->dispatch({.send_x = me.send_x, .send_scales = me.send_scales,
                                                      .recv_x = me.recv_x, .recv_scales = me.recv_scales,
                                                      .hidden = hidden, .send_counts = me.send_counts,
                                                      .recv_counts = me.recv_counts},
                                                     reinterpret_cast<Stream>(me.stream));
  }
  NcclExpertExchange::group_end();
  for (int r = 0; r < ranks; ++r) {
    Rank& me = rk[static_cast<std::size_t>(r)];
    SY_CUDA_CHECK(cudaSetDevice(devices[static_cast<std::size_t>(r)]));
    SY_CUDA_CHECK(cudaStreamSynchronize(me.stream));
    const auto x = download(me.recv_x, static_cast<std::size_t>(me.n_recv * hidden));
    const auto scales = download(me.recv_scales, static_cast<std::size_t>(me.n_recv * scale_cols));
    std::int64_t row = 0;
    std::int64_t wrong = 0;
    for (int from = 0; from < ranks; ++from) {
      for (std::int64_t i = 0; i < rows(from, r); ++i, ++row) {
        for (std::int64_t j = 0; j < hidden; ++j) wrong += x[static_cast<std::size_t>(row * hidden + j)].bits != byte_of(from, r, i, j);
        for (std::int64_t j = 0; j < scale_cols; ++j) {
          wrong += scales[static_cast<std::size_t>(row * scale_cols + j)] != static_cast<float>(from * 1000 + r * 10 + i) + 0.5f * j;
        }
      }
    }
    EXPECT_EQ(wrong, 0) << "rank " << r;
    // Combine payload: each received row's first byte as a BF16 value, sent back.
    std::vector<bf16> y(static_cast<std::size_t>(me.n_recv * hidden));
    for (std::size_t i = 0; i < y.size(); ++i) y[i] = bf16_from_float(static_cast<float>(x[i].bits));
    me.send_y = upload(y);
    SY_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&me.recv_y), static_cast<std::size_t>(me.n_send * hidden) * 2 + 16));
  }
  NcclExpertExchange::group_start();
  for (int r = 0; r < ranks; ++r) {
    Rank& me = rk[static_cast<std::size_t>(r)];
    exchanges[static_cast<std::size_t>(r)]->combine({.send_y = me.send_y, .recv_y = me.recv_y, .hidden = hidden,
                                                     .send_counts = me.recv_counts, .recv_counts = me.send_counts},
                                                    reinterpret_cast<Stream>(me.stream));
  }
  NcclExpertExchange::group_end();
  for (int r = 0; r < ranks; ++r) {
    Rank& me = rk[static_cast<std::size_t>(r)];
    SY_CUDA_CHECK(cudaSetDevice(devices[static_cast<std::size_t>(r)]));
    SY_CUDA_CHECK(cudaStreamSynchronize(me.stream));
    const auto y = download(me.recv_y, static_cast<std::size_t>(me.n_send * hidden));
    std::int64_t row = 0;
    std::int64_t wrong = 0;
    for (int to = 0; to < ranks; ++to) {
      for (std::int64_t i = 0; i < rows(r, to); ++i, ++row) {
        for (std::int64_t j = 0; j < hidden; ++j) {
          wrong += y[static_cast<std::size_t>(row * hidden + j)].bits != bf16_from_float(static_cast<float>(byte_of(r, to, i, j))).bits;
        }
      }
    }
    EXPECT_EQ(wrong, 0) << "rank " << r << ": combine";
    for (void* p : {static_cast<void*>(me.send_x), static_cast<void*>(me.recv_x), static_cast<void*>(me.send_scales),
                    static_cast<void*>(me.recv_scales), static_cast<void*>(me.d_send_counts),
                    static_cast<void*>(me.d_recv_counts), static_cast<void*>(me.send_y), static_cast<void*>(me.recv_y)}) {
      (void)cudaFree(p);
    }
    (void)cudaStreamDestroy(me.stream);
  }
}

TEST_F(NcclExchange, RejectsMismatchedCounts) {
  const int devices[] = {0};
  auto exchanges = NcclExpertExchange::create_all(devices);
  const std::vector<std::int64_t> two = {1, 1};
  EXPECT_THROW(exchanges[0]->dispatch({.hidden = 128, .send_counts = two, .recv_counts = two}, nullptr),
               std::invalid_argument);
}

}  // namespace
}  // namespace sy::gpu::cuda
