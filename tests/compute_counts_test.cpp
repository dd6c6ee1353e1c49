// compute_counts.h: what a forward, a backpropagated forward, sampling (with and
// without the KV cache) and an optimizer update add to the process's counts.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "can/compute_counts.h"
#include "can/llama.h"
#include "can/runtime.h"
#include "can/sampling.h"
#include "tiny_model.h"

namespace {

TEST(ComputeCounts, ForwardsCountTheirPositionsAndGradientForwardsAlsoAsBackward) {
  can::set_seed(3);
  can::LlamaForCausalLM model(can::testing::tiny_llama_config(/*vocab_size=*/40));
  const torch::Tensor ids = torch::randint(0, 40, {2, 5});  // [B, T]
  can::reset_compute_counts();
  {
    torch::NoGradGuard no_grad;
    model(ids, torch::ones_like(ids));
  }
  EXPECT_EQ(can::compute_counts().forward_tokens, 10);
  EXPECT_EQ(can::compute_counts().backward_tokens, 0);
  model(ids, torch::ones_like(ids)).sum().backward();
  EXPECT_EQ(can::compute_counts().forward_tokens, 20);
  EXPECT_EQ(can::compute_counts().backward_tokens, 10);
  can::reset_compute_counts();
  EXPECT_EQ(can::compute_counts().forward_tokens, 0);
}

TEST(ComputeCounts, SamplingCountsNewTokensAndTheCacheStepsPositions) {
  can::set_seed(4);
  can::LlamaForCausalLM model(can::testing::tiny_llama_config(/*vocab_size=*/40));
  const std::vector<std::vector<int64_t>> prompts = {{1, 5, 6}, {1, 7}};
  can::SamplingOptions options;
  options.max_new_tokens = 6;
  options.eos_id = 40;  // never drawn: every row decodes max_new_tokens
  can::reset_compute_counts();
  const auto generations = can::sample(model, prompts, options);
  ASSERT_EQ(generations[0].tokens.size(), 6u);
  EXPECT_EQ(can::compute_counts().sampled_tokens, 12);
  // The left-padded prompt batch [2, 3], then one position per row for each of the 5 later tokens.
  EXPECT_EQ(can::compute_counts().forward_tokens, 2 * 3 + 5 * 2);
  EXPECT_EQ(can::compute_counts().backward_tokens, 0);
  can::reset_compute_counts();
  can::sample_without_cache(model, prompts, options);
  EXPECT_EQ(can::compute_counts().sampled_tokens, 12);
  // Without the cache each of the 6 steps recomputes its whole prefix: 3+4+...+8 and 2+3+...+7.
  EXPECT_EQ(can::compute_counts().forward_tokens, (3 + 8) * 6 / 2 + (2 + 7) * 6 / 2);
}

}  // namespace
