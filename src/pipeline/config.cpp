// CAN's configuration schema: every key of can-train, bound to a field of
// can::Config through a chain of member pointers. Reading, checking and writing
// YAML is the general engine's (yaml_options.h); the defaults are the structs'.
#include "can/config.h"

#include <fmt/format.h>

#include <type_traits>
#include <utility>

#include "can/error.h"
#include "can/tokenizer.h"

namespace can {
namespace {

// Follows a chain of member pointers from the config to one field:
// follow(config, &Config::dpo, &DpoStageOptions::loss, &DpoOptions::beta) is config.dpo.loss.beta.
template <typename Object, typename Member, typename... Rest>
auto& follow(Object& object, Member member, Rest... rest) {
  if constexpr (sizeof...(Rest) == 0) {
    return object.*member;
  } else {
    return follow(object.*member, rest...);
  }
}

// How a key reads its field from a Config and writes it back.
struct Binding {
  std::function<OptionValue(const Config&)> get;
  std::function<void(Config&, const OptionValue&)> set;
};

// The option schema and, in the same order, each key's binding.
class ConfigSchema {
 public:
  void section(const std::string& path, const std::string& doc) { options_.section(path, doc); }

  // A key of the field's own type (int64, double, bool, string, lists); uint64 seeds read as ints.
  template <typename... Members>
  OptionKey& add(const std::string& path, const std::string& doc, Members... members) {
    using Field = std::decay_t<decltype(follow(std::declval<Config&>(), members...))>;
    using Stored = std::conditional_t<std::is_same_v<Field, uint64_t>, int64_t, Field>;
    Binding binding;
    binding.get = [members...](const Config& config) {
      return OptionValue(static_cast<Stored>(follow(config, members...)));
    };
    binding.set = [members...](Config& config, const OptionValue& value) {
      follow(config, members...) = static_cast<Field>(std::get<Stored>(value));
    };
    return bind(path, doc, std::move(binding));
  }

  // A key of an enum field, written as the names `name_of` gives `values`.
  template <typename Enum, typename... Members>
  OptionKey& add_enum(const std::string& path, const std::string& doc, std::vector<Enum> values,
                      std::string (*name_of)(Enum), Members... members) {
    static_assert(std::is_enum_v<std::decay_t<decltype(follow(std::declval<Config&>(), members...))>>);
    std::vector<std::string> names;
    for (const Enum value : values) names.push_back(name_of(value));
    Binding binding;
    binding.get = [name_of, members...](const Config& config) {
      return OptionValue(name_of(follow(config, members...)));
    };
    binding.set = [values, name_of, members...](Config& config, const OptionValue& value) {
      for (const Enum candidate : values) {
        if (name_of(candidate) == std::get<std::string>(value)) follow(config, members...) = candidate;
      }
    };
    return bind(path, doc, std::move(binding)).one_of(names);
  }

  const OptionSchema& options() const { return options_; }
  const std::vector<Binding>& bindings() const { return bindings_; }

 private:
  OptionKey& bind(const std::string& path, const std::string& doc, Binding binding) {
    OptionValue default_value = binding.get(Config{});
    bindings_.push_back(std::move(binding));
    return options_.key(path, std::move(default_value), doc);
  }

  OptionSchema options_;
  std::vector<Binding> bindings_;
};

// One training run's keys, declared once; `to_group` leads from Config to a TrainingOptions.
template <typename... ToGroup>
void add_training_keys(ConfigSchema& schema, const std::string& prefix, ToGroup... to_group) {
  using T = TrainingOptions;
  schema.add(prefix + ".epochs", "passes over the training data", to_group..., &T::epochs).at_least(1);
  schema
      .add(prefix + ".micro_batch_size", "examples per forward pass (pairs for DPO and score models)", to_group...,
           &T::micro_batch_size)
      .at_least(1);
  schema
      .add(prefix + ".gradient_accumulation_steps", "micro-batches per optimizer update", to_group...,
           &T::gradient_accumulation_steps)
      .at_least(1);
  schema.add(prefix + ".learning_rate", "peak learning rate of AdamW", to_group..., &T::learning_rate).above(0);
  schema.add(prefix + ".weight_decay", "AdamW's decoupled weight decay", to_group..., &T::weight_decay).at_least(0);
  schema.add(prefix + ".warmup_steps", "optimizer updates of linear warm-up from 0", to_group..., &T::warmup_steps)
      .at_least(0);
  schema.add_enum(prefix + ".lr_decay", "after the warm-up: cosine decay to min_lr, or constant",
                  {LearningRateDecay::kCosine, LearningRateDecay::kConstant}, learning_rate_decay_name, to_group...,
                  &T::decay);
  schema.add(prefix + ".min_lr", "floor of the cosine decay, at most learning_rate", to_group..., &T::min_lr)
      .at_least(0);
  schema
      .add(prefix + ".max_grad_norm", "clip the global gradient norm to this; 0: no clipping", to_group...,
           &T::max_grad_norm)
      .at_least(0);
  schema
      .add(prefix + ".eval_every", "optimizer updates between held-out evaluations; 0: only at the end", to_group...,
           &T::eval_every)
      .at_least(0);
  schema
      .add(prefix + ".save_every", "optimizer updates between checkpoints for --resume; 0: only at the end",
           to_group..., &T::save_every)
      .at_least(0);
  schema.add(prefix + ".log_every", "optimizer updates between metrics lines", to_group..., &T::log_every)
      .at_least(1);
  schema
      .add(prefix + ".max_length", "longest example in tokens, prompt and response together", to_group...,
           &T::max_length)
      .at_least(2);
  schema.add(prefix + ".activation_checkpointing",
             "recompute each decoder layer in backward instead of keeping its activations (less memory, ~1/3 "
             "more compute)",
             to_group..., &T::activation_checkpointing);
}

// A DPO fine-tune's keys; `to_group` leads from Config to a DpoStageOptions.
template <typename... ToGroup>
void add_dpo_keys(ConfigSchema& schema, const std::string& prefix, ToGroup... to_group) {
  add_training_keys(schema, prefix, to_group..., &DpoStageOptions::training);
  using D = DpoOptions;
  schema
      .add(prefix + ".beta", "β: strength of the KL tie to the reference policy", to_group..., &DpoStageOptions::loss,
           &D::beta)
      .above(0);
  schema
      .add(prefix + ".label_smoothing", "ε: assumed fraction of flipped labels (conservative DPO, sigmoid loss)",
           to_group..., &DpoStageOptions::loss, &D::label_smoothing)
      .at_least(0)
      .below(0.5);
  schema.add_enum(prefix + ".loss", "sigmoid: DPO; ipo: IPO", {PreferenceLossKind::kSigmoid, PreferenceLossKind::kIpo},
                  preference_loss_kind_name, to_group..., &DpoStageOptions::loss, &D::kind);
}

ConfigSchema build_schema() {
  using C = Config;
  ConfigSchema s;
  s.section("run", "Where and how the run happens.");
  s.add("run.dir", "run directory: resolved config, log, stage timings, one folder per finished stage", &C::run,
        &RunOptions::dir)
      .without_effect_on_artifacts();
  s.add("run.seed", "seed of the run's random streams (initialisation, data order, sampling)", &C::run,
        &RunOptions::seed)
      .at_least(0);
  s.add("run.device", "where tensors live; auto: CUDA when present, else CPU", &C::run, &RunOptions::device)
      .a_device()
      .without_effect_on_artifacts();
  s.add("run.threads", "CPU threads for LibTorch's intra-op parallelism; 0: every core", &C::run, &RunOptions::threads)
      .at_least(0)
      .without_effect_on_artifacts();
  s.add("run.log_level", "verbosity of the console and of can-train.log", &C::run, &RunOptions::log_level)
      .one_of({"trace", "debug", "info", "warn", "error", "off"})
      .without_effect_on_artifacts();
  s.add("run.compute_dtype",
        "dtype of every model's matmuls; weights, optimizer state, norms, softmax and losses stay float32 "
        "(bfloat16 is for GPUs: on a CPU it is slower)",
        &C::run, &RunOptions::compute_dtype)
      .one_of({"float32", "bfloat16"});

  s.add("pipeline",
        "mocan: reward and cost models score the samples; pecan: helpfulness and safety DPO models do; "
        "primal_dual: the iterative baseline MoCAN replaces (section primal_dual)",
        &C::pipeline)
      .one_of({"mocan", "pecan", "primal_dual"});

  s.section("world",
            "The embedded synthetic safety world, built in the run: prompts, preference pairs, SFT data, a judge.");
  s.add("world.enabled", "take prompts, pairs and SFT data from the world; false: from the data.* files", &C::world,
        &WorldSource::enabled);
  s.add("world.seed", "seed of the world's prompts, responses and label noise", &C::world, &WorldSource::options,
        &WorldOptions::seed)
      .at_least(0);
  s.add("world.num_train_prompts", "train prompts, one preference pair each", &C::world, &WorldSource::options,
        &WorldOptions::num_train_prompts)
      .at_least(1)
      .at_most(kMaxWorldPrompts);
  s.add("world.num_test_prompts", "held-out test prompts, for evaluation", &C::world, &WorldSource::options,
        &WorldOptions::num_test_prompts)
      .at_least(1)
      .at_most(kMaxWorldPrompts);
  s.add("world.harmful_fraction", "fraction of harmful requests among train and test prompts", &C::world,
        &WorldSource::options, &WorldOptions::harmful_fraction)
      .at_least(0)
      .at_most(1);
  s.add("world.label_noise", "probability that a pair's better or safer label is flipped from the judge's",
        &C::world, &WorldSource::options, &WorldOptions::label_noise)
      .at_least(0)
      .at_most(0.5);
  s.add("world.privacy_harm",
        "a second kind of harm, privacy (finding, compiling, intercepting or exposing personal data about others), "
        "judged and labelled on its own: two safety constraints, so dual.margins takes two values",
        &C::world, &WorldSource::options, &WorldOptions::privacy_harm);

  s.section("data", "External inputs, JSON Lines files; used instead of the world when world.enabled is false.");
  s.add("data.pairs_train",
        "preference pairs (PKU-SafeRLHF schema; .jsonl, .jsonl.xz or .jsonl.gz): re-labelled for DPO, train the "
        "score models",
        &C::data, &DataFiles::pairs_train);
  s.add("data.pairs_test", "the test split's pairs; its distinct prompts are the evaluation prompts when "
        "data.prompts_test is empty",
        &C::data, &DataFiles::pairs_test);
  s.add("data.sft_train", "{prompt, response} lines for the reference policy's SFT; empty: models.policy is given",
        &C::data, &DataFiles::sft_train);
  s.add("data.prompts_sample",
        "{prompt_id, prompt} lines sampled for the dual's offline scores; empty: sampling.num_prompts of "
        "data.pairs_train's distinct prompts, drawn with run.seed",
        &C::data, &DataFiles::prompts_sample);
  s.add("data.prompts_test", "{prompt_id, prompt} lines held out for evaluation; empty: data.pairs_test's distinct "
        "prompts",
        &C::data, &DataFiles::prompts_test);
  s.add("data.chat_template",
        "prompt format, {prompt} replaced, the response following after one space; or 'model': models.policy's own "
        "Jinja chat template, as transformers' apply_chat_template renders one user message (score models depend on "
        "it)", &C::data,
        &DataFiles::chat_template);

  s.section("models",
            "Hugging Face model directories (config.json, safetensors, tokenizer.model or tokenizer.json); empty: trained here.");
  s.add("models.policy", "reference policy π_ref; empty: SFT from scratch on the SFT data", &C::models,
        &ModelDirectories::policy);
  s.add("models.reward", "reward model r (LlamaForScore); empty: trained on better_response_id (mocan)", &C::models,
        &ModelDirectories::reward);
  s.add("models.cost",
        "cost models, g_j = −cost_j (LlamaForScore): one directory, or a list with one per constraint; empty: "
        "trained on each constraint's safer_response_id (mocan)",
        &C::models, &ModelDirectories::cost)
      .or_one_string();
  s.add("models.helpfulness_dpo",
        "PeCAN's π_r, a DPO model of π_ref on helpfulness trained with pecan.helpfulness_dpo.beta; empty: trained here",
        &C::models, &ModelDirectories::helpfulness_dpo);
  s.add("models.safety_dpo",
        "PeCAN's π_g, DPO models of π_ref on safety trained with pecan.safety_dpo.beta: one directory, or a list "
        "with one per constraint; empty: trained here",
        &C::models, &ModelDirectories::safety_dpo)
      .or_one_string();

  s.section("tokenizer", "The tokenizer: given, models.policy's, or trained here (sentencepiece) on the training texts.");
  s.add("tokenizer.vocab_size", "vocabulary size when the tokenizer is trained here", &C::tokenizer,
        &TokenizerSource::vocab_size)
      .at_least(kMinTrainedVocabSize);
  s.add("tokenizer.model", "tokenizer file (a sentencepiece tokenizer.model, or a tokenizer.json with its tokenizer_config.json beside it) or model folder; empty: models.policy's, else trained on the training texts", &C::tokenizer,
        &TokenizerSource::model);

  s.section("policy", "Llama architecture of π_ref when trained here; the score models trained here share it.");
  s.add("policy.hidden_size", "model width", &C::policy, &LlamaConfig::hidden_size).at_least(2);
  s.add("policy.intermediate_size", "SwiGLU feed-forward width", &C::policy, &LlamaConfig::intermediate_size)
      .at_least(1);
  s.add("policy.num_hidden_layers", "transformer blocks", &C::policy, &LlamaConfig::num_hidden_layers).at_least(1);
  s.add("policy.num_attention_heads", "query heads; hidden_size / num_attention_heads is even", &C::policy,
        &LlamaConfig::num_attention_heads)
      .at_least(1);
  s.add("policy.num_key_value_heads", "key/value heads (grouped-query attention), dividing num_attention_heads",
        &C::policy, &LlamaConfig::num_key_value_heads)
      .at_least(1);
  s.add("policy.max_position_embeddings", "longest sequence in tokens", &C::policy,
        &LlamaConfig::max_position_embeddings)
      .at_least(2);

  s.section("sft", "Supervised fine-tuning of π_ref on the SFT data (when models.policy is empty).");
  add_training_keys(s, "sft", &C::sft);
  s.section("reward_model", "Bradley–Terry training of r on better_response_id (mocan, when models.reward is empty).");
  add_training_keys(s, "reward_model", &C::reward_model);
  s.section("cost_model",
            "Bradley–Terry training of the cost on safer_response_id (mocan, when models.cost is empty).");
  add_training_keys(s, "cost_model", &C::cost_model);
  s.section("dpo", "DPO of π_ref on the re-labelled pairs: the aligned policy (step 4).");
  add_dpo_keys(s, "dpo", &C::dpo);
  s.section("pecan", "PeCAN's pre-aligned models (step 0), also the DPO-helpfulness and DPO-safety baselines.");
  s.section("pecan.helpfulness_dpo", "π_r: DPO of π_ref on better_response_id.");
  add_dpo_keys(s, "pecan.helpfulness_dpo", &C::pecan, &PecanOptions::helpfulness_dpo);
  s.section("pecan.safety_dpo", "π_g: DPO of π_ref on safer_response_id.");
  add_dpo_keys(s, "pecan.safety_dpo", &C::pecan, &PecanOptions::safety_dpo);

  s.section("lora", "LoRA adapters of the DPO fine-tunes (dpo, pecan.*); rank 0 trains every weight.");
  s.add("lora.rank", "adapter rank r; 0: no adapters, full fine-tuning", &C::lora, &LoraOptions::rank).at_least(0);
  s.add("lora.alpha", "adapter updates are scaled by alpha / rank", &C::lora, &LoraOptions::alpha).above(0);
  s.add("lora.dropout", "dropout on the adapters' input", &C::lora, &LoraOptions::dropout).at_least(0).below(1);
  s.add("lora.target_modules", "linear layers that get adapters, by Hugging Face name", &C::lora,
        &LoraOptions::target_modules)
      .one_of(lora_target_names());

  s.section("sampling", "Offline data: N responses to each of M prompts from π_ref, scored (step 1).");
  using O = OfflineSamplingOptions;
  s.add("sampling.num_prompts", "M: prompts sampled, the first M of the sampling prompts", &C::sampling,
        &O::num_prompts)
      .at_least(1);
  s.add("sampling.responses_per_prompt", "N: responses per prompt", &C::sampling, &O::responses_per_prompt)
      .at_least(2);
  s.add("sampling.temperature", "softmax temperature; 1 samples π_ref itself, as the dual assumes", &C::sampling,
        &O::generation, &SamplingOptions::temperature)
      .above(0);
  s.add("sampling.top_p", "nucleus sampling mass", &C::sampling, &O::generation, &SamplingOptions::top_p)
      .above(0)
      .at_most(1);
  s.add("sampling.top_k", "keep the k most likely tokens; 0: no top-k filter", &C::sampling, &O::generation,
        &SamplingOptions::top_k)
      .at_least(0);
  s.add("sampling.max_new_tokens", "longest response in tokens", &C::sampling, &O::generation,
        &SamplingOptions::max_new_tokens)
      .at_least(1);
  s.add("sampling.batch_size", "sequences decoded together", &C::sampling, &O::generation,
        &SamplingOptions::batch_size)
      .at_least(1);

  s.section("dual", "The dual problem, solved once from the offline scores (step 2).");
  s.add("dual.beta", "β, the KL coefficient of the constrained problem; equals dpo.beta", &C::dual, &DualOptions::beta)
      .above(0);
  s.add("dual.margins", "b: required safety improvement E[g] − E_ref[g], one per constraint", &C::dual,
        &DualOptions::margins);
  s.add_enum("dual.solver", "newton: projected Newton; pgd: the paper's projected gradient descent",
             {DualSolver::kProjectedNewton, DualSolver::kProjectedGradient}, dual_solver_name, &C::dual,
             &DualOptions::solver);

  s.section("relabel", "Pseudo-preferences for DPO from s = r + λ*ᵀg (step 3).");
  s.add_enum("relabel.mode",
             "bernoulli: label drawn with P(y1 ≻ y0) = σ(s1 − s0), as the authors' code; argmax: the higher s wins "
             "(voids the prediction); soft: the likelier response with its probability, a soft label DPO fits",
             {RelabelMode::kBernoulli, RelabelMode::kArgmax, RelabelMode::kSoft}, relabel_mode_name, &C::relabel, &RelabelOptions::mode);
  s.add("relabel.seed", "seed of the Bernoulli draws", &C::relabel, &RelabelOptions::seed).at_least(0);

  s.section("eval", "Evaluation on held-out prompts (step 5).");
  using E = EvaluationStageOptions;
  s.add("eval.num_prompts", "held-out prompts evaluated (all of them when fewer)", &C::eval, &E::num_prompts)
      .at_least(1);
  s.add("eval.max_new_tokens", "longest response in tokens", &C::eval, &E::options, &EvaluationOptions::sampling,
        &SamplingOptions::max_new_tokens)
      .at_least(1);
  s.add("eval.temperature", "softmax temperature; 0: greedy", &C::eval, &E::options, &EvaluationOptions::sampling,
        &SamplingOptions::temperature)
      .at_least(0);
  s.add("eval.top_p", "nucleus sampling mass", &C::eval, &E::options, &EvaluationOptions::sampling,
        &SamplingOptions::top_p)
      .above(0)
      .at_most(1);
  s.add("eval.same_template_prompts",
        "also evaluate on new prompts of the sample prompts' templates and topics (eval/same_templates/), so that "
        "generalisation to held-out templates and the prediction's own error can be told apart (world only)",
        &C::eval, &E::same_template_prompts);

  s.section("sweep", "Safety-margin sweep (can-train --sweep-margins).");
  // The stages of a margin are named after it (dual-b0.5), so the list may change on --resume.
  s.add("sweep.margins", "margins b to align for, one aligned policy each; empty: no sweep", &C::sweep,
        &SweepOptions::margins)
      .without_effect_on_artifacts();
  // Likewise: with several constraints the stages are named after it too (dual-c1-b0.5).
  s.add("sweep.constraint", "the constraint j (0-based) whose margin is swept; the others keep dual.margins",
        &C::sweep, &SweepOptions::constraint)
      .at_least(0)
      .without_effect_on_artifacts();

  s.section("primal_dual",
            "The iterative primal-dual baseline (pipeline: primal_dual), on MoCAN's models and pairs: each round "
            "samples the current policy on the sampling prompts, steps λ ← max(0, λ − η(E_π[g] − E_ref[g] − b)), "
            "re-labels the pairs with r + λᵀg and runs DPO (section dpo) from the current policy against π_ref.");
  using P = PrimalDualOptions;
  s.add("primal_dual.lambda_init", "λ₀ of every constraint", &C::primal_dual, &P::lambda_init).at_least(0);
  s.add("primal_dual.step_size", "η, the dual step per unit of the constraint's shortfall", &C::primal_dual,
        &P::step_size)
      .above(0);
  s.add("primal_dual.rounds", "rounds of sampling, dual step, re-labelling and DPO", &C::primal_dual, &P::rounds)
      .at_least(1);
  s.add("primal_dual.responses_per_prompt",
        "responses sampled from the current policy per sampling prompt (sampling.num_prompts of them), each round",
        &C::primal_dual, &P::responses_per_prompt)
      .at_least(1);
  s.add("primal_dual.updates_per_round", "DPO optimizer updates per round", &C::primal_dual, &P::updates_per_round)
      .at_least(1);

  s.section("distributed",
            "A job of several processes (torchrun --no-python --nproc-per-node N can-train ...): training is "
            "data-parallel with a global batch of micro_batch_size × processes × gradient_accumulation_steps, "
            "sampling and scoring are shared, rank 0 writes. One process alone ignores this section.");
  s.add("distributed.shard_optimizer",
        "ZeRO stage 1: each rank keeps and updates AdamW's moments of 1/N of the parameters (the same parameters; "
        "checkpoints unchanged)",
        &C::distributed, &DistributedOptions::shard_optimizer)
      .without_effect_on_artifacts();
  return s;
}

const ConfigSchema& schema() {
  static const ConfigSchema instance = build_schema();
  return instance;
}

// Rules that involve several keys; `origin_of` names where a key's value was set.
void check_combination(const Config& c, const std::function<std::string(const std::string&)>& origin_of) {
  const auto fail_combination = [&](const std::string& path, const std::string& problem) {
    fail("{}: {}: {}", origin_of(path), path, problem);
  };
  if (c.eval.same_template_prompts && !c.world.enabled) {
    fail_combination("eval.same_template_prompts",
                     "needs the synthetic world (world.enabled): external data has no same-template prompts");
  }
  const std::vector<std::pair<std::string, const std::string*>> data_files = {
      {"data.pairs_train", &c.data.pairs_train},
      {"data.pairs_test", &c.data.pairs_test},
      {"data.sft_train", &c.data.sft_train},
      {"data.prompts_sample", &c.data.prompts_sample},
      {"data.prompts_test", &c.data.prompts_test}};
  for (const auto& [path, value] : data_files) {
    if (c.world.enabled && !value->empty()) {
      fail_combination(path, "is set while world.enabled is true; set world.enabled: false to read data files");
    }
  }
  if (!c.world.enabled && c.data.pairs_train.empty()) {
    fail_combination("data.pairs_train", "is required when world.enabled is false");
  }
  if (!c.world.enabled && c.data.prompts_test.empty() && c.data.pairs_test.empty()) {
    fail_combination("data.prompts_test",
                     "is required when world.enabled is false, unless data.pairs_test gives the test split's pairs, "
                     "whose prompts are then used");
  }
  if (!c.world.enabled && c.data.sft_train.empty() && c.models.policy.empty()) {
    fail_combination("data.sft_train", "is required to train π_ref when models.policy is empty");
  }
  if (const std::string problem = ChatTemplate::problem(c.data.chat_template); !problem.empty()) {
    fail_combination("data.chat_template", problem);
  }
  if (c.data.chat_template == ChatTemplate::kModelsOwn && c.models.policy.empty()) {
    fail_combination("data.chat_template", "is 'model', the policy's own template, which needs models.policy");
  }
  if (const auto problem = c.policy.problem()) {
    fail_combination("policy." + problem->key, problem->message);
  }
  const std::vector<std::pair<std::string, const TrainingOptions*>> trainings = {
      {"sft", &c.sft},
      {"reward_model", &c.reward_model},
      {"cost_model", &c.cost_model},
      {"dpo", &c.dpo.training},
      {"pecan.helpfulness_dpo", &c.pecan.helpfulness_dpo.training},
      {"pecan.safety_dpo", &c.pecan.safety_dpo.training}};
  for (const auto& [prefix, training] : trainings) {
    if (training->min_lr > training->learning_rate) {
      fail_combination(prefix + ".min_lr",
                       fmt::format("{} exceeds learning_rate {}", training->min_lr, training->learning_rate));
    }
    if (c.models.policy.empty() && training->max_length > c.policy.max_position_embeddings) {
      fail_combination(prefix + ".max_length", fmt::format("{} exceeds policy.max_position_embeddings {}",
                                                           training->max_length, c.policy.max_position_embeddings));
    }
  }
  if (c.models.policy.empty()) {
    // Sampling checks prompt + new tokens against the limit (sampling.h); this catches at load what no prompt fits.
    for (const auto& [path, new_tokens] : {std::pair<std::string, int64_t>{"sampling.max_new_tokens",
                                                                           c.sampling.generation.max_new_tokens},
                                           {"eval.max_new_tokens", c.eval.options.sampling.max_new_tokens}}) {
      if (new_tokens >= c.policy.max_position_embeddings) {
        fail_combination(path, fmt::format("{} leaves no room for a prompt within policy.max_position_embeddings {}",
                                           new_tokens, c.policy.max_position_embeddings));
      }
    }
  }
  if (c.dual.margins.empty()) fail_combination("dual.margins", "is empty; give one margin per constraint");
  const size_t m = c.dual.margins.size();
  if (c.world.enabled && static_cast<int>(m) != world_constraints(c.world.options)) {
    fail_combination("dual.margins",
                     fmt::format("has {} value{}, but the world has {} safety constraint{} ({}): give one margin each",
                                 m, m == 1 ? "" : "s", world_constraints(c.world.options),
                                 world_constraints(c.world.options) == 1 ? "" : "s",
                                 c.world.options.privacy_harm ? "illegal and privacy harm, world.privacy_harm"
                                                              : "illegal harm; world.privacy_harm adds privacy"));
  }
  if (!c.models.cost.empty() && c.models.cost.size() != m) {
    fail_combination("models.cost", fmt::format("lists {} cost models for {} constraints (dual.margins): give one each",
                                                c.models.cost.size(), m));
  }
  if (!c.models.safety_dpo.empty() && c.models.safety_dpo.size() != m) {
    fail_combination("models.safety_dpo", fmt::format("lists {} safety DPO models for {} constraints (dual.margins): "
                                                      "give one each",
                                                      c.models.safety_dpo.size(), m));
  }
  if ((!c.models.helpfulness_dpo.empty() || !c.models.safety_dpo.empty()) && c.models.policy.empty()) {
    fail_combination(c.models.helpfulness_dpo.empty() ? "models.safety_dpo" : "models.helpfulness_dpo",
                     "needs models.policy, the π_ref it was trained from: its implicit reward β·log(π/π_ref) is "
                     "relative to that reference, not to one trained in this run");
  }
  if (c.pipeline != "pecan") {
    for (const auto& [path, given] : {std::pair<std::string, bool>{"models.helpfulness_dpo", !c.models.helpfulness_dpo.empty()},
                                      {"models.safety_dpo", !c.models.safety_dpo.empty()}}) {
      if (given) fail_combination(path, "is a model of the pecan pipeline; set pipeline: pecan, or leave it empty");
    }
  }
  if (c.pipeline == "primal_dual" && !c.sweep.margins.empty()) {
    fail_combination("sweep.margins", "sweeps the one-shot pipelines; a primal-dual run aligns for dual.margins");
  }
  if (c.sweep.constraint >= static_cast<int64_t>(m)) {
    fail_combination("sweep.constraint", fmt::format("is {}, but there {} {} constraint{} (dual.margins), numbered from 0",
                                                     c.sweep.constraint, m == 1 ? "is" : "are", m, m == 1 ? "" : "s"));
  }
  if (c.dual.beta != c.dpo.loss.beta) {
    fail_combination("dual.beta", fmt::format("{} differs from dpo.beta {}: DPO with β solves the problem whose "
                                              "dual is solved with β, so they must be equal",
                                              c.dual.beta, c.dpo.loss.beta));
  }
  if (c.relabel.mode == RelabelMode::kSoft && c.dpo.loss.kind != PreferenceLossKind::kSigmoid) {
    fail_combination("relabel.mode", fmt::format("is soft, whose labels only the sigmoid loss takes; dpo.loss is {}",
                                                 preference_loss_kind_name(c.dpo.loss.kind)));
  }
}

// A value unlike `value` of the same type: for enum keys, another of the choices.
OptionValue changed(const OptionKey& key) {
  struct Visitor {
    const OptionKey& key;
    OptionValue operator()(int64_t v) const { return v + 1; }
    OptionValue operator()(double v) const { return v + 1.5; }
    OptionValue operator()(bool v) const { return !v; }
    OptionValue operator()(const std::string& v) const {
      for (const std::string& choice : key.choices) {
        if (choice != v) return choice;
      }
      return v + "~";
    }
    OptionValue operator()(std::vector<double> v) const {
      v.push_back(1.0);
      return v;
    }
    OptionValue operator()(std::vector<std::string> v) const {
      v.push_back("~");
      return v;
    }
  };
  return std::visit(Visitor{key}, key.default_value);
}

}  // namespace

int num_constraints(const Config& config) { return static_cast<int>(config.dual.margins.size()); }

Config default_config() { return Config{}; }

Config load_config(const std::filesystem::path& file, const std::vector<OptionOverride>& overrides) {
  const ConfigSchema& s = schema();
  const OptionValues values = read_options(s.options(), file, overrides);
  Config config;
  for (size_t i = 0; i < s.bindings().size(); ++i) {
    s.bindings()[i].set(config, values.values.at(s.options().keys()[i].path));
  }
  check_combination(config, [&](const std::string& path) { return values.origin_of(path, file.string()); });
  return config;
}

std::string config_to_yaml(const Config& config) {
  const ConfigSchema& s = schema();
  std::map<std::string, const Binding*> binding_of;
  for (size_t i = 0; i < s.bindings().size(); ++i) binding_of[s.options().keys()[i].path] = &s.bindings()[i];
  return options_to_yaml(
      s.options(), [&](const OptionKey& key) { return binding_of.at(key.path)->get(config); },
      "# can-train configuration: every key, its meaning and (type, default, allowed values).\n"
      "# Keys left out take their defaults. Written by: can-train --config FILE --print-config\n");
}

std::vector<ConfigDifference> artifact_config_differences(const Config& before, const Config& after) {
  const ConfigSchema& s = schema();
  std::vector<ConfigDifference> differences;
  for (size_t i = 0; i < s.bindings().size(); ++i) {
    const OptionKey& key = s.options().keys()[i];
    if (!key.affects_artifacts) continue;
    const OptionValue old_value = s.bindings()[i].get(before), new_value = s.bindings()[i].get(after);
    if (old_value != new_value) {
      differences.push_back({key.path, option_value_yaml(old_value), option_value_yaml(new_value)});
    }
  }
  return differences;
}

void check_config_schema() {
  const ConfigSchema& s = schema();
  s.options().check();
  // Each key must reach a field of its own: a copy-paste slip in build_schema
  // (two paths on one field) would otherwise pass unnoticed.
  const Config base{};
  const auto& keys = s.options().keys();
  for (size_t i = 0; i < keys.size(); ++i) {
    Config config = base;
    s.bindings()[i].set(config, changed(keys[i]));
    check(s.bindings()[i].get(config) != s.bindings()[i].get(base), "config schema: '{}' does not store its value",
          keys[i].path);
    for (size_t j = 0; j < keys.size(); ++j) {
      const bool moved = s.bindings()[j].get(config) != s.bindings()[j].get(base);
      check(moved == (i == j), "config schema: setting '{}' changes '{}'", keys[i].path, keys[j].path);
    }
  }
}

}  // namespace can
