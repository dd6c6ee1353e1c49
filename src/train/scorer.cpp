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
    check(!costs_[j].is_empty(), "score-model scorer: cost model {} is missing", j);
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

ImplicitRewardScorer::ImplicitRewardScorer(LlamaForCausalLM reference, DpoModel helpfulness,
                                           std::vector<DpoModel> safety, int64_t eos_id)
    : reference_(std::move(reference)), helpfulness_(std::move(helpfulness)), safety_(std::move(safety)), eos_id_(eos_id) {
  check(!safety_.empty(), "implicit-reward scorer: at least one safety DPO model is needed");
  check(!reference_.is_empty() && !helpfulness_.policy.is_empty(),
        "implicit-reward scorer: the reference and helpfulness policies are both needed");
  check(helpfulness_.beta > 0, "implicit-reward scorer: the helpfulness DPO β must be positive, got {}",
        helpfulness_.beta);
  for (size_t j = 0; j < safety_.size(); ++j) {
    check(!safety_[j].policy.is_empty(), "implicit-reward scorer: safety DPO model {} is missing", j);
    check(safety_[j].beta > 0, "implicit-reward scorer: the β of safety DPO model {} must be positive, got {}", j,
          safety_[j].beta);
  }
}

int64_t ImplicitRewardScorer::vocabulary_size() const {
  int64_t smallest = std::min(reference_->config.vocab_size, helpfulness_.policy->config.vocab_size);
  for (const DpoModel& model : safety_) smallest = std::min(smallest, model.policy->config.vocab_size);
  return smallest;
}

SequenceScores ImplicitRewardScorer::score(const std::vector<TokenizedSequence>& sequences,
                                           const BatchInferenceOptions& options) {
  const std::vector<TokenizedSequence> ended = ended_with_eos(sequences, eos_id_);
  const std::vector<double> base = response_logprobs(reference_, ended, options);
  const std::vector<double> helpful = response_logprobs(helpfulness_.policy, ended, options);
  SequenceScores scores;
  scores.reward.resize(sequences.size());
  for (size_t i = 0; i < sequences.size(); ++i) scores.reward[i] = helpfulness_.beta * (helpful[i] - base[i]);
  for (DpoModel& model : safety_) {
    const std::vector<double> safe = response_logprobs(model.policy, ended, options);
    std::vector<double>& row = scores.safety.emplace_back(sequences.size());
    for (size_t i = 0; i < sequences.size(); ++i) row[i] = model.beta * (safe[i] - base[i]);
  }
  return scores;
}

}  // namespace can
