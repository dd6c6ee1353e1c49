// The primal-dual baseline as a user runs it: can-train on configs/tiny-mocan.yaml with
// pipeline: primal_dual (its primal_dual section: 3 rounds of 4 samples per prompt and 5
// DPO updates). Checks each round's λ against the dual step recomputed by hand from the
// round's own scores, the compute it records, and that a round resumed after its
// sampling half reproduces the run.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "can/atomic_file.h"
#include "can/json_fields.h"
#include "can/json_lines.h"
#include "can/offline_scores.h"
#include "can/preference_data.h"
#include "command_line.h"
#include "temporary_directory.h"

namespace {

namespace fs = std::filesystem;
using can::testing::run_command;

std::string can_train_primal_dual(const fs::path& run_dir) {
  return can::testing::built_executable("can-train") + " --config " +
         can::testing::source_file("configs/tiny-mocan.yaml") + " --set pipeline=primal_dual --set run.dir=" +
         run_dir.string();
}

// Mean over prompts of the per-prompt means of g_0, by hand.
double mean_safety(const can::OfflineScores& scores) {
  double sum = 0;
  for (int64_t i = 0; i < scores.num_prompts(); ++i) {
    double prompt = 0;
    for (int64_t row = scores.offsets()[i]; row < scores.offsets()[i + 1]; ++row) prompt += scores.safety()[row];
    sum += prompt / static_cast<double>(scores.num_responses(i));
  }
  return sum / static_cast<double>(scores.num_prompts());
}

TEST(EndToEnd, TinyPrimalDualStepsLambdaEachRoundAndResumesARoundAfterItsSampling) {
  can::testing::TemporaryDirectory directory;
  const fs::path run_dir = directory.path() / "primal_dual";
  const auto result = run_command(can_train_primal_dual(run_dir));
  ASSERT_EQ(result.status, 0) << result.output;
  for (const char* stage :
       {"data", "tokenizer", "reference", "reward_model", "cost_model", "round-0", "round-1", "round-2", "eval"}) {
    EXPECT_TRUE(fs::is_directory(run_dir / stage)) << stage;
  }
  for (const char* stage : {"offline_scores", "dual", "relabel", "dpo", "round-3"}) {
    EXPECT_FALSE(fs::exists(run_dir / stage)) << stage;
  }
  std::map<std::string, nlohmann::json> entries;  // stages.json by stage name
  const auto manifest = can::read_json_file(run_dir / "stages.json");
  for (const auto& stage : manifest.at("stages")) {
    entries[stage.at("name").get<std::string>()] = stage;
  }

  // configs/tiny-mocan.yaml: λ₀ = 1, η = 1, margin 0.01, 16 prompts × 4 responses, 5 updates a round.
  const double eta = 1.0, margin = 0.01;
  double lambda = 1.0, reference_safety = 0;
  for (int k = 0; k < 3; ++k) {
    SCOPED_TRACE(k);
    const fs::path round_dir = run_dir / ("round-" + std::to_string(k));
    const auto round = can::read_json_file(round_dir / "round.json");
    const auto scores = can::OfflineScores::load(round_dir / "scores.jsonl");
    EXPECT_EQ(scores.total_responses(), 16 * 4);
    const double policy_safety = mean_safety(scores);
    if (k == 0) reference_safety = policy_safety;  // round 0 samples π_ref itself
    EXPECT_DOUBLE_EQ(round.at("policy").at("safety")[0].get<double>(), policy_safety);
    EXPECT_DOUBLE_EQ(round.at("reference").at("safety")[0].get<double>(), reference_safety);
    EXPECT_DOUBLE_EQ(round.at("lambda_before")[0].get<double>(), lambda);
    const double constraint = policy_safety - reference_safety - margin;
    lambda = std::max(0.0, lambda - eta * constraint);
    EXPECT_DOUBLE_EQ(round.at("lambda_after")[0].get<double>(), lambda);
    if (k == 0) {
      EXPECT_DOUBLE_EQ(lambda, 1.0 + eta * margin);
    }
    // stages.json records the round's λ and estimate beside its compute.
    const auto& entry = entries.at("round-" + std::to_string(k));
    EXPECT_DOUBLE_EQ(entry.at("summary").at("lambda")[0].get<double>(), lambda);
    EXPECT_DOUBLE_EQ(entry.at("summary").at("constraint_values")[0].get<double>(), constraint);
    EXPECT_EQ(entry.at("compute").at("optimizer_updates").get<int64_t>(), 5);
    EXPECT_GT(entry.at("compute").at("sampled_tokens").get<int64_t>(), 0);
    EXPECT_GT(entry.at("compute").at("backward_tokens").get<int64_t>(), 0);
    EXPECT_EQ(can::read_preference_pairs(round_dir / "pairs.jsonl").size(), 240u);
    EXPECT_TRUE(fs::exists(round_dir / "model" / "model.safetensors"));
  }
  EXPECT_TRUE(fs::exists(run_dir / "round-0" / "pair_scores.jsonl"));
  EXPECT_FALSE(fs::exists(run_dir / "round-1" / "pair_scores.jsonl"));
  // The evaluation measures what was achieved; nothing was predicted.
  const auto report = can::read_json_file(run_dir / "eval" / "report.json");
  EXPECT_TRUE(report.at("predicted").is_null());
  EXPECT_TRUE(report.at("lambda").is_null());
  EXPECT_TRUE(report.at("achieved").at("safety_improvement")[0].is_number());

  // Round 2 stopped after its sampling half (round.json written, DPO not yet run): --resume
  // takes its λ and pairs as they are, samples nothing, and gives the same policy and report.
  const std::string model = can::read_text_file(run_dir / "round-2" / "model" / "model.safetensors");
  const std::string report_text = can::read_text_file(run_dir / "eval" / "report.json");
  fs::rename(run_dir / "round-2", run_dir / "round-2.partial");
  for (const char* left : {"model", "metrics.jsonl", "scores.jsonl", "responses.jsonl"}) {
    can::remove_tree(run_dir / "round-2.partial" / left);
  }
  can::remove_tree(run_dir / "eval");
  const auto resumed = run_command(can_train_primal_dual(run_dir) + " --resume");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("stage round-2: resuming"), std::string::npos) << resumed.output;
  EXPECT_EQ(resumed.output.find("round 2: sampling"), std::string::npos) << resumed.output;
  EXPECT_FALSE(fs::exists(run_dir / "round-2" / "scores.jsonl"));
  EXPECT_EQ(can::read_text_file(run_dir / "round-2" / "model" / "model.safetensors"), model);
  EXPECT_EQ(can::read_text_file(run_dir / "eval" / "report.json"), report_text);
}

TEST(EndToEnd, APrimalDualRunRefusesASweep) {
  can::testing::TemporaryDirectory directory;
  const auto result = run_command(can_train_primal_dual(directory.path() / "run") + " --sweep-margins 0.01,0.02");
  EXPECT_NE(result.status, 0);
  EXPECT_NE(result.output.find("sweep.margins: sweeps the one-shot pipelines"), std::string::npos) << result.output;
}

}  // namespace
