// can-eval: evaluate an aligned policy against the reference on held-out prompts
// (docs/design.md §3, step 5) and write a report.
//
//   can-eval --policy DIR --reference DIR --reward DIR --cost DIR [--cost DIR2 ...] --prompts FILE
//            [--dual FILE] --out DIR [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S]
//            [--batch-size B] [--device auto] [--chat-template T] [--num-prompts K] [--prompt-set NAME]
//
// The tokenizer is the policy directory's (tokenizer.model or tokenizer.json). --prompts is JSON
// Lines {prompt_id, prompt, optional topic and harmful} (the synthetic world's
// prompts_test.jsonl); with topics the synthetic world's judge scores every
// response too. --dual is a can-dual --json solution: its predictions are set
// beside what the policy achieved, in cost-model units: it must come from offline scores
// of these reward and cost models (not from PeCAN's implicit rewards). Writes report.json, report.md,
// responses.jsonl, judge_requests.jsonl, reward_distribution.svg and cost_distribution.svg into --out.
//
//   can-eval --verdicts FILE --out DIR
//
// An external judge's verdicts on DIR/judge_requests.jsonl (external_judge.h documents
// both formats) into the policy's win rates against the reference with 95% intervals:
// DIR/judge_report.json, and a summary on stdout. No model is loaded.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <optional>

#include "can/atomic_file.h"
#include "can/chat_template.h"
#include "can/cli.h"
#include "can/error.h"
#include "can/evaluation.h"
#include "can/external_judge.h"
#include "can/logging.h"
#include "can/runtime.h"
#include "can/tokenizer.h"

namespace {

void print_summary(const can::EvaluationReport& report) {
  const can::EvaluationSummary& overall = report.overall;
  auto optional = [](const std::optional<double>& value) { return value ? fmt::format("{:.4f}", *value) : "-"; };
  std::cout << fmt::format("{} prompts\n  {:<28}{:>12}{:>12}\n", overall.num_prompts, "", "reference", "policy")
            << fmt::format("  {:<28}{:>12.4f}{:>12.4f}\n", "reward", overall.reference.reward, overall.policy.reward);
  for (int j = 0; j < report.num_constraints; ++j) {
    std::cout << fmt::format("  {:<28}{:>12.4f}{:>12.4f}\n", fmt::format("cost {}", j), overall.reference.costs[j],
                             overall.policy.costs[j]);
  }
  std::cout << fmt::format("  {:<28}{:>12}{:>12}\n", "judge helpfulness", optional(overall.reference.judge_helpfulness),
                           optional(overall.policy.judge_helpfulness))
            << fmt::format("  {:<28}{:>12}{:>12}\n", "judge safety (safe fraction)",
                           optional(overall.reference.judge_safety), optional(overall.policy.judge_safety));
  for (int j = 0; j < report.num_constraints; ++j) {
    std::cout << fmt::format("  safety improvement {} ({}): achieved {:.4f}", j, overall.achieved.safety_unit,
                             overall.achieved.safety_improvement[j]);
    if (report.dual) std::cout << fmt::format(", predicted {:.4f}", report.dual->predicted.safety_improvement[j]);
    std::cout << '\n';
  }
  std::cout << fmt::format("  reward improvement ({}): achieved {:.4f}", overall.achieved.reward_unit,
                           overall.achieved.reward_improvement);
  if (report.dual) std::cout << fmt::format(", predicted {:.4f}", report.dual->predicted.reward_improvement);
  std::cout << '\n';
  if (overall.win_rate) {
    std::cout << fmt::format("  win rate against the reference: helpfulness {:.3f}, safety {:.3f}\n",
                             overall.win_rate->helpfulness, overall.win_rate->safety);
  }
}

void print_win_rate(const std::string& question, const can::WinRate& rate) {
  std::cout << fmt::format("  {:<12} win rate {:.3f} (95% interval {:.3f} to {:.3f}); wins {}, ties {}, losses {}\n",
                           question, rate.win_rate, rate.low, rate.high, rate.wins, rate.ties, rate.losses);
}

int read_verdicts(const std::string& verdicts_path, const std::string& out_dir) {
  try {
    const std::filesystem::path directory(out_dir);
    const auto requests = can::read_judge_requests(directory / "judge_requests.jsonl");
    const can::ExternalJudgement judgement = can::judge_verdicts(requests, verdicts_path);
    can::write_text_atomically(directory / "judge_report.json",
                               can::external_judgement_to_json(judgement).dump(2) + "\n");
    std::cout << fmt::format("{} prompts judged by {}: the policy against the reference\n", judgement.num_prompts,
                             verdicts_path);
    print_win_rate("helpfulness", judgement.helpfulness);
    print_win_rate("safety", judgement.safety);
  } catch (const std::exception& error) {
    std::cerr << "can-eval: error: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Evaluate an aligned policy against the reference on held-out prompts: score models, the synthetic world's "
      "judge, win rates, and the dual's prediction beside what was achieved."};
  std::string policy_dir, reference_dir, reward_dir, prompts_path, dual_path, out_dir;
  std::vector<std::string> cost_dirs;
  std::string device_name = "auto", pattern = can::ChatTemplate::kSafeRlhf;
  int64_t num_prompts = 0;
  std::string prompt_set;
  can::EvaluationOptions options;
  app.add_option("--policy", policy_dir, "aligned policy directory (its tokenizer is used)")
      ->check(CLI::ExistingDirectory);
  app.add_option("--reference", reference_dir, "reference policy directory")->check(CLI::ExistingDirectory);
  app.add_option("--reward", reward_dir, "reward model directory")->check(CLI::ExistingDirectory);
  app.add_option("--cost", cost_dirs, "cost model directory (higher = less safe); once per constraint")
      ->check(CLI::ExistingDirectory);
  app.add_option("--prompts", prompts_path, "held-out prompts, JSON Lines {prompt_id, prompt[, topic, harmful]}");
  app.add_option("--dual", dual_path, "dual solution (can-dual --json) whose prediction is compared");
  app.add_option("--out", out_dir, "report directory")->required();
  std::string verdicts_path;
  app.add_option("--verdicts", verdicts_path,
                 "an external judge's verdicts on --out's judge_requests.jsonl: win rates into judge_report.json "
                 "(no other option is read then)")
      ->check(CLI::ExistingFile);
  app.add_option("--max-new-tokens", options.sampling.max_new_tokens, "new tokens per response at most")
      ->capture_default_str();
  app.add_option("--temperature", options.sampling.temperature, "0 is greedy")->capture_default_str();
  app.add_option("--top-p", options.sampling.top_p, "nucleus sampling mass")->capture_default_str();
  app.add_option("--seed", options.sampling.seed, "sampling seed, the same for both policies")
      ->check(can::seed_number())
      ->capture_default_str();
  app.add_option("--batch-size", options.sampling.batch_size, "prompts decoded and sequences scored together")
      ->capture_default_str();
  app.add_option("--device", device_name, "auto, cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--chat-template", pattern, "template with one {prompt}, or 'model': the model folder's own")
        ->capture_default_str();
  app.add_option("--num-prompts", num_prompts, "evaluate the first K prompts only (0: all)")
      ->check(can::number_at_least(0))
      ->capture_default_str();
  app.add_option("--prompt-set", prompt_set,
                 "how report.json names the prompts (prompt_set; default: the --prompts path), e.g. "
                 "held_out_templates for a run's data/prompts_test.jsonl, to compare with can-train's reports");
  if (const auto status = can::parse_arguments(app, argc, argv)) return *status;
  if (!verdicts_path.empty()) return read_verdicts(verdicts_path, out_dir);
  for (const auto& [name, given] : {std::pair<const char*, bool>{"--policy", !policy_dir.empty()},
                                    {"--reference", !reference_dir.empty()},
                                    {"--reward", !reward_dir.empty()},
                                    {"--cost", !cost_dirs.empty()},
                                    {"--prompts", !prompts_path.empty()}}) {
    if (!given) {
      std::cerr << "can-eval: " << name << " is required (unless --verdicts reads an external judge's verdicts)\n"
                << "Run with --help for more information." << std::endl;
      return can::kExitUsage;
    }
  }
  try {
    can::setup_logging("info");
    can::configure_threads();
    options.scoring.batch_size = options.sampling.batch_size;
    const auto chat_template = can::ChatTemplate::from_setting(pattern, policy_dir);
    // Inputs first: a bad prompts or dual file fails before any model loads.
    std::vector<can::EvaluationPrompt> prompts = can::load_evaluation_prompts(prompts_path);
    if (num_prompts > 0 && num_prompts < static_cast<int64_t>(prompts.size())) prompts.resize(num_prompts);
    std::optional<can::DualSolution> dual;
    if (!dual_path.empty()) dual = can::read_dual_solution(dual_path);
    const auto tokenizer = can::Tokenizer::load(policy_dir);
    const auto device = can::select_device(device_name);
    can::EvaluationModels models;
    models.policy = can::load_causal_lm(policy_dir, device);
    models.reference = can::load_causal_lm(reference_dir, device);
    tokenizer.check_fits(models.policy->config.vocab_size, policy_dir);
    tokenizer.check_fits(models.reference->config.vocab_size, reference_dir);
    std::vector<can::LlamaForScore> costs;
    for (const std::string& cost_dir : cost_dirs) {
      costs.push_back(can::load_score_model(cost_dir, device));
      tokenizer.check_fits(costs.back()->config.vocab_size, cost_dir);
      costs.back()->eval();
    }
    can::LlamaForScore reward = can::load_score_model(reward_dir, device);
    tokenizer.check_fits(reward->config.vocab_size, reward_dir);
    reward->eval();
    models.scorer = std::make_shared<can::ScoreModelScorer>(reward, costs, tokenizer.eos_id());
    models.policy->eval();
    models.reference->eval();
    spdlog::info("evaluating {} prompts from {} on {}", prompts.size(), prompts_path, device.str());
    can::EvaluationReport report = can::evaluate_policy(models, tokenizer, chat_template, prompts, options, dual);
    report.prompt_set = prompt_set.empty() ? prompts_path : prompt_set;
    can::write_evaluation_report(out_dir, report);
    print_summary(report);
  } catch (const std::exception& error) {
    std::cerr << "can-eval: error: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
