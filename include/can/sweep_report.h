// The summary of a margin sweep (can-train --sweep-margins): one aligned policy
// per safety margin b, each evaluated on the held-out prompts (evaluation.h).
// It shows whether the dual's prediction holds across margins (the paper's
// Figure 2, left: achieved against predicted safety improvement) and what the
// safety costs in helpfulness.
#pragma once

#include <filesystem>
#include <vector>

#include "can/evaluation.h"

namespace can {

struct SweepPoint {
  double margin = 0;        // b of the swept constraint
  int constraint = 0;       // which constraint is swept (the same for every point); the others keep their margins
  EvaluationReport report;  // the margin's eval report.json (read_evaluation_report)
};

// Writes into `directory`, each file atomically:
//   sweep.json  {"format_version", "points": [{"margin", "constraint", "report"}, ...]}
//               in the order given, each report as evaluation_report_to_json writes it;
//   sweep.md    one table row per margin (per constraint λ*, predicted and achieved
//               safety improvement, relative error; reward improvement, judge safety
//               and helpfulness, with several constraints judge safety per kind of harm);
//   sweep.svg   achieved against predicted safety improvement of every constraint with
//               the line achieved = predicted and each achieved value's 95% interval;
//               achieved reward against the swept constraint's achieved safety
//               improvement; judge safety and helpfulness against b.
// Improvements are in the prediction's units (EvaluationSummary::achieved), which every
// margin's report must share.
// An error names the margin whose report has no dual prediction; nothing is written then.
void write_sweep_report(const std::filesystem::path& directory, const std::vector<SweepPoint>& points);

}  // namespace can
