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
  result.overall.reference = {0.0, {0.5}, 0.3, 0.8, 0.4, {0.8}, 12.0, 1.0};
  result.overall.policy = {0.1, {0.5 - achieved}, 0.25, judge_safety, 0.2, {judge_safety}, 11.0, 1.0};
  result.overall.achieved = {"reward_model", "cost_model", {achieved}, 0.1, {0.05}, 0.02};  // 95% interval: ±0.098
  can::DualSolution dual;
  dual.beta = 0.1;
  dual.margins = {predicted};
  dual.lambda = {lambda};
  dual.converged = true;
  dual.predicted.safety_improvement = {predicted};
  dual.predicted.safety_improvement_stderr = {0.03};  // 95% interval ±0.0588; of the difference ±0.1143
  dual.predicted.reward_improvement = 0.2;
  dual.predicted.kl = 0.1;
  result.dual = dual;
  result.prediction_error = {(achieved - predicted) / predicted};
  return result;
}

TEST(SweepReport, ListsOneReportPerMarginInOrderWithATableRowEach) {
  can::testing::TemporaryDirectory directory;
  can::write_sweep_report(directory.path(), {{0.5, 0, report(0.3, 0.5, 0.45, 0.85), std::nullopt},
                                             {1.0, 0, report(0.6, 1.0, 0.89, 0.9), std::nullopt},
                                             {1.5, 0, report(0.7, 1.5, 1.3, 0.95), std::nullopt}});

  const json sweep = json::parse(can::read_text_file(directory.path() / "sweep.json"));
  ASSERT_EQ(sweep.at("points").size(), 3u);
  EXPECT_EQ(sweep["points"][0]["margin"], 0.5);
  EXPECT_EQ(sweep["points"][1]["margin"], 1.0);
  EXPECT_EQ(sweep["format_version"], can::kArtifactFormatVersion);
  EXPECT_EQ(sweep["points"][1]["report"], can::evaluation_report_to_json(report(0.6, 1.0, 0.89, 0.9)));
  EXPECT_TRUE(sweep["points"][1]["same_templates_report"].is_null());

  const std::string table = can::read_text_file(directory.path() / "sweep.md");
  EXPECT_TRUE(contains(table, "| reference | | | | | | | | | | 0.8 | 0.3 |")) << table;
  // Each difference's interval combines the achieved (±0.098) and the predicted (±0.0588)
  // standard errors: ±0.1143. 0.45 is 0.05 from its prediction, inside; 0.89 is 0.11 from
  // its prediction, inside only with both; 1.3 is 0.2 from its prediction, outside.
  EXPECT_TRUE(contains(table, "| 0.5 | 0.3 | 0.5 ± 0.0588 | 0.45 ± 0.098 | -0.05 ± 0.1143 | yes | -0.1 | 0.1 | 0.2 | "
                              "0.1 | 0.85 | 0.25 |"))
      << table;
  EXPECT_TRUE(contains(table, "| 1 | 0.6 | 1 ± 0.0588 | 0.89 ± 0.098 | -0.11 ± 0.1143 | yes | -0.11 |")) << table;
  EXPECT_TRUE(contains(table, "| 1.5 | 0.7 | 1.5 ± 0.0588 | 1.3 ± 0.098 | -0.2 ± 0.1143 | no |")) << table;
  EXPECT_FALSE(contains(table, "own templates")) << table;
  const std::string svg = can::read_text_file(directory.path() / "sweep.svg");
  EXPECT_TRUE(contains(svg, "achieved vs predicted"));
  EXPECT_TRUE(contains(svg, "95% interval of achieved"));
  EXPECT_TRUE(contains(svg, "95% interval of predicted"));
  EXPECT_FALSE(contains(svg, "±25%"));
  EXPECT_TRUE(contains(svg, "judge safety"));
  EXPECT_TRUE(contains(svg, "achieved (cost_model)"));
  EXPECT_TRUE(contains(table, "safety: cost_model")) << table;
}

// With every margin also evaluated on the sample prompts' own templates: a second table, the
// reports in sweep.json and the points in the figure.
TEST(SweepReport, SameTemplateEvaluationsGetTheirOwnTable) {
  can::testing::TemporaryDirectory directory;
  can::EvaluationReport held_out = report(0.3, 0.5, 0.2, 0.85);
  held_out.prompt_set = "held_out_templates";
  can::EvaluationReport same = report(0.3, 0.5, 0.48, 0.8);
  same.prompt_set = "same_templates";
  same.overall.num_prompts = 6;
  can::write_sweep_report(directory.path(), {{0.5, 0, held_out, same}});
  const std::string table = can::read_text_file(directory.path() / "sweep.md");
  EXPECT_TRUE(contains(table, "## 4 prompts (held_out_templates)")) << table;
  EXPECT_TRUE(contains(table, "## 6 new prompts of the sample prompts' own templates")) << table;
  EXPECT_TRUE(contains(table, "| 0.5 | 0.3 | 0.5 ± 0.0588 | 0.2 ± 0.098 | -0.3 ± 0.1143 | no |")) << table;
  EXPECT_TRUE(contains(table, "| 0.5 | 0.3 | 0.5 ± 0.0588 | 0.48 ± 0.098 | -0.02 ± 0.1143 | yes |")) << table;
  const json sweep = json::parse(can::read_text_file(directory.path() / "sweep.json"));
  EXPECT_EQ(sweep["points"][0]["same_templates_report"], can::evaluation_report_to_json(same));
  EXPECT_TRUE(contains(can::read_text_file(directory.path() / "sweep.svg"), "on the sample prompts' templates"));
}

// Constraint 1 swept, constraint 0 at its margin 0.2: every constraint's columns, and
// the judge's safety on each kind of harm.
TEST(SweepReport, WithTwoConstraintsEachHasItsColumnsAndPoints) {
  auto two = [](double margin, double lambda_1, double achieved_1) {
    can::EvaluationReport result = report(0.4, 0.2, 0.25, 0.7);
    result.num_constraints = 2;
    result.overall.reference.costs = {0.5, 0.5};
    result.overall.reference.judge_safety_by_constraint = {0.8, 0.9};
    result.overall.policy.costs = {0.25, 0.5 - achieved_1};
    result.overall.policy.judge_safety_by_constraint = {0.85, 0.95};
    result.overall.achieved.safety_improvement = {0.25, achieved_1};
    result.overall.achieved.safety_improvement_stderr = {0.05, 0.05};
    result.dual->margins = {0.2, margin};
    result.dual->lambda = {0.4, lambda_1};
    result.dual->predicted.safety_improvement = {0.2, margin};
    result.dual->predicted.safety_improvement_stderr = {0.03, 0.03};
    result.prediction_error = {0.25, (achieved_1 - margin) / margin};
    return result;
  };
  can::testing::TemporaryDirectory directory;
  can::write_sweep_report(directory.path(), {{0.1, 1, two(0.1, 0.0, 0.12), std::nullopt}, {0.3, 1, two(0.3, 0.5, 0.35), std::nullopt}});
  const std::string table = can::read_text_file(directory.path() / "sweep.md");
  EXPECT_TRUE(contains(table, "of constraint 1 (the others at their configured margins)")) << table;
  EXPECT_TRUE(contains(table, "| b | λ*_0 | Δsafety_0 predicted ± 95% | Δsafety_0 achieved ± 95% | Δsafety_0 achieved − "
                              "predicted ± 95% | inside_0 | relative error_0 | λ*_1 |"))
      << table;
  EXPECT_TRUE(contains(table, "| judge safety, illegal harm | judge safety, privacy harm |")) << table;
  EXPECT_TRUE(contains(table, "| 0.3 | 0.4 | 0.2 ± 0.0588 | 0.25 ± 0.098 | 0.05 ± 0.1143 | yes | 0.25 | 0.5 | 0.3 ± 0.0588 | "
                              "0.35 ± 0.098 | 0.05 ± 0.1143 | yes |"))
      << table;
  EXPECT_TRUE(contains(table, "| 0.7 | 0.25 | 0.85 | 0.95 |")) << table;
  const json sweep = json::parse(can::read_text_file(directory.path() / "sweep.json"));
  EXPECT_EQ(sweep["points"][0]["constraint"], 1);
  const std::string svg = can::read_text_file(directory.path() / "sweep.svg");
  EXPECT_TRUE(contains(svg, "aligned policies, constraint 0"));
  EXPECT_TRUE(contains(svg, "aligned policies, constraint 1"));
  EXPECT_TRUE(contains(svg, "judge safety, privacy harm"));
  // Points of different constraints do not make one sweep.
  EXPECT_TRUE(contains(error_message([&] {
                         can::write_sweep_report(directory.path(), {{0.1, 1, two(0.1, 0.0, 0.12), std::nullopt}, {0.3, 0, two(0.3, 0.5, 0.35), std::nullopt}});
                       }),
                       "margin 0.3 is of constraint 0, margin 0.1 of constraint 1"));
}

TEST(SweepReport, MarginsMeasuredInDifferentUnitsAreRefused) {
  can::testing::TemporaryDirectory directory;
  can::EvaluationReport implicit = report(0.6, 1.0, 0.9, 0.9);
  implicit.overall.achieved.safety_unit = "implicit_reward";
  const std::string message = error_message(
      [&] { can::write_sweep_report(directory.path(), {{0.5, 0, report(0.3, 0.5, 0.45, 0.85), std::nullopt}, {1.0, 0, implicit, std::nullopt}}); });
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
      [&] { can::write_sweep_report(directory.path(), {{0.5, 0, report(0.3, 0.5, 0.45, 0.85), std::nullopt}, {1.0, 0, unpredicted, std::nullopt}}); });
  EXPECT_TRUE(contains(message, "the report of margin 1 has no prediction of the dual"));
  EXPECT_FALSE(fs::exists(directory.path() / "sweep.json"));
}

}  // namespace
