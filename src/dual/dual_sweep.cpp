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

std::vector<double> parse_margin_sweep(const std::string& text) {
  const size_t first = text.find(':');
  const size_t second = first == std::string::npos ? first : text.find(':', first + 1);
  check(second != std::string::npos && text.find(':', second + 1) == std::string::npos,
        "margin sweep '{}': expected LO:HI:COUNT, e.g. 0:0.5:11", text);
  const double low = parse_number(text.substr(0, first), text);
  const double high = parse_number(text.substr(first + 1, second - first - 1), text);
  const double count = parse_number(text.substr(second + 1), text);
  check(count >= 1 && count <= 100000 && count == std::floor(count),
        "margin sweep '{}': COUNT must be a whole number from 1 to 100000", text);
  const int points = static_cast<int>(count);
  check(points == 1 ? low == high : low < high,
        "margin sweep '{}': need LO < HI with COUNT >= 2, or LO = HI with COUNT = 1", text);
  std::vector<double> margins(points, low);
  // Weighted ends rather than low + p·step, so that a grid through 0 hits 0 exactly.
  for (int p = 1; p < points; ++p) margins[p] = (low * (points - 1 - p) + high * p) / (points - 1);
  return margins;
}

std::vector<DualSolution> sweep_margins(const OfflineScores& scores, const DualOptions& options,
                                        const std::vector<double>& margins) {
  check(scores.num_constraints() == 1,
        "a margin sweep needs scores with one constraint; these have {} (give one --margin per constraint instead)",
        scores.num_constraints());
  std::vector<DualSolution> sweep;
  DualOptions point = options;
  for (double margin : margins) {
    point.margins = {margin};
    sweep.push_back(solve_dual(scores, point));
  }
  return sweep;
}

PlotFigure prediction_sweep_figure(const std::vector<DualSolution>& sweep, const std::string& title) {
  check(!sweep.empty(), "sweep plot: no margins");
  const double missing = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> margins, lambda, safety, reward, kl, ess_min, ess_mean;
  for (const DualSolution& solution : sweep) {
    check(solution.margins.size() == 1, "sweep plot: expects one constraint, got {}", solution.margins.size());
    margins.push_back(solution.margins[0]);
    const bool shown = solution.feasible;
    lambda.push_back(shown ? solution.lambda[0] : missing);
    safety.push_back(shown ? solution.predicted.safety_improvement[0] : missing);
    reward.push_back(shown ? solution.predicted.reward_improvement : missing);
    kl.push_back(shown ? solution.predicted.kl : missing);
    ess_min.push_back(shown ? solution.predicted.ess_min_fraction : missing);
    ess_mean.push_back(shown ? solution.predicted.ess_mean_fraction : missing);
  }
  const double reachable = sweep.front().max_safety_improvement[0];
  // The reachable limit is drawn only where it falls inside the swept range.
  std::vector<PlotReferenceLine> limit;
  if (reachable >= margins.front() && reachable <= margins.back()) limit.push_back({reachable, "max reachable"});
  const std::string x_label = "margin b";

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
  figure.panels.push_back({"Optimal dual variable", x_label, "λ*", {line("λ*", lambda)}, limit});
  figure.panels.push_back({"Predicted safety improvement",
                           x_label,
                           "E_πλ[g] − E_ref[g]",
                           {line("predicted", safety), guide("margin b", margins, "#999999")},
                           limit});
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
