// Pseudo-preferences from r + λᵀg.
#include "can/relabel.h"

#include <gtest/gtest.h>

#include <cmath>

#include "can/error.h"

namespace {

std::vector<can::PreferencePair> pairs(size_t count) {
  can::PreferencePair pair;
  // std::string temporaries, not literals: GCC 12's -Wstringop-overflow misfires on
  // assigning a literal in C++20 (with LibTorch 2.14's headers).
  pair.prompt = std::string("p");
  pair.response_0 = std::string("a");
  pair.response_1 = std::string("b");
  pair.better_response_id = 0;
  pair.safer_response_id = 1;
  pair.is_response_0_safe = false;
  return std::vector<can::PreferencePair>(count, pair);
}

TEST(Relabel, CompositeScoreIsRewardPlusLambdaTimesSafety) {
  // r = [1, 2], g1 = [3, -1], g2 = [0.5, 0.5], λ = [2, 4]: s = [1 + 6 + 2, 2 - 2 + 2] = [9, 2].
  EXPECT_EQ(can::composite_scores({1, 2}, {{3, -1}, {0.5, 0.5}}, {2, 4}), (std::vector<double>{9, 2}));
  EXPECT_THROW(can::composite_scores({1, 2}, {{3}}, {1}), can::Error);
}

TEST(Relabel, ArgmaxPrefersTheHigherScoreAndKeepsOtherFields) {
  const auto result = can::relabel_pairs(pairs(3), {0.0, 2.0, 1.0}, {1.0, -1.0, 1.5}, {can::RelabelMode::kArgmax, 0});
  EXPECT_EQ(result.pairs[0].better_response_id, 1);
  EXPECT_EQ(result.pairs[1].better_response_id, 0);
  EXPECT_EQ(result.pairs[2].better_response_id, 1);
  EXPECT_NEAR(result.probability_1[0], 1 / (1 + std::exp(-1.0)), 1e-15);
  EXPECT_NEAR(result.probability_1[1], 1 / (1 + std::exp(3.0)), 1e-15);
  for (const auto& pair : result.pairs) {
    EXPECT_EQ(pair.safer_response_id, 1);
    EXPECT_FALSE(pair.is_response_0_safe);
  }
}

TEST(Relabel, BernoulliLabelsFollowTheSigmoidOfTheScoreDifference) {
  // Δs = 1 for every pair: P(label 1) = σ(1) = 0.731. With n = 20000 the standard
  // error of the observed fraction is sqrt(0.731 * 0.269 / 20000) = 0.0031; allow 4 of them.
  const size_t n = 20000;
  const auto result = can::relabel_pairs(pairs(n), std::vector<double>(n, 0.0), std::vector<double>(n, 1.0),
                                         {can::RelabelMode::kBernoulli, 5});
  double ones = 0;
  for (const auto& pair : result.pairs) ones += pair.better_response_id;
  EXPECT_NEAR(ones / n, 1 / (1 + std::exp(-1.0)), 4 * 0.0031);
  const auto again = can::relabel_pairs(pairs(n), std::vector<double>(n, 0.0), std::vector<double>(n, 1.0),
                                        {can::RelabelMode::kBernoulli, 5});
  const auto other = can::relabel_pairs(pairs(n), std::vector<double>(n, 0.0), std::vector<double>(n, 1.0),
                                        {can::RelabelMode::kBernoulli, 6});
  size_t same = 0, differ = 0;
  for (size_t i = 0; i < n; ++i) {
    same += result.pairs[i].better_response_id == again.pairs[i].better_response_id;
    differ += result.pairs[i].better_response_id != other.pairs[i].better_response_id;
  }
  EXPECT_EQ(same, n);
  EXPECT_GT(differ, n / 10);
}

TEST(Relabel, SoftKeepsTheLikelierResponseWithItsProbability) {
  // Δs = 1, −3, 0.5, 0 and 40: the likelier response and σ(|Δs|); σ(40) rounds to 1 in
  // double precision, a certain label. Bernoulli and argmax labels are certain.
  const auto result = can::relabel_pairs(pairs(5), {0.0, 2.0, 1.0, 0.0, 0.0}, {1.0, -1.0, 1.5, 0.0, 40.0},
                                         {can::RelabelMode::kSoft, 0});
  const auto sigmoid = [](double x) { return 1 / (1 + std::exp(-x)); };
  const std::vector<int> better = {1, 0, 1, 0, 1};
  const std::vector<double> probability = {sigmoid(1), sigmoid(3), sigmoid(0.5), 0.5, 1.0};
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(result.pairs[i].better_response_id, better[i]) << i;
    EXPECT_NEAR(result.pairs[i].better_probability, probability[i], 1e-15) << i;
    EXPECT_EQ(result.pairs[i].safer_response_id, 1);
  }
  for (const auto mode : {can::RelabelMode::kBernoulli, can::RelabelMode::kArgmax}) {
    for (const auto& pair : can::relabel_pairs(pairs(3), {0.0, 2.0, 1.0}, {1.0, -1.0, 1.5}, {mode, 0}).pairs) {
      EXPECT_EQ(pair.better_probability, 1.0);
    }
  }
  EXPECT_EQ(can::parse_relabel_mode("soft"), can::RelabelMode::kSoft);
  EXPECT_EQ(can::relabel_mode_name(can::RelabelMode::kSoft), "soft");
}

TEST(Relabel, RejectsMismatchedOrNonFiniteScores) {
  EXPECT_THROW(can::relabel_pairs(pairs(2), {0.0}, {1.0, 2.0}, {}), can::Error);
  EXPECT_THROW(can::relabel_pairs(pairs(1), {NAN}, {1.0}, {}), can::Error);
  EXPECT_THROW(can::parse_relabel_mode("sampled"), can::Error);
}

}  // namespace
