// can-sample and can-score as a user runs them: on a model directory with a
// trained tokenizer, their JSON equals the library's answer, and bad input
// gives a message and a non-zero exit status.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "can/batching.h"
#include "can/chat_template.h"
#include "can/sampling.h"
#include "can/score_model.h"
#include "can/tokenizer.h"
#include "command_line.h"
#include "tiny_model.h"
#include "tiny_world.h"

namespace {

namespace fs = std::filesystem;
using can::testing::built_executable;
using can::testing::run_command;

std::string quoted(const std::string& text) { return "'" + text + "'"; }

nlohmann::json last_json_line(const std::string& output) {
  const auto end = output.find_last_not_of('\n');
  const auto begin = output.rfind('\n', end);
  return nlohmann::json::parse(output.substr(begin == std::string::npos ? 0 : begin + 1, end - begin));
}

class ModelCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    world_ = new can::testing::TinyWorld();
    torch::manual_seed(4);
    const can::LlamaConfig config = can::testing::tiny_llama_config(400);
    can::save_causal_lm(can::LlamaForCausalLM(config), path("policy").string());
    can::save_score_model(can::LlamaForScore(config), path("reward").string());
    for (const char* model : {"policy", "reward"}) {
      fs::copy_file(world_->tokenizer_path, path(model) / "tokenizer.model");
    }
  }
  static void TearDownTestSuite() { delete world_; }
  static fs::path path(const std::string& name) { return world_->directory.path() / name; }

  static can::testing::TinyWorld* world_;
};
can::testing::TinyWorld* ModelCliTest::world_ = nullptr;

TEST_F(ModelCliTest, SampleJsonEqualsLibraryGreedyGeneration) {
  const std::string prompt = "How do I bake bread?";
  const auto result =
      run_command(built_executable("can-sample") + " --model " + path("policy").string() + " --prompt " +
                  quoted(prompt) + " --temperature 0 --max-new-tokens 12 --json --device cpu");
  ASSERT_EQ(result.status, 0) << result.output;
  const auto json = last_json_line(result.output);

  const auto tokenizer = can::Tokenizer::load(path("policy/tokenizer.model").string());
  auto model = can::load_causal_lm(path("policy").string());
  model->eval();
  can::SamplingOptions options;
  options.temperature = 0;
  options.max_new_tokens = 12;
  const auto expected = can::sample(model, {tokenizer.encode(prompt)}, options).front();
  EXPECT_EQ(json.at("tokens").get<std::vector<int64_t>>(), expected.tokens);
  EXPECT_EQ(json.at("text").get<std::string>(), tokenizer.decode(expected.tokens));
  const auto logprobs = json.at("logprobs").get<std::vector<double>>();
  ASSERT_EQ(logprobs.size(), expected.logprobs.size());
  for (size_t i = 0; i < logprobs.size(); ++i) EXPECT_NEAR(logprobs[i], expected.logprobs[i], 1e-9);
}

TEST_F(ModelCliTest, ScoreJsonEqualsLibraryScoreAtTheFinalEos) {
  const std::string prompt = "How do I bake bread?", response = "Knead the dough and bake it.";
  const auto result = run_command(built_executable("can-score") + " --model " + path("reward").string() + " --prompt " +
                                  quoted(prompt) + " --response " + quoted(response) + " --json --device cpu");
  ASSERT_EQ(result.status, 0) << result.output;
  const auto score = last_json_line(result.output).at("score").get<std::vector<double>>();

  const auto tokenizer = can::Tokenizer::load(path("reward/tokenizer.model").string());
  auto model = can::load_score_model(path("reward").string());
  model->eval();
  const auto sequence = can::tokenize_sequence(tokenizer, can::ChatTemplate(), prompt, response);
  std::vector<int64_t> ids = sequence.prompt_ids;
  ids.insert(ids.end(), sequence.response_ids.begin(), sequence.response_ids.end());
  ASSERT_EQ(ids.back(), tokenizer.eos_id());
  torch::NoGradGuard no_grad;
  const torch::Tensor input = torch::tensor(ids).unsqueeze(0);
  ASSERT_EQ(score.size(), 1u);
  EXPECT_NEAR(score[0], model(input, torch::ones_like(input))[0][0].item<double>(), 1e-6);
}

TEST_F(ModelCliTest, ATokenizerLargerThanTheModelIsRefusedNamingBoth) {
  // Found by a probe: can-score failed with LibTorch's "index out of range in self".
  const auto tokenizer = can::Tokenizer::load(world_->tokenizer_path.string());
  const can::LlamaConfig small = can::testing::tiny_llama_config(tokenizer.vocab_size() - 1);
  can::save_score_model(can::LlamaForScore(small), path("small_reward").string());
  fs::copy_file(world_->tokenizer_path, path("small_reward") / "tokenizer.model", fs::copy_options::overwrite_existing);
  const auto score = run_command(built_executable("can-score") + " --model " + path("small_reward").string() +
                                 " --prompt hi --response yo");
  EXPECT_EQ(score.status, 1) << score.output;
  EXPECT_NE(score.output.find(fmt::format("has {} pieces but the model '{}' has vocab_size {}", tokenizer.vocab_size(),
                                          path("small_reward").string(), tokenizer.vocab_size() - 1)),
            std::string::npos)
      << score.output;
}

TEST_F(ModelCliTest, ScoringPastThePositionLimitIsRefused) {
  // Found by a probe: can-score scored 60,000 tokens with a 128-position model after 16 s.
  std::string response;
  for (int i = 0; i < 2100; ++i) response += "word ";  // more tokens than the model's 2048 positions
  const auto score = run_command(built_executable("can-score") + " --model " + path("reward").string() +
                                 " --prompt hi --response '" + response + "'");
  EXPECT_EQ(score.status, 1) << score.output;
  EXPECT_NE(score.output.find("exceed the model's max_position_embeddings 2048"), std::string::npos) << score.output;
}

TEST_F(ModelCliTest, MissingModelDirectoryIsAnErrorNamingIt) {
  const auto result =
      run_command(built_executable("can-sample") + " --model " + path("nowhere").string() + " --prompt hi");
  EXPECT_NE(result.status, 0) << result.output;  // CLI11's usage error, naming the folder, not its tokenizer.model
  EXPECT_NE(result.output.find("Directory does not exist: " + path("nowhere").string()), std::string::npos)
      << result.output;
  const auto score =
      run_command(built_executable("can-score") + " --model " + path("policy").string() + " --prompt hi --response yo");
  EXPECT_EQ(score.status, 1);
  EXPECT_NE(score.output.find("score_head.weight"), std::string::npos) << score.output;
}

}  // namespace
