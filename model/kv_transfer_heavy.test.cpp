// The prefill → copy → decode equivalence in all four modes (fp8act and dequant, MTP off and
// on): about 10 s on the reference backend, so heavy; the unit test runs two of them crossed.
#include "model/kv_transfer_test_util.hpp"

namespace sy::model {
namespace {

class HandoffHeavy : public testing::Handoff {};

TEST_F(HandoffHeavy, PrefillCopyDecodeMatchesGenerateInEveryMode) {
  for (const Numerics numerics : {Numerics::fp8act, Numerics::dequant}) {
    for (const bool mtp : {false, true}) check_prefill_copy_decode(numerics, mtp);
  }
}

}  // namespace
}  // namespace sy::model
