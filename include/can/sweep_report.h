// The summary of a margin sweep (can-train --sweep-margins): one aligned policy
// per safety margin b, each evaluated on the held-out prompts (evaluation.h).
// It shows whether the dual's prediction holds across margins (the paper's
// Figure 2, left: achieved against predicted safety improvement) and what the
// safety costs in helpfulness.
#pragma once

#include <filesystem>
#include <optional>
#include <vector>

#include "can/evaluation.h"

namespace can {

struct SweepPoint {
  double margin = 0;        // b of the swept constraint
  int constraint = 0;       // which constraint is swept (the same for every point); the others keep their margins
  EvaluationReport report;  // the margin's eval report.json (read_evaluation_report)
  // Its evaluation on new prompts of the sample prompts' own templates (eval.same_template_prompts:
  // eval<suffix>/same_templates/report.json), when that ran.
  std::optional<EvaluationReport> same_templates;
};

// Writes into `directory`, each file atomically:
//   sweep.json  {"format_version", "points": [{"margin", "constraint", "report",
//               "same_templates_report"}, ...]} in the order given, each report as
//               evaluation_report_to_json writes it (same_templates_report null when absent);
//   sweep.md    one table row per margin (per constraint λ*, predicted and achieved
//               safety improvement with their 95% intervals, their difference with the
//               interval of both (evaluation.h's prediction_gap_stderr) and whether it lies
//               inside, relative error; reward improvement, judge safety and helpfulness,
//               with several constraints judge safety per kind of harm); a second table
//               on the same-template prompts when every margin has them;
//   sweep.svg   achieved against predicted safety improvement of every constraint with
//               the line achieved = predicted, each value's 95% intervals (and the
//               same-template points when every margin has them);
//               achieved reward against the swept constraint's achieved safety
//               improvement; judge safety and helpfulness against b.
// Improvements are in the prediction's units (EvaluationSummary::achieved), which every
// margin's report must share.
// An error names the margin whose report has no dual prediction; nothing is written then.
void write_sweep_report(const std::filesystem::path& directory, const std::vector<SweepPoint>& points);

}  // namespace can
