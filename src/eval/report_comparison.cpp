#include "can/report_comparison.h"

#include <cmath>
#include <set>
#include <sstream>

#include "can/error.h"

namespace can {

namespace {

std::string number(const std::optional<double>& value) {
  return value && std::isfinite(*value) ? fmt::format("{:.3f}", *value) : "—";
}

// The summary of `class_name` ("all", "harmful" or "benign"), or nullptr when the report has no such class.
const EvaluationSummary* summary_of(const EvaluationReport& report, const std::string& class_name) {
  if (class_name == "all") return &report.overall;
  for (const auto& [name, summary] : report.by_class) {
    if (name == class_name) return &summary;
  }
  return nullptr;
}

}  // namespace

void check_comparable(const std::vector<LabelledReport>& reports) {
  check(!reports.empty(), "compare: no reports");
  std::set<std::string> labels;
  const EvaluationReport& first = reports.front().report;
  for (const LabelledReport& entry : reports) {
    check(!entry.label.empty(), "compare: a report has an empty label");
    check(labels.insert(entry.label).second, "compare: the label '{}' is given twice", entry.label);
    const EvaluationReport& report = entry.report;
    for (const auto& [name, summary] : report.by_class) {
      check(summary.win_rate.has_value() && summary.reference.judge_helpfulness && summary.reference.judge_safety &&
                summary.policy.judge_helpfulness && summary.policy.judge_safety,
            "compare: '{}' has no judge verdicts for its {} prompts", entry.label, name);
    }
    check(report.overall.win_rate.has_value() && report.overall.reference.judge_helpfulness &&
              report.overall.reference.judge_safety && report.overall.policy.judge_helpfulness &&
              report.overall.policy.judge_safety,
          "compare: '{}' was not judged (its prompts have no world topics)", entry.label);
    const SamplingOptions& a = report.options.sampling;
    const SamplingOptions& b = first.options.sampling;
    check(report.prompt_set == first.prompt_set && report.overall.num_prompts == first.overall.num_prompts &&
              a.max_new_tokens == b.max_new_tokens && a.temperature == b.temperature && a.top_p == b.top_p &&
              a.top_k == b.top_k && a.seed == b.seed && a.batch_size == b.batch_size,
          "compare: '{}' evaluated {} prompts of '{}' (temperature {}, top-p {}, top-k {}, {} new tokens, seed {}, "
          "batch {}) but '{}' evaluated {} prompts of '{}' (temperature {}, top-p {}, top-k {}, {} new tokens, seed "
          "{}, batch {}); compare policies evaluated on the same prompts with the same sampling",
          entry.label, report.overall.num_prompts, report.prompt_set, a.temperature, a.top_p, a.top_k,
          a.max_new_tokens, a.seed, a.batch_size, reports.front().label, first.overall.num_prompts, first.prompt_set,
          b.temperature, b.top_p, b.top_k, b.max_new_tokens, b.seed, b.batch_size);
  }
}

std::string comparison_markdown(const std::vector<LabelledReport>& reports) {
  check_comparable(reports);
  std::ostringstream out;
  out << fmt::format("# Aligned policies against the reference\n\n{} prompts ({}), one response per prompt from each "
                     "policy and the reference with the same sampling and seed; win rates by the judge, ties count "
                     "½.\n\n",
                     reports.front().report.overall.num_prompts,
                     reports.front().report.prompt_set.empty() ? "as given" : reports.front().report.prompt_set);
  for (const std::string class_name : {"all", "harmful", "benign"}) {
    if (summary_of(reports.front().report, class_name) == nullptr) continue;
    out << "## " << (class_name == "all" ? std::string("All prompts") : class_name + " prompts") << "\n\n"
        << "| policy | judge helpfulness | judge safety | win rate helpfulness | win rate safety | reference "
           "helpfulness | reference safety |\n|---|---:|---:|---:|---:|---:|---:|\n";
    for (const LabelledReport& entry : reports) {
      const EvaluationSummary* summary = summary_of(entry.report, class_name);
      if (summary == nullptr) continue;
      out << fmt::format("| {} | {} | {} | {} | {} | {} | {} |\n", entry.label,
                         number(summary->policy.judge_helpfulness), number(summary->policy.judge_safety),
                         number(summary->win_rate->helpfulness), number(summary->win_rate->safety),
                         number(summary->reference.judge_helpfulness), number(summary->reference.judge_safety));
    }
    out << '\n';
  }
  const PolicySummary& reference = reports.front().report.overall.reference;
  for (const LabelledReport& entry : reports) {
    const PolicySummary& other = entry.report.overall.reference;
    if (other.judge_helpfulness != reference.judge_helpfulness || other.judge_safety != reference.judge_safety) {
      out << "The references' judge means differ between reports: their responses differ (another reference model "
             "or another build), and each win rate is against its own reference's responses.\n";
      break;
    }
  }
  return out.str();
}

PlotFigure comparison_figure(const std::vector<LabelledReport>& reports, const std::string& title) {
  check_comparable(reports);
  PlotFigure figure;
  figure.title = title;
  figure.columns = 2;
  PlotPanel wins{"Win rates against the reference (judge)", "win rate on helpfulness", "win rate on safety", {}, {}};
  PlotPanel means{"Judge means", "judge helpfulness", "judge safety (fraction safe)", {}, {}};
  const PolicySummary& reference = reports.front().report.overall.reference;
  means.series.push_back({"reference", {*reference.judge_helpfulness}, {*reference.judge_safety}, "#7f7f7f", false,
                          true});
  for (size_t i = 0; i < reports.size(); ++i) {
    const EvaluationSummary& overall = reports[i].report.overall;
    const std::string color = palette_color(i);
    wins.series.push_back(
        {reports[i].label, {overall.win_rate->helpfulness}, {overall.win_rate->safety}, color, false, true});
    means.series.push_back(
        {reports[i].label, {*overall.policy.judge_helpfulness}, {*overall.policy.judge_safety}, color, false, true});
  }
  wins.series.push_back({"tie with the reference", {0.5, 0.5}, {0, 1}, "#bbbbbb", true, false});
  wins.series.push_back({"", {0, 1}, {0.5, 0.5}, "#bbbbbb", true, false});
  figure.panels = {wins, means};
  return figure;
}

}  // namespace can
