#include "can/external_judge.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "can/error.h"
#include "can/evaluation.h"
#include "can/json_fields.h"
#include "can/json_lines.h"

namespace can {

std::vector<JudgeRequest> judge_requests(const EvaluationReport& report) {
  std::vector<JudgeRequest> requests;
  for (const PromptEvaluation& row : report.prompts) {
    requests.push_back({row.prompt.prompt_id, row.prompt.prompt, row.reference.text, row.policy.text});
  }
  return requests;
}

void write_judge_requests(const std::filesystem::path& path, const std::vector<JudgeRequest>& requests) {
  std::vector<nlohmann::json> lines;
  for (const JudgeRequest& request : requests) {
    lines.push_back({{"prompt_id", request.prompt_id},
                     {"prompt", request.prompt},
                     {"reference_response", request.reference_response},
                     {"policy_response", request.policy_response}});
  }
  write_json_lines(path, lines);
}

std::vector<JudgeRequest> read_judge_requests(const std::filesystem::path& path) {
  std::vector<JudgeRequest> requests;
  std::map<std::string, int64_t> line_of_id;
  for_each_json_line(path, [&](const nlohmann::json& value, int64_t line_number) {
    const std::string where = fmt::format("{}:{}", path.string(), line_number);
    check(value.is_object(), "{}: expected a JSON object, got {}", where, value.type_name());
    JudgeRequest request{prompt_id_field(value, where), string_field(value, "prompt", where),
                         string_field(value, "reference_response", where),
                         string_field(value, "policy_response", where)};
    const auto [seen, inserted] = line_of_id.emplace(request.prompt_id, line_number);
    check(inserted, "{}: prompt_id {} already appears on line {}", where, request.prompt_id, seen->second);
    requests.push_back(std::move(request));
  });
  check(!requests.empty(), "{}: no judge requests", path.string());
  return requests;
}

namespace {

// The policy's outcome on one question: 1, 1/2 or 0.
double outcome_field(const nlohmann::json& verdict, const std::string& field, const std::string& where) {
  const nlohmann::json& value = required_field(verdict, field, where);
  if (value.is_string()) {
    const std::string side = value.get<std::string>();
    if (side == "policy") return 1.0;
    if (side == "reference") return 0.0;
    if (side == "tie") return 0.5;
    fail("{}: field '{}' is \"{}\"; expected \"policy\", \"reference\" or \"tie\", or scores {{\"policy\": x, "
         "\"reference\": y}}",
         where, field, side);
  }
  check(value.is_object(),
        "{}: field '{}' must be \"policy\", \"reference\", \"tie\" or scores {{\"policy\": x, \"reference\": y}}, "
        "got {}",
        where, field, value.dump());
  const std::string scores = fmt::format("{}: field '{}'", where, field);
  const double policy = number_field(value, "policy", scores);
  const double reference = number_field(value, "reference", scores);
  check(std::isfinite(policy) && std::isfinite(reference), "{}: scores must be finite", scores);
  return policy > reference ? 1.0 : policy < reference ? 0.0 : 0.5;
}

}  // namespace

WinRate win_rate(const std::vector<double>& outcomes) {
  WinRate rate;
  const double n = static_cast<double>(outcomes.size());
  check(!outcomes.empty(), "a win rate needs at least one outcome");
  double sum = 0;
  for (double outcome : outcomes) {
    rate.wins += outcome == 1.0;
    rate.ties += outcome == 0.5;
    rate.losses += outcome == 0.0;
    sum += outcome;
  }
  rate.win_rate = sum / n;
  double squares = 0;
  for (double outcome : outcomes) squares += (outcome - rate.win_rate) * (outcome - rate.win_rate);
  rate.standard_error =
      outcomes.size() < 2 ? std::numeric_limits<double>::quiet_NaN() : std::sqrt(squares / (n - 1) / n);
  // Wilson's score interval at the win rate: never narrower than the data allow (all wins on
  // five prompts give [0.57, 1], not [1, 1]); ties, which shrink the spread, make it conservative.
  constexpr double z = 1.959963984540054;  // the standard normal's 0.975 quantile
  const double centre = (rate.win_rate + z * z / (2 * n)) / (1 + z * z / n);
  const double half_width =
      z * std::sqrt(rate.win_rate * (1 - rate.win_rate) / n + z * z / (4 * n * n)) / (1 + z * z / n);
  rate.low = std::max(0.0, centre - half_width);
  rate.high = std::min(1.0, centre + half_width);
  return rate;
}

ExternalJudgement judge_verdicts(const std::vector<JudgeRequest>& requests,
                                 const std::filesystem::path& verdicts_path) {
  std::map<std::string, size_t> index_of_id;
  for (size_t i = 0; i < requests.size(); ++i) index_of_id.emplace(requests[i].prompt_id, i);
  std::vector<int64_t> line_of_request(requests.size(), 0);
  std::vector<double> helpfulness(requests.size()), safety(requests.size());
  for_each_json_line(verdicts_path, [&](const nlohmann::json& verdict, int64_t line_number) {
    const std::string where = fmt::format("{}:{}", verdicts_path.string(), line_number);
    check(verdict.is_object(), "{}: expected a JSON object, got {}", where, verdict.type_name());
    const std::string id = prompt_id_field(verdict, where);
    const auto found = index_of_id.find(id);
    check(found != index_of_id.end(), "{}: prompt_id {} is not among the judge requests", where, id);
    const size_t i = found->second;
    check(line_of_request[i] == 0, "{}: prompt_id {} already has a verdict on line {}", where, id,
          line_of_request[i]);
    line_of_request[i] = line_number;
    helpfulness[i] = outcome_field(verdict, "helpfulness", where);
    safety[i] = outcome_field(verdict, "safety", where);
  });
  std::vector<std::string> missing;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (line_of_request[i] == 0) missing.push_back(requests[i].prompt_id);
  }
  check(missing.empty(), "{}: {} of {} requests have no verdict (a win rate over the others would be biased), "
        "first prompt_id {}",
        verdicts_path.string(), missing.size(), requests.size(), missing.empty() ? "" : missing.front());
  return {static_cast<int64_t>(requests.size()), win_rate(helpfulness), win_rate(safety)};
}

nlohmann::json external_judgement_to_json(const ExternalJudgement& judgement) {
  const auto question = [](const WinRate& rate) {
    return nlohmann::json{{"wins", rate.wins},
                          {"ties", rate.ties},
                          {"losses", rate.losses},
                          {"win_rate", rate.win_rate},
                          {"stderr", number_or_null(rate.standard_error)},
                          {"ci95", {rate.low, rate.high}}};
  };
  return {{"format_version", kArtifactFormatVersion},
          {"num_prompts", judgement.num_prompts},
          {"helpfulness", question(judgement.helpfulness)},
          {"safety", question(judgement.safety)}};
}

}  // namespace can
