// Margin sweeps of one constraint: λ* and the predictions as functions of its
// margin b, the curve a user reads to choose b (paper, Figure 2). With several
// constraints the others stay at their own margins.
#pragma once

#include <string>
#include <vector>

#include "can/dual.h"
#include "can/offline_scores.h"
#include "can/svg_plot.h"

namespace can {

// The margins of one constraint to solve for.
struct MarginSweep {
  int constraint = 0;  // j, 0-based
  std::vector<double> margins;
};

// COUNT evenly spaced margins from LO to HI inclusive, from "LO:HI:COUNT" for
// constraint 0 or "J:LO:HI:COUNT" for constraint J (COUNT ≥ 2 and LO < HI, or
// COUNT = 1 and LO = HI).
MarginSweep parse_margin_sweep(const std::string& text);

// One solve per margin of `sweep`, with constraint sweep.constraint's margin replaced.
// One-constraint scores need no options.margins; with m > 1 options.margins gives all m
// (the swept constraint's is replaced), and an error says so when it does not.
std::vector<DualSolution> sweep_margins(const OfflineScores& scores, const DualOptions& options,
                                        const MarginSweep& sweep);

// Panels against the swept constraint's margin: λ* (each constraint's), predicted
// safety improvement (each constraint's, with the target b and the swept constraint's
// largest reachable improvement), reward improvement, KL, and ESS. Infeasible margins
// leave gaps.
PlotFigure prediction_sweep_figure(const std::vector<DualSolution>& sweep, int constraint, const std::string& title);

}  // namespace can
