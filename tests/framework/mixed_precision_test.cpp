#include "mq/mixed_precision.hpp"

#include <gtest/gtest.h>

#include <random>

namespace {

using mq::allocate;
using mq::Choice;

int64_t bytes_of(const std::vector<std::vector<Choice>>& units, const std::vector<size_t>& pick) {
  int64_t b = 0;
  for (size_t u = 0; u < units.size(); ++u) b += units[u][pick[u]].bytes;
  return b;
}

double error_of(const std::vector<std::vector<Choice>>& units, const std::vector<size_t>& pick) {
  double e = 0;
  for (size_t u = 0; u < units.size(); ++u) e += units[u][pick[u]].error;
  return e;
}

// Every plan, for instances small enough: the least error within the budget.
double best_error(const std::vector<std::vector<Choice>>& units, int64_t budget) {
  double best = -1;
  std::vector<size_t> pick(units.size(), 0);
  for (;;) {
    if (bytes_of(units, pick) <= budget && (best < 0 || error_of(units, pick) < best)) best = error_of(units, pick);
    size_t u = 0;
    while (u < units.size() && ++pick[u] == units[u].size()) pick[u++] = 0;
    if (u == units.size()) return best;
  }
}

TEST(Allocate, SpendsTheBudgetWhereItSavesTheMostError) {
  // Unit 0 gains a lot from its second choice, unit 1 little: 10 spare bytes go to unit 0.
  const std::vector<std::vector<Choice>> units = {{{10, 100}, {20, 1}}, {{10, 100}, {20, 90}}};
  EXPECT_EQ(allocate(units, 30), (std::vector<size_t>{1, 0}));
  EXPECT_EQ(allocate(units, 40), (std::vector<size_t>{1, 1}));
  EXPECT_EQ(allocate(units, 20), (std::vector<size_t>{0, 0}));
  EXPECT_TRUE(allocate(units, 19).empty());  // even the smallest plan does not fit
}

TEST(Allocate, TakesAnUpgradeTheHullSkipsWhenOnlyItFits) {
  // Unit 0's hull goes 10 -> 30 bytes; with 10 spare bytes only its middle choice fits.
  const std::vector<std::vector<Choice>> units = {{{10, 100}, {20, 80}, {30, 0}}, {{10, 5}}};
  EXPECT_EQ(allocate(units, 30), (std::vector<size_t>{1, 0}));
  EXPECT_EQ(allocate(units, 40), (std::vector<size_t>{2, 0}));
}

TEST(Allocate, NeverExceedsTheBudgetAndLeavesLessThanAnyUsefulStep) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int64_t> size(1, 40);
  std::uniform_real_distribution<double> err(0, 10);
  double worst_ratio = 1;
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<std::vector<Choice>> units(1 + trial % 5);
    for (auto& u : units)
      for (int c = 0; c < 1 + trial % 4; ++c) u.push_back({size(rng), err(rng)});
    const int64_t budget = size(rng) * static_cast<int64_t>(units.size());
    const std::vector<size_t> pick = allocate(units, budget);
    const double best = best_error(units, budget);
    if (best < 0) {
      EXPECT_TRUE(pick.empty());
      continue;
    }
    ASSERT_EQ(pick.size(), units.size());
    const int64_t used = bytes_of(units, pick);
    EXPECT_LE(used, budget);
    // No single unit could still move to a choice of less error within what is left.
    for (size_t u = 0; u < units.size(); ++u)
      for (const Choice& c : units[u])
        if (c.error < units[u][pick[u]].error) {
          EXPECT_GT(c.bytes - units[u][pick[u]].bytes, budget - used);
        }
    if (best > 0) worst_ratio = std::max(worst_ratio, error_of(units, pick) / best);
  }
  EXPECT_LT(worst_ratio, 3.0);  // greedy, not exact: far from optimal would be a bug
}

TEST(Allocate, IsDeterministicOnTies) {
  const std::vector<std::vector<Choice>> units = {{{10, 10}, {20, 0}}, {{10, 10}, {20, 0}}};
  EXPECT_EQ(allocate(units, 30), (std::vector<size_t>{1, 0}));  // the earlier unit
}

TEST(FusedUnit, QkvAndGateUpAreOneLayerToVllm) {
  EXPECT_EQ(mq::fused_unit("model.layers.3.self_attn.k_proj"), "model.layers.3.self_attn.qkv_proj");
  EXPECT_EQ(mq::fused_unit("model.layers.3.mlp.up_proj"), "model.layers.3.mlp.gate_up_proj");
  EXPECT_EQ(mq::fused_unit("encoder.layer.0.attention.self.value"), "encoder.layer.0.attention.self.qkv_proj");
  EXPECT_EQ(mq::fused_unit("model.layers.3.mlp.down_proj"), "model.layers.3.mlp.down_proj");
  EXPECT_EQ(mq::fused_unit("q_proj"), "qkv_proj");
  EXPECT_EQ(mq::fused_unit("model.layers.1.block_sparse_moe.experts.7.w2"), "model.layers.1.block_sparse_moe.experts");
  EXPECT_EQ(mq::fused_unit("model.layers.1.experts.x.w2"), "model.layers.1.experts.x.w2");
}

}  // namespace
