// Two safety constraints end to end, as a user runs them: can-train on
// configs/tiny-mocan-two-constraints.yaml (a tiny world with illegal and privacy
// harm, world.privacy_harm) for MoCAN and PeCAN. Checks one cost model or safety
// DPO model per constraint, a dual that binds on both, the report's per-constraint
// fields, --resume reproducing the report, a sweep of the second constraint, a slack
// constraint and an unreachable margin named by its constraint.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "can/atomic_file.h"
#include "can/json_fields.h"
#include "can/preference_data.h"
#include "command_line.h"
#include "temporary_directory.h"

namespace {

namespace fs = std::filesystem;
using can::testing::run_command;
using nlohmann::json;

// The config's margins, [0.0008, 0.002]: about a third of what re-weighting the tiny
// models' samples reaches on each constraint (0.0026 and 0.0064 for MoCAN, 0.08 for
// PeCAN, seen on the CPU machines), so that both bind.
const std::vector<double> kMargins = {0.0008, 0.002};

std::string can_train(const fs::path& run_dir) {
  return can::testing::built_executable("can-train") + " --config " +
         can::testing::source_file("configs/tiny-mocan-two-constraints.yaml") + " --set run.dir=" + run_dir.string();
}

void expect_model_directory(const fs::path& directory) {
  for (const char* file : {"config.json", "model.safetensors", "tokenizer.model"}) {
    EXPECT_TRUE(fs::exists(directory / file)) << directory / file;
  }
}

// Both constraints bind: λ*_j > 0 and the predicted improvement equals the margin.
void expect_both_bind(const fs::path& run_dir) {
  const json dual = can::read_json_file(run_dir / "dual" / "dual.json");
  ASSERT_TRUE(dual.at("converged").get<bool>()) << dual.dump();
  for (size_t j = 0; j < kMargins.size(); ++j) {
    EXPECT_GT(dual.at("lambda")[j].get<double>(), 0.0) << "constraint " << j;
    EXPECT_NEAR(dual.at("predicted").at("safety_improvement")[j].get<double>(), kMargins[j], 1e-8) << j;
  }
}

// Every field of a constraint is a list with one entry per constraint.
void expect_report_per_constraint(const fs::path& run_dir) {
  const json report = can::read_json_file(run_dir / "eval" / "report.json");
  EXPECT_EQ(report.at("margins"), json(kMargins));
  EXPECT_EQ(report.at("lambda"), can::read_json_file(run_dir / "dual" / "dual.json").at("lambda"));
  for (const char* side : {"predicted", "achieved"}) {
    EXPECT_EQ(report.at(side).at("safety_improvement").size(), 2u) << side;
  }
  EXPECT_EQ(report.at("achieved").at("safety_improvement_stderr").size(), 2u);
  for (const char* side : {"reference", "policy"}) {
    const json& by_constraint = report.at(side).at("judge_safety_by_constraint");
    ASSERT_EQ(by_constraint.size(), 2u) << side;
    for (const json& value : by_constraint) EXPECT_TRUE(value.get<double>() >= 0 && value.get<double>() <= 1);
    EXPECT_EQ(report.at(side).at("costs").size(), 2u) << side;
  }
  const json& correlation = report.at("score_accuracy").at("judge_unsafe_correlation");
  ASSERT_EQ(correlation.size(), 2u);
  EXPECT_EQ(report.at("score_accuracy").at("safety").size(), 2u);
  EXPECT_EQ(report.at("score_accuracy").at("safety")[1].at("judge"), "privacy harm (lower is safer)");
  const std::string markdown = can::read_text_file(run_dir / "eval" / "report.md");
  for (const char* row : {"safety improvement, constraint 0", "safety improvement, constraint 1",
                          "judge safety, illegal harm", "judge safety, privacy harm"}) {
    EXPECT_NE(markdown.find(row), std::string::npos) << row;
  }
}

// Removing the last two stages and resuming gives the report byte for byte again.
void expect_resume_reproduces_report(const fs::path& run_dir, const std::string& extra) {
  const std::string report = can::read_text_file(run_dir / "eval" / "report.json");
  can::remove_tree(run_dir / "dpo");
  can::remove_tree(run_dir / "eval");
  const auto resumed = run_command(can_train(run_dir) + extra + " --resume");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_EQ(can::read_text_file(run_dir / "eval" / "report.json"), report);
}

TEST(TwoConstraints, TinyMocanTrainsACostModelPerConstraintBindsBothAndResumesToTheSameReport) {
  can::testing::TemporaryDirectory directory;
  const fs::path run_dir = directory.path() / "mocan";
  const auto result = run_command(can_train(run_dir));
  ASSERT_EQ(result.status, 0) << result.output;
  const json manifest = can::read_json_file(run_dir / "stages.json");
  std::vector<std::string> stages;
  for (const json& stage : manifest.at("stages")) stages.push_back(stage.at("name"));
  EXPECT_EQ(stages, (std::vector<std::string>{"data", "tokenizer", "reference", "reward_model", "cost_model_0",
                                              "cost_model_1", "offline_scores", "dual", "relabel", "dpo", "eval"}));
  for (const char* model : {"cost_model_0", "cost_model_1", "dpo"}) expect_model_directory(run_dir / model / "model");
  // The world's pairs carry both constraints' labels, and the two cost models learned different ones.
  const auto pairs = can::read_preference_pairs(run_dir / "data" / "pairs_train.jsonl");
  EXPECT_EQ(pairs.front().num_constraints(), 2);
  EXPECT_NE(can::read_text_file(run_dir / "cost_model_0" / "model" / "model.safetensors"),
            can::read_text_file(run_dir / "cost_model_1" / "model" / "model.safetensors"));
  expect_both_bind(run_dir);
  expect_report_per_constraint(run_dir);

  const std::string report = can::read_text_file(run_dir / "eval" / "report.json");
  expect_resume_reproduces_report(run_dir, "");

  // Sweeping constraint 1 keeps constraint 0 at its margin; at the configured margin the
  // sweep's policy is the run's own.
  const auto swept = run_command(can_train(run_dir) + " --resume --sweep-margins 1:0.001,0.002");
  ASSERT_EQ(swept.status, 0) << swept.output;
  EXPECT_EQ(can::read_text_file(run_dir / "eval-c1-b0.002" / "report.json"), report);
  const json points = can::read_json_file(run_dir / "sweep.json").at("points");
  ASSERT_EQ(points.size(), 2u);
  for (const json& point : points) {
    EXPECT_EQ(point.at("constraint"), 1);
    EXPECT_EQ(point.at("report").at("margins")[0].get<double>(), kMargins[0]);
    EXPECT_EQ(point.at("report").at("margins")[1], point.at("margin"));
  }

  // A margin beyond what re-weighting reaches names its constraint.
  const auto beyond = run_command(can::testing::built_executable("can-dual") + " --scores " +
                                  (run_dir / "offline_scores" / "scores.jsonl").string() +
                                  " --beta 0.1 --margin 0.0008 --margin 1");
  EXPECT_EQ(beyond.status, 3) << beyond.output;
  EXPECT_NE(beyond.output.find("infeasible: margin 1 of constraint 1 is not below"), std::string::npos)
      << beyond.output;
}

TEST(TwoConstraints, TinyPecanTrainsASafetyDpoModelPerConstraintAndBindsBoth) {
  can::testing::TemporaryDirectory directory;
  const fs::path run_dir = directory.path() / "pecan";
  const auto result = run_command(can_train(run_dir) + " --set pipeline=pecan");
  ASSERT_EQ(result.status, 0) << result.output;
  for (const char* model : {"helpfulness_dpo", "safety_dpo_0", "safety_dpo_1", "dpo"}) {
    expect_model_directory(run_dir / model / "model");
  }
  EXPECT_FALSE(fs::exists(run_dir / "safety_dpo"));
  expect_both_bind(run_dir);
  expect_report_per_constraint(run_dir);
  const json report = can::read_json_file(run_dir / "eval" / "report.json");
  EXPECT_EQ(report.at("achieved").at("safety_unit"), "implicit_reward");
  EXPECT_EQ(report.at("achieved_by_score_models").at("safety_improvement").size(), 2u);

  expect_resume_reproduces_report(run_dir, " --set pipeline=pecan");

  // The pre-aligned models given as directories (models.helpfulness_dpo, models.safety_dpo, one
  // per constraint) replace their stages, and the dual comes out the same.
  const fs::path given_run = directory.path() / "given";
  auto model = [&](const char* stage) { return (run_dir / stage / "model").string(); };
  const auto given = run_command(can_train(given_run) + " --set pipeline=pecan --set models.policy=" +
                                 model("reference") + " --set models.helpfulness_dpo=" + model("helpfulness_dpo") +
                                 " --set models.safety_dpo=[" + model("safety_dpo_0") + "," + model("safety_dpo_1") +
                                 "] --stages data,tokenizer,reward_model,cost_model_0,cost_model_1,offline_scores,dual");
  ASSERT_EQ(given.status, 0) << given.output;
  EXPECT_FALSE(fs::exists(given_run / "safety_dpo_0"));
  EXPECT_FALSE(fs::exists(given_run / "helpfulness_dpo"));
  EXPECT_EQ(can::read_text_file(given_run / "dual" / "dual.json"), can::read_text_file(run_dir / "dual" / "dual.json"));
}

// Margins [0.001, 0.001]: meeting constraint 0 improves constraint 1 beyond its margin
// on the tiny models' samples, so λ*_1 = 0 and the report says constraint 1 is slack.
TEST(TwoConstraints, ASlackConstraintGetsZeroLambdaAndTheReportSaysSo) {
  can::testing::TemporaryDirectory directory;
  const fs::path run_dir = directory.path() / "slack";
  const auto result = run_command(can_train(run_dir) + " --set dual.margins=[0.001,0.001]");
  ASSERT_EQ(result.status, 0) << result.output;
  EXPECT_NE(result.output.find("dual: constraint 1 is slack"), std::string::npos) << result.output;
  const json dual = can::read_json_file(run_dir / "dual" / "dual.json");
  EXPECT_GT(dual.at("lambda")[0].get<double>(), 0.0);
  EXPECT_EQ(dual.at("lambda")[1].get<double>(), 0.0);
  EXPECT_GE(dual.at("predicted").at("safety_improvement")[1].get<double>(), 0.001);
  const std::string markdown = can::read_text_file(run_dir / "eval" / "report.md");
  EXPECT_NE(markdown.find("Constraint 1 is slack: λ*_1 = 0"), std::string::npos) << markdown;
}

}  // namespace
