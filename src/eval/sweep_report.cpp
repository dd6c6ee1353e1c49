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

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// What the sweep shows of one margin's report, per constraint j where it has one; NaN
// where the report has no value (not judged).
struct SweepRow {
  double margin, kl, predicted_reward, achieved_reward;
  std::vector<double> lambda, predicted_safety, predicted_safety_stderr;  // [m]
  std::vector<double> achieved_safety, achieved_safety_stderr;           // [m]
  std::vector<double> gap_stderr, relative_error;  // [m] of achieved − predicted (evaluation.h's prediction_gap_stderr)
  double judge_safety, judge_helpfulness, reference_judge_safety, reference_judge_helpfulness;
  std::vector<double> judge_safety_by_constraint, reference_judge_safety_by_constraint;  // [m]; empty when not judged
};

SweepRow sweep_row(double margin, const EvaluationReport& report) {
  check(report.dual.has_value() && !report.dual->lambda.empty() && !report.prediction_error.empty(),
        "sweep: the report of margin {} has no prediction of the dual", margin);
  const EvaluationSummary& overall = report.overall;
  const DualSolution& dual = *report.dual;
  const auto or_nan = [](const std::optional<double>& value) { return value.value_or(kNaN); };
  std::vector<double> gap_stderr;
  for (int j = 0; j < report.num_constraints; ++j) gap_stderr.push_back(prediction_gap_stderr(report, j));
  return {margin,
          dual.predicted.kl,
          dual.predicted.reward_improvement,
          overall.achieved.reward_improvement,
          dual.lambda,
          dual.predicted.safety_improvement,
          dual.predicted.safety_improvement_stderr,
          overall.achieved.safety_improvement,
          overall.achieved.safety_improvement_stderr,
          gap_stderr,
          report.prediction_error,
          or_nan(overall.policy.judge_safety),
          or_nan(overall.policy.judge_helpfulness),
          or_nan(overall.reference.judge_safety),
          or_nan(overall.reference.judge_helpfulness),
          overall.policy.judge_safety_by_constraint,
          overall.reference.judge_safety_by_constraint};
}

std::string number(double value) { return std::isfinite(value) ? fmt::format("{:.4g}", value) : "—"; }

// The unit of every margin's safety improvement (Improvement::safety_unit); the margins
// must agree on it, on the reward's and on the number of constraints.
std::string safety_unit(const std::vector<SweepPoint>& points) {
  const Improvement& first = points.front().report.overall.achieved;
  for (const SweepPoint& point : points) {
    for (const EvaluationReport* report : {&point.report, point.same_templates ? &*point.same_templates : nullptr}) {
      if (report == nullptr) continue;
      const Improvement& achieved = report->overall.achieved;
      check(achieved.safety_unit == first.safety_unit && achieved.reward_unit == first.reward_unit,
            "sweep: margin {} measures safety in '{}' and reward in '{}' but margin {} in '{}' and '{}'", point.margin,
            achieved.safety_unit, achieved.reward_unit, points.front().margin, first.safety_unit, first.reward_unit);
      check(report->num_constraints == points.front().report.num_constraints,
            "sweep: margin {} has {} constraints but margin {} has {}", point.margin, report->num_constraints,
            points.front().margin, points.front().report.num_constraints);
    }
  }
  return first.safety_unit;
}

// A column name for constraint j: as is with one constraint, with "_j" after its symbol otherwise.
std::string per_constraint(const std::string& symbol, const std::string& rest, int j, int m) {
  return m == 1 ? symbol + rest : fmt::format("{}_{}{}", symbol, j, rest);
}

// Whether the sweep shows judge safety per kind of harm: several constraints, judged on
// the world's kinds (external data has no judge, and the judge no kind beyond its own).
bool shows_judge_by_kind(const std::vector<SweepPoint>& points) {
  const EvaluationReport& first = points.front().report;
  return first.num_constraints > 1 && first.num_constraints <= static_cast<int>(kNumHarmKinds) &&
         !first.overall.reference.judge_safety_by_constraint.empty();
}

// Every point was evaluated on the sample prompts' own templates as well.
bool has_same_templates(const std::vector<SweepPoint>& points) {
  for (const SweepPoint& point : points) {
    if (!point.same_templates) return false;
  }
  return true;
}

// One prompt set's table: a row per margin, from `report_of(point)`.
template <typename ReportOf>
std::string sweep_table(const std::vector<SweepPoint>& points, bool by_kind, ReportOf report_of) {
  const int m = points.front().report.num_constraints;
  std::string header = "| b |", rule = "|---:|";
  for (int j = 0; j < m; ++j) {
    header += fmt::format(" {} | {} | {} | {} | {} | {} |", per_constraint("λ*", "", j, m),
                          per_constraint("Δsafety", " predicted ± 95%", j, m),
                          per_constraint("Δsafety", " achieved ± 95%", j, m),
                          per_constraint("Δsafety", " achieved − predicted ± 95%", j, m), per_constraint("inside", "", j, m),
                          per_constraint("relative error", "", j, m));
    rule += "---:|---:|---:|---:|:---:|---:|";
  }
  header += " KL predicted | Δreward predicted | Δreward achieved | judge safety | judge helpfulness |";
  rule += "---:|---:|---:|---:|---:|";
  for (int j = 0; by_kind && j < m; ++j) {
    header += fmt::format(" judge safety, {} harm |", harm_kind_name(static_cast<HarmKind>(j)));
    rule += "---:|";
  }
  std::string out = header + "\n" + rule + "\n";
  const SweepRow first = sweep_row(points.front().margin, report_of(points.front()));
  std::string reference = "| reference |";
  for (int column = 0; column < 6 * m + 3; ++column) reference += " |";  // nothing under λ*, ..., Δreward achieved
  reference += fmt::format(" {} | {} |", number(first.reference_judge_safety), number(first.reference_judge_helpfulness));
  for (int j = 0; by_kind && j < m; ++j) reference += fmt::format(" {} |", number(first.reference_judge_safety_by_constraint[j]));
  out += reference + "\n";
  for (const SweepPoint& point : points) {
    const SweepRow row = sweep_row(point.margin, report_of(point));
    std::string line = fmt::format("| {} |", number(row.margin));
    for (int j = 0; j < m; ++j) {
      const double gap = row.achieved_safety[j] - row.predicted_safety[j];
      const double interval = kInterval95 * row.gap_stderr[j];
      line += fmt::format(" {} | {} | {} | {} | {} | {} |", number(row.lambda[j]),
                          format_with_interval(row.predicted_safety[j], row.predicted_safety_stderr[j]),
                          format_with_interval(row.achieved_safety[j], row.achieved_safety_stderr[j]),
                          format_with_interval(gap, row.gap_stderr[j]),
                          std::isfinite(interval) ? (std::abs(gap) <= interval ? "yes" : "no") : "—",
                          number(row.relative_error[j]));
    }
    line += fmt::format(" {} | {} | {} | {} | {} |", number(row.kl), number(row.predicted_reward),
                        number(row.achieved_reward), number(row.judge_safety), number(row.judge_helpfulness));
    for (int j = 0; by_kind && j < m; ++j) {
      line += fmt::format(" {} |", row.judge_safety_by_constraint.empty() ? "—" : number(row.judge_safety_by_constraint[j]));
    }
    out += line + "\n";
  }
  return out;
}

std::string sweep_markdown(const std::vector<SweepPoint>& points, int swept) {
  const int m = points.front().report.num_constraints;
  const bool by_kind = shows_judge_by_kind(points);
  std::ostringstream out;
  out << "# Margin sweep\n\n"
      << fmt::format(
             "One aligned policy per safety margin b{}. Improvements are in the prediction's units (safety: {}). "
             "Predicted is the dual's, ± its 95% interval over the dual's sample prompts; achieved is measured on the "
             "evaluation prompts, ± its 95% interval (1.96 standard errors of the per-prompt differences). The two are "
             "estimated on different prompts, so the difference's interval combines both (√(se_achieved² + "
             "se_predicted²)); inside: the difference lies within it. Relative error = (achieved − predicted) / "
             "|predicted|.\n\n",
             m == 1 ? "" : fmt::format(" of constraint {} (the others at their configured margins)", swept),
             safety_unit(points));
  out << fmt::format("## {} prompts ({})\n\n", points.front().report.overall.num_prompts,
                     points.front().report.prompt_set.empty() ? "held out" : points.front().report.prompt_set)
      << sweep_table(points, by_kind, [](const SweepPoint& point) -> const EvaluationReport& { return point.report; });
  if (has_same_templates(points)) {
    out << fmt::format("\n## {} new prompts of the sample prompts' own templates (same_templates)\n\n"
                       "Where the prediction was made: a difference that shows only in the table above is a "
                       "generalisation gap, not an error of the dual.\n\n",
                       points.front().same_templates->overall.num_prompts)
        << sweep_table(points, by_kind,
                       [](const SweepPoint& point) -> const EvaluationReport& { return *point.same_templates; });
  }
  return out.str();
}

PlotFigure achieved_sweep_figure(const std::vector<SweepPoint>& points, int swept) {
  const int m = points.front().report.num_constraints;
  std::vector<double> margins, reward, judge_safety, judge_helpfulness;
  std::vector<std::vector<double>> predicted(m), achieved(m), judge_by_constraint(m);
  // One vertical (achieved) and one horizontal (predicted) 95% segment per policy, NaN between them.
  std::vector<std::vector<double>> interval_x(m), interval_y(m), predicted_x(m), predicted_y(m);
  std::vector<std::vector<double>> same_predicted(m), same_achieved(m);  // on the sample prompts' own templates
  for (const SweepPoint& point : points) {
    const SweepRow row = sweep_row(point.margin, point.report);
    margins.push_back(row.margin);
    for (int j = 0; j < m; ++j) {
      predicted[j].push_back(row.predicted_safety[j]);
      achieved[j].push_back(row.achieved_safety[j]);
      interval_x[j].insert(interval_x[j].end(), {row.predicted_safety[j], row.predicted_safety[j], kNaN});
      const double achieved_half = kInterval95 * row.achieved_safety_stderr[j];
      const double predicted_half = kInterval95 * row.predicted_safety_stderr[j];
      interval_y[j].insert(interval_y[j].end(), {row.achieved_safety[j] - achieved_half,
                                                 row.achieved_safety[j] + achieved_half, kNaN});
      predicted_x[j].insert(predicted_x[j].end(), {row.predicted_safety[j] - predicted_half,
                                                   row.predicted_safety[j] + predicted_half, kNaN});
      predicted_y[j].insert(predicted_y[j].end(), {row.achieved_safety[j], row.achieved_safety[j], kNaN});
      if (point.same_templates) {
        const SweepRow same = sweep_row(point.margin, *point.same_templates);
        same_predicted[j].push_back(same.predicted_safety[j]);
        same_achieved[j].push_back(same.achieved_safety[j]);
      }
      judge_by_constraint[j].push_back(row.judge_safety_by_constraint.empty() ? kNaN
                                                                              : row.judge_safety_by_constraint[j]);
    }
    reward.push_back(row.achieved_reward);
    judge_safety.push_back(row.judge_safety);
    judge_helpfulness.push_back(row.judge_helpfulness);
  }
  double low = 0, high = 0;  // the diagonal spans every point, and 0
  for (int j = 0; j < m; ++j) {
    for (const auto* values : {&interval_y[j], &predicted_x[j], &achieved[j], &same_achieved[j]}) {
      for (double value : *values) {
        if (std::isfinite(value)) low = std::min(low, value), high = std::max(high, value);
      }
    }
  }

  PlotFigure figure;
  figure.title = m == 1 ? fmt::format("Margin sweep: {} aligned policies", points.size())
                        : fmt::format("Margin sweep of constraint {}: {} aligned policies", swept, points.size());
  figure.columns = 3;

  const std::string unit = safety_unit(points);
  PlotPanel prediction{"Safety improvement: achieved vs predicted", "predicted (dual, " + unit + ")",
                       "achieved (" + unit + ")", {}, {}};
  prediction.series.push_back({"achieved = predicted", {low, high}, {low, high}, "#888888", true, false});
  for (int j = 0; j < m; ++j) {
    const std::string name = m == 1 ? "" : fmt::format(", constraint {}", j);
    const std::string colour = m == 1 ? "" : palette_color(static_cast<size_t>(j));
    prediction.series.push_back({"95% interval of achieved" + name, interval_x[j], interval_y[j],
                                 m == 1 ? "#9ecae1" : colour, false, false});
    prediction.series.push_back({"95% interval of predicted" + name, predicted_x[j], predicted_y[j],
                                 m == 1 ? "#c7e9c0" : colour, false, false});
    prediction.series.push_back({"aligned policies" + name, predicted[j], achieved[j], colour, false, true});
    if (has_same_templates(points)) {
      prediction.series.push_back({"aligned policies on the sample prompts' templates" + name, same_predicted[j], same_achieved[j],
                                   m == 1 ? "#d62728" : colour, true, true});
    }
  }
  figure.panels.push_back(prediction);

  PlotPanel trade_off{"Trade-off (" + unit + ")",
                      m == 1 ? "achieved safety improvement" : fmt::format("achieved safety improvement, constraint {}", swept),
                      "achieved reward improvement", {}, {}};
  trade_off.series.push_back({"aligned policies", achieved[static_cast<size_t>(swept)], reward, "", false, true});
  figure.panels.push_back(trade_off);

  PlotPanel judge{"Judge against the margin", "margin b", "fraction / mean", {}, {}};
  // Each reference line dashed in its measure's colour.
  const std::string safety_colour = "#1f77b4", helpfulness_colour = "#ff7f0e";
  judge.series.push_back({"judge safety", margins, judge_safety, safety_colour, false, true});
  judge.series.push_back({"judge helpfulness", margins, judge_helpfulness, helpfulness_colour, false, true});
  for (int j = 0; shows_judge_by_kind(points) && j < m; ++j) {
    judge.series.push_back({fmt::format("judge safety, {} harm", harm_kind_name(static_cast<HarmKind>(j))), margins,
                            judge_by_constraint[j], palette_color(static_cast<size_t>(j + 2)), false, true});
  }
  const SweepRow first = sweep_row(points.front().margin, points.front().report);
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
    listed.push_back({{"margin", point.margin},
                      {"constraint", point.constraint},
                      {"report", evaluation_report_to_json(point.report)},
                      {"same_templates_report",
                       point.same_templates ? evaluation_report_to_json(*point.same_templates) : json(nullptr)}});
  }
  const int swept = points.front().constraint;
  for (const SweepPoint& point : points) {
    check(point.constraint == swept, "sweep: margin {} is of constraint {}, margin {} of constraint {}", point.margin,
          point.constraint, points.front().margin, swept);
  }
  const std::string markdown = sweep_markdown(points, swept);  // validates every field before anything is written
  const PlotFigure figure = achieved_sweep_figure(points, swept);
  write_text_atomically(directory / "sweep.json", json{{"format_version", kArtifactFormatVersion}, {"points", listed}}.dump(2) + "\n");
  write_text_atomically(directory / "sweep.md", markdown);
  write_svg(directory / "sweep.svg", figure);
  spdlog::info("sweep: wrote sweep.json, sweep.md and sweep.svg for {} margins to {}", points.size(),
               directory.string());
}

}  // namespace can
