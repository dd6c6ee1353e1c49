// How well the scores that drive the dual and the re-labelling agree with the ground
// truth (Theorem 3's condition: the prediction is only as good as r and g). On the
// reference's offline samples, per prompt, the scores are set against the synthetic
// world's judge: r against judge helpfulness, g against judge harm (lower is safer).
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "can/judge.h"
#include "can/offline_scores.h"

namespace can {

// Agreement of one score with one judge measure over responses grouped by prompt.
struct RankingAgreement {
  std::string unit;   // the score's unit (Scorer::reward_unit, safety_unit)
  std::string judge;  // what it is set against: "helpfulness" or "harm (lower is safer)"
  // Mean over prompts of the fraction of response pairs the judge tells apart (different
  // values) that the score orders the same way; a tie in the score counts ½. NaN when
  // no prompt has such a pair.
  double pairwise_accuracy = 0;
  // Pearson correlation of the within-prompt deviations (score − its prompt's mean
  // against judge − its prompt's mean), pooled over every response: per-prompt offsets
  // such as PeCAN's β·log Z(x) drop out. NaN when either has no spread.
  double correlation = 0;
  int64_t num_pairs = 0;    // pairs the judge tells apart
  int64_t num_prompts = 0;  // prompts with at least one such pair
};

// `scores[i][k]` and `truth[i][k]` for response k of prompt i, the same shape; higher
// truth is better (pass −harm for harm). Errors on mismatched shapes.
RankingAgreement ranking_agreement(const std::vector<std::vector<double>>& scores,
                                   const std::vector<std::vector<double>>& truth);

// The agreement of r (with helpfulness) and of each g_j (with the judge's harm of kind
// j, judge.h's HarmKind) on the offline samples.
struct ScoreAccuracy {
  RankingAgreement reward;
  std::vector<RankingAgreement> safety;  // [m]
  // Pearson correlation of the judge's unsafe indicators of harm kinds j and l over every
  // sample ([m][m], 1 on the diagonal; NaN where a kind has no spread): how different
  // the constraints really are. Empty when read from an accuracy.json without it.
  std::vector<std::vector<double>> judge_unsafe_correlation;
};

// r and g of the offline samples against `verdicts[i][k]`, the judge's verdict on
// response k of prompt i; the units name the scorer's.
ScoreAccuracy judge_agreement(const OfflineScores& scores, const std::vector<std::vector<JudgeVerdict>>& verdicts,
                              const std::string& reward_unit, const std::string& safety_unit);

// {"reward": {...}, "safety": [{...}], "judge_unsafe_correlation": [[...]]}, the first two
// each {"unit", "judge", "pairwise_accuracy", "correlation", "num_pairs", "num_prompts"},
// NaN as null (report.json's score_accuracy).
nlohmann::json to_json(const ScoreAccuracy& accuracy);
ScoreAccuracy score_accuracy_from_json(const nlohmann::json& json, const std::string& where);
// <offline_scores>/accuracy.json: to_json's object with format_version.
void write_score_accuracy(const std::filesystem::path& path, const ScoreAccuracy& accuracy);
ScoreAccuracy read_score_accuracy(const std::filesystem::path& path);

}  // namespace can
