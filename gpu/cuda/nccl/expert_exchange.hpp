// Expert dispatch and combine between the GPUs of one node over NCCL (DeepEP's "normal" kernels'
// job, done with grouped ncclSend/ncclRecv): dispatch sends each destination rank its token rows
// (FP8 e4m3 activations with their 1×128 fp32 scales, DESIGN.md "Wire and transport"), combine
// sends the experts' BF16 outputs back along the reverse route. Rows are grouped by destination
// in the send buffer (rank 0's rows first) and arrive grouped by source. All buffers are device
// memory; every call enqueues on `stream` and returns. One object per rank; a rank's calls come
// from one thread. Not yet wired to the expert hosts (actors/ keep their UCX ExpertDispatch path);
// see gpu/cuda/README.md.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "gpu/cuda/kernels.hpp"

namespace sy::gpu::cuda {

// ncclUniqueId's bytes: made by one rank (make_nccl_id), handed to the others out of band.
using NcclId = std::array<char, 128>;
NcclId make_nccl_id();

class NcclExpertExchange {
 public:
  // Joins the communicator of `ranks` ranks as `rank` on the current CUDA device (collective:
  // every rank calls it).
  NcclExpertExchange(const NcclId& id, int ranks, int rank);
  // One process driving every listed device, one rank each (tests, single-process benchmarks).
  // Calls on several of them must sit between group_start() and group_end().
  static std::vector<std::unique_ptr<NcclExpertExchange>> create_all(std::span<const int> devices);
  static void group_start();
  static void group_end();

  ~NcclExpertExchange();
  NcclExpertExchange(const NcclExpertExchange&) = delete;
  NcclExpertExchange& operator=(const NcclExpertExchange&) = delete;

  int rank() const { return rank_; }
  int ranks() const { return ranks_; }

  // recv_counts[r] = the send_counts[rank()] of rank r: each rank learns how many rows arrive
  // from each peer. Both arrays are device memory, [ranks()] int64.
  void exchange_counts(const std::int64_t* send_counts, std::int64_t* recv_counts, Stream stream);

  // Rows: send_x [Σ send_counts, hidden] e4m3 and send_scales [Σ send_counts, hidden/128] fp32
  // (row-major, contiguous), grouped by destination rank; recv_x / recv_scales likewise, grouped
  // by source rank. Counts are host arrays of ranks() entries (after exchange_counts, copied to
  // the host). REQUIRES: hidden a multiple of 128.
  struct Dispatch {
    const fp8_e4m3* send_x = nullptr;
    const float* send_scales = nullptr;
    fp8_e4m3* recv_x = nullptr;
    float* recv_scales = nullptr;
    std::int64_t hidden = 0;
    std::span<const std::int64_t> send_counts;
    std::span<const std::int64_t> recv_counts;
  };
  void dispatch(const Dispatch& d, Stream stream);

  // The reverse route: send_y [Σ counts_back_out, hidden] BF16 rows go back to the ranks they came
  // from (send_counts = the dispatch's recv_counts), and recv_y gets, grouped by rank, the rows this
  // rank dispatched (recv_counts = the dispatch's send_counts).
  struct Combine {
    const bf16* send_y = nullptr;
    bf16* recv_y = nullptr;
    std::int64_t hidden = 0;
    std::span<const std::int64_t> send_counts;
    std::span<const std::int64_t> recv_counts;
  };
  void combine(const Combine& c, Stream stream);

 private:
  struct Comm;
  NcclExpertExchange(std::unique_ptr<Comm> comm, int ranks, int rank);
  void check_counts(const char* op, std::span<const std::int64_t> send, std::span<const std::int64_t> recv) const;

  std::unique_ptr<Comm> comm_;
  int ranks_ = 0;
  int rank_ = 0;
};

}  // namespace sy::gpu::cuda
