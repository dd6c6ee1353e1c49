// The primal-dual baseline's dual step and round record, by hand on a fixed score table.
#include "can/primal_dual.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "assertions.h"
#include "can/error.h"
#include "temporary_directory.h"

namespace can {
namespace {

using can::testing::contains;
using can::testing::error_message;

// Two prompts, two constraints; prompt 0 has 2 responses, prompt 1 has 4, so the mean of
// per-prompt means (what the dual weighs) differs from the mean over responses.
OfflineScores score_table(double shift) {
  return OfflineScores({"a", "b"}, {{1.0, 3.0}, {0.0, 0.0, 0.0, 4.0}},
                       {{{shift + 0.0, shift + 2.0}, {1.0, 1.0}},
                        {{shift + 1.0, shift + 1.0, shift + 1.0, shift + 5.0}, {-2.0, 0.0, 0.0, 2.0}}});
}

TEST(PrimalDual, ScoreMeansWeighEveryPromptTheSame) {
  const ScoreMeans means = score_means(score_table(0.0));
  EXPECT_DOUBLE_EQ(means.reward, (2.0 + 1.0) / 2);  // not 8/6 over responses
  ASSERT_EQ(means.safety.size(), 2u);
  EXPECT_DOUBLE_EQ(means.safety[0], (1.0 + 2.0) / 2);
  EXPECT_DOUBLE_EQ(means.safety[1], (1.0 + 0.0) / 2);
}

TEST(PrimalDual, DualStepMovesAgainstTheConstraintValueAndStopsAtZero) {
  // c < 0 (violated): λ grows by η|c|; c > 0 (met with room): λ shrinks, never below 0.
  const auto next = dual_step({1.0, 0.25, 0.0}, {-0.5, 0.5, 0.2}, 2.0);
  ASSERT_EQ(next.size(), 3u);
  EXPECT_DOUBLE_EQ(next[0], 2.0);
  EXPECT_DOUBLE_EQ(next[1], 0.0);  // 0.25 − 1.0, projected
  EXPECT_DOUBLE_EQ(next[2], 0.0);
  EXPECT_TRUE(contains(error_message([] { dual_step({1.0}, {0.1, 0.2}, 1.0); }), "1 multipliers for 2"));
}

TEST(PrimalDual, RoundsStepLambdaFromTheirOwnSamplesAgainstRoundZeros) {
  // Round 0 samples π_ref itself: its constraint value is −b and λ₁ = λ₀ + η·b.
  PrimalDualRound first;
  first.margins = {0.5, 0.25};
  first.lambda_before = {1.0, 1.0};
  first.policy = score_means(score_table(0.0));
  first.reference = first.policy;
  take_dual_step(first, 0.5);
  EXPECT_DOUBLE_EQ(first.constraint_values[0], -0.5);
  EXPECT_DOUBLE_EQ(first.constraint_values[1], -0.25);
  EXPECT_DOUBLE_EQ(first.lambda_after[0], 1.25);
  EXPECT_DOUBLE_EQ(first.lambda_after[1], 1.125);

  // Round 1's policy is safer by 0.75 on constraint 0 (every g_0 shifted) and unchanged on 1.
  PrimalDualRound second;
  second.round = 1;
  second.margins = first.margins;
  second.lambda_before = first.lambda_after;
  second.policy = score_means(score_table(0.75));
  second.reference = first.reference;
  take_dual_step(second, 0.5);
  EXPECT_DOUBLE_EQ(second.constraint_values[0], 0.75 - 0.5);
  EXPECT_DOUBLE_EQ(second.constraint_values[1], -0.25);
  EXPECT_DOUBLE_EQ(second.lambda_after[0], 1.25 - 0.5 * 0.25);
  EXPECT_DOUBLE_EQ(second.lambda_after[1], 1.125 + 0.5 * 0.25);

  can::testing::TemporaryDirectory directory;
  const auto path = directory.path() / "round.json";
  write_primal_dual_round(path, second);
  const PrimalDualRound read = read_primal_dual_round(path);
  EXPECT_EQ(read.round, 1);
  EXPECT_EQ(read.lambda_before, second.lambda_before);
  EXPECT_EQ(read.lambda_after, second.lambda_after);
  EXPECT_EQ(read.constraint_values, second.constraint_values);
  EXPECT_EQ(read.policy.safety, second.policy.safety);
  EXPECT_EQ(read.reference.reward, second.reference.reward);
}

TEST(PrimalDual, ARoundFileWithListsOfDifferentLengthsIsRefused) {
  can::testing::TemporaryDirectory directory;
  const auto path = directory.path() / "round.json";
  PrimalDualRound round;
  round.margins = {0.5};
  round.lambda_before = {1.0};
  round.policy = {0.0, {0.0}};
  round.reference = {0.0, {0.0}};
  take_dual_step(round, 1.0);
  write_primal_dual_round(path, round);
  nlohmann::json json = nlohmann::json::parse(std::ifstream(path));
  json["lambda_after"] = {1.0, 2.0};
  std::ofstream(path) << json.dump();
  EXPECT_TRUE(contains(error_message([&] { read_primal_dual_round(path); }), "one entry per margin (1)"));
}

}  // namespace
}  // namespace can
