// Evaluation of an aligned policy against the reference on held-out prompts
// (docs/design.md §3, step 5): one response per prompt from each policy, scored by the
// reward and cost models, judged by the synthetic world's judge when prompts
// carry a topic, compared with what the dual predicted, and written as a report.
//
// Units: rewards and costs in score-model units; the safety score of cost model
// j is g_j = −cost_j (higher = safer), so a safety improvement is a fall in mean
// cost. Every prompt weighs the same.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "can/batch_inference.h"
#include "can/dual.h"
#include "can/judge.h"
#include "can/sampling.h"
#include "can/score_accuracy.h"
#include "can/scorer.h"
#include "can/svg_plot.h"

namespace can {

class ChatTemplate;
class Tokenizer;

struct EvaluationPrompt {
  std::string prompt_id;
  std::string prompt;
  std::string topic;            // a world topic, for the judge; empty when the prompts are external
  std::optional<bool> harmful;  // the prompt's class, for the by-class breakdown; unknown when absent
};

// Reads a prompts JSON Lines file: `prompt_id` (string or integer, unique),
// `prompt` (non-empty string), optional `topic` (a world topic, checked) and
// `harmful` (bool; taken from the topic when absent). The synthetic world's
// prompts_test.jsonl is such a file. Errors name the file and the 1-based line.
std::vector<EvaluationPrompt> load_evaluation_prompts(const std::filesystem::path& path);

struct EvaluationOptions {
  // One response per prompt; both policies sample with the same options and seed:
  // temperature 1 and top-p 0.9 as for the offline scores (docs/design.md §3).
  // eos_id -1 means the tokenizer's EOS (the token appended before scoring).
  SamplingOptions sampling = {.max_new_tokens = 512, .top_p = 0.9};
  BatchInferenceOptions scoring;  // score-model batches and truncation of prompt + response
};

// The models compared and what scores their responses. All share the tokenizer's vocabulary.
struct EvaluationModels {
  LlamaForCausalLM policy{nullptr};
  LlamaForCausalLM reference{nullptr};
  // The reward and cost models (ScoreModelScorer, whose −g_j is cost model j's output):
  // every response's reward and costs.
  std::shared_ptr<Scorer> scorer;
  // The scorer the dual's prediction is in, when it is not `scorer`: PeCAN's implicit
  // rewards (ImplicitRewardScorer). Predicted and achieved improvements are then compared
  // in its unit, and the score models' improvement is reported beside them, labelled.
  std::shared_ptr<Scorer> prediction_scorer;
};

// r and g of one response in one scorer's units.
struct ResponseScores {
  double reward = 0;
  std::vector<double> safety;  // [m]
};

struct ResponseEvaluation {
  std::string text;             // the decoded response (no BOS/EOS)
  std::vector<int64_t> tokens;  // sampled tokens, ending with EOS when the model stopped
  bool stopped_at_eos = false;
  // Scored on the sampled ids themselves (no re-encoding of `text`): prompt + tokens (+ EOS when it did not stop).
  double reward = 0;
  std::vector<double> costs;           // [m] likewise, one per cost model
  // By the prediction scorer, when there is one (EvaluationModels::prediction_scorer).
  std::optional<ResponseScores> prediction_scores;
  std::optional<JudgeVerdict> judged;  // when the prompt has a topic
};

struct PromptEvaluation {
  EvaluationPrompt prompt;
  ResponseEvaluation reference;
  ResponseEvaluation policy;
};

// Means over prompts of one policy's responses.
struct PolicySummary {
  double reward = 0;
  std::vector<double> costs;                // [m]
  std::optional<double> judge_helpfulness;  // mean helpfulness; when judged
  // When judged, over the kinds of harm of the m constraints (judge.h's HarmKind j is
  // constraint j): the fraction safe on every kind, and the mean of the worst harm.
  std::optional<double> judge_safety;
  std::optional<double> judge_harm;
  std::vector<double> judge_safety_by_constraint;  // [m] fraction safe on kind j; empty when not judged
  double response_tokens = 0;               // mean sampled tokens (EOS included)
  double stopped_at_eos = 0;                // fraction that ended with EOS
};

struct Improvement {
  // The units of the scores differenced (Scorer::reward_unit, safety_unit): "reward_model"
  // and "cost_model" (g_j = −cost_j), or "implicit_reward" (PeCAN's β·log(π/π_ref)).
  std::string reward_unit, safety_unit;
  std::vector<double> safety_improvement;  // [m] E_policy[g_j] − E_ref[g_j]; by the cost models E_ref[cost_j] − E_policy[cost_j]
  double reward_improvement = 0;           // E_policy[r] − E_ref[r]
  // Standard errors of the two means above, from the per-prompt differences (policy's
  // response minus reference's, on the same prompt): sample standard deviation / √n.
  // NaN with fewer than two prompts. ±1.96 of them is the 95% interval.
  std::vector<double> safety_improvement_stderr;  // [m]
  double reward_improvement_stderr = 0;
};

// Fractions of prompts where the policy's response beats the reference's by the
// judge; ties count 1/2, so identical policies score exactly 0.5.
struct WinRates {
  double helpfulness = 0;  // higher helpfulness
  double safety = 0;       // lower harm
};

struct EvaluationSummary {
  int64_t num_prompts = 0;
  PolicySummary reference;
  PolicySummary policy;
  // In the prediction's unit: by the prediction scorer when there is one, else by the score models.
  Improvement achieved;
  // By the reward and cost models, when `achieved` is in another unit (PeCAN).
  std::optional<Improvement> achieved_by_score_models;
  std::optional<WinRates> win_rate;  // when judged
};

struct EvaluationReport {
  // Which prompts were evaluated: "held_out_templates" or "same_templates" (the world's
  // test prompts of held-out, or of the sample prompts' own, templates), "data.prompts_test"
  // (the user's); can-eval: its --prompt-set, else the --prompts path.
  std::string prompt_set;
  int num_constraints = 0;
  EvaluationOptions options;
  std::vector<PromptEvaluation> prompts;
  EvaluationSummary overall;
  // "harmful" and "benign" (classes with prompts only), when every prompt's class is known.
  std::vector<std::pair<std::string, EvaluationSummary>> by_class;
  std::optional<DualSolution> dual;      // what was predicted, when given; in overall.achieved's units
  std::vector<double> prediction_error;  // [m] (achieved − predicted) / |predicted|; NaN where predicted is 0
  // Settings of the run that void the prediction, one sentence each (pipeline.h's
  // prediction_caveats); report.md lists them beside the prediction.
  std::vector<std::string> prediction_caveats;
  // How well the scores behind the prediction rank the reference's offline samples by the
  // judge (score_accuracy.h); the pipelines attach it on the world's prompts.
  std::optional<ScoreAccuracy> score_accuracy;
};

// Half-width of a 95% interval, in standard errors (normal approximation).
inline constexpr double kInterval95 = 1.96;

// "x ± kInterval95·se" (4 significant digits, "—" for a non-finite x), or x alone when se is
// not finite (fewer than two prompts): the cells of report.md and sweep.md.
std::string format_with_interval(double value, double standard_error);

// The standard error of achieved − predicted safety improvement of constraint j,
// √(se_achieved² + se_predicted²): the evaluation and the dual estimate on different
// prompts, so the two errors are independent. NaN when either is unknown or there is no
// dual. ±1.96 of it is the interval a prediction that holds falls inside 95% of the time.
double prediction_gap_stderr(const EvaluationReport& report, int j);

// Generates one response per prompt from the policy and the reference (same
// options, same seed), scores each with every score model (and the prediction
// scorer, when given), judges it when the prompt has a topic (all prompts or none
// must have one), and summarizes. `dual`, when given, must have one constraint per
// cost model, and its prediction must be in the units of the prediction scorer (or,
// without one, of the score models).
EvaluationReport evaluate_policy(EvaluationModels& models, const Tokenizer& tokenizer,
                                 const ChatTemplate& chat_template, const std::vector<EvaluationPrompt>& prompts,
                                 const EvaluationOptions& options, const std::optional<DualSolution>& dual = {});

// The units of r and g of a scorer (Scorer::reward_unit, safety_unit).
struct ScoreUnits {
  std::string reward, safety;
};

// The units of every response's reward and costs: EvaluationModels::scorer is ScoreModelScorer.
ScoreUnits score_model_units();

// The aggregates of evaluated prompts (what evaluate_policy returns, without the models).
// `prediction` gives the units of the responses' prediction_scores, which every response
// has when it is given and none has otherwise.
EvaluationReport summarize_evaluation(std::vector<PromptEvaluation> prompts, int num_constraints,
                                      const EvaluationOptions& options, const std::optional<DualSolution>& dual = {},
                                      const std::optional<ScoreUnits>& prediction = {});

// The contents of report.json. `reference` and `policy` hold `reward`, `cost`
// (the first cost model's mean, the usual single constraint) and `costs` (all m),
// `judge_helpfulness`, `judge_safety`, `judge_harm`, `judge_safety_by_constraint` [m] (null when not judged),
// `response_tokens`, `stopped_at_eos`; then `achieved` and `predicted`
// ({safety_improvement [m], reward_improvement, safety_unit, reward_unit}; achieved adds
// the standard errors, predicted adds kl; the units are the same), `achieved_by_score_models`
// (achieved's shape, null unless achieved is in another unit), `margins`,
// `lambda`, `beta`, `prediction_error` (null without a dual), `win_rate`
// ({helpfulness, safety}, null when not judged), `by_class`, `score_accuracy` (score_accuracy.h's
// object, null when not measured), `prompt_set`, counts and sampling options.
// format_version (json_fields.h) comes first.
nlohmann::json evaluation_report_to_json(const EvaluationReport& report);
// The inverse of evaluation_report_to_json, without the per-prompt rows (they are
// in responses.jsonl) and with the dual's fields that report.json keeps (beta,
// margins, lambda, converged, predicted). `where` names the source in errors.
EvaluationReport evaluation_report_from_json(const nlohmann::json& json, const std::string& where);
// <eval stage>/report.json, read back.
EvaluationReport read_evaluation_report(const std::filesystem::path& path);

// Histograms of reference and policy scores as step lines on shared bins (y: fraction of responses per
// bin); the legend gives each mean.
PlotPanel distribution_panel(const std::string& title, const std::string& x_label, const std::vector<double>& reference,
                             const std::vector<double>& policy);

// Writes into `directory` (created if needed), each file atomically: report.json,
// report.md (tables and example responses side by side), responses.jsonl (per prompt:
// both responses, their scores and judge verdicts), judge_requests.jsonl (for an
// external judge, external_judge.h), reward_distribution.svg and
// cost_distribution.svg (one panel per cost model), and events.out.tfevents.can (the
// headline numbers as TensorBoard scalars under "eval/", tensorboard.h).
void write_evaluation_report(const std::filesystem::path& directory, const EvaluationReport& report);

}  // namespace can
