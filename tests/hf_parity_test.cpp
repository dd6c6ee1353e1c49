// Parity with Hugging Face transformers on CPU in float32: CAN's loaders read a
// tiny Llama causal LM and a Safe-RLHF-layout score model written by
// transformers, and reproduce transformers' logits, response log-prob sums and
// end scores (scripts/hf_parity_fixtures.py makes the fixtures).
#include "hf_parity.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "can/hf_checkpoint.h"
#include "can/model_weights.h"
#include "temporary_directory.h"
#include "tiny_model.h"

namespace {

TEST(HfParity, LogitsLogprobsAndScoresMatchTransformersInFloat32) {
  const auto directory = can::testing::hf_parity_fixture_directory();
  if (!std::filesystem::exists(directory)) GTEST_SKIP() << can::testing::kMissingHfParityFixtures;
  for (const std::string side : {"left", "right"}) {
    const auto differences = can::testing::parity_differences(directory, side, torch::kCPU, torch::kFloat32);
    EXPECT_LE(differences.logits, 1e-4) << side << " padding";
    EXPECT_LE(differences.response_logprobs, 1e-4) << side << " padding";
    EXPECT_LE(differences.end_scores, 1e-4) << side << " padding";
  }
}

// The comparison machinery alone, on checkpoints CAN writes itself (never
// fixtures): a copy of the models' own outputs compares as equal, and a change
// at a real token is measured while padding positions are ignored.
class ParityMachinery : public ::testing::Test {
 protected:
  void SetUp() override {
    can::LlamaConfig config = can::testing::tiny_llama_config(/*vocab_size=*/48);
    config.intermediate_size = 40;
    config.rope_theta = 5000.0;
    config.rms_norm_eps = 1e-5;
    torch::manual_seed(3);
    causal_lm_ = can::LlamaForCausalLM(config);
    score_model_ = can::LlamaForScore(config);
    causal_lm_->eval();
    score_model_->eval();
    can::save_causal_lm(causal_lm_, (directory_.path() / "causal_lm").string());
    // Safe-RLHF's layout: `bias` and do_normalize in config.json, normalizer buffers in the weights.
    nlohmann::json score_config = config.to_json("LlamaForScore");
    score_config["do_normalize"] = false;
    score_config["score_type"] = "reward";
    auto tensors = can::named_tensors(*score_model_);
    tensors.emplace_back("normalizer.mean", torch::zeros({1}));
    tensors.emplace_back("normalizer.var", torch::ones({1}));
    tensors.emplace_back("normalizer.count", torch::zeros({1}, torch::kInt64));
    can::save_checkpoint(directory_.path() / "score_model", score_config, tensors);
  }

  // Writes expected.safetensors from the in-memory models' own outputs, both padding sides.
  void write_expected(double logit_shift_at_padding, double logit_shift_at_real, double score_shift) {
    torch::NoGradGuard no_grad;
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    const std::vector<std::vector<int64_t>> sequences = {{1, 5, 9, 17, 3}, {1, 20, 21}};
    for (const std::string side : {"left", "right"}) {
      torch::Tensor ids = torch::zeros({2, 5}, torch::kInt64), mask = torch::zeros({2, 5}, torch::kInt64);
      for (int64_t row = 0; row < 2; ++row) {
        const int64_t length = static_cast<int64_t>(sequences[row].size());
        const int64_t start = side == "left" ? 5 - length : 0;
        ids[row].slice(0, start, start + length).copy_(torch::tensor(sequences[row]));
        mask[row].slice(0, start, start + length).fill_(1);
      }
      const torch::Tensor response = mask.clone();
      response.select(1, side == "left" ? 2 : 0).zero_();  // a prompt of at least one token in every row
      torch::Tensor logits = causal_lm_(ids, mask).clone();
      logits.masked_fill_(mask.eq(0).unsqueeze(-1), logit_shift_at_padding);
      logits[0][4][7].add_(logit_shift_at_real);  // row 0 ends at column 4 on both sides
      tensors.emplace_back(side + ".input_ids", ids);
      tensors.emplace_back(side + ".attention_mask", mask);
      tensors.emplace_back(side + ".response_mask", response);
      tensors.emplace_back(side + ".logits", logits);
      tensors.emplace_back(side + ".response_logprobs", can::sequence_logprobs(causal_lm_(ids, mask), ids, response));
      tensors.emplace_back(side + ".end_scores", score_model_(ids, mask).select(1, 0) + score_shift);
    }
    can::save_safetensors(directory_.path() / "expected.safetensors", tensors);
  }

  can::testing::TemporaryDirectory directory_;
  can::LlamaForCausalLM causal_lm_{nullptr};
  can::LlamaForScore score_model_{nullptr};
};

TEST_F(ParityMachinery, OwnOutputsCompareAsEqualAndPaddingIsIgnored) {
  write_expected(/*logit_shift_at_padding=*/1e3, /*logit_shift_at_real=*/0, /*score_shift=*/0);
  for (const std::string side : {"left", "right"}) {
    const auto differences = can::testing::parity_differences(directory_.path(), side, torch::kCPU, torch::kFloat32);
    EXPECT_LE(differences.logits, 1e-6) << side;
    EXPECT_LE(differences.response_logprobs, 1e-6) << side;
    EXPECT_LE(differences.end_scores, 1e-6) << side;
  }
}

TEST_F(ParityMachinery, ChangesAtRealTokensAreMeasured) {
  write_expected(/*logit_shift_at_padding=*/0, /*logit_shift_at_real=*/0.5, /*score_shift=*/0.01);
  for (const std::string side : {"left", "right"}) {
    const auto differences = can::testing::parity_differences(directory_.path(), side, torch::kCPU, torch::kFloat32);
    EXPECT_NEAR(differences.logits, 0.5, 1e-5) << side;
    EXPECT_NEAR(differences.end_scores, 0.01, 1e-5) << side;
  }
}

}  // namespace
