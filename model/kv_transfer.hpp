// The KV hand-off from a prefill engine to a decode engine (DESIGN.md "One request's life" steps
// 2-3, schemas/kv.capnp): which bytes of the KV arena move (per layer, per page), the checksum
// over exactly those bytes, and the decode side's check of what arrived. Used by the prefill and
// decode workers (through DecodeBatcher) and by tests, which copy with copy_kv_spans where the
// workers will RMA-put. Stateless functions over a KvCache; the caller owns the threading.
//
// What moves: positions [0, prompt_tokens) of every layer of the cache (main layers, then the MTP
// layer), one run of entries per page in logical page order. Page ids differ between the two
// caches; entries within a page are contiguous, so a hand-off is one copy per (layer, page).
// What MTP needs on top (KvHandoff): the MTP layer holds positions [0, prompt_tokens - 1) (its
// entry at prompt_tokens - 1 is not meaningful yet: it moves and is checksummed like the rest,
// and decode overwrites it first), plus the main model's pre-norm hidden state h of the prompt's
// last position. Decode pairs that h with the first token to run MTP position prompt_tokens - 1,
// which writes that entry and drafts the token after the first one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <vector>

#include "model/kv_cache.hpp"

namespace sy::model {

// The shape of a KV arena that a hand-off needs to know (kv.capnp KvGrant: pools, tokenBytes).
struct KvLayout {
  std::int64_t layers = 0;       // main + MTP layers
  std::int64_t pages = 0;        // pages per layer pool
  std::int64_t token_bytes = 0;  // one entry of one layer
  std::int64_t page_bytes() const { return gpu::kMlaPageSize * token_bytes; }
  std::int64_t layer_bytes() const { return pages * page_bytes(); }
};
KvLayout kv_layout(const KvCache& cache);

// One contiguous run of cache entries: positions of one page in one layer.
struct KvSpan {
  std::int64_t layer = 0;
  std::int32_t page = 0;    // physical page id
  std::int64_t offset = 0;  // bytes from the arena's start (KvCache::arena()) to the page's first entry
  std::int64_t bytes = 0;   // the used run: entries in this page below `tokens`, times token_bytes
};

// The spans holding positions [0, tokens) of every layer, in checksum order (layer by layer, pages
// in logical order). REQUIRES: page_ids (logical order) cover `tokens`, each in [0, layout.pages)
// (std::invalid_argument). The prefill worker pairs its own spans with those of the decode
// worker's granted page ids, span i to span i.
std::vector<KvSpan> kv_page_spans(const KvLayout& layout, std::span<const std::int32_t> page_ids, std::int64_t tokens);
std::vector<KvSpan> kv_page_spans(const KvCache& cache, SequenceId seq, std::int64_t tokens);

// schemas::kv_handoff_checksum (XXH64, kv.capnp KvHandOff.checksum) over positions [0, tokens) of
// every layer of the sequence: exactly the bytes of kv_page_spans.
std::uint64_t kv_checksum(const KvCache& cache, SequenceId seq, std::int64_t tokens);

// Copies span i of the source arena onto span i of the destination arena: the in-process
// stand-in for the prefill worker's RMA puts (tests; co-located prefill and decode).
// REQUIRES: as many spans on each side, equal byte counts pairwise, spans inside their arenas.
void copy_kv_spans(std::span<const std::byte> src_arena, std::span<const KvSpan> src, std::span<std::byte> dst_arena,
                   std::span<const KvSpan> dst);

// What decode needs besides the KV bytes to continue a prompt that another engine prefilled
// (kv.capnp KvHandOff, minus routing). Produced by DecodeBatcher for prefill_only requests.
struct KvHandoff {
  std::int64_t prompt_tokens = 0;  // positions [0, prompt_tokens) of every layer are written
  std::int64_t layers = 0;         // layers written: every layer of the prefill cache
  std::int64_t token_bytes = 0;    // entry size in the prefill cache (dtype and widths must match)
  std::int64_t bytes_written = 0;  // prompt_tokens * token_bytes * layers
  std::uint64_t checksum = 0;      // kv_checksum over the prefill pages
  std::int32_t first_token = -1;   // sampled after the prompt (draw counter 0); decode feeds it next
  // MTP continuation (empty last_hidden: none; decode then runs the request without drafts).
  // With it, mtp_length == prompt_tokens - 1 and last_hidden is h_{prompt_tokens-1}, the main
  // model's last hidden state before the final norm, [hidden_size] fp32.
  std::int64_t mtp_length = 0;
  std::vector<float> last_hidden;
};

// A hand-off that cannot be continued: a checksum mismatch (a put landed at the wrong place, or
// bytes changed on the way), a layout mismatch, a reservation that is too small. Not retryable
// as is; the decode worker fails the request (kv.capnp KvReleaseReason decodeFailed).
class KvHandoffError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Checks a hand-off against the decode side's cache and sequence before adoption: layout, sizes,
// the MTP continuation's shape, and (verify_checksum) the checksum over the sequence's pages.
// Throws KvHandoffError naming the problem; changes nothing.
void verify_kv_handoff(const KvCache& cache, SequenceId seq, const KvHandoff& handoff, std::int64_t hidden_size,
                       bool verify_checksum = true);

}  // namespace sy::model
