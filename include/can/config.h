// The configuration of can-train: the options structs of the components it
// runs (TrainingOptions, DpoOptions, LoraOptions, SamplingOptions, WorldOptions,
// LlamaConfig, DualOptions, RelabelOptions, EvaluationOptions), gathered in one
// struct that stages read (`config.dpo.loss.beta`). Every default is the one
// written in those structs or below; the YAML schema (src/pipeline/config.cpp)
// binds each key (`dpo.beta`) to its field and reads its default from there, so
// configs/mocan.yaml (or `can-train --config FILE --print-config`) documents
// every field with its meaning, type, default and allowed values. Defaults
// follow the paper (docs/design.md §3) where it gives one.
//
// Loading is strict (yaml_options.h): an unknown key, a value of the wrong type,
// out of range or not among the choices, and an inconsistent combination of keys
// are all can::Error naming the source (`file:line` or the `--set` argument) and
// the key path. Missing keys take their defaults.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "can/chat_template.h"
#include "can/dual.h"
#include "can/evaluation.h"
#include "can/llama.h"
#include "can/lora.h"
#include "can/losses.h"
#include "can/offline_sampling.h"
#include "can/primal_dual.h"
#include "can/relabel.h"
#include "can/synthetic_world.h"
#include "can/training_loop.h"
#include "can/yaml_options.h"

namespace can {

// Where and how the run happens.
struct RunOptions {
  std::string dir = "runs/can";
  int64_t seed = 1;  // every stage's random streams: initialisation, data order, sampling
  std::string device = "auto";  // auto, cpu, cuda, cuda:N
  int64_t threads = 0;          // 0: all cores
  std::string log_level = "info";
  std::string compute_dtype = "float32";  // float32, bfloat16: the matmuls' dtype; weights stay float32
};

// The embedded synthetic safety world (docs/design.md §8), used when enabled instead of `data`.
struct WorldSource {
  bool enabled = true;
  WorldOptions options;  // its chat_template is data.chat_template
};

// External inputs (JSON Lines, plain, .xz or .gz; docs/design.md §5); empty when the world
// provides them. Prompt files left empty come from the pairs' distinct prompts.
struct DataFiles {
  std::string pairs_train;
  std::string pairs_test;
  std::string sft_train;
  std::string prompts_sample;
  std::string prompts_test;
  std::string chat_template = ChatTemplate::kSafeRlhf;
};

// Hugging Face model directories; empty: trained in the run.
struct ModelDirectories {
  std::string policy;
  std::string reward;
  std::vector<std::string> cost;  // one per safety constraint
  std::string helpfulness_dpo;             // PeCAN's π_r
  std::vector<std::string> safety_dpo;     // PeCAN's π_g, one per safety constraint
};

struct TokenizerSource {
  int64_t vocab_size = 1000;  // when trained in the run
  std::string model;          // a sentencepiece model file; empty: trained in the run
};

// One DPO fine-tune: the training loop's options and the loss's.
struct DpoStageOptions {
  TrainingOptions training;
  DpoOptions loss;
};

// PeCAN's pre-aligned models.
struct PecanOptions {
  DpoStageOptions helpfulness_dpo;  // π_r, on better_response_id
  DpoStageOptions safety_dpo;       // π_g, on safer_response_id
};

struct EvaluationStageOptions {
  int64_t num_prompts = 500;  // the first K held-out prompts
  EvaluationOptions options;  // its batch sizes are sampling.batch_size, its seed run.seed
  // Also the world's same-template test prompts (synthetic_world.h), into eval/same_templates/.
  bool same_template_prompts = false;
};

// A job of several processes (can-train under torchrun; README, "Several processes").
struct DistributedOptions {
  bool shard_optimizer = false;  // ZeRO stage 1: each rank keeps 1/N of AdamW's moments
};

struct SweepOptions {
  std::vector<double> margins;  // empty: no sweep
  int64_t constraint = 0;       // the constraint j whose margin is swept; the others keep dual.margins
};

// Get one from default_config() or load_config(). The per-stage fields that are
// not keys (a TrainingOptions' seed, resume and output_dir, a SamplingOptions'
// seed) are filled by the stage that runs.
struct Config {
  RunOptions run;
  std::string pipeline = "mocan";  // mocan, pecan, primal_dual
  WorldSource world;
  DataFiles data;
  ModelDirectories models;
  TokenizerSource tokenizer;
  // π_ref's architecture when it is trained in the run; vocabulary and special tokens come from the tokenizer.
  LlamaConfig policy = {.hidden_size = 128,
                        .intermediate_size = 352,
                        .num_hidden_layers = 2,
                        .num_attention_heads = 4,
                        .num_key_value_heads = 2,
                        .max_position_embeddings = 1024};
  TrainingOptions sft;
  TrainingOptions reward_model;
  TrainingOptions cost_model;
  DpoStageOptions dpo;
  PecanOptions pecan;
  LoraOptions lora;  // of the DPO fine-tunes; rank 0 trains every weight
  OfflineSamplingOptions sampling;
  DualOptions dual = {.margins = {1.0}};
  RelabelOptions relabel;
  EvaluationStageOptions eval;
  SweepOptions sweep;
  PrimalDualOptions primal_dual;  // pipeline primal_dual's rounds
  DistributedOptions distributed;
};

// m, the number of safety constraints: one margin each in dual.margins.
int num_constraints(const Config& config);

// Every key at its default.
Config default_config();

// Reads `file`, applies `overrides` (parse_set_option, yaml_options.h) in order, fills defaults and validates.
Config load_config(const std::filesystem::path& file, const std::vector<OptionOverride>& overrides = {});

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

// An error when the schema is inconsistent: a key declared twice or outside a
// section, a default that is not an allowed value, or two keys bound to one
// field. For the unit tests; loading does not run it.
void check_config_schema();

}  // namespace can
