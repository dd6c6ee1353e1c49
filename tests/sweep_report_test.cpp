#include "can/sweep_report.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "assertions.h"
#include "can/atomic_file.h"
#include "can/json_fields.h"
#include "temporary_directory.h"

namespace {

namespace fs = std::filesystem;
using can::testing::contains;
using can::testing::error_message;
using nlohmann::json;

// A margin's evaluation report with what a sweep shows.
can::EvaluationReport report(double lambda, double predicted, double achieved, double judge_safety) {
  can::EvaluationReport result;
  result.num_constraints = 1;
  result.overall.num_prompts = 4;
  result.overall.reference = {0.0, {0.5}, 0.3, 0.8, 0.4, 12.0, 1.0};
  result.overall.policy = {0.1, {0.5 - achieved}, 0.25, judge_safety, 0.2, 11.0, 1.0};
  result.overall.achieved = {"reward_model", "cost_model", {achieved}, 0.1, {0.05}, 0.02};  // 95% interval: ±0.098
  can::DualSolution dual;
  dual.beta = 0.1;
  dual.margins = {predicted};
  dual.lambda = {lambda};
  dual.converged = true;
  dual.predicted.safety_improvement = {predicted};
  dual.predicted.reward_improvement = 0.2;
  dual.predicted.kl = 0.1;
  result.dual = dual;
  result.prediction_error = {(achieved - predicted) / predicted};
  return result;
}

TEST(SweepReport, ListsOneReportPerMarginInOrderWithATableRowEach) {
  can::testing::TemporaryDirectory directory;
  can::write_sweep_report(directory.path(), {{0.5, report(0.3, 0.5, 0.45, 0.85)}, {1.0, report(0.6, 1.0, 0.9, 0.9)}});

  const json sweep = json::parse(can::read_text_file(directory.path() / "sweep.json"));
  ASSERT_EQ(sweep.at("points").size(), 2u);
  EXPECT_EQ(sweep["points"][0]["margin"], 0.5);
  EXPECT_EQ(sweep["points"][1]["margin"], 1.0);
  EXPECT_EQ(sweep["format_version"], can::kArtifactFormatVersion);
  EXPECT_EQ(sweep["points"][1]["report"], can::evaluation_report_to_json(report(0.6, 1.0, 0.9, 0.9)));

  const std::string table = can::read_text_file(directory.path() / "sweep.md");
  EXPECT_TRUE(contains(table, "| reference | | | | | | | | | 0.8 | 0.3 |")) << table;
  // 0.45 is 0.05 from its prediction, inside ±0.098; 0.9 is 0.1 from its prediction, outside.
  EXPECT_TRUE(contains(table, "| 0.5 | 0.3 | 0.1 | 0.5 | 0.45 ± 0.098 | yes | -0.1 | 0.2 | 0.1 | 0.85 | 0.25 |")) << table;
  EXPECT_TRUE(contains(table, "| 1 | 0.6 | 0.1 | 1 | 0.9 ± 0.098 | no | -0.1 | 0.2 | 0.1 | 0.9 | 0.25 |")) << table;
  const std::string svg = can::read_text_file(directory.path() / "sweep.svg");
  EXPECT_TRUE(contains(svg, "achieved vs predicted"));
  EXPECT_TRUE(contains(svg, "95% interval of achieved"));
  EXPECT_FALSE(contains(svg, "±25%"));
  EXPECT_TRUE(contains(svg, "judge safety"));
  EXPECT_TRUE(contains(svg, "achieved (cost_model)"));
  EXPECT_TRUE(contains(table, "safety: cost_model")) << table;
}

TEST(SweepReport, MarginsMeasuredInDifferentUnitsAreRefused) {
  can::testing::TemporaryDirectory directory;
  can::EvaluationReport implicit = report(0.6, 1.0, 0.9, 0.9);
  implicit.overall.achieved.safety_unit = "implicit_reward";
  const std::string message = error_message(
      [&] { can::write_sweep_report(directory.path(), {{0.5, report(0.3, 0.5, 0.45, 0.85)}, {1.0, implicit}}); });
  EXPECT_TRUE(contains(message, "margin 1 measures safety in 'implicit_reward' and reward in 'reward_model' but margin 0.5 in 'cost_model' and "
                                "'reward_model'"))
      << message;
  EXPECT_FALSE(fs::exists(directory.path() / "sweep.json"));
}

TEST(SweepReport, AReportWithoutAPredictionNamesTheMarginAndWritesNothing) {
  can::testing::TemporaryDirectory directory;
  can::EvaluationReport unpredicted = report(0.6, 1.0, 0.9, 0.9);
  unpredicted.dual.reset();
  const std::string message = error_message(
      [&] { can::write_sweep_report(directory.path(), {{0.5, report(0.3, 0.5, 0.45, 0.85)}, {1.0, unpredicted}}); });
  EXPECT_TRUE(contains(message, "the report of margin 1 has no prediction of the dual"));
  EXPECT_FALSE(fs::exists(directory.path() / "sweep.json"));
}

}  // namespace
