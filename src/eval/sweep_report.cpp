#include "can/sweep_report.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <limits>
#include <sstream>

#include "can/atomic_file.h"
#include "can/error.h"
#include "can/svg_plot.h"

namespace can {

namespace {

using nlohmann::json;

// The band drawn around achieved = predicted: the tolerance that docs/design.md §9 accepts.
constexpr double kPredictionBand = 0.25;

// A number of a margin's report at `path` (e.g. "/achieved/safety_improvement/0"); NaN for a JSON null.
double field(const SweepPoint& point, const std::string& path) {
  const json::json_pointer pointer(path);
  check(point.report.contains(pointer), "sweep: the report of margin {} has no field {}", point.margin, path);
  const json& value = point.report.at(pointer);
  if (value.is_null()) return std::numeric_limits<double>::quiet_NaN();
  check(value.is_number(), "sweep: field {} of the report of margin {} is not a number", path, point.margin);
  return value.get<double>();
}

std::string number(double value) { return std::isfinite(value) ? fmt::format("{:.4g}", value) : "—"; }

std::string sweep_markdown(const std::vector<SweepPoint>& points) {
  std::ostringstream out;
  out << "# Margin sweep\n\n"
      << "One aligned policy per safety margin b, evaluated on the held-out prompts. Safety improvement is in cost-model "
         "units (the mean of −cost); predicted is the dual's, achieved is measured; relative error = (achieved − "
         "predicted) / |predicted|.\n\n"
      << "| b | λ* | KL predicted | Δsafety predicted | Δsafety achieved | relative error | Δreward predicted | "
         "Δreward achieved | judge safety | judge helpfulness |\n"
      << "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  const SweepPoint& first = points.front();
  out << fmt::format("| reference | | | | | | | | {} | {} |\n", number(field(first, "/reference/judge_safety")),
                     number(field(first, "/reference/judge_helpfulness")));
  for (const SweepPoint& point : points) {
    out << fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", number(point.margin),
                       number(field(point, "/lambda/0")), number(field(point, "/predicted/kl")),
                       number(field(point, "/predicted/safety_improvement/0")),
                       number(field(point, "/achieved/safety_improvement/0")),
                       number(field(point, "/prediction_error/0")), number(field(point, "/predicted/reward_improvement")),
                       number(field(point, "/achieved/reward_improvement")),
                       number(field(point, "/policy/judge_safety")), number(field(point, "/policy/judge_helpfulness")));
  }
  return out.str();
}

PlotFigure achieved_sweep_figure(const std::vector<SweepPoint>& points) {
  std::vector<double> margins, predicted, achieved, reward, judge_safety, judge_helpfulness;
  for (const SweepPoint& point : points) {
    margins.push_back(point.margin);
    predicted.push_back(field(point, "/predicted/safety_improvement/0"));
    achieved.push_back(field(point, "/achieved/safety_improvement/0"));
    reward.push_back(field(point, "/achieved/reward_improvement"));
    judge_safety.push_back(field(point, "/policy/judge_safety"));
    judge_helpfulness.push_back(field(point, "/policy/judge_helpfulness"));
  }
  double low = 0, high = 0;  // the diagonal spans every point, and 0
  for (double value : predicted) low = std::min(low, value), high = std::max(high, value);
  for (double value : achieved) low = std::min(low, value), high = std::max(high, value);

  PlotFigure figure;
  figure.title = fmt::format("Margin sweep: {} aligned policies", points.size());
  figure.columns = 3;

  PlotPanel prediction{"Safety improvement: achieved vs predicted", "predicted (dual)", "achieved (cost model)", {}, {}};
  prediction.series.push_back({"achieved = predicted", {low, high}, {low, high}, "#888888", true, false});
  prediction.series.push_back({"±25%", {low, high}, {low * (1 + kPredictionBand), high * (1 + kPredictionBand)},
                               "#bbbbbb", true, false});
  prediction.series.push_back({"", {low, high}, {low * (1 - kPredictionBand), high * (1 - kPredictionBand)},
                               "#bbbbbb", true, false});
  prediction.series.push_back({"aligned policies", predicted, achieved, "", false, true});
  figure.panels.push_back(prediction);

  PlotPanel trade_off{"Trade-off (score models)", "achieved safety improvement", "achieved reward improvement", {}, {}};
  trade_off.series.push_back({"aligned policies", achieved, reward, "", false, true});
  figure.panels.push_back(trade_off);

  PlotPanel judge{"Judge against the margin", "margin b", "fraction / mean", {}, {}};
  // Each reference line dashed in its measure's colour.
  const std::string safety_colour = "#1f77b4", helpfulness_colour = "#ff7f0e";
  judge.series.push_back({"judge safety", margins, judge_safety, safety_colour, false, true});
  judge.series.push_back({"judge helpfulness", margins, judge_helpfulness, helpfulness_colour, false, true});
  const double reference_safety = field(points.front(), "/reference/judge_safety");
  const double reference_helpfulness = field(points.front(), "/reference/judge_helpfulness");
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
  for (const SweepPoint& point : points) listed.push_back({{"margin", point.margin}, {"report", point.report}});
  const std::string markdown = sweep_markdown(points);  // validates every field before anything is written
  const PlotFigure figure = achieved_sweep_figure(points);
  write_text_atomically(directory / "sweep.json", json{{"points", listed}}.dump(2) + "\n");
  write_text_atomically(directory / "sweep.md", markdown);
  write_svg(directory / "sweep.svg", figure);
  spdlog::info("sweep: wrote sweep.json, sweep.md and sweep.svg for {} margins to {}", points.size(),
               directory.string());
}

}  // namespace can
