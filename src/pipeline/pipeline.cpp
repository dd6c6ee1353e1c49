// The MoCAN and PeCAN pipelines and the primal-dual baseline (docs/design.md §3) as
// ordered stages of can-train.
// Each stage reads earlier stages' artifacts and writes its own into its work
// directory (stage_runner.h). Artifacts:
//   data/            pairs_train.jsonl, sft_train.jsonl, prompts_sample.jsonl, prompts_test.jsonl, corpus.txt
//   tokenizer/       tokenizer.model, or tokenizer.json and tokenizer_config.json
//   reference/       model/ (π_ref, Hugging Face layout), metrics.jsonl
//   reward_model/, cost_model/        model/ (LlamaForScore), metrics.jsonl
//   helpfulness_dpo/, safety_dpo/     model/ (PeCAN's π_r and π_g), adapter/ (with LoRA)
//   (with m > 1 safety constraints one cost model and one safety DPO model per
//   constraint j: cost_model_<j>/, safety_dpo_<j>/, constraint_stage)
//   offline_scores/  scores.jsonl (docs/design.md §5), responses.jsonl
//   dual/            dual.json (can-dual --json's object)
//   relabel/         pairs.jsonl (better_response_id = the pseudo-preference), probabilities.jsonl
//   dpo/             model/ (the aligned policy, LoRA merged), adapter/ (PEFT adapters, with LoRA), metrics.jsonl
//   eval/            report.json, report.md, responses.jsonl, plots
//   round-<k>/       (primal_dual) responses.jsonl, scores.jsonl, pair_scores.jsonl (round 0), pairs.jsonl,
//                    round.json (primal_dual.h), model/, adapter/ (with LoRA), metrics.jsonl
// A model directory given in config.models replaces the stage that would train it.
#include "can/json_fields.h"
#include "can/pipeline.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <limits>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <tuple>

#include "can/atomic_file.h"
#include "can/batch_inference.h"
#include "can/chat_template.h"
#include "can/dpo_trainer.h"
#include "can/dual.h"
#include "can/error.h"
#include "can/evaluation.h"
#include "can/hf_checkpoint.h"
#include "can/json_lines.h"
#include "can/lora.h"
#include "can/model_weights.h"
#include "can/offline_sampling.h"
#include "can/primal_dual.h"
#include "can/relabel.h"
#include "can/runtime.h"
#include "can/score_accuracy.h"
#include "can/score_model_trainer.h"
#include "can/scorer.h"
#include "can/sft_trainer.h"
#include "can/sweep_report.h"
#include "can/synthetic_world.h"
#include "can/tokenizer.h"

namespace can {

int64_t holdout_size(int64_t examples) {
  return std::min(examples - 1, std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(examples) * 0.05)));
}

namespace {

namespace fs = std::filesystem;

// ------------------------------------------------------------------ shared helpers

// The configured options of one training run, with what the stage decides: seed, resumption, output.
TrainingOptions training_options(const TrainingOptions& configured, const Config& config,
                                 const StageContext& context) {
  TrainingOptions options = configured;
  options.seed = static_cast<uint64_t>(config.run.seed);
  options.resume = context.resuming;
  options.output_dir = context.work_dir;
  options.process_group = context.group;
  options.shard_optimizer = context.group != nullptr && config.distributed.shard_optimizer;
  return options;
}

// The last holdout_size(n) examples are held out for the trainers' evaluation metrics;
// the rest are trained on.
template <typename T>
std::pair<std::vector<T>, std::vector<T>> split_holdout(std::vector<T> examples) {
  const auto held = static_cast<size_t>(holdout_size(static_cast<int64_t>(examples.size())));
  std::vector<T> holdout(examples.end() - held, examples.end());
  examples.resize(examples.size() - held);
  return {std::move(examples), std::move(holdout)};
}

c10::Device device(const Config& config) { return select_device(config.run.device); }

ChatTemplate chat_template(const Config& config) {
  return ChatTemplate::from_setting(config.data.chat_template, config.models.policy);
}

// Every model of the run computes in run.compute_dtype. A model that is trained keeps
// float32 master weights; one that only runs forward is stored in the compute dtype
// (a 7B model in bfloat16 takes half the memory of float32).
void apply_compute_dtype(const Config& config, torch::nn::Module& model) {
  if (config.run.compute_dtype == "bfloat16") set_compute_dtype(model, torch::kBFloat16);
}

torch::ScalarType frozen_dtype(const Config& config) {
  return config.run.compute_dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
}

// A causal LM that only runs forward (sampling, log-probs, evaluation), in eval mode.
LlamaForCausalLM load_policy_model(const Config& config, const fs::path& directory) {
  LlamaForCausalLM model = load_causal_lm(directory.string(), device(config), frozen_dtype(config));
  apply_compute_dtype(config, *model);
  model->eval();
  return model;
}

// A score model that only runs forward, in eval mode.
LlamaForScore load_scoring_model(const Config& config, const fs::path& directory) {
  LlamaForScore model = load_score_model(directory.string(), device(config), frozen_dtype(config));
  apply_compute_dtype(config, *model);
  model->eval();
  return model;
}

// Where a model comes from: the user's directory, or the artifact of the stage that trains it.
fs::path model_directory(const StageContext& context, const std::string& given, const std::string& stage) {
  return given.empty() ? context.artifact(stage) / "model" : fs::path(given);
}

fs::path reference_directory(const Config& config, const StageContext& context) {
  return model_directory(context, config.models.policy, "reference");
}

// The stage that trains constraint j's model of kind `base` ("cost_model", "safety_dpo"):
// `base` itself with one constraint, "<base>_<j>" with several.
std::string constraint_stage(const std::string& base, int j, const Config& config) {
  return num_constraints(config) == 1 ? base : fmt::format("{}_{}", base, j);
}

// Constraint j's model given in `given` (models.cost, models.safety_dpo); empty: trained in the run.
std::string given_model(const std::vector<std::string>& given, int j) {
  return given.empty() ? std::string() : given[static_cast<size_t>(j)];
}

// The pairs with constraint j's safety labels (what its cost model or safety DPO model learns).
std::vector<PreferencePair> constraint_pairs(const StageContext& context, int j) {
  std::vector<PreferencePair> pairs = read_preference_pairs(context.artifact("data") / "pairs_train.jsonl");
  for (PreferencePair& pair : pairs) pair = pair.for_constraint(j);
  return pairs;
}

// MoCAN's reward and cost models: given in config.models, or trained in the run.
std::unique_ptr<ScoreModelScorer> score_model_scorer(const Config& config, const StageContext& context,
                                                     const Tokenizer& tokenizer) {
  LlamaForScore reward = load_scoring_model(config, model_directory(context, config.models.reward, "reward_model"));
  std::vector<LlamaForScore> costs;
  for (int j = 0; j < num_constraints(config); ++j) {
    costs.push_back(load_scoring_model(config, model_directory(context, given_model(config.models.cost, j),
                                                               constraint_stage("cost_model", j, config))));
  }
  return std::make_unique<ScoreModelScorer>(std::move(reward), std::move(costs), tokenizer.eos_id());
}

// The pipeline's r and g: score models (mocan), or the implicit rewards of PeCAN's pre-aligned models.
std::unique_ptr<Scorer> pipeline_scorer(const Config& config, const StageContext& context,
                                        const Tokenizer& tokenizer) {
  if (config.pipeline != "pecan") return score_model_scorer(config, context, tokenizer);
  std::vector<DpoModel> safety;
  for (int j = 0; j < num_constraints(config); ++j) {
    const fs::path directory = model_directory(context, given_model(config.models.safety_dpo, j),
                                               constraint_stage("safety_dpo", j, config));
    safety.push_back({load_policy_model(config, directory), config.pecan.safety_dpo.loss.beta});
  }
  const fs::path helpfulness = model_directory(context, config.models.helpfulness_dpo, "helpfulness_dpo");
  return std::make_unique<ImplicitRewardScorer>(
      load_policy_model(config, reference_directory(config, context)),
      DpoModel{load_policy_model(config, helpfulness), config.pecan.helpfulness_dpo.loss.beta}, std::move(safety),
      tokenizer.eos_id());
}

Tokenizer load_tokenizer(const StageContext& context) { return Tokenizer::load(context.artifact("tokenizer").string()); }

// Trained models carry the run's tokenizer, so each model directory stands alone
// (can-sample, can-score and Python can open it).
void copy_tokenizer_into(const StageContext& context, const fs::path& model_dir) {
  load_tokenizer(context).save(model_dir.string());
}

// Checkpoints are for resuming the stage; once it has finished they are dead weight.
void finish_training(const StageContext& context, const TrainingSummary& summary) {
  if (!context.writes()) return;
  copy_tokenizer_into(context, summary.model_directory);
  remove_tree(context.work_dir / "checkpoints");
}

std::vector<std::pair<std::string, std::string>> read_prompts(const fs::path& path, int64_t limit) {
  std::vector<std::pair<std::string, std::string>> prompts;
  for (const auto& prompt : load_evaluation_prompts(path)) {
    if (static_cast<int64_t>(prompts.size()) == limit) break;
    prompts.emplace_back(prompt.prompt_id, prompt.prompt);
  }
  return prompts;
}

std::vector<TokenizedSequence> pair_sequences(const std::vector<PreferencePair>& pairs, int response,
                                              const Tokenizer& tokenizer, const ChatTemplate& chat) {
  std::vector<TokenizedSequence> sequences;
  for (const auto& pair : pairs)
    sequences.push_back(tokenize_sequence(tokenizer, chat, pair.prompt, pair.response(response)));
  return sequences;
}

// Sampled responses are scored whole: cutting one would read a reward or cost
// mid-response instead of at its EOS. Dataset pairs are cut as DPO cuts them. In a
// job the ranks share the batches.
BatchInferenceOptions sampled_inference_options(const Config& config, const StageContext& context) {
  return {config.sampling.generation.batch_size, std::numeric_limits<int64_t>::max(), context.group};
}

BatchInferenceOptions pair_inference_options(const Config& config, const StageContext& context) {
  return {config.sampling.generation.batch_size, config.dpo.training.max_length, context.group};
}

// The configured sampling, seeded, the job's ranks sharing the batches.
SamplingOptions sampling_options(const Config& config, const StageContext& context, uint64_t seed) {
  SamplingOptions sampling = config.sampling.generation;
  sampling.seed = seed;
  sampling.group = context.group;
  return sampling;
}

// ------------------------------------------------------------------ stages

// A JSON Lines file (plain or compressed), written plain into the run, atomically, a line at a time.
void copy_json_lines(const fs::path& from, const fs::path& to) {
  write_file_atomically(to, [&](std::ostream& out) {
    for_each_json_line(from, [&](const nlohmann::json& value, int64_t) { out << value.dump() << '\n'; });
  });
}

// The distinct prompts of `pairs` in order of first appearance, as prompt lines with ids
// "<prefix>-000000", ...; with `limit` >= 0, that many of them drawn at random with
// `seed` (a Fisher–Yates shuffle on raw mt19937_64 outputs, the same on every platform).
void write_pair_prompts(const std::vector<PreferencePair>& pairs, const std::string& prefix, int64_t limit,
                        uint64_t seed, const fs::path& to) {
  std::vector<std::string> prompts;
  std::set<std::string> seen;
  for (const PreferencePair& pair : pairs) {
    if (seen.insert(pair.prompt).second) prompts.push_back(pair.prompt);
  }
  std::vector<size_t> order(prompts.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  if (limit >= 0) {
    std::mt19937_64 rng(seed);
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
    order.resize(std::min(order.size(), static_cast<size_t>(limit)));
  }
  std::vector<nlohmann::json> lines;
  for (const size_t i : order) {
    lines.push_back({{"prompt_id", fmt::format("{}-{:06d}", prefix, i)}, {"prompt", prompts[i]}});
  }
  write_json_lines(to, lines);
}

void run_data(const Config& config, const StageContext& context) {
  if (config.world.enabled) {
    WorldOptions options = config.world.options;
    options.chat_template = chat_template(config);
    write_world(options, context.work_dir);
    fs::copy_file(context.work_dir / "prompts_train.jsonl", context.work_dir / "prompts_sample.jsonl");
    return;
  }
  // External inputs (plain or compressed) are validated here, once, and written plain into the run.
  const std::vector<PreferencePair> pairs = read_preference_pairs(config.data.pairs_train);
  check(pairs.front().num_constraints() == num_constraints(config),
        "{}: the pairs are labelled for {} safety constraint(s) (safety_labels), but dual.margins gives {}: give one "
        "margin per constraint",
        config.data.pairs_train, pairs.front().num_constraints(), num_constraints(config));
  write_preference_pairs(context.work_dir / "pairs_train.jsonl", pairs);
  if (config.data.prompts_sample.empty()) {
    write_pair_prompts(pairs, "train", config.sampling.num_prompts, static_cast<uint64_t>(config.run.seed),
                       context.work_dir / "prompts_sample.jsonl");
  } else {
    load_evaluation_prompts(config.data.prompts_sample);
    copy_json_lines(config.data.prompts_sample, context.work_dir / "prompts_sample.jsonl");
  }
  if (config.data.prompts_test.empty()) {
    write_pair_prompts(read_preference_pairs(config.data.pairs_test), "test", -1, 0,
                       context.work_dir / "prompts_test.jsonl");
  } else {
    load_evaluation_prompts(config.data.prompts_test);
    copy_json_lines(config.data.prompts_test, context.work_dir / "prompts_test.jsonl");
    if (!config.data.pairs_test.empty()) read_preference_pairs(config.data.pairs_test);  // validated all the same
  }
  if (!config.data.sft_train.empty()) {
    read_prompt_responses(config.data.sft_train);
    copy_json_lines(config.data.sft_train, context.work_dir / "sft_train.jsonl");
  }
}

void run_tokenizer(const Config& config, const StageContext& context) {
  const std::string given = !config.tokenizer.model.empty() ? config.tokenizer.model : config.models.policy;
  if (!given.empty()) {
    Tokenizer::load(given).save(context.work_dir.string());
  } else {
    // The corpus: the world's, or every prompt and response of the external data.
    fs::path corpus = context.artifact("data") / "corpus.txt";
    if (!fs::exists(corpus)) {
      const ChatTemplate chat = chat_template(config);
      std::string text;
      for (const auto& pair : read_preference_pairs(context.artifact("data") / "pairs_train.jsonl")) {
        text += chat.format(pair.prompt) + " " + pair.response_0 + "\n" + chat.format(pair.prompt) + " " +
                pair.response_1 + "\n";
      }
      corpus = context.work_dir / "corpus.txt";
      write_text_atomically(corpus, text);
    }
    TokenizerTrainOptions options;
    options.input_file = corpus.string();
    options.model_prefix = (context.work_dir / "tokenizer").string();
    options.vocab_size = static_cast<int>(config.tokenizer.vocab_size);
    Tokenizer::train(options);
  }
  // A tokenizer that does not load, or does not fit a given model, fails here, not three stages later.
  const Tokenizer tokenizer = Tokenizer::load(context.work_dir.string());
  std::vector<std::string> given_models = {config.models.policy, config.models.reward, config.models.helpfulness_dpo};
  given_models.insert(given_models.end(), config.models.cost.begin(), config.models.cost.end());
  given_models.insert(given_models.end(), config.models.safety_dpo.begin(), config.models.safety_dpo.end());
  for (const std::string& given : given_models) {
    if (given.empty()) continue;
    const fs::path given_config = fs::path(given) / "config.json";
    tokenizer.check_fits(LlamaConfig::from_json(read_json_file(given_config), given_config.string()).vocab_size, given);
  }
  if (!config.models.reward.empty()) check_score_type(config.models.reward, "models.reward", "reward");
  for (const std::string& cost : config.models.cost) check_score_type(cost, "models.cost", "cost");
}

LlamaConfig policy_architecture(const Config& config, const Tokenizer& tokenizer) {
  LlamaConfig architecture = config.policy;
  architecture.vocab_size = tokenizer.vocab_size();
  architecture.bos_token_id = tokenizer.bos_id();
  architecture.eos_token_id = tokenizer.eos_id();
  architecture.pad_token_id = tokenizer.pad_id();
  return architecture;
}

void run_reference(const Config& config, const StageContext& context) {
  const Tokenizer tokenizer = load_tokenizer(context);
  set_seed(static_cast<uint64_t>(config.run.seed));
  LlamaForCausalLM model(policy_architecture(config, tokenizer));
  model->to(device(config));
  apply_compute_dtype(config, *model);
  auto [train, holdout] = split_holdout(read_prompt_responses(context.artifact("data") / "sft_train.jsonl"));
  const auto summary =
      train_sft(model, tokenizer, chat_template(config), train, holdout, training_options(config.sft, config, context));
  finish_training(context, summary);
}

// A score model starts from the reference policy's backbone (Safe-RLHF
// initialises its reward and cost models from the SFT model); the head is new.
LlamaForScore score_model_from_reference(const Config& config, const StageContext& context) {
  const fs::path reference = reference_directory(config, context);
  const LlamaConfig architecture =
      LlamaConfig::from_json(read_json_file(reference / "config.json"), reference.string());
  set_seed(static_cast<uint64_t>(config.run.seed));
  LlamaForScore model(architecture);
  std::map<std::string, torch::Tensor> backbone;  // "model.x" in the checkpoint is "x" in the backbone module
  for (auto& [name, tensor] : load_checkpoint_tensors(reference)) {
    if (name.rfind("model.", 0) == 0) backbone.emplace(name.substr(6), tensor);
  }
  load_named_tensors(*model->model, backbone, reference.string());
  model->to(device(config));
  apply_compute_dtype(config, *model);
  return model;
}

// `train` is train_reward_model or train_cost_model (score_model_trainer.h), `training` its
// options, `pairs` the pairs with the labels it learns (a cost model: its constraint's).
void run_score_model(const Config& config, const StageContext& context, const TrainingOptions& training,
                     decltype(&train_reward_model) train, std::vector<PreferencePair> pairs) {
  const Tokenizer tokenizer = load_tokenizer(context);
  LlamaForScore model = score_model_from_reference(config, context);
  auto [train_pairs, holdout] = split_holdout(std::move(pairs));
  finish_training(context, train(model, tokenizer, chat_template(config), train_pairs, holdout,
                                 training_options(training, config, context)));
}

// DPO on `pairs`, preferring the response `label` names, from the weights in `start`
// (π_ref's folder, or the primal-dual pipeline's last round) against π_ref. With
// lora.rank > 0 only adapters train: model/ gets the merged weights (what later
// stages load) and adapter/ the adapters alone, in PEFT's layout, on `start`.
void run_dpo_from(const Config& config, const StageContext& context, const DpoOptions& loss,
                  const TrainingOptions& training, const std::vector<PreferencePair>& pairs, PreferenceLabel label,
                  const fs::path& start) {
  const Tokenizer tokenizer = load_tokenizer(context);
  const fs::path reference = reference_directory(config, context);
  LlamaForCausalLM model = load_causal_lm(start.string(), device(config));  // float32 master weights
  apply_compute_dtype(config, *model);
  DpoTrainingOptions options{loss, label};
  LlamaForCausalLM reference_model{nullptr};  // π_ref, when training does not start from it
  if (start != reference) {
    reference_model = load_policy_model(config, reference);
    options.reference = &reference_model;
  }
  const bool lora = config.lora.rank > 0;
  if (lora) {
    set_seed(static_cast<uint64_t>(config.run.seed));  // the adapters' initialisation, the same when resuming
    attach_lora(*model, config.lora);
  }
  auto [train, holdout] = split_holdout(pairs);
  const auto summary = train_dpo(model, tokenizer, chat_template(config), train, holdout, training, options);
  if (lora && context.writes()) {
    write_directory_atomically(context.work_dir / "adapter", [&](const fs::path& directory) {
      save_lora_adapters(*model, directory, fs::absolute(start).string());
    });
  }
  finish_training(context, summary);
}

// DPO of π_ref: the aligned policy, and PeCAN's pre-aligned models.
void run_dpo(const Config& config, const StageContext& context, const DpoStageOptions& dpo,
             const std::vector<PreferencePair>& pairs, PreferenceLabel label) {
  run_dpo_from(config, context, dpo.loss, training_options(dpo.training, config, context), pairs, label,
               reference_directory(config, context));
}

void run_offline_scores(const Config& config, const StageContext& context) {
  const Tokenizer tokenizer = load_tokenizer(context);
  std::vector<SampledPrompt> samples;
  {  // the sampling copy of π_ref is released before the scorer loads its models
    LlamaForCausalLM reference = load_policy_model(config, reference_directory(config, context));
    const auto prompts = read_prompts(context.artifact("data") / "prompts_sample.jsonl", config.sampling.num_prompts);
    spdlog::info("sampling {} responses for each of {} prompts from the reference policy",
                 config.sampling.responses_per_prompt, prompts.size());
    samples = sample_responses(reference, tokenizer, chat_template(config), prompts,
                               config.sampling.responses_per_prompt,
                               sampling_options(config, context, static_cast<uint64_t>(config.run.seed)));
  }
  if (context.writes()) write_sampled_responses(context.work_dir / "responses.jsonl", samples, tokenizer);
  const auto scorer = pipeline_scorer(config, context, tokenizer);
  const OfflineScores scores = score_samples(samples, *scorer, sampled_inference_options(config, context));
  if (!context.writes()) return;  // what follows judges the samples and writes
  scores.save(context.work_dir / "scores.jsonl");
  // On the world's prompts the judge tells how well r and g rank the samples (Theorem 3's condition).
  const auto prompts = load_evaluation_prompts(context.artifact("data") / "prompts_sample.jsonl");
  const bool judged = scorer->num_constraints() <= static_cast<int64_t>(kNumHarmKinds) &&
                      std::all_of(prompts.begin(), prompts.begin() + static_cast<int64_t>(samples.size()),
                                  [](const EvaluationPrompt& prompt) { return !prompt.topic.empty(); });
  if (!judged) return;
  std::vector<std::vector<JudgeVerdict>> verdicts;  // [M][N]
  for (size_t i = 0; i < samples.size(); ++i) {
    auto& judged = verdicts.emplace_back();
    for (const auto& response : samples[i].responses) {
      judged.push_back(judge_response(prompts[i].topic, tokenizer.decode(response)));
    }
  }
  const ScoreAccuracy accuracy = judge_agreement(scores, verdicts, scorer->reward_unit(), scorer->safety_unit());
  write_score_accuracy(context.work_dir / "accuracy.json", accuracy);
  spdlog::info("offline scores against the judge: r ranks helpfulness {:.3f} of pairs right (correlation {:.3f})",
               accuracy.reward.pairwise_accuracy, accuracy.reward.correlation);
  for (size_t j = 0; j < accuracy.safety.size(); ++j) {
    spdlog::info("offline scores against the judge: g_{} ranks {} {:.3f} of pairs right (correlation {:.3f})", j,
                 accuracy.safety[j].judge, accuracy.safety[j].pairwise_accuracy, accuracy.safety[j].correlation);
  }
  if (accuracy.safety.size() == 2) {
    spdlog::info("the reference's samples: the two constraints' unsafe indicators correlate {:.3f}",
                 accuracy.judge_unsafe_correlation[0][1]);
  }
}

void run_dual(const Config& config, const StageContext& context, const std::vector<double>& margins) {
  DualOptions options = config.dual;
  options.margins = margins;
  DualSolution solution = solve_dual(OfflineScores::load(context.artifact("offline_scores") / "scores.jsonl"), options);
  // The units of the offline scores: the pipeline's scorer's (pipeline_scorer).
  const bool pecan = config.pipeline == "pecan";
  solution.reward_unit = pecan ? kImplicitRewardUnit : kRewardModelUnit;
  solution.safety_unit = pecan ? kImplicitRewardUnit : kCostModelUnit;
  for (const auto& warning : solution.warnings) spdlog::warn("dual: {}", warning);
  for (const auto& caveat : prediction_caveats(config)) spdlog::warn("dual: the prediction may not hold: {}", caveat);
  write_dual_solution(context.work_dir / "dual.json", solution);
  check(solution.feasible, "margins {}: {}; dual.json holds the largest reachable improvement",
        nlohmann::json(margins).dump(), solution.message);
  check(solution.converged, "the dual solver did not converge: {}", solution.message);
  spdlog::info("dual: λ* = {}, predicted safety improvement {}, reward improvement {:.4f}, KL {:.4f}",
               nlohmann::json(solution.lambda).dump(), nlohmann::json(solution.predicted.safety_improvement).dump(),
               solution.predicted.reward_improvement, solution.predicted.kl);
  for (const int j : slack_constraints(solution)) {
    spdlog::info("dual: constraint {} is slack (λ*_{} = 0): aligning for the others improves it by {:.4g} ≥ its "
                 "margin {}",
                 j, j, solution.predicted.safety_improvement[j], solution.margins[j]);
  }
}

// `dual_stage` names the dual's artifact: "dual", or a sweep margin's (sweep_stage_suffix).
void run_relabel(const Config& config, const StageContext& context, const std::string& dual_stage) {
  const Tokenizer tokenizer = load_tokenizer(context);
  const ChatTemplate chat = chat_template(config);
  const DualSolution dual = read_dual_solution(context.artifact(dual_stage) / "dual.json");
  const auto pairs = read_preference_pairs(context.artifact("data") / "pairs_train.jsonl");
  const auto scorer = pipeline_scorer(config, context, tokenizer);
  // r and g of response_0 and response_1 of every pair.
  std::array<SequenceScores, 2> scores;
  for (int response = 0; response < 2; ++response) {
    scores[response] = scorer->score(pair_sequences(pairs, response, tokenizer, chat), pair_inference_options(config, context));
  }
  const auto relabeled = relabel_pairs(pairs, composite_scores(scores[0].reward, scores[0].safety, dual.lambda),
                                       composite_scores(scores[1].reward, scores[1].safety, dual.lambda),
                                       config.relabel);
  if (!context.writes()) return;
  write_preference_pairs(context.work_dir / "pairs.jsonl", relabeled.pairs);
  std::vector<nlohmann::json> lines;
  size_t changed = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    lines.push_back({{"index", i}, {"probability_response_1", relabeled.probability_1[i]}});
    changed += relabeled.pairs[i].better_response_id != pairs[i].better_response_id;
  }
  write_json_lines(context.work_dir / "probabilities.jsonl", lines);
  spdlog::info("re-labelled {} pairs with λ* = {}: {} ({:.1f}%) now prefer the other response than better_response_id",
               pairs.size(), nlohmann::json(dual.lambda).dump(), changed, 100.0 * changed / pairs.size());
}

// The policy in <policy_stage>/model against π_ref, with the prediction of <dual_stage>/dual.json
// when there is one (the primal-dual pipeline predicts nothing).
void run_eval(const Config& config, const StageContext& context, const std::string& policy_stage,
              const std::optional<std::string>& dual_stage) {
  const Tokenizer tokenizer = load_tokenizer(context);
  EvaluationModels models;
  models.policy = load_policy_model(config, context.artifact(policy_stage) / "model");
  models.reference = load_policy_model(config, reference_directory(config, context));
  models.scorer = score_model_scorer(config, context, tokenizer);
  // PeCAN's prediction is in the implicit rewards' unit: achieved is measured in it too.
  if (config.pipeline == "pecan") models.prediction_scorer = pipeline_scorer(config, context, tokenizer);
  EvaluationOptions options = config.eval.options;
  options.sampling.batch_size = config.sampling.generation.batch_size;
  options.sampling.seed = static_cast<uint64_t>(config.run.seed);
  options.sampling.group = context.group;
  options.scoring = sampled_inference_options(config, context);
  std::optional<DualSolution> dual;
  std::optional<ScoreAccuracy> accuracy;
  if (dual_stage) {
    dual = read_dual_solution(context.artifact(*dual_stage) / "dual.json");
    if (const fs::path file = context.artifact("offline_scores") / "accuracy.json"; fs::exists(file)) {
      accuracy = read_score_accuracy(file);
    }
  }
  // The held-out prompts (the world's: held-out templates and topics), and with
  // eval.same_template_prompts new prompts of the sample prompts' own templates.
  std::vector<std::tuple<std::string, std::string, fs::path>> prompt_sets = {
      {"prompts_test.jsonl", config.world.enabled ? "held_out_templates" : "data.prompts_test", context.work_dir}};
  if (config.eval.same_template_prompts) {
    prompt_sets.emplace_back("prompts_test_same_templates.jsonl", "same_templates", context.work_dir / "same_templates");
  }
  for (const auto& [file, prompt_set, directory] : prompt_sets) {
    auto prompts = load_evaluation_prompts(context.artifact("data") / file);
    if (static_cast<int64_t>(prompts.size()) > config.eval.num_prompts) prompts.resize(config.eval.num_prompts);
    spdlog::info("evaluation on {} ({} prompts)", prompt_set, prompts.size());
    auto report = evaluate_policy(models, tokenizer, chat_template(config), prompts, options, dual);
    report.prompt_set = prompt_set;
    if (dual) report.prediction_caveats = prediction_caveats(config);
    report.score_accuracy = accuracy;
    if (context.writes()) write_evaluation_report(directory, report);
  }
}

// ------------------------------------------------------------------ the primal-dual baseline

std::string round_stage(int64_t k) { return fmt::format("round-{}", k); }

// The pairs' two responses scored by r and g, as offline scores with two responses per
// "prompt" (its id: the pair's index): round 0 scores them, later rounds read them.
OfflineScores score_pairs(const Config& config, const StageContext& context, const Tokenizer& tokenizer,
                          const std::vector<PreferencePair>& pairs) {
  const auto scorer = score_model_scorer(config, context, tokenizer);
  const ChatTemplate chat = chat_template(config);
  std::array<SequenceScores, 2> scores;
  for (int response = 0; response < 2; ++response) {
    scores[response] = scorer->score(pair_sequences(pairs, response, tokenizer, chat), pair_inference_options(config, context));
  }
  const int m = num_constraints(config);
  std::vector<std::string> ids;
  std::vector<std::vector<double>> rewards;
  std::vector<std::vector<std::vector<double>>> safety;
  for (size_t i = 0; i < pairs.size(); ++i) {
    ids.push_back(std::to_string(i));
    rewards.push_back({scores[0].reward[i], scores[1].reward[i]});
    auto& pair_safety = safety.emplace_back();
    for (int j = 0; j < m; ++j) pair_safety.push_back({scores[0].safety[j][i], scores[1].safety[j][i]});
  }
  return OfflineScores(std::move(ids), rewards, safety);
}

// r + λᵀg of response `response` (0 or 1) of every pair, from score_pairs' table.
std::vector<double> pair_composite_scores(const OfflineScores& pair_scores, int response,
                                          const std::vector<double>& lambda) {
  const int m = pair_scores.num_constraints();
  std::vector<double> reward;
  std::vector<std::vector<double>> safety(static_cast<size_t>(m));
  for (int64_t i = 0; i < pair_scores.num_prompts(); ++i) {
    const int64_t row = pair_scores.offsets()[i] + response;
    reward.push_back(pair_scores.rewards()[row]);
    for (int j = 0; j < m; ++j) safety[j].push_back(pair_scores.safety()[row * m + j]);
  }
  return composite_scores(reward, safety, lambda);
}

// Round k's first half: sample the policy it starts from (`start`) on the sampling
// prompts, score the samples, take the dual step and re-label the pairs with the new λ.
// Writes responses.jsonl, scores.jsonl, pair_scores.jsonl (round 0), pairs.jsonl and,
// last, round.json; returns the round and the re-labelled pairs.
std::pair<PrimalDualRound, std::vector<PreferencePair>> sample_and_relabel(const Config& config,
                                                                           const StageContext& context, int64_t k,
                                                                           const fs::path& start) {
  const Tokenizer tokenizer = load_tokenizer(context);
  std::vector<SampledPrompt> samples;
  {  // the sampling copy of the policy is released before the scorers load
    LlamaForCausalLM policy = load_policy_model(config, start);
    // Each round draws new samples.
    const SamplingOptions sampling = sampling_options(config, context, static_cast<uint64_t>(config.run.seed + k));
    const auto prompts = read_prompts(context.artifact("data") / "prompts_sample.jsonl", config.sampling.num_prompts);
    spdlog::info("round {}: sampling {} responses for each of {} prompts from {}", k,
                 config.primal_dual.responses_per_prompt, prompts.size(),
                 k == 0 ? "π_ref" : fmt::format("round {}'s policy", k - 1));
    samples = sample_responses(policy, tokenizer, chat_template(config), prompts,
                               config.primal_dual.responses_per_prompt, sampling);
  }
  if (context.writes()) write_sampled_responses(context.work_dir / "responses.jsonl", samples, tokenizer);
  const OfflineScores scores =
      score_samples(samples, *score_model_scorer(config, context, tokenizer), sampled_inference_options(config, context));
  if (context.writes()) scores.save(context.work_dir / "scores.jsonl");

  PrimalDualRound round;
  round.round = k;
  round.margins = config.dual.margins;
  round.samples = scores.total_responses();
  round.policy = score_means(scores);
  const auto pairs = read_preference_pairs(context.artifact("data") / "pairs_train.jsonl");
  std::optional<OfflineScores> pair_scores;
  if (k == 0) {  // the policy is π_ref: its samples give E_ref
    round.reference = round.policy;
    round.lambda_before.assign(round.margins.size(), config.primal_dual.lambda_init);
    pair_scores = score_pairs(config, context, tokenizer, pairs);
    if (context.writes()) pair_scores->save(context.work_dir / "pair_scores.jsonl");
  } else {
    const fs::path previous = context.artifact(round_stage(k - 1));
    const PrimalDualRound before = read_primal_dual_round(previous / "round.json");
    round.reference = before.reference;
    round.lambda_before = before.lambda_after;
    pair_scores = OfflineScores::load(context.artifact(round_stage(0)) / "pair_scores.jsonl");
  }
  take_dual_step(round, config.primal_dual.step_size);

  RelabelOptions relabel = config.relabel;
  relabel.seed += static_cast<uint64_t>(k);  // each round draws its own labels
  const auto relabeled = relabel_pairs(pairs, pair_composite_scores(*pair_scores, 0, round.lambda_after),
                                       pair_composite_scores(*pair_scores, 1, round.lambda_after), relabel);
  if (context.writes()) {
    write_preference_pairs(context.work_dir / "pairs.jsonl", relabeled.pairs);
    write_primal_dual_round(context.work_dir / "round.json", round);
  }
  return {round, relabeled.pairs};
}

// Round k of the primal-dual pipeline (primal_dual.h). A resumed round whose round.json
// exists skips to its DPO, which continues from its last checkpoint.
void run_primal_dual_round(const Config& config, const StageContext& context, int64_t k) {
  const fs::path start = k == 0 ? reference_directory(config, context) : context.artifact(round_stage(k - 1)) / "model";
  const fs::path record = context.work_dir / "round.json";
  const auto [round, pairs] =
      context.resuming && fs::exists(record)
          ? std::pair(read_primal_dual_round(record), read_preference_pairs(context.work_dir / "pairs.jsonl"))
          : sample_and_relabel(config, context, k, start);
  std::vector<double> improvement;  // E_π[g_j] − E_ref[g_j], estimated
  for (size_t j = 0; j < round.margins.size(); ++j) improvement.push_back(round.policy.safety[j] - round.reference.safety[j]);
  *context.summary = {{"lambda_before", round.lambda_before},
                      {"lambda", round.lambda_after},
                      {"safety_improvement", improvement},
                      {"reward_improvement", round.policy.reward - round.reference.reward},
                      {"constraint_values", round.constraint_values}};
  spdlog::info("round {}: estimated safety improvement {} for margins {}; λ {} → {}", k,
               nlohmann::json(improvement).dump(), nlohmann::json(round.margins).dump(),
               nlohmann::json(round.lambda_before).dump(), nlohmann::json(round.lambda_after).dump());

  TrainingOptions training = training_options(config.dpo.training, config, context);
  training.max_steps = config.primal_dual.updates_per_round;
  training.seed += static_cast<uint64_t>(k);  // each round visits the pairs in its own order
  run_dpo_from(config, context, config.dpo.loss, training, pairs, PreferenceLabel::kBetter, start);
}

}  // namespace

std::vector<std::string> prediction_caveats(const Config& config) {
  std::vector<std::string> caveats;
  const DpoOptions& loss = config.dpo.loss;
  if (loss.kind != PreferenceLossKind::kSigmoid) {
    caveats.push_back(fmt::format("dpo.loss.kind is {}; the prediction is for the sigmoid (DPO) loss",
                                  preference_loss_kind_name(loss.kind)));
  }
  if (loss.label_smoothing > 0) {
    caveats.push_back(fmt::format("dpo.loss.label_smoothing is {}; the prediction is for none", loss.label_smoothing));
  }
  if (config.relabel.mode == RelabelMode::kArgmax) {
    caveats.push_back("relabel.mode is argmax; the prediction is for pseudo-preferences with P(y1 ≻ y0) = σ(s1 − s0) "
                      "(bernoulli or soft), and certain labels tilt further");
  }
  const SamplingOptions& sampling = config.sampling.generation;
  if (sampling.temperature != 1 || sampling.top_p < 1 || sampling.top_k > 0) {
    caveats.push_back(fmt::format(
        "the offline samples are drawn with temperature {}, top_p {}, top_k {}; the prediction is for samples from "
        "π_ref itself (temperature 1, top_p 1, top_k 0)",
        sampling.temperature, sampling.top_p, sampling.top_k));
  }
  const SamplingOptions& evaluation = config.eval.options.sampling;
  if (evaluation.temperature != 1 || evaluation.top_p < 1 || evaluation.top_k > 0) {
    caveats.push_back(fmt::format(
        "the evaluation samples both policies with temperature {}, top_p {}, top_k {}; the achieved improvement is "
        "that of the truncated policies, the prediction that of π_λ itself (temperature 1, top_p 1, top_k 0)",
        evaluation.temperature, evaluation.top_p, evaluation.top_k));
  }
  return caveats;
}

std::string sweep_stage_suffix(const Config& config, double margin) {
  return num_constraints(config) == 1 ? fmt::format("-b{}", margin)
                                      : fmt::format("-c{}-b{}", config.sweep.constraint, margin);
}

std::vector<Stage> pipeline_stages(const Config& config) {
  const bool pecan = config.pipeline == "pecan";
  std::vector<Stage> stages;
  // Training and inference stages are job-wide; data, tokenizer and dual run on rank 0 alone.
  auto add = [&](std::string name, std::vector<std::string> inputs, std::function<void(const StageContext&)> run) {
    const bool job_wide = name != "data" && name != "tokenizer" && name.rfind("dual", 0) != 0;
    stages.push_back({std::move(name), std::move(inputs), std::move(run), job_wide});
  };
  // Stages that train a model the user gave are left out; their consumers read config.models.
  auto trained = [](const std::string& given, const std::string& stage) {
    return given.empty() ? std::vector<std::string>{stage} : std::vector<std::string>{};
  };
  auto with = [](std::vector<std::string> inputs, const std::vector<std::string>& more) {
    inputs.insert(inputs.end(), more.begin(), more.end());
    return inputs;
  };
  const int m = num_constraints(config);
  const auto reference = trained(config.models.policy, "reference");
  const auto reward = trained(config.models.reward, "reward_model");
  std::vector<std::string> cost;  // the cost model stages, one per constraint (none when given)
  for (int j = 0; j < m; ++j) {
    if (config.models.cost.empty()) cost.push_back(constraint_stage("cost_model", j, config));
  }

  add("data", {}, [&config](const StageContext& c) { run_data(config, c); });
  add("tokenizer", {"data"}, [&config](const StageContext& c) { run_tokenizer(config, c); });
  if (config.models.policy.empty()) {
    add("reference", {"data", "tokenizer"}, [&config](const StageContext& c) { run_reference(config, c); });
  }
  // Score models: MoCAN's r and g; in PeCAN they only measure the result (as in the paper).
  if (config.models.reward.empty()) {
    add("reward_model", with({"data", "tokenizer"}, reference), [&config](const StageContext& c) {
      run_score_model(config, c, config.reward_model, train_reward_model,
                      read_preference_pairs(c.artifact("data") / "pairs_train.jsonl"));
    });
  }
  for (size_t j = 0; j < cost.size(); ++j) {
    add(cost[j], with({"data", "tokenizer"}, reference), [&config, j](const StageContext& c) {
      run_score_model(config, c, config.cost_model, train_cost_model, constraint_pairs(c, static_cast<int>(j)));
    });
  }
  std::vector<std::string> scorers = with(reward, cost);
  if (pecan) {
    scorers = trained(config.models.helpfulness_dpo, "helpfulness_dpo");
    if (config.models.helpfulness_dpo.empty()) {
      add("helpfulness_dpo", with({"data", "tokenizer"}, reference), [&config](const StageContext& c) {
        run_dpo(config, c, config.pecan.helpfulness_dpo,
                read_preference_pairs(c.artifact("data") / "pairs_train.jsonl"), PreferenceLabel::kBetter);
      });
    }
    for (int j = 0; j < m && config.models.safety_dpo.empty(); ++j) {
      scorers.push_back(constraint_stage("safety_dpo", j, config));
      add(scorers.back(), with({"data", "tokenizer"}, reference), [&config, j](const StageContext& c) {
        run_dpo(config, c, config.pecan.safety_dpo, constraint_pairs(c, j), PreferenceLabel::kSafer);
      });
    }
  }
  if (config.pipeline == "primal_dual") {
    // Rounds on MoCAN's models, then the last round's policy evaluated as MoCAN's is.
    const auto models = with(with({"data", "tokenizer"}, reference), scorers);
    for (int64_t k = 0; k < config.primal_dual.rounds; ++k) {
      // Every round reads round 0's pair scores and the last round's policy and λ.
      std::vector<std::string> inputs = models;
      if (k >= 1) inputs.push_back(round_stage(0));
      if (k >= 2) inputs.push_back(round_stage(k - 1));
      add(round_stage(k), inputs,
          [&config, k](const StageContext& c) { run_primal_dual_round(config, c, k); });
    }
    const std::string last = round_stage(config.primal_dual.rounds - 1);
    add("eval", with(models, {last}), [&config, last](const StageContext& c) { run_eval(config, c, last, {}); });
    return stages;
  }
  add("offline_scores", with(with({"data", "tokenizer"}, reference), scorers),
      [&config](const StageContext& c) { run_offline_scores(config, c); });
  // One alignment per entry of `alignments` (stage-name suffix, margins): every dual
  // first, so that an infeasible margin stops the run before any DPO; then per
  // alignment re-labelling, DPO and evaluation. A sweep varies constraint
  // sweep.constraint's margin; the others keep dual.margins.
  std::vector<std::pair<std::string, std::vector<double>>> alignments;
  if (config.sweep.margins.empty()) {
    alignments.emplace_back("", config.dual.margins);
  } else {
    std::set<double> seen;
    for (double margin : config.sweep.margins) {
      check(seen.insert(margin).second, "sweep.margins lists the margin {} twice", margin);
      std::vector<double> margins = config.dual.margins;
      margins[static_cast<size_t>(config.sweep.constraint)] = margin;
      alignments.emplace_back(sweep_stage_suffix(config, margin), margins);
    }
  }
  for (const auto& [suffix, margins] : alignments) {
    add("dual" + suffix, {"offline_scores"}, [&config, margins = margins](const StageContext& c) {
      run_dual(config, c, margins);
    });
  }
  for (const auto& [suffix, margins] : alignments) {
    const std::string dual = "dual" + suffix, relabel = "relabel" + suffix, dpo = "dpo" + suffix;
    add(relabel, with(with({"data", "tokenizer", dual}, reference), scorers),
        [&config, dual](const StageContext& c) { run_relabel(config, c, dual); });
    add(dpo, with({"tokenizer", relabel}, reference), [&config, relabel](const StageContext& c) {
      run_dpo(config, c, config.dpo, read_preference_pairs(c.artifact(relabel) / "pairs.jsonl"),
              PreferenceLabel::kBetter);
    });
    // The score models measure in both pipelines; PeCAN's implicit rewards measure in the prediction's unit.
    const auto measures = pecan ? with(with(reward, cost), scorers) : with(reward, cost);
    add("eval" + suffix, with(with({"data", "tokenizer", "offline_scores", dual, dpo}, reference), measures),
        [&config, dpo, dual](const StageContext& c) { run_eval(config, c, dpo, dual); });
  }
  return stages;
}

void write_sweep_summary(const Config& config) {
  const fs::path run_dir = config.run.dir;
  std::vector<SweepPoint> points;
  for (double margin : config.sweep.margins) {
    const fs::path eval_dir = run_dir / ("eval" + sweep_stage_suffix(config, margin));
    const fs::path report = eval_dir / "report.json";
    if (!fs::exists(report)) {
      spdlog::info("sweep: {} has not been written yet, so there is no sweep summary yet", report.string());
      return;
    }
    SweepPoint point{margin, static_cast<int>(config.sweep.constraint), read_evaluation_report(report), std::nullopt};
    if (const fs::path same = eval_dir / "same_templates" / "report.json"; fs::exists(same)) {
      point.same_templates = read_evaluation_report(same);
    }
    points.push_back(std::move(point));
  }
  write_sweep_report(run_dir, points);
}

}  // namespace can
