// The configuration of can-train: one plain struct that stages read
// (`config.dpo.beta`), filled from a YAML file and `--set key.path=value`
// overrides through a typed schema declared once in src/pipeline/config.cpp.
// Each schema key has a path (`dpo.beta`), a type (int, float, bool, string,
// list of floats, list of strings), a default, an allowed range or set of
// choices and a one-line meaning; `config_to_yaml` writes all of it out, so
// configs/mocan.yaml (or `can-train --config FILE --print-config`) documents
// every field below. Defaults follow the paper (docs/design.md §3) where it gives one.
//
// Loading is strict: an unknown key (with a "did you mean" for near misses), a
// value of the wrong type, out of range or not among the choices, and an
// inconsistent combination of keys are all can::Error naming the source
// (`file:line` or the `--set` argument) and the key path. Missing keys take
// their defaults.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace can {

// Get one from default_config() or load_config(): the struct holds no defaults
// of its own, the schema does.
struct Config {
  struct Run {
    std::string dir;
    int64_t seed;
    std::string device;  // auto, cpu, cuda, cuda:N
    int64_t threads;     // 0: all cores
    std::string log_level;
    std::string compute_dtype;  // float32, bfloat16: the matmuls' dtype; weights stay float32
  };
  // The embedded synthetic safety world (docs/design.md §8), used when enabled instead of `data`.
  struct World {
    bool enabled;
    int64_t seed;
    int64_t num_train_prompts;
    int64_t num_test_prompts;
    double harmful_fraction;
    double label_noise;
  };
  // External inputs (JSON Lines, docs/design.md §5); empty when the world provides them.
  struct Data {
    std::string pairs_train;
    std::string sft_train;
    std::string prompts_sample;
    std::string prompts_test;
    std::string chat_template;
  };
  // Hugging Face model directories; empty: trained in the run.
  struct Models {
    std::string policy;
    std::string reward;
    std::string cost;
  };
  struct Tokenizer {
    int64_t vocab_size;
    std::string model;  // empty: trained in the run
  };
  // The reference policy's architecture when it is trained in the run (LlamaConfig names).
  struct Policy {
    int64_t hidden_size;
    int64_t intermediate_size;
    int64_t num_hidden_layers;
    int64_t num_attention_heads;
    int64_t num_key_value_heads;
    int64_t max_position_embeddings;
  };
  // One training run's options; the same group appears under sft, reward_model, cost_model and the DPO runs.
  struct Training {
    int64_t epochs;
    int64_t micro_batch_size;             // sequences (pairs for DPO and score models) per forward pass
    int64_t gradient_accumulation_steps;  // micro-batches per optimizer update
    double learning_rate;                 // peak
    double weight_decay;
    int64_t warmup_steps;  // optimizer updates
    std::string lr_decay;  // cosine, constant
    double min_lr;
    double max_grad_norm;           // 0: no clipping
    int64_t eval_every;             // optimizer updates; 0: only at the end
    int64_t save_every;             // optimizer updates; 0: only at the end
    int64_t log_every;              // optimizer updates
    int64_t max_length;             // tokens, prompt and response together
    bool activation_checkpointing;  // recompute decoder layers in backward instead of keeping activations
  };
  struct Dpo : Training {
    double beta;
    double label_smoothing;
    std::string loss;  // sigmoid, ipo
  };
  struct Pecan {
    Dpo helpfulness_dpo;  // π_r, on better_response_id
    Dpo safety_dpo;       // π_g, on safer_response_id
  };
  // LoRA adapters of the DPO fine-tunes; rank 0 trains every weight.
  struct Lora {
    int64_t rank;
    double alpha;
    double dropout;
    std::vector<std::string> target_modules;
  };
  // Offline data: responses from π_ref, scored (MoCAN step 1).
  struct Sampling {
    int64_t num_prompts;           // M
    int64_t responses_per_prompt;  // N
    double temperature;
    double top_p;
    int64_t top_k;  // 0: no top-k filter
    int64_t max_new_tokens;
    int64_t batch_size;
  };
  struct Dual {
    double beta;
    std::vector<double> margins;  // [m] b_j, one per constraint, in units of g
    std::string solver;           // newton, pgd
  };
  struct Relabel {
    std::string mode;  // bernoulli, argmax
    int64_t seed;
  };
  struct Eval {
    int64_t num_prompts;
    int64_t max_new_tokens;
    double temperature;
    double top_p;
  };
  struct Sweep {
    std::vector<double> margins;  // empty: no sweep
  };

  Run run;
  std::string pipeline;  // mocan, pecan
  World world;
  Data data;
  Models models;
  Tokenizer tokenizer;
  Policy policy;
  Training sft;
  Training reward_model;
  Training cost_model;
  Dpo dpo;
  Pecan pecan;
  Lora lora;
  Sampling sampling;
  Dual dual;
  Relabel relabel;
  Eval eval;
  Sweep sweep;
};

// One `--set key.path=value` (or an option that stands for one, like --sweep-margins).
// The value is read as a YAML scalar or flow list (`0.2`, `cosine`, `[1.0, 2.0]`).
struct ConfigOverride {
  std::string key;
  std::string value;
  std::string origin;  // named in errors: "--set dpo.beta=abc"
};

// Splits "key.path=value" at the first '='; an error when there is none or the key is empty.
ConfigOverride parse_set_option(const std::string& assignment);

// Every key at its default.
Config default_config();

// Reads `file`, applies `overrides` in order, fills defaults and validates.
Config load_config(const std::filesystem::path& file, const std::vector<ConfigOverride>& overrides = {});

// The YAML of every key in schema order, each preceded by a comment with its
// meaning, type, default and allowed values. Loading it gives `config` back.
std::string config_to_yaml(const Config& config);

struct ConfigDifference {
  std::string key;
  std::string before;  // the value as YAML text
  std::string after;
};

// Keys whose values differ between two configs, skipping those that cannot
// change what a stage produces (run.dir, run.device, run.threads, run.log_level).
std::vector<ConfigDifference> artifact_config_differences(const Config& before, const Config& after);

}  // namespace can
