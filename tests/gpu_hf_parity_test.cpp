// Parity with Hugging Face transformers on CUDA in bf16: the fixtures of
// scripts/hf_parity_fixtures.py (float32 numbers from transformers) against
// CAN's models loaded on the GPU in bfloat16. Skips without CUDA or fixtures.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>
#include <utility>

#include "hf_parity.h"

namespace {

// bf16 keeps 8 significant bits (relative rounding 2^-9 per operation). Over the
// fixture's three layers the logits (of order 1) stay within 0.1 of float32;
// a response log-prob sum adds up to 6 token log-probs, each within 0.05; the
// end score reads one hidden state through a 64-wide head.
constexpr double kLogitTolerance = 0.1;
constexpr double kLogprobSumTolerance = 0.3;
constexpr double kEndScoreTolerance = 0.1;

TEST(GpuHfParity, LogitsLogprobsAndScoresMatchTransformersInBfloat16) {
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "CUDA is not available: run on the GPU machine (README, GPU)";
  }
  const auto directory = can::testing::hf_parity_fixture_directory();
  if (!std::filesystem::exists(directory)) GTEST_SKIP() << can::testing::kMissingHfParityFixtures;
  for (const std::string side : {"left", "right"}) {
    const auto differences = can::testing::parity_differences(directory, side, torch::kCUDA, torch::kBFloat16);
    for (const auto& [name, value] : {std::pair{"logits", differences.logits},
                                      std::pair{"response_logprobs", differences.response_logprobs},
                                      std::pair{"end_scores", differences.end_scores}}) {
      RecordProperty(side + "_" + name, fmt::format("{:.3e}", value));  // measured: the report of --gtest_output
      std::cout << "measured " << side << " " << name << " = " << fmt::format("{:.3e}", value) << "\n";
    }
    EXPECT_LE(differences.logits, kLogitTolerance) << side << " padding";
    EXPECT_LE(differences.response_logprobs, kLogprobSumTolerance) << side << " padding";
    EXPECT_LE(differences.end_scores, kEndScoreTolerance) << side << " padding";
  }
}

}  // namespace
