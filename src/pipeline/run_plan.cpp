#include "can/run_plan.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <malloc.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "can/chat_template.h"
#include "can/error.h"
#include "can/hf_checkpoint.h"
#include "can/json_fields.h"
#include "can/model_size.h"
#include "can/pipeline.h"
#include "can/preference_data.h"
#include "can/runtime.h"
#include "can/score_model.h"
#include "can/stage_runner.h"
#include "can/synthetic_world.h"
#include "can/tokenizer.h"

namespace can {

namespace fs = std::filesystem;

int64_t MemoryEstimate::total() const {
  return runtime + weights + gradients + optimizer + activations + kv_cache + samples;
}

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

std::string gib(int64_t bytes) { return fmt::format("{:.3f} GiB", static_cast<double>(bytes) / kGiB); }

std::string count(int64_t value) {
  std::string digits = std::to_string(value), grouped;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) grouped += ',';
    grouped += digits[i];
  }
  return grouped;
}

// --- What the run reads ----------------------------------------------------------

// The sizes the stages need, found while opening the inputs.
struct RunInputs {
  LlamaConfig policy;                       // π_ref's architecture (given, or trained here)
  std::map<std::string, LlamaConfig> given;  // the given models' architectures, by config key
  int64_t sft_examples = 0;
  int64_t train_pairs = 0;
  int64_t sample_prompts = 0;  // after sampling.num_prompts
  int64_t test_prompts = 0;    // after eval.num_prompts
  // Of the sample and test prompts, chat-formatted, BOS included: counted by the tokenizer (given, or
  // trained here as the run would on the world), else bytes + 1, an upper bound.
  int64_t longest_prompt_tokens = 0;
};

// This process's resident memory once LibTorch has computed: a forward, backward and
// AdamW step of a tiny model pages in the kernels and thread pools every stage uses.
int64_t warmed_up_resident_bytes() {
  LlamaConfig tiny;
  tiny.vocab_size = 64;
  tiny.hidden_size = 16;
  tiny.intermediate_size = 32;
  tiny.num_hidden_layers = 1;
  tiny.num_attention_heads = 2;
  tiny.num_key_value_heads = 1;
  {
    LlamaForCausalLM model(tiny);
    torch::optim::AdamW optimizer(model->parameters());
    const torch::Tensor ids = torch::randint(0, tiny.vocab_size, {2, 8});  // [B, T]
    model(ids, torch::ones_like(ids)).log_softmax(-1).mean().backward();
    optimizer.step();
  }
  malloc_trim(0);
  return resident_bytes();
}

class Planner {
 public:
  Planner(const Config& config, const StageSelection& selection) : config_(config), selection_(selection) {}

  RunPlan plan() {
    plan_.device = config_.run.device == "auto" ? (torch::cuda::is_available() ? "cuda" : "cpu") : config_.run.device;
    inputs_.policy = config_.policy;
    check_models();
    check_tokenizer();
    attempt("data.chat_template",
            [&] { chat_.emplace(ChatTemplate::from_setting(config_.data.chat_template, config_.models.policy)); });
    check_data();
    check_run_directory();
    plan_stages();
    return std::move(plan_);
  }

 private:
  // Runs `action`; a can::Error (or another exception) becomes a problem prefixed with `key`.
  bool attempt(const std::string& key, const std::function<void()>& action) {
    try {
      action();
      return true;
    } catch (const std::exception& error) {
      plan_.problems.push_back(fmt::format("{}: {}", key, error.what()));
      return false;
    }
  }

  void check_model(const std::string& key, const std::string& directory, ModelKind kind) {
    attempt(key, [&] {
      const fs::path config_path = fs::path(directory) / "config.json";
      check(fs::is_directory(directory), "model directory '{}' does not exist", directory);
      check(fs::exists(config_path), "'{}' has no config.json", directory);
      const nlohmann::json json = read_json_file(config_path);
      LlamaConfig architecture = LlamaConfig::from_json(json, config_path.string());
      const fs::path generation_path = fs::path(directory) / "generation_config.json";
      if (kind == ModelKind::kCausalLm && fs::exists(generation_path)) {
        architecture.apply_generation_config(read_json_file(generation_path), generation_path.string());
      }
      check(kind != ModelKind::kScore || !json.value("do_normalize", false),
            "{}: do_normalize is true, but CAN reads raw scores only (Safe-RLHF's normalizer is not supported)",
            config_path.string());
      inputs_.given[key] = architecture;
      const CheckpointHeader header = read_checkpoint_header(directory);
      std::string summary = fmt::format("{} parameters, {} file(s)",
                                        count(parameter_count(llama_tensor_shapes(architecture, kind))),
                                        header.files.size());
      if (header.shapes_known) {
        check_shapes(key, directory, architecture, kind, header.shapes);
      } else {
        summary += "; .bin: shapes are checked when the run loads it";
      }
      plan_.inputs.push_back({key, directory, summary});
    });
  }

  // Every tensor the config implies, in its shape, and no other (the score models'
  // normalizer buffers and a tied model's stored head aside, as the loaders allow).
  void check_shapes(const std::string& key, const std::string& directory, const LlamaConfig& architecture,
                    ModelKind kind, const std::map<std::string, std::vector<int64_t>>& found) {
    const auto expected = llama_tensor_shapes(architecture, kind);
    std::vector<std::string> missing, unexpected, misshaped;
    for (const auto& [name, shape] : expected) {
      const auto it = found.find(name);
      if (it == found.end()) {
        missing.push_back(name);
      } else if (it->second != shape) {
        misshaped.push_back(fmt::format("{} is [{}], the config implies [{}]", name, fmt::join(it->second, ", "),
                                        fmt::join(shape, ", ")));
      }
    }
    for (const auto& [name, shape] : found) {
      // What the loaders ignore: Safe-RLHF's normalizer statistics, a tied model's stored head.
      const bool allowed = (kind == ModelKind::kScore &&
                            (name == "normalizer.mean" || name == "normalizer.var" || name == "normalizer.count")) ||
                           (kind == ModelKind::kCausalLm && name == "lm_head.weight" && architecture.tie_word_embeddings);
      if (expected.count(name) == 0 && !allowed) unexpected.push_back(name);
    }
    const auto report = [&](const std::vector<std::string>& names, const char* what) {
      if (names.empty()) return;
      plan_.problems.push_back(fmt::format("{}: {}: {} tensor(s) {}, first: {}", key, directory, names.size(), what,
                                           names.front()));
    };
    report(missing, "missing from the weights");
    report(unexpected, "in the weights that the config does not have");
    report(misshaped, "of the wrong shape");
  }

  void check_models() {
    const ModelDirectories& models = config_.models;
    if (!models.policy.empty()) check_model("models.policy", models.policy, ModelKind::kCausalLm);
    if (!models.reward.empty()) {
      check_model("models.reward", models.reward, ModelKind::kScore);
      attempt("models.reward", [&] { check_score_type(models.reward, "models.reward", "reward"); });
    }
    for (size_t j = 0; j < models.cost.size(); ++j) {
      const std::string key = models.cost.size() == 1 ? "models.cost" : fmt::format("models.cost[{}]", j);
      check_model(key, models.cost[j], ModelKind::kScore);
      attempt(key, [&] { check_score_type(models.cost[j], "models.cost", "cost"); });
    }
    if (!models.helpfulness_dpo.empty()) {
      check_model("models.helpfulness_dpo", models.helpfulness_dpo, ModelKind::kCausalLm);
    }
    for (size_t j = 0; j < models.safety_dpo.size(); ++j) {
      check_model(fmt::format("models.safety_dpo[{}]", j), models.safety_dpo[j], ModelKind::kCausalLm);
    }
    if (const auto it = inputs_.given.find("models.policy"); it != inputs_.given.end()) inputs_.policy = it->second;
  }

  void check_tokenizer() {
    std::string path = config_.tokenizer.model;
    std::string key = "tokenizer.model";
    if (path.empty() && !config_.models.policy.empty()) {
      path = config_.models.policy;
      key = "models.policy";
    }
    if (path.empty()) {  // trained in the run, on the training data
      inputs_.policy.vocab_size = config_.tokenizer.vocab_size;
      return;
    }
    attempt(key, [&] {
      tokenizer_ = Tokenizer::load(path);
      plan_.inputs.push_back(
          {"tokenizer", tokenizer_->path(), fmt::format("{} pieces", count(tokenizer_->vocab_size()))});
    });
    if (!tokenizer_) return;
    if (config_.models.policy.empty()) inputs_.policy.vocab_size = tokenizer_->vocab_size();
    for (const auto& given : inputs_.given) {  // (clang 14 cannot capture structured bindings)
      attempt(given.first, [&] { tokenizer_->check_fits(given.second.vocab_size, given.first); });
    }
  }

  // The longest chat-formatted prompt in tokens (BOS included where the template takes one): counted by the
  // tokenizer when there is one, else its length in bytes plus one, an upper bound
  // for sentencepiece with byte fallback.
  // Not measured when the chat template itself is a problem (reported on its own).
  void measure_prompt(const std::string& prompt) {
    if (!chat_) return;
    const std::string text = chat_->format(prompt);
    const int64_t tokens = tokenizer_ ? static_cast<int64_t>(tokenizer_->encode(text, chat_->add_bos()).size())
                                      : static_cast<int64_t>(text.size()) + 1;
    inputs_.longest_prompt_tokens = std::max(inputs_.longest_prompt_tokens, tokens);
  }

  // The tokenizer the run's tokenizer stage trains on the world's corpus (seconds, in a
  // temporary folder removed after): prompts are then counted in its tokens exactly.
  void train_world_tokenizer(const SyntheticWorld& world) {
    const fs::path folder = fs::temp_directory_path() / fmt::format("can-dry-run-{}", ::getpid());
    fs::create_directories(folder);
    try {
      std::ofstream corpus(folder / "corpus.txt");
      for (const std::string& text : world.corpus) corpus << text << '\n';
      corpus.close();
      TokenizerTrainOptions options;
      options.input_file = (folder / "corpus.txt").string();
      options.model_prefix = (folder / "tokenizer").string();
      options.vocab_size = static_cast<int>(config_.tokenizer.vocab_size);
      Tokenizer::train(options);
      tokenizer_ = Tokenizer::load((folder / "tokenizer.model").string());
    } catch (...) {
      fs::remove_all(folder);
      throw;
    }
    fs::remove_all(folder);
  }

  void check_data() {
    if (config_.world.enabled) {
      attempt("world", [&] {
        WorldOptions options = config_.world.options;
        if (chat_) options.chat_template = *chat_;
        const SyntheticWorld world = build_world(options);
        inputs_.sft_examples = static_cast<int64_t>(world.sft.size());
        inputs_.train_pairs = static_cast<int64_t>(world.pairs.size());
        inputs_.sample_prompts = std::min<int64_t>(config_.sampling.num_prompts, world.train_prompts.size());
        inputs_.test_prompts = std::min<int64_t>(config_.eval.num_prompts, world.test_prompts.size());
        if (!tokenizer_) train_world_tokenizer(world);
        for (const WorldPrompt& prompt : world.train_prompts) measure_prompt(prompt.text);
        for (const WorldPrompt& prompt : world.test_prompts) measure_prompt(prompt.text);
        if (config_.eval.same_template_prompts) {
          for (const WorldPrompt& prompt : world.same_template_test_prompts) measure_prompt(prompt.text);
        }
        plan_.inputs.push_back({"world", "(embedded)",
                                fmt::format("{} pairs, {} SFT examples, {} train and {} test prompts",
                                            count(inputs_.train_pairs), count(inputs_.sft_examples),
                                            count(world.train_prompts.size()), count(world.test_prompts.size()))});
      });
      return;
    }
    const DataFiles& data = config_.data;
    std::set<std::string> train_prompts, test_prompts;
    attempt("data.pairs_train", [&] {
      const auto pairs = read_preference_pairs(data.pairs_train);
      inputs_.train_pairs = static_cast<int64_t>(pairs.size());
      for (const auto& pair : pairs) train_prompts.insert(pair.prompt);
      check(pairs.front().num_constraints() == num_constraints(config_),
            "{}: the pairs are labelled for {} safety constraint(s), but dual.margins gives {}", data.pairs_train,
            pairs.front().num_constraints(), num_constraints(config_));
      plan_.inputs.push_back({"data.pairs_train", data.pairs_train,
                              fmt::format("{} pairs, {} distinct prompts", count(pairs.size()),
                                          count(train_prompts.size()))});
    });
    if (!data.pairs_test.empty()) {
      attempt("data.pairs_test", [&] {
        const auto pairs = read_preference_pairs(data.pairs_test);
        for (const auto& pair : pairs) test_prompts.insert(pair.prompt);
        plan_.inputs.push_back({"data.pairs_test", data.pairs_test,
                                fmt::format("{} pairs, {} distinct prompts", count(pairs.size()),
                                            count(test_prompts.size()))});
      });
    }
    const auto prompt_file = [&](const std::string& key, const std::string& path, std::set<std::string>& prompts) {
      attempt(key, [&] {
        prompts.clear();
        for (const auto& prompt : load_evaluation_prompts(path)) prompts.insert(prompt.prompt);
        plan_.inputs.push_back({key, path, fmt::format("{} prompts", count(prompts.size()))});
      });
    };
    if (!data.prompts_sample.empty()) prompt_file("data.prompts_sample", data.prompts_sample, train_prompts);
    if (!data.prompts_test.empty()) prompt_file("data.prompts_test", data.prompts_test, test_prompts);
    if (!data.sft_train.empty()) {
      attempt("data.sft_train", [&] {
        inputs_.sft_examples = static_cast<int64_t>(read_prompt_responses(data.sft_train).size());
        plan_.inputs.push_back({"data.sft_train", data.sft_train, fmt::format("{} examples",
                                                                              count(inputs_.sft_examples))});
      });
    }
    inputs_.sample_prompts = std::min<int64_t>(config_.sampling.num_prompts, train_prompts.size());
    inputs_.test_prompts = std::min<int64_t>(config_.eval.num_prompts, test_prompts.size());
    for (const auto& prompt : train_prompts) measure_prompt(prompt);
    for (const auto& prompt : test_prompts) measure_prompt(prompt);
  }

  // run.dir is created by the run: it, or its nearest existing parent, must take a new file (a probe,
  // removed at once); and the run must be allowed to start there (stage_runner.h).
  void check_run_directory() {
    attempt("run.dir", [&] {
      fs::path existing = fs::absolute(config_.run.dir);
      while (!fs::exists(existing)) existing = existing.parent_path();
      check(fs::is_directory(existing), "'{}' is not a directory", existing.string());
      const fs::path probe = existing / fmt::format(".can-dry-run-{}", ::getpid());
      const bool written = static_cast<bool>(std::ofstream(probe) << "probe");
      std::error_code ignored;
      fs::remove(probe, ignored);
      check(written, "'{}' is not writable", existing.string());
      check_run_can_start(config_, pipeline_stages(config_), selection_);
      plan_.inputs.push_back({"run.dir", config_.run.dir, selection_.resume ? "resumed" : "writable"});
    });
  }

  // --- Memory -------------------------------------------------------------------

  // Bytes of a model's weights stored as `dtype`.
  static int64_t weight_bytes(const LlamaConfig& architecture, ModelKind kind, int64_t element_bytes) {
    return parameter_count(llama_tensor_shapes(architecture, kind)) * element_bytes;
  }

  int64_t frozen_bytes() const { return config_.run.compute_dtype == "bfloat16" ? 2 : 4; }

  int64_t training_activation_bytes(const LlamaConfig& a, ModelKind kind, int64_t sequences, int64_t length,
                                    bool checkpointing) const {
    return training_activation_bytes_per_token(a, kind == ModelKind::kCausalLm, checkpointing,
                                               config_.run.compute_dtype == "bfloat16") *
           sequences * length;
  }

  static int64_t inference_activation_bytes(const LlamaConfig& a, bool logits, int64_t sequences, int64_t length) {
    return inference_activation_bytes_per_token(a, logits) * sequences * length;
  }

  LlamaConfig architecture_of(const std::string& key) const {
    const auto it = inputs_.given.find(key);
    LlamaConfig architecture = it != inputs_.given.end() ? it->second : inputs_.policy;
    if (it == inputs_.given.end()) architecture.score_dim = 1;
    return architecture;
  }

  // MoCAN's reward and cost models (in PeCAN they measure the result).
  int64_t score_model_weight_bytes() const {
    int64_t bytes = weight_bytes(architecture_of("models.reward"), ModelKind::kScore, frozen_bytes());
    const int m = num_constraints(config_);
    for (int j = 0; j < m; ++j) {
      const std::string key = config_.models.cost.size() > 1 ? fmt::format("models.cost[{}]", j) : "models.cost";
      bytes += weight_bytes(architecture_of(key), ModelKind::kScore, frozen_bytes());
    }
    return bytes;
  }

  // PeCAN's scorer: π_ref, the helpfulness DPO model and one safety DPO model per constraint.
  int64_t pecan_model_weight_bytes() const {
    return weight_bytes(inputs_.policy, ModelKind::kCausalLm, frozen_bytes()) * (2 + num_constraints(config_));
  }

  // The pipeline's r and g (pipeline_scorer).
  int64_t scorer_weight_bytes() const {
    return config_.pipeline == "pecan" ? pecan_model_weight_bytes() : score_model_weight_bytes();
  }

  MemoryEstimate training_memory(const LlamaConfig& a, ModelKind kind, const TrainingOptions& training,
                                 int64_t sequences_per_example, bool lora) const {
    MemoryEstimate memory;
    const int64_t parameters = parameter_count(llama_tensor_shapes(a, kind));
    const int64_t trained = lora ? lora_parameter_count(a, config_.lora) : parameters;
    memory.weights = (parameters + (lora ? trained : 0)) * 4;
    if (config_.run.compute_dtype == "bfloat16") memory.weights += parameters * 2;  // the matmuls' bfloat16 copies
    memory.gradients = trained * 4;
    memory.optimizer = trained * 8;
    memory.activations = training_activation_bytes(a, kind, training.micro_batch_size * sequences_per_example,
                                                   training.max_length, training.activation_checkpointing);
    return memory;
  }

  // Sampling `batch` rows of prompt + max_new_tokens from `a`, its weights stored frozen.
  MemoryEstimate sampling_memory(const LlamaConfig& a, const SamplingOptions& sampling) const {
    MemoryEstimate memory;
    memory.weights = weight_bytes(a, ModelKind::kCausalLm, frozen_bytes());
    const int64_t positions = inputs_.longest_prompt_tokens + sampling.max_new_tokens;
    memory.kv_cache = 2 * a.num_hidden_layers * sampling.batch_size * a.num_key_value_heads * a.head_dim() *
                      positions * frozen_bytes();
    memory.activations = inference_activation_bytes(a, true, sampling.batch_size, inputs_.longest_prompt_tokens);
    return memory;
  }

  static int64_t updates(int64_t examples, const TrainingOptions& training) {
    const int64_t trained = examples - holdout_size(examples);
    const int64_t batch = training.micro_batch_size * training.gradient_accumulation_steps;
    return training.epochs * ((trained + batch - 1) / batch);
  }

  std::string training_work(const char* what, int64_t examples, const TrainingOptions& training, bool lora) const {
    return fmt::format("{}: {} examples, {} optimizer updates over {} epoch(s){}", what, count(examples),
                       count(updates(examples, training)), training.epochs, lora ? ", LoRA adapters" : "");
  }

  StagePlan plan_stage(const std::string& name) const {
    const bool pecan = config_.pipeline == "pecan";
    const bool lora = config_.lora.rank > 0;
    const int m = num_constraints(config_);
    const int64_t responses = inputs_.sample_prompts * config_.sampling.responses_per_prompt;
    const auto starts = [&](const char* prefix) { return name.rfind(prefix, 0) == 0; };
    StagePlan stage{name, "", {}};
    if (name == "data") {
      stage.work = config_.world.enabled ? "the synthetic world's files" : "the data files, validated and copied";
    } else if (name == "tokenizer") {
      stage.work = config_.tokenizer.model.empty() && config_.models.policy.empty()
                       ? fmt::format("train a {}-piece sentencepiece model", config_.tokenizer.vocab_size)
                       : "copy and check the tokenizer";
    } else if (name == "reference") {
      stage.work = training_work("SFT of π_ref", inputs_.sft_examples, config_.sft, false);
      stage.memory = training_memory(inputs_.policy, ModelKind::kCausalLm, config_.sft, 1, false);
    } else if (name == "reward_model" || starts("cost_model")) {
      const TrainingOptions& training = name == "reward_model" ? config_.reward_model : config_.cost_model;
      stage.work = training_work(name == "reward_model" ? "reward model" : "cost model", inputs_.train_pairs,
                                 training, false);
      stage.memory = training_memory(architecture_of(""), ModelKind::kScore, training, 2, false);
    } else if (name == "helpfulness_dpo" || starts("safety_dpo") || starts("dpo")) {
      const DpoStageOptions& dpo = name == "helpfulness_dpo" ? config_.pecan.helpfulness_dpo
                                   : starts("safety_dpo")    ? config_.pecan.safety_dpo
                                                             : config_.dpo;
      stage.work = training_work("DPO", inputs_.train_pairs, dpo.training, lora);
      stage.memory = training_memory(inputs_.policy, ModelKind::kCausalLm, dpo.training, 2, lora);
    } else if (name == "offline_scores") {
      const SamplingOptions& sampling = config_.sampling.generation;
      stage.work = fmt::format("sample {} responses ({} prompts × {}), at most {} new tokens; score them with {} models",
                               count(responses), count(inputs_.sample_prompts), config_.sampling.responses_per_prompt,
                               count(responses * sampling.max_new_tokens), pecan ? 2 + m : 1 + m);
      stage.memory = sampling_memory(inputs_.policy, sampling);
      // The sampling copy of π_ref is released before the scorers load; the larger of the two phases.
      MemoryEstimate scoring;
      scoring.weights = scorer_weight_bytes();
      scoring.activations = inference_activation_bytes(inputs_.policy, pecan, sampling.batch_size,
                                                       inputs_.longest_prompt_tokens + sampling.max_new_tokens);
      if (scoring.total() > stage.memory.total()) stage.memory = scoring;
      stage.memory.samples = responses * sampling.max_new_tokens * (8 + 8);  // token ids and log-probs
    } else if (starts("dual")) {
      stage.work = fmt::format("solve the dual on {} × (1 + {}) scores", count(responses), m);
      stage.memory.samples = responses * (1 + m) * 8 * 2;
    } else if (starts("relabel")) {
      stage.work = fmt::format("score {} pair responses with {} models, relabel by r + λ·g", count(2 * inputs_.train_pairs),
                               pecan ? 2 + m : 1 + m);
      stage.memory.weights = scorer_weight_bytes();
      stage.memory.activations = inference_activation_bytes(inputs_.policy, pecan, config_.sampling.generation.batch_size,
                                                            config_.dpo.training.max_length);
    } else if (starts("eval")) {
      const SamplingOptions& sampling = config_.sampling.generation;
      const int64_t prompts = inputs_.test_prompts * (config_.eval.same_template_prompts ? 2 : 1);
      stage.work = fmt::format("sample {} responses from each of the policy and π_ref, at most {} new tokens each; "
                               "score them",
                               count(prompts), config_.eval.options.sampling.max_new_tokens);
      SamplingOptions eval_sampling = config_.eval.options.sampling;
      eval_sampling.batch_size = sampling.batch_size;
      stage.memory = sampling_memory(inputs_.policy, eval_sampling);
      stage.memory.weights = 2 * weight_bytes(inputs_.policy, ModelKind::kCausalLm, frozen_bytes()) +
                             score_model_weight_bytes() + (pecan ? pecan_model_weight_bytes() : 0);
    } else if (starts("round-")) {
      const PrimalDualOptions& rounds = config_.primal_dual;
      const int64_t samples = inputs_.sample_prompts * rounds.responses_per_prompt;
      stage.work = fmt::format(
          "sample {} responses ({} prompts × {}) from the current policy and score them with {} models; DPO, {} "
          "optimizer updates{}",
          count(samples), count(inputs_.sample_prompts), rounds.responses_per_prompt, 1 + m,
          count(rounds.updates_per_round), lora ? ", LoRA adapters" : "");
      // DPO is the larger phase; from round 1 on it also holds π_ref for the reference log-probs.
      stage.memory = training_memory(inputs_.policy, ModelKind::kCausalLm, config_.dpo.training, 2, lora);
      stage.memory.weights += weight_bytes(inputs_.policy, ModelKind::kCausalLm, frozen_bytes());
    } else {
      fail("--dry-run: no plan for stage '{}'", name);
    }
    return stage;
  }

  void plan_stages() {
    // data and tokenizer compute nothing with LibTorch: the process as it is; every other stage pages in
    // LibTorch's kernels and thread pools.
    const int64_t cold = std::max<int64_t>(0, resident_bytes());
    const int64_t warm = std::max<int64_t>(0, warmed_up_resident_bytes());
    std::vector<Stage> stages;
    if (!attempt("pipeline", [&] { stages = pipeline_stages(config_); })) return;
    const std::set<std::string> selected(selection_.stages.begin(), selection_.stages.end());
    for (const Stage& stage : stages) {
      if (!selected.empty() && selected.count(stage.name) == 0) continue;
      plan_.stages.push_back(plan_stage(stage.name));
      plan_.stages.back().memory.runtime = stage.name == "data" || stage.name == "tokenizer" ? cold : warm;
    }
  }

  const Config& config_;
  const StageSelection& selection_;
  RunPlan plan_;
  RunInputs inputs_;
  std::optional<Tokenizer> tokenizer_;
  std::optional<ChatTemplate> chat_;
};

// Total memory of this machine (MemTotal), or 0 when it cannot be read.
int64_t machine_memory_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  for (std::string line; std::getline(meminfo, line);) {
    if (line.rfind("MemTotal:", 0) == 0) return std::stoll(line.substr(9)) * 1024;
  }
  return 0;
}

}  // namespace

int64_t training_activation_bytes_per_token(const LlamaConfig& a, bool causal_lm, bool checkpointing,
                                            bool bfloat16_compute) {
  const double layer = 10.0 * a.hidden_size + 4.5 * a.intermediate_size;
  const double head = 22.0 * a.hidden_size + (causal_lm ? 3.0 * a.vocab_size : 0.0);
  const double elements = checkpointing ? a.num_hidden_layers * a.hidden_size + layer + head
                                        : a.num_hidden_layers * layer + head;
  return static_cast<int64_t>(elements * (bfloat16_compute ? 6.0 : 4.0));
}

int64_t inference_activation_bytes_per_token(const LlamaConfig& a, bool logits) {
  const double elements = 8.0 * a.hidden_size + 5.0 * a.intermediate_size + (logits ? 2.0 * a.vocab_size : 0.0);
  return static_cast<int64_t>(elements * 4.0);
}

RunPlan plan_run(const Config& config, const StageSelection& selection) { return Planner(config, selection).plan(); }

std::string format_run_plan(const RunPlan& plan) {
  std::ostringstream out;
  out << "inputs:\n";
  for (const InputReport& input : plan.inputs) {
    out << fmt::format("  {:<24} {}: {}\n", input.key, input.path, input.summary);
  }
  out << fmt::format("\n{:<22} {:>11}  {:<44} {}\n", "stage", "peak memory", "largest parts", "work");
  const StagePlan* largest = nullptr;
  for (const StagePlan& stage : plan.stages) {
    const MemoryEstimate& m = stage.memory;
    std::vector<std::pair<int64_t, std::string>> parts = {
        {m.weights, "weights"},       {m.gradients, "gradients"}, {m.optimizer, "optimizer"},
        {m.activations, "activations"}, {m.kv_cache, "KV cache"}, {m.samples, "samples"}};
    std::sort(parts.begin(), parts.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    std::string largest_parts;
    for (size_t i = 0; i < 2 && parts[i].first > 0; ++i) {
      largest_parts += fmt::format("{}{} {}", i > 0 ? ", " : "", parts[i].second, gib(parts[i].first));
    }
    out << fmt::format("{:<22} {:>11}  {:<44} {}\n", stage.name, gib(m.total()), largest_parts, stage.work);
    if (largest == nullptr || m.total() > largest->memory.total()) largest = &stage;
  }
  if (largest != nullptr) {
    const int64_t peak = largest->memory.total();
    out << fmt::format("\nlargest peak: {} in stage {} (the process's own {} included)\n", gib(peak), largest->name,
                       gib(largest->memory.runtime));
    if (plan.device.rfind("cuda", 0) == 0) {
      const int64_t on_gpu = peak - largest->memory.runtime;  // the process's own part is host memory
      out << fmt::format("on the GPU {} (the process's own part stays in host memory); on one GPU of", gib(on_gpu));
      for (const int gigabytes : {24, 40, 48, 80, 141}) {
        const bool fits = static_cast<double>(on_gpu) <= gigabytes * 1e9 * 0.95;  // 5% for CUDA's context and caching
        out << fmt::format(" {} GB: {};", gigabytes, fits ? "fits" : "does not fit");
      }
      out << "\n";
    } else if (const int64_t machine = machine_memory_bytes(); machine > 0) {
      out << fmt::format("this machine has {}: {}\n", gib(machine), peak <= machine ? "fits" : "does not fit");
    }
  }
  if (plan.problems.empty()) {
    out << "\nno problems found\n";
  } else {
    out << fmt::format("\n{} problem(s):\n", plan.problems.size());
    for (const std::string& problem : plan.problems) out << "  - " << problem << "\n";
  }
  return out.str();
}

}  // namespace can
