#include "can/score_accuracy.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "can/atomic_file.h"
#include "can/error.h"
#include "can/json_fields.h"

namespace can {

namespace {

using nlohmann::json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double mean(const std::vector<double>& values) {
  double sum = 0;
  for (double value : values) sum += value;
  return sum / static_cast<double>(values.size());
}

json agreement_to_json(const RankingAgreement& agreement) {
  return {{"unit", agreement.unit},
          {"judge", agreement.judge},
          {"pairwise_accuracy", number_or_null(agreement.pairwise_accuracy)},
          {"correlation", number_or_null(agreement.correlation)},
          {"num_pairs", agreement.num_pairs},
          {"num_prompts", agreement.num_prompts}};
}

RankingAgreement agreement_from_json(const json& object, const std::string& where) {
  RankingAgreement agreement;
  agreement.unit = string_field(object, "unit", where);
  agreement.judge = string_field(object, "judge", where);
  agreement.pairwise_accuracy = number_or_nan_field(object, "pairwise_accuracy", where);
  agreement.correlation = number_or_nan_field(object, "correlation", where);
  agreement.num_pairs = integer_field(object, "num_pairs", where);
  agreement.num_prompts = integer_field(object, "num_prompts", where);
  return agreement;
}

// Pearson correlation of two equally long series; NaN when either has no spread.
double pearson_correlation(const std::vector<double>& x, const std::vector<double>& y) {
  const double x_mean = mean(x), y_mean = mean(y);
  double cross = 0, x_squares = 0, y_squares = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    cross += (x[i] - x_mean) * (y[i] - y_mean);
    x_squares += (x[i] - x_mean) * (x[i] - x_mean);
    y_squares += (y[i] - y_mean) * (y[i] - y_mean);
  }
  return x_squares > 0 && y_squares > 0 ? cross / std::sqrt(x_squares * y_squares) : kNaN;
}

}  // namespace

RankingAgreement ranking_agreement(const std::vector<std::vector<double>>& scores,
                                   const std::vector<std::vector<double>>& truth) {
  check(scores.size() == truth.size(), "ranking agreement: {} prompts of scores but {} of judge values", scores.size(),
        truth.size());
  RankingAgreement agreement;
  double accuracy_sum = 0;
  double cross = 0, score_squares = 0, truth_squares = 0;  // sums over within-prompt deviations
  for (size_t i = 0; i < scores.size(); ++i) {
    const std::vector<double>& s = scores[i];
    const std::vector<double>& t = truth[i];
    check(s.size() == t.size(), "ranking agreement: prompt {} has {} scores but {} judge values", i, s.size(),
          t.size());
    if (s.empty()) continue;
    double correct = 0;
    int64_t pairs = 0;
    for (size_t k = 0; k < s.size(); ++k) {
      for (size_t l = k + 1; l < s.size(); ++l) {
        if (t[k] == t[l]) continue;
        ++pairs;
        const double agree = (s[k] - s[l]) * (t[k] - t[l]);
        correct += agree > 0 ? 1.0 : agree == 0 ? 0.5 : 0.0;
      }
    }
    if (pairs > 0) {
      accuracy_sum += correct / static_cast<double>(pairs);
      agreement.num_pairs += pairs;
      ++agreement.num_prompts;
    }
    const double score_mean = mean(s), truth_mean = mean(t);
    for (size_t k = 0; k < s.size(); ++k) {
      cross += (s[k] - score_mean) * (t[k] - truth_mean);
      score_squares += (s[k] - score_mean) * (s[k] - score_mean);
      truth_squares += (t[k] - truth_mean) * (t[k] - truth_mean);
    }
  }
  agreement.pairwise_accuracy =
      agreement.num_prompts > 0 ? accuracy_sum / static_cast<double>(agreement.num_prompts) : kNaN;
  agreement.correlation =
      score_squares > 0 && truth_squares > 0 ? cross / std::sqrt(score_squares * truth_squares) : kNaN;
  return agreement;
}

nlohmann::json to_json(const ScoreAccuracy& accuracy) {
  json safety = json::array(), correlation = json::array();
  for (const RankingAgreement& agreement : accuracy.safety) safety.push_back(agreement_to_json(agreement));
  for (const auto& row : accuracy.judge_unsafe_correlation) correlation.push_back(numbers_or_nulls(row));
  return {{"reward", agreement_to_json(accuracy.reward)}, {"safety", safety}, {"judge_unsafe_correlation", correlation}};
}

ScoreAccuracy score_accuracy_from_json(const nlohmann::json& object, const std::string& where) {
  ScoreAccuracy accuracy;
  accuracy.reward = agreement_from_json(required_field(object, "reward", where), where + ": reward");
  const json& safety = required_field(object, "safety", where);
  check(safety.is_array(), "{}: 'safety' must be an array, got {}", where, safety.type_name());
  for (size_t j = 0; j < safety.size(); ++j) {
    accuracy.safety.push_back(agreement_from_json(safety[j], fmt::format("{}: safety[{}]", where, j)));
  }
  if (!object.contains("judge_unsafe_correlation")) return accuracy;
  const json& correlation = object["judge_unsafe_correlation"];
  check(correlation.is_array() && correlation.size() == safety.size(),
        "{}: 'judge_unsafe_correlation' must be an array of {} rows", where, safety.size());
  for (size_t j = 0; j < correlation.size(); ++j) {
    const std::string row = fmt::format("{}: judge_unsafe_correlation[{}]", where, j);
    check(correlation[j].is_array() && correlation[j].size() == safety.size(), "{} must be an array of {} numbers",
          row, safety.size());
    auto& values = accuracy.judge_unsafe_correlation.emplace_back();
    for (const json& value : correlation[j]) {
      check(value.is_null() || value.is_number(), "{}: expected a number or null, got {}", row, value.dump());
      values.push_back(value.is_null() ? kNaN : value.get<double>());
    }
  }
  return accuracy;
}

ScoreAccuracy judge_agreement(const OfflineScores& scores, const std::vector<std::vector<JudgeVerdict>>& verdicts,
                              const std::string& reward_unit, const std::string& safety_unit) {
  check(static_cast<int64_t>(verdicts.size()) == scores.num_prompts(),
        "judge agreement: {} prompts of verdicts for {} prompts of scores", verdicts.size(), scores.num_prompts());
  const int m = scores.num_constraints();
  check(m <= static_cast<int>(kNumHarmKinds), "judge agreement: {} constraints, but the judge scores {} kinds of harm",
        m, kNumHarmKinds);
  std::vector<std::vector<double>> reward, helpfulness;            // [M][N_i]
  std::vector<std::vector<std::vector<double>>> safety(m), safer(m);  // [m][M][N_i]; safer = −harm of kind j
  std::vector<std::vector<double>> unsafe(m);                         // [m][every sample] 1 when unsafe on kind j
  for (int64_t i = 0; i < scores.num_prompts(); ++i) {
    check(static_cast<int64_t>(verdicts[i].size()) == scores.num_responses(i),
          "judge agreement: prompt {} has {} verdicts for {} responses", scores.prompt_id(i), verdicts[i].size(),
          scores.num_responses(i));
    reward.emplace_back();
    helpfulness.emplace_back();
    for (int j = 0; j < m; ++j) {
      safety[j].emplace_back();
      safer[j].emplace_back();
    }
    for (int64_t k = 0; k < scores.num_responses(i); ++k) {
      const int64_t row = scores.offsets()[i] + k;
      reward.back().push_back(scores.rewards()[row]);
      helpfulness.back().push_back(verdicts[i][k].helpfulness);
      for (int j = 0; j < m; ++j) {
        safety[j].back().push_back(scores.safety()[row * m + j]);
        safer[j].back().push_back(-verdicts[i][k].harm[j]);
        unsafe[j].push_back(verdicts[i][k].is_safe[j] ? 0.0 : 1.0);
      }
    }
  }
  ScoreAccuracy accuracy;
  accuracy.reward = ranking_agreement(reward, helpfulness);
  accuracy.reward.unit = reward_unit;
  accuracy.reward.judge = "helpfulness";
  for (int j = 0; j < m; ++j) {
    RankingAgreement& agreement = accuracy.safety.emplace_back(ranking_agreement(safety[j], safer[j]));
    agreement.unit = safety_unit;
    agreement.judge = fmt::format("{} harm (lower is safer)", harm_kind_name(static_cast<HarmKind>(j)));
  }
  for (int j = 0; j < m; ++j) {
    auto& row = accuracy.judge_unsafe_correlation.emplace_back();
    for (int l = 0; l < m; ++l) row.push_back(pearson_correlation(unsafe[j], unsafe[l]));
  }
  return accuracy;
}

void write_score_accuracy(const std::filesystem::path& path, const ScoreAccuracy& accuracy) {
  json written = to_json(accuracy);
  written["format_version"] = kArtifactFormatVersion;
  write_text_atomically(path, written.dump(2) + "\n");
}

ScoreAccuracy read_score_accuracy(const std::filesystem::path& path) {
  const json read = read_json_file(path);
  check_format_version(read, path.string());
  return score_accuracy_from_json(read, path.string());
}

}  // namespace can
