// Margin sweeps for one constraint: λ* and the predictions as functions of the
// margin b, the curve a user reads to choose b (paper, Figure 2).
#pragma once

#include <string>
#include <vector>

#include "can/dual.h"
#include "can/offline_scores.h"
#include "can/svg_plot.h"

namespace can {

// COUNT evenly spaced margins from LO to HI inclusive, from "LO:HI:COUNT"
// (COUNT ≥ 2 and LO < HI, or COUNT = 1 and LO = HI).
std::vector<double> parse_margin_sweep(const std::string& text);

// One solve per margin with options.margins replaced; the scores must have one constraint.
std::vector<DualSolution> sweep_margins(const OfflineScores& scores, const DualOptions& options,
                                        const std::vector<double>& margins);

// Panels against the margin: λ*, predicted safety improvement (with the target
// b and the largest reachable improvement), reward improvement, KL, and ESS.
// Infeasible margins leave gaps.
PlotFigure prediction_sweep_figure(const std::vector<DualSolution>& sweep, const std::string& title);

}  // namespace can
