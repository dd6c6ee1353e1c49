// Agreement of scores with the judge on responses grouped by prompt (Theorem 3's condition).
#include "can/score_accuracy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "assertions.h"
#include "can/atomic_file.h"
#include "can/json_fields.h"
#include "temporary_directory.h"

namespace {

using can::testing::contains;
using can::testing::error_message;

// Prompt A agrees on both pairs the judge tells apart; prompt B ties one (½) and gets
// two wrong; prompt C has one response and no pair. Accuracy (1 + 1/6) / 2; the
// within-prompt deviations give cross sum −3, squares 38/3 and 8/3 (worked by hand).
TEST(RankingAgreement, MatchesAHandComputation) {
  const std::vector<std::vector<double>> scores = {{1, 2, 3}, {5, 5, 1}, {7}};
  const std::vector<std::vector<double>> truth = {{0, 1, 1}, {1, 0, 2}, {3}};
  const can::RankingAgreement agreement = can::ranking_agreement(scores, truth);
  EXPECT_DOUBLE_EQ(agreement.pairwise_accuracy, 7.0 / 12);
  EXPECT_EQ(agreement.num_pairs, 5);
  EXPECT_EQ(agreement.num_prompts, 2);
  EXPECT_NEAR(agreement.correlation, -9 / std::sqrt(304.0), 1e-12);
  // Per-prompt offsets (PeCAN's β·log Z(x)) change nothing.
  const can::RankingAgreement shifted = can::ranking_agreement({{101, 102, 103}, {-5, -5, -9}, {0}}, truth);
  EXPECT_DOUBLE_EQ(shifted.pairwise_accuracy, agreement.pairwise_accuracy);
  EXPECT_NEAR(shifted.correlation, agreement.correlation, 1e-12);
  // A perfect score and a reversed one.
  EXPECT_DOUBLE_EQ(can::ranking_agreement(truth, truth).pairwise_accuracy, 1.0);
  EXPECT_NEAR(can::ranking_agreement(truth, truth).correlation, 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(can::ranking_agreement({{0, -1, -1}, {-1, 0, -2}, {-3}}, truth).pairwise_accuracy, 0.0);
  // Nothing told apart: no accuracy, no correlation.
  const can::RankingAgreement flat = can::ranking_agreement({{1, 2}}, {{0, 0}});
  EXPECT_TRUE(std::isnan(flat.pairwise_accuracy));
  EXPECT_TRUE(std::isnan(flat.correlation));
  EXPECT_TRUE(contains(error_message([] { can::ranking_agreement({{1, 2}}, {{0}}); }),
                       "prompt 0 has 2 scores but 1 judge values"));
}

// The judge's verdict with an illegal and a privacy harm.
can::JudgeVerdict verdict(double helpfulness, double harm, double privacy_harm = 0) {
  return {helpfulness, {harm, privacy_harm}, {harm < can::kJudgeUnsafeHarm, privacy_harm < can::kJudgeUnsafeHarm}};
}

TEST(ScoreAccuracy, JudgeAgreementSetsRAgainstHelpfulnessAndGAgainstHarmAndReadsBack) {
  // One prompt, three responses: r orders helpfulness exactly, g = −cost orders harm backwards.
  const can::OfflineScores scores({"p"}, {{0.1, 0.2, 0.3}}, {{{0.5, 0.0, -0.5}}});
  const std::vector<std::vector<can::JudgeVerdict>> verdicts = {{verdict(0.2, 0.9), verdict(0.5, 0.5), verdict(0.8, 0.1)}};
  const can::ScoreAccuracy accuracy = can::judge_agreement(scores, verdicts, "reward_model", "cost_model");
  EXPECT_EQ(accuracy.reward.unit, "reward_model");
  EXPECT_EQ(accuracy.reward.judge, "helpfulness");
  EXPECT_DOUBLE_EQ(accuracy.reward.pairwise_accuracy, 1.0);
  ASSERT_EQ(accuracy.safety.size(), 1u);
  EXPECT_EQ(accuracy.safety[0].unit, "cost_model");
  EXPECT_DOUBLE_EQ(accuracy.safety[0].pairwise_accuracy, 0.0);  // g highest where harm is highest
  EXPECT_NEAR(accuracy.safety[0].correlation, -1.0, 1e-12);

  can::testing::TemporaryDirectory directory;
  can::write_score_accuracy(directory.path() / "accuracy.json", accuracy);
  const nlohmann::json written = can::read_json_file(directory.path() / "accuracy.json");
  EXPECT_EQ(written.at("format_version"), can::kArtifactFormatVersion);
  EXPECT_EQ(written.at("safety").at(0).at("judge"), "illegal harm (lower is safer)");
  EXPECT_EQ(written.at("judge_unsafe_correlation"), nlohmann::json::parse("[[1.0]]"));
  const can::ScoreAccuracy read = can::read_score_accuracy(directory.path() / "accuracy.json");
  EXPECT_EQ(can::to_json(read), can::to_json(accuracy));
  EXPECT_TRUE(contains(error_message([&] { can::judge_agreement(scores, {}, "r", "g"); }),
                       "0 prompts of verdicts for 1 prompts of scores"));
}

TEST(ScoreAccuracy, EachSafetyScoreIsSetAgainstItsOwnKindOfHarm) {
  // Four responses; g_0 = −illegal harm and g_1 orders privacy harm exactly, so each is
  // right only against its own kind. Unsafe: illegal on responses 0 and 3, privacy on 1.
  const can::OfflineScores scores({"p"}, {{0, 0, 0, 0}}, {{{-0.9, 0, 0, -0.5}, {0, -1, 0, 0}}});
  const std::vector<std::vector<can::JudgeVerdict>> verdicts = {
      {verdict(0, 0.9), verdict(0, 0, 0.8), verdict(0, 0), verdict(0, 0.5)}};
  const can::ScoreAccuracy accuracy = can::judge_agreement(scores, verdicts, "reward_model", "cost_model");
  ASSERT_EQ(accuracy.safety.size(), 2u);
  EXPECT_DOUBLE_EQ(accuracy.safety[0].pairwise_accuracy, 1.0);
  EXPECT_EQ(accuracy.safety[0].num_pairs, 5);  // harms 0.9, 0, 0, 0.5: every pair but (1, 2)
  EXPECT_DOUBLE_EQ(accuracy.safety[1].pairwise_accuracy, 1.0);
  EXPECT_EQ(accuracy.safety[1].num_pairs, 3);
  EXPECT_EQ(accuracy.safety[1].judge, "privacy harm (lower is safer)");
  // Pearson of [1, 0, 0, 1] and [0, 1, 0, 0]: −0.5 / √0.75.
  ASSERT_EQ(accuracy.judge_unsafe_correlation.size(), 2u);
  EXPECT_DOUBLE_EQ(accuracy.judge_unsafe_correlation[0][0], 1.0);
  EXPECT_NEAR(accuracy.judge_unsafe_correlation[0][1], -0.5 / std::sqrt(0.75), 1e-12);
  EXPECT_EQ(accuracy.judge_unsafe_correlation[1][0], accuracy.judge_unsafe_correlation[0][1]);
  can::testing::TemporaryDirectory directory;
  can::write_score_accuracy(directory.path() / "accuracy.json", accuracy);
  EXPECT_EQ(can::to_json(can::read_score_accuracy(directory.path() / "accuracy.json")), can::to_json(accuracy));
}

}  // namespace
