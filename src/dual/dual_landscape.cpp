#include "can/dual_landscape.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "can/error.h"

namespace can {

using nlohmann::json;

DualLandscape dual_landscape(const OfflineScores& scores, const DualOptions& options,
                             const std::vector<double>& margins, int64_t grid_points, int max_pgd_iterations) {
  check(scores.num_constraints() == 1, "dual landscape: the scores have {} constraints; it draws one",
        scores.num_constraints());
  check(!margins.empty(), "dual landscape: give at least one margin");
  check(grid_points >= 2 && max_pgd_iterations >= 1,
        "dual landscape: needs at least 2 grid points and 1 PGD iteration, got {} and {}", grid_points,
        max_pgd_iterations);
  DualLandscape landscape;
  landscape.safety = scores.safety();  // [N total], one constraint
  double largest = 0;
  for (const double margin : margins) {
    DualCurve& curve = landscape.curves.emplace_back();
    curve.margin = margin;
    DualOptions newton = options;
    newton.margins = {margin};
    newton.solver = DualSolver::kProjectedNewton;
    curve.solution = solve_dual(scores, newton);
    if (curve.solution.converged) largest = std::max(largest, curve.solution.lambda[0]);
  }
  const double top = largest > 0 ? 2 * largest : 1.0;
  for (int64_t k = 0; k < grid_points; ++k) {
    landscape.lambda_grid.push_back(top * static_cast<double>(k) / static_cast<double>(grid_points - 1));
  }
  for (DualCurve& curve : landscape.curves) {
    const DualProblem problem(scores, options.beta, {curve.margin});
    for (const double lambda : landscape.lambda_grid) curve.dual_value.push_back(problem.evaluate({lambda}, false).value);
    if (!curve.solution.converged) continue;
    // PGD's k-th iterate is where a run limited to k iterations stops (the method is deterministic).
    DualOptions pgd = options;
    pgd.margins = {curve.margin};
    pgd.solver = DualSolver::kProjectedGradient;
    for (int k = 0; k <= max_pgd_iterations; ++k) {
      pgd.max_iterations = std::max(k, 1);
      const DualSolution run = k == 0 ? DualSolution{} : solve_dual(scores, pgd);
      if (k > 0 && !run.feasible) break;  // PGD ran away where Newton did not: its path ends here
      curve.pgd_lambda.push_back(k == 0 ? 1.0 : run.lambda[0]);  // λ₀ = 1, the paper's start
      if (k > 0 && run.converged) break;
    }
  }
  return landscape;
}

nlohmann::json to_json(const DualLandscape& landscape) {
  json curves = json::array();
  for (const DualCurve& curve : landscape.curves) {
    curves.push_back({{"margin", curve.margin},
                      {"dual_value", curve.dual_value},
                      {"feasible", curve.solution.feasible},
                      {"converged", curve.solution.converged},
                      {"lambda", curve.solution.converged ? json(curve.solution.lambda[0]) : json(nullptr)},
                      {"pgd_lambda", curve.pgd_lambda}});
  }
  return {{"lambda_grid", landscape.lambda_grid}, {"curves", curves}};
}

PlotFigure landscape_figure(const DualLandscape& landscape, const std::string& title) {
  check(!landscape.safety.empty() && !landscape.curves.empty(), "landscape plot: nothing to draw");
  PlotFigure figure;
  figure.title = title;
  figure.columns = 3;

  const auto [lowest, highest] = std::minmax_element(landscape.safety.begin(), landscape.safety.end());
  double low = *lowest, high = *highest;
  if (high <= low) {  // one distinct value: a unit-wide range around it
    low -= 0.5;
    high += 0.5;
  }
  PlotSeries histogram = histogram_series(landscape.safety, low, high, histogram_bins(landscape.safety.size()));
  histogram.label = fmt::format("{} responses of π_ref", landscape.safety.size());
  figure.panels.push_back({"Safety scores of the reference's samples", "g", "fraction of responses", {histogram}, {}});

  PlotPanel dual{"Dual D̂(λ) and its minimiser λ*", "λ", "D̂(λ)", {}, {}};
  PlotPanel convergence{"PGD from λ₀ = 1", "iteration k", "|λ_k − λ*|", {}, {}};
  for (size_t c = 0; c < landscape.curves.size(); ++c) {
    const DualCurve& curve = landscape.curves[c];
    const std::string color = palette_color(c);
    PlotSeries values{fmt::format("b = {}", curve.margin), landscape.lambda_grid, curve.dual_value, color, false, false};
    dual.series.push_back(std::move(values));
    if (!curve.solution.converged) continue;
    const double lambda_star = curve.solution.lambda[0];
    dual.series.push_back({"", {lambda_star}, {curve.solution.dual_value}, color, false, true});
    PlotSeries distance{fmt::format("b = {}", curve.margin), {}, {}, color, false, true};
    for (size_t k = 0; k < curve.pgd_lambda.size(); ++k) {
      distance.x.push_back(static_cast<double>(k));
      distance.y.push_back(std::abs(curve.pgd_lambda[k] - lambda_star));
    }
    convergence.series.push_back(std::move(distance));
  }
  figure.panels.push_back(std::move(dual));
  if (!convergence.series.empty()) figure.panels.push_back(std::move(convergence));
  return figure;
}

}  // namespace can
