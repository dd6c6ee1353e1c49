#include "can/sweep_report.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <limits>
#include <sstream>

#include "can/atomic_file.h"
#include "can/error.h"
#include "can/json_fields.h"
#include "can/svg_plot.h"

namespace can {

namespace {

using nlohmann::json;

// Half-width of a 95% interval, in standard errors (normal approximation).
constexpr double kInterval95 = 1.96;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// What the sweep shows of one margin's report; NaN where the report has no value (not judged).
struct SweepRow {
  double margin, lambda, kl, predicted_safety, achieved_safety, achieved_safety_interval, relative_error,
      predicted_reward, achieved_reward;
  double judge_safety, judge_helpfulness, reference_judge_safety, reference_judge_helpfulness;
};

SweepRow sweep_row(const SweepPoint& point) {
  const EvaluationReport& report = point.report;
  check(report.dual.has_value() && !report.dual->lambda.empty() && !report.prediction_error.empty(),
        "sweep: the report of margin {} has no prediction of the dual", point.margin);
  const EvaluationSummary& overall = report.overall;
  const DualSolution& dual = *report.dual;
  const auto or_nan = [](const std::optional<double>& value) { return value.value_or(kNaN); };
  return {point.margin,
          dual.lambda[0],
          dual.predicted.kl,
          dual.predicted.safety_improvement[0],
          overall.achieved.safety_improvement[0],
          kInterval95 * overall.achieved.safety_improvement_stderr[0],
          report.prediction_error[0],
          dual.predicted.reward_improvement,
          overall.achieved.reward_improvement,
          or_nan(overall.policy.judge_safety),
          or_nan(overall.policy.judge_helpfulness),
          or_nan(overall.reference.judge_safety),
          or_nan(overall.reference.judge_helpfulness)};
}

std::string number(double value) { return std::isfinite(value) ? fmt::format("{:.4g}", value) : "—"; }

// The unit of every margin's safety improvement (Improvement::safety_unit); the margins
// must agree on it and on the reward's.
std::string safety_unit(const std::vector<SweepPoint>& points) {
  const Improvement& first = points.front().report.overall.achieved;
  for (const SweepPoint& point : points) {
    const Improvement& achieved = point.report.overall.achieved;
    check(achieved.safety_unit == first.safety_unit && achieved.reward_unit == first.reward_unit,
          "sweep: margin {} measures safety in '{}' and reward in '{}' but margin {} in '{}' and '{}'", point.margin,
          achieved.safety_unit, achieved.reward_unit, points.front().margin, first.safety_unit, first.reward_unit);
  }
  return first.safety_unit;
}

std::string sweep_markdown(const std::vector<SweepPoint>& points) {
  std::ostringstream out;
  out << "# Margin sweep\n\n"
      << fmt::format(
             "One aligned policy per safety margin b, evaluated on the held-out prompts. Improvements are in the "
             "prediction's units (safety: {}); predicted is the dual's, achieved is measured, ± its 95% interval over "
             "the evaluation prompts (1.96 standard errors of the per-prompt differences); relative error = (achieved "
             "− predicted) / |predicted|.\n\n",
             safety_unit(points))
      << "| b | λ* | KL predicted | Δsafety predicted | Δsafety achieved ± 95% | predicted inside | relative error | "
         "Δreward predicted | Δreward achieved | judge safety | judge helpfulness |\n"
      << "|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|\n";
  const SweepRow first = sweep_row(points.front());
  out << fmt::format("| reference | | | | | | | | | {} | {} |\n", number(first.reference_judge_safety),
                     number(first.reference_judge_helpfulness));
  for (const SweepPoint& point : points) {
    const SweepRow row = sweep_row(point);
    const bool inside = std::abs(row.achieved_safety - row.predicted_safety) <= row.achieved_safety_interval;
    out << fmt::format("| {} | {} | {} | {} | {} ± {} | {} | {} | {} | {} | {} | {} |\n", number(row.margin),
                       number(row.lambda), number(row.kl), number(row.predicted_safety), number(row.achieved_safety),
                       number(row.achieved_safety_interval),
                       std::isfinite(row.achieved_safety_interval) ? (inside ? "yes" : "no") : "—",
                       number(row.relative_error), number(row.predicted_reward), number(row.achieved_reward),
                       number(row.judge_safety), number(row.judge_helpfulness));
  }
  return out.str();
}

PlotFigure achieved_sweep_figure(const std::vector<SweepPoint>& points) {
  std::vector<double> margins, predicted, achieved, reward, judge_safety, judge_helpfulness;
  std::vector<double> interval_x, interval_y;  // one vertical segment per policy, NaN between them
  for (const SweepPoint& point : points) {
    const SweepRow row = sweep_row(point);
    margins.push_back(row.margin);
    predicted.push_back(row.predicted_safety);
    achieved.push_back(row.achieved_safety);
    interval_x.insert(interval_x.end(), {row.predicted_safety, row.predicted_safety, kNaN});
    interval_y.insert(interval_y.end(), {row.achieved_safety - row.achieved_safety_interval,
                                         row.achieved_safety + row.achieved_safety_interval, kNaN});
    reward.push_back(row.achieved_reward);
    judge_safety.push_back(row.judge_safety);
    judge_helpfulness.push_back(row.judge_helpfulness);
  }
  double low = 0, high = 0;  // the diagonal spans every point, and 0
  for (double value : predicted) low = std::min(low, value), high = std::max(high, value);
  for (double value : interval_y) {
    if (std::isfinite(value)) low = std::min(low, value), high = std::max(high, value);
  }
  for (double value : achieved) low = std::min(low, value), high = std::max(high, value);

  PlotFigure figure;
  figure.title = fmt::format("Margin sweep: {} aligned policies", points.size());
  figure.columns = 3;

  const std::string unit = safety_unit(points);
  PlotPanel prediction{"Safety improvement: achieved vs predicted", "predicted (dual, " + unit + ")",
                       "achieved (" + unit + ")", {}, {}};
  prediction.series.push_back({"achieved = predicted", {low, high}, {low, high}, "#888888", true, false});
  prediction.series.push_back({"95% interval of achieved", interval_x, interval_y, "#9ecae1", false, false});
  prediction.series.push_back({"aligned policies", predicted, achieved, "", false, true});
  figure.panels.push_back(prediction);

  PlotPanel trade_off{"Trade-off (" + unit + ")", "achieved safety improvement", "achieved reward improvement", {}, {}};
  trade_off.series.push_back({"aligned policies", achieved, reward, "", false, true});
  figure.panels.push_back(trade_off);

  PlotPanel judge{"Judge against the margin", "margin b", "fraction / mean", {}, {}};
  // Each reference line dashed in its measure's colour.
  const std::string safety_colour = "#1f77b4", helpfulness_colour = "#ff7f0e";
  judge.series.push_back({"judge safety", margins, judge_safety, safety_colour, false, true});
  judge.series.push_back({"judge helpfulness", margins, judge_helpfulness, helpfulness_colour, false, true});
  const SweepRow first = sweep_row(points.front());
  const double reference_safety = first.reference_judge_safety;
  const double reference_helpfulness = first.reference_judge_helpfulness;
  const std::vector<double> ends = {margins.front(), margins.back()};
  judge.series.push_back({"reference safety", ends, {reference_safety, reference_safety}, safety_colour, true, false});
  judge.series.push_back({"reference helpfulness", ends, {reference_helpfulness, reference_helpfulness},
                          helpfulness_colour, true, false});
  figure.panels.push_back(judge);
  return figure;
}

}  // namespace

void write_sweep_report(const std::filesystem::path& directory, const std::vector<SweepPoint>& points) {
  check(!points.empty(), "sweep: no margins to summarise");
  json listed = json::array();
  for (const SweepPoint& point : points) {
    listed.push_back({{"margin", point.margin}, {"report", evaluation_report_to_json(point.report)}});
  }
  const std::string markdown = sweep_markdown(points);  // validates every field before anything is written
  const PlotFigure figure = achieved_sweep_figure(points);
  write_text_atomically(directory / "sweep.json", json{{"format_version", kArtifactFormatVersion}, {"points", listed}}.dump(2) + "\n");
  write_text_atomically(directory / "sweep.md", markdown);
  write_svg(directory / "sweep.svg", figure);
  spdlog::info("sweep: wrote sweep.json, sweep.md and sweep.svg for {} margins to {}", points.size(),
               directory.string());
}

}  // namespace can
