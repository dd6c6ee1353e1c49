#include "can/primal_dual.h"

#include <algorithm>

#include "can/atomic_file.h"
#include "can/error.h"
#include "can/json_fields.h"

namespace can {

ScoreMeans score_means(const OfflineScores& scores) {
  const int m = scores.num_constraints();
  ScoreMeans means;
  means.safety.assign(static_cast<size_t>(m), 0.0);
  const auto& offsets = scores.offsets();
  for (int64_t i = 0; i < scores.num_prompts(); ++i) {
    const double n = static_cast<double>(scores.num_responses(i));
    double reward = 0;
    std::vector<double> safety(static_cast<size_t>(m), 0.0);
    for (int64_t row = offsets[i]; row < offsets[i + 1]; ++row) {
      reward += scores.rewards()[row];
      for (int j = 0; j < m; ++j) safety[j] += scores.safety()[row * m + j];
    }
    means.reward += reward / n;
    for (int j = 0; j < m; ++j) means.safety[j] += safety[j] / n;
  }
  const double prompts = static_cast<double>(scores.num_prompts());
  means.reward /= prompts;
  for (double& safety : means.safety) safety /= prompts;
  return means;
}

std::vector<double> dual_step(const std::vector<double>& lambda, const std::vector<double>& constraint_values,
                              double step_size) {
  check(lambda.size() == constraint_values.size(), "dual step: {} multipliers for {} constraint values",
        lambda.size(), constraint_values.size());
  std::vector<double> next(lambda.size());
  for (size_t j = 0; j < lambda.size(); ++j) {
    next[j] = std::max(0.0, lambda[j] - step_size * constraint_values[j]);
  }
  return next;
}

void take_dual_step(PrimalDualRound& round, double step_size) {
  const size_t m = round.margins.size();
  check(round.policy.safety.size() == m && round.reference.safety.size() == m && round.lambda_before.size() == m,
        "primal-dual round {}: the scores, margins and multipliers disagree on the number of constraints",
        round.round);
  round.constraint_values.resize(m);
  for (size_t j = 0; j < m; ++j) {
    round.constraint_values[j] = round.policy.safety[j] - round.reference.safety[j] - round.margins[j];
  }
  round.lambda_after = dual_step(round.lambda_before, round.constraint_values, step_size);
}

namespace {

nlohmann::json means_to_json(const ScoreMeans& means) {
  return {{"reward", means.reward}, {"safety", means.safety}};
}

ScoreMeans means_from_json(const nlohmann::json& object, const std::string& field, const std::string& where) {
  const std::string inside = where + ": " + field;
  const nlohmann::json& value = required_field(object, field, where);
  return {number_field(value, "reward", inside), numbers_field(value, "safety", inside)};
}

}  // namespace

void write_primal_dual_round(const std::filesystem::path& path, const PrimalDualRound& round) {
  const nlohmann::json json = {{"format_version", kArtifactFormatVersion},
                               {"round", round.round},
                               {"lambda_before", round.lambda_before},
                               {"lambda_after", round.lambda_after},
                               {"margins", round.margins},
                               {"policy", means_to_json(round.policy)},
                               {"reference", means_to_json(round.reference)},
                               {"constraint_values", round.constraint_values},
                               {"samples", round.samples}};
  write_text_atomically(path, json.dump(2) + "\n");
}

PrimalDualRound read_primal_dual_round(const std::filesystem::path& path) {
  const nlohmann::json json = read_json_file(path);
  const std::string where = path.string();
  check_format_version(json, where);
  PrimalDualRound round;
  round.round = integer_field(json, "round", where);
  round.lambda_before = numbers_field(json, "lambda_before", where);
  round.lambda_after = numbers_field(json, "lambda_after", where);
  round.margins = numbers_field(json, "margins", where);
  round.policy = means_from_json(json, "policy", where);
  round.reference = means_from_json(json, "reference", where);
  round.constraint_values = numbers_field(json, "constraint_values", where);
  round.samples = integer_field(json, "samples", where);
  const size_t m = round.margins.size();
  check(round.lambda_before.size() == m && round.lambda_after.size() == m && round.policy.safety.size() == m &&
            round.reference.safety.size() == m && round.constraint_values.size() == m,
        "{}: the lists of multipliers, scores and constraint values must each have one entry per margin ({})", where,
        m);
  return round;
}

}  // namespace can
