// Where λ* comes from, for one constraint (the paper's Figure 1): the safety scores of
// the reference's samples, the empirical dual D̂(λ) for several margins with each
// minimiser, and how the paper's projected gradient descent reaches it from λ₀ = 1
// (can-dual --landscape).
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "can/dual.h"
#include "can/offline_scores.h"
#include "can/svg_plot.h"

namespace can {

struct DualCurve {
  double margin = 0;
  std::vector<double> dual_value;  // [grid] D̂(λ) at DualLandscape::lambda_grid
  DualSolution solution;           // Newton's λ*; none unless it converged
  // The paper's PGD from λ₀ = 1 (when Newton converged): λ after 0, 1, 2, … iterations,
  // until it converged, reached the iteration cap or ran away; iteration k is the solver
  // run with max_iterations k.
  std::vector<double> pgd_lambda;
};

struct DualLandscape {
  std::vector<double> safety;       // [N total] g of every sampled response, as scored
  std::vector<double> lambda_grid;  // [grid] 0 … twice the largest converged λ* (1 when none is positive)
  std::vector<DualCurve> curves;    // one per margin, in the order given
};

// `options` gives β and the solver's tolerance; its margins are replaced by each of
// `margins`. The scores must have one constraint.
DualLandscape dual_landscape(const OfflineScores& scores, const DualOptions& options,
                             const std::vector<double>& margins, int64_t grid_points = 101,
                             int max_pgd_iterations = 60);

// {"lambda_grid", "curves": [{"margin", "dual_value", "feasible", "converged", "lambda", "pgd_lambda"}]};
// lambda is null unless Newton converged. (The scores of the histogram are the scores file's.)
nlohmann::json to_json(const DualLandscape& landscape);

// The histogram of g, D̂(λ) per margin with λ* marked, and (when some margin converged)
// PGD's |λ_k − λ*| against k per converged margin.
PlotFigure landscape_figure(const DualLandscape& landscape, const std::string& title);

}  // namespace can
