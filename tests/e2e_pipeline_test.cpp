// The whole pipeline as a user runs it: can-train on the shipped tiny configs
// (a tiny world and tiny models; about 20 s a run).
// Checks every stage's artifact, the dual's solution, the report's fields, and
// that rerunning the last stages with --resume reproduces the report exactly.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "assertions.h"
#include "can/atomic_file.h"
#include "can/json_fields.h"
#include "can/json_lines.h"
#include "can/preference_data.h"
#include "can/score_accuracy.h"
#include "command_line.h"
#include "compress.h"
#include "json_files.h"
#include "temporary_directory.h"

namespace {

namespace fs = std::filesystem;
using can::testing::contains;
using can::testing::run_command;

// configs/tiny-*.yaml: every stage runs, none for long. Their margin 0.01 is about
// a third of what re-weighting the tiny models' samples can reach (0.029 for MoCAN,
// 0.14 for PeCAN, seen on the CPU machines), so it is feasible and it binds.
std::string can_train(const std::string& config, const fs::path& run_dir) {
  return can::testing::built_executable("can-train") + " --config " + can::testing::source_file(config) +
         " --set run.dir=" + run_dir.string();
}

void expect_model_directory(const fs::path& directory) {
  for (const char* file : {"config.json", "model.safetensors", "tokenizer.model"}) {
    EXPECT_TRUE(fs::exists(directory / file)) << directory / file;
  }
  EXPECT_FALSE(fs::exists(directory.parent_path() / "checkpoints")) << "checkpoints left in " << directory;
}

// The dual binds: λ* > 0 and, by complementary slackness, the predicted safety
// improvement equals the margin.
void expect_binding_dual(const fs::path& run_dir) {
  const auto dual = can::read_json_file(run_dir / "dual" / "dual.json");
  EXPECT_TRUE(dual.at("feasible").get<bool>());
  EXPECT_TRUE(dual.at("converged").get<bool>());
  EXPECT_GT(dual.at("lambda")[0].get<double>(), 0.0);
  EXPECT_NEAR(dual.at("predicted").at("safety_improvement")[0].get<double>(), 0.01, 1e-8);
}

void expect_report_fields(const fs::path& run_dir) {
  const auto report = can::read_json_file(run_dir / "eval" / "report.json");
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
  EXPECT_EQ(report.at("lambda"), can::read_json_file(run_dir / "dual" / "dual.json").at("lambda"));
  EXPECT_EQ(report.at("num_prompts").get<int>(), 24);
  for (const char* file :
       {"report.md", "responses.jsonl", "judge_requests.jsonl", "reward_distribution.svg", "cost_distribution.svg"}) {
    EXPECT_TRUE(fs::exists(run_dir / "eval" / file)) << file;
  }
  // The prediction and what it is compared with share a unit; the world's judge ranks the offline samples
  // (the tiny models' text earns the judge's zero everywhere, so no pair is told apart here).
  EXPECT_EQ(report.at("predicted").at("safety_unit"), report.at("achieved").at("safety_unit"));
  const auto& accuracy = report.at("score_accuracy");
  EXPECT_EQ(accuracy.at("reward").at("judge"), "helpfulness");
  EXPECT_EQ(accuracy.at("safety").at(0).at("unit"), report.at("achieved").at("safety_unit"));
  EXPECT_EQ(accuracy, can::to_json(can::read_score_accuracy(run_dir / "offline_scores" / "accuracy.json")));
}

TEST(EndToEnd, TinyMocanRunsEveryStageAndResumesToTheSameReport) {
  can::testing::TemporaryDirectory directory;
  const fs::path run_dir = directory.path() / "mocan";
  const auto result = run_command(can_train("configs/tiny-mocan.yaml", run_dir));
  ASSERT_EQ(result.status, 0) << result.output;
  EXPECT_TRUE(can::read_json_file(run_dir / "eval" / "report.json").at("achieved_by_score_models").is_null());

  const auto stages = can::read_json_file(run_dir / "stages.json");
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
  // Every stage records its peak memory; --dry-run's plan counts the optimizer updates each trainer made.
  std::map<std::string, nlohmann::json> compute;  // each stage's compute counts
  for (const auto& stage : stages.at("stages")) {
    // null where the kernel refuses to reset the peak (/proc/self/clear_refs); a number here.
    ASSERT_TRUE(stage.at("peak_rss_bytes").is_number()) << stage.at("name");
    EXPECT_GT(stage.at("peak_rss_bytes").get<int64_t>(), 50'000'000) << stage.at("name");
    compute[stage.at("name").get<std::string>()] = stage.at("compute");
  }
  EXPECT_EQ(compute.at("dual"), (nlohmann::json{{"forward_tokens", 0}, {"backward_tokens", 0}, {"sampled_tokens", 0},
                                                {"optimizer_updates", 0}}));
  int64_t evaluated_tokens = 0;  // both policies' responses
  can::for_each_json_line(run_dir / "eval" / "responses.jsonl", [&](const nlohmann::json& line, int64_t) {
    evaluated_tokens += line.at("reference").at("num_tokens").get<int64_t>() +
                        line.at("policy").at("num_tokens").get<int64_t>();
  });
  EXPECT_EQ(compute.at("eval").at("sampled_tokens").get<int64_t>(), evaluated_tokens);
  EXPECT_EQ(compute.at("eval").at("backward_tokens").get<int64_t>(), 0);
  EXPECT_GT(compute.at("offline_scores").at("sampled_tokens").get<int64_t>(), 0);
  const auto plan = run_command(can_train("configs/tiny-mocan.yaml", directory.path() / "unused") + " --dry-run");
  ASSERT_EQ(plan.status, 0) << plan.output;
  for (const char* stage : {"reference", "reward_model", "cost_model", "dpo"}) {
    int64_t updates = 0;
    can::for_each_json_line(run_dir / stage / "metrics.jsonl", [&](const nlohmann::json& line, int64_t) {
      if (line.contains("step")) updates = std::max(updates, line.at("step").get<int64_t>());
    });
    const size_t line = plan.output.find(fmt::format("\n{} ", stage));  // the stage's own line of the plan
    ASSERT_NE(line, std::string::npos) << stage;
    EXPECT_TRUE(contains(plan.output.substr(line + 1, plan.output.find('\n', line + 1) - line - 1),
                         fmt::format("{} optimizer updates", updates)))
        << stage << "\n" << plan.output;
    EXPECT_EQ(compute.at(stage).at("optimizer_updates").get<int64_t>(), updates) << stage;
    EXPECT_GT(compute.at(stage).at("backward_tokens").get<int64_t>(), 0) << stage;
  }
  EXPECT_FALSE(fs::exists(directory.path() / "unused"));

  // Redo the last two stages: --resume skips the finished ones and the report comes out the same.
  const std::string report = can::read_text_file(run_dir / "eval" / "report.json");
  can::remove_tree(run_dir / "dpo");
  can::remove_tree(run_dir / "eval");
  const auto resumed = run_command(can_train("configs/tiny-mocan.yaml", run_dir) + " --resume");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("stage reference: finished earlier, skipped"), std::string::npos) << resumed.output;
  EXPECT_EQ(can::read_text_file(run_dir / "eval" / "report.json"), report);
}

// A sweep added to a finished run with --resume reuses its models and samples;
// the margin of the single run gives the very same report, and the summary
// lists one report per margin, the dual binding at each.
TEST(EndToEnd, AMarginSweepReusesTheRunAndReproducesItsReport) {
  can::testing::TemporaryDirectory directory;
  const fs::path run_dir = directory.path() / "sweep";
  const auto result = run_command(can_train("configs/tiny-mocan.yaml", run_dir));
  ASSERT_EQ(result.status, 0) << result.output;
  const auto swept =
      run_command(can_train("configs/tiny-mocan.yaml", run_dir) + " --resume --sweep-margins 0.005,0.01");
  ASSERT_EQ(swept.status, 0) << swept.output;
  EXPECT_NE(swept.output.find("stage offline_scores: finished earlier, skipped"), std::string::npos) << swept.output;

  EXPECT_EQ(can::read_text_file(run_dir / "eval-b0.01" / "report.json"),
            can::read_text_file(run_dir / "eval" / "report.json"));
  const auto points = can::read_json_file(run_dir / "sweep.json").at("points");
  ASSERT_EQ(points.size(), 2u);
  for (size_t i = 0; i < points.size(); ++i) {
    const double margin = i == 0 ? 0.005 : 0.01;
    EXPECT_EQ(points[i].at("margin").get<double>(), margin);
    EXPECT_NEAR(points[i].at("report").at("predicted").at("safety_improvement")[0].get<double>(), margin, 1e-8);
    EXPECT_GT(points[i].at("report").at("lambda")[0].get<double>(), 0.0);
  }
  // λ* grows with the margin it must meet.
  EXPECT_LT(points[0].at("report").at("lambda")[0].get<double>(), points[1].at("report").at("lambda")[0].get<double>());
  EXPECT_TRUE(fs::exists(run_dir / "sweep.md"));
  EXPECT_TRUE(fs::exists(run_dir / "sweep.svg"));
}

// External inputs: the user's Hugging Face model directories and PKU-SafeRLHF
// files instead of the world. Given the models and data files of a finished
// world run, the stages that would train them are left out and every later
// artifact comes out byte for byte as in that run.
TEST(EndToEnd, UserModelsAndDataFilesReplaceTheWorldStages) {
  can::testing::TemporaryDirectory directory;
  const fs::path world_run = directory.path() / "world";
  const auto result = run_command(can_train("configs/tiny-mocan.yaml", world_run));
  ASSERT_EQ(result.status, 0) << result.output;

  const fs::path user_run = directory.path() / "user";
  const fs::path data = world_run / "data";
  const auto external = run_command(can_train("configs/tiny-mocan.yaml", user_run) + " --set world.enabled=false" +
                                    " --set data.pairs_train=" + (data / "pairs_train.jsonl").string() +
                                    " --set data.prompts_sample=" + (data / "prompts_sample.jsonl").string() +
                                    " --set data.prompts_test=" + (data / "prompts_test.jsonl").string() +
                                    " --set models.policy=" + (world_run / "reference" / "model").string() +
                                    " --set models.reward=" + (world_run / "reward_model" / "model").string() +
                                    " --set models.cost=" + (world_run / "cost_model" / "model").string());
  ASSERT_EQ(external.status, 0) << external.output;

  const auto manifest = can::read_json_file(user_run / "stages.json");
  std::vector<std::string> stages;
  for (const auto& stage : manifest.at("stages")) stages.push_back(stage.at("name"));
  EXPECT_EQ(stages,
            (std::vector<std::string>{"data", "tokenizer", "offline_scores", "dual", "relabel", "dpo", "eval"}));
  for (const char* file : {"tokenizer/tokenizer.model", "offline_scores/scores.jsonl", "dual/dual.json",
                           "relabel/pairs.jsonl", "dpo/model/model.safetensors"}) {
    EXPECT_EQ(can::read_text_file(user_run / file), can::read_text_file(world_run / file)) << file;
  }
  // The same report, but for what it says of its prompts: the user's file, not the world's test set.
  auto user_report = can::read_json_file(user_run / "eval" / "report.json");
  auto world_report = can::read_json_file(world_run / "eval" / "report.json");
  EXPECT_EQ(user_report.at("prompt_set"), "data.prompts_test");
  EXPECT_EQ(world_report.at("prompt_set"), "held_out_templates");
  user_report.erase("prompt_set");
  world_report.erase("prompt_set");
  EXPECT_EQ(user_report, world_report);
}

// PKU-SafeRLHF as published: the pairs compressed (train.jsonl.xz; here the test split
// as .gz), no prompt files. The sample prompts are sampling.num_prompts of the train
// pairs' distinct prompts, the evaluation prompts the test pairs' distinct prompts.
TEST(EndToEnd, CompressedPairFilesWithoutPromptFilesRunAsPublished) {
  can::testing::TemporaryDirectory directory;
  const fs::path world_run = directory.path() / "world";
  ASSERT_EQ(run_command(can_train("configs/tiny-mocan.yaml", world_run) + " --stages data").status, 0);
  const fs::path data = world_run / "data";
  const std::string pairs = can::read_text_file(data / "pairs_train.jsonl");
  can::testing::write_xz(directory.path() / "train.jsonl.xz", pairs);
  can::testing::write_gzip(directory.path() / "test.jsonl.gz", pairs.substr(0, pairs.find('\n', pairs.size() / 2) + 1));

  const fs::path run_dir = directory.path() / "published";
  const auto result = run_command(
      can_train("configs/tiny-mocan.yaml", run_dir) + " --set world.enabled=false" +
      " --set data.pairs_train=" + (directory.path() / "train.jsonl.xz").string() +
      " --set data.pairs_test=" + (directory.path() / "test.jsonl.gz").string() +
      " --set data.sft_train=" + (data / "sft_train.jsonl").string() + " --stages data,tokenizer");
  ASSERT_EQ(result.status, 0) << result.output;
  // The run's copies are plain: the pairs as read, the prompts drawn from them.
  EXPECT_EQ(can::read_text_file(run_dir / "data" / "pairs_train.jsonl"), pairs);
  const auto train = can::read_preference_pairs(data / "pairs_train.jsonl");
  std::set<std::string> train_prompts, sampled;
  for (const auto& pair : train) train_prompts.insert(pair.prompt);
  int64_t lines = 0;
  can::for_each_json_line(run_dir / "data" / "prompts_sample.jsonl", [&](const nlohmann::json& prompt, int64_t) {
    ++lines;
    EXPECT_EQ(train_prompts.count(prompt.at("prompt").get<std::string>()), 1u);
    EXPECT_TRUE(sampled.insert(prompt.at("prompt").get<std::string>()).second) << "a prompt drawn twice";
  });
  EXPECT_EQ(lines, 16);  // sampling.num_prompts of configs/tiny-mocan.yaml
  std::set<std::string> test_prompts;
  for (const auto& pair : can::read_preference_pairs(directory.path() / "test.jsonl.gz")) test_prompts.insert(pair.prompt);
  lines = 0;
  can::for_each_json_line(run_dir / "data" / "prompts_test.jsonl", [&](const nlohmann::json& prompt, int64_t) {
    ++lines;
    EXPECT_EQ(test_prompts.count(prompt.at("prompt").get<std::string>()), 1u);
  });
  EXPECT_EQ(lines, static_cast<int64_t>(test_prompts.size()));
  EXPECT_TRUE(fs::exists(run_dir / "tokenizer" / "tokenizer.model"));
}

TEST(EndToEnd, TinyPecanRunsEveryStage) {
  can::testing::TemporaryDirectory directory;
  const fs::path run_dir = directory.path() / "pecan";
  const auto result = run_command(can_train("configs/tiny-pecan.yaml", run_dir) +
                                  " --set eval.same_template_prompts=true");
  ASSERT_EQ(result.status, 0) << result.output;
  for (const char* model : {"reference", "helpfulness_dpo", "safety_dpo", "dpo"}) {
    expect_model_directory(run_dir / model / "model");
  }
  expect_binding_dual(run_dir);
  expect_report_fields(run_dir);
  // PeCAN's prediction is in implicit rewards: achieved is measured in them, the score models' result beside it.
  const auto report = can::read_json_file(run_dir / "eval" / "report.json");
  EXPECT_EQ(report.at("predicted").at("safety_unit"), "implicit_reward");
  EXPECT_EQ(report.at("achieved_by_score_models").at("safety_unit"), "cost_model");
  EXPECT_TRUE(report.at("achieved_by_score_models").at("safety_improvement").at(0).is_number());
  // Evaluated on held-out templates and, as asked, on new prompts of the sample prompts' templates.
  EXPECT_EQ(report.at("prompt_set"), "held_out_templates");
  const auto same = can::read_json_file(run_dir / "eval" / "same_templates" / "report.json");
  EXPECT_EQ(same.at("prompt_set"), "same_templates");
  EXPECT_EQ(same.at("num_prompts"), report.at("num_prompts"));
  EXPECT_EQ(same.at("predicted"), report.at("predicted"));
}

// LoRA in bfloat16 compute (what the paper's setting runs on a GPU), on the CPU: the
// policy keeps float32 master weights, so the merged checkpoint is float32.
// Also the soft pseudo-preferences (relabel.mode soft) through the pipeline.
TEST(EndToEnd, TinyMocanWithLoraInBfloat16WritesFloat32MergedModelAndPeftAdapters) {
  can::testing::TemporaryDirectory directory;
  const fs::path run_dir = directory.path() / "lora";
  const auto result = run_command(can_train("configs/tiny-mocan.yaml", run_dir) +
                                  " --set lora.rank=4 --set lora.target_modules=[q_proj,v_proj,down_proj]"
                                  " --set dpo.activation_checkpointing=true --set run.compute_dtype=bfloat16"
                                  " --set relabel.mode=soft");
  ASSERT_EQ(result.status, 0) << result.output;
  // Each pair keeps σ(|Δs|) of its likelier response, recomputed here from the pair scores.
  const auto pairs = can::read_preference_pairs(run_dir / "relabel" / "pairs.jsonl");
  const auto probabilities = can::testing::read_json_lines(run_dir / "relabel" / "probabilities.jsonl");
  ASSERT_EQ(pairs.size(), probabilities.size());
  size_t soft = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const double p1 = probabilities[i].at("probability_response_1").get<double>();
    EXPECT_EQ(pairs[i].better_response_id, p1 > 0.5 ? 1 : 0) << i;
    EXPECT_NEAR(pairs[i].better_probability, std::max(p1, 1 - p1), 1e-12) << i;
    soft += pairs[i].better_probability < 1;
  }
  EXPECT_GT(soft, pairs.size() / 2);
  expect_model_directory(run_dir / "dpo" / "model");
  const auto adapter_config = can::read_json_file(run_dir / "dpo" / "adapter" / "adapter_config.json");
  EXPECT_EQ(adapter_config.at("peft_type"), "LORA");
  EXPECT_EQ(adapter_config.at("r"), 4);
  EXPECT_EQ(adapter_config.at("target_modules"), nlohmann::json::array({"q_proj", "v_proj", "down_proj"}));
  EXPECT_TRUE(fs::exists(run_dir / "dpo" / "adapter" / "adapter_model.safetensors"));
  // The Hugging Face model holds merged weights, never adapter tensors.
  const std::string merged = can::read_text_file(run_dir / "dpo" / "model" / "model.safetensors");
  EXPECT_EQ(merged.find("lora_"), std::string::npos);
  EXPECT_NE(merged.find("\"F32\""), std::string::npos);
  EXPECT_EQ(merged.find("\"BF16\""), std::string::npos);
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
