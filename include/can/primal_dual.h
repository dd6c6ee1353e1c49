// The iterative primal-dual baseline (docs/design.md §3, "The primal-dual baseline"):
// what one-shot dualization replaces. Each round samples the current policy, estimates
// the constraints E_π[g_j] − E_ref[g_j] − b_j from its samples, takes one projected
// gradient step on λ, re-labels the pairs with r + λᵀg and runs DPO for a fixed number of
// updates from the current policy's weights, with π_ref as the reference (the constrained
// problem's KL is to π_ref). This file holds the dual step and the round's record; the
// rounds are stages of can-train (pipeline.h, `pipeline: primal_dual`).
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "can/offline_scores.h"

namespace can {

// can-train's primal_dual section (config.h). The defaults and their sources are in
// docs/design.md §3.
struct PrimalDualOptions {
  double lambda_init = 1.0;          // λ₀ of every constraint
  double step_size = 1.0;            // η of the dual step, per unit of g
  int64_t rounds = 4;                // sample → dual step → re-label → DPO, this many times
  int64_t responses_per_prompt = 8;  // samples of the current policy per sampling prompt, each round
  int64_t updates_per_round = 60;    // DPO optimizer updates per round
};

// Means of a policy's sampled scores, every prompt weighing the same (the mean of
// per-prompt means, as the dual weighs them).
struct ScoreMeans {
  double reward = 0;
  std::vector<double> safety;  // [m]
};
ScoreMeans score_means(const OfflineScores& scores);

// λ_j ← max(0, λ_j − η·(E_π[g_j] − E_ref[g_j] − b_j)): the projected gradient step of the
// dual on the estimated constraint values. All vectors [m]; `constraint_values` holds
// E_π[g_j] − E_ref[g_j] − b_j (negative: constraint j is violated and λ_j grows).
std::vector<double> dual_step(const std::vector<double>& lambda, const std::vector<double>& constraint_values,
                              double step_size);

// What one round saw and decided: round.json in the round's stage folder.
//   {"format_version", "round", "lambda_before", "lambda_after", "margins",
//    "policy": {"reward", "safety"}, "reference": {"reward", "safety"},
//    "constraint_values", "samples"}
struct PrimalDualRound {
  int64_t round = 0;
  std::vector<double> lambda_before;      // [m] the λ the last round trained with (λ₀ before round 0)
  std::vector<double> lambda_after;       // [m] after this round's step: this round's DPO re-labels with it
  std::vector<double> margins;            // [m] b
  ScoreMeans policy;                      // of this round's samples of the policy it starts from
  ScoreMeans reference;                   // of π_ref's samples: round 0's
  std::vector<double> constraint_values;  // [m] policy.safety − reference.safety − margins
  int64_t samples = 0;                    // responses scored this round
};

// Fills constraint_values and lambda_after from the other fields.
void take_dual_step(PrimalDualRound& round, double step_size);

void write_primal_dual_round(const std::filesystem::path& path, const PrimalDualRound& round);
PrimalDualRound read_primal_dual_round(const std::filesystem::path& path);

}  // namespace can
