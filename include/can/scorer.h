// Where r and g come from (docs/design.md §3): one interface for MoCAN's reward
// and cost models and PeCAN's implicit rewards β·log(π/π_ref) of pre-aligned DPO
// models. The offline-scores, re-labelling and evaluation stages score through
// it and know nothing of which models stand behind it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "can/batch_inference.h"
#include "can/batching.h"
#include "can/llama.h"
#include "can/score_model.h"

namespace can {

// Scores of n sequences.
struct SequenceScores {
  std::vector<double> reward;               // [n] r
  std::vector<std::vector<double>> safety;  // [m][n] g_j, one row per constraint; higher is safer
};

class Scorer {
 public:
  virtual ~Scorer() = default;

  // m, the number of safety scores.
  virtual int64_t num_constraints() const = 0;
  // The smallest vocabulary among the models: token ids must lie below it.
  virtual int64_t vocabulary_size() const = 0;
  // r and g of each (prompt, response) sequence, in input order. A response is
  // as sampled or as in the data: ending with EOS when it ended. Every scorer scores
  // a response as a complete one, ending with EOS: one that does not end with it
  // (a sample cut at max_new_tokens) is scored with EOS appended, so offline samples
  // and the data's pairs (tokenize_sequence appends EOS) follow one rule.
  virtual SequenceScores score(const std::vector<TokenizedSequence>& sequences,
                               const BatchInferenceOptions& options) = 0;
  // The units of r and g, named for reports (report.json's `safety_unit`, `reward_unit`).
  virtual std::string reward_unit() const = 0;
  virtual std::string safety_unit() const = 0;
};

// The units scorers name (reward_unit, safety_unit).
inline constexpr const char* kRewardModelUnit = "reward_model";
inline constexpr const char* kCostModelUnit = "cost_model";  // g = −cost
inline constexpr const char* kImplicitRewardUnit = "implicit_reward";  // β·log(π/π_ref) of a DPO model

// `sequences` with `eos_id` appended to each response that does not end with it.
std::vector<TokenizedSequence> ended_with_eos(std::vector<TokenizedSequence> sequences, int64_t eos_id);

// MoCAN: r from the reward model, g_j = −cost_j from cost model j (higher cost =
// less safe). Score models read the final token, EOS (Safe-RLHF scores prompt +
// response + EOS). Units: "reward_model" and "cost_model".
class ScoreModelScorer final : public Scorer {
 public:
  ScoreModelScorer(LlamaForScore reward, std::vector<LlamaForScore> costs, int64_t eos_id);

  int64_t num_constraints() const override { return static_cast<int64_t>(costs_.size()); }
  int64_t vocabulary_size() const override;
  SequenceScores score(const std::vector<TokenizedSequence>& sequences, const BatchInferenceOptions& options) override;
  std::string reward_unit() const override { return kRewardModelUnit; }
  std::string safety_unit() const override { return kCostModelUnit; }

 private:
  LlamaForScore reward_;
  std::vector<LlamaForScore> costs_;
  int64_t eos_id_;
};

// A pre-aligned DPO model and the β it was trained with: its implicit reward is β·log(π/π_ref).
struct DpoModel {
  LlamaForCausalLM policy{nullptr};
  double beta = 0;
};

// PeCAN: r = β_r·(log π_r − log π_ref) and g_j = β_j·(log π_j − log π_ref) of each
// response ending with EOS, π_r the helpfulness DPO model and π_j the safety DPO
// model of constraint j, each β the one its model was trained with (its implicit
// reward; DPO trained on responses ending with EOS). The unknown β·log Z(x) are
// per-prompt constants, which the dual ignores and which cancel within a preference
// pair and between two responses to one prompt. Units: "implicit_reward" (of the
// helpfulness DPO model for r, of the safety DPO models for g).
class ImplicitRewardScorer final : public Scorer {
 public:
  ImplicitRewardScorer(LlamaForCausalLM reference, DpoModel helpfulness, std::vector<DpoModel> safety, int64_t eos_id);

  int64_t num_constraints() const override { return static_cast<int64_t>(safety_.size()); }
  int64_t vocabulary_size() const override;
  SequenceScores score(const std::vector<TokenizedSequence>& sequences, const BatchInferenceOptions& options) override;
  std::string reward_unit() const override { return kImplicitRewardUnit; }
  std::string safety_unit() const override { return kImplicitRewardUnit; }

 private:
  LlamaForCausalLM reference_;
  DpoModel helpfulness_;
  std::vector<DpoModel> safety_;  // [m]
  int64_t eos_id_;
};

}  // namespace can
