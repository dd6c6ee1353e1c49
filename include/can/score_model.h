// Safe-RLHF's score model (LlamaForScore): the Llama backbone under `model.` and
// a linear `score_head` ([score_dim, H], plus a bias when config.json's `score_bias`, else its `bias`). The score
// of a sequence is the head applied to the hidden state of its last real token. The
// backbone may be any family of llama.h (a Qwen2 backbone under a LlamaForScore head);
// transformers' <Family>ForSequenceClassification layout (head `score` [num_labels, H], no
// bias, read at the last non-padding token) loads into the same class.
// Reward models score helpfulness; cost models score harm (higher = less safe,
// so the safety score is g = -cost).
#pragma once

#include "can/llama.h"

namespace can {

class LlamaForScoreImpl : public torch::nn::Module {
 public:
  explicit LlamaForScoreImpl(const LlamaConfig& config);
  // input_ids, attention_mask [B, T] (padding on either side) -> scores [B, score_dim].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask);

  LlamaConfig config;
  LlamaModel model{nullptr};
  torch::nn::Linear score_head{nullptr};
};
TORCH_MODULE(LlamaForScore);

// As load_causal_lm, for score models in Safe-RLHF's layout: config.json's
// `score_dim` and `score_bias` (else `bias`); the `normalizer.*` buffers of its checkpoints are
// ignored, and do_normalize = true is refused (raw scores only).
LlamaForScore load_score_model(const std::string& directory, torch::Device device = torch::kCPU,
                               torch::ScalarType dtype = torch::kFloat32);
void save_score_model(const LlamaForScore& model, const std::string& directory);

// Safe-RLHF's score models say what they score in config.json's `score_type`
// ("reward", "cost"); a model given as `key` (models.reward, models.cost) whose
// score_type is not `expected` would align the policy the wrong way without any other
// sign, so it is an error naming the file. No score_type: nothing to check.
void check_score_type(const std::string& directory, const std::string& key, const std::string& expected);

}  // namespace can
