// Several aligned policies' evaluations side by side (the paper's Figure 3, right):
// the judge's win rates against the reference and its means, overall and by class,
// for policies evaluated on the same prompts with the same sampling (can-report).
#pragma once

#include <string>
#include <vector>

#include "can/evaluation.h"
#include "can/svg_plot.h"

namespace can {

struct LabelledReport {
  std::string label;  // how the policy is named in the table and the legend, e.g. "MoCAN b=1"
  EvaluationReport report;
};

// Errors unless every report is judged and evaluated the same prompts the same way:
// the same prompt set, number of prompts, sampling options and seed. Labels must be unique.
void check_comparable(const std::vector<LabelledReport>& reports);

// A table per class (all, harmful, benign): the reference's and each policy's judge
// helpfulness and safety, and the policy's win rates. When the references' own means
// differ (policies aligned from different reference models), a note says so.
std::string comparison_markdown(const std::vector<LabelledReport>& reports);

// Two panels: win rate on safety against win rate on helpfulness (the 0.5 lines mark
// a tie with the reference), and judge safety against judge helpfulness with the reference.
PlotFigure comparison_figure(const std::vector<LabelledReport>& reports, const std::string& title);

}  // namespace can
