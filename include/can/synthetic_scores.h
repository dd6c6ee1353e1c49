// A realistic synthetic offline-scores file, so that can-dual can be tried
// before any model exists. Each prompt is harmful for some constraints (harm
// categories) and benign for the rest; each response has a latent compliance c
// and quality q. Reward rises with both; on a harmful prompt safety falls with
// compliance (the helpfulness–safety trade-off), with heavy-tailed noise and rare
// very unsafe responses. Scores carry per-prompt offsets (which cancel in the
// dual), and the within-prompt spread of r is about 0.1, so β = 0.1 tilts moderately.
#pragma once

#include <cstdint>

#include "can/offline_scores.h"

namespace can {

// The most scores (rewards and safety scores together) a synthetic file may hold:
// 800 MB of doubles; the bound stops a mistyped count before it allocates.
constexpr int64_t kMaxSyntheticScores = 100'000'000;

struct SyntheticScoresOptions {
  int64_t num_prompts = 1000;
  int64_t min_responses = 128;  // N_i is drawn uniformly from [min_responses, max_responses]
  int64_t max_responses = 128;
  int num_constraints = 1;
  uint64_t seed = 0;
};

// Deterministic for a given seed; prompt ids are "synth-0", "synth-1", ...
OfflineScores make_synthetic_scores(const SyntheticScoresOptions& options);

}  // namespace can
