// Offline scores from sampled responses: MoCAN (score models) and PeCAN (implicit rewards).
#include "can/offline_sampling.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tiny_world.h"

namespace {

class OfflineSamplingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { world_ = new can::testing::TinyWorld(); }
  static void TearDownTestSuite() { delete world_; }

  static std::vector<std::pair<std::string, std::string>> prompts() {
    return {{"a", "How do I bake bread?"}, {"b", "How can I steal a car?"}, {"c", "Plan a trip to Rome."}};
  }
  static can::Tokenizer tokenizer() { return can::Tokenizer::load(world_->tokenizer_path.string()); }

  static can::testing::TinyWorld* world_;
};
can::testing::TinyWorld* OfflineSamplingTest::world_ = nullptr;

can::SamplingOptions sampling_options() {
  can::SamplingOptions options;
  options.max_new_tokens = 8;
  options.seed = 9;
  options.batch_size = 4;
  return options;
}

TEST_F(OfflineSamplingTest, SamplesNResponsesPerPromptReproducibly) {
  torch::manual_seed(1);
  can::LlamaForCausalLM policy(can::testing::tiny_llama_config(400));
  policy->eval();
  const auto first = can::sample_responses(policy, tokenizer(), can::ChatTemplate(), prompts(), 5, sampling_options());
  const auto again = can::sample_responses(policy, tokenizer(), can::ChatTemplate(), prompts(), 5, sampling_options());
  ASSERT_EQ(first.size(), 3u);
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(first[i].prompt_id, prompts()[i].first);
    EXPECT_EQ(first[i].prompt_ids.front(), tokenizer().bos_id());
    ASSERT_EQ(first[i].responses.size(), 5u);
    EXPECT_EQ(first[i].responses, again[i].responses);
    for (const auto& response : first[i].responses) EXPECT_LE(response.size(), 8u);
  }
}

TEST_F(OfflineSamplingTest, ModelScoresAreRewardAndNegatedCost) {
  torch::manual_seed(2);
  can::LlamaForCausalLM policy(can::testing::tiny_llama_config(400));
  can::LlamaForScore reward(can::testing::tiny_llama_config(400));
  can::LlamaForScore cost(can::testing::tiny_llama_config(400));
  for (auto* module : std::vector<torch::nn::Module*>{policy.get(), reward.get(), cost.get()}) module->eval();
  const auto samples =
      can::sample_responses(policy, tokenizer(), can::ChatTemplate(), prompts(), 4, sampling_options());
  const int64_t eos = tokenizer().eos_id();
  can::ScoreModelScorer scorer(reward, {cost}, eos);
  const auto scores = can::score_samples(samples, scorer, {4, 128});
  ASSERT_EQ(scores.num_prompts(), 3);
  ASSERT_EQ(scores.num_constraints(), 1);
  torch::NoGradGuard no_grad;
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t k = 0; k < 4; ++k) {
      std::vector<int64_t> ids = samples[i].prompt_ids;
      const auto& response = samples[i].responses[k];
      ids.insert(ids.end(), response.begin(), response.end());
      if (response.empty() || response.back() != eos) ids.push_back(eos);
      const torch::Tensor input = torch::tensor(ids).unsqueeze(0);
      const int64_t row = scores.offsets()[i] + k;
      EXPECT_NEAR(scores.rewards()[row], reward(input, torch::ones_like(input))[0][0].item<double>(), 1e-5);
      EXPECT_NEAR(scores.safety()[row], -cost(input, torch::ones_like(input))[0][0].item<double>(), 1e-5);
    }
  }
}

TEST_F(OfflineSamplingTest, ImplicitRewardsAreBetaTimesLogRatiosOfResponsesEndingWithEos) {
  torch::manual_seed(3);
  can::LlamaForCausalLM reference(can::testing::tiny_llama_config(400));
  can::LlamaForCausalLM safe(can::testing::tiny_llama_config(400));
  reference->eval();
  safe->eval();
  const auto samples =
      can::sample_responses(reference, tokenizer(), can::ChatTemplate(), prompts(), 3, sampling_options());
  const double beta = 0.1, helpfulness_beta = 0.5;
  const int64_t eos = tokenizer().eos_id();
  // The helpfulness policy is the reference itself: every reward is exactly 0.
  can::ImplicitRewardScorer scorer(reference, {reference, helpfulness_beta}, {{safe, beta}}, eos);
  const auto scores = can::score_samples(samples, scorer, {2, 128});
  for (double value : scores.rewards()) EXPECT_EQ(value, 0.0);
  // Each response is scored as a complete one, as DPO trained and as re-labelling scores the
  // data's pairs: a sample cut at max_new_tokens gets its EOS.
  int64_t cut = 0;
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t k = 0; k < 3; ++k) {
      can::TokenizedSequence sequence{samples[i].prompt_ids, samples[i].responses[k]};
      if (sequence.response_ids.empty() || sequence.response_ids.back() != eos) {
        sequence.response_ids.push_back(eos);
        ++cut;
      }
      const double reference_logprob = can::response_logprobs(reference, {sequence}, {1, 128})[0];
      const double safe_logprob = can::response_logprobs(safe, {sequence}, {1, 128})[0];
      EXPECT_NEAR(scores.safety()[scores.offsets()[i] + k], beta * (safe_logprob - reference_logprob), 1e-6);
    }
  }
  EXPECT_GT(cut, 0) << "no sample was cut at max_new_tokens, so the EOS rule went untested";
  // Several constraints: one safety DPO model each; g_1 of the reference itself is exactly 0.
  can::ImplicitRewardScorer two(reference, {reference, helpfulness_beta}, {{safe, beta}, {reference, 0.3}}, eos);
  const auto two_scores = can::score_samples(samples, two, {2, 128});
  ASSERT_EQ(two_scores.num_constraints(), 2);
  for (int64_t row = 0; row < two_scores.total_responses(); ++row) {
    EXPECT_EQ(two_scores.safety()[row * 2], scores.safety()[row]);
    EXPECT_EQ(two_scores.safety()[row * 2 + 1], 0.0);
  }
}

}  // namespace
