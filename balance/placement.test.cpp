#include "balance/placement.hpp"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace sy::balance
