// can-train --dry-run (run_plan.h): the tiny config planned without writing
// anything; configs/paper-mocan.yaml with nothing downloaded names every missing
// input; with tiny stand-ins in the published layouts (a policy whose vocabulary is
// the tokenizer's plus <pad>, score models with the original beaver config, pairs in
// .jsonl.xz with extra fields, no prompt files) it plans every stage with memory
// estimates; a wrong shape and a swapped score_type are both reported in one pass.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "assertions.h"
#include "can/atomic_file.h"
#include "can/json_fields.h"
#include "can/llama.h"
#include "can/model_size.h"
#include "can/preference_data.h"
#include "can/score_model.h"
#include "command_line.h"
#include "compress.h"
#include "tiny_world.h"

namespace {

using can::testing::contains;
namespace fs = std::filesystem;
using json = nlohmann::json;

can::testing::CommandResult dry_run(const fs::path& directory, const std::string& arguments) {
  return can::testing::run_command(fmt::format("cd '{}' && '{}' --dry-run {}", directory.string(),
                                               fs::absolute(can::testing::built_executable("can-train")).string(),
                                               arguments));
}

std::string paper_config() { return can::testing::source_file("configs/paper-mocan.yaml"); }

TEST(DryRun, TheTinyConfigIsPlannedAndNothingIsWritten) {
  can::testing::TemporaryDirectory directory;
  const fs::path run_dir = directory.path() / "run";
  const auto result = dry_run(directory.path(), fmt::format("--config '{}' --set run.dir='{}'",
                                                            can::testing::source_file("configs/tiny-mocan.yaml"),
                                                            run_dir.string()));
  ASSERT_EQ(result.status, 0) << result.output;
  for (const char* stage : {"data", "tokenizer", "reference", "reward_model", "cost_model", "offline_scores", "dual",
                            "relabel", "dpo", "eval"}) {
    EXPECT_TRUE(contains(result.output, fmt::format("\n{} ", stage))) << stage;
  }
  EXPECT_TRUE(contains(result.output, "no problems found")) << result.output;
  EXPECT_TRUE(contains(result.output, "this machine has")) << result.output;
  EXPECT_FALSE(fs::exists(run_dir));
  // Nothing left behind: the writability probe, the tokenizer trained in a temporary folder.
  fs::create_directories(directory.path() / "tmp");
  const auto private_tmp = can::testing::run_command(
      fmt::format("cd '{0}' && TMPDIR='{0}/tmp' '{1}' --dry-run --config '{2}' --set run.dir='{3}'",
                  directory.path().string(), fs::absolute(can::testing::built_executable("can-train")).string(),
                  can::testing::source_file("configs/tiny-mocan.yaml"), run_dir.string()));
  ASSERT_EQ(private_tmp.status, 0) << private_tmp.output;
  EXPECT_TRUE(fs::is_empty(directory.path() / "tmp"));
  EXPECT_EQ(std::distance(fs::directory_iterator(directory.path()), fs::directory_iterator()), 1);  // tmp/ only
}

TEST(DryRun, ARunDirectoryInUseNeedsResumeAndTheSameConfig) {
  can::testing::TemporaryDirectory directory;
  const fs::path run_dir = directory.path() / "run";
  fs::create_directories(run_dir);
  can::write_text_atomically(run_dir / "stages.json", "{}");
  const std::string config = can::testing::source_file("configs/tiny-mocan.yaml");
  const auto fresh = dry_run(directory.path(), fmt::format("--config '{}' --set run.dir='{}'", config, run_dir.string()));
  EXPECT_EQ(fresh.status, 1) << fresh.output;
  EXPECT_TRUE(contains(fresh.output, "is not empty; pass --resume")) << fresh.output;
  const auto resumed = dry_run(directory.path(), fmt::format("--config '{}' --set run.dir='{}' --resume", config,
                                                             run_dir.string()));
  EXPECT_EQ(resumed.status, 1) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, "has no config.resolved.yaml")) << resumed.output;
}

TEST(DryRun, ThePaperConfigWithNothingDownloadedNamesEveryMissingInput) {
  can::testing::TemporaryDirectory directory;
  const auto result = dry_run(directory.path(), "--config '" + paper_config() + "'");
  EXPECT_EQ(result.status, 1) << result.output;
  for (const char* missing :
       {"models.policy: model directory 'models/alpaca-7b-reproduced' does not exist",
        "models.reward: model directory 'models/beaver-7b-v1.0-reward' does not exist",
        "models.cost: model directory 'models/beaver-7b-v1.0-cost' does not exist",
        "data.pairs_train: ", "data/pku-saferlhf-30k-hub/train.jsonl.xz", "data.pairs_test: "}) {
    EXPECT_TRUE(contains(result.output, missing)) << missing;
  }
}

// models/ and data/ as paper-mocan.yaml expects them, with tiny models.
class PaperStandIns : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path root = directory_.path();
    // Alpaca-7B-reproduced's vocabulary is its tokenizer's pieces plus <pad> as the last id.
    const int64_t vocab = can::Tokenizer::load(world_.tokenizer_path.string()).vocab_size() + 1;
    can::LlamaConfig architecture = can::testing::tiny_llama_config(vocab);
    architecture.pad_token_id = vocab - 1;
    can::save_causal_lm(can::LlamaForCausalLM(architecture), (root / "models/alpaca-7b-reproduced").string());
    fs::copy_file(world_.tokenizer_path, root / "models/alpaca-7b-reproduced/tokenizer.model");
    for (const char* kind : {"reward", "cost"}) {
      const fs::path folder = root / fmt::format("models/beaver-7b-v1.0-{}", kind);
      can::save_score_model(can::LlamaForScore(architecture), folder.string());
      // The beaver configs as first published: LlamaModelForScore, score_type, `bias` only.
      json config = can::read_json_file(folder / "config.json");
      config["architectures"] = {"LlamaModelForScore"};
      config["score_type"] = kind;
      config.erase("score_bias");
      can::write_text_atomically(folder / "config.json", config.dump(2));
    }
    // The hub's pairs: .jsonl.xz with fields CAN does not read.
    fs::create_directories(root / "data/pku-saferlhf-30k-hub");
    for (const char* split : {"train", "test"}) {
      std::string lines;
      for (const auto& pair : world_.world.pairs) {
        json line = can::preference_pair_to_json(can::to_preference_pair(world_.world, pair));
        line["prompt_source"] = "Alpaca";
        line["response_0_harm_category"] = {{"Privacy Violation", false}};
        lines += line.dump() + "\n";
      }
      can::testing::write_xz(root / fmt::format("data/pku-saferlhf-30k-hub/{}.jsonl.xz", split), lines);
    }
  }

  can::testing::TinyWorld world_{/*train_prompts=*/40, /*test_prompts=*/5, /*vocab_size=*/400};
  can::testing::TemporaryDirectory directory_;
};

TEST_F(PaperStandIns, EveryStageIsPlannedWithMemoryEstimates) {
  const auto result = dry_run(directory_.path(), "--config '" + paper_config() + "'");
  ASSERT_EQ(result.status, 0) << result.output;
  EXPECT_TRUE(contains(result.output, "data.pairs_train")) << result.output;
  EXPECT_TRUE(contains(result.output, "40 pairs, 40 distinct prompts")) << result.output;
  for (const char* stage : {"offline_scores", "dual", "relabel", "dpo", "eval"}) {
    EXPECT_TRUE(contains(result.output, fmt::format("\n{} ", stage))) << stage;
  }
  // The paper's run on tiny models fits any GPU; the sampling line counts 40 prompts × 128.
  EXPECT_TRUE(contains(result.output, "80 GB: fits")) << result.output;
  EXPECT_TRUE(contains(result.output, "sample 5,120 responses (40 prompts × 128)")) << result.output;
  EXPECT_TRUE(contains(result.output, "no problems found")) << result.output;
}

TEST_F(PaperStandIns, AWrongShapeAndASwappedScoreTypeAreBothReported) {
  const fs::path cost = directory_.path() / "models/beaver-7b-v1.0-cost/config.json";
  json config = can::read_json_file(cost);
  config["intermediate_size"] = 80;  // the weights are 64 wide: gate, up and down of both layers differ
  can::write_text_atomically(cost, config.dump(2));
  const fs::path reward = directory_.path() / "models/beaver-7b-v1.0-reward/config.json";
  config = can::read_json_file(reward);
  config["score_type"] = "cost";
  can::write_text_atomically(reward, config.dump(2));

  const auto result = dry_run(directory_.path(), "--config '" + paper_config() + "'");
  EXPECT_EQ(result.status, 1) << result.output;
  EXPECT_TRUE(contains(result.output, "models.cost: models/beaver-7b-v1.0-cost: 6 tensor(s) of the wrong shape, first: "
                                      "model.layers.0.mlp.down_proj.weight is [32, 64], the config implies [32, 80]"))
      << result.output;
  EXPECT_TRUE(contains(result.output, "score_type \"cost\", but the model is given as models.reward"))
      << result.output;
  EXPECT_TRUE(contains(result.output, "2 problem(s)")) << result.output;
}

}  // namespace
