// An external judge (the paper's GPT-4, or a model of the user's own) compares the
// policy's and the reference's responses; CAN writes what it must judge and reads
// its verdicts back into win rates with 95% intervals (docs/design.md §5).
//
//   judge_requests.jsonl (written beside every evaluation's report.json), one line per
//   prompt: {"prompt_id", "prompt", "reference_response", "policy_response"}; a judge
//   should show the two responses in random order, to cancel position bias.
//
//   verdicts (JSON Lines, one line per request, any order): "prompt_id" and, for each
//   of "helpfulness" and "safety", either the preferred side, "policy", "reference" or
//   "tie", or both sides' scores {"policy": x, "reference": y} (higher = more helpful,
//   or safer; equal scores tie). Other fields are ignored.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace can {

struct EvaluationReport;

// One prompt's request to the judge.
struct JudgeRequest {
  std::string prompt_id;
  std::string prompt;
  std::string reference_response;
  std::string policy_response;
};

std::vector<JudgeRequest> judge_requests(const EvaluationReport& report);
void write_judge_requests(const std::filesystem::path& path, const std::vector<JudgeRequest>& requests);
// Errors name the file, the 1-based line and the field.
std::vector<JudgeRequest> read_judge_requests(const std::filesystem::path& path);

// The policy's win rate against the reference on one question. A prompt's outcome is
// 1 (the policy's response preferred), 1/2 (tie) or 0; the win rate is their mean, its
// standard error their sample standard deviation / √n, and the 95% interval Wilson's
// score interval at the win rate (z = 1.95996, the normal's 0.975 quantile), which stays inside [0, 1] and does not
// shrink to a point when every outcome is the same; ties make it conservative.
struct WinRate {
  int64_t wins = 0, ties = 0, losses = 0;
  double win_rate = 0;
  double standard_error = 0;  // NaN with fewer than two prompts
  double low = 0, high = 0;
};

struct ExternalJudgement {
  int64_t num_prompts = 0;
  WinRate helpfulness;
  WinRate safety;
};

// Reads `verdicts_path` against the requests it answers: every request needs exactly
// one verdict, and every verdict a request. Errors name the file, line and field.
ExternalJudgement judge_verdicts(const std::vector<JudgeRequest>& requests, const std::filesystem::path& verdicts_path);

WinRate win_rate(const std::vector<double>& outcomes);

// judge_report.json: format_version, num_prompts, and per question {wins, ties, losses,
// win_rate, stderr, ci95: [low, high]}.
nlohmann::json external_judgement_to_json(const ExternalJudgement& judgement);

}  // namespace can
