// The files of an evaluation: report.json, report.md, responses.jsonl, judge_requests.jsonl and the score
// distribution plots.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "can/atomic_file.h"
#include "can/error.h"
#include "can/evaluation.h"
#include "can/external_judge.h"
#include "can/json_fields.h"
#include "can/json_lines.h"
#include "can/tensorboard.h"

namespace can {

namespace {

using nlohmann::json;

// Examples per class shown side by side in report.md (per report when classes are unknown).
constexpr size_t kExamplesPerClass = 2;
// Pixels: a figure of one panel is made wide enough for its title.
constexpr int kWidePanel = 640;

json optional_to_json(const std::optional<double>& value) { return value ? json(*value) : json(nullptr); }

json policy_to_json(const PolicySummary& summary) {
  return {{"reward", summary.reward},
          {"cost", summary.costs.front()},
          {"costs", summary.costs},
          {"judge_helpfulness", optional_to_json(summary.judge_helpfulness)},
          {"judge_safety", optional_to_json(summary.judge_safety)},
          {"judge_harm", optional_to_json(summary.judge_harm)},
          {"judge_safety_by_constraint",
           summary.judge_safety.has_value() ? json(summary.judge_safety_by_constraint) : json(nullptr)},
          {"response_tokens", summary.response_tokens},
          {"stopped_at_eos", summary.stopped_at_eos}};
}

json improvement_to_json(const Improvement& improvement) {
  return {{"safety_improvement", improvement.safety_improvement},
          {"safety_improvement_stderr", numbers_or_nulls(improvement.safety_improvement_stderr)},
          {"safety_unit", improvement.safety_unit},
          {"reward_improvement", improvement.reward_improvement},
          {"reward_improvement_stderr", number_or_null(improvement.reward_improvement_stderr)},
          {"reward_unit", improvement.reward_unit}};
}

std::optional<double> optional_number(const json& object, const std::string& field, const std::string& where) {
  if (required_field(object, field, where).is_null()) return std::nullopt;
  return number_field(object, field, where);
}

PolicySummary policy_from_json(const json& object, const std::string& where) {
  PolicySummary summary;
  summary.reward = number_field(object, "reward", where);
  summary.costs = numbers_field(object, "costs", where);
  summary.judge_helpfulness = optional_number(object, "judge_helpfulness", where);
  summary.judge_safety = optional_number(object, "judge_safety", where);
  summary.judge_harm = optional_number(object, "judge_harm", where);
  // Absent from the reports of CAN before several constraints: read as not given.
  if (const json* by_constraint = optional_field(object, "judge_safety_by_constraint");
      by_constraint != nullptr && !by_constraint->is_null()) {
    summary.judge_safety_by_constraint = numbers_field(object, "judge_safety_by_constraint", where);
  }
  summary.response_tokens = number_field(object, "response_tokens", where);
  summary.stopped_at_eos = number_field(object, "stopped_at_eos", where);
  return summary;
}

Improvement improvement_from_json(const json& object, const std::string& where) {
  Improvement improvement;
  improvement.safety_unit = string_field(object, "safety_unit", where);
  improvement.reward_unit = string_field(object, "reward_unit", where);
  improvement.safety_improvement = numbers_field(object, "safety_improvement", where);
  improvement.safety_improvement_stderr = numbers_or_nulls_field(object, "safety_improvement_stderr", where);
  check(improvement.safety_improvement_stderr.size() == improvement.safety_improvement.size(),
        "{}: safety_improvement_stderr has {} entries but safety_improvement has {}", where,
        improvement.safety_improvement_stderr.size(), improvement.safety_improvement.size());
  improvement.reward_improvement = number_field(object, "reward_improvement", where);
  improvement.reward_improvement_stderr = number_or_nan_field(object, "reward_improvement_stderr", where);
  return improvement;
}

// Every per-constraint list of `summary` has `m` entries (judge_safety_by_constraint: m or none).
void check_constraint_lengths(const EvaluationSummary& summary, size_t m, const std::string& where) {
  const std::vector<std::pair<std::string, size_t>> lengths = {
      {"reference.costs", summary.reference.costs.size()},
      {"policy.costs", summary.policy.costs.size()},
      {"achieved.safety_improvement", summary.achieved.safety_improvement.size()},
      {"achieved.safety_improvement_stderr", summary.achieved.safety_improvement_stderr.size()}};
  for (const auto& [field, length] : lengths) {
    check(length == m, "{}: {} has {} entries but num_constraints is {}", where, field, length, m);
  }
  for (const auto* side : {&summary.reference, &summary.policy}) {
    const size_t length = side->judge_safety_by_constraint.size();
    check(length == 0 || length == m, "{}: judge_safety_by_constraint has {} entries but num_constraints is {}", where,
          length, m);
  }
  if (summary.achieved_by_score_models) {
    check(summary.achieved_by_score_models->safety_improvement.size() == m,
          "{}: achieved_by_score_models.safety_improvement has {} entries but num_constraints is {}", where,
          summary.achieved_by_score_models->safety_improvement.size(), m);
  }
}

EvaluationSummary summary_from_json(const json& object, const std::string& where) {
  EvaluationSummary summary;
  summary.num_prompts = integer_field(object, "num_prompts", where);
  summary.reference = policy_from_json(required_field(object, "reference", where), where + ": reference");
  summary.policy = policy_from_json(required_field(object, "policy", where), where + ": policy");
  summary.achieved = improvement_from_json(required_field(object, "achieved", where), where + ": achieved");
  if (const json& by_score_models = required_field(object, "achieved_by_score_models", where);
      !by_score_models.is_null()) {
    summary.achieved_by_score_models = improvement_from_json(by_score_models, where + ": achieved_by_score_models");
    check(summary.achieved_by_score_models->reward_unit == kRewardModelUnit &&
              summary.achieved_by_score_models->safety_unit == kCostModelUnit,
          "{}: achieved_by_score_models must be in {} and {}, not {} and {}", where, kRewardModelUnit, kCostModelUnit,
          summary.achieved_by_score_models->reward_unit, summary.achieved_by_score_models->safety_unit);
  }
  if (const json* win_rate = optional_field(object, "win_rate")) {
    summary.win_rate = WinRates{number_field(*win_rate, "helpfulness", where + ": win_rate"),
                                number_field(*win_rate, "safety", where + ": win_rate")};
  }
  return summary;
}

json summary_to_json(const EvaluationSummary& summary) {
  json result = {{"num_prompts", summary.num_prompts},
                 {"reference", policy_to_json(summary.reference)},
                 {"policy", policy_to_json(summary.policy)},
                 {"achieved", improvement_to_json(summary.achieved)},
                 {"achieved_by_score_models", nullptr},
                 {"win_rate", nullptr}};
  if (summary.achieved_by_score_models) {
    result["achieved_by_score_models"] = improvement_to_json(*summary.achieved_by_score_models);
  }
  if (summary.win_rate) {
    result["win_rate"] = {{"helpfulness", summary.win_rate->helpfulness}, {"safety", summary.win_rate->safety}};
  }
  return result;
}

json response_to_json(const ResponseEvaluation& response) {
  json result = {{"response", response.text},
                 {"reward", response.reward},
                 {"cost", response.costs.front()},
                 {"costs", response.costs},
                 {"num_tokens", response.tokens.size()},
                 {"stopped_at_eos", response.stopped_at_eos}};
  if (response.prediction_scores) {
    result["prediction_scores"] = {{"reward", response.prediction_scores->reward},
                                   {"safety", response.prediction_scores->safety}};
  }
  if (response.judged) {
    // harm and is_safe over the constraints' kinds of harm, then kind by kind.
    const int m = static_cast<int>(response.costs.size());
    const auto& verdict = *response.judged;
    result["judge"] = {{"helpfulness", verdict.helpfulness},
                       {"harm", worst_harm(verdict, m)},
                       {"is_safe", is_safe_on_all(verdict, m)},
                       {"harm_by_constraint", std::vector<double>(verdict.harm.begin(), verdict.harm.begin() + m)},
                       {"is_safe_by_constraint", std::vector<bool>(verdict.is_safe.begin(), verdict.is_safe.begin() + m)}};
  }
  return result;
}

json prompt_to_json(const PromptEvaluation& row) {
  json result = {{"prompt_id", row.prompt.prompt_id}, {"prompt", row.prompt.prompt}};
  if (!row.prompt.topic.empty()) result["topic"] = row.prompt.topic;
  if (row.prompt.harmful) result["harmful"] = *row.prompt.harmful;
  result["reference"] = response_to_json(row.reference);
  result["policy"] = response_to_json(row.policy);
  return result;
}

// Markdown table cells: one line, no stray column separators.
std::string cell(const std::string& text) {
  std::string escaped;
  for (char c : text) {
    if (c == '|') {
      escaped += "\\|";
    } else if (c == '\n' || c == '\r') {
      escaped += ' ';
    } else {
      escaped += c;
    }
  }
  return escaped;
}

std::string format_number(double value) { return std::isfinite(value) ? fmt::format("{:.4g}", value) : "—"; }
std::string format_optional(const std::optional<double>& value) { return value ? format_number(*value) : "—"; }
std::string format_change(const std::optional<double>& before, const std::optional<double>& after) {
  return before && after ? fmt::format("{:+.4g}", *after - *before) : "—";
}

// Constraints are numbered from 0, as in dual.margins and the stage names (cost_model_0).
std::string cost_name(int j, int num_constraints) {
  return num_constraints == 1 ? "cost" : fmt::format("cost {}", j);
}

void write_score_table(std::ostream& out, const EvaluationReport& report) {
  const EvaluationSummary& overall = report.overall;
  out << "## Scores (means over prompts)\n\n| | reference | policy | change |\n|---|---:|---:|---:|\n";
  auto row = [&out](const std::string& name, const std::optional<double>& before, const std::optional<double>& after) {
    out << "| " << name << " | " << format_optional(before) << " | " << format_optional(after) << " | "
        << format_change(before, after) << " |\n";
  };
  row("reward (reward model)", overall.reference.reward, overall.policy.reward);
  for (int j = 0; j < report.num_constraints; ++j) {
    row(cost_name(j, report.num_constraints) + " (cost model, lower is safer)", overall.reference.costs[j],
        overall.policy.costs[j]);
  }
  row("judge helpfulness", overall.reference.judge_helpfulness, overall.policy.judge_helpfulness);
  row("judge safety (fraction safe)", overall.reference.judge_safety, overall.policy.judge_safety);
  if (report.num_constraints > 1 && !overall.reference.judge_safety_by_constraint.empty()) {
    for (int j = 0; j < report.num_constraints; ++j) {
      row(fmt::format("judge safety, {} harm", harm_kind_name(static_cast<HarmKind>(j))),
          overall.reference.judge_safety_by_constraint[j], overall.policy.judge_safety_by_constraint[j]);
    }
  }
  row("judge harm", overall.reference.judge_harm, overall.policy.judge_harm);
  row("response tokens", overall.reference.response_tokens, overall.policy.response_tokens);
  row("ended with EOS (fraction)", overall.reference.stopped_at_eos, overall.policy.stopped_at_eos);
  out << '\n';
}

// A unit of Improvement (Scorer::reward_unit, safety_unit) for readers.
std::string unit_description(const std::string& unit) {
  if (unit == "cost_model") return "cost-model units (g = −cost)";
  if (unit == "reward_model") return "reward-model units";
  if (unit == "implicit_reward") return "implicit-reward units (β·log(π/π_ref) of the DPO model)";
  return unit;
}

// The row name of constraint j's safety improvement in `unit`.
std::string safety_name(const std::string& unit, int j, int num_constraints) {
  const std::string name =
      num_constraints == 1 ? "safety improvement" : fmt::format("safety improvement, constraint {}", j);
  if (unit == "cost_model") return name + " (E[g], g = −cost)";
  if (unit == "implicit_reward") return name + " (E[β_g·log(π_g/π_ref)])";
  return name;
}

void write_prediction_table(std::ostream& out, const EvaluationReport& report) {
  const Improvement& achieved = report.overall.achieved;
  out << "## Predicted and achieved improvement over the reference\n\n";
  if (!report.dual) {
    out << "No dual solution was given; achieved only.\n\n";
  } else {
    const DualSolution& dual = *report.dual;
    out << fmt::format("Dual solution: β = {}, margins b = [{}], λ* = [{}]{}.\n\n", format_number(dual.beta),
                       fmt::join(dual.margins, ", "), fmt::join(dual.lambda, ", "),
                       dual.converged ? "" : " (the solver did NOT converge)");
    for (const int j : slack_constraints(dual)) {
      out << fmt::format("Constraint {} is slack: λ*_{} = 0, its margin {} is met by aligning for the other "
                         "constraint{} (predicted improvement {}).\n\n",
                         j, j, format_number(dual.margins[j]), report.num_constraints > 2 ? "s" : "",
                         format_number(dual.predicted.safety_improvement[j]));
    }
    if (dual.predicted.ess_mean_fraction > 0 && dual.predicted.ess_mean_fraction < kMinReliableEssFraction) {
      out << fmt::format(
          "The prediction rests on a small effective sample size (mean {:.3f} of N): treat it as rough.\n\n",
          dual.predicted.ess_mean_fraction);
    }
  }
  out << fmt::format("Achieved: the mean over {} prompts of the policy's response minus the reference's, ± its 95% "
                     "interval (1.96 standard errors of those differences). Safety in {}; reward in {}{}.\n\n",
                     report.overall.num_prompts, unit_description(achieved.safety_unit),
                     unit_description(achieved.reward_unit),
                     report.dual ? "; the prediction is in the same units" : "");
  if (report.dual) {
    out << "Predicted: π_λ*'s improvement on the dual's sample prompts, ± its 95% interval over those prompts. The "
           "two are estimated on different prompts, so the difference's interval combines both; a difference inside "
           "it is one the two samples cannot tell from zero.\n\n";
  }
  out << "| | predicted ± 95% | achieved ± 95% | achieved − predicted ± 95% | (achieved − predicted) / "
         "\\|predicted\\| |\n|---|---:|---:|---:|---:|\n";
  for (int j = 0; j < report.num_constraints; ++j) {
    out << "| " << safety_name(achieved.safety_unit, j, report.num_constraints) << " | ";
    if (report.dual) {
      const DualPrediction& predicted = report.dual->predicted;
      out << format_with_interval(predicted.safety_improvement[j], predicted.safety_improvement_stderr[j]) << " | "
          << format_with_interval(achieved.safety_improvement[j], achieved.safety_improvement_stderr[j]) << " | "
          << format_with_interval(achieved.safety_improvement[j] - predicted.safety_improvement[j],
                           prediction_gap_stderr(report, j))
          << " | " << format_number(report.prediction_error[j]) << " |\n";
    } else {
      out << "— | " << format_with_interval(achieved.safety_improvement[j], achieved.safety_improvement_stderr[j])
          << " | — | — |\n";
    }
  }
  out << "| reward improvement | "
      << (report.dual ? format_with_interval(report.dual->predicted.reward_improvement,
                                      report.dual->predicted.reward_improvement_stderr)
                      : "—")
      << " | " << format_with_interval(achieved.reward_improvement, achieved.reward_improvement_stderr) << " | | |\n";
  if (report.dual) out << "| KL(π ‖ π_ref), nats | " << format_number(report.dual->predicted.kl) << " | — | | |\n";
  out << '\n';
  if (!report.prediction_caveats.empty()) {
    out << "The prediction may not hold for this run:\n\n";
    for (const std::string& caveat : report.prediction_caveats) out << "- " << caveat << "\n";
    out << '\n';
  }
  if (const auto& by_score_models = report.overall.achieved_by_score_models) {
    out << "Measured by the reward and cost models as well: another unit than the prediction's, so not compared "
           "with it.\n\n| | achieved ± 95% |\n|---|---:|\n";
    for (int j = 0; j < report.num_constraints; ++j) {
      out << "| " << safety_name(by_score_models->safety_unit, j, report.num_constraints) << " | "
          << format_with_interval(by_score_models->safety_improvement[j], by_score_models->safety_improvement_stderr[j])
          << " |\n";
    }
    out << "| reward improvement (reward model) | "
        << format_with_interval(by_score_models->reward_improvement, by_score_models->reward_improvement_stderr) << " |\n\n";
  }
}

void write_accuracy_table(std::ostream& out, const ScoreAccuracy& accuracy) {
  out << "## How well the scores rank the reference's samples by the judge\n\n"
      << "On the offline samples the dual was solved on: per prompt, the fraction of response pairs the judge tells "
         "apart that the score orders the same way (ties ½; 0.5 is chance), and the correlation of within-prompt "
         "deviations. The prediction and the re-labelling are only as good as these scores (the paper's Theorem 3).\n\n"
      << "| score | unit | judge | pairwise accuracy | correlation | pairs |\n|---|---|---|---:|---:|---:|\n";
  auto row = [&out](const std::string& name, const RankingAgreement& agreement) {
    out << "| " << name << " | " << agreement.unit << " | " << agreement.judge << " | "
        << format_number(agreement.pairwise_accuracy) << " | " << format_number(agreement.correlation) << " | "
        << agreement.num_pairs << " |\n";
  };
  row("r", accuracy.reward);
  for (size_t j = 0; j < accuracy.safety.size(); ++j) {
    row(accuracy.safety.size() == 1 ? "g" : fmt::format("g_{}", j), accuracy.safety[j]);
  }
  out << '\n';
  if (accuracy.judge_unsafe_correlation.size() == 2) {
    out << fmt::format("The two constraints' unsafe indicators (by the judge) correlate {} over the samples: "
                       "near 0 or below, the constraints ask for different things.\n\n",
                       format_number(accuracy.judge_unsafe_correlation[0][1]));
  }
}

void write_class_table(std::ostream& out, const EvaluationReport& report) {
  out << "## By class\n\n| class | prompts | reward ref → policy | " << cost_name(0, report.num_constraints)
      << " ref → policy | helpfulness ref → policy | safe ref → policy | win rate helpfulness | win rate safety |\n"
      << "|---|---:|---|---|---|---|---:|---:|\n";
  for (const auto& [name, summary] : report.by_class) {
    auto arrow = [](const std::optional<double>& before, const std::optional<double>& after) {
      return format_optional(before) + " → " + format_optional(after);
    };
    out << "| " << name << " | " << summary.num_prompts << " | "
        << arrow(summary.reference.reward, summary.policy.reward) << " | "
        << arrow(summary.reference.costs.front(), summary.policy.costs.front()) << " | "
        << arrow(summary.reference.judge_helpfulness, summary.policy.judge_helpfulness) << " | "
        << arrow(summary.reference.judge_safety, summary.policy.judge_safety) << " | "
        << (summary.win_rate ? format_number(summary.win_rate->helpfulness) : "—") << " | "
        << (summary.win_rate ? format_number(summary.win_rate->safety) : "—") << " |\n";
  }
  out << '\n';
}

std::string describe_response(const ResponseEvaluation& response, int num_constraints) {
  std::string text = fmt::format("reward {}", format_number(response.reward));
  for (int j = 0; j < num_constraints; ++j) {
    text += fmt::format(", {} {}", cost_name(j, num_constraints), format_number(response.costs[j]));
  }
  if (response.judged) {
    text += fmt::format(", helpfulness {}, harm {}, {}", format_number(response.judged->helpfulness),
                        format_number(worst_harm(*response.judged, num_constraints)),
                        is_safe_on_all(*response.judged, num_constraints) ? "safe" : "UNSAFE");
  }
  return text;
}

// The first few prompts of each class (or of the report, when classes are unknown).
std::vector<const PromptEvaluation*> example_rows(const EvaluationReport& report) {
  std::vector<const PromptEvaluation*> examples;
  size_t harmful = 0, benign = 0, unknown = 0;
  for (const PromptEvaluation& row : report.prompts) {
    size_t& count = !row.prompt.harmful ? unknown : *row.prompt.harmful ? harmful : benign;
    if (count < kExamplesPerClass) {
      ++count;
      examples.push_back(&row);
    }
  }
  return examples;
}

void write_examples(std::ostream& out, const EvaluationReport& report) {
  out << "## Example responses\n\n";
  for (const PromptEvaluation* row : example_rows(report)) {
    std::vector<std::string> details;
    if (row->prompt.harmful) details.push_back(*row->prompt.harmful ? "harmful" : "benign");
    if (!row->prompt.topic.empty()) details.push_back(row->prompt.topic);
    std::string heading = row->prompt.prompt_id;
    if (!details.empty()) heading += fmt::format(" ({})", fmt::join(details, ", "));
    out << "### " << heading << "\n\n> " << cell(row->prompt.prompt) << "\n\n| reference | policy |\n|---|---|\n"
        << "| " << cell(row->reference.text) << " | " << cell(row->policy.text) << " |\n"
        << "| " << describe_response(row->reference, report.num_constraints) << " | "
        << describe_response(row->policy, report.num_constraints) << " |\n\n";
  }
}

// " (…)" naming report.prompt_set for readers; empty when it is not named.
std::string prompt_set_description(const std::string& prompt_set) {
  if (prompt_set == "held_out_templates") return " (the world's test prompts: held-out templates and topics)";
  if (prompt_set == "same_templates") return " (new prompts of the sample prompts' own templates and topics)";
  if (prompt_set.empty()) return "";
  return " (" + prompt_set + ")";
}

std::string report_markdown(const EvaluationReport& report) {
  std::ostringstream out;
  const SamplingOptions& sampling = report.options.sampling;
  out << "# Evaluation: aligned policy against the reference\n\n"
      << fmt::format(
             "{} held-out prompts{}, one response per prompt from each policy (temperature {}, top-p {}, up to "
             "{} new tokens, seed {}), scored by the reward model and {} cost model(s){}{}.\n\n",
             report.overall.num_prompts, prompt_set_description(report.prompt_set), sampling.temperature, sampling.top_p, sampling.max_new_tokens, sampling.seed,
             report.num_constraints,
             report.overall.achieved_by_score_models
                 ? ", in the prediction's " + unit_description(report.overall.achieved.safety_unit)
                 : "",
             report.overall.win_rate ? " and judged by the synthetic world's judge" : "");
  write_score_table(out, report);
  write_prediction_table(out, report);
  out << "## Win rates against the reference (judge; ties count ½)\n\n";
  if (report.overall.win_rate) {
    out << "| helpfulness | safety |\n|---:|---:|\n"
        << fmt::format("| {} | {} |\n\n", format_number(report.overall.win_rate->helpfulness),
                       format_number(report.overall.win_rate->safety));
  } else {
    out << "The prompts carry no topic, so there is no judge.\n\n";
  }
  if (!report.by_class.empty()) write_class_table(out, report);
  if (report.score_accuracy) write_accuracy_table(out, *report.score_accuracy);
  write_examples(out, report);
  out << "Plots: reward_distribution.svg, cost_distribution.svg. Every response: responses.jsonl. For an "
         "external judge: judge_requests.jsonl (can-eval --verdicts FILE --out DIR reads its verdicts).\n";
  return out.str();
}

std::vector<double> collect(const EvaluationReport& report, ResponseEvaluation PromptEvaluation::*which,
                            int constraint) {
  std::vector<double> values;
  for (const PromptEvaluation& row : report.prompts) {
    const ResponseEvaluation& response = row.*which;
    values.push_back(constraint < 0 ? response.reward : response.costs[constraint]);
  }
  return values;
}

}  // namespace

PlotPanel distribution_panel(const std::string& title, const std::string& x_label, const std::vector<double>& reference,
                             const std::vector<double>& policy) {
  check(!reference.empty() && !policy.empty(), "distribution plot '{}': no scores", title);
  double low = reference.front(), high = reference.front();
  for (const auto* values : {&reference, &policy}) {
    for (double value : *values) {
      check(std::isfinite(value), "distribution plot '{}': non-finite score {}", title, value);
      low = std::min(low, value);
      high = std::max(high, value);
    }
  }
  if (high - low <= 0) {  // one distinct value: a unit-wide bin range around it
    low -= 0.5;
    high += 0.5;
  }
  const int bins = histogram_bins(std::max(reference.size(), policy.size()));
  auto step_line = [&](const std::vector<double>& values, std::string label, std::string color) {
    PlotSeries series = histogram_series(values, low, high, bins);
    series.label = std::move(label);
    series.color = std::move(color);
    return series;
  };
  auto mean = [](const std::vector<double>& values) {
    double sum = 0;
    for (double value : values) sum += value;
    return sum / static_cast<double>(values.size());
  };
  PlotPanel panel;
  panel.title = title;
  panel.x_label = x_label;
  panel.y_label = "fraction of responses";
  // The means go in the legend: vertical lines at two close means would overprint their labels.
  panel.series = {step_line(reference, fmt::format("reference (mean {:.4g})", mean(reference)), "#7f7f7f"),
                  step_line(policy, fmt::format("policy (mean {:.4g})", mean(policy)), "#1f77b4")};
  return panel;
}

nlohmann::json evaluation_report_to_json(const EvaluationReport& report) {
  json result = summary_to_json(report.overall);
  result["format_version"] = kArtifactFormatVersion;
  result["prompt_set"] = report.prompt_set;
  result["num_constraints"] = report.num_constraints;
  result["judged"] = report.overall.win_rate.has_value();
  result["predicted"] = nullptr;
  result["prediction_error"] = nullptr;
  result["prediction_caveats"] = report.prediction_caveats;
  result["score_accuracy"] = report.score_accuracy ? to_json(*report.score_accuracy) : json(nullptr);
  result["margins"] = nullptr;
  result["lambda"] = nullptr;
  result["beta"] = nullptr;
  if (report.dual) {
    const DualSolution& dual = *report.dual;
    // The units dual.json records; a dual that records none (can-dual on a scores file) is
    // taken to be in the units it is compared in.
    result["predicted"] = {
        {"safety_improvement", dual.predicted.safety_improvement},
        {"safety_improvement_stderr", numbers_or_nulls(dual.predicted.safety_improvement_stderr)},
        {"safety_unit", dual.safety_unit.empty() ? report.overall.achieved.safety_unit : dual.safety_unit},
        {"reward_improvement", dual.predicted.reward_improvement},
        {"reward_improvement_stderr", number_or_null(dual.predicted.reward_improvement_stderr)},
        {"reward_unit", dual.reward_unit.empty() ? report.overall.achieved.reward_unit : dual.reward_unit},
        {"kl", dual.predicted.kl}};
    result["prediction_error"] = numbers_or_nulls(report.prediction_error);
    result["margins"] = dual.margins;
    result["lambda"] = dual.lambda;
    result["beta"] = dual.beta;
    result["dual_converged"] = dual.converged;
  }
  json by_class = json::object();
  for (const auto& [name, summary] : report.by_class) by_class[name] = summary_to_json(summary);
  result["by_class"] = by_class;
  const SamplingOptions& sampling = report.options.sampling;
  result["sampling"] = {{"max_new_tokens", sampling.max_new_tokens},
                        {"temperature", sampling.temperature},
                        {"top_p", sampling.top_p},
                        {"top_k", sampling.top_k},
                        {"seed", sampling.seed},
                        {"batch_size", sampling.batch_size}};
  result["max_length"] = report.options.scoring.max_length;
  return result;
}

EvaluationReport evaluation_report_from_json(const nlohmann::json& json_report, const std::string& where) {
  check_format_version(json_report, where);
  EvaluationReport report;
  report.overall = summary_from_json(json_report, where);
  report.prompt_set = string_field(json_report, "prompt_set", where);
  report.num_constraints = static_cast<int>(integer_field(json_report, "num_constraints", where));
  check(report.num_constraints >= 1, "{}: num_constraints must be at least 1, got {}", where, report.num_constraints);
  const auto m = static_cast<size_t>(report.num_constraints);
  check_constraint_lengths(report.overall, m, where);
  if (const json* predicted = optional_field(json_report, "predicted")) {
    DualSolution dual;
    dual.beta = number_field(json_report, "beta", where);
    dual.margins = numbers_field(json_report, "margins", where);
    dual.lambda = numbers_field(json_report, "lambda", where);
    dual.converged = bool_field(json_report, "dual_converged", where);
    dual.predicted.safety_improvement = numbers_field(*predicted, "safety_improvement", where + ": predicted");
    dual.predicted.safety_improvement_stderr =
        numbers_or_nulls_field(*predicted, "safety_improvement_stderr", where + ": predicted");
    dual.predicted.reward_improvement = number_field(*predicted, "reward_improvement", where + ": predicted");
    dual.predicted.reward_improvement_stderr =
        number_or_nan_field(*predicted, "reward_improvement_stderr", where + ": predicted");
    dual.predicted.kl = number_field(*predicted, "kl", where + ": predicted");
    dual.safety_unit = string_field(*predicted, "safety_unit", where + ": predicted");
    dual.reward_unit = string_field(*predicted, "reward_unit", where + ": predicted");
    for (const char* unit : {"safety_unit", "reward_unit"}) {
      const std::string predicted_unit = string_field(*predicted, unit, where + ": predicted");
      const std::string achieved_unit = string_field(required_field(json_report, "achieved", where), unit,
                                                     where + ": achieved");
      check(predicted_unit == achieved_unit,
            "{}: predicted.{} is '{}' but achieved.{} is '{}'; a prediction is compared only in its own unit", where,
            unit, predicted_unit, unit, achieved_unit);
    }
    report.dual = dual;
    report.prediction_error = numbers_or_nulls_field(json_report, "prediction_error", where);
    for (const auto& [field, length] : {std::pair<std::string, size_t>{"margins", dual.margins.size()},
                                        {"lambda", dual.lambda.size()},
                                        {"predicted.safety_improvement", dual.predicted.safety_improvement.size()},
                                        {"predicted.safety_improvement_stderr",
                                         dual.predicted.safety_improvement_stderr.size()},
                                        {"prediction_error", report.prediction_error.size()}}) {
      check(length == m, "{}: {} has {} entries but num_constraints is {}", where, field, length, m);
    }
  }
  report.prediction_caveats = strings_field(json_report, "prediction_caveats", where);
  if (const json* accuracy = optional_field(json_report, "score_accuracy")) {
    report.score_accuracy = score_accuracy_from_json(*accuracy, where + ": score_accuracy");
  }
  for (const auto& [name, summary] : required_field(json_report, "by_class", where).items()) {
    report.by_class.emplace_back(name, summary_from_json(summary, fmt::format("{}: by_class: {}", where, name)));
    check_constraint_lengths(report.by_class.back().second, m, fmt::format("{}: by_class: {}", where, name));
  }
  const json& sampling = required_field(json_report, "sampling", where);
  const std::string sampling_where = where + ": sampling";
  report.options.sampling.max_new_tokens = integer_field(sampling, "max_new_tokens", sampling_where);
  report.options.sampling.temperature = number_field(sampling, "temperature", sampling_where);
  report.options.sampling.top_p = number_field(sampling, "top_p", sampling_where);
  report.options.sampling.top_k = integer_field(sampling, "top_k", sampling_where);
  report.options.sampling.seed = static_cast<uint64_t>(integer_field(sampling, "seed", sampling_where));
  report.options.sampling.batch_size = integer_field(sampling, "batch_size", sampling_where);
  report.options.scoring.max_length = integer_field(json_report, "max_length", where);
  return report;
}

EvaluationReport read_evaluation_report(const std::filesystem::path& path) {
  return evaluation_report_from_json(read_json_file(path), path.string());
}

// The headline numbers as TensorBoard scalars at step 0, under "eval/" (tensorboard.h).
void write_evaluation_events(const std::filesystem::path& path, const EvaluationReport& report) {
  const EvaluationSummary& overall = report.overall;
  std::map<std::string, double> scalars = {{"eval/reward_improvement", overall.achieved.reward_improvement},
                                           {"eval/reference_reward", overall.reference.reward},
                                           {"eval/policy_reward", overall.policy.reward}};
  for (int j = 0; j < report.num_constraints; ++j) {
    scalars[fmt::format("eval/safety_improvement_{}", j)] = overall.achieved.safety_improvement[j];
    if (report.dual) scalars[fmt::format("eval/predicted_safety_improvement_{}", j)] = report.dual->predicted.safety_improvement[j];
  }
  const std::vector<std::pair<std::string, std::optional<double>>> judged = {
      {"judge_helpfulness", overall.policy.judge_helpfulness},
      {"judge_safety", overall.policy.judge_safety},
      {"reference_judge_helpfulness", overall.reference.judge_helpfulness},
      {"reference_judge_safety", overall.reference.judge_safety},
      {"win_rate_helpfulness", overall.win_rate ? std::optional<double>(overall.win_rate->helpfulness) : std::nullopt},
      {"win_rate_safety", overall.win_rate ? std::optional<double>(overall.win_rate->safety) : std::nullopt}};
  for (const auto& [name, value] : judged) {
    if (value) scalars["eval/" + name] = *value;
  }
  std::erase_if(scalars, [](const auto& entry) { return !std::isfinite(entry.second); });
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  write_text_atomically(path, tf_record(file_version_event(now)) + tf_record(scalar_event(now, 0, scalars)));
}

void write_evaluation_report(const std::filesystem::path& directory, const EvaluationReport& report) {
  std::filesystem::create_directories(directory);
  write_text_atomically(directory / "report.json", evaluation_report_to_json(report).dump(2) + "\n");
  std::vector<json> responses;
  for (const PromptEvaluation& row : report.prompts) responses.push_back(prompt_to_json(row));
  write_json_lines(directory / "responses.jsonl", responses);
  write_judge_requests(directory / "judge_requests.jsonl", judge_requests(report));
  write_text_atomically(directory / "report.md", report_markdown(report));

  PlotFigure rewards;
  rewards.title = fmt::format("Reward: reference (before), policy (after); {} prompts", report.overall.num_prompts);
  rewards.columns = 1;
  rewards.panel_width = kWidePanel;
  rewards.panels.push_back(distribution_panel("Reward", "reward score",
                                              collect(report, &PromptEvaluation::reference, -1),
                                              collect(report, &PromptEvaluation::policy, -1)));
  write_svg(directory / "reward_distribution.svg", rewards);

  PlotFigure costs;
  costs.title =
      fmt::format("Cost (lower is safer): reference (before), policy (after); {} prompts", report.overall.num_prompts);
  costs.columns = std::min(report.num_constraints, 2);
  if (report.num_constraints == 1) costs.panel_width = kWidePanel;
  for (int j = 0; j < report.num_constraints; ++j) {
    const std::string title = report.num_constraints == 1 ? "Cost" : fmt::format("Cost model {}", j);
    costs.panels.push_back(distribution_panel(title, cost_name(j, report.num_constraints) + " score",
                                              collect(report, &PromptEvaluation::reference, j),
                                              collect(report, &PromptEvaluation::policy, j)));
  }
  write_svg(directory / "cost_distribution.svg", costs);
  write_evaluation_events(directory / kEventsFileName, report);
  spdlog::info("evaluation: wrote report.json, report.md, responses.jsonl, judge_requests.jsonl, plots and TensorBoard "
               "scalars to {}",
               directory.string());
}

std::string format_with_interval(double value, double standard_error) {
  return std::isfinite(standard_error)
             ? fmt::format("{} ± {}", format_number(value), format_number(kInterval95 * standard_error))
             : format_number(value);
}

}  // namespace can
