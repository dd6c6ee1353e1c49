// Pseudo-preferences (docs/design.md §2, §3 step 3): a pair is re-labelled by the
// composite score s = r + λ*ᵀg of its two responses, with
// P(response_1 ≻ response_0) = σ(s_1 − s_0). The label is sampled (Bernoulli),
// as the authors' code does, taken as the more likely one (argmax), or kept as that
// probability (soft: better_response_id the likelier response, better_probability its
// probability, which DPO fits as a soft label).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "can/preference_data.h"

namespace can {

enum class RelabelMode { kBernoulli, kArgmax, kSoft };
RelabelMode parse_relabel_mode(const std::string& name);  // "bernoulli", "argmax" or "soft"
std::string relabel_mode_name(RelabelMode mode);

struct RelabelOptions {
  RelabelMode mode = RelabelMode::kBernoulli;
  uint64_t seed = 1;  // of the Bernoulli draws
};

struct RelabeledPairs {
  // The input pairs with better_response_id replaced by the pseudo-preference (and, soft,
  // better_probability by its probability); every other field as it was.
  std::vector<PreferencePair> pairs;
  std::vector<double> probability_1;  // [n] σ(s_1 − s_0)
};

// score_0, score_1: [n] composite scores of response_0 and response_1.
RelabeledPairs relabel_pairs(const std::vector<PreferencePair>& pairs, const std::vector<double>& score_0,
                             const std::vector<double>& score_1, const RelabelOptions& options);

// r + Σ_j λ_j g_j for each response: reward [n], safety [m][n], lambda [m] -> [n].
std::vector<double> composite_scores(const std::vector<double>& reward, const std::vector<std::vector<double>>& safety,
                                     const std::vector<double>& lambda);

}  // namespace can
