// The dual on random subsets of the offline scores (the paper's Figure 4).
#include "can/dual_subsample.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "assertions.h"
#include "can/synthetic_scores.h"

namespace {

using can::testing::contains;
using can::testing::error_message;

can::OfflineScores synthetic(int64_t prompts = 200) {
  can::SyntheticScoresOptions options;
  options.num_prompts = prompts;
  options.min_responses = 24;
  options.max_responses = 40;
  options.seed = 5;
  return can::make_synthetic_scores(options);
}

can::DualOptions dual_options(double margin) {
  can::DualOptions options;
  options.margins = {margin};
  return options;
}

TEST(DualSubsample, ASubsetKeepsPromptsAndResponsesInTheirOrderWithoutRepeats) {
  const can::OfflineScores scores = synthetic();
  const can::OfflineScores subset = can::subsample_scores(scores, 30, 8, 7);
  ASSERT_EQ(subset.num_prompts(), 30);
  std::map<std::string, int64_t> prompt_of;
  for (int64_t i = 0; i < scores.num_prompts(); ++i) prompt_of[scores.prompt_id(i)] = i;
  int64_t previous_prompt = -1;
  for (int64_t i = 0; i < subset.num_prompts(); ++i) {
    ASSERT_EQ(subset.num_responses(i), 8);
    const int64_t prompt = prompt_of.at(subset.prompt_id(i));
    EXPECT_GT(prompt, previous_prompt) << "prompts keep their file order, once each";
    previous_prompt = prompt;
    // Each kept response is a row of that prompt, in order, none twice (the synthetic scores are continuous).
    int64_t previous_row = -1;
    for (int64_t k = 0; k < 8; ++k) {
      const double reward = subset.rewards()[subset.offsets()[i] + k];
      int64_t row = -1;
      for (int64_t original = 0; original < scores.num_responses(prompt); ++original) {
        if (scores.rewards()[scores.offsets()[prompt] + original] == reward) row = original;
      }
      ASSERT_GE(row, 0) << "response " << k << " of prompt " << subset.prompt_id(i) << " is not one of its responses";
      EXPECT_GT(row, previous_row);
      EXPECT_EQ(subset.safety()[subset.offsets()[i] + k], scores.safety()[scores.offsets()[prompt] + row]);
      previous_row = row;
    }
  }
  const can::OfflineScores again = can::subsample_scores(scores, 30, 8, 7);
  EXPECT_EQ(again.rewards(), subset.rewards());
  EXPECT_NE(can::subsample_scores(scores, 30, 8, 8).rewards(), subset.rewards());
}

TEST(DualSubsample, TheWholeDataEveryTimeGivesTheFullSolveWithNoSpread) {
  can::SyntheticScoresOptions options;
  options.num_prompts = 50;
  options.min_responses = 16;
  options.max_responses = 16;
  options.seed = 3;
  const can::OfflineScores scores = can::make_synthetic_scores(options);
  const can::DualSolution full = can::solve_dual(scores, dual_options(0.1));
  ASSERT_TRUE(full.converged);
  const auto summaries = can::subsample_dual(scores, dual_options(0.1), {{50}, {16}, 20, 1});
  ASSERT_EQ(summaries.size(), 1u);
  EXPECT_EQ(summaries[0].lambda_mean[0], full.lambda[0]);
  EXPECT_EQ(summaries[0].lambda_std[0], 0.0);
  EXPECT_EQ(summaries[0].lambda_min[0], full.lambda[0]);
  EXPECT_EQ(summaries[0].lambda_max[0], full.lambda[0]);
  EXPECT_EQ(summaries[0].infeasible, 0);
}

TEST(DualSubsample, StatisticsAreThoseOfTheRepeatsSolvedOnTheirSeededSubsets) {
  const can::OfflineScores scores = synthetic();
  const can::SubsampleOptions options{{20, 200}, {4, 24}, 5, 9};
  const auto summaries = can::subsample_dual(scores, dual_options(0.1), options);
  ASSERT_EQ(summaries.size(), 4u);
  EXPECT_EQ(summaries[1].num_prompts, 20);
  EXPECT_EQ(summaries[1].num_responses, 24);
  EXPECT_EQ(summaries[2].num_prompts, 200);
  EXPECT_EQ(summaries[2].num_responses, 4);
  // Recomputed from solves on the documented seeds.
  std::vector<double> lambdas;
  for (int64_t repeat = 0; repeat < 5; ++repeat) {
    const auto solution = can::solve_dual(
        can::subsample_scores(scores, 20, 24, can::subsample_seed(options.seed, 20, 24, repeat)), dual_options(0.1));
    ASSERT_TRUE(solution.converged);
    lambdas.push_back(solution.lambda[0]);
  }
  double mean = 0;
  for (double value : lambdas) mean += value / 5;
  double squares = 0;
  for (double value : lambdas) squares += (value - mean) * (value - mean);
  EXPECT_NEAR(summaries[1].lambda_mean[0], mean, 1e-12);
  EXPECT_NEAR(summaries[1].lambda_std[0], std::sqrt(squares / 4), 1e-12);
  EXPECT_EQ(summaries[1].lambda_min[0], *std::min_element(lambdas.begin(), lambdas.end()));
  // A size pair's subsets do not depend on which other sizes were listed.
  const auto alone = can::subsample_dual(scores, dual_options(0.1), {{20}, {24}, 5, 9});
  EXPECT_EQ(alone[0].lambda_mean, summaries[1].lambda_mean);
  // The paper's Figure 4: more prompts, less spread in λ*.
  EXPECT_LT(summaries[3].lambda_std[0], summaries[1].lambda_std[0]);
  const nlohmann::json written = can::to_json(summaries[1]);
  EXPECT_EQ(written.at("num_prompts"), 20);
  EXPECT_EQ(written.at("lambda_mean").at(0).get<double>(), summaries[1].lambda_mean[0]);
  EXPECT_TRUE(contains(can::render_svg(can::subsample_figure(summaries, "fig4")), "λ* against the number of prompts"));
}

TEST(DualSubsample, UnreachableMarginsAreCountedAndLeaveNoStatistics) {
  const can::OfflineScores scores = synthetic();
  const auto summaries = can::subsample_dual(scores, dual_options(1e3), {{10}, {4}, 3, 1});
  EXPECT_EQ(summaries[0].infeasible, 3);
  EXPECT_TRUE(std::isnan(summaries[0].lambda_mean[0]));
  EXPECT_TRUE(can::to_json(summaries[0]).at("lambda_mean").at(0).is_null());
}

TEST(DualSubsample, SizesBeyondTheDataAreErrorsNamingTheLimit) {
  const can::OfflineScores scores = synthetic();
  EXPECT_TRUE(contains(error_message([&] { can::subsample_dual(scores, dual_options(0.1), {{201}, {4}, 2, 1}); }),
                       "prompt count 201 is not within 1..200"));
  EXPECT_TRUE(contains(error_message([&] { can::subsample_dual(scores, dual_options(0.1), {{10}, {25}, 2, 1}); }),
                       "response count 25 is not within 2..24 (the fewest responses of any prompt)"));
  EXPECT_TRUE(contains(error_message([&] { can::subsample_dual(scores, dual_options(0.1), {{10}, {4}, 0, 1}); }),
                       "repeats must be at least 1"));
  EXPECT_TRUE(contains(error_message([&] { can::subsample_dual(scores, dual_options(0.1), {{10, 10}, {4}, 2, 1}); }),
                       "a prompt count is listed twice"));
}

}  // namespace
