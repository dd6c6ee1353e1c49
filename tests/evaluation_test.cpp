// Evaluation of a policy against the reference with tiny random models and a
// tokenizer trained on a small synthetic world: the report's fields and shapes,
// exact zeros for identical policies, aggregates that a reader recomputes from
// responses.jsonl, the judge on the decoded text, the dual's prediction carried
// through, prompt-file errors, and can-eval as a user runs it.
#include "can/evaluation.h"
#include "can/json_fields.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "assertions.h"
#include "can/atomic_file.h"
#include "can/batching.h"
#include "can/chat_template.h"
#include "can/error.h"
#include "can/external_judge.h"
#include "can/json_lines.h"
#include "can/synthetic_world.h"
#include "can/tokenizer.h"
#include "command_line.h"
#include "json_files.h"
#include "tiny_world.h"

namespace {

using can::testing::contains;
using can::testing::error_message;

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int64_t kTestPrompts = 8;

can::DualSolution two_constraint_solution() {
  can::DualSolution solution;
  solution.beta = 0.1;
  solution.margins = {0.5, 0.2};
  solution.lambda = {1.5, 0.0};
  solution.converged = true;
  solution.predicted.safety_improvement = {0.5, 0.3};
  solution.predicted.safety_improvement_stderr = {0.04, 0.03};
  solution.predicted.reward_improvement = -0.2;
  solution.predicted.reward_improvement_stderr = 0.05;
  solution.predicted.kl = 0.7;
  return solution;
}

class EvaluationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    directory_ = new can::testing::TemporaryDirectory();
    world_options_.num_train_prompts = 150;
    world_options_.num_test_prompts = kTestPrompts;
    can::write_world(world_options_, path("world"));
    can::TokenizerTrainOptions options;
    options.input_file = path("world/corpus.txt").string();
    options.model_prefix = path("tokenizer").string();
    options.vocab_size = 400;
    can::Tokenizer::train(options);

    const can::LlamaConfig config = can::testing::tiny_llama_config(400);
    torch::manual_seed(4);
    for (const char* name : {"policy", "reference"})
      can::save_causal_lm(can::LlamaForCausalLM(config), path(name).string());
    for (const char* name : {"reward", "cost", "cost2"})
      can::save_score_model(can::LlamaForScore(config), path(name).string());
    fs::copy_file(path("tokenizer.model"), path("policy/tokenizer.model"));
    tokenizer_ = new can::Tokenizer(can::Tokenizer::load(path("tokenizer.model").string()));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete directory_;
  }
  static fs::path path(const std::string& name) { return directory_->path() / name; }

  // Models loaded from the directories; `policy` names the directory of the policy.
  static can::EvaluationModels load_models(const std::string& policy, int num_costs = 1) {
    can::EvaluationModels models;
    models.policy = can::load_causal_lm(path(policy).string());
    models.reference = can::load_causal_lm(path("reference").string());
    std::vector<can::LlamaForScore> costs;
    for (const char* cost : {"cost", "cost2"}) {
      if (static_cast<int>(costs.size()) < num_costs) costs.push_back(can::load_score_model(path(cost).string()));
    }
    models.scorer =
        std::make_shared<can::ScoreModelScorer>(can::load_score_model(path("reward").string()), costs, tokenizer_->eos_id());
    return models;
  }

  static can::EvaluationOptions small_options() {
    can::EvaluationOptions options;
    options.sampling.max_new_tokens = 8;
    options.sampling.seed = 3;
    options.sampling.batch_size = 3;  // more than one batch
    options.scoring.batch_size = 5;
    return options;
  }

  static std::vector<can::EvaluationPrompt> world_prompts() {
    return can::load_evaluation_prompts(path("world/prompts_test.jsonl"));
  }

  static can::EvaluationReport evaluate(const std::string& policy, int num_costs = 1,
                                        const std::optional<can::DualSolution>& dual = {}) {
    auto models = load_models(policy, num_costs);
    return can::evaluate_policy(models, *tokenizer_, can::ChatTemplate(), world_prompts(), small_options(), dual);
  }

  static can::testing::TemporaryDirectory* directory_;
  static can::WorldOptions world_options_;
  static can::Tokenizer* tokenizer_;
};
can::testing::TemporaryDirectory* EvaluationTest::directory_ = nullptr;
can::WorldOptions EvaluationTest::world_options_;
can::Tokenizer* EvaluationTest::tokenizer_ = nullptr;

TEST_F(EvaluationTest, ReadsTheWorldTestPromptsWithTopicAndClass) {
  const auto prompts = world_prompts();
  const auto world = can::build_world(world_options_);
  ASSERT_EQ(prompts.size(), world.test_prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(prompts[i].prompt_id, world.test_prompts[i].id);
    EXPECT_EQ(prompts[i].prompt, world.test_prompts[i].text);
    EXPECT_EQ(prompts[i].topic, world.test_prompts[i].topic);
    ASSERT_TRUE(prompts[i].harmful.has_value());
    EXPECT_EQ(*prompts[i].harmful, world.test_prompts[i].harmful);
  }
}

TEST_F(EvaluationTest, ExternalPromptsHaveNoTopicAndAClassOnlyWhenGiven) {
  std::ofstream(path("external.jsonl"))
      << "{\"prompt_id\": 17, \"prompt\": \"How do I bake bread?\"}\n\n"
         "{\"prompt_id\": \"b\", \"prompt\": \"Tell me a secret.\", \"harmful\": true}\n";
  const auto prompts = can::load_evaluation_prompts(path("external.jsonl"));
  ASSERT_EQ(prompts.size(), 2u);
  EXPECT_EQ(prompts[0].prompt_id, "17");
  EXPECT_EQ(prompts[0].topic, "");
  EXPECT_FALSE(prompts[0].harmful.has_value());
  EXPECT_EQ(prompts[1].prompt_id, "b");
  EXPECT_EQ(prompts[1].harmful, std::optional<bool>(true));
}

TEST_F(EvaluationTest, BadPromptLinesAreErrorsNamingFileAndLine) {
  const std::string good = "{\"prompt_id\": \"a\", \"prompt\": \"How do I bake bread?\"}\n";
  auto error_for = [&](const std::string& second_and_third) {
    std::ofstream(path("bad.jsonl")) << good << second_and_third;
    return error_message([&] { can::load_evaluation_prompts(path("bad.jsonl")); });
  };
  const std::string missing = error_for("\n{\"prompt_id\": \"c\"}\n");
  EXPECT_TRUE(contains(missing, "bad.jsonl:3") && contains(missing, "'prompt'")) << missing;
  const std::string topic = error_for("{\"prompt_id\": \"b\", \"prompt\": \"x\", \"topic\": \"astrology\"}\n");
  EXPECT_TRUE(contains(topic, "bad.jsonl:2") && contains(topic, "astrology")) << topic;
  const std::string duplicate = error_for("{\"prompt_id\": \"a\", \"prompt\": \"again\"}\n");
  EXPECT_TRUE(contains(duplicate, "bad.jsonl:2") && contains(duplicate, "line 1")) << duplicate;
  const std::string invalid = error_for("{\"prompt_id\": \"b\", \"prompt\": \n");
  EXPECT_TRUE(contains(invalid, "bad.jsonl:2")) << invalid;
  const std::string harmful = error_for("{\"prompt_id\": \"b\", \"prompt\": \"x\", \"harmful\": \"yes\"}\n");
  EXPECT_TRUE(contains(harmful, "bad.jsonl:2") && contains(harmful, "harmful")) << harmful;
}

TEST_F(EvaluationTest, ReportJsonHasTheFieldsWithOneEntryPerConstraint) {
  auto report = evaluate("policy", /*num_costs=*/2, two_constraint_solution());
  report.prediction_caveats = {"dpo.loss.kind is ipo; the prediction is for the sigmoid (DPO) loss"};
  can::write_evaluation_report(path("two_costs"), report);
  const json written = can::read_json_file(path("two_costs/report.json"));
  EXPECT_EQ(written.at("format_version"), can::kArtifactFormatVersion);
  // The typed reader gives back every field it wrote.
  EXPECT_EQ(can::evaluation_report_to_json(can::read_evaluation_report(path("two_costs/report.json"))), written);
  EXPECT_EQ(written.at("num_prompts"), kTestPrompts);
  EXPECT_EQ(written.at("num_constraints"), 2);
  for (const char* policy : {"reference", "policy"}) {
    const json& summary = written.at(policy);
    EXPECT_TRUE(summary.at("reward").is_number());
    EXPECT_EQ(summary.at("cost"), summary.at("costs").at(0));
    EXPECT_EQ(summary.at("costs").size(), 2u);
    EXPECT_GE(summary.at("judge_helpfulness").get<double>(), 0);
    EXPECT_LE(summary.at("judge_helpfulness").get<double>(), 1);
    EXPECT_GE(summary.at("judge_safety").get<double>(), 0);
    EXPECT_LE(summary.at("judge_safety").get<double>(), 1);
  }
  for (const char* improvement : {"achieved", "predicted"}) {
    EXPECT_EQ(written.at(improvement).at("safety_improvement").size(), 2u) << improvement;
    EXPECT_TRUE(written.at(improvement).at("reward_improvement").is_number()) << improvement;
  }
  EXPECT_TRUE(written.at("win_rate").at("helpfulness").is_number());
  EXPECT_TRUE(written.at("win_rate").at("safety").is_number());
  EXPECT_EQ(written.at("margins").size(), 2u);
  EXPECT_EQ(written.at("lambda").size(), 2u);
  EXPECT_EQ(written.at("prediction_error").size(), 2u);
  const json& by_class = written.at("by_class");
  EXPECT_EQ(
      by_class.at("harmful").at("num_prompts").get<int64_t>() + by_class.at("benign").at("num_prompts").get<int64_t>(),
      kTestPrompts);
  EXPECT_EQ(can::testing::read_json_lines(path("two_costs/responses.jsonl")).size(), static_cast<size_t>(kTestPrompts));
  for (const char* file : {"report.md", "reward_distribution.svg", "cost_distribution.svg"}) {
    EXPECT_TRUE(fs::is_regular_file(path("two_costs") / file)) << file;
  }
  EXPECT_TRUE(contains(can::read_text_file(path("two_costs/cost_distribution.svg")), "Cost model 1"));
  EXPECT_EQ(written.at("prediction_caveats"), json::array({report.prediction_caveats.front()}));
  for (const char* field : {"safety_improvement_stderr", "reward_improvement_stderr"}) {
    EXPECT_TRUE(written.at("achieved").contains(field)) << field;
  }
  const std::string markdown = can::read_text_file(path("two_costs/report.md"));
  EXPECT_TRUE(contains(markdown, "The prediction may not hold for this run:\n\n- dpo.loss.kind is ipo")) << markdown;
  EXPECT_TRUE(contains(markdown, "| achieved ± 95% |")) << markdown;
  // The prediction's standard errors come through, and the difference's interval combines both.
  EXPECT_EQ(written.at("predicted").at("safety_improvement_stderr"), json({0.04, 0.03}));
  EXPECT_EQ(written.at("predicted").at("reward_improvement_stderr"), 0.05);
  const double achieved_stderr = report.overall.achieved.safety_improvement_stderr[0];
  ASSERT_GT(achieved_stderr, 0);
  const double gap_stderr = std::sqrt(achieved_stderr * achieved_stderr + 0.04 * 0.04);
  EXPECT_DOUBLE_EQ(can::prediction_gap_stderr(report, 0), gap_stderr);
  EXPECT_TRUE(contains(markdown, "| 0.5 ± 0.0784 |")) << markdown;
  EXPECT_TRUE(contains(markdown, fmt::format(" | {:.4g} ± {:.4g} |", report.overall.achieved.safety_improvement[0] - 0.5,
                                             1.96 * gap_stderr)))
      << markdown;
}

TEST_F(EvaluationTest, IdenticalPoliciesAchieveExactlyZeroAndEvenWinRates) {
  const auto report = evaluate("reference", /*num_costs=*/2);
  for (const auto& row : report.prompts) EXPECT_EQ(row.policy.tokens, row.reference.tokens);
  for (const auto* summary : {&report.overall, &report.by_class.at(0).second, &report.by_class.at(1).second}) {
    EXPECT_EQ(summary->achieved.reward_improvement, 0.0);
    EXPECT_EQ(summary->achieved.safety_improvement, std::vector<double>(2, 0.0));
    ASSERT_TRUE(summary->win_rate.has_value());
    EXPECT_EQ(summary->win_rate->helpfulness, 0.5);
    EXPECT_EQ(summary->win_rate->safety, 0.5);
  }
}

TEST_F(EvaluationTest, AggregatesEqualARecomputationFromTheResponsesFile) {
  can::write_evaluation_report(path("recomputed"), evaluate("policy"));
  const json report = can::read_json_file(path("recomputed/report.json"));
  const auto rows = can::testing::read_json_lines(path("recomputed/responses.jsonl"));
  ASSERT_EQ(rows.size(), static_cast<size_t>(kTestPrompts));
  bool policies_differ = false;
  for (const json& row : rows) policies_differ |= row["policy"]["response"] != row["reference"]["response"];
  ASSERT_TRUE(policies_differ) << "the test needs two different policies";

  auto check_summary = [](const json& summary, const std::vector<json>& subset, const std::string& name) {
    auto mean = [&](const std::function<double(const json&)>& value) {
      double sum = 0;
      for (const json& row : subset) sum += value(row);
      return sum / static_cast<double>(subset.size());
    };
    EXPECT_EQ(summary.at("num_prompts").get<size_t>(), subset.size()) << name;
    for (const char* policy : {"reference", "policy"}) {
      const json& written = summary.at(policy);
      EXPECT_DOUBLE_EQ(written.at("reward").get<double>(),
                       mean([&](const json& row) { return row[policy]["reward"].get<double>(); }))
          << name << " " << policy;
      EXPECT_DOUBLE_EQ(written.at("cost").get<double>(),
                       mean([&](const json& row) { return row[policy]["cost"].get<double>(); }))
          << name << " " << policy;
      EXPECT_DOUBLE_EQ(written.at("judge_helpfulness").get<double>(),
                       mean([&](const json& row) { return row[policy]["judge"]["helpfulness"].get<double>(); }))
          << name << " " << policy;
      EXPECT_DOUBLE_EQ(written.at("judge_safety").get<double>(),
                       mean([&](const json& row) { return row[policy]["judge"]["is_safe"].get<bool>() ? 1.0 : 0.0; }))
          << name << " " << policy;
    }
    EXPECT_DOUBLE_EQ(
        summary.at("achieved").at("reward_improvement").get<double>(),
        summary.at("policy").at("reward").get<double>() - summary.at("reference").at("reward").get<double>());
    EXPECT_DOUBLE_EQ(summary.at("achieved").at("safety_improvement").at(0).get<double>(),
                     summary.at("reference").at("cost").get<double>() - summary.at("policy").at("cost").get<double>());
    auto win = [](double policy, double reference) {
      return policy > reference ? 1.0 : policy == reference ? 0.5 : 0.0;
    };
    EXPECT_DOUBLE_EQ(summary.at("win_rate").at("helpfulness").get<double>(), mean([&](const json& row) {
                       return win(row["policy"]["judge"]["helpfulness"].get<double>(),
                                  row["reference"]["judge"]["helpfulness"].get<double>());
                     }));
    EXPECT_DOUBLE_EQ(summary.at("win_rate").at("safety").get<double>(), mean([&](const json& row) {
                       return win(row["reference"]["judge"]["harm"].get<double>(),
                                  row["policy"]["judge"]["harm"].get<double>());
                     }));
  };
  check_summary(report, rows, "overall");
  for (const bool harmful : {true, false}) {
    std::vector<json> subset;
    for (const json& row : rows) {
      if (row.at("harmful") == harmful) subset.push_back(row);
    }
    const std::string name = harmful ? "harmful" : "benign";
    ASSERT_FALSE(subset.empty()) << name;
    check_summary(report.at("by_class").at(name), subset, name);
  }
}

TEST_F(EvaluationTest, JudgeVerdictsAreTheJudgeOfTheDecodedResponses) {
  const auto report = evaluate("policy");
  for (const auto& row : report.prompts) {
    for (const auto* response : {&row.reference, &row.policy}) {
      EXPECT_EQ(response->text, tokenizer_->decode(response->tokens));
      const can::JudgeVerdict expected = can::judge_response(row.prompt.topic, response->text);
      ASSERT_TRUE(response->judged.has_value());
      EXPECT_EQ(response->judged->helpfulness, expected.helpfulness);
      EXPECT_EQ(response->judged->harm, expected.harm);
      EXPECT_EQ(response->judged->is_safe, expected.is_safe);
    }
  }
}

TEST_F(EvaluationTest, ScoresAreReadAtAnEosAppendedToCutResponses) {
  const auto report = evaluate("policy");
  auto reward = can::load_score_model(path("reward").string());
  torch::NoGradGuard no_grad;
  auto score = [&](const std::vector<int64_t>& ids) {
    const torch::Tensor input = torch::tensor(ids).unsqueeze(0);
    return reward(input, torch::ones_like(input))[0][0].item<double>();
  };
  int checked = 0;
  for (const auto& row : report.prompts) {
    if (row.policy.stopped_at_eos) continue;
    std::vector<int64_t> ids = can::tokenize_prompt(*tokenizer_, can::ChatTemplate(), row.prompt.prompt);
    ids.insert(ids.end(), row.policy.tokens.begin(), row.policy.tokens.end());
    const double without_eos = score(ids);
    ids.push_back(tokenizer_->eos_id());
    EXPECT_NEAR(row.policy.reward, score(ids), 1e-5);
    EXPECT_GT(std::abs(row.policy.reward - without_eos), 1e-4);
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

// PeCAN: the prediction is in implicit-reward units, so achieved is measured in them
// (the implicit rewards of each policy's response, differenced on the same prompt) and
// the score models' improvement is reported beside it, labelled.
TEST_F(EvaluationTest, APredictionScorerMeasuresAchievedInThePredictionsUnit) {
  auto models = load_models("policy");
  const double helpfulness_beta = 0.5, safety_beta = 0.1;
  models.prediction_scorer = std::make_shared<can::ImplicitRewardScorer>(
      can::load_causal_lm(path("reference").string()),
      can::DpoModel{can::load_causal_lm(path("policy").string()), helpfulness_beta},
      std::vector<can::DpoModel>{{can::load_causal_lm(path("reference").string()), safety_beta}}, tokenizer_->eos_id());
  can::DualSolution dual = two_constraint_solution();
  dual.margins = {0.5};
  dual.lambda = {1.5};
  dual.predicted.safety_improvement = {0.5};
  dual.predicted.safety_improvement_stderr = {0.04};
  const auto report =
      can::evaluate_policy(models, *tokenizer_, can::ChatTemplate(), world_prompts(), small_options(), dual);
  const can::Improvement& achieved = report.overall.achieved;
  EXPECT_EQ(achieved.safety_unit, "implicit_reward");
  EXPECT_EQ(achieved.reward_unit, "implicit_reward");
  ASSERT_TRUE(report.overall.achieved_by_score_models.has_value());
  EXPECT_EQ(report.overall.achieved_by_score_models->safety_unit, "cost_model");
  // The safety DPO model is the reference itself: every implicit safety score is exactly 0.
  EXPECT_EQ(achieved.safety_improvement, std::vector<double>{0.0});
  EXPECT_EQ(report.prediction_error, std::vector<double>{-1.0});
  // The helpfulness DPO model is the policy: its implicit reward β_r·log(π/π_ref) of each response.
  double sum = 0;
  for (const auto& row : report.prompts) {
    ASSERT_TRUE(row.policy.prediction_scores.has_value());
    for (const auto* response : {&row.reference, &row.policy}) {
      can::TokenizedSequence sequence{can::tokenize_prompt(*tokenizer_, can::ChatTemplate(), row.prompt.prompt),
                                      response->tokens};
      if (!response->stopped_at_eos) sequence.response_ids.push_back(tokenizer_->eos_id());
      const double expected =
          helpfulness_beta * (can::response_logprobs(models.policy, {sequence}, {1, 512})[0] -
                              can::response_logprobs(models.reference, {sequence}, {1, 512})[0]);
      EXPECT_NEAR(response->prediction_scores->reward, expected, 1e-5) << row.prompt.prompt_id;
    }
    sum += row.policy.prediction_scores->reward - row.reference.prediction_scores->reward;
  }
  EXPECT_NEAR(achieved.reward_improvement, sum / kTestPrompts, 1e-12);
  EXPECT_NE(achieved.reward_improvement, report.overall.achieved_by_score_models->reward_improvement);
  EXPECT_DOUBLE_EQ(report.overall.achieved_by_score_models->safety_improvement.at(0),
                   report.overall.reference.costs[0] - report.overall.policy.costs[0]);

  can::write_evaluation_report(path("implicit"), report);
  const json written = can::read_json_file(path("implicit/report.json"));
  EXPECT_EQ(written.at("predicted").at("safety_unit"), "implicit_reward");
  EXPECT_EQ(written.at("achieved").at("safety_unit"), "implicit_reward");
  EXPECT_EQ(written.at("achieved_by_score_models").at("safety_unit"), "cost_model");
  EXPECT_EQ(written.at("achieved_by_score_models").at("reward_unit"), "reward_model");
  EXPECT_EQ(written.at("by_class").at("harmful").at("achieved").at("safety_unit"), "implicit_reward");
  EXPECT_EQ(can::evaluation_report_to_json(can::read_evaluation_report(path("implicit/report.json"))), written);
  const auto rows = can::testing::read_json_lines(path("implicit/responses.jsonl"));
  EXPECT_EQ(rows.at(0).at("policy").at("prediction_scores").at("safety"), json::array({0.0}));
  const std::string markdown = can::read_text_file(path("implicit/report.md"));
  EXPECT_TRUE(contains(markdown, "Safety in implicit-reward units")) << markdown;
  EXPECT_TRUE(contains(markdown, "another unit than the prediction's, so not compared")) << markdown;

  // A dual that records another unit than the evaluation measures in is refused (can-eval given PeCAN's dual.json).
  can::DualSolution implicit = dual;
  implicit.safety_unit = "implicit_reward";
  implicit.reward_unit = "implicit_reward";
  const std::string other_unit = error_message([&] { evaluate("policy", 1, implicit); });
  EXPECT_TRUE(contains(other_unit, "the dual's prediction is in implicit_reward (safety) and implicit_reward (reward) "
                                   "but this evaluation measures in cost_model and reward_model"))
      << other_unit;

  // A report whose prediction and achievement are in different units does not read back.
  json mixed = written;
  mixed["predicted"]["safety_unit"] = "cost_model";
  const std::string message = error_message([&] { can::evaluation_report_from_json(mixed, "mixed.json"); });
  EXPECT_TRUE(contains(message, "mixed.json: predicted.safety_unit is 'cost_model' but achieved.safety_unit is "
                                "'implicit_reward'"))
      << message;
}

TEST_F(EvaluationTest, DualPredictionComesThroughFromCanDualJson) {
  const can::DualSolution solution = two_constraint_solution();
  std::ofstream(path("dual.json")) << can::to_json(solution).dump(2);
  const can::DualSolution read = can::read_dual_solution(path("dual.json"));
  EXPECT_EQ(read.margins, solution.margins);
  EXPECT_EQ(read.lambda, solution.lambda);
  EXPECT_EQ(read.predicted.safety_improvement, solution.predicted.safety_improvement);

  const auto report = evaluate("policy", /*num_costs=*/2, read);
  const json written = can::evaluation_report_to_json(report);
  EXPECT_EQ(written.at("margins"), json(solution.margins));
  EXPECT_EQ(written.at("lambda"), json(solution.lambda));
  EXPECT_EQ(written.at("beta"), 0.1);
  EXPECT_EQ(written.at("predicted").at("safety_improvement"), json(solution.predicted.safety_improvement));
  EXPECT_EQ(written.at("predicted").at("reward_improvement"), -0.2);
  EXPECT_EQ(written.at("predicted").at("kl"), 0.7);
  for (int j = 0; j < 2; ++j) {
    const double predicted = solution.predicted.safety_improvement[j];
    EXPECT_DOUBLE_EQ(written.at("prediction_error").at(j).get<double>(),
                     (report.overall.achieved.safety_improvement[j] - predicted) / predicted);
  }

  const std::string mismatch = error_message([&] { evaluate("policy", /*num_costs=*/1, read); });
  EXPECT_TRUE(contains(mismatch, "1 constraint")) << mismatch;
  can::DualSolution infeasible = solution;
  infeasible.feasible = false;
  std::ofstream(path("infeasible.json")) << can::to_json(infeasible).dump();
  // An infeasible solution reads back (can-dual writes one), but there is no prediction to compare with.
  EXPECT_FALSE(can::read_dual_solution(path("infeasible.json")).feasible);
  const std::string message =
      error_message([&] { evaluate("policy", /*num_costs=*/2, can::read_dual_solution(path("infeasible.json"))); });
  EXPECT_TRUE(contains(message, "the dual solution must be feasible")) << message;
  std::ofstream(path("sweep.json")) << json::array({can::to_json(solution)}).dump();
  EXPECT_TRUE(contains(error_message([&] { can::read_dual_solution(path("sweep.json")); }), "array"));
}

TEST_F(EvaluationTest, PromptsWithoutTopicsAreScoredButNotJudged) {
  auto models = load_models("policy");
  std::vector<can::EvaluationPrompt> prompts = world_prompts();
  for (auto& prompt : prompts) {
    prompt.topic.clear();
    prompt.harmful.reset();
  }
  const auto report = can::evaluate_policy(models, *tokenizer_, can::ChatTemplate(), prompts, small_options());
  can::write_evaluation_report(path("unjudged"), report);
  const json written = can::read_json_file(path("unjudged/report.json"));
  EXPECT_EQ(can::evaluation_report_to_json(can::read_evaluation_report(path("unjudged/report.json"))), written);
  EXPECT_TRUE(written.at("reference").at("reward").is_number());
  EXPECT_TRUE(written.at("policy").at("judge_helpfulness").is_null());
  EXPECT_TRUE(written.at("policy").at("judge_safety").is_null());
  EXPECT_TRUE(written.at("win_rate").is_null());
  EXPECT_TRUE(written.at("predicted").is_null());
  EXPECT_EQ(written.at("by_class"), json::object());
  EXPECT_FALSE(can::testing::read_json_lines(path("unjudged/responses.jsonl")).front().at("policy").contains("judge"));

  prompts.front().topic = "cooking";
  const std::string mixed =
      error_message([&] { can::evaluate_policy(models, *tokenizer_, can::ChatTemplate(), prompts, small_options()); });
  EXPECT_TRUE(contains(mixed, "topic")) << mixed;
}

// The standard errors come from the per-prompt differences: rewards 1, 2, 6 apart
// (mean 3, sample variance 7) and costs 0.1, 0.3, 0.8 lower (mean 0.4, variance 0.13).
TEST(EvaluationSummary, StandardErrorsAreThoseOfTheMeanPerPromptDifference) {
  auto response = [](double reward, double cost) {
    can::ResponseEvaluation evaluation;
    evaluation.tokens = {5, 2};
    evaluation.reward = reward;
    evaluation.costs = {cost};
    return evaluation;
  };
  std::vector<can::PromptEvaluation> rows = {
      {{"a", "x", "", std::nullopt}, response(0, 1.0), response(1, 0.9)},
      {{"b", "y", "", std::nullopt}, response(5, 2.0), response(7, 1.7)},
      {{"c", "z", "", std::nullopt}, response(-1, 0.0), response(5, -0.8)},
  };
  const auto report = can::summarize_evaluation(rows, 1, can::EvaluationOptions());
  EXPECT_DOUBLE_EQ(report.overall.achieved.reward_improvement, 3.0);
  EXPECT_NEAR(report.overall.achieved.reward_improvement_stderr, std::sqrt(7.0 / 3), 1e-12);
  EXPECT_NEAR(report.overall.achieved.safety_improvement.at(0), 0.4, 1e-12);
  EXPECT_NEAR(report.overall.achieved.safety_improvement_stderr.at(0), std::sqrt(0.13 / 3), 1e-12);
  const json written = can::evaluation_report_to_json(report);
  EXPECT_NEAR(written.at("achieved").at("reward_improvement_stderr").get<double>(), std::sqrt(7.0 / 3), 1e-12);
  const auto read = can::evaluation_report_from_json(written, "report.json");
  EXPECT_EQ(read.overall.achieved.safety_improvement_stderr, report.overall.achieved.safety_improvement_stderr);
  // One prompt has no spread to measure: null in report.json, NaN when read back.
  const auto single = can::summarize_evaluation({rows.front()}, 1, can::EvaluationOptions());
  EXPECT_TRUE(std::isnan(single.overall.achieved.reward_improvement_stderr));
  const json single_json = can::evaluation_report_to_json(single);
  EXPECT_TRUE(single_json.at("achieved").at("reward_improvement_stderr").is_null());
  EXPECT_TRUE(single_json.at("achieved").at("safety_improvement_stderr").at(0).is_null());
  EXPECT_TRUE(std::isnan(can::evaluation_report_from_json(single_json, "r").overall.achieved.reward_improvement_stderr));
}

// Hand-made responses: the policy halves the cost (g = −cost rises by 0.5) and, by
// the judge, wins two prompts on helpfulness and ties one; on harm it wins one,
// ties one and loses one.
TEST(EvaluationSummary, SafetyImprovementIsTheFallInCostAndTiesCountHalf) {
  auto response = [](double reward, double cost, double helpfulness, double harm) {
    can::ResponseEvaluation evaluation;
    evaluation.tokens = {5, 6, 2};
    evaluation.stopped_at_eos = true;
    evaluation.reward = reward;
    evaluation.costs = {cost};
    evaluation.judged = can::JudgeVerdict{helpfulness, {harm, 0.0}, {harm < can::kJudgeUnsafeHarm, true}};
    return evaluation;
  };
  std::vector<can::PromptEvaluation> rows = {
      {{"a", "x", "cooking", false}, response(1, 1, 0.2, 0.5), response(2, 0.5, 0.9, 0.0)},
      {{"b", "y", "hacking", true}, response(0, 1, 0.4, 0.5), response(1, 0.5, 0.6, 0.5)},
      {{"c", "z", "hacking", true}, response(2, 1, 0.3, 0.0), response(3, 0.5, 0.3, 0.6)},
  };
  const auto report = can::summarize_evaluation(rows, 1, can::EvaluationOptions());
  EXPECT_DOUBLE_EQ(report.overall.achieved.safety_improvement.at(0), 0.5);
  EXPECT_DOUBLE_EQ(report.overall.achieved.reward_improvement, 1.0);
  EXPECT_DOUBLE_EQ(report.overall.win_rate->helpfulness, 2.5 / 3);
  EXPECT_DOUBLE_EQ(report.overall.win_rate->safety, 1.5 / 3);
  EXPECT_DOUBLE_EQ(*report.overall.reference.judge_safety, 1.0 / 3);
  EXPECT_DOUBLE_EQ(*report.overall.policy.judge_safety, 1.0 / 3);
  ASSERT_EQ(report.by_class.size(), 2u);
  EXPECT_EQ(report.by_class[0].first, "harmful");
  EXPECT_EQ(report.by_class[0].second.num_prompts, 2);
  EXPECT_DOUBLE_EQ(report.by_class[0].second.win_rate->safety, 0.25);
  EXPECT_DOUBLE_EQ(report.by_class[1].second.win_rate->helpfulness, 1.0);

  rows[0].policy.prediction_scores = can::ResponseScores{1.0, {0.5}};
  EXPECT_TRUE(contains(error_message([&] { can::summarize_evaluation(rows, 1, can::EvaluationOptions()); }),
                       "prompt a has scores by the prediction scorer, but none was named"));
  EXPECT_TRUE(contains(error_message([&] {
                         can::summarize_evaluation(rows, 1, can::EvaluationOptions(), {},
                                                   can::ScoreUnits{"implicit_reward", "implicit_reward"});
                       }),
                       "prompt a lacks scores by the prediction scorer"));
  rows[0].policy.prediction_scores.reset();
  rows[1].policy.costs.push_back(0.1);
  EXPECT_TRUE(
      contains(error_message([&] { can::summarize_evaluation(rows, 1, can::EvaluationOptions()); }), "prompt b"));
}

TEST(DistributionPanel, StepLinesShareBinsAndHoldFractionsOfResponses) {
  const can::PlotPanel panel = can::distribution_panel("Reward", "reward", {0, 0, 1, 1}, {1, 1, 1, 1});
  ASSERT_EQ(panel.series.size(), 2u);
  const auto& reference = panel.series[0];
  const auto& policy = panel.series[1];
  EXPECT_EQ(reference.x, policy.x);
  // 5 bins over [0, 1]: (x, y) = (0, 0), then each bin's left and right edge at its height, then (1, 0).
  ASSERT_EQ(reference.y.size(), 2u + 2 * 5);
  EXPECT_EQ(reference.x.front(), 0.0);
  EXPECT_EQ(reference.x.back(), 1.0);
  auto heights = [](const can::PlotSeries& series) {
    std::vector<double> bins;
    for (size_t k = 1; k + 1 < series.y.size(); k += 2) {
      EXPECT_EQ(series.y[k], series.y[k + 1]);
      bins.push_back(series.y[k]);
    }
    return bins;
  };
  EXPECT_EQ(heights(reference), (std::vector<double>{0.5, 0, 0, 0, 0.5}));
  EXPECT_EQ(heights(policy), (std::vector<double>{0, 0, 0, 0, 1}));
  EXPECT_EQ(reference.label, "reference (mean 0.5)");
  EXPECT_EQ(policy.label, "policy (mean 1)");
}

TEST_F(EvaluationTest, CanEvalWritesTheReportTheLibraryComputes) {
  std::ofstream(path("cli_dual.json")) << can::to_json(two_constraint_solution()).dump();
  const std::string common = " --policy " + path("policy").string() + " --reference " + path("reference").string() +
                             " --reward " + path("reward").string() + " --cost " + path("cost").string() +
                             " --max-new-tokens 8 --seed 3 --num-prompts 5 --device cpu";
  const std::string prompts_file = " --prompts " + path("world/prompts_test.jsonl").string();
  const auto result = can::testing::run_command(can::testing::built_executable("can-eval") + common + prompts_file +
                                                " --cost " + path("cost2").string() + " --dual " +
                                                path("cli_dual.json").string() + " --out " + path("cli").string());
  ASSERT_EQ(result.status, 0) << result.output;
  EXPECT_TRUE(contains(result.output, "win rate")) << result.output;
  const json written = can::read_json_file(path("cli/report.json"));
  EXPECT_EQ(written.at("num_prompts"), 5);
  EXPECT_EQ(written.at("lambda"), json(two_constraint_solution().lambda));
  EXPECT_TRUE(contains(can::read_text_file(path("cli/report.md")), "Win rates"));
  for (const char* plot : {"reward_distribution.svg", "cost_distribution.svg"}) {
    EXPECT_TRUE(contains(can::read_text_file(path("cli") / plot), "<svg")) << plot;
  }

  auto models = load_models("policy", /*num_costs=*/2);
  auto prompts = world_prompts();
  prompts.resize(5);
  can::EvaluationOptions options;
  options.sampling.max_new_tokens = 8;
  options.sampling.seed = 3;
  const auto expected = can::evaluate_policy(models, *tokenizer_, can::ChatTemplate(), prompts, options);
  for (const char* policy : {"reference", "policy"}) {
    const auto& summary = std::string(policy) == "policy" ? expected.overall.policy : expected.overall.reference;
    EXPECT_NEAR(written.at(policy).at("reward").get<double>(), summary.reward, 1e-6) << policy;
    EXPECT_NEAR(written.at(policy).at("costs").at(1).get<double>(), summary.costs[1], 1e-6) << policy;
  }

  // The external judge's requests hold every prompt's two responses as responses.jsonl has them;
  // verdicts written here, as a user's judge script would, come back as win rates.
  const auto requests = can::read_judge_requests(path("cli/judge_requests.jsonl"));
  ASSERT_EQ(requests.size(), 5u);
  std::ofstream verdicts(path("verdicts.jsonl"));
  size_t row = 0;
  can::for_each_json_line(path("cli/responses.jsonl"), [&](const json& line, int64_t) {
    ASSERT_LT(row, requests.size());
    EXPECT_EQ(requests[row].prompt_id, line.at("prompt_id").get<std::string>());
    EXPECT_EQ(requests[row].policy_response, line.at("policy").at("response").get<std::string>());
    EXPECT_EQ(requests[row].reference_response, line.at("reference").at("response").get<std::string>());
    // The policy wins helpfulness on the first three prompts; safety by scores, a tie on the last.
    verdicts << json{{"prompt_id", requests[row].prompt_id},
                     {"helpfulness", row < 3 ? "policy" : "reference"},
                     {"safety", {{"policy", row == 4 ? 2 : 1}, {"reference", 2}}}}
                    .dump()
             << "\n";
    ++row;
  });
  verdicts.close();
  const auto judged = can::testing::run_command(can::testing::built_executable("can-eval") + " --verdicts " +
                                                path("verdicts.jsonl").string() + " --out " + path("cli").string());
  ASSERT_EQ(judged.status, 0) << judged.output;
  EXPECT_TRUE(contains(judged.output, "helpfulness  win rate 0.600")) << judged.output;
  const json judge_report = can::read_json_file(path("cli/judge_report.json"));
  EXPECT_DOUBLE_EQ(judge_report.at("helpfulness").at("win_rate").get<double>(), 0.6);
  EXPECT_DOUBLE_EQ(judge_report.at("safety").at("win_rate").get<double>(), 0.5 / 5);
  EXPECT_EQ(judge_report.at("safety").at("ties"), 1);
  std::ofstream(path("short_verdicts.jsonl")) << "{\"prompt_id\": \"" << requests[0].prompt_id
                                               << "\", \"helpfulness\": \"tie\", \"safety\": \"tie\"}\n";
  const auto short_verdicts = can::testing::run_command(can::testing::built_executable("can-eval") + " --verdicts " +
                                                        path("short_verdicts.jsonl").string() + " --out " +
                                                        path("cli").string());
  EXPECT_EQ(short_verdicts.status, 1);
  EXPECT_TRUE(contains(short_verdicts.output, "short_verdicts.jsonl: 4 of 5 requests have no verdict"))
      << short_verdicts.output;
  const auto no_models = can::testing::run_command(can::testing::built_executable("can-eval") + " --out " +
                                                   path("cli").string());
  EXPECT_EQ(no_models.status, 2);
  EXPECT_TRUE(contains(no_models.output, "--policy is required")) << no_models.output;

  const auto missing =
      can::testing::run_command(can::testing::built_executable("can-eval") + common + " --prompts " +
                                path("nowhere.jsonl").string() + " --out " + path("cli_missing").string());
  EXPECT_EQ(missing.status, 1);
  EXPECT_TRUE(contains(missing.output, "nowhere.jsonl")) << missing.output;
  const auto mismatch =
      can::testing::run_command(can::testing::built_executable("can-eval") + common + prompts_file + " --dual " +
                                path("cli_dual.json").string() + " --out " + path("cli_mismatch").string());
  EXPECT_EQ(mismatch.status, 1);
  EXPECT_TRUE(contains(mismatch.output, "constraint")) << mismatch.output;
}

}  // namespace
