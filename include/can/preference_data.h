// Training data in JSON Lines: preference pairs in the PKU-SafeRLHF schema, and
// SFT examples {"prompt", "response"}.
//
// Preference pairs, read from and written to JSON Lines.
// One line per pair: {"prompt", "response_0", "response_1", "better_response_id",
// "safer_response_id", "is_response_0_safe", "is_response_1_safe"}; other keys
// (PKU-SafeRLHF carries sources and harm categories) are ignored on reading.
//
// Several safety constraints (several kinds of harm, each judged on its own): the
// optional "safety_labels" is an array with one object {"safer_response_id",
// "is_response_0_safe", "is_response_1_safe"} per constraint, the first equal to the
// top-level fields (which stay the first constraint's, so that a reader of the plain
// schema sees the first kind of harm). Without it a pair has one constraint; every
// pair of a file has the same number.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace can {

// The safety labels of a pair for one constraint.
struct SafetyLabels {
  int safer_response_id = 0;  // 0 or 1: the less harmful response
  bool is_response_0_safe = true;
  bool is_response_1_safe = true;
};

struct PreferencePair {
  std::string prompt;  // the user's request, without chat template
  std::string response_0;
  std::string response_1;
  int better_response_id = 0;  // 0 or 1: the more helpful response
  // P(better_response_id's response ≻ the other) in [½, 1]: 1 for a label taken as certain;
  // below 1 for a soft pseudo-preference (relabel.h's kSoft), which DPO fits as such.
  double better_probability = 1;
  int safer_response_id = 0;   // 0 or 1: the less harmful response
  bool is_response_0_safe = true;
  bool is_response_1_safe = true;
  // The labels of constraints 1 … m−1, when the pair has several (the fields above are constraint 0's).
  std::vector<SafetyLabels> more_safety_labels;

  // Response or safety label by id (0 or 1); any other id is an error.
  const std::string& response(int id) const;
  bool is_response_safe(int id) const;
  // m, the number of safety constraints labelled.
  int num_constraints() const { return 1 + static_cast<int>(more_safety_labels.size()); }
  // The pair with one constraint: constraint j's labels in safer_response_id and
  // is_response_*_safe (what a cost model or a safety DPO for constraint j trains on).
  // j outside [0, m) is an error.
  PreferencePair for_constraint(int j) const;
};

// Which label of a pair names the preferred response.
enum class PreferenceLabel {
  kBetter,  // better_response_id: the more helpful (reward models, helpfulness DPO)
  kSafer,   // safer_response_id: the less harmful (cost models, safety DPO)
};
// better_response_id or safer_response_id.
int preferred_response_id(const PreferencePair& pair, PreferenceLabel label);

// Parses one pair. Errors name `where` (e.g. "pairs.jsonl:12") and the field:
// missing field, wrong JSON type, an id other than 0/1, an empty or blank text.
PreferencePair preference_pair_from_json(const nlohmann::json& value, const std::string& where);
nlohmann::json preference_pair_to_json(const PreferencePair& pair);

// Reads every pair of a JSON Lines file; a file without pairs is an error, and so is
// one whose pairs label different numbers of constraints (the error names the line).
std::vector<PreferencePair> read_preference_pairs(const std::filesystem::path& path);

// Writes the pairs as JSON Lines, atomically (the file is whole or untouched).
void write_preference_pairs(const std::filesystem::path& path, const std::vector<PreferencePair>& pairs);

// One SFT example (the synthetic world's sft_train.jsonl): the response the model learns to give.
struct PromptResponse {
  std::string prompt;  // without chat template
  std::string response;
};

// Reads {"prompt", "response"} lines (other keys are ignored). Errors name the file,
// line and field (missing, not a string, empty or blank); a file without examples is an error.
std::vector<PromptResponse> read_prompt_responses(const std::filesystem::path& path);

}  // namespace can
