#include "can/dual_sweep.h"

#include <cmath>
#include <limits>

#include "can/error.h"

namespace can {
namespace {

double parse_number(const std::string& text, const std::string& whole) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  check(used == text.size() && !text.empty() && std::isfinite(value),
        "margin sweep '{}': '{}' is not a number (expected LO:HI:COUNT, e.g. 0:0.5:11)", whole, text);
  return value;
}

}  // namespace

MarginSweep parse_margin_sweep(const std::string& text) {
  std::vector<std::string> parts;
  for (size_t begin = 0;;) {
    const size_t colon = text.find(':', begin);
    parts.push_back(text.substr(begin, colon - begin));
    if (colon == std::string::npos) break;
    begin = colon + 1;
  }
  check(parts.size() == 3 || parts.size() == 4,
        "margin sweep '{}': expected LO:HI:COUNT, e.g. 0:0.5:11, or J:LO:HI:COUNT for constraint J", text);
  MarginSweep sweep;
  if (parts.size() == 4) {
    const double constraint = parse_number(parts[0], text);
    check(constraint >= 0 && constraint <= 1000 && constraint == std::floor(constraint),
          "margin sweep '{}': J, the constraint, must be a whole number from 0", text);
    sweep.constraint = static_cast<int>(constraint);
    parts.erase(parts.begin());
  }
  const double low = parse_number(parts[0], text);
  const double high = parse_number(parts[1], text);
  const double count = parse_number(parts[2], text);
  check(count >= 1 && count <= 100000 && count == std::floor(count),
        "margin sweep '{}': COUNT must be a whole number from 1 to 100000", text);
  const int points = static_cast<int>(count);
  check(points == 1 ? low == high : low < high,
        "margin sweep '{}': need LO < HI with COUNT >= 2, or LO = HI with COUNT = 1", text);
  sweep.margins.assign(static_cast<size_t>(points), low);
  // Weighted ends rather than low + p·step, so that a grid through 0 hits 0 exactly.
  for (int p = 1; p < points; ++p) sweep.margins[p] = (low * (points - 1 - p) + high * p) / (points - 1);
  return sweep;
}

std::vector<DualSolution> sweep_margins(const OfflineScores& scores, const DualOptions& options,
                                        const MarginSweep& sweep) {
  const int m = scores.num_constraints();
  check(sweep.constraint < m, "margin sweep of constraint {}: the scores have {} constraint{}, numbered from 0",
        sweep.constraint, m, m == 1 ? "" : "s");
  DualOptions point = options;
  if (m == 1) {
    point.margins = {0.0};
  } else {
    check(static_cast<int>(options.margins.size()) == m,
          "a margin sweep of scores with {} constraints needs every constraint's margin (give --margin {} times; "
          "constraint {}'s is replaced by the sweep), got {}",
          m, m, sweep.constraint, options.margins.size());
  }
  std::vector<DualSolution> solutions;
  for (double margin : sweep.margins) {
    point.margins[static_cast<size_t>(sweep.constraint)] = margin;
    solutions.push_back(solve_dual(scores, point));
  }
  return solutions;
}

PlotFigure prediction_sweep_figure(const std::vector<DualSolution>& sweep, int constraint, const std::string& title) {
  check(!sweep.empty(), "sweep plot: no margins");
  const size_t m = sweep.front().margins.size();
  const auto swept = static_cast<size_t>(constraint);
  check(swept < m, "sweep plot: constraint {} of {}", constraint, m);
  const double missing = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> margins, reward, kl, ess_min, ess_mean;
  std::vector<std::vector<double>> lambda(m), safety(m);  // [m][margins]
  for (const DualSolution& solution : sweep) {
    check(solution.margins.size() == m, "sweep plot: solutions with {} and {} constraints", m, solution.margins.size());
    margins.push_back(solution.margins[swept]);
    const bool shown = solution.feasible;
    for (size_t j = 0; j < m; ++j) {
      lambda[j].push_back(shown ? solution.lambda[j] : missing);
      safety[j].push_back(shown ? solution.predicted.safety_improvement[j] : missing);
    }
    reward.push_back(shown ? solution.predicted.reward_improvement : missing);
    kl.push_back(shown ? solution.predicted.kl : missing);
    ess_min.push_back(shown ? solution.predicted.ess_min_fraction : missing);
    ess_mean.push_back(shown ? solution.predicted.ess_mean_fraction : missing);
  }
  const double reachable = sweep.front().max_safety_improvement[swept];
  // The reachable limit is drawn only where it falls inside the swept range.
  std::vector<PlotReferenceLine> limit;
  if (reachable >= margins.front() && reachable <= margins.back()) limit.push_back({reachable, "max reachable"});
  const std::string x_label = m == 1 ? "margin b" : fmt::format("margin b_{} of constraint {}", constraint, constraint);

  auto line = [&margins](std::string label, std::vector<double> y) {
    PlotSeries series;
    series.label = std::move(label);
    series.x = margins;
    series.y = std::move(y);
    return series;
  };
  auto guide = [&line](std::string label, std::vector<double> y, std::string color) {
    PlotSeries series = line(std::move(label), std::move(y));
    series.color = std::move(color);
    series.dashed = true;
    series.markers = false;
    return series;
  };

  PlotFigure figure;
  figure.title = title;
  figure.columns = 3;
  // One line per constraint, named by it when there are several.
  auto per_constraint = [&](const std::string& label, const std::vector<std::vector<double>>& values) {
    std::vector<PlotSeries> series;
    for (size_t j = 0; j < m; ++j) series.push_back(line(m == 1 ? label : fmt::format("{}, constraint {}", label, j), values[j]));
    return series;
  };
  figure.panels.push_back({"Optimal dual variable", x_label, "λ*", per_constraint("λ*", lambda), limit});
  std::vector<PlotSeries> predicted = per_constraint("predicted", safety);
  predicted.push_back(guide("margin b", margins, "#999999"));
  figure.panels.push_back({"Predicted safety improvement", x_label, "E_πλ[g] − E_ref[g]", predicted, limit});
  figure.panels.push_back(
      {"Predicted reward improvement", x_label, "E_πλ[r] − E_ref[r]", {line("predicted", reward)}, limit});
  figure.panels.push_back({"KL(πλ ‖ π_ref)", x_label, "nats", {line("KL", kl)}, limit});
  figure.panels.push_back(
      {"Effective sample size",
       x_label,
       "fraction of N",
       {line("mean", ess_mean), line("min", ess_min),
        guide("warning level", std::vector<double>(margins.size(), kMinReliableEssFraction), "#d62728")},
       limit});
  return figure;
}

}  // namespace can
