// Host half of the CPU MLA decode: checks the block table's data (as ref does), then splits the
// work into tasks of (query, group of 8 heads, 1024 cache positions). A query's chunk bounds
// depend only on its own position (multiples of kSplitTokens), never on the other queries or the
// thread count, so its result is batch-invariant. A query whose context spans several chunks
// gets its partial (o, max, sum) merged afterwards in chunk order (FlashMLA's combine step).
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "gpu/cpu/isa_kernels.hpp"
#include "gpu/cpu/kernels.hpp"
#include "gpu/cpu/scratch.hpp"
#include "gpu/cpu/thread_pool.hpp"

namespace sy::gpu::cpu {
namespace {

using detail::kMlaHeadGroup;

// Cache positions per task: long enough to amortize the merge, short enough that a few long
// sequences still give every thread work.
constexpr std::int64_t kSplitTokens = 1024;

[[noreturn]] void bad(const std::string& problem) { throw std::invalid_argument("mla_decode: " + problem); }

void check_table_data(const MlaDecodeParams& p) {
  for (std::int64_t q = 0; q < p.queries; ++q) {
    const std::int32_t seq = p.seq_ids[q];
    const std::int32_t pos = p.positions[q];
    if (seq < 0 || seq >= p.table.num_seqs) bad("sequence id " + std::to_string(seq) + " is outside the block table");
    if (pos < 0 || pos >= p.table.max_pages * kMlaPageSize) {
      bad("position " + std::to_string(pos) + " is outside the block table's pages");
    }
    for (std::int64_t j = 0; j <= pos / kMlaPageSize; ++j) {
      const std::int32_t page = p.table.pages[seq * p.table.stride + j];
      if (page < 0 || page >= p.cache.num_pages) {
        bad("block table entry " + std::to_string(page) + " is outside the pool of " +
            std::to_string(p.cache.num_pages) + " pages");
      }
    }
  }
}

struct Task {
  std::int64_t query;
  int head0;
  int heads;
  std::int64_t t_begin, t_end;
  std::int64_t partial;  // index of this task's partial slot, or -1 when it is the only chunk
};

}  // namespace

void mla_decode(const MlaDecodeParams& p) {
  validate(p);
  if (p.queries == 0) return;
  check_table_data(p);
  const std::int64_t lora = p.cache.kv_lora_rank;
  std::vector<Task> tasks;
  struct Split {
    std::int64_t query;
    int head0, heads;
    std::int64_t first, count;  // partial slots
  };
  std::vector<Split> splits;
  std::int64_t partials = 0;
  for (std::int64_t q = 0; q < p.queries; ++q) {
    const std::int64_t visible = static_cast<std::int64_t>(p.positions[q]) + 1;
    const std::int64_t chunks = (visible + kSplitTokens - 1) / kSplitTokens;
    for (std::int64_t h0 = 0; h0 < p.heads; h0 += kMlaHeadGroup) {
      const int heads = static_cast<int>(p.heads - h0 < kMlaHeadGroup ? p.heads - h0 : kMlaHeadGroup);
      if (chunks > 1) splits.push_back({q, static_cast<int>(h0), heads, partials, chunks});
      for (std::int64_t c = 0; c < chunks; ++c) {
        const std::int64_t end = (c + 1) * kSplitTokens < visible ? (c + 1) * kSplitTokens : visible;
        tasks.push_back({q, static_cast<int>(h0), heads, c * kSplitTokens, end, chunks > 1 ? partials++ : -1});
      }
    }
  }
  const std::int64_t o_ld = detail::round_up(lora, 16);
  std::vector<float> part_o(static_cast<std::size_t>(partials * kMlaHeadGroup * o_ld));
  std::vector<float> part_m(static_cast<std::size_t>(partials * kMlaHeadGroup));
  std::vector<float> part_l(part_m.size());

  const detail::IsaKernels& kernels = detail::active_kernels();
  ThreadPool& pool = thread_pool();
  const std::int64_t slice = detail::per_worker(detail::mla_scratch_floats(lora, p.cache.rope_dim));
  detail::AlignedFloats scratch(slice * pool.size());
  pool.run(static_cast<std::int64_t>(tasks.size()), [&](std::int64_t i, int worker) {
    const Task& task = tasks[static_cast<std::size_t>(i)];
    const std::int64_t q = task.query;
    float m[kMlaHeadGroup];
    float l[kMlaHeadGroup];
    detail::MlaTaskArgs t;
    t.cache = p.cache.data;
    t.bf16_cache = p.cache.dtype == KvCacheDtype::bf16;
    t.lora = lora;
    t.rope = p.cache.rope_dim;
    t.pages = p.table.pages + p.seq_ids[q] * p.table.stride;
    t.t_begin = task.t_begin;
    t.t_end = task.t_end;
    t.heads = task.heads;
    t.q_latent = p.q_latent.data + q * p.q_latent.token_stride + task.head0 * p.q_latent.head_stride;
    t.q_latent_head_stride = p.q_latent.head_stride;
    t.q_pe = p.q_pe.data + q * p.q_pe.token_stride + task.head0 * p.q_pe.head_stride;
    t.q_pe_head_stride = p.q_pe.head_stride;
    t.softmax_scale = p.softmax_scale;
    t.scratch = scratch.data() + worker * slice;
    if (task.partial < 0) {
      // The only chunk: write straight into out_latent, then normalize.
      float* out = p.out_latent.data + q * p.out_latent.token_stride + task.head0 * p.out_latent.head_stride;
      t.o = out;
      t.o_stride = p.out_latent.head_stride;
      t.m = m;
      t.l = l;
      kernels.mla_task(t);
      for (int h = 0; h < task.heads; ++h) {
        float* o = out + h * p.out_latent.head_stride;
        for (std::int64_t d = 0; d < lora; ++d) o[d] /= l[h];
        if (p.lse != nullptr) p.lse[q * p.heads + task.head0 + h] = m[h] + std::log(l[h]);
      }
    } else {
      t.o = part_o.data() + task.partial * kMlaHeadGroup * o_ld;
      t.o_stride = o_ld;
      t.m = part_m.data() + task.partial * kMlaHeadGroup;
      t.l = part_l.data() + task.partial * kMlaHeadGroup;
      kernels.mla_task(t);
    }
  });
  // Merge: o = Σ_c e^(m_c - M) o_c / Σ_c e^(m_c - M) l_c, chunks in order.
  pool.run(static_cast<std::int64_t>(splits.size()), [&](std::int64_t i, int) {
    const Split& s = splits[static_cast<std::size_t>(i)];
    for (int h = 0; h < s.heads; ++h) {
      float max_m = -INFINITY;
      for (std::int64_t c = 0; c < s.count; ++c) max_m = std::fmax(max_m, part_m[(s.first + c) * kMlaHeadGroup + h]);
      float* out = p.out_latent.data + s.query * p.out_latent.token_stride + (s.head0 + h) * p.out_latent.head_stride;
      float sum = 0.0f;
      for (std::int64_t d = 0; d < lora; ++d) out[d] = 0.0f;
      for (std::int64_t c = 0; c < s.count; ++c) {
        const std::int64_t slot = (s.first + c) * kMlaHeadGroup + h;
        const float w = std::exp(part_m[slot] - max_m);
        sum += w * part_l[slot];
        const float* o = part_o.data() + slot * o_ld;
        for (std::int64_t d = 0; d < lora; ++d) out[d] += w * o[d];
      }
      for (std::int64_t d = 0; d < lora; ++d) out[d] /= sum;
      if (p.lse != nullptr) p.lse[s.query * p.heads + s.head0 + h] = max_m + std::log(sum);
    }
  });
}

}  // namespace sy::gpu::cpu
