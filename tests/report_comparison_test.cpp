// Several policies' evaluations side by side (the paper's Figure 3, right).
#include "can/report_comparison.h"

#include <gtest/gtest.h>

#include "assertions.h"

namespace {

using can::testing::contains;
using can::testing::error_message;

// A judged report: the reference at helpfulness 0.4 and safety 0.7, the policy as given.
can::EvaluationReport judged(double helpfulness, double safety, double win_helpfulness, double win_safety) {
  can::EvaluationReport report;
  report.prompt_set = "held_out_templates";
  report.num_constraints = 1;
  report.overall.num_prompts = 10;
  report.overall.reference = {0.0, {0.0}, 0.4, 0.7, 0.2, {0.7}, 10.0, 1.0};
  report.overall.policy = {0.0, {0.0}, helpfulness, safety, 0.1, {safety}, 10.0, 1.0};
  report.overall.win_rate = can::WinRates{win_helpfulness, win_safety};
  can::EvaluationSummary harmful = report.overall;
  harmful.num_prompts = 5;
  harmful.win_rate = can::WinRates{0.25, 0.75};
  report.by_class = {{"harmful", harmful}};
  return report;
}

TEST(ReportComparison, TablesListEveryPolicyPerClassAndThePlotHasAPointEach) {
  const std::vector<can::LabelledReport> reports = {{"MoCAN", judged(0.45, 0.9, 0.55, 0.6)},
                                                    {"DPO safety only", judged(0.2, 0.95, 0.3, 0.7)}};
  const std::string markdown = can::comparison_markdown(reports);
  EXPECT_TRUE(contains(markdown, "10 prompts (held_out_templates)")) << markdown;
  EXPECT_TRUE(contains(markdown, "| MoCAN | 0.450 | 0.900 | 0.550 | 0.600 | 0.400 | 0.700 |")) << markdown;
  EXPECT_TRUE(contains(markdown, "| DPO safety only | 0.200 | 0.950 | 0.300 | 0.700 | 0.400 | 0.700 |")) << markdown;
  EXPECT_TRUE(contains(markdown, "## harmful prompts\n\n")) << markdown;
  EXPECT_TRUE(contains(markdown, "| MoCAN | 0.450 | 0.900 | 0.250 | 0.750 |")) << markdown;
  EXPECT_FALSE(contains(markdown, "## benign")) << markdown;
  EXPECT_FALSE(contains(markdown, "references' judge means differ")) << markdown;
  const std::string svg = can::render_svg(can::comparison_figure(reports, "fig3"));
  EXPECT_TRUE(contains(svg, "DPO safety only"));
  EXPECT_TRUE(contains(svg, "tie with the reference"));

  std::vector<can::LabelledReport> other_reference = reports;
  other_reference[1].report.overall.reference.judge_helpfulness = 0.41;
  EXPECT_TRUE(contains(can::comparison_markdown(other_reference), "references' judge means differ"));
}

TEST(ReportComparison, ReportsOfOtherPromptsOrSamplingOrUnjudgedAreRefused) {
  const can::LabelledReport first{"a", judged(0.5, 0.9, 0.5, 0.5)};
  can::LabelledReport fewer{"b", judged(0.5, 0.9, 0.5, 0.5)};
  fewer.report.overall.num_prompts = 9;
  EXPECT_TRUE(contains(error_message([&] { can::check_comparable({first, fewer}); }),
                       "'b' evaluated 9 prompts of 'held_out_templates'"));
  can::LabelledReport seeded{"b", judged(0.5, 0.9, 0.5, 0.5)};
  seeded.report.options.sampling.seed = 2;
  EXPECT_TRUE(contains(error_message([&] { can::check_comparable({first, seeded}); }), "seed 2"));
  can::LabelledReport unjudged{"b", judged(0.5, 0.9, 0.5, 0.5)};
  unjudged.report.overall.win_rate.reset();
  EXPECT_TRUE(contains(error_message([&] { can::check_comparable({first, unjudged}); }), "'b' was not judged"));
  EXPECT_TRUE(contains(error_message([&] { can::check_comparable({first, first}); }), "the label 'a' is given twice"));
  can::LabelledReport batched{"b", judged(0.5, 0.9, 0.5, 0.5)};
  batched.report.options.sampling.batch_size = 7;
  EXPECT_TRUE(contains(error_message([&] { can::check_comparable({first, batched}); }), "batch 7"));
  can::LabelledReport class_unjudged{"b", judged(0.5, 0.9, 0.5, 0.5)};
  class_unjudged.report.by_class[0].second.policy.judge_safety.reset();
  EXPECT_TRUE(contains(error_message([&] { can::check_comparable({first, class_unjudged}); }),
                       "'b' has no judge verdicts for its harmful prompts"));
}

}  // namespace
