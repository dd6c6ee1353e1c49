// How λ* depends on the amount of offline data (the paper's Figure 4): the dual
// solved on random subsets of the prompts and of each prompt's responses, K times per
// size, with the mean and spread of λ* per size (can-dual --subsample-prompts ...).
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <vector>

#include "can/dual.h"
#include "can/offline_scores.h"
#include "can/svg_plot.h"

namespace can {

// `num_prompts` prompts drawn without replacement, each with `num_responses` of its
// responses drawn without replacement; prompts keep their file order, responses
// their order within the prompt. Needs num_prompts ≤ M and num_responses ≤ the
// fewest responses of any prompt.
OfflineScores subsample_scores(const OfflineScores& scores, int64_t num_prompts, int64_t num_responses,
                               uint64_t seed);

// The seed of repeat `repeat` of the size pair (num_prompts, num_responses): a
// size's subsets do not depend on which other sizes are listed.
uint64_t subsample_seed(uint64_t seed, int64_t num_prompts, int64_t num_responses, int64_t repeat);

// λ* over the repeats of one size pair. Statistics are over the solves that converged
// (feasible); NaN when none did.
struct SubsampleSummary {
  int64_t num_prompts = 0;
  int64_t num_responses = 0;
  int64_t repeats = 0;
  int64_t infeasible = 0;     // repeats whose margins no re-weighting of the subset reaches
  int64_t not_converged = 0;  // feasible repeats where the solver stopped short
  std::vector<double> lambda_mean, lambda_std, lambda_min, lambda_max;  // [m]; std with n − 1
};

struct SubsampleOptions {
  std::vector<int64_t> prompt_counts;    // sizes of the prompt subsets
  std::vector<int64_t> response_counts;  // responses kept per prompt
  int64_t repeats = 10;                  // subsets drawn per size pair
  uint64_t seed = 1;                     // repeat r of sizes (M, N) draws with subsample_seed(seed, M, N, r)
};

// One summary per (prompt count, response count) pair, prompt counts outer, in the
// order given. Every size is checked against the scores before any solve; a size listed
// twice is an error.
std::vector<SubsampleSummary> subsample_dual(const OfflineScores& scores, const DualOptions& dual,
                                             const SubsampleOptions& options);

// {"num_prompts", "num_responses", "repeats", "infeasible", "not_converged",
//  "lambda_mean", "lambda_std", "lambda_min", "lambda_max"}, NaN as null.
nlohmann::json to_json(const SubsampleSummary& summary);

// The paper's Figure 4 for constraint 0: mean λ* ± one standard deviation against
// the number of prompts (one line per response count) and against the number of
// responses per prompt (one line per prompt count).
PlotFigure subsample_figure(const std::vector<SubsampleSummary>& summaries, const std::string& title);

}  // namespace can
