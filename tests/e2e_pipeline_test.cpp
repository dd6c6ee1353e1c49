// The whole pipeline as a user runs it: can-train on the shipped tiny configs
// (a tiny world and tiny models; about 20 s a run).
// Checks every stage's artifact, the dual's solution, the report's fields, and
// that rerunning the last stages with --resume reproduces the report exactly.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "can/atomic_file.h"
#include "can/preference_data.h"
#include "command_line.h"
#include "temporary_directory.h"

namespace {

namespace fs = std::filesystem;
using can::testing::run_command;

// configs/tiny-*.yaml: every stage runs, none for long. Their margin 0.01 is about
// a third of what re-weighting the tiny models' samples can reach (0.029 for MoCAN,
// 0.14 for PeCAN, seen on the CPU machines), so it is feasible and it binds.
std::string can_train(const std::string& config, const fs::path& run_dir) {
  return can::testing::built_executable("can-train") + " --config " + can::testing::source_file(config) +
         " --set run.dir=" + run_dir.string();
}

nlohmann::json read_json(const fs::path& path) { return nlohmann::json::parse(can::read_text_file(path)); }

void expect_model_directory(const fs::path& directory) {
  for (const char* file : {"config.json", "model.safetensors", "tokenizer.model"}) {
    EXPECT_TRUE(fs::exists(directory / file)) << directory / file;
  }
  EXPECT_FALSE(fs::exists(directory.parent_path() / "checkpoints")) << "checkpoints left in " << directory;
}

// The dual binds: λ* > 0 and, by complementary slackness, the predicted safety
// improvement equals the margin.
void expect_binding_dual(const fs::path& run_dir) {
  const auto dual = read_json(run_dir / "dual" / "dual.json");
  EXPECT_TRUE(dual.at("feasible").get<bool>());
  EXPECT_TRUE(dual.at("converged").get<bool>());
  EXPECT_GT(dual.at("lambda")[0].get<double>(), 0.0);
  EXPECT_NEAR(dual.at("predicted").at("safety_improvement")[0].get<double>(), 0.01, 1e-8);
}

void expect_report_fields(const fs::path& run_dir) {
  const auto report = read_json(run_dir / "eval" / "report.json");
  for (const char* side : {"reference", "policy"}) {
    for (const char* field : {"reward", "cost", "judge_helpfulness", "judge_safety"}) {
      EXPECT_TRUE(report.at(side).at(field).is_number()) << side << "." << field;
    }
  }
  for (const char* side : {"predicted", "achieved"}) {
    EXPECT_EQ(report.at(side).at("safety_improvement").size(), 1u) << side;
    EXPECT_TRUE(report.at(side).at("reward_improvement").is_number()) << side;
  }
  EXPECT_TRUE(report.at("win_rate").at("helpfulness").is_number());
  EXPECT_TRUE(report.at("win_rate").at("safety").is_number());
  EXPECT_EQ(report.at("margins"), nlohmann::json::array({0.01}));
  EXPECT_EQ(report.at("lambda"), read_json(run_dir / "dual" / "dual.json").at("lambda"));
  EXPECT_EQ(report.at("num_prompts").get<int>(), 24);
  for (const char* file : {"report.md", "responses.jsonl", "reward_distribution.svg", "cost_distribution.svg"}) {
    EXPECT_TRUE(fs::exists(run_dir / "eval" / file)) << file;
  }
}

TEST(EndToEnd, TinyMocanRunsEveryStageAndResumesToTheSameReport) {
  can::testing::TemporaryDirectory directory;
  const fs::path run_dir = directory.path() / "mocan";
  const auto result = run_command(can_train("configs/tiny-mocan.yaml", run_dir));
  ASSERT_EQ(result.status, 0) << result.output;

  const auto stages = read_json(run_dir / "stages.json");
  for (const char* stage : {"data", "tokenizer", "reference", "reward_model", "cost_model", "offline_scores", "dual",
                            "relabel", "dpo", "eval"}) {
    EXPECT_TRUE(fs::is_directory(run_dir / stage)) << stage;
    EXPECT_FALSE(fs::exists(run_dir / (std::string(stage) + ".partial"))) << stage;
  }
  EXPECT_TRUE(fs::exists(run_dir / "config.resolved.yaml"));
  for (const char* model : {"reference", "reward_model", "cost_model", "dpo"})
    expect_model_directory(run_dir / model / "model");
  EXPECT_EQ(can::read_preference_pairs(run_dir / "relabel" / "pairs.jsonl").size(), 240u);
  expect_binding_dual(run_dir);
  expect_report_fields(run_dir);

  // Redo the last two stages: --resume skips the finished ones and the report comes out the same.
  const std::string report = can::read_text_file(run_dir / "eval" / "report.json");
  fs::remove_all(run_dir / "dpo");
  fs::remove_all(run_dir / "eval");
  const auto resumed = run_command(can_train("configs/tiny-mocan.yaml", run_dir) + " --resume");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("stage reference: finished earlier, skipped"), std::string::npos) << resumed.output;
  EXPECT_EQ(can::read_text_file(run_dir / "eval" / "report.json"), report);
}

TEST(EndToEnd, TinyPecanRunsEveryStage) {
  can::testing::TemporaryDirectory directory;
  const fs::path run_dir = directory.path() / "pecan";
  const auto result = run_command(can_train("configs/tiny-pecan.yaml", run_dir));
  ASSERT_EQ(result.status, 0) << result.output;
  for (const char* model : {"reference", "helpfulness_dpo", "safety_dpo", "dpo"}) {
    expect_model_directory(run_dir / model / "model");
  }
  expect_binding_dual(run_dir);
  expect_report_fields(run_dir);
}

TEST(EndToEnd, TinyMocanWithLoraWritesMergedModelAndPeftAdapters) {
  can::testing::TemporaryDirectory directory;
  const fs::path run_dir = directory.path() / "lora";
  const auto result = run_command(can_train("configs/tiny-mocan.yaml", run_dir) +
                                  " --set lora.rank=4 --set lora.target_modules=[q_proj,v_proj,down_proj]"
                                  " --set dpo.activation_checkpointing=true");
  ASSERT_EQ(result.status, 0) << result.output;
  expect_model_directory(run_dir / "dpo" / "model");
  const auto adapter_config = read_json(run_dir / "dpo" / "adapter" / "adapter_config.json");
  EXPECT_EQ(adapter_config.at("peft_type"), "LORA");
  EXPECT_EQ(adapter_config.at("r"), 4);
  EXPECT_EQ(adapter_config.at("target_modules"), nlohmann::json::array({"q_proj", "v_proj", "down_proj"}));
  EXPECT_TRUE(fs::exists(run_dir / "dpo" / "adapter" / "adapter_model.safetensors"));
  // The Hugging Face model holds merged weights, never adapter tensors.
  const std::string merged = can::read_text_file(run_dir / "dpo" / "model" / "model.safetensors");
  EXPECT_EQ(merged.find("lora_"), std::string::npos);
  expect_binding_dual(run_dir);
  expect_report_fields(run_dir);
}

TEST(EndToEnd, AnInfeasibleMarginStopsAtTheDualSayingSo) {
  can::testing::TemporaryDirectory directory;
  const fs::path run_dir = directory.path() / "infeasible";
  const auto result = run_command(can_train("configs/tiny-mocan.yaml", run_dir) + " --set dual.margins=[1000]");
  EXPECT_EQ(result.status, 1) << result.output;
  EXPECT_NE(result.output.find("infeasible"), std::string::npos) << result.output;
  EXPECT_FALSE(fs::exists(run_dir / "dual"));
  EXPECT_TRUE(fs::exists(run_dir / "dual.partial" / "dual.json"));
  EXPECT_FALSE(fs::exists(run_dir / "relabel.partial"));
}

}  // namespace
