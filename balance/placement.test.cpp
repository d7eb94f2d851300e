#include "balance/placement.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <stdexcept>

namespace sy::balance {
namespace {

TEST(InitialPlacement, EveryExpertOnceThenRedundantReplicasOnOtherHosts) {
  const std::vector<bool> layers{false, true, true};
  const ExpertPlacement p = initial_placement(16, 4, {"e0", "e1", "e2", "e3"}, layers);
  EXPECT_EQ(p.epoch, 1u);
  EXPECT_EQ(p.slots, 20);
  EXPECT_FALSE(p.is_moe_layer(0));
  EXPECT_TRUE(p.is_moe_layer(1));
  ASSERT_EQ(p.host_of_slot.size(), 20u);
  for (int s = 0; s < 20; ++s) EXPECT_EQ(p.host_of_slot[static_cast<std::size_t>(s)], s / 5);
  for (int e = 0; e < 16; ++e) {
    const std::vector<int> r = p.replicas(1, e);
    EXPECT_EQ(r.size(), e < 4 ? 2u : 1u) << "expert " << e;
    std::set<int> hosts;
    for (const int s : r) hosts.insert(p.host_of_slot[static_cast<std::size_t>(s)]);
    EXPECT_EQ(hosts.size(), r.size()) << "replicas of expert " << e << " share a host";
  }
  EXPECT_EQ(p.phy2log[1], p.phy2log[2]);
  EXPECT_TRUE(p.replicas(0, 3).empty());
}

TEST(InitialPlacement, OneHostHoldsEverything) {
  const ExpertPlacement p = initial_placement(4, 2, {"only"}, {true});
  for (int e = 0; e < 4; ++e) EXPECT_EQ(p.replicas(0, e).size(), e < 2 ? 2u : 1u);
}

TEST(InitialPlacement, RefusesShapesThatDoNotSplit) {
  EXPECT_THROW(initial_placement(16, 1, {"a", "b"}, {true}), std::invalid_argument);
  EXPECT_THROW(initial_placement(16, 0, {}, {true}), std::invalid_argument);
  EXPECT_THROW(initial_placement(0, 0, {"a"}, {true}), std::invalid_argument);
  try {
    initial_placement(16, 1, {"a", "b"}, {true});
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("17 slots do not split evenly over 2 expert hosts"), std::string::npos) << e.what();
  }
}

TEST(ApplyPins, SwapsWithinTheHostFirstAndKeepsReplicaCounts) {
  // 2 hosts x 3 slots; expert 0 has two replicas.
  std::vector<int> row{0, 1, 2, 3, 4, 0};
  apply_pins(row, {{.slot = 1, .expert = 0}}, 3);
  EXPECT_EQ(row, (std::vector<int>{1, 0, 2, 3, 4, 0}));  // swapped with slot 0, same host
  apply_pins(row, {{.slot = 4, .expert = 2}}, 3);
  EXPECT_EQ(row, (std::vector<int>{1, 0, 4, 3, 2, 0}));  // only copy on the other host: swapped across
  std::vector<int> sorted = row;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<int>{0, 0, 1, 2, 3, 4}));
}

TEST(ApplyPins, OverwritesOnlyAReplicatedExpertWhenEveryCopyIsPinned) {
  std::vector<int> row{0, 1, 2, 0};
  // Expert 1's only copy is pinned at slot 1; pinning it at slot 3 too overwrites a spare expert 0.
  apply_pins(row, {{.slot = 1, .expert = 1}, {.slot = 3, .expert = 1}}, 2);
  EXPECT_EQ(row, (std::vector<int>{0, 1, 2, 1}));
  // Now expert 2 has one copy: taking slot 2 for expert 1 again would lose expert 2.
  std::vector<int> again{0, 1, 2, 0};
  EXPECT_THROW(apply_pins(again, {{.slot = 1, .expert = 1}, {.slot = 3, .expert = 1}, {.slot = 2, .expert = 1}}, 2),
               std::invalid_argument);
  EXPECT_THROW(apply_pins(again, {{.slot = 4, .expert = 0}}, 2), std::invalid_argument);   // no slot 4
  EXPECT_THROW(apply_pins(again, {{.slot = 0, .expert = 9}}, 2), std::invalid_argument);   // no expert 9
  EXPECT_THROW(apply_pins(again, {{.slot = 0, .expert = 1}, {.slot = 0, .expert = 2}}, 2), std::invalid_argument);
}

TEST(Incompatibility, NamesTheFirstProblemOfAnImportedPlacement) {
  const ExpertPlacement served = initial_placement(4, 2, {"a", "b"}, {false, true, true});
  EXPECT_EQ(incompatibility(served, served), "");
  ExpertPlacement p = served;
  p.hosts = {"a", "c"};
  EXPECT_NE(incompatibility(served, p).find("hosts"), std::string::npos);
  p = served;
  p.phy2log[1][0] = 7;
  EXPECT_NE(incompatibility(served, p).find("layer 1 slot 0: expert 7 outside [0, 4)"), std::string::npos);
  p = served;
  p.phy2log[2] = {0, 0, 0, 1, 2, 2};
  EXPECT_NE(incompatibility(served, p).find("layer 2: expert 3 has no slot"), std::string::npos);
  p = served;
  p.phy2log[0] = served.phy2log[1];
  EXPECT_NE(incompatibility(served, p).find("layer 0 has slots"), std::string::npos);
  p = served;
  p.phy2log.pop_back();
  EXPECT_NE(incompatibility(served, p).find("it has 2 layers, the model 3"), std::string::npos);
}

}  // namespace
}  // namespace sy::balance
