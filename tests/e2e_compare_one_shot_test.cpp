// scripts/compare-one-shot.sh --tiny as a user runs it: both methods over two seeds, and
// comparison.json's numbers traced back to the runs' own records.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "can/json_fields.h"
#include "command_line.h"
#include "temporary_directory.h"

namespace {

namespace fs = std::filesystem;

// Σ over a run's stages named in `stages` (all rounds when empty) of compute[field].
int64_t compute_of(const fs::path& run_dir, const std::vector<std::string>& stages, const std::string& field) {
  const auto manifest = can::read_json_file(run_dir / "stages.json");
  int64_t total = 0;
  for (const auto& stage : manifest.at("stages")) {
    const std::string name = stage.at("name").get<std::string>();
    const bool counted = stages.empty() ? name.rfind("round-", 0) == 0
                                        : std::find(stages.begin(), stages.end(), name) != stages.end();
    if (counted) total += stage.at("compute").at(field).get<int64_t>();
  }
  return total;
}

TEST(EndToEnd, TheTinyOneShotAgainstPrimalDualComparisonAddsUpTheRunsRecords) {
  can::testing::TemporaryDirectory directory;
  const fs::path out = directory.path() / "comparison";
  const char* binary_dir = std::getenv("CAN_BINARY_DIR");
  ASSERT_NE(binary_dir, nullptr) << "CAN_BINARY_DIR is set by CTest";
  const auto result = can::testing::run_command("CAN_BUILD_DIR=" + std::string(binary_dir) + " bash " +
                                                can::testing::source_file("scripts/compare-one-shot.sh") +
                                                " --tiny --seeds 2 --out " + out.string());
  ASSERT_EQ(result.status, 0) << result.output;
  for (const char* file : {"comparison.json", "comparison.md", "comparison.svg"}) {
    EXPECT_TRUE(fs::exists(out / file)) << file;
  }
  const auto comparison = can::read_json_file(out / "comparison.json");
  EXPECT_EQ(comparison.at("margin").get<double>(), 0.01);
  EXPECT_EQ(comparison.at("seeds"), nlohmann::json::array({1, 2}));
  const auto& methods = comparison.at("methods");
  for (const char* method : {"one_shot", "primal_dual"}) {
    for (const char* field : {"wall_s", "sampled_tokens", "trained_tokens", "policy_updates",
                              "achieved_reward_improvement"}) {
      const auto& value = methods.at(method).at(field);
      EXPECT_TRUE(value.at("mean").is_number()) << method << "." << field;
      EXPECT_TRUE(value.at("std").is_number()) << method << "." << field;
      EXPECT_EQ(value.at("values").size(), 2u) << method << "." << field;
    }
    EXPECT_EQ(methods.at(method).at("achieved_safety_improvement").size(), 1u) << method;
  }
  const std::vector<std::string> one_shot_stages = {"offline_scores", "dual", "relabel", "dpo"};
  for (int seed = 1; seed <= 2; ++seed) {
    SCOPED_TRACE(seed);
    const fs::path seed_dir = out / ("seed-" + std::to_string(seed));
    const size_t i = static_cast<size_t>(seed - 1);
    for (const auto& [field, counter] : {std::pair<std::string, std::string>{"sampled_tokens", "sampled_tokens"},
                                         {"trained_tokens", "backward_tokens"},
                                         {"policy_updates", "optimizer_updates"}}) {
      EXPECT_EQ(methods.at("one_shot").at(field).at("values")[i].get<int64_t>(),
                compute_of(seed_dir / "one_shot", one_shot_stages, counter))
          << field;
      EXPECT_EQ(methods.at("primal_dual").at(field).at("values")[i].get<int64_t>(),
                compute_of(seed_dir / "primal_dual", {}, counter))
          << field;
    }
    // 3 rounds of 5 updates; one-shot's single epoch of 228 pairs in micro-batches of 16.
    EXPECT_EQ(methods.at("primal_dual").at("policy_updates").at("values")[i].get<int64_t>(), 15);
    EXPECT_EQ(methods.at("one_shot").at("policy_updates").at("values")[i].get<int64_t>(), 15);
    // The primal-dual run was given the one-shot run's models, so it trained none of its own.
    EXPECT_FALSE(fs::exists(seed_dir / "primal_dual" / "reference"));
    EXPECT_FALSE(fs::exists(seed_dir / "primal_dual" / "reward_model"));
    const auto report = can::read_json_file(seed_dir / "one_shot" / "eval" / "report.json");
    EXPECT_EQ(methods.at("one_shot").at("achieved_reward_improvement").at("values")[i],
              report.at("achieved").at("reward_improvement"));
    const auto dual = can::read_json_file(seed_dir / "one_shot" / "dual" / "dual.json");
    EXPECT_EQ(comparison.at("per_seed")[i].at("one_shot").at("lambda"), dual.at("lambda"));
    const auto last_round = can::read_json_file(seed_dir / "primal_dual" / "round-2" / "round.json");
    EXPECT_EQ(comparison.at("per_seed")[i].at("primal_dual").at("lambda"), last_round.at("lambda_after"));
    EXPECT_EQ(comparison.at("per_seed")[i].at("primal_dual").at("rounds").size(), 3u);
  }
}

}  // namespace
