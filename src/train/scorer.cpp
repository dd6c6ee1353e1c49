#include "can/scorer.h"

#include <algorithm>
#include <utility>

#include "can/error.h"

namespace can {

std::vector<TokenizedSequence> ended_with_eos(std::vector<TokenizedSequence> sequences, int64_t eos_id) {
  for (TokenizedSequence& sequence : sequences) {
    if (sequence.response_ids.empty() || sequence.response_ids.back() != eos_id) {
      sequence.response_ids.push_back(eos_id);
    }
  }
  return sequences;
}

ScoreModelScorer::ScoreModelScorer(LlamaForScore reward, std::vector<LlamaForScore> costs, int64_t eos_id)
    : reward_(std::move(reward)), costs_(std::move(costs)), eos_id_(eos_id) {
  check(!reward_.is_empty(), "score-model scorer: the reward model is missing");
  check(!costs_.empty(), "score-model scorer: at least one cost model is needed");
  for (size_t j = 0; j < costs_.size(); ++j) {
    check(!costs_[j].is_empty(), "score-model scorer: cost model {} is missing", j + 1);
  }
}

int64_t ScoreModelScorer::vocabulary_size() const {
  int64_t smallest = reward_->config.vocab_size;
  for (const LlamaForScore& cost : costs_) smallest = std::min(smallest, cost->config.vocab_size);
  return smallest;
}

SequenceScores ScoreModelScorer::score(const std::vector<TokenizedSequence>& sequences,
                                       const BatchInferenceOptions& options) {
  const std::vector<TokenizedSequence> ended = ended_with_eos(sequences, eos_id_);
  SequenceScores scores;
  scores.reward = score_sequences(reward_, ended, options);
  for (LlamaForScore& cost : costs_) {
    std::vector<double> g = score_sequences(cost, ended, options);
    for (double& value : g) value = -value;  // g = −cost: higher is safer
    scores.safety.push_back(std::move(g));
  }
  return scores;
}

ImplicitRewardScorer::ImplicitRewardScorer(LlamaForCausalLM reference, LlamaForCausalLM helpfulness_policy,
                                           double helpfulness_beta, LlamaForCausalLM safety_policy,
                                           double safety_beta, int64_t eos_id)
    : reference_(std::move(reference)),
      helpfulness_policy_(std::move(helpfulness_policy)),
      helpfulness_beta_(helpfulness_beta),
      safety_policy_(std::move(safety_policy)),
      safety_beta_(safety_beta),
      eos_id_(eos_id) {
  check(!reference_.is_empty() && !helpfulness_policy_.is_empty() && !safety_policy_.is_empty(),
        "implicit-reward scorer: the reference, helpfulness and safety policies are all needed");
  check(helpfulness_beta_ > 0 && safety_beta_ > 0,
        "implicit-reward scorer: the DPO betas must be positive, got {} and {}", helpfulness_beta_, safety_beta_);
}

int64_t ImplicitRewardScorer::vocabulary_size() const {
  return std::min({reference_->config.vocab_size, helpfulness_policy_->config.vocab_size,
                   safety_policy_->config.vocab_size});
}

SequenceScores ImplicitRewardScorer::score(const std::vector<TokenizedSequence>& sequences,
                                           const BatchInferenceOptions& options) {
  const std::vector<TokenizedSequence> ended = ended_with_eos(sequences, eos_id_);
  const std::vector<double> base = response_logprobs(reference_, ended, options);
  const std::vector<double> helpful = response_logprobs(helpfulness_policy_, ended, options);
  const std::vector<double> safe = response_logprobs(safety_policy_, ended, options);
  SequenceScores scores;
  scores.reward.resize(sequences.size());
  scores.safety.assign(1, std::vector<double>(sequences.size()));
  for (size_t i = 0; i < sequences.size(); ++i) {
    scores.reward[i] = helpfulness_beta_ * (helpful[i] - base[i]);
    scores.safety[0][i] = safety_beta_ * (safe[i] - base[i]);
  }
  return scores;
}

}  // namespace can
