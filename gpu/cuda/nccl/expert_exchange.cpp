#include "gpu/cuda/nccl/expert_exchange.hpp"

#include <nccl.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "gpu/cuda/check.hpp"

namespace sy::gpu::cuda {
namespace {

void nccl_check(ncclResult_t status, const char* what) {
  if (status != ncclSuccess) throw CudaError(std::string(what) + ": " + ncclGetErrorString(status));
}

static_assert(sizeof(ncclUniqueId) == sizeof(NcclId), "NcclId must hold an ncclUniqueId");

}  // namespace

struct NcclExpertExchange::Comm {
  ncclComm_t comm = nullptr;
};

NcclId make_nccl_id() {
  ncclUniqueId id;
  nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  NcclId out;
  std::memcpy(out.data(), &id, sizeof(id));
  return out;
}

NcclExpertExchange::NcclExpertExchange(const NcclId& id, int ranks, int rank)
    : comm_(std::make_unique<Comm>()), ranks_(ranks), rank_(rank) {
  if (ranks < 1 || rank < 0 || rank >= ranks) {
    throw std::invalid_argument("NcclExpertExchange: rank " + std::to_string(rank) + " of " + std::to_string(ranks));
  }
  ncclUniqueId nid;
  std::memcpy(&nid, id.data(), sizeof(nid));
  nccl_check(ncclCommInitRank(&comm_->comm, ranks, nid, rank), "ncclCommInitRank");
}

NcclExpertExchange::NcclExpertExchange(std::unique_ptr<Comm> comm, int ranks, int rank)
    : comm_(std::move(comm)), ranks_(ranks), rank_(rank) {}

std::vector<std::unique_ptr<NcclExpertExchange>> NcclExpertExchange::create_all(std::span<const int> devices) {
  std::vector<ncclComm_t> comms(devices.size());
  nccl_check(ncclCommInitAll(comms.data(), static_cast<int>(devices.size()), devices.data()), "ncclCommInitAll");
  std::vector<std::unique_ptr<NcclExpertExchange>> out;
  for (std::size_t r = 0; r < comms.size(); ++r) {
    auto comm = std::make_unique<Comm>();
    comm->comm = comms[r];
    out.push_back(std::unique_ptr<NcclExpertExchange>(
        new NcclExpertExchange(std::move(comm), static_cast<int>(comms.size()), static_cast<int>(r))));
  }
  return out;
}

void NcclExpertExchange::group_start() { nccl_check(ncclGroupStart(), "ncclGroupStart"); }
void NcclExpertExchange::group_end() { nccl_check(ncclGroupEnd(), "ncclGroupEnd"); }

NcclExpertExchange::~NcclExpertExchange() {
  if (comm_ && comm_->comm != nullptr) (void)ncclCommDestroy(comm_->comm);
}

void NcclExpertExchange::check_counts(const char* op, std::span<const std::int64_t> send,
                                      std::span<const std::int64_t> recv) const {
  if (static_cast<int>(send.size()) != ranks_ || static_cast<int>(recv.size()) != ranks_) {
    throw std::invalid_argument(std::string(op) + ": send_counts and recv_counts need " + std::to_string(ranks_) +
                                " entries (one per rank)");
  }
  for (int r = 0; r < ranks_; ++r) {
    if (send[static_cast<std::size_t>(r)] < 0 || recv[static_cast<std::size_t>(r)] < 0) {
      throw std::invalid_argument(std::string(op) + ": negative row count for rank " + std::to_string(r));
    }
  }
}

void NcclExpertExchange::exchange_counts(const std::int64_t* send_counts, std::int64_t* recv_counts, Stream stream) {
  const cudaStream_t s = detail::raw(stream);
  // All-to-all of one int64 per pair: grouped point-to-point (NCCL has no alltoall primitive).
  nccl_check(ncclGroupStart(), "ncclGroupStart");
  for (int r = 0; r < ranks_; ++r) {
    nccl_check(ncclSend(send_counts + r, 1, ncclInt64, r, comm_->comm, s), "ncclSend");
    nccl_check(ncclRecv(recv_counts + r, 1, ncclInt64, r, comm_->comm, s), "ncclRecv");
  }
  nccl_check(ncclGroupEnd(), "ncclGroupEnd");
}

void NcclExpertExchange::dispatch(const Dispatch& d, Stream stream) {
  check_counts("nccl dispatch", d.send_counts, d.recv_counts);
  if (d.hidden <= 0 || d.hidden % kQuantBlock != 0) {
    throw std::invalid_argument("nccl dispatch: hidden (" + std::to_string(d.hidden) + ") must be a positive multiple of 128");
  }
  const cudaStream_t s = detail::raw(stream);
  const std::int64_t scale_cols = d.hidden / kQuantBlock;
  std::int64_t send_row = 0;
  std::int64_t recv_row = 0;
  nccl_check(ncclGroupStart(), "ncclGroupStart");
  for (int r = 0; r < ranks_; ++r) {
    const std::int64_t n_send = d.send_counts[static_cast<std::size_t>(r)];
    const std::int64_t n_recv = d.recv_counts[static_cast<std::size_t>(r)];
    if (n_send > 0) {
      nccl_check(ncclSend(d.send_x + send_row * d.hidden, static_cast<std::size_t>(n_send * d.hidden), ncclUint8, r,
                          comm_->comm, s),
                 "ncclSend (rows)");
      nccl_check(ncclSend(d.send_scales + send_row * scale_cols, static_cast<std::size_t>(n_send * scale_cols),
                          ncclFloat32, r, comm_->comm, s),
                 "ncclSend (scales)");
    }
    if (n_recv > 0) {
      nccl_check(ncclRecv(d.recv_x + recv_row * d.hidden, static_cast<std::size_t>(n_recv * d.hidden), ncclUint8, r,
                          comm_->comm, s),
                 "ncclRecv (rows)");
      nccl_check(ncclRecv(d.recv_scales + recv_row * scale_cols, static_cast<std::size_t>(n_recv * scale_cols),
                          ncclFloat32, r, comm_->comm, s),
                 "ncclRecv (scales)");
    }
    send_row += n_send;
    recv_row += n_recv;
  }
  nccl_check(ncclGroupEnd(), "ncclGroupEnd");
}

void NcclExpertExchange::combine(const Combine& c, Stream stream) {
  check_counts("nccl combine", c.send_counts, c.recv_counts);
  if (c.hidden <= 0) throw std::invalid_argument("nccl combine: hidden must be > 0");
  const cudaStream_t s = detail::raw(stream);
  std::int64_t send_row = 0;
  std::int64_t recv_row = 0;
  nccl_check(ncclGroupStart(), "ncclGroupStart");
  for (int r = 0; r < ranks_; ++r) {
    const std::int64_t n_send = c.send_counts[static_cast<std::size_t>(r)];
    const std::int64_t n_recv = c.recv_counts[static_cast<std::size_t>(r)];
    if (n_send > 0) {
      nccl_check(ncclSend(c.send_y + send_row * c.hidden, static_cast<std::size_t>(n_send * c.hidden), ncclBfloat16, r,
                          comm_->comm, s),
                 "ncclSend (outputs)");
    }
    if (n_recv > 0) {
      nccl_check(ncclRecv(c.recv_y + recv_row * c.hidden, static_cast<std::size_t>(n_recv * c.hidden), ncclBfloat16, r,
                          comm_->comm, s),
                 "ncclRecv (outputs)");
    }
    send_row += n_send;
    recv_row += n_recv;
  }
  nccl_check(ncclGroupEnd(), "ncclGroupEnd");
}

}  // namespace sy::gpu::cuda
