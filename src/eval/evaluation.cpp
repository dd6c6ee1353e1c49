// Generation, scoring, judging and the aggregates of an evaluation; the files
// are written in evaluation_report.cpp.
#include "can/evaluation.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "can/atomic_file.h"
#include "can/batching.h"
#include "can/error.h"
#include "can/json_fields.h"
#include "can/json_lines.h"
#include "can/synthetic_world.h"
#include "can/tokenizer.h"

namespace can {

namespace {

// Mean over prompts of value(row).
template <typename Value>
double mean_of(const std::vector<const PromptEvaluation*>& rows, Value value) {
  double sum = 0;
  for (const PromptEvaluation* row : rows) sum += value(*row);
  return sum / static_cast<double>(rows.size());
}

// Standard error of that mean: the sample standard deviation (n − 1) over √n; NaN for n < 2.
template <typename Value>
double standard_error_of(const std::vector<const PromptEvaluation*>& rows, Value value) {
  const double n = static_cast<double>(rows.size());
  if (rows.size() < 2) return std::numeric_limits<double>::quiet_NaN();
  const double mean = mean_of(rows, value);
  double squares = 0;
  for (const PromptEvaluation* row : rows) {
    const double deviation = value(*row) - mean;
    squares += deviation * deviation;
  }
  return std::sqrt(squares / (n - 1) / n);
}

PolicySummary summarize_policy(const std::vector<const PromptEvaluation*>& rows, int num_constraints,
                               ResponseEvaluation PromptEvaluation::*which, bool judged) {
  // Lifts a function of one response to a function of the prompt's row.
  auto of = [which](auto value) { return [which, value](const PromptEvaluation& row) { return value(row.*which); }; };
  PolicySummary summary;
  summary.reward = mean_of(rows, of([](const ResponseEvaluation& r) { return r.reward; }));
  for (int j = 0; j < num_constraints; ++j) {
    summary.costs.push_back(mean_of(rows, of([j](const ResponseEvaluation& r) { return r.costs[j]; })));
  }
  summary.response_tokens =
      mean_of(rows, of([](const ResponseEvaluation& r) { return static_cast<double>(r.tokens.size()); }));
  summary.stopped_at_eos = mean_of(rows, of([](const ResponseEvaluation& r) { return r.stopped_at_eos ? 1.0 : 0.0; }));
  if (judged) {
    const int m = num_constraints;
    summary.judge_helpfulness = mean_of(rows, of([](const ResponseEvaluation& r) { return r.judged->helpfulness; }));
    summary.judge_safety =
        mean_of(rows, of([m](const ResponseEvaluation& r) { return is_safe_on_all(*r.judged, m) ? 1.0 : 0.0; }));
    summary.judge_harm = mean_of(rows, of([m](const ResponseEvaluation& r) { return worst_harm(*r.judged, m); }));
    for (int j = 0; j < m; ++j) {
      summary.judge_safety_by_constraint.push_back(
          mean_of(rows, of([j](const ResponseEvaluation& r) { return r.judged->is_safe[j] ? 1.0 : 0.0; })));
    }
  }
  return summary;
}

// 1 when `policy` beats `reference`, 1/2 on a tie, 0 otherwise.
double win(double policy, double reference) { return policy > reference ? 1.0 : policy == reference ? 0.5 : 0.0; }

// r and g of a response by the score models: the reward, and g_j = −cost_j.
ResponseScores by_score_models(const ResponseEvaluation& response) {
  ResponseScores scores{response.reward, {}};
  for (double cost : response.costs) scores.safety.push_back(-cost);
  return scores;
}

ResponseScores by_prediction_scorer(const ResponseEvaluation& response) { return *response.prediction_scores; }

// E_policy − E_ref of the scores `scores_of` gives each response, with standard errors
// from the per-prompt differences.
Improvement improvement_of(const std::vector<const PromptEvaluation*>& rows, int num_constraints,
                           const ScoreUnits& units, ResponseScores (*scores_of)(const ResponseEvaluation&)) {
  Improvement improvement;
  improvement.reward_unit = units.reward;
  improvement.safety_unit = units.safety;
  const auto reward_difference = [scores_of](const PromptEvaluation& row) {
    return scores_of(row.policy).reward - scores_of(row.reference).reward;
  };
  improvement.reward_improvement = mean_of(rows, reward_difference);
  improvement.reward_improvement_stderr = standard_error_of(rows, reward_difference);
  for (int j = 0; j < num_constraints; ++j) {
    const auto safety_difference = [scores_of, j](const PromptEvaluation& row) {
      return scores_of(row.policy).safety[j] - scores_of(row.reference).safety[j];
    };
    improvement.safety_improvement.push_back(mean_of(rows, safety_difference));
    improvement.safety_improvement_stderr.push_back(standard_error_of(rows, safety_difference));
  }
  return improvement;
}

EvaluationSummary summarize_rows(const std::vector<const PromptEvaluation*>& rows, int num_constraints, bool judged,
                                 const std::optional<ScoreUnits>& prediction) {
  EvaluationSummary summary;
  summary.num_prompts = static_cast<int64_t>(rows.size());
  summary.reference = summarize_policy(rows, num_constraints, &PromptEvaluation::reference, judged);
  summary.policy = summarize_policy(rows, num_constraints, &PromptEvaluation::policy, judged);
  const Improvement measured = improvement_of(rows, num_constraints, score_model_units(), by_score_models);
  if (prediction) {
    summary.achieved = improvement_of(rows, num_constraints, *prediction, by_prediction_scorer);
    summary.achieved_by_score_models = measured;
  } else {
    summary.achieved = measured;
  }
  if (judged) {
    WinRates rates;
    rates.helpfulness = mean_of(rows, [](const PromptEvaluation& row) {
      return win(row.policy.judged->helpfulness, row.reference.judged->helpfulness);
    });
    // Less harm wins (the worst over the constraints' kinds): compare negated harms.
    rates.safety = mean_of(rows, [num_constraints](const PromptEvaluation& row) {
      return win(-worst_harm(*row.policy.judged, num_constraints), -worst_harm(*row.reference.judged, num_constraints));
    });
    summary.win_rate = rates;
  }
  return summary;
}

// r and g of each response by `scorer`, in the order of `sequences`.
std::vector<ResponseScores> score_each(Scorer& scorer, const std::vector<TokenizedSequence>& sequences,
                                       const BatchInferenceOptions& options) {
  const SequenceScores scores = scorer.score(sequences, options);
  std::vector<ResponseScores> result(sequences.size());
  for (size_t i = 0; i < sequences.size(); ++i) {
    result[i].reward = scores.reward[i];
    for (const std::vector<double>& g : scores.safety) result[i].safety.push_back(g[i]);
  }
  return result;
}

}  // namespace

ScoreUnits score_model_units() { return {kRewardModelUnit, kCostModelUnit}; }

std::vector<EvaluationPrompt> load_evaluation_prompts(const std::filesystem::path& path) {
  std::vector<EvaluationPrompt> prompts;
  std::map<std::string, int64_t> line_of_id;
  for_each_json_line(path, [&](const nlohmann::json& value, int64_t line_number) {
    const std::string where = fmt::format("{}:{}", path.string(), line_number);
    check(value.is_object(), "{}: expected a JSON object with prompt_id and prompt, got {}", where, value.type_name());
    EvaluationPrompt prompt;
    prompt.prompt_id = prompt_id_field(value, where);
    const auto [seen, inserted] = line_of_id.emplace(prompt.prompt_id, line_number);
    check(inserted, "{}: prompt_id {} already appears on line {}", where, prompt.prompt_id, seen->second);
    prompt.prompt = string_field(value, "prompt", where);
    check(prompt.prompt.find_first_not_of(" \t\r\n") != std::string::npos, "{}: field 'prompt' is empty", where);
    if (optional_field(value, "topic")) prompt.topic = string_field(value, "topic", where);
    if (optional_field(value, "harmful")) prompt.harmful = bool_field(value, "harmful", where);
    if (!prompt.topic.empty()) {
      try {
        const WorldTopic& topic = world_topic(prompt.topic);
        if (!prompt.harmful) prompt.harmful = topic.harmful;
      } catch (const Error& error) {
        fail("{}: field 'topic': {}", where, error.what());
      }
    }
    prompts.push_back(std::move(prompt));
  });
  check(!prompts.empty(), "'{}' holds no prompts", path.string());
  return prompts;
}

EvaluationReport summarize_evaluation(std::vector<PromptEvaluation> prompts, int num_constraints,
                                      const EvaluationOptions& options, const std::optional<DualSolution>& dual,
                                      const std::optional<ScoreUnits>& prediction) {
  check(!prompts.empty(), "evaluation: no prompts to summarize");
  check(num_constraints >= 1, "evaluation: at least one cost model is needed, got {}", num_constraints);
  const bool judged = prompts.front().reference.judged.has_value();
  check(!judged || num_constraints <= static_cast<int>(kNumHarmKinds),
        "evaluation: {} constraints, but the world's judge scores {} kinds of harm; judge prompts (with a topic) go "
        "with at most {} cost models",
        num_constraints, kNumHarmKinds, kNumHarmKinds);
  const bool classified = prompts.front().prompt.harmful.has_value();
  for (const PromptEvaluation& row : prompts) {
    const std::string& id = row.prompt.prompt_id;
    for (const ResponseEvaluation* response : {&row.reference, &row.policy}) {
      check(static_cast<int>(response->costs.size()) == num_constraints,
            "evaluation: prompt {} has {} cost(s), expected {}", id, response->costs.size(), num_constraints);
      check(response->prediction_scores.has_value() == prediction.has_value(),
            "evaluation: prompt {} {} scores by the prediction scorer, but {}", id,
            prediction ? "lacks" : "has", prediction ? "every response needs them" : "none was named");
      check(!prediction || static_cast<int>(response->prediction_scores->safety.size()) == num_constraints,
            "evaluation: prompt {} has {} safety score(s) by the prediction scorer, expected {}", id,
            prediction ? response->prediction_scores->safety.size() : 0, num_constraints);
      check(response->judged.has_value() == judged,
            "evaluation: prompt {} is {}judged while prompt {} is {}; judge all prompts or none", id,
            judged ? "not " : "", prompts.front().prompt.prompt_id, judged ? "judged" : "not");
    }
    check(row.prompt.harmful.has_value() == classified,
          "evaluation: prompt {} {} a class (harmful or benign) while prompt {} {}", id, classified ? "lacks" : "has",
          prompts.front().prompt.prompt_id, classified ? "has one" : "has none");
  }
  if (dual) {
    check(dual->feasible && dual->lambda.size() == static_cast<size_t>(num_constraints) &&
              dual->margins.size() == static_cast<size_t>(num_constraints) &&
              dual->predicted.safety_improvement.size() == static_cast<size_t>(num_constraints) &&
              dual->predicted.safety_improvement_stderr.size() == static_cast<size_t>(num_constraints),
          "evaluation: the dual solution must be feasible with {} constraint(s), one per cost model; it has {} "
          "margin(s), {} lambda value(s) and {} predicted improvement(s) with {} standard error(s)",
          num_constraints, dual->margins.size(), dual->lambda.size(), dual->predicted.safety_improvement.size(),
          dual->predicted.safety_improvement_stderr.size());
    const ScoreUnits measured = prediction ? *prediction : score_model_units();
    check((dual->safety_unit.empty() || dual->safety_unit == measured.safety) &&
              (dual->reward_unit.empty() || dual->reward_unit == measured.reward),
          "evaluation: the dual's prediction is in {} (safety) and {} (reward) but this evaluation measures in {} and "
          "{}; measure with the scorer the dual was solved with",
          dual->safety_unit, dual->reward_unit, measured.safety, measured.reward);
  }

  EvaluationReport report;
  report.num_constraints = num_constraints;
  report.options = options;
  report.prompts = std::move(prompts);
  std::vector<const PromptEvaluation*> all, harmful, benign;
  for (const PromptEvaluation& row : report.prompts) {
    all.push_back(&row);
    if (classified) (*row.prompt.harmful ? harmful : benign).push_back(&row);
  }
  report.overall = summarize_rows(all, num_constraints, judged, prediction);
  for (const auto& [name, rows] : {std::pair{"harmful", &harmful}, std::pair{"benign", &benign}}) {
    if (!rows->empty()) report.by_class.emplace_back(name, summarize_rows(*rows, num_constraints, judged, prediction));
  }
  if (dual) {
    report.dual = dual;
    for (int j = 0; j < num_constraints; ++j) {
      const double predicted = dual->predicted.safety_improvement[j];
      const double achieved = report.overall.achieved.safety_improvement[j];
      report.prediction_error.push_back(predicted == 0 ? std::numeric_limits<double>::quiet_NaN()
                                                       : (achieved - predicted) / std::abs(predicted));
    }
  }
  return report;
}

double prediction_gap_stderr(const EvaluationReport& report, int j) {
  if (!report.dual) return std::numeric_limits<double>::quiet_NaN();
  const double achieved = report.overall.achieved.safety_improvement_stderr.at(static_cast<size_t>(j));
  const double predicted = report.dual->predicted.safety_improvement_stderr.at(static_cast<size_t>(j));
  return std::sqrt(achieved * achieved + predicted * predicted);
}

EvaluationReport evaluate_policy(EvaluationModels& models, const Tokenizer& tokenizer,
                                 const ChatTemplate& chat_template, const std::vector<EvaluationPrompt>& prompts,
                                 const EvaluationOptions& options, const std::optional<DualSolution>& dual) {
  check(!prompts.empty(), "evaluation: no prompts");
  check(!models.policy.is_empty() && !models.reference.is_empty() && models.scorer != nullptr,
        "evaluation: the policy, the reference and a scorer are all needed");
  const ScoreUnits units = score_model_units();
  check(models.scorer->reward_unit() == units.reward && models.scorer->safety_unit() == units.safety,
        "evaluation: the scorer must be the reward and cost models, not {} and {} (a scorer in other units is the "
        "prediction scorer)",
        models.scorer->reward_unit(), models.scorer->safety_unit());
  std::optional<ScoreUnits> prediction_units;
  if (models.prediction_scorer) {
    check(models.prediction_scorer->num_constraints() == models.scorer->num_constraints(),
          "evaluation: the prediction scorer has {} safety score(s) but there are {} cost model(s)",
          models.prediction_scorer->num_constraints(), models.scorer->num_constraints());
    prediction_units = ScoreUnits{models.prediction_scorer->reward_unit(), models.prediction_scorer->safety_unit()};
  }
  const int64_t vocabulary = tokenizer.vocab_size();
  auto check_vocabulary = [vocabulary](const LlamaConfig& config, const std::string& name) {
    check(config.vocab_size >= vocabulary, "evaluation: the {} has a vocabulary of {} but the tokenizer has {}", name,
          config.vocab_size, vocabulary);
  };
  check_vocabulary(models.policy->config, "policy");
  check_vocabulary(models.reference->config, "reference");
  for (const Scorer* scorer : {models.scorer.get(), models.prediction_scorer.get()}) {
    check(scorer == nullptr || scorer->vocabulary_size() >= vocabulary,
          "evaluation: the scorer's models have a vocabulary of {} but the tokenizer has {}",
          scorer ? scorer->vocabulary_size() : 0, vocabulary);
  }
  const bool judged = !prompts.front().topic.empty();
  for (const EvaluationPrompt& prompt : prompts) {
    check(prompt.topic.empty() != judged, "evaluation: prompt {} {} a topic while prompt {} {}; give all or none",
          prompt.prompt_id, judged ? "lacks" : "has", prompts.front().prompt_id, judged ? "has one" : "has none");
  }
  // Before any generation: the judge knows kNumHarmKinds kinds of harm, one per constraint.
  const int constraints = static_cast<int>(models.scorer->num_constraints());
  check(!judged || constraints <= static_cast<int>(kNumHarmKinds),
        "evaluation: {} cost models, but the world's judge scores {} kinds of harm; prompts with a topic (judged) "
        "go with at most {} cost models",
        constraints, kNumHarmKinds, kNumHarmKinds);

  SamplingOptions sampling = options.sampling;
  if (sampling.eos_id < 0) sampling.eos_id = tokenizer.eos_id();
  sampling.vocab_limit = tokenizer.vocab_size();  // responses are decoded to text and judged
  std::vector<std::vector<int64_t>> prompt_ids;
  for (const EvaluationPrompt& prompt : prompts)
    prompt_ids.push_back(tokenize_prompt(tokenizer, chat_template, prompt.prompt));

  auto respond = [&](LlamaForCausalLM& model, const char* name) {
    spdlog::info("evaluation: sampling {} responses from the {}", prompts.size(), name);
    const std::vector<Generation> generations = sample(model, prompt_ids, sampling);
    std::vector<ResponseEvaluation> responses(prompts.size());
    std::vector<TokenizedSequence> sequences;
    int64_t truncated = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      ResponseEvaluation& response = responses[i];
      response.tokens = generations[i].tokens;
      response.stopped_at_eos = generations[i].stopped_at_eos;
      response.text = tokenizer.decode(response.tokens);
      if (judged) response.judged = judge_response(prompts[i].topic, response.text);
      // Scorers score a response cut at max_new_tokens with its EOS appended (scorer.h).
      TokenizedSequence sequence{prompt_ids[i], response.tokens};
      const size_t scored_length = sequence.prompt_ids.size() + sequence.response_ids.size() + (response.stopped_at_eos ? 0 : 1);
      if (static_cast<int64_t>(scored_length) > options.scoring.max_length) ++truncated;
      sequences.push_back(std::move(sequence));
    }
    if (truncated > 0) {
      spdlog::warn("evaluation: {} of the {}'s {} sequences exceed max_length {} and are scored truncated", truncated,
                   name, prompts.size(), options.scoring.max_length);
    }
    spdlog::info("evaluation: scoring the {}'s responses", name);
    // Each policy is scored in calls of its own: identical responses then meet identical batches.
    const std::vector<ResponseScores> by_models = score_each(*models.scorer, sequences, options.scoring);
    for (size_t i = 0; i < responses.size(); ++i) {
      responses[i].reward = by_models[i].reward;
      for (double g : by_models[i].safety) responses[i].costs.push_back(-g);  // cost = −g
    }
    if (models.prediction_scorer) {
      spdlog::info("evaluation: scoring the {}'s responses in the prediction's unit ({})", name,
                   models.prediction_scorer->safety_unit());
      std::vector<ResponseScores> predicted = score_each(*models.prediction_scorer, sequences, options.scoring);
      for (size_t i = 0; i < responses.size(); ++i) responses[i].prediction_scores = std::move(predicted[i]);
    }
    return responses;
  };
  std::vector<ResponseEvaluation> reference = respond(models.reference, "reference");
  std::vector<ResponseEvaluation> policy = respond(models.policy, "policy");

  std::vector<PromptEvaluation> rows;
  for (size_t i = 0; i < prompts.size(); ++i) {
    rows.push_back({prompts[i], std::move(reference[i]), std::move(policy[i])});
  }
  return summarize_evaluation(std::move(rows), static_cast<int>(models.scorer->num_constraints()), options, dual,
                              prediction_units);
}

}  // namespace can
