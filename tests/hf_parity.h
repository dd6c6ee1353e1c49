// The Hugging Face parity check shared by hf_parity_test (CPU, float32) and
// gpu_hf_parity_test (CUDA, bf16): load the fixture's model directories with
// CAN's loaders, run the stored batches, and measure the largest differences
// from transformers' numbers. The fixture layout is scripts/hf_parity_fixtures.py's.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "can/llama.h"
#include "can/logprobs.h"
#include "can/safetensors.h"
#include "can/score_model.h"

namespace can::testing {

// tests/fixtures/hf_parity of the source tree (CAN_SOURCE_DIR, set by CTest).
inline std::filesystem::path hf_parity_fixture_directory() {
  const char* source = std::getenv("CAN_SOURCE_DIR");
  return std::filesystem::path(source != nullptr ? source : ".") / "tests" / "fixtures" / "hf_parity";
}

inline const char* kMissingHfParityFixtures =
    "tests/fixtures/hf_parity/ does not exist: create it with `python3 scripts/hf_parity_fixtures.py` "
    "where torch and transformers are installed (the GPU machine: README, GPU)";

// Largest absolute differences, over real tokens only, for one padding side.
struct ParityDifferences {
  double logits = 0;             // causal LM logits
  double response_logprobs = 0;  // per-sequence sums of response-token log-probs, nats
  double end_scores = 0;         // score at the last real token
};

// `directory` holds causal_lm/, score_model/ and expected.safetensors; `side` is
// "left" or "right". Models run on `device` in `dtype`; outputs compare in float32.
inline ParityDifferences parity_differences(const std::filesystem::path& directory, const std::string& side,
                                            torch::Device device, torch::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  auto causal_lm = load_causal_lm((directory / "causal_lm").string(), device, dtype);
  auto score_model = load_score_model((directory / "score_model").string(), device, dtype);
  causal_lm->eval();
  score_model->eval();
  const auto expected = SafetensorsFile::open(directory / "expected.safetensors");
  auto stored = [&](const std::string& name) { return expected.tensor(side + "." + name); };
  const torch::Tensor ids = stored("input_ids").to(device);
  const torch::Tensor mask = stored("attention_mask").to(device);
  const torch::Tensor padding = stored("attention_mask").eq(0).unsqueeze(-1);  // [B, T, 1]

  const torch::Tensor logits = causal_lm(ids, mask).to(torch::kCPU, torch::kFloat32);  // [B, T, V]
  const torch::Tensor logprobs =
      sequence_logprobs(logits, ids.cpu(), stored("response_mask")).to(torch::kFloat32);              // [B]
  const torch::Tensor scores = score_model(ids, mask).select(1, 0).to(torch::kCPU, torch::kFloat32);  // [B]
  ParityDifferences differences;
  differences.logits = (logits - stored("logits")).abs().masked_fill(padding, 0).max().item<double>();
  differences.response_logprobs = (logprobs - stored("response_logprobs")).abs().max().item<double>();
  differences.end_scores = (scores - stored("end_scores")).abs().max().item<double>();
  return differences;
}

}  // namespace can::testing
